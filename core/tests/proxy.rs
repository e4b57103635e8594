//! The pull-through cache over an in-process upstream (another berth registry, answering
//! through an `UpstreamClient` that counts what it is asked): cold pulls fetch once, warm
//! ones not at all, concurrent cold pulls of one blob share one fill, and bytes that do not
//! match their digest are never published; what is not pulled for `evict-after` is evicted
//! by the collector, what is pulled stays.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use berth::proxy::{UpstreamClient, UpstreamRequest, UpstreamResponse, Upstreams};
use berth::{MemoryStorage, Method, Registry, RequestHead};
use futures_util::StreamExt;

mod support;
use support::body_bytes;
use support::images::{digest, get, image, options, push_blob, push_manifest};

/// Answers upstream requests from a registry of its own, counting them by method and path,
/// and flipping the first byte of blobs while `corrupt` is set.
struct InProcess {
    upstream: Registry<MemoryStorage>,
    asked: Mutex<Vec<String>>,
    corrupt: AtomicBool,
    /// Answers whose bodies are not yet read to the end or dropped; the most there were.
    open: Arc<AtomicUsize>,
    most_open: AtomicUsize,
}

/// Counts an answer open until its body is dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl UpstreamClient for InProcess {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, String> {
        let path = request.url.trim_start_matches("http://upstream");
        self.asked
            .lock()
            .expect("the log")
            .push(format!("{} {path}", request.method));
        let mut head = RequestHead::from_target(request.method, path);
        for (name, value) in request.headers {
            head = head.with_header(name, value);
        }
        let response = self.upstream.handle(head, berth::empty_body()).await;
        let headers = response
            .headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        let mut bytes = body_bytes(response.body).await;
        if self.corrupt.load(Ordering::SeqCst) && path.contains("/blobs/") && !bytes.is_empty() {
            bytes[0] ^= 0xff;
        }
        // Delivered in small chunks, as a network would.
        let chunks: Vec<Result<bytes::Bytes, berth::BodyError>> = bytes
            .chunks(1000)
            .map(|chunk| Ok(bytes::Bytes::copy_from_slice(chunk)))
            .collect();
        let now_open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_open.fetch_max(now_open, Ordering::SeqCst);
        let open = Open(Arc::clone(&self.open));
        // Each chunk waits a turn, as a network's would, so that concurrent pulls overlap.
        let body = futures_util::stream::iter(chunks).then(move |chunk| {
            let _counted = &open;
            async move {
                tokio::task::yield_now().await;
                chunk
            }
        });
        Ok(UpstreamResponse {
            status: response.status,
            headers,
            body: Box::pin(body),
        })
    }
}

impl InProcess {
    fn count(&self, wanted: &str) -> usize {
        let asked = self.asked.lock().expect("the log");
        asked.iter().filter(|line| line.as_str() == wanted).count()
    }
}

/// An upstream holding `upstream/app:v1` (a config and two layers), and a cache of it under
/// `hub/`.
async fn cache_of_an_upstream() -> (Registry<MemoryStorage>, Arc<InProcess>, Vec<Vec<u8>>) {
    cache_with_rules(
        r#"[{"prefix": "hub", "urls": ["http://upstream"]}]"#,
        options(false),
    )
    .await
}

async fn cache_with_rules(
    rules: &str,
    mut cache_options: berth::Options,
) -> (Registry<MemoryStorage>, Arc<InProcess>, Vec<Vec<u8>>) {
    let upstream = Registry::new(MemoryStorage::new(), options(false));
    let blobs = vec![b"config".to_vec(), vec![7; 250_000], vec![9; 3_000]];
    for blob in &blobs {
        assert_eq!(push_blob(&upstream, "upstream/app", blob).await, 201);
    }
    let manifest = image(&blobs[0], &[&blobs[1], &blobs[2]], "v1");
    assert_eq!(
        push_manifest(&upstream, "upstream/app", "v1", &manifest).await,
        201
    );
    let client = Arc::new(InProcess {
        upstream,
        asked: Mutex::default(),
        corrupt: AtomicBool::new(false),
        open: Arc::default(),
        most_open: AtomicUsize::new(0),
    });
    cache_options.upstreams = Arc::new(Upstreams::from_json(rules).expect("rules"));
    cache_options.upstream_client = Some(client.clone());
    (
        Registry::new(MemoryStorage::new(), cache_options),
        client,
        blobs,
    )
}

