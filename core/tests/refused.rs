//! Refused requests leave nothing a later request can observe, and one bad index entry never
//! stops a listing (issue 27: defects 1 and 2).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth::storage::{Key, PutMode, StorageExt};
use berth::{
    Algorithm, FsStorage, MemoryStorage, Method, Notice, Options, Registry, RequestHead, Response,
    Storage,
};

mod support;
use support::{body_bytes, send};

fn options() -> Options {
    let counter = Arc::new(AtomicU64::new(0));
    let mut options = Options::new(
        Arc::new(move || format!("s{}", counter.fetch_add(1, Ordering::Relaxed))),
        Arc::new(|| 1_000),
    );
    // Small parts, so the chunks below are written as several parts and a staged tail.
    options.part_size = 4;
    options
}

/// `options` with a notice sink that keeps what it hears.
fn hearing_notices(mut options: Options) -> (Options, Arc<Mutex<Vec<Notice>>>) {
    let notices = Arc::new(Mutex::new(Vec::new()));
    let heard = Arc::clone(&notices);
    options.notices = Some(Arc::new(move |notice: &Notice| {
        heard.lock().expect("lock").push(notice.clone());
    }));
    (options, notices)
}

fn fs_root(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-refused-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every key in storage but berth's own bookkeeping of repositories (catalog entries).
async fn stored_keys<S: Storage>(registry: &Registry<S>) -> Vec<String> {
    let keys = registry.storage().list_all("").await.expect("list");
    keys.into_iter()
        .map(String::from)
        .filter(|key| !key.starts_with("berth/catalog"))
        .collect()
}

/// A chunked upload that never said `?digest-algorithm=sha512` and is finished with a wrong
/// sha512 digest (and an extra last chunk) is refused, and its bytes are neither a blob nor
/// mountable into another repository; the right digest still works.
async fn refused_digest_leaves_nothing<S: Storage>(registry: Registry<S>) {
    let content = b"content no push was accepted for";
    let sha256 = Algorithm::Sha256.digest(content);
    let wrong = Algorithm::Sha512.digest(b"something else");
    for last_chunk in [&b""[..], &b" and more"[..]] {
        let start = send(&registry, Method::Post, "/v2/a/blobs/uploads/", &[], b"").await;
        let location = start.header("Location").expect("location").to_owned();
        let patch = send(&registry, Method::Patch, &location, &[], content).await;
        assert_eq!(patch.status, 202);
        let finish = send(
            &registry,
            Method::Put,
            &format!("{location}?digest={wrong}"),
            &[],
            last_chunk,
        )
        .await;
        assert_eq!(finish.status, 400);
        assert!(body_text(finish).await.contains("DIGEST_INVALID"));
        assert_eq!(stored_keys(&registry).await, Vec::<String>::new());
        let mount = send(
            &registry,
            Method::Post,
            &format!("/v2/other/blobs/uploads/?mount={sha256}"),
            &[],
            b"",
        )
        .await;
        assert_eq!(mount.status, 202, "an automatic mount of refused bytes");
        let head = format!("/v2/other/blobs/{sha256}");
        assert_eq!(
            send(&registry, Method::Head, &head, &[], b"").await.status,
            404
        );
        // The session the mount fell back to.
        let cancel = mount.header("Location").expect("location").to_owned();
        assert_eq!(
            send(&registry, Method::Delete, &cancel, &[], b"")
                .await
                .status,
            204
        );
    }

    let right = Algorithm::Sha512.digest(content);
    let start = send(&registry, Method::Post, "/v2/a/blobs/uploads/", &[], b"").await;
    let location = start.header("Location").expect("location").to_owned();
    assert_eq!(
        send(&registry, Method::Patch, &location, &[], content)
            .await
            .status,
        202
    );
    let target = format!("{location}?digest={right}");
    assert_eq!(
        send(&registry, Method::Put, &target, &[], b"").await.status,
        201
    );
    let pulled = send(
        &registry,
        Method::Get,
        &format!("/v2/a/blobs/{right}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(body_bytes(pulled.body).await, content);
    // Only the blob under its named digest and its link: no interim copy under sha256.
    let keys = stored_keys(&registry).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.contains(right.hex())), "{keys:?}");
}

async fn body_text(response: Response) -> String {
    String::from_utf8_lossy(&body_bytes(response.body).await).into_owned()
}

#[tokio::test]
async fn refused_digest_leaves_nothing_in_memory() {
    refused_digest_leaves_nothing(Registry::new(MemoryStorage::new(), options())).await;
}

#[tokio::test]
async fn refused_digest_leaves_nothing_on_a_filesystem() {
    let dir = fs_root("digest");
    refused_digest_leaves_nothing(Registry::new(
        FsStorage::new(&dir).expect("root"),
        options(),
    ))
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A name one character over the limit is refused before anything is written.
#[tokio::test]
async fn a_name_over_the_limit_writes_nothing() {
    let dir = fs_root("name");
    let registry = Registry::new(FsStorage::new(&dir).expect("root"), options());
    let digest = Algorithm::Sha256.digest(b"x");
    let target = format!("/v2/{}/blobs/uploads/?digest={digest}", "b".repeat(255));
    let refused = send(&registry, Method::Post, &target, &[], b"x").await;
    assert_eq!(refused.status, 400);
    assert!(body_text(refused).await.contains("NAME_INVALID"));
    assert_eq!(
        registry.storage().list_all("").await.expect("list"),
        Vec::<Key>::new()
    );
    let catalog = send(&registry, Method::Get, "/v2/_catalog", &[], b"").await;
    assert_eq!(catalog.status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A root registry:2 wrote holds a folder whose name is no valid repository name: the catalog
/// lists every other repository (and tries the bad one again next time, leaving its index
/// incomplete), instead of failing for everyone.
#[tokio::test]
async fn a_bad_folder_does_not_stop_the_catalog() {
    let storage = MemoryStorage::new();
    let link =
        |name: &str| format!("docker/registry/v2/repositories/{name}/_layers/sha256/00/link");
    for name in ["good/one", "Bad..Name", "good/two"] {
        storage
            .put(
                &Key::new(link(name)),
                "sha256:00".into(),
                PutMode::Overwrite.into(),
            )
            .await
            .expect("put");
    }
    let (options, notices) = hearing_notices(options());
    let registry = Registry::new(storage, options);
    for _ in 0..2 {
        let catalog = send(&registry, Method::Get, "/v2/_catalog", &[], b"").await;
        assert_eq!(catalog.status, 200);
        assert_eq!(
            body_text(catalog).await,
            r#"{"repositories":["good/one","good/two"]}"#
        );
    }
    // Each listing tells the host what it left out, and why.
    let notices: Vec<String> = notices
        .lock()
        .expect("lock")
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(
        notices[0].contains("\"Bad..Name\"") && notices[0].contains("invalid repository name"),
        "{notices:?}"
    );
    assert!(
        !registry
            .storage()
            .exists(&"berth/catalog-complete".into())
            .await
            .expect("head")
    );
}

/// A tag registry:2 wrote whose link holds no digest: the tag list answers with the other tags
/// and tells the host which tag it left out.
#[tokio::test]
async fn a_tag_that_cannot_be_indexed_is_reported() {
    let storage = MemoryStorage::new();
    let digest = Algorithm::Sha256.digest(b"m");
    let current =
        |tag: &str| format!("docker/registry/v2/repositories/r/_manifests/tags/{tag}/current/link");
    for (tag, link) in [("good", digest.as_str()), ("broken", "no digest here")] {
        storage
            .put(
                &Key::new(current(tag)),
                link.to_owned().into(),
                PutMode::Overwrite.into(),
            )
            .await
            .expect("put");
    }
    let (options, notices) = hearing_notices(options());
    let registry = Registry::new(storage, options);
    let tags = send(&registry, Method::Get, "/v2/r/tags/list", &[], b"").await;
    assert_eq!(tags.status, 200);
    assert_eq!(body_text(tags).await, r#"{"name":"r","tags":["good"]}"#);
    let notices = notices.lock().expect("lock").clone();
    assert!(
        matches!(
            notices.as_slice(),
            [Notice::Unindexed { repository: Some(r), entry, reason }]
                if r == "r" && entry == "broken" && reason.contains("holds no digest")
        ),
        "{notices:?}"
    );
}

/// A `Content-Length` no byte count can be is refused before the body is read (a body that
/// never ends stands for the client that sends nothing more).
#[tokio::test]
async fn a_length_that_is_no_byte_count_is_refused_at_once() {
    let registry = Registry::new(MemoryStorage::new(), options());
    let digest = Algorithm::Sha256.digest(b"x");
    // One field no byte count can be, a list of two lengths, or two fields that disagree.
    for lengths in [
        &["99999999999999999999"][..],
        &["12abc"],
        &["-1"],
        &["1, 0"],
        &["1", "0"],
    ] {
        let mut head = RequestHead::from_target(
            Method::Post,
            &format!("/v2/r/blobs/uploads/?digest={digest}"),
        );
        for length in lengths {
            head = head.with_header("Content-Length", *length);
        }
        let length = lengths.join("|");
        let never_ends: berth::RequestBody = Box::pin(futures_util::stream::pending());
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            registry.handle(head, never_ends),
        );
        let refused = answer.await.expect("answered without reading the body");
        assert_eq!(refused.status, 400, "{length}");
        assert!(body_text(refused).await.contains("SIZE_INVALID"));
    }
}
