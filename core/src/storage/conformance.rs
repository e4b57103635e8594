//! The storage conformance suite: every backend runs [`run`] in its tests.
//!
//! It checks the contract in the [module docs](super): atomic and conditional puts, versions,
//! ranged reads, ordered and delimited listing with paging, parts that publish atomically and
//! do not collide, idempotent deletes. It panics with a message naming the broken rule.
//! Keys are written below `conformance/`, which the suite empties first.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{ByteStream, PutMode, Storage, StorageError, StorageExt};

/// Runs every check against `storage`.
pub async fn run<S: Storage + ?Sized>(storage: &S) {
    storage.delete_all("conformance/").await.unwrap();
    put_get_head_delete(storage).await;
    conditional_puts(storage).await;
    ranged_reads(storage).await;
    listing(storage).await;
    parts(storage).await;
    storage.delete_all("conformance/").await.unwrap();
}

async fn collect(stream: ByteStream) -> Bytes {
    let mut stream = stream;
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out.freeze()
}

async fn put_get_head_delete<S: Storage + ?Sized>(storage: &S) {
    let key = "conformance/basic/object";
    assert!(
        matches!(storage.head(key).await, Err(StorageError::NotFound)),
        "head of a missing key must be NotFound"
    );
    assert!(
        matches!(storage.get(key, None).await, Err(StorageError::NotFound)),
        "get of a missing key must be NotFound"
    );
    let written = storage
        .put(key, Bytes::from_static(b"hello"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(written.size, 5, "put reports the size written");
    let (meta, body) = storage.get(key, None).await.unwrap();
    assert_eq!(meta, written, "get reports what put reported");
    assert_eq!(collect(body).await, "hello", "get returns what was put");
    assert_eq!(
        storage.head(key).await.unwrap(),
        written,
        "head reports what put reported"
    );

    let empty = "conformance/basic/empty";
    storage
        .put(empty, Bytes::new(), PutMode::Overwrite)
        .await
        .unwrap();
    let (meta, body) = storage.get(empty, None).await.unwrap();
    assert_eq!(meta.size, 0, "an empty object has size 0");
    assert!(
        collect(body).await.is_empty(),
        "an empty object reads as no bytes"
    );

    storage.delete(key).await.unwrap();
    assert!(!storage.exists(key).await.unwrap(), "a deleted key is gone");
    storage
        .delete(key)
        .await
        .expect("deleting a missing key is not an error");
}

async fn conditional_puts<S: Storage + ?Sized>(storage: &S) {
    let key = "conformance/cas/record";
    let first = storage
        .put(key, Bytes::from_static(b"v1"), PutMode::Create)
        .await
        .expect("create on a free key succeeds");
    assert!(
        matches!(
            storage
                .put(key, Bytes::from_static(b"other"), PutMode::Create)
                .await,
            Err(StorageError::AlreadyExists)
        ),
        "create on a taken key fails with AlreadyExists"
    );
    let second = storage
        .put(
            key,
            Bytes::from_static(b"v2"),
            PutMode::Update(first.version.clone()),
        )
        .await
        .expect("update with the current version succeeds");
    assert_ne!(
        first.version, second.version,
        "a replaced object has a new version"
    );
    assert!(
        matches!(
            storage
                .put(
                    key,
                    Bytes::from_static(b"lost"),
                    PutMode::Update(first.version)
                )
                .await,
            Err(StorageError::PreconditionFailed)
        ),
        "update with a stale version fails with PreconditionFailed"
    );
    assert!(
        matches!(
            storage
                .put(
                    "conformance/cas/missing",
                    Bytes::new(),
                    PutMode::Update(second.version.clone())
                )
                .await,
            Err(StorageError::PreconditionFailed | StorageError::NotFound)
        ),
        "update of a missing key fails"
    );
    let (_, body) = storage.get(key, None).await.unwrap();
    assert_eq!(
        collect(body).await,
        "v2",
        "a failed conditional put changes nothing"
    );
}

async fn ranged_reads<S: Storage + ?Sized>(storage: &S) {
    let key = "conformance/range/object";
    storage
        .put(key, Bytes::from_static(b"0123456789"), PutMode::Overwrite)
        .await
        .unwrap();
    for (range, expected) in [
        (0..10, "0123456789"),
        (2..5, "234"),
        (9..10, "9"),
        (3..3, ""),
    ] {
        let (meta, body) = storage.get(key, Some(range.clone())).await.unwrap();
        assert_eq!(
            meta.size, 10,
            "a ranged get reports the whole object's size"
        );
        assert_eq!(collect(body).await, expected, "range {range:?}");
    }
}

async fn listing<S: Storage + ?Sized>(storage: &S) {
    let keys = [
        "conformance/list/a",
        "conformance/list/b/1",
        "conformance/list/b/2",
        "conformance/list/c",
        "conformance/list/d/x/y",
        "conformance/listing-not-below",
    ];
    for key in keys {
        storage
            .put(key, Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap();
    }
    let all = storage.list_all("conformance/list/").await.unwrap();
    assert_eq!(
        all,
        keys[..5].to_vec(),
        "listing is recursive, ordered and prefix-bound"
    );

    let page = storage
        .list("conformance/list/", true, None, 100)
        .await
        .unwrap();
    assert_eq!(
        page.objects,
        ["conformance/list/a", "conformance/list/c"],
        "delimited objects"
    );
    assert_eq!(
        page.prefixes,
        ["conformance/list/b/", "conformance/list/d/"],
        "delimited prefixes"
    );
    assert!(!page.truncated, "a complete listing is not truncated");

    let first = storage
        .list("conformance/list/", true, None, 2)
        .await
        .unwrap();
    assert!(first.truncated, "a listing cut at the limit says so");
    assert_eq!(
        first.objects.len() + first.prefixes.len(),
        2,
        "limit is honoured"
    );
    let rest = storage
        .list("conformance/list/", true, Some("conformance/list/b/"), 100)
        .await
        .unwrap();
    assert_eq!(
        rest.objects,
        ["conformance/list/c"],
        "start_after skips the folded prefix"
    );
    assert_eq!(
        rest.prefixes,
        ["conformance/list/d/"],
        "start_after continues the listing"
    );

    let first = storage
        .list("conformance/list/", false, None, 2)
        .await
        .unwrap();
    assert_eq!(
        first.objects,
        ["conformance/list/a", "conformance/list/b/1"],
        "a recursive listing pages in order"
    );
    assert!(first.truncated, "a recursive page cut at the limit says so");
    let second = storage
        .list("conformance/list/", false, Some("conformance/list/b/1"), 2)
        .await
        .unwrap();
    assert_eq!(
        second.objects,
        ["conformance/list/b/2", "conformance/list/c"],
        "start_after continues a recursive listing"
    );

    let none = storage
        .list("conformance/nothing/", true, None, 10)
        .await
        .unwrap();
    assert!(
        none.objects.is_empty() && none.prefixes.is_empty(),
        "an empty prefix lists nothing"
    );
}

async fn parts<S: Storage + ?Sized>(storage: &S) {
    let min = usize::try_from(storage.min_part_size()).unwrap().max(1);
    // A part arrives as several chunks.
    let part = |byte: u8, len: usize| {
        let whole = vec![byte; len];
        let (head, tail) = whole.split_at(len / 2);
        vec![Bytes::copy_from_slice(head), Bytes::copy_from_slice(tail)]
    };

    // Part 1 is written twice. Without positional parts both ids stay valid and distinct
    // (the first is the one completed); with them, the second write replaces the first.
    let target = "conformance/parts/blob";
    let upload = storage
        .create_parts("conformance/parts/staging")
        .await
        .unwrap();
    let first = storage.put_part(&upload, 1, part(b'z', min)).await.unwrap();
    let one = if storage.positional_parts() {
        storage.put_part(&upload, 1, part(b'a', min)).await.unwrap()
    } else {
        let rival = storage.put_part(&upload, 1, part(b'a', min)).await.unwrap();
        assert_ne!(first, rival, "part ids are unique per write");
        rival
    };
    let two = storage.put_part(&upload, 2, part(b'b', 3)).await.unwrap();
    assert!(
        !storage.exists(target).await.unwrap(),
        "parts are invisible before completion"
    );
    let listed = [one.clone(), two.clone()];
    if storage.readable_parts() {
        for skip in [0, 1, min as u64, min as u64 + 2, min as u64 + 3] {
            let stream = storage.read_parts(&upload, &listed, skip).await.unwrap();
            let mut expected = vec![b'a'; min];
            expected.extend_from_slice(b"bbb");
            assert_eq!(
                collect(stream).await,
                expected[skip as usize..],
                "parts read back from byte {skip}"
            );
        }
        let unknown = storage.read_parts("no-such-upload", &listed, 0).await;
        assert!(matches!(unknown, Err(StorageError::NotFound)));
    } else {
        let refused = storage.read_parts(&upload, &listed, 0).await;
        assert!(matches!(refused, Err(StorageError::Unsupported(_))));
    }
    storage
        .complete_parts(&upload, &[one, two], target)
        .await
        .expect("complete publishes the parts");
    let (meta, body) = storage.get(target, None).await.unwrap();
    assert_eq!(
        meta.size as usize,
        min + 3,
        "a completed object has the parts' total size"
    );
    let mut expected = vec![b'a'; min];
    expected.extend_from_slice(b"bbb");
    assert_eq!(
        collect(body).await,
        expected,
        "parts are joined in the order given"
    );

    // Completing onto an existing target publishes nothing.
    let again = storage
        .create_parts("conformance/parts/staging2")
        .await
        .unwrap();
    let other = storage.put_part(&again, 1, part(b'q', 1)).await.unwrap();
    assert!(
        matches!(
            storage.complete_parts(&again, &[other], target).await,
            Err(StorageError::AlreadyExists)
        ),
        "completing onto an existing object fails with AlreadyExists"
    );
    assert_eq!(
        storage.head(target).await.unwrap().size as usize,
        min + 3,
        "target unchanged"
    );
    storage.abort_parts(&again).await.unwrap();

    // No parts at all publishes an empty object.
    let empty = storage
        .create_parts("conformance/parts/staging3")
        .await
        .unwrap();
    storage
        .complete_parts(&empty, &[], "conformance/parts/empty")
        .await
        .unwrap();
    assert_eq!(
        storage.head("conformance/parts/empty").await.unwrap().size,
        0,
        "empty parts upload"
    );

    // An aborted upload leaves nothing behind.
    let aborted = storage
        .create_parts("conformance/parts/staging4")
        .await
        .unwrap();
    storage.put_part(&aborted, 1, part(b'x', 2)).await.unwrap();
    storage.abort_parts(&aborted).await.unwrap();
    assert!(
        !storage.exists("conformance/parts/aborted").await.unwrap(),
        "abort publishes nothing"
    );
}