#[tokio::test]
async fn a_cold_pull_fetches_each_thing_once_and_a_warm_one_nothing() {
    let (cache, upstream, blobs) = cache_of_an_upstream().await;
    for round in 0..2 {
        let (status, _) = get(&cache, "/v2/hub/upstream/app/manifests/v1").await;
        assert_eq!(status, 200, "round {round}");
        for blob in &blobs {
            let (status, body) = get(
                &cache,
                &format!("/v2/hub/upstream/app/blobs/{}", digest(blob)),
            )
            .await;
            assert_eq!((status, body.len()), (200, blob.len()), "round {round}");
            assert_eq!(&body, blob);
        }
    }
    assert_eq!(upstream.count("GET /v2/upstream/app/manifests/v1"), 1);
    assert_eq!(upstream.count("HEAD /v2/upstream/app/manifests/v1"), 0);
    for blob in &blobs {
        let path = format!("GET /v2/upstream/app/blobs/{}", digest(blob));
        assert_eq!(upstream.count(&path), 1, "{path}");
    }
    // The cache is an ordinary repository that takes no pushes.
    let refused = support::send(&cache, Method::Post, "/v2/hub/x/blobs/uploads/", &[], b"").await;
    assert_eq!(refused.status, 405);
}

#[tokio::test]
async fn concurrent_cold_pulls_of_one_blob_share_one_fill() {
    let (cache, upstream, blobs) = cache_of_an_upstream().await;
    let target = format!("/v2/hub/upstream/app/blobs/{}", digest(&blobs[1]));
    let finished = AtomicUsize::new(0);
    let pulls = (0..8).map(|_| async {
        let (status, body) = get(&cache, &target).await;
        assert_eq!(status, 200);
        assert_eq!(body, blobs[1]);
        finished.fetch_add(1, Ordering::SeqCst);
    });
    futures_util::future::join_all(pulls).await;
    assert_eq!(finished.load(Ordering::SeqCst), 8);
    let path = format!("GET /v2/upstream/app/blobs/{}", digest(&blobs[1]));
    assert_eq!(upstream.count(&path), 1);
}

#[tokio::test]
async fn bytes_that_do_not_match_their_digest_are_never_published() {
    let (cache, upstream, blobs) = cache_of_an_upstream().await;
    let target = format!("/v2/hub/upstream/app/blobs/{}", digest(&blobs[1]));
    upstream.corrupt.store(true, Ordering::SeqCst);
    let response = support::send(&cache, Method::Get, &target, &[], b"").await;
    assert_eq!(
        response.status, 200,
        "the body streams before the digest is known"
    );
    let berth::Body::Stream(mut stream) = response.body else {
        panic!("a cold blob streams");
    };
    let mut received = 0;
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => received += chunk.len(),
            Err(_) => failed = true,
        }
    }
    assert!(failed, "the body ends in an error");
    assert!(received < blobs[1].len(), "the last chunk is held back");
    // Nothing published: the next pull fills again, from a mended upstream.
    upstream.corrupt.store(false, Ordering::SeqCst);
    let (status, body) = get(&cache, &target).await;
    assert_eq!((status, body == blobs[1]), (200, true));
    let path = format!("GET /v2/upstream/app/blobs/{}", digest(&blobs[1]));
    assert_eq!(upstream.count(&path), 2);
}

