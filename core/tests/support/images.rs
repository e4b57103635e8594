//! Images for the collection tests: options, manifests, pushes, pulls, collections.

// Not every test that shares the support module pushes images.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use berth::storage::{Storage, StorageExt};
use berth::{Algorithm, Collection, Digest, MemoryStorage, Method, Options, Registry};
use futures_util::future::BoxFuture;

use super::{Dice, Hooked, Jitter, body_bytes, send};

pub(crate) fn options(track: bool) -> Options {
    let next = Arc::new(AtomicU64::new(0));
    let mut options = Options::new(
        Arc::new(move || format!("id{}", next.fetch_add(1, Ordering::Relaxed))),
        Arc::new(|| 1_000_000),
    );
    options.track_references = track;
    options
}

pub(crate) fn no_grace() -> Collection {
    Collection {
        grace: 0,
        ..Collection::default()
    }
}

pub(crate) fn digest(data: &[u8]) -> Digest {
    Algorithm::Sha256.digest(data)
}

/// An image manifest of `config` and `layers`, made unique by `note`.
pub(crate) fn image(config: &[u8], layers: &[&[u8]], note: &str) -> String {
    let descriptor = |media_type: &str, data: &[u8]| serde_json::json!({"mediaType": media_type, "digest": digest(data).as_str(), "size": data.len()});
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|layer| descriptor("application/vnd.oci.image.layer.v1.tar", layer)).collect::<Vec<_>>(),
        "annotations": {"note": note},
    })
    .to_string()
}

/// An image index of the manifests `children`.
pub(crate) fn index(children: &[&str]) -> String {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children.iter().map(|child| serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(child.as_bytes()).as_str(),
            "size": child.len(),
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

/// A referrer (an artifact with the empty config) of the manifest `subject`.
pub(crate) fn referrer(subject: &str, note: &str) -> String {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(b"{}").as_str(), "size": 2},
        "layers": [],
        "subject": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(subject.as_bytes()).as_str(),
            "size": subject.len(),
        },
        "annotations": {"note": note},
    })
    .to_string()
}

pub(crate) async fn push_blob<S: Storage>(
    registry: &Registry<S>,
    repository: &str,
    data: &[u8],
) -> u16 {
    let target = format!("/v2/{repository}/blobs/uploads/?digest={}", digest(data));
    send(registry, Method::Post, &target, &[], data)
        .await
        .status
}

pub(crate) async fn push_manifest<S: Storage>(
    registry: &Registry<S>,
    repository: &str,
    reference: &str,
    manifest: &str,
) -> u16 {
    let document: serde_json::Value = serde_json::from_str(manifest).expect("a manifest");
    let media_type = document["mediaType"].as_str().expect("a media type");
    let target = format!("/v2/{repository}/manifests/{reference}");
    let headers = [("Content-Type", media_type)];
    send(
        registry,
        Method::Put,
        &target,
        &headers,
        manifest.as_bytes(),
    )
    .await
    .status
}

pub(crate) async fn get<S: Storage>(registry: &Registry<S>, target: &str) -> (u16, Vec<u8>) {
    let response = send(registry, Method::Get, target, &[], b"").await;
    (response.status, body_bytes(response.body).await)
}

pub(crate) async fn collect_all<S: Storage>(registry: &Registry<S>) -> berth::CollectionReport {
    collect_all_with(registry, &no_grace()).await
}

/// Collection steps with `settings` until one finds nothing left; their reports added up.
pub(crate) async fn collect_all_with<S: Storage>(
    registry: &Registry<S>,
    settings: &Collection,
) -> berth::CollectionReport {
    let mut total = berth::CollectionReport::default();
    loop {
        let report = registry
            .collect_garbage(settings)
            .await
            .expect("a collection step");
        total.manifests_deleted += report.manifests_deleted;
        total.tags_deleted += report.tags_deleted;
        total.visited += report.visited;
        total.blobs_deleted += report.blobs_deleted;
        total.bytes_deleted += report.bytes_deleted;
        total.links_removed += report.links_removed;
        total.marked += report.marked;
        // A step may record candidates for the next (an untagged index's children).
        if report.visited == 0 && report.left == 0 {
            return total;
        }
    }
}

