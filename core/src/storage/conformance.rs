//! The storage conformance suite: every backend runs [`run`] in its tests, and hosts run it
//! against the storage they are given (`berth check-storage`, `berth_check_storage`,
//! `checkStorage`).
//!
//! It checks the contract in the [module docs](super): atomic and conditional puts, versions,
//! ranged reads, ordered and delimited listing with paging, parts that publish atomically and
//! do not collide, idempotent deletes. It returns a [`Report`]: each check, and for a failed
//! one the rule it broke. Keys are written below `conformance/`, which the suite empties
//! before and after.

use std::fmt;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{ByteStream, Durability, Key, ListPage, PutMode, Storage, StorageError, StorageExt};

/// What the suite found: each check in the order run, with the broken rule of a failed one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Each check's name and outcome (`Err` names the rule the storage broke).
    pub checks: Vec<(&'static str, Result<(), String>)>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|(_, outcome)| outcome.is_ok())
    }

    /// The failed checks and why.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.checks
            .iter()
            .filter_map(|(name, outcome)| outcome.as_ref().err().map(|why| (*name, why.as_str())))
    }

    fn record(&mut self, name: &'static str, outcome: Result<(), String>) {
        self.checks.push((name, outcome));
    }
}

impl fmt::Display for Report {
    /// One line per check: `ok   <name>` or `FAIL <name>: <why>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, outcome) in &self.checks {
            match outcome {
                Ok(()) => writeln!(f, "ok   {name}")?,
                Err(why) => writeln!(f, "FAIL {name}: {why}")?,
            }
        }
        Ok(())
    }
}

/// Runs every check against `storage`.
pub async fn run<S: Storage + ?Sized>(storage: &S) -> Report {
    let mut report = Report::default();
    let cleared = storage
        .delete_all("conformance/")
        .await
        .or_fail("delete_all");
    let cleared_ok = cleared.is_ok();
    report.record("conformance/ is emptied first", cleared);
    if !cleared_ok {
        return report;
    }
    report.record(
        "put, get, head and delete",
        put_get_head_delete(storage).await,
    );
    report.record(
        "conditional puts and versions",
        conditional_puts(storage).await,
    );
    report.record(
        "volatile writes keep the same rules",
        volatile_writes(storage).await,
    );
    report.record("ranged reads", ranged_reads(storage).await);
    report.record("ordered, delimited, paged listing", listing(storage).await);
    report.record("parts", parts(storage).await);
    report.record(
        "conformance/ is emptied after",
        storage
            .delete_all("conformance/")
            .await
            .or_fail("delete_all"),
    );
    report
}

/// A storage call that must succeed: its error becomes the failed rule.
trait OrFail<T> {
    fn or_fail(self, what: &str) -> Result<T, String>;
}

impl<T> OrFail<T> for Result<T, StorageError> {
    fn or_fail(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what} failed: {e}"))
    }
}

/// `rule` must hold.
fn ensure(holds: bool, rule: impl Into<String>) -> Result<(), String> {
    if holds { Ok(()) } else { Err(rule.into()) }
}

/// `got` must equal `expected`, as `rule` says.
fn ensure_eq<T: PartialEq + fmt::Debug>(got: T, expected: T, rule: &str) -> Result<(), String> {
    if got == expected {
        Ok(())
    } else {
        Err(format!("{rule} (got {got:?}, expected {expected:?})"))
    }
}

fn listed_keys(page: &ListPage) -> Vec<String> {
    page.keys().map(str::to_owned).collect()
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|key| (*key).to_owned()).collect()
}

async fn collect(stream: ByteStream) -> Result<Bytes, String> {
    let mut stream = stream;
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.or_fail("reading a body")?);
    }
    Ok(out.freeze())
}

/// A volatile write may skip syncs, never the rules: created once, updated by version,
/// deleted, and its folder usable again after it empties. The second round deletes it as a
/// durable object, which removes what a backend kept for volatile objects (a folder).
async fn volatile_writes<S: Storage + ?Sized>(storage: &S) -> Result<(), String> {
    let key = &Key::new("conformance/volatile/record");
    for round in 0..2 {
        let created = storage
            .put(key, Bytes::from_static(b"one"), PutMode::Create.volatile())
            .await
            .or_fail("volatile put (create)")?;
        ensure(
            matches!(
                storage
                    .put(key, Bytes::from_static(b"two"), PutMode::Create.volatile())
                    .await,
                Err(StorageError::AlreadyExists)
            ),
            "a volatile create over an object fails with AlreadyExists",
        )?;
        storage
            .put(
                key,
                Bytes::from_static(b"two"),
                PutMode::Update(created.version).volatile(),
            )
            .await
            .or_fail("volatile put (update)")?;
        let (_, body) = storage.get(key, None).await.or_fail("get")?;
        ensure_eq(
            collect(body).await?,
            Bytes::from_static(b"two"),
            "a volatile update is read back",
        )?;
        let durability = [Durability::Volatile, Durability::Durable][round];
        storage.delete(key, durability).await.or_fail("delete")?;
        ensure(
            matches!(storage.head(key).await, Err(StorageError::NotFound)),
            format!("a {durability:?} delete removes a volatile object"),
        )?;
    }
    Ok(())
}