#[tokio::test]
async fn what_is_not_pulled_is_evicted_and_what_is_pulled_stays() {
    // The cache's clock is the real one here: pull times are seconds apart.
    let mut options = options(true);
    options.clock = Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    });
    let (cache, upstream, blobs) = cache_with_rules(
        r#"[{"prefix": "hub", "urls": ["http://upstream"], "evict-after": "4s"}]"#,
        options,
    )
    .await;
    // v2 upstream: a layer of its own beside v1's config.
    let only_v2 = vec![5u8; 7_000];
    assert_eq!(
        push_blob(&upstream.upstream, "upstream/app", &only_v2).await,
        201
    );
    let v2 = image(&blobs[0], &[&only_v2], "v2");
    assert_eq!(
        push_manifest(&upstream.upstream, "upstream/app", "v2", &v2).await,
        201
    );
    let pull = |tag: &'static str, layers: Vec<Vec<u8>>| {
        let cache = cache.clone();
        async move {
            let (status, _) = get(&cache, &format!("/v2/hub/upstream/app/manifests/{tag}")).await;
            assert_eq!(status, 200, "{tag}");
            for layer in layers {
                let path = format!("/v2/hub/upstream/app/blobs/{}", digest(&layer));
                assert_eq!(get(&cache, &path).await.0, 200, "{path}");
            }
        }
    };
    pull("v1", blobs.clone()).await;
    pull("v2", vec![only_v2.clone()]).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    pull("v1", blobs.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    // v2 was last pulled 5 s ago, v1 2.5 s ago.
    let collection = berth::Collection {
        grace: 0,
        untagged: true,
        ..berth::Collection::default()
    };
    let mut evicted = Vec::new();
    for _ in 0..4 {
        let report = cache.collect_garbage(&collection).await.expect("collected");
        evicted.extend(report.tags_by_repository.into_values().flatten());
    }
    assert_eq!(evicted, ["v2"]);
    let (status, tags) = get(&cache, "/v2/hub/upstream/app/tags/list").await;
    assert_eq!(status, 200);
    let tags: serde_json::Value = serde_json::from_slice(&tags).expect("json");
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    let stored: Vec<String> = berth::storage::StorageExt::list_all(cache.storage(), "")
        .await
        .expect("listed")
        .into_iter()
        .map(String::from)
        .collect();
    let v2_layer = digest(&only_v2);
    assert!(
        !stored.iter().any(|key| key.contains(v2_layer.hex())),
        "{stored:?}"
    );

    // v1 is served warm; v2 is fetched again, once.
    pull("v1", blobs.clone()).await;
    pull("v2", vec![only_v2.clone()]).await;
    for blob in &blobs {
        let path = format!("GET /v2/upstream/app/blobs/{}", digest(blob));
        assert_eq!(upstream.count(&path), 1, "{path}");
    }
    let path = format!("GET /v2/upstream/app/blobs/{}", digest(&only_v2));
    assert_eq!(upstream.count(&path), 2, "{path}");
    assert_eq!(upstream.count("GET /v2/upstream/app/manifests/v2"), 2);
}

#[tokio::test]
async fn mirror_prefills_what_a_pull_would_fetch_once() {
    let (cache, upstream, blobs) = cache_of_an_upstream().await;
    let report = cache
        .mirror("hub/upstream/app", "v1", &[])
        .await
        .expect("mirrored");
    assert_eq!(
        (report.manifests, report.blobs_fetched, report.blobs_cached),
        (1, 3, 0)
    );
    let size: usize = blobs.iter().map(Vec::len).sum();
    assert_eq!(report.bytes_fetched, size as u64);
    let again = cache
        .mirror("hub/upstream/app", "v1", &[])
        .await
        .expect("mirrored");
    assert_eq!((again.blobs_fetched, again.blobs_cached), (0, 3));
    for blob in &blobs {
        let path = format!("GET /v2/upstream/app/blobs/{}", digest(blob));
        assert_eq!(upstream.count(&path), 1, "{path}");
        let (status, body) = get(
            &cache,
            &format!("/v2/hub/upstream/app/blobs/{}", digest(blob)),
        )
        .await;
        assert_eq!((status, &body), (200, blob));
        assert_eq!(upstream.count(&path), 1, "{path}");
    }
    // Only cached repositories, and what the upstream has.
    assert!(cache.mirror("team/app", "v1", &[]).await.is_err());
    assert!(cache.mirror("hub/upstream/app", "v9", &[]).await.is_err());
}

#[tokio::test]
async fn max_concurrent_bounds_the_requests_open_to_an_upstream() {
    for (limit, rules) in [
        (None, r#"[{"prefix": "hub", "urls": ["http://upstream"]}]"#),
        (
            Some(2),
            r#"[{"prefix": "hub", "urls": ["http://upstream"], "max-concurrent": 2}]"#,
        ),
    ] {
        let mut cache_options = options(false);
        cache_options.pause = Some(berth::tokio_timer());
        let (cache, upstream, _) = cache_with_rules(rules, cache_options).await;
        let blobs: Vec<Vec<u8>> = (0..8u8).map(|n| vec![n; 40_000]).collect();
        for blob in &blobs {
            assert_eq!(
                push_blob(&upstream.upstream, "upstream/app", blob).await,
                201
            );
        }
        let pulls = blobs.iter().map(|blob| {
            let cache = cache.clone();
            async move {
                let path = format!("/v2/hub/upstream/app/blobs/{}", digest(blob));
                get(&cache, &path).await
            }
        });
        for ((status, body), blob) in futures_util::future::join_all(pulls)
            .await
            .iter()
            .zip(&blobs)
        {
            assert_eq!((*status, body), (200, blob));
        }
        let most = upstream.most_open.load(Ordering::SeqCst);
        match limit {
            Some(limit) => assert!(most <= limit, "{most} open at once"),
            // Without a limit the pulls do overlap (the check above can fail).
            None => assert!(most > 2, "{most} open at once"),
        }
        assert_eq!(upstream.open.load(Ordering::SeqCst), 0);
    }
}
