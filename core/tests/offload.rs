//! Uploads whose parts are hashed on another thread (`Options::hash_offload`): the digest is
//! verified exactly as when hashing inline, whatever the chunking and across PATCHes; the body
//! keeps arriving while a part is hashed; a chunk left hashing after its response is continued
//! by the next chunk in the same process and read back from the parts by any other process;
//! and a host that drops the work fails the upload instead of storing an unverified blob.

mod support;

use std::sync::Arc;
use std::time::Duration;

use berth::offload::Offload;
use berth::storage::Storage;
use berth::{Algorithm, BodyError, MemoryStorage, Method, Options, Registry, RequestBody};
use berth::{RequestHead, Response};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

fn threads() -> Offload {
    berth::offload::own_thread()
}

fn registry(part_size: usize, offload: Option<Offload>) -> Registry<MemoryStorage> {
    Registry::new(MemoryStorage::new(), options(part_size, offload))
}

fn options(part_size: usize, offload: Option<Offload>) -> Options {
    let ids = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut options = Options::new(
        Arc::new(move || {
            let n = ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            format!("upload{n}")
        }),
        Arc::new(|| 0),
    );
    options.part_size = part_size;
    options.hash_offload = offload;
    options
}

fn chunked_body(content: &[u8], chunk: usize) -> RequestBody {
    let chunks: Vec<Result<Bytes, BodyError>> = content
        .chunks(chunk.max(1))
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

async fn call<S: Storage>(
    registry: &Registry<S>,
    method: Method,
    target: &str,
    body: RequestBody,
) -> Response {
    registry
        .handle(RequestHead::from_target(method, target), body)
        .await
}

async fn read(response: Response) -> Vec<u8> {
    support::body_bytes(response.body).await
}

/// Opens an upload session in `repository`; its location.
async fn start<S: Storage>(registry: &Registry<S>, repository: &str) -> String {
    let started = call(
        registry,
        Method::Post,
        &format!("/v2/{repository}/blobs/uploads/"),
        berth::empty_body(),
    )
    .await;
    assert_eq!(started.status, 202);
    started.header("Location").expect("Location").to_owned()
}

/// Pushes `content` with a POST, one PATCH per `patch` bytes (each body in `chunk`-byte
/// chunks), and a PUT naming `digest`; the PUT's status.
async fn push(
    registry: &Registry<MemoryStorage>,
    repository: &str,
    content: &[u8],
    patch: usize,
    chunk: usize,
    digest: &str,
) -> u16 {
    let mut location = start(registry, repository).await;
    for piece in content.chunks(patch.max(1)) {
        let patched = call(
            registry,
            Method::Patch,
            &location,
            chunked_body(piece, chunk),
        )
        .await;
        assert_eq!(patched.status, 202, "PATCH of {} bytes", piece.len());
        location = patched.header("Location").expect("Location").to_owned();
    }
    let separator = if location.contains('?') { '&' } else { '?' };
    call(
        registry,
        Method::Put,
        &format!("{location}{separator}digest={digest}"),
        berth::empty_body(),
    )
    .await
    .status
}

#[tokio::test]
async fn digests_hashed_elsewhere_match_inline_ones() {
    let content: Vec<u8> = (0..97u32).map(|i| (i * 31 % 251) as u8).collect();
    let digest = Algorithm::Sha256.digest(&content).to_string();
    let wrong = Algorithm::Sha256.digest(b"other").to_string();
    // With parts of 4 bytes each chunk is handed over as it comes (batches of an eighth of a
    // part, at least 1 byte); with parts of 16, batches of 2 bytes or more, several to a part.
    let shapes = [4, 16].into_iter().flat_map(|part_size| {
        [
            (97, 1),
            (97, 4),
            (97, 5),
            (97, 13),
            (20, 3),
            (9, 9),
            (31, 7),
        ]
        .map(|(patch, chunk)| (part_size, patch, chunk))
    });
    for (part_size, patch, chunk) in shapes {
        for offload in [None, Some(threads())] {
            let hashed_elsewhere = offload.is_some();
            let registry = registry(part_size, offload);
            let status = push(&registry, "pushed", &content, patch, chunk, &digest).await;
            assert_eq!(
                status, 201,
                "part {part_size}, patch {patch}, chunk {chunk}, elsewhere {hashed_elsewhere}"
            );
            let fetched = call(
                &registry,
                Method::Get,
                &format!("/v2/pushed/blobs/{digest}"),
                berth::empty_body(),
            )
            .await;
            assert_eq!(fetched.status, 200);
            assert_eq!(read(fetched).await, content);

            let status = push(&registry, "refused", &content, patch, chunk, &wrong).await;
            assert_eq!(status, 400, "a wrong digest is refused");
            let missing = call(
                &registry,
                Method::Head,
                &format!("/v2/refused/blobs/{wrong}"),
                berth::empty_body(),
            )
            .await;
            assert_eq!(missing.status, 404);

            // One request carrying the whole blob (a monolithic POST).
            let whole = call(
                &registry,
                Method::Post,
                &format!("/v2/whole/blobs/uploads/?digest={digest}"),
                chunked_body(&content, chunk),
            )
            .await;
            assert_eq!(whole.status, 201);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_keeps_arriving_while_parts_wait_to_be_hashed() {
    // The hashing is held until the test lets it run.
    let (handed, mut held) =
        mpsc::unbounded_channel::<(Box<dyn FnOnce() + Send>, oneshot::Sender<()>)>();
    let offload: Offload = Arc::new(move |work| {
        let (done, finished) = oneshot::channel();
        handed.send((work, done)).expect("handed");
        Box::pin(async move {
            let _ = finished.await;
        })
    });
    let registry = Arc::new(registry(4, Some(offload)));
    let content = b"0123456789abcdefghij".to_vec();
    let digest = Algorithm::Sha256.digest(&content).to_string();

    // The body is a channel holding one chunk: a chunk sent is only taken when the upload
    // asks for the next.
    let (sender, receiver) = mpsc::channel::<Result<Bytes, BodyError>>(1);
    let body: RequestBody = Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ));
    let request = tokio::spawn({
        let registry = Arc::clone(&registry);
        let target = format!("/v2/pipe/blobs/uploads/?digest={digest}");
        let length = content.len().to_string();
        async move {
            // Announced, so the hashing starts with the first chunk.
            let head = RequestHead::from_target(Method::Post, &target)
                .with_header("Content-Length", length);
            registry.handle(head, body).await.status
        }
    });
    let send = |from: usize, to: usize, wait: Duration| {
        let chunk = Bytes::copy_from_slice(&content[from..to]);
        let sender = sender.clone();
        async move {
            tokio::time::timeout(wait, sender.send(Ok(chunk)))
                .await
                .is_ok()
        }
    };
    let long = Duration::from_secs(10);
    // Parts 1 and 2 fill and wait to be hashed; part 3 is still taken from the body (and
    // part 4's chunk waits in the channel)…
    for from in [0, 4, 8, 12] {
        assert!(
            send(from, from + 4, long).await,
            "the upload stopped taking the body"
        );
    }
    // …but the upload takes no more while two parts wait: its memory stays bounded.
    assert!(
        !send(16, 20, Duration::from_millis(300)).await,
        "the upload went on taking the body with two parts unhashed"
    );
    let (work, done) = held.recv().await.expect("the hashing was handed over");
    assert!(
        held.try_recv().is_err(),
        "one hashing thread per request body"
    );
    std::thread::spawn(move || {
        work();
        let _ = done.send(());
    });
    assert!(
        send(16, 20, long).await,
        "the upload stopped taking the body"
    );
    drop(sender);
    assert_eq!(request.await.expect("request"), 201);
    let fetched = call(
        &registry,
        Method::Get,
        &format!("/v2/pipe/blobs/{digest}"),
        berth::empty_body(),
    )
    .await;
    assert_eq!(read(fetched).await, content);
}

#[tokio::test]
async fn dropped_hashing_fails_the_upload_and_stores_nothing() {
    let dropping: Offload = Arc::new(|_work| Box::pin(std::future::ready(())));
    let registry = registry(4, Some(dropping));
    let content = b"0123456789".to_vec();
    let digest = Algorithm::Sha256.digest(&content).to_string();
    let response = call(
        &registry,
        Method::Post,
        &format!("/v2/dropped/blobs/uploads/?digest={digest}"),
        chunked_body(&content, 3),
    )
    .await;
    assert_eq!(response.status, 500);
    let body = String::from_utf8(read(response).await).expect("utf-8");
    assert!(body.contains("UNKNOWN"), "{body}");
    let missing = call(
        &registry,
        Method::Head,
        &format!("/v2/dropped/blobs/{digest}"),
        berth::empty_body(),
    )
    .await;
    assert_eq!(missing.status, 404);
}

/// Counts the parts read back, and from where.
#[derive(Debug, Default)]
struct ReadsBack(std::sync::Mutex<Vec<u64>>);

impl support::Hooks for ReadsBack {
    fn parts_read(&self, skip: u64) {
        self.0.lock().expect("lock").push(skip);
    }
}

type Shared = Arc<support::Hooked<ReadsBack>>;

/// An offload that never runs the work it is handed, as if its process stopped: whatever it
/// was to hash must be read back by another process.
fn stalled() -> Offload {
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    Arc::new(move |work| {
        held.lock().expect("lock").push(work);
        Box::pin(std::future::pending())
    })
}

/// Two processes over one storage, sharing an upload's chunks; the first never gets to hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_reads_back_the_chunk_still_being_hashed() {
    let storage: Shared = Arc::default();
    let first = Registry::new(Arc::clone(&storage), options(16, Some(stalled())));
    let second = Registry::new(Arc::clone(&storage), options(16, Some(threads())));
    let content: Vec<u8> = (0..80u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = Algorithm::Sha256.digest(&content).to_string();
    let wrong = Algorithm::Sha256.digest(b"other").to_string();
    for (claimed, expected) in [(&digest, 201), (&wrong, 400)] {
        storage.hooks.0.lock().expect("lock").clear();
        let mut location = start(&first, "shared").await;
        // Chunks of 20 bytes (more than a part, so they are hashed elsewhere), in pieces of
        // 5: first, second, second, first; the PUT on the second.
        let takers = [&first, &second, &second, &first];
        for (piece, registry) in content.chunks(20).zip(takers) {
            let patched = call(registry, Method::Patch, &location, chunked_body(piece, 5)).await;
            assert_eq!(patched.status, 202);
            location = patched.header("Location").expect("Location").to_owned();
        }
        let finished = call(
            &second,
            Method::Put,
            &format!("{location}?digest={claimed}"),
            berth::empty_body(),
        )
        .await;
        assert_eq!(finished.status, expected);
        // The second read the first's chunks back: all of the first, and the last from its
        // start. Its own second chunk went on with the hasher of its first, reading nothing;
        // the first's second chunk read back what the record did not cover yet, if anything.
        let reads = storage.hooks.0.lock().expect("lock").clone();
        assert_eq!(
            (reads.first(), reads.last()),
            (Some(&0), Some(&60)),
            "{reads:?}"
        );
        assert!(reads.len() <= 3, "{reads:?}");
        assert!(reads.iter().all(|skip| skip % 20 == 0), "{reads:?}");
    }
    let fetched = call(
        &second,
        Method::Get,
        &format!("/v2/shared/blobs/{digest}"),
        berth::empty_body(),
    )
    .await;
    assert_eq!(read(fetched).await, content);
}

/// A process that stops after acknowledging a chunk it had not hashed loses nothing: another
/// finishes the upload from the parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_acknowledged_by_a_stopped_process_is_not_lost() {
    let storage: Shared = Arc::default();
    let content: Vec<u8> = (0..40u32).map(|i| (i * 13 % 251) as u8).collect();
    let digest = Algorithm::Sha256.digest(&content).to_string();
    let stopped = Registry::new(Arc::clone(&storage), options(16, Some(stalled())));
    let location = start(&stopped, "kept").await;
    let patched = call(
        &stopped,
        Method::Patch,
        &location,
        chunked_body(&content[..30], 5),
    )
    .await;
    assert_eq!(patched.status, 202);
    drop(stopped);
    let restarted = Registry::new(Arc::clone(&storage), options(16, Some(threads())));
    let location = patched.header("Location").expect("Location").to_owned();
    let finished = call(
        &restarted,
        Method::Put,
        &format!("{location}?digest={digest}"),
        chunked_body(&content[30..], 5),
    )
    .await;
    assert_eq!(finished.status, 201);
    assert_eq!(*storage.hooks.0.lock().expect("lock"), [0]);
}

/// A paused hasher that lets go of its thread hands its hasher to the next chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_after_a_pause_continues_the_hasher_left_behind() {
    let storage: Shared = Arc::default();
    let registry = Registry::new(Arc::clone(&storage), options(16, Some(threads())));
    let content: Vec<u8> = (0..60u32).map(|i| (i * 11 % 251) as u8).collect();
    let digest = Algorithm::Sha256.digest(&content).to_string();
    let mut location = start(&registry, "paused").await;
    for piece in content.chunks(20) {
        let patched = call(&registry, Method::Patch, &location, chunked_body(piece, 5)).await;
        assert_eq!(patched.status, 202);
        location = patched.header("Location").expect("Location").to_owned();
        // Longer than a paused hasher keeps its thread.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished = call(
        &registry,
        Method::Put,
        &format!("{location}?digest={digest}"),
        berth::empty_body(),
    )
    .await;
    assert_eq!(finished.status, 201);
    assert!(storage.hooks.0.lock().expect("lock").is_empty());
}
