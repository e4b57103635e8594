//! A page of the tag list or the catalog costs one listing of that page: index keys, no walk
//! of the repository tree (once the index exists; a registry:2 root is indexed on first use).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use berth::storage::{ByteStream, Chunks, ListPage, ObjectMeta, PutMode, Storage, StorageError};
use berth::{
    Algorithm, MemoryStorage, Method, Options, Registry, RequestHead, empty_body, full_body,
};
use bytes::Bytes;

/// Counts the entries every listing returns.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStorage,
    listed: AtomicUsize,
}

#[async_trait]
impl Storage for Counting {
    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        self.inner.get(key, range).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, StorageError> {
        self.inner.put(key, data, mode).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        let page = self
            .inner
            .list(prefix, delimiter, start_after, limit)
            .await?;
        self.listed
            .fetch_add(page.objects.len() + page.prefixes.len(), Ordering::Relaxed);
        Ok(page)
    }
    async fn create_parts(&self, staging_key: &str) -> Result<String, StorageError> {
        self.inner.create_parts(staging_key).await
    }
    async fn put_part(
        &self,
        upload: &str,
        number: u32,
        data: Chunks,
    ) -> Result<String, StorageError> {
        self.inner.put_part(upload, number, data).await
    }
    async fn complete_parts(
        &self,
        upload: &str,
        parts: &[String],
        target: &str,
    ) -> Result<(), StorageError> {
        self.inner.complete_parts(upload, parts, target).await
    }
    async fn abort_parts(&self, upload: &str) -> Result<(), StorageError> {
        self.inner.abort_parts(upload).await
    }
}

async fn status(
    registry: &Registry<Arc<Counting>>,
    method: Method,
    target: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> (u16, String) {
    let mut head = RequestHead::from_target(method, target);
    if let Some(content_type) = content_type {
        head = head.with_header("Content-Type", content_type);
    }
    let body = if body.is_empty() {
        empty_body()
    } else {
        full_body(body.to_vec())
    };
    let response = registry.handle(head, body).await;
    let text = match response.body {
        berth::Body::Full(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    };
    (response.status, text)
}

#[tokio::test]
async fn a_page_lists_only_that_page() {
    let storage = Arc::new(Counting::default());
    let registry = Registry::new(
        Arc::clone(&storage),
        Options::new(Arc::new(|| "s".to_owned()), Arc::new(|| 0)),
    );
    let config = b"{}";
    let digest = Algorithm::Sha256.digest(config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":2}},"layers":[]}}"#
    );
    for repo in 0..40 {
        let (code, _) = status(
            &registry,
            Method::Post,
            &format!("/v2/repo{repo:02}/blobs/uploads/?digest={digest}"),
            config,
            None,
        )
        .await;
        assert_eq!(code, 201);
    }
    for tag in 0..60 {
        let (code, _) = status(
            &registry,
            Method::Put,
            &format!("/v2/repo00/manifests/t{tag:02}"),
            manifest.as_bytes(),
            Some("application/vnd.oci.image.manifest.v1+json"),
        )
        .await;
        assert_eq!(code, 201);
    }
    // The first listing may build the index; after that a page reads a page.
    status(
        &registry,
        Method::Get,
        "/v2/repo00/tags/list?n=1",
        b"",
        None,
    )
    .await;
    status(&registry, Method::Get, "/v2/_catalog?n=1", b"", None).await;

    storage.listed.store(0, Ordering::Relaxed);
    let (code, body) = status(
        &registry,
        Method::Get,
        "/v2/repo00/tags/list?n=5&last=t20",
        b"",
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        r#"{"name":"repo00","tags":["t21","t22","t23","t24","t25"]}"#
    );
    let listed = storage.listed.load(Ordering::Relaxed);
    assert!(listed <= 6, "a page of 5 tags listed {listed} entries");

    storage.listed.store(0, Ordering::Relaxed);
    let (code, body) = status(
        &registry,
        Method::Get,
        "/v2/_catalog?n=3&last=repo10",
        b"",
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body, r#"{"repositories":["repo11","repo12","repo13"]}"#);
    let listed = storage.listed.load(Ordering::Relaxed);
    assert!(
        listed <= 4,
        "a page of 3 repositories listed {listed} entries"
    );
}