/// The blobs stored, by digest.
pub(crate) async fn stored_blobs(storage: &impl Storage) -> Vec<String> {
    storage
        .list_all("docker/registry/v2/blobs/")
        .await
        .expect("a listing")
        .iter()
        .filter_map(|key| {
            key.strip_suffix("/data")?
                .rsplit('/')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// The tags a racing test was told were pushed, each with the manifests it needs (the
/// tagged one first, then an index's children).
pub(crate) type Live = BTreeMap<String, Vec<String>>;

/// The registry racing tests share: memory storage that yields to the scheduler at random
/// before every call.
pub(crate) type Racing = Registry<Hooked<Jitter>>;

/// A writer of a racing test: pushes to the repository `race` and returns what it left live.
pub(crate) type Writer = fn(Arc<Racing>, Arc<Dice>, u64) -> BoxFuture<'static, Live>;

/// Deletes the manifest of the first live tag by digest, which takes every tag that holds
/// it (and leaves them out of `live`).
pub(crate) async fn delete_first(registry: &Racing, live: &mut Live) {
    let Some(tag) = live.keys().next().cloned() else {
        return;
    };
    let needed = live.remove(&tag).expect("a live tag");
    live.retain(|_, held| held[0] != needed[0]);
    let target = format!("/v2/race/manifests/{}", digest(needed[0].as_bytes()));
    let status = send(registry, Method::Delete, &target, &[], b"")
        .await
        .status;
    assert_eq!(status, 202, "deleting {tag}");
}

/// The digests of an image's config and layers (none for an index).
pub(crate) fn blobs_of(manifest: &str) -> Vec<String> {
    let document: serde_json::Value = serde_json::from_str(manifest).expect("a manifest");
    let digest = |descriptor: &serde_json::Value| {
        descriptor["digest"]
            .as_str()
            .expect("a descriptor's digest")
            .to_owned()
    };
    let Some(layers) = document["layers"].as_array() else {
        return Vec::new();
    };
    layers
        .iter()
        .map(digest)
        .chain([digest(&document["config"])])
        .collect()
}

/// Every tag pulls back whole: its manifest, an index's children, each blob.
async fn check_pullable<S: Storage>(registry: &Registry<S>, live: &Live, seed: u64) {
    for (tag, needed) in live {
        let (got, body) = get(registry, &format!("/v2/race/manifests/{tag}")).await;
        assert_eq!(
            (got, body),
            (200, needed[0].clone().into_bytes()),
            "seed {seed}: {tag}"
        );
        for manifest in needed {
            let target = format!("/v2/race/manifests/{}", digest(manifest.as_bytes()));
            let (got, _) = get(registry, &target).await;
            assert_eq!(got, 200, "seed {seed}: {tag} lost a child");
            for blob in blobs_of(manifest) {
                let (got, _) = get(registry, &format!("/v2/race/blobs/{blob}")).await;
                assert_eq!(got, 200, "seed {seed}: {tag} lost {blob}");
            }
        }
    }
}

/// Runs `BERTH_SCHEDULES` random schedules (default 1,000) of three `writer`s racing a
/// collector that steps with `settings` over and over. After each, every acknowledged tag
/// pulls whole; then, the writers done, collection leaves exactly what the tags need.
/// Returns the tags live at the ends and the untagged manifests collected.
pub(crate) fn race_schedules(settings: Collection, writer: Writer) -> (usize, u64) {
    let schedules: u64 = std::env::var("BERTH_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let (mut pushed, mut collected) = (0, 0);
    for seed in 0..schedules {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let (live, deleted) = runtime.block_on(race(seed, settings, writer));
        pushed += live;
        collected += deleted;
    }
    (pushed, collected)
}

async fn race(seed: u64, settings: Collection, writer: Writer) -> (usize, u64) {
    let dice = Arc::new(Dice::new(seed));
    let storage = Hooked {
        inner: MemoryStorage::new(),
        hooks: Jitter(Arc::clone(&dice)),
    };
    let registry = Arc::new(Registry::new(storage, options(true)));
    let writing = Arc::new(AtomicBool::new(true));
    let collector = {
        let (registry, writing) = (Arc::clone(&registry), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut deleted = 0;
            while writing.load(Ordering::Relaxed) {
                let report = registry.collect_garbage(&settings).await.expect("a step");
                deleted += report.manifests_deleted;
                tokio::task::yield_now().await;
            }
            deleted
        })
    };
    let writers =
        (0..3).map(|number| tokio::spawn(writer(Arc::clone(&registry), Arc::clone(&dice), number)));
    let mut live = Live::new();
    for done in futures_util::future::join_all(writers).await {
        live.extend(done.expect("a writer"));
    }
    writing.store(false, Ordering::Relaxed);
    let mut deleted = collector.await.expect("the collector");
    check_pullable(&*registry, &live, seed).await;
    deleted += collect_all_with(&*registry, &settings)
        .await
        .manifests_deleted;
    check_pullable(&*registry, &live, seed).await;
    let mut needed: Vec<String> = Vec::new();
    for manifests in live.values() {
        for manifest in manifests {
            needed.push(digest(manifest.as_bytes()).hex().to_owned());
            for blob in blobs_of(manifest) {
                needed.push(blob.trim_start_matches("sha256:").to_owned());
            }
        }
    }
    let stored = stored_blobs(registry.storage()).await;
    let extra: Vec<&String> = stored.iter().filter(|d| !needed.contains(d)).collect();
    let missing: Vec<&String> = needed.iter().filter(|d| !stored.contains(d)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "seed {seed}: what is left is what the live tags need: extra {extra:?}, missing \
         {missing:?}"
    );
    (live.len(), deleted)
}
