//! A page of the tag list or the catalog costs one listing of that page: index keys, no walk
//! of the repository tree (once the index exists; a registry:2 root is indexed on first use).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth::{Algorithm, Method, Options, Registry, RequestHead, empty_body, full_body};
use support::{Hooked, Hooks};

/// Counts the entries every listing returns.
#[derive(Debug, Default)]
struct Counting {
    listed: AtomicUsize,
}

impl Hooks for Counting {
    fn listed(&self, entries: usize) {
        self.listed.fetch_add(entries, Ordering::Relaxed);
    }
}

async fn status(
    registry: &Registry<Arc<Hooked<Counting>>>,
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
    let storage = Arc::new(Hooked::<Counting>::default());
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

    storage.hooks.listed.store(0, Ordering::Relaxed);
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
    let listed = storage.hooks.listed.load(Ordering::Relaxed);
    assert!(listed <= 6, "a page of 5 tags listed {listed} entries");

    storage.hooks.listed.store(0, Ordering::Relaxed);
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
    let listed = storage.hooks.listed.load(Ordering::Relaxed);
    assert!(
        listed <= 4,
        "a page of 3 repositories listed {listed} entries"
    );
}