async fn put_get_head_delete<S: Storage + ?Sized>(storage: &S) -> Result<(), String> {
    let key = &Key::new("conformance/basic/object");
    ensure(
        matches!(storage.head(key).await, Err(StorageError::NotFound)),
        "head of a missing key must be NotFound",
    )?;
    ensure(
        matches!(storage.get(key, None).await, Err(StorageError::NotFound)),
        "get of a missing key must be NotFound",
    )?;
    let written = storage
        .put(key, Bytes::from_static(b"hello"), PutMode::Overwrite.into())
        .await
        .or_fail("put")?;
    ensure_eq(written.size, 5, "put reports the size written")?;
    let (meta, body) = storage.get(key, None).await.or_fail("get")?;
    ensure_eq(
        (meta.size, &meta.version),
        (written.size, &written.version),
        "get reports the size and version put reported",
    )?;
    ensure_eq(
        collect(body).await?,
        Bytes::from_static(b"hello"),
        "get returns what was put",
    )?;
    let head = storage.head(key).await.or_fail("head")?;
    ensure_eq(&head, &meta, "head reports what get reported")?;
    let Some(written_at) = head.last_modified else {
        return Err("head reports when the object was last written".to_owned());
    };
    ensure(
        written_at >= 1_577_836_800_000,
        format!("last_modified is milliseconds since the Unix epoch (got {written_at})"),
    )?;
    if let Some(reported) = written.last_modified {
        ensure_eq(reported, written_at, "put reports the time head reports")?;
    }
    storage
        .put(key, Bytes::from_static(b"again"), PutMode::Overwrite.into())
        .await
        .or_fail("put over an object")?;
    let rewritten = storage.head(key).await.or_fail("head")?;
    ensure(
        rewritten.last_modified.is_some_and(|t| t >= written_at),
        "an object written again is no older than before",
    )?;

    let empty = &Key::new("conformance/basic/empty");
    storage
        .put(empty, Bytes::new(), PutMode::Overwrite.into())
        .await
        .or_fail("put of an empty object")?;
    let (meta, body) = storage
        .get(empty, None)
        .await
        .or_fail("get of an empty object")?;
    ensure_eq(meta.size, 0, "an empty object has size 0")?;
    ensure(
        collect(body).await?.is_empty(),
        "an empty object reads as no bytes",
    )?;

    storage
        .delete(key, Durability::Durable)
        .await
        .or_fail("delete")?;
    ensure(
        !storage.exists(key).await.or_fail("head after delete")?,
        "a deleted key is gone",
    )?;
    storage
        .delete(key, Durability::Durable)
        .await
        .or_fail("deleting a missing key (which is not an error)")
}

async fn conditional_puts<S: Storage + ?Sized>(storage: &S) -> Result<(), String> {
    let key = &Key::new("conformance/cas/record");
    let first = storage
        .put(key, Bytes::from_static(b"v1"), PutMode::Create.into())
        .await
        .or_fail("create on a free key")?;
    ensure(
        matches!(
            storage
                .put(key, Bytes::from_static(b"other"), PutMode::Create.into())
                .await,
            Err(StorageError::AlreadyExists)
        ),
        "create on a taken key fails with AlreadyExists",
    )?;
    let second = storage
        .put(
            key,
            Bytes::from_static(b"v2"),
            PutMode::Update(first.version.clone()).into(),
        )
        .await
        .or_fail("update with the current version")?;
    ensure(
        first.version != second.version,
        "a replaced object has a new version",
    )?;
    ensure(
        matches!(
            storage
                .put(
                    key,
                    Bytes::from_static(b"lost"),
                    PutMode::Update(first.version).into()
                )
                .await,
            Err(StorageError::PreconditionFailed)
        ),
        "update with a stale version fails with PreconditionFailed",
    )?;
    ensure(
        matches!(
            storage
                .put(
                    &Key::new("conformance/cas/missing"),
                    Bytes::new(),
                    PutMode::Update(second.version.clone()).into()
                )
                .await,
            Err(StorageError::PreconditionFailed | StorageError::NotFound)
        ),
        "update of a missing key fails",
    )?;
    let (_, body) = storage.get(key, None).await.or_fail("get")?;
    ensure_eq(
        collect(body).await?,
        Bytes::from_static(b"v2"),
        "a failed conditional put changes nothing",
    )
}

