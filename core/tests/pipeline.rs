//! An upload writes one part while it receives the next: the body keeps flowing during a
//! part write, no second write starts before the first ends, and the parts land in order.

mod support;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
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

async fn fetch(registry: &Registry<Arc<Hooked<GatedParts>>>, target: &str) -> (u16, Vec<u8>) {
    use futures_util::StreamExt;
    let response = registry
        .handle(
            RequestHead::from_target(Method::Get, target),
            berth::empty_body(),
        )
        .await;
    let bytes = match response.body {
        berth::Body::Empty => Vec::new(),
        berth::Body::Full(bytes) => bytes.to_vec(),
        berth::Body::Stream(mut stream) => {
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.expect("chunk"));
            }
            out
        }
    };
    (response.status, bytes)
}
