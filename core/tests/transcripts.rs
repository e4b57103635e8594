//! Replays the request→response transcripts in `tests/transcripts/` (the data every host of
//! berth replays) against the driver, over the in-memory and the filesystem storage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth::storage::{Storage, StorageExt};
use berth::{Body, FsStorage, MemoryStorage, Method, Options, Registry, RequestHead, full_body};
use futures_util::StreamExt;
use serde_json::Value;

fn transcripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/transcripts")
}

fn transcripts() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(transcripts_dir())
        .expect("tests/transcripts exists")
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no transcripts found");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable transcript");
            let name = path
                .file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (name, serde_json::from_str(&text).expect("valid JSON"))
        })
        .collect()
}

fn options() -> Options {
    let counter = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(move || format!("session-{}", counter.fetch_add(1, Ordering::Relaxed)));
    let mut options = Options::new(ids, Arc::new(|| 1_700_000_000));
    // Tiny parts, so every multi-byte upload crosses part boundaries.
    options.part_size = 4;
    options
}

fn substitute(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    out
}

/// A response body's bytes, or the error that broke its stream.
async fn body_bytes(body: Body) -> Result<Vec<u8>, berth::StorageError> {
    Ok(match body {
        Body::Empty => Vec::new(),
        Body::Full(bytes) => bytes.to_vec(),
        Body::Stream(mut stream) => {
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?);
            }
            out
        }
    })
}

async fn replay<S: Storage>(registry: &Registry<S>, name: &str, transcript: &Value) {
    replay_retrying(registry, name, transcript, false).await;
}

