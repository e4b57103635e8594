//! An upload writes one part while it receives the next: the body keeps flowing during a
//! part write, no second write starts before the first ends, and the parts land in order.

mod support;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use berth::storage::{Key, StorageExt};
use berth::{Algorithm, BodyError, Method, Options, Registry, RequestHead};
use bytes::Bytes;
use support::{Hooked, Hooks};
use tokio::sync::{Semaphore, mpsc};

/// Part writes wait for a permit; counts how many start and how many are in flight.
#[derive(Debug)]
struct GatedParts {
    gate: Semaphore,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    started: AtomicUsize,
}

#[async_trait]
impl Hooks for GatedParts {
    async fn part_started(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate").forget();
    }
    fn part_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_is_written_while_the_next_arrives() {
    let storage = Arc::new(Hooked {
        inner: berth::MemoryStorage::new(),
        hooks: GatedParts {
            gate: Semaphore::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
        },
    });
    let hooks = &storage.hooks;
    let mut options = Options::new(Arc::new(|| "upload".into()), Arc::new(|| 0));
    options.part_size = 4;
    let registry = Arc::new(Registry::new(Arc::clone(&storage), options));

    let content = b"0123456789abcdefghij".to_vec();
    let digest = Algorithm::Sha256.digest(&content).to_string();
    // The body is a channel holding one chunk: a chunk sent is only taken when the upload
    // asks for the next.
    let (sender, receiver) = mpsc::channel::<Result<Bytes, BodyError>>(1);
    let body = Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ));
    let head = RequestHead::from_target(
        Method::Post,
        &format!("/v2/pipe/blobs/uploads/?digest={digest}"),
    );
    let request = tokio::spawn({
        let registry = Arc::clone(&registry);
        async move { registry.handle(head, body).await.status }
    });

    let send = |range: Range<usize>| {
        let chunk = Bytes::copy_from_slice(&content[range]);
        let sender = sender.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), sender.send(Ok(chunk)))
                .await
                .expect("the upload stopped taking the body")
                .expect("receiver");
        }
    };
    // Part 1 fills and its write starts, then waits at the gate.
    send(0..4).await;
    // Part 2 is taken from the body while part 1 is still being written…
    send(4..8).await;
    send(8..12).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // …but its own write waits for part 1's.
    assert_eq!(hooks.started.load(Ordering::SeqCst), 1);
    hooks.gate.add_permits(100);
    send(12..16).await;
    send(16..20).await;
    drop(sender);

    assert_eq!(request.await.expect("request"), 201);
    assert_eq!(hooks.started.load(Ordering::SeqCst), 5);
    assert_eq!(hooks.most_in_flight.load(Ordering::SeqCst), 1);
    let (status, stored) = fetch(&registry, &format!("/v2/pipe/blobs/{digest}")).await;
    assert_eq!(status, 200);
    assert_eq!(stored, content, "parts out of order or lost");
}

/// Pushes `content` in one POST naming `digest`; the response status.
async fn post_whole<H: Hooks>(
    registry: &Registry<Arc<Hooked<H>>>,
    repository: &str,
    digest: &str,
    content: &[u8],
) -> u16 {
    let target = format!("/v2/{repository}/blobs/uploads/?digest={digest}");
    registry
        .handle(
            RequestHead::from_target(Method::Post, &target),
            berth::full_body(content.to_vec()),
        )
        .await
        .status
}

async fn fetch<H: Hooks>(registry: &Registry<Arc<Hooked<H>>>, target: &str) -> (u16, Vec<u8>) {
    let response = registry
        .handle(
            RequestHead::from_target(Method::Get, target),
            berth::empty_body(),
        )
        .await;
    (response.status, support::body_bytes(response.body).await)
}

/// Counts part writes.
#[derive(Debug, Default)]
struct CountedParts {
    started: AtomicUsize,
}

