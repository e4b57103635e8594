//! What the fuzz targets share: a registry over fresh memory storage, a way to send it one
//! request and read the whole answer on a single-threaded runtime, and the checks every
//! answer must pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth::{Body, MemoryStorage, Method, Options, Registry, RequestHead};
use futures_util::StreamExt;

/// The error codes the distribution spec lists; no other may be sent.
pub const SPEC_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// A registry over `storage` with small parts (so a few bytes already make several), unique
/// upload ids and a fixed clock.
pub fn registry(storage: Arc<MemoryStorage>) -> Registry<Arc<MemoryStorage>> {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let mut options = Options::new(
        Arc::new(|| format!("f{}", IDS.fetch_add(1, Ordering::Relaxed))),
        Arc::new(|| 1_000),
    );
    options.part_size = 7;
    Registry::new(storage, options)
}

/// Runs `future` to its end on this thread.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body's bytes.
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The code of the first error of a JSON error body.
    pub fn error_code(&self) -> Option<String> {
        let json: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        json["errors"][0]["code"].as_str().map(str::to_owned)
    }
}

/// Sends one request and reads the answer; panics (a finding) when the answer breaks a rule
/// every answer keeps: no 5xx, an error body with one of the spec's codes, a `Content-Length`
/// that matches the body.
pub fn send<S: berth::Storage>(
    registry: &Registry<S>,
    head: RequestHead,
    body: Vec<Vec<u8>>,
) -> Answer {
    let method = head.method;
    let chunks = futures_util::stream::iter(
        body.into_iter()
            .map(|chunk| Ok::<_, berth::BodyError>(bytes::Bytes::from(chunk))),
    );
    let response = block_on(registry.handle(head, Box::pin(chunks)));
    let body = block_on(async {
        match response.body {
            Body::Empty => Vec::new(),
            Body::Full(bytes) => bytes.to_vec(),
            Body::Stream(mut stream) => {
                let mut out = Vec::new();
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk.expect("memory storage does not fail"));
                }
                out
            }
        }
    });
    let answer = Answer {
        status: response.status,
        headers: response.headers,
        body,
    };
    assert!(answer.status < 500, "a 5xx: {answer:?}");
    if answer.status >= 400 && method != Method::Head {
        let code = answer.error_code();
        assert!(
            code.as_deref().is_some_and(|c| SPEC_CODES.contains(&c)),
            "an error without a spec code: {answer:?}"
        );
    }
    if method != Method::Head
        && let Some(length) = answer.header("Content-Length")
    {
        assert_eq!(
            length.parse::<usize>().ok(),
            Some(answer.body.len()),
            "Content-Length does not match the body: {answer:?}"
        );
    }
    answer
}