async fn ranged_reads<S: Storage + ?Sized>(storage: &S) -> Result<(), String> {
    let key = &Key::new("conformance/range/object");
    storage
        .put(
            key,
            Bytes::from_static(b"0123456789"),
            PutMode::Overwrite.into(),
        )
        .await
        .or_fail("put")?;
    for (range, expected) in [
        (0..10, "0123456789"),
        (2..5, "234"),
        (9..10, "9"),
        (3..3, ""),
    ] {
        let (meta, body) = storage
            .get(key, Some(range.clone()))
            .await
            .or_fail("ranged get")?;
        ensure_eq(
            meta.size,
            10,
            "a ranged get reports the whole object's size",
        )?;
        ensure_eq(
            collect(body).await?,
            Bytes::from(expected),
            &format!("range {range:?} returns exactly those bytes"),
        )?;
    }
    Ok(())
}

async fn listing<S: Storage + ?Sized>(storage: &S) -> Result<(), String> {
    let names = [
        "conformance/list/a",
        "conformance/list/b/1",
        "conformance/list/b/2",
        "conformance/list/c",
        "conformance/list/d/x/y",
        "conformance/listing-not-below",
    ];
    for key in names {
        storage
            .put(
                &Key::new(key),
                Bytes::from_static(b"x"),
                PutMode::Overwrite.into(),
            )
            .await
            .or_fail("put")?;
    }
    let all = storage
        .list_all("conformance/list/")
        .await
        .or_fail("list")?;
    ensure_eq(
        all.iter().map(|key| key.to_string()).collect(),
        keys(&names[..5]),
        "listing is recursive, ordered and prefix-bound",
    )?;

    let page = storage
        .list("conformance/list/", true, None, 100)
        .await
        .or_fail("list")?;
    ensure_eq(
        listed_keys(&page),
        keys(&["conformance/list/a", "conformance/list/c"]),
        "delimited objects",
    )?;
    ensure_eq(
        page.prefixes,
        keys(&["conformance/list/b/", "conformance/list/d/"]),
        "delimited prefixes",
    )?;
    ensure(!page.truncated, "a complete listing is not truncated")?;

    let first = storage
        .list("conformance/list/", true, None, 2)
        .await
        .or_fail("list")?;
    ensure(first.truncated, "a listing cut at the limit says so")?;
    ensure_eq(
        first.objects.len() + first.prefixes.len(),
        2,
        "the limit is honoured",
    )?;
    let rest = storage
        .list("conformance/list/", true, Some("conformance/list/b/"), 100)
        .await
        .or_fail("list")?;
    ensure_eq(
        listed_keys(&rest),
        keys(&["conformance/list/c"]),
        "start_after skips the folded prefix",
    )?;
    ensure_eq(
        rest.prefixes,
        keys(&["conformance/list/d/"]),
        "start_after continues the listing",
    )?;

    let first = storage
        .list("conformance/list/", false, None, 2)
        .await
        .or_fail("list")?;
    ensure_eq(
        listed_keys(&first),
        keys(&["conformance/list/a", "conformance/list/b/1"]),
        "a recursive listing pages in order",
    )?;
    ensure(first.truncated, "a recursive page cut at the limit says so")?;
    let second = storage
        .list("conformance/list/", false, Some("conformance/list/b/1"), 2)
        .await
        .or_fail("list")?;
    ensure_eq(
        listed_keys(&second),
        keys(&["conformance/list/b/2", "conformance/list/c"]),
        "start_after continues a recursive listing",
    )?;

    // A listing tells each object's age as `head` does (S3's HEAD says it to the second, its
    // listing to the millisecond).
    for object in &page.objects {
        let head = storage.head(&object.key).await.or_fail("head")?;
        if let Some(written) = head.last_modified {
            let listed = object.last_modified.ok_or_else(|| {
                format!(
                    "{} lists without the modification time head reports",
                    object.key
                )
            })?;
            ensure(
                listed.abs_diff(written) < 1000,
                format!(
                    "{} lists as modified at {listed} ms, head says {written}",
                    object.key
                ),
            )?;
        }
    }

    let none = storage
        .list("conformance/nothing/", true, None, 10)
        .await
        .or_fail("list")?;
    ensure(
        none.objects.is_empty() && none.prefixes.is_empty(),
        "an empty prefix lists nothing",
    )
}