/// Replays a transcript; with `retrying`, a step answered with a 5xx (its storage failing on
/// purpose) must carry a clear error and is sent again, as a client would, until it is
/// answered otherwise; it must then be answered as expected, or as a client's recovery
/// accepts when the failed attempt had made the change (see `already_done`).
async fn replay_retrying<S: Storage>(
    registry: &Registry<S>,
    name: &str,
    transcript: &Value,
    retrying: bool,
) -> u64 {
    let mut retries = 0;
    let mut vars = HashMap::new();
    let steps = transcript["steps"].as_array().expect("steps");
    for (i, step) in steps.iter().enumerate() {
        let request = &step["request"];
        let method = Method::parse(request["method"].as_str().expect("method"));
        let target = substitute(request["path"].as_str().expect("path"), &vars);
        let mut head = RequestHead::from_target(method, &target);
        if let Some(headers) = request["headers"].as_object() {
            for (header, value) in headers {
                head = head.with_header(header, substitute(value.as_str().expect("header"), &vars));
            }
        }
        let body = if let Some(text) = request["body"].as_str() {
            text.as_bytes().to_vec()
        } else if let Some(repeat) = request.get("body_repeat") {
            let unit = repeat["text"].as_str().expect("text");
            unit.repeat(repeat["count"].as_u64().expect("count") as usize)
                .into_bytes()
        } else {
            Vec::new()
        };
        let context = format!("{name} step {i}: {method} {target}");
        let expected = &step["response"];
        let mut failed = 0;
        let response = loop {
            // A chunk without a Content-Range cannot be sent again blindly after a failure:
            // as a careful client does, ask the session how far it got first.
            if failed > 0
                && method == Method::Patch
                && head.header("Content-Range").is_none()
                && chunk_was_taken(registry, &target, expected).await
            {
                break None;
            }
            let mut response = registry.handle(head.clone(), full_body(body.clone())).await;
            let streamed = std::mem::replace(&mut response.body, Body::Empty);
            let bytes = match body_bytes(streamed).await {
                Ok(bytes) => bytes,
                // The storage failed once the head was sent: the host drops the connection,
                // and the client asks again.
                Err(e) if retrying => {
                    failed += 1;
                    assert!(failed < 200, "{context}: bodies still break: {e}");
                    continue;
                }
                Err(e) => panic!("{context}: body: {e}"),
            };
            if !retrying || response.status < 500 {
                break Some((response, bytes));
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            // A HEAD's answer has no body; the status says it all.
            if method != Method::Head {
                let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                    panic!("{context}: a 5xx without a JSON error: {text:?}: {e}")
                });
                assert_eq!(json["errors"][0]["code"], "UNKNOWN", "{context}: {text}");
            }
            failed += 1;
            assert!(
                failed < 200,
                "{context}: still failing after {failed} tries: {text}"
            );
        };
        retries += failed;
        let Some((response, bytes)) = response else {
            continue;
        };
        if failed > 0 && already_done(method, &target, expected, &response) {
            continue;
        }
        let headers = response.headers.clone();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let status = response.status;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert_eq!(
            u64::from(status),
            expected["status"].as_u64().expect("status"),
            "{context}: status (body {text})"
        );
        assert_eq!(
            header("Docker-Distribution-API-Version").as_deref(),
            Some("registry/2.0"),
            "{context}: every response carries the API version"
        );
        if let Some(want) = expected["headers"].as_object() {
            for (name, value) in want {
                let value = substitute(value.as_str().expect("header value"), &vars);
                let got = header(name);
                if value == "*" {
                    assert!(got.is_some(), "{context}: header {name} missing");
                } else {
                    assert_eq!(
                        got.as_deref(),
                        Some(value.as_str()),
                        "{context}: header {name}"
                    );
                }
            }
        }
        for name in expected["absent_headers"].as_array().into_iter().flatten() {
            let name = name.as_str().expect("header name");
            assert_eq!(
                header(name),
                None,
                "{context}: header {name} should be absent"
            );
        }
        if let Some(code) = expected["error"].as_str() {
            let json: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{context}: error body {text:?}: {e}"));
            assert_eq!(
                json["errors"][0]["code"], code,
                "{context}: error code ({text})"
            );
            assert!(
                json["errors"][0]["message"].is_string(),
                "{context}: error message"
            );
            assert_eq!(
                header("Content-Type").as_deref(),
                Some("application/json"),
                "{context}"
            );
        }
        if method == Method::Head {
            assert!(bytes.is_empty(), "{context}: HEAD has no body");
        } else if let Some(length) = header("Content-Length") {
            assert_eq!(
                length,
                bytes.len().to_string(),
                "{context}: Content-Length matches the body"
            );
        }
        if let Some(want) = expected["body"].as_str() {
            assert_eq!(text, want, "{context}: body");
        }
        if let Some(want) = expected.get("json") {
            let got: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{context}: JSON body {text:?}: {e}"));
            assert_eq!(&got, want, "{context}: JSON body");
        }
        if let Some(save) = step["save"].as_object() {
            for (var, header_name) in save {
                let value = header(header_name.as_str().expect("header name"))
                    .unwrap_or_else(|| panic!("{context}: no {header_name} to save"));
                vars.insert(var.clone(), value);
            }
        }
    }
    retries
}

/// Whether the upload at `target` already reached the `Range` the step expects (its chunk
/// was taken by an attempt answered with a 5xx). Asks until it gets an answer.
async fn chunk_was_taken<S: Storage>(
    registry: &Registry<S>,
    target: &str,
    expected: &Value,
) -> bool {
    for _ in 0..200 {
        let head = RequestHead::from_target(Method::Get, target);
        let status = registry.handle(head, berth::empty_body()).await;
        if status.status < 500 {
            return status.header("Range") == expected["headers"]["Range"].as_str();
        }
    }
    panic!("{target}: the upload's status kept failing");
}

/// Whether a retried request's answer says that an earlier attempt, answered with a 5xx,
/// had made the change after all, in the way a client recovers from: a DELETE (of a
/// manifest, blob or upload) finds nothing left to delete; a PATCH finds its chunk taken (the
/// 416 reports the range the chunk reached); the PUT that ends an upload finds the session
/// ended, finished or refused (the steps that follow check whether the blob is there).
fn already_done(
    method: Method,
    target: &str,
    expected: &Value,
    response: &berth::Response,
) -> bool {
    let wanted = expected["status"].as_u64();
    let range = expected["headers"]["Range"].as_str();
    match (method, wanted, response.status) {
        (Method::Delete, Some(202 | 204), 404) => true,
        (Method::Patch, Some(202), 416) => range.is_some() && response.header("Range") == range,
        (Method::Put, Some(201 | 400), 404) => target.contains("/blobs/uploads/"),
        _ => false,
    }
}

