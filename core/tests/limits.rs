//! Limits: abandoned upload sessions are purged after a maximum age; chunk limits are
//! advertised and enforced; a blob that needs more parts than the storage allows is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth::storage::{PutMode, Storage, StorageExt};
use berth::{
    Body, FsStorage, Method, Options, Registry, RequestHead, Response, empty_body, full_body,
};

async fn send(
    registry: &Registry<FsStorage>,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = RequestHead::from_target(method, target);
    for (name, value) in headers {
        head = head.with_header(*name, *value);
    }
    let body = if body.is_empty() {
        empty_body()
    } else {
        full_body(body.to_vec())
    };
    registry.handle(head, body).await
}

fn root(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-expiry-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn sessions_older_than_the_limit_are_purged_with_their_parts() {
    let dir = root("purge");
    let now = Arc::new(AtomicU64::new(1_000));
    let clock = Arc::clone(&now);
    let counter = Arc::new(AtomicU64::new(0));
    let mut options = Options::new(
        Arc::new(move || format!("s{}", counter.fetch_add(1, Ordering::Relaxed))),
        Arc::new(move || clock.load(Ordering::Relaxed)),
    );
    options.part_size = 4;
    let registry = Registry::new(FsStorage::new(&dir).expect("root"), options);

    let old = send(&registry, Method::Post, "/v2/a/blobs/uploads/", &[], b"").await;
    let old = old.header("Location").expect("location").to_owned();
    assert_eq!(
        send(&registry, Method::Patch, &old, &[], b"some bytes")
            .await
            .status,
        202
    );
    now.store(1_500, Ordering::Relaxed);
    let young = send(&registry, Method::Post, "/v2/b/c/blobs/uploads/", &[], b"").await;
    let young = young.header("Location").expect("location").to_owned();
    assert_eq!(
        send(&registry, Method::Patch, &young, &[], b"more bytes")
            .await
            .status,
        202
    );
    let finished = send(&registry, Method::Post, "/v2/a/blobs/uploads/", &[], b"").await;
    let finished = finished.header("Location").expect("location").to_owned();
    let digest = berth::Algorithm::Sha256.digest(b"");
    assert_eq!(
        send(
            &registry,
            Method::Put,
            &format!("{finished}?digest={digest}"),
            &[],
            b""
        )
        .await
        .status,
        201
    );

    now.store(2_000, Ordering::Relaxed);
    assert_eq!(
        registry.purge_uploads(700).await.expect("purge"),
        1,
        "only the old session"
    );
    assert_eq!(
        send(&registry, Method::Get, &old, &[], b"").await.status,
        404
    );
    assert_eq!(
        send(&registry, Method::Get, &young, &[], b"").await.status,
        204
    );
    assert_eq!(
        registry.purge_uploads(700).await.expect("purge"),
        0,
        "nothing more is that old"
    );
    assert_eq!(registry.purge_uploads(0).await.expect("purge"), 1);
    assert_eq!(
        send(&registry, Method::Get, &young, &[], b"").await.status,
        404
    );
    assert_eq!(
        std::fs::read_dir(dir.join(".berth/parts"))
            .expect("parts")
            .count(),
        0,
        "parts purged too"
    );
    std::fs::remove_dir_all(dir).expect("cleanup");
}

/// Sessions berth recorded in its earlier layout (a record under the repository's
/// `_uploads/<id>/`, an index entry holding the repository name) are purged too.
#[tokio::test]
async fn sessions_in_the_earlier_layout_are_purged() {
    let dir = root("legacy");
    let options = Options::new(Arc::new(|| "s".to_owned()), Arc::new(|| 10_000));
    let registry = Registry::new(FsStorage::new(&dir).expect("root"), options);
    let record = "docker/registry/v2/repositories/a/b/_uploads/old/berth-session.json";
    let entry = "berth/uploads/0000000000000100-old";
    let storage = registry.storage();
    let session = r#"{"offset":0,"hash_state":"sha256:","parts":[],"started_at":100}"#;
    storage
        .put(&record.into(), session.into(), PutMode::Create.into())
        .await
        .expect("record");
    storage
        .put(&entry.into(), "a/b".into(), PutMode::Create.into())
        .await
        .expect("entry");
    let fresh = send(&registry, Method::Post, "/v2/a/b/blobs/uploads/", &[], b"").await;
    assert_eq!(fresh.status, 202);

    assert_eq!(registry.purge_uploads(700).await.expect("purge"), 1);
    assert!(!storage.exists(&record.into()).await.expect("exists"));
    assert!(!storage.exists(&entry.into()).await.expect("exists"));
    let location = fresh.header("Location").expect("location");
    assert_eq!(
        send(&registry, Method::Get, location, &[], b"")
            .await
            .status,
        204,
        "the fresh session stays"
    );
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[tokio::test]
async fn chunk_max_length_is_advertised_and_enforced() {
    let dir = root("chunk-max");
    let mut options = Options::new(Arc::new(|| "s".to_owned()), Arc::new(|| 0));
    options.chunk_max_length = Some(10);
    let registry = Registry::new(FsStorage::new(&dir).expect("root"), options);
    let started = send(&registry, Method::Post, "/v2/r/blobs/uploads/", &[], b"").await;
    assert_eq!(started.header("OCI-Chunk-Max-Length"), Some("10"));
    let location = started.header("Location").expect("location").to_owned();
    let too_big = send(
        &registry,
        Method::Patch,
        &location,
        &[("Content-Range", "0-10")],
        b"0123456789a",
    )
    .await;
    assert_eq!(too_big.status, 413);
    let streamed = send(&registry, Method::Patch, &location, &[], b"0123456789a").await;
    assert_eq!(
        streamed.status, 413,
        "a streamed chunk is counted as it arrives"
    );
    let fits = send(
        &registry,
        Method::Patch,
        &location,
        &[("Content-Range", "0-9")],
        b"0123456789",
    )
    .await;
    assert_eq!((fits.status, fits.header("Range")), (202, Some("0-9")));
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[tokio::test]
async fn a_blob_needing_more_parts_than_the_storage_allows_is_refused() {
    let mut options = Options::new(Arc::new(|| "s".to_owned()), Arc::new(|| 0));
    options.part_size = 4;
    let registry = Registry::new(berth::MemoryStorage::new().with_max_parts(3), options);
    let head = RequestHead::from_target(Method::Post, "/v2/r/blobs/uploads/");
    let started = registry.handle(head, empty_body()).await;
    let location = started.header("Location").expect("location").to_owned();
    let fits = registry
        .handle(
            RequestHead::from_target(Method::Patch, &location),
            full_body(&b"123456789012"[..]),
        )
        .await;
    assert_eq!(fits.status, 202, "three parts of four bytes fit");
    let refused = registry
        .handle(
            RequestHead::from_target(Method::Patch, &location),
            full_body(&b"x"[..]),
        )
        .await;
    assert_eq!(refused.status, 413, "a fourth part does not");
    let Body::Full(body) = refused.body else {
        panic!("an error body")
    };
    assert!(String::from_utf8_lossy(&body).contains("part size"));
}