async fn parts<S: Storage + ?Sized>(storage: &S) -> Result<(), String> {
    let min = usize::try_from(storage.capabilities().min_part_size)
        .map_err(|_| "min_part_size does not fit in memory".to_owned())?
        .max(1);
    // A part arrives as several chunks.
    let part = |byte: u8, len: usize| {
        let whole = vec![byte; len];
        let (head, tail) = whole.split_at(len / 2);
        vec![Bytes::copy_from_slice(head), Bytes::copy_from_slice(tail)]
    };
    let mut expected = vec![b'a'; min];
    expected.extend_from_slice(b"bbb");

    // Part 1 is written twice. Without positional parts both ids stay valid and distinct
    // (the first is the one completed); with them, the second write replaces the first.
    let target = &Key::new("conformance/parts/blob");
    let upload = storage
        .create_parts(&Key::new("conformance/parts/staging"))
        .await
        .or_fail("create_parts")?;
    let first = storage
        .put_part(&upload, 1, part(b'z', min))
        .await
        .or_fail("put_part")?;
    let rival = storage
        .put_part(&upload, 1, part(b'a', min))
        .await
        .or_fail("put_part")?;
    if !storage.capabilities().positional_parts {
        ensure(first != rival, "part ids are unique per write")?;
    }
    let two = storage
        .put_part(&upload, 2, part(b'b', 3))
        .await
        .or_fail("put_part")?;
    ensure(
        !storage.exists(target).await.or_fail("head")?,
        "parts are invisible before completion",
    )?;
    let listed = [rival.clone(), two.clone()];
    if storage.capabilities().readable_parts {
        for skip in [0, 1, min as u64, min as u64 + 2, min as u64 + 3] {
            let stream = storage
                .read_parts(&upload, &listed, skip)
                .await
                .or_fail("read_parts")?;
            ensure_eq(
                collect(stream).await?.to_vec(),
                expected[skip as usize..].to_vec(),
                &format!("parts read back from byte {skip}"),
            )?;
        }
        ensure(
            matches!(
                storage
                    .read_parts(&"no-such-upload".into(), &listed, 0)
                    .await,
                Err(StorageError::NotFound)
            ),
            "reading the parts of an unknown upload is NotFound",
        )?;
    } else {
        ensure(
            matches!(
                storage.read_parts(&upload, &listed, 0).await,
                Err(StorageError::Unsupported(_))
            ),
            "read_parts is Unsupported where readable_parts is false",
        )?;
    }
    storage
        .complete_parts(&upload, &[rival, two], target)
        .await
        .or_fail("complete_parts")?;
    let (meta, body) = storage.get(target, None).await.or_fail("get")?;
    ensure_eq(
        meta.size as usize,
        min + 3,
        "a completed object has the parts' total size",
    )?;
    ensure_eq(
        collect(body).await?.to_vec(),
        expected,
        "parts are joined in the order given",
    )?;

    // Completing onto an existing target publishes nothing.
    let again = storage
        .create_parts(&Key::new("conformance/parts/staging2"))
        .await
        .or_fail("create_parts")?;
    let other = storage
        .put_part(&again, 1, part(b'q', 1))
        .await
        .or_fail("put_part")?;
    ensure(
        matches!(
            storage.complete_parts(&again, &[other], target).await,
            Err(StorageError::AlreadyExists)
        ),
        "completing onto an existing object fails with AlreadyExists",
    )?;
    ensure_eq(
        storage.head(target).await.or_fail("head")?.size as usize,
        min + 3,
        "a failed completion leaves the target unchanged",
    )?;
    storage.abort_parts(&again).await.or_fail("abort_parts")?;

    // No parts at all publishes an empty object.
    let empty = storage
        .create_parts(&Key::new("conformance/parts/staging3"))
        .await
        .or_fail("create_parts")?;
    storage
        .complete_parts(&empty, &[], &Key::new("conformance/parts/empty"))
        .await
        .or_fail("complete_parts with no parts")?;
    ensure_eq(
        storage
            .head(&Key::new("conformance/parts/empty"))
            .await
            .or_fail("head")?
            .size,
        0,
        "an upload of no parts publishes an empty object",
    )?;

    // An aborted upload leaves nothing behind.
    let aborted = storage
        .create_parts(&Key::new("conformance/parts/staging4"))
        .await
        .or_fail("create_parts")?;
    storage
        .put_part(&aborted, 1, part(b'x', 2))
        .await
        .or_fail("put_part")?;
    storage.abort_parts(&aborted).await.or_fail("abort_parts")?;
    let left = storage
        .list_all("conformance/parts/")
        .await
        .or_fail("list")?;
    ensure_eq(
        left.iter().map(|key| key.to_string()).collect(),
        keys(&["conformance/parts/blob", "conformance/parts/empty"]),
        "only completed uploads are visible: nothing staged, nothing aborted",
    )
}