#[async_trait]
impl Hooks for CountedParts {
    async fn part_started(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_blob_within_one_part_is_stored_with_one_write() {
    let storage = Arc::new(Hooked::<CountedParts>::default());
    let ids = Arc::new(AtomicUsize::new(0));
    let mut options = Options::new(
        Arc::new(move || format!("upload{}", ids.fetch_add(1, Ordering::SeqCst))),
        Arc::new(|| 0),
    );
    options.part_size = 1024;
    let registry = Registry::new(Arc::clone(&storage), options);
    let content = b"small enough for one part".to_vec();
    let digest = Algorithm::Sha256.digest(&content).to_string();

    // POST then PUT, twice (the second finds the content stored), then one monolithic POST.
    for _ in 0..2 {
        let response = registry
            .handle(
                RequestHead::from_target(Method::Post, "/v2/whole/blobs/uploads/"),
                berth::empty_body(),
            )
            .await;
        assert_eq!(response.status, 202);
        let location = response.header("Location").expect("Location").to_owned();
        let separator = if location.contains('?') { '&' } else { '?' };
        let response = registry
            .handle(
                RequestHead::from_target(
                    Method::Put,
                    &format!("{location}{separator}digest={digest}"),
                ),
                berth::full_body(content.clone()),
            )
            .await;
        assert_eq!(response.status, 201);
    }
    assert_eq!(post_whole(&registry, "other", &digest, &content).await, 201);
    assert_eq!(storage.hooks.started.load(Ordering::SeqCst), 0);
    for repository in ["whole", "other"] {
        let (status, stored) = fetch(&registry, &format!("/v2/{repository}/blobs/{digest}")).await;
        assert_eq!((status, stored), (200, content.clone()));
    }

    // A wrong digest stores nothing.
    let wrong = Algorithm::Sha256.digest(b"something else").to_string();
    assert_eq!(post_whole(&registry, "whole", &wrong, &content).await, 400);
    let (status, _) = fetch(&registry, &format!("/v2/whole/blobs/{wrong}")).await;
    assert_eq!(status, 404);
    let data_key = |digest: &str| {
        format!(
            "docker/registry/v2/blobs/sha256/{}/{}/data",
            &digest[7..9],
            &digest[7..]
        )
    };
    assert!(
        storage
            .inner
            .exists(&Key::new(data_key(&digest)))
            .await
            .expect("exists")
    );
    assert!(
        !storage
            .inner
            .exists(&Key::new(data_key(&wrong)))
            .await
            .expect("exists")
    );
}

/// The storage calls an upload makes, in order.
#[derive(Debug, Default)]
struct CallLog {
    calls: std::sync::Mutex<Vec<String>>,
}

impl CallLog {
    fn push(&self, call: String) {
        self.calls.lock().expect("log").push(call);
    }
}

#[async_trait]
impl Hooks for CallLog {
    async fn part_started(&self) {
        self.push("part".into());
    }
    fn parts_synced(&self) {
        self.push("sync".into());
    }
    fn stored(&self, key: &str) {
        self.push(format!("put {key}"));
    }
}

#[tokio::test]
async fn parts_are_made_durable_before_the_session_record_names_them() {
    let storage = Arc::new(Hooked::<CallLog>::default());
    let mut options = Options::new(Arc::new(|| "upload".into()), Arc::new(|| 0));
    options.part_size = 4;
    let registry = Registry::new(Arc::clone(&storage), options);
    let response = registry
        .handle(
            RequestHead::from_target(Method::Post, "/v2/durable/blobs/uploads/"),
            berth::empty_body(),
        )
        .await;
    assert_eq!(response.status, 202);
    let location = response.header("Location").expect("Location").to_owned();
    storage.hooks.calls.lock().expect("log").clear();

    let patch = RequestHead::from_target(Method::Patch, &location);
    let response = registry
        .handle(patch, berth::full_body(b"0123456789".to_vec()))
        .await;
    assert_eq!(response.status, 202);
    let calls = storage.hooks.calls.lock().expect("log").clone();
    let last_part = calls.iter().rposition(|call| call == "part");
    let sync = calls.iter().rposition(|call| call == "sync");
    let record = calls
        .iter()
        .rposition(|call| call.starts_with("put berth/uploads/"));
    assert!(
        matches!((last_part, sync, record), (Some(p), Some(s), Some(r)) if p < s && s < r),
        "parts, then sync_parts, then the session record: {calls:?}"
    );
}