/// Every transcript over storage that fails on purpose (before or after an operation runs,
/// or slowly) in 3% of its operations, under several seeds: every answer is a success or a
/// clear error, and retried as a client would, every transcript ends as it does without
/// faults.
#[tokio::test]
async fn transcripts_over_faulty_storage() {
    use berth::storage::{Faults, FaultyStorage};
    let mut retries = 0;
    let mut injected = 0;
    // BERTH_FAULT_SEEDS runs more seeds (16 by default).
    let seeds = std::env::var("BERTH_FAULT_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(16);
    for seed in 0..seeds {
        for (name, transcript) in transcripts() {
            let storage = FaultyStorage::new(
                MemoryStorage::new(),
                Faults::all(seed, 30),
                Some(berth::tokio_timer()),
            );
            let mut options = options();
            // Parts of 16 bytes rather than 4: a request then makes few enough storage calls
            // that a retry gets through 3% of them failing.
            options.part_size = 16;
            // A clock that moves (a second each time it is read), so that a lease left behind
            // by a request whose every write and read-back failed lapses, as it does in time.
            let ticks = Arc::new(AtomicU64::new(1_700_000_000));
            options.clock = Arc::new(move || ticks.fetch_add(1, Ordering::Relaxed));
            let registry = Registry::new(storage, options);
            retries += replay_retrying(&registry, &name, &transcript, true).await;
            injected += registry.storage().injected();
        }
    }
    println!("{injected} faults injected, {retries} requests retried");
    assert!(retries > 100, "too few faults to tell: {retries} retries");
}

#[tokio::test]
async fn transcripts_over_memory_storage() {
    for (name, transcript) in transcripts() {
        let registry = Registry::new(MemoryStorage::new(), options());
        replay(&registry, &name, &transcript).await;
    }
}

/// Storage with a minimum part size, as S3 and R2 have: chunk remainders are staged as tails.
#[tokio::test]
async fn transcripts_over_storage_with_a_minimum_part_size() {
    for (name, transcript) in transcripts() {
        let registry = Registry::new(MemoryStorage::with_min_part_size(6), options());
        replay(&registry, &name, &transcript).await;
        let storage = registry.storage();
        let leftovers = storage.list_all("docker/").await.expect("listing");
        let tails: Vec<_> = leftovers.iter().filter(|k| k.contains(".tail-")).collect();
        let open_sessions = storage
            .list_all("berth/uploads/")
            .await
            .expect("listing")
            .len();
        assert!(
            tails.len() <= open_sessions,
            "{name}: stray tails {tails:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_over_filesystem_storage() {
    let base = std::env::temp_dir().join(format!("berth-transcripts-{}", std::process::id()));
    for (name, transcript) in transcripts() {
        let root = base.join(&name);
        let _ = std::fs::remove_dir_all(&root);
        let registry = Registry::new(FsStorage::new(&root).expect("storage root"), options());
        replay(&registry, &name, &transcript).await;
        // A finished or cancelled upload leaves no parts or temporary files behind.
        for scratch in [".berth/tmp", ".berth/parts"] {
            let left: Vec<_> = std::fs::read_dir(root.join(scratch))
                .expect("scratch dir")
                .collect();
            assert!(left.is_empty(), "{name}: {scratch} not empty: {left:?}");
        }
    }
    let _ = std::fs::remove_dir_all(base);
}

#[cfg(feature = "object-store")]
#[tokio::test]
async fn transcripts_over_object_store_in_memory() {
    for (name, transcript) in transcripts() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let registry = Registry::new(berth::storage::ObjectStoreStorage::new(store), options());
        replay(&registry, &name, &transcript).await;
    }
}

/// Native multipart uploads (positional parts, 5 MiB minimum): sessions are claimed while a
/// request writes, remainders are staged as tails.
#[cfg(feature = "object-store")]
#[tokio::test]
async fn transcripts_over_object_store_native_multipart() {
    for (name, transcript) in transcripts() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let storage = berth::storage::ObjectStoreStorage::with_multipart(store.clone(), store);
        let registry = Registry::new(storage, options());
        replay(&registry, &name, &transcript).await;
    }
}
