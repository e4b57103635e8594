//! Concurrent writers lose nothing: many pushes of one blob, one tag, one upload session, and
//! many referrers of one subject, racing on a multi-threaded runtime over the filesystem
//! storage; and an upload taken over by a second registry instance on the same root.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth::{
    Algorithm, Body, FsStorage, Method, Options, Registry, RequestHead, Response, empty_body,
    full_body,
};
use futures_util::StreamExt;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-concurrency-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn registry(root: &PathBuf, instance: &'static str) -> Arc<Registry<FsStorage>> {
    let counter = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(move || format!("{instance}-{}", counter.fetch_add(1, Ordering::Relaxed)));
    let mut options = Options::new(ids, Arc::new(|| 0));
    options.part_size = 1024;
    Arc::new(Registry::new(FsStorage::new(root).expect("root"), options))
}

async fn send<S: berth::storage::Storage>(
    registry: &Registry<S>,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (Response, Vec<u8>) {
    let mut head = RequestHead::from_target(method, target);
    for (name, value) in headers {
        head = head.with_header(*name, *value);
    }
    let mut response = registry
        .handle(
            head,
            if body.is_empty() {
                empty_body()
            } else {
                full_body(body)
            },
        )
        .await;
    let body = std::mem::replace(&mut response.body, Body::Empty);
    let bytes = match body {
        Body::Empty => Vec::new(),
        Body::Full(bytes) => bytes.to_vec(),
        Body::Stream(mut stream) => {
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.expect("chunk"));
            }
            out
        }
    };
    (response, bytes)
}

fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn push_blob(registry: &Registry<FsStorage>, repo: &str, data: &[u8]) -> String {
    let digest = Algorithm::Sha256.digest(data).to_string();
    let (response, _) = send(
        registry,
        Method::Post,
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[],
        data.to_vec(),
    )
    .await;
    assert_eq!(response.status, 201);
    digest
}

/// Opens an upload session on `registry` and sends `first` as its first chunk; returns the
/// session's location.
async fn upload_first_chunk(registry: &Registry<FsStorage>, first: &[u8]) -> String {
    let (response, _) = send(registry, Method::Post, "/v2/r/blobs/uploads/", &[], vec![]).await;
    let location = response.header("Location").expect("location").to_owned();
    let range = format!("0-{}", first.len() - 1);
    let (response, _) = send(
        registry,
        Method::Patch,
        &location,
        &[("Content-Range", &range)],
        first.to_vec(),
    )
    .await;
    assert_eq!(response.status, 202);
    location
}

fn manifest(
    config: &str,
    config_len: usize,
    annotation: &str,
    subject: Option<(&str, usize)>,
) -> Vec<u8> {
    let subject = subject.map_or(String::new(), |(digest, size)| {
        format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{size}}}"#)
    });
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.{annotation}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_len}}},"layers":[],"annotations":{{"n":"{annotation}"}}{subject}}}"#
    )
    .into_bytes()
}

