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

async fn body_bytes(body: Body) -> Vec<u8> {
    match body {
        Body::Empty => Vec::new(),
        Body::Full(bytes) => bytes.to_vec(),
        Body::Stream(mut stream) => {
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.expect("body chunk"));
            }
            out
        }
    }
}

async fn replay<S: Storage>(registry: &Registry<S>, name: &str, transcript: &Value) {
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
        let response = registry.handle(head, full_body(body)).await;

        let expected = &step["response"];
        let headers = response.headers.clone();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let status = response.status;
        let bytes = body_bytes(response.body).await;
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