/// Sends `writers` different chunks of `len` bytes for offset 0 of one new session at once:
/// exactly one must win (the others get 416 with a range), and finishing the upload must give
/// back exactly the winner's bytes.
async fn race_first_chunk<S: berth::storage::Storage>(
    registry: &Arc<Registry<S>>,
    writers: u8,
    len: usize,
) {
    // Where parts are positional, a loser may be turned away while the winner holds the
    // session, before it recorded its chunk; elsewhere every loser sees the winner's range.
    let may_be_turned_away = registry.storage().capabilities().positional_parts;
    let (response, _) = send(
        &**registry,
        Method::Post,
        "/v2/r/blobs/uploads/",
        &[],
        vec![],
    )
    .await;
    let location = response.header("Location").expect("location").to_owned();
    let range = format!("0-{}", len - 1);
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let registry = Arc::clone(registry);
            let location = location.clone();
            let range = range.clone();
            tokio::spawn(async move {
                let headers = [("Content-Range", range.as_str())];
                let (response, _) =
                    send(&*registry, Method::Patch, &location, &headers, blob(i, len)).await;
                (
                    i,
                    response.status,
                    response.header("Range").map(str::to_owned),
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (seed, status, reported) = task.await.expect("task");
        let reported = reported.expect("every answer reports the range");
        assert!(
            reported == range || (may_be_turned_away && reported == "0-0"),
            "range {reported}"
        );
        match status {
            202 => winners.push(seed),
            416 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one chunk wins");
    let data = blob(winners[0], len);
    let digest = Algorithm::Sha256.digest(&data);
    let finish = format!("{location}?digest={digest}");
    let (response, _) = send(&**registry, Method::Put, &finish, &[], vec![]).await;
    assert_eq!(response.status, 201, "the winner's bytes are the blob");
    let pull = format!("/v2/r/blobs/{digest}");
    let (_, body) = send(&**registry, Method::Get, &pull, &[], vec![]).await;
    assert_eq!(body, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_of_one_blob_all_succeed() {
    let root = root("blob");
    let registry = registry(&root, "a");
    let data = blob(7, 100_000);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let registry = Arc::clone(&registry);
            let data = data.clone();
            tokio::spawn(
                async move { push_blob(&registry, &format!("repo{}", i % 4), &data).await },
            )
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let digest = Algorithm::Sha256.digest(&data);
    for i in 0..4 {
        let (response, body) = send(
            &registry,
            Method::Get,
            &format!("/v2/repo{i}/blobs/{digest}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(response.status, 200);
        assert_eq!(body, data);
    }
    std::fs::remove_dir_all(root).expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_chunks_at_one_offset_have_one_winner() {
    let root = root("session");
    let registry = registry(&root, "a");
    race_first_chunk(&registry, 8, 5000).await;
    assert_eq!(
        std::fs::read_dir(root.join(".berth/parts"))
            .expect("parts")
            .count(),
        0,
        "losers' parts are gone"
    );
    std::fs::remove_dir_all(root).expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_of_one_tag_keep_every_manifest() {
    let root = root("tag");
    let registry = registry(&root, "a");
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = push_blob(&registry, "r", config).await;
    let manifests: Vec<Vec<u8>> = (0..16)
        .map(|i| manifest(&config_digest, config.len(), &i.to_string(), None))
        .collect();
    let tasks: Vec<_> = manifests
        .iter()
        .cloned()
        .map(|body| {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                send(
                    &registry,
                    Method::Put,
                    "/v2/r/manifests/latest",
                    &[("Content-Type", OCI_MANIFEST)],
                    body,
                )
                .await
                .0
                .status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), 201);
    }
    let (_, latest) = send(
        &registry,
        Method::Get,
        "/v2/r/manifests/latest",
        &[],
        vec![],
    )
    .await;
    assert!(
        manifests.contains(&latest),
        "the tag names one of the pushed manifests, whole"
    );
    for body in &manifests {
        let digest = Algorithm::Sha256.digest(body);
        let (response, got) = send(
            &registry,
            Method::Get,
            &format!("/v2/r/manifests/{digest}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(response.status, 200);
        assert_eq!(&got, body);
    }
    std::fs::remove_dir_all(root).expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_referrers_of_one_subject_are_all_listed() {
    let root = root("referrers");
    let registry = registry(&root, "a");
    let config = b"{}";
    let config_digest = push_blob(&registry, "r", config).await;
    let subject = manifest(&config_digest, config.len(), "subject", None);
    let subject_digest = Algorithm::Sha256.digest(&subject).to_string();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let registry = Arc::clone(&registry);
            let body = manifest(
                &config_digest,
                config.len(),
                &format!("sig{i}"),
                Some((&subject_digest, subject.len())),
            );
            tokio::spawn(async move {
                let digest = Algorithm::Sha256.digest(&body);
                send(
                    &registry,
                    Method::Put,
                    &format!("/v2/r/manifests/{digest}"),
                    &[("Content-Type", OCI_MANIFEST)],
                    body,
                )
                .await
                .0
                .status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), 201);
    }
    let (_, body) = send(
        &registry,
        Method::Get,
        &format!("/v2/r/referrers/{subject_digest}"),
        &[],
        vec![],
    )
    .await;
    let index: serde_json::Value = serde_json::from_slice(&body).expect("index");
    assert_eq!(
        index["manifests"].as_array().expect("manifests").len(),
        32,
        "no referrer lost"
    );
    std::fs::remove_dir_all(root).expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_continues_on_another_instance() {
    let root = root("handover");
    let first = registry(&root, "first");
    let second = registry(&root, "second");
    let data = blob(3, 10_000);
    let location = upload_first_chunk(&first, &data[..4000]).await;
    drop(first);
    let (response, _) = send(&second, Method::Get, &location, &[], vec![]).await;
    assert_eq!(
        (response.status, response.header("Range")),
        (204, Some("0-3999"))
    );
    let (response, _) = send(
        &second,
        Method::Patch,
        &location,
        &[("Content-Range", "4000-9999")],
        data[4000..].to_vec(),
    )
    .await;
    assert_eq!(response.status, 202);
    let digest = Algorithm::Sha256.digest(&data);
    let (response, _) = send(
        &second,
        Method::Put,
        &format!("{location}?digest={digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(response.status, 201);
    let (_, body) = send(
        &second,
        Method::Get,
        &format!("/v2/r/blobs/{digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(body, data);
    std::fs::remove_dir_all(root).expect("cleanup");
}

/// On a local disk, parts are named before they are durable, under the boot that wrote them:
/// once the machine has restarted (the boot recorded is not this one), the upload is unknown
/// to a PATCH and to the finishing PUT alike, and nothing of it is published or kept.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_from_before_the_machine_restarted_is_unknown() {
    let root = root("restarted");
    let data = blob(5, 10_000);
    let digest = Algorithm::Sha256.digest(&data);
    for finish in [false, true] {
        let before = registry(&root, "before");
        let location = upload_first_chunk(&before, &data[..4000]).await;
        drop(before);
        let parts = root.join(".berth/parts");
        for upload in std::fs::read_dir(&parts).expect("parts") {
            let marker = upload.expect("upload").path().join("unsynced-boot");
            assert!(
                marker.exists(),
                "the parts were named before they were durable"
            );
            std::fs::write(marker, "0".repeat(32)).expect("another boot");
        }

        let after = registry(&root, "after");
        let (method, target) = if finish {
            (Method::Put, format!("{location}?digest={digest}"))
        } else {
            (Method::Patch, location.clone())
        };
        let (response, body) = send(
            &after,
            method,
            &target,
            &[("Content-Range", "4000-9999")],
            data[4000..].to_vec(),
        )
        .await;
        assert_eq!(response.status, 404, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("BLOB_UPLOAD_UNKNOWN"));
        let (response, _) = send(&after, Method::Get, &location, &[], vec![]).await;
        assert_eq!(response.status, 404);
        let (response, _) = send(
            &after,
            Method::Head,
            &format!("/v2/r/blobs/{digest}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(response.status, 404);
        assert_eq!(std::fs::read_dir(&parts).expect("parts").count(), 0);
    }
    std::fs::remove_dir_all(root).expect("cleanup");
}

/// With positional parts (native multipart), racing chunks must not overwrite each other's
/// parts: the session is claimed, one request writes, the others get 416.
#[cfg(feature = "object-store")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_chunks_with_positional_parts_keep_the_winners_bytes() {
    use berth::storage::ObjectStoreStorage;
    let store = Arc::new(object_store::memory::InMemory::new());
    let counter = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(move || format!("n-{}", counter.fetch_add(1, Ordering::Relaxed)));
    let registry = Arc::new(Registry::new(
        ObjectStoreStorage::with_multipart(store.clone(), store),
        Options::new(ids, Arc::new(|| 0)),
    ));
    // Chunks longer than one 5 MiB part: the losers would overwrite the winner's part 1.
    race_first_chunk(&registry, 6, 5 * 1024 * 1024 + 100).await;
}
