//! Garbage collection: what nothing references goes, what a manifest references stays, and
//! pushes racing the collector lose nothing (random schedules of writers and a collector
//! with no grace period, every acknowledged tag pulled back afterwards).
//!
//! `BERTH_SCHEDULES` sets the number of racing schedules (default 1,000; without the claim check a layer was lost within them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use berth::storage::{Storage, StorageExt};
use berth::{Algorithm, Collection, Digest, MemoryStorage, Method, Options, Registry};

mod support;
use support::{Dice, Hooked, Jitter, body_bytes, send};

fn options(track: bool) -> Options {
    let next = Arc::new(AtomicU64::new(0));
    let mut options = Options::new(
        Arc::new(move || format!("id{}", next.fetch_add(1, Ordering::Relaxed))),
        Arc::new(|| 1_000_000),
    );
    options.track_references = track;
    options
}

fn no_grace() -> Collection {
    Collection {
        grace: 0,
        ..Collection::default()
    }
}

fn digest(data: &[u8]) -> Digest {
    Algorithm::Sha256.digest(data)
}

/// An image manifest of `config` and `layers`, made unique by `note`.
fn image(config: &[u8], layers: &[&[u8]], note: &str) -> String {
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

async fn push_blob<S: Storage>(registry: &Registry<S>, repository: &str, data: &[u8]) -> u16 {
    let target = format!("/v2/{repository}/blobs/uploads/?digest={}", digest(data));
    send(registry, Method::Post, &target, &[], data)
        .await
        .status
}

async fn push_manifest<S: Storage>(
    registry: &Registry<S>,
    repository: &str,
    reference: &str,
    manifest: &str,
) -> u16 {
    let target = format!("/v2/{repository}/manifests/{reference}");
    let headers = [("Content-Type", "application/vnd.oci.image.manifest.v1+json")];
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

async fn get<S: Storage>(registry: &Registry<S>, target: &str) -> (u16, Vec<u8>) {
    let response = send(registry, Method::Get, target, &[], b"").await;
    (response.status, body_bytes(response.body).await)
}

async fn collect_all<S: Storage>(registry: &Registry<S>) -> berth::CollectionReport {
    let mut total = berth::CollectionReport::default();
    loop {
        let report = registry
            .collect_garbage(&no_grace())
            .await
            .expect("a collection step");
        total.visited += report.visited;
        total.blobs_deleted += report.blobs_deleted;
        total.bytes_deleted += report.bytes_deleted;
        total.links_removed += report.links_removed;
        total.marked += report.marked;
        if report.visited == 0 || report.finished() && report.visited < 1000 {
            return total;
        }
    }
}

/// The blobs stored, by digest.
async fn stored_blobs(storage: &impl Storage) -> Vec<String> {
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

#[tokio::test]
async fn collects_what_nothing_references() {
    let registry = Registry::new(MemoryStorage::new(), options(true));
    let (config, layer, loose) = (&b"{\"os\":\"linux\"}"[..], &b"layer"[..], &b"loose"[..]);
    for data in [config, layer, loose] {
        assert_eq!(push_blob(&registry, "app", data).await, 201);
    }
    let manifest = image(config, &[layer], "1");
    assert_eq!(push_manifest(&registry, "app", "v1", &manifest).await, 201);
    // The layer, mounted into another repository where no manifest references it.
    let mount = format!("/v2/other/blobs/uploads/?mount={}&from=app", digest(layer));
    assert_eq!(
        send(&registry, Method::Post, &mount, &[], b"").await.status,
        201
    );

    let report = collect_all(&registry).await;
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    assert_eq!(report.bytes_deleted, loose.len() as u64);
    assert_eq!(
        report.links_removed, 2,
        "the loose blob's link and the mounted one"
    );
    assert_eq!(
        get(&registry, "/v2/app/manifests/v1").await,
        (200, manifest.clone().into_bytes())
    );
    for (data, status) in [(config, 200), (layer, 200), (loose, 404)] {
        let (got, _) = get(&registry, &format!("/v2/app/blobs/{}", digest(data))).await;
        assert_eq!(got, status);
    }
    let (got, _) = get(&registry, &format!("/v2/other/blobs/{}", digest(layer))).await;
    assert_eq!(
        got, 404,
        "the mounted link no manifest there references is gone"
    );

    // Once the manifest is deleted, its config, layer and the manifest itself go too.
    let delete = format!("/v2/app/manifests/{}", digest(manifest.as_bytes()));
    assert_eq!(
        send(&registry, Method::Delete, &delete, &[], b"")
            .await
            .status,
        202
    );
    let report = collect_all(&registry).await;
    assert_eq!(report.blobs_deleted, 3, "{report:?}");
    assert!(stored_blobs(registry.storage()).await.is_empty());
    for prefix in [
        "berth/refs/",
        "berth/links/",
        "berth/gc/candidates/",
        "berth/gc/claims/",
    ] {
        assert_eq!(
            registry.storage().list_all(prefix).await.unwrap(),
            Vec::<berth::storage::Key>::new(),
            "{prefix}"
        );
    }

    // Within the grace period, nothing goes.
    assert_eq!(push_blob(&registry, "app", loose).await, 201);
    let report = registry
        .collect_garbage(&Collection::default())
        .await
        .unwrap();
    assert_eq!((report.visited, report.blobs_deleted), (0, 0));
    let (got, _) = get(&registry, &format!("/v2/app/blobs/{}", digest(loose))).await;
    assert_eq!(got, 200);
}

#[tokio::test]
async fn what_was_stored_before_tracking_is_marked_first() {
    let storage = Arc::new(MemoryStorage::new());
    let before = Registry::new(Arc::clone(&storage), options(false));
    let (config, layer, loose) = (&b"{}"[..], &b"old layer"[..], &b"old loose"[..]);
    for data in [config, layer, loose] {
        assert_eq!(push_blob(&before, "old", data).await, 201);
    }
    let manifest = image(config, &[layer], "old");
    assert_eq!(push_manifest(&before, "old", "v1", &manifest).await, 201);

    let after = Registry::new(Arc::clone(&storage), options(true));
    let dry = after
        .collect_garbage(&Collection {
            dry_run: true,
            ..no_grace()
        })
        .await;
    assert!(
        dry.is_err(),
        "a dry run cannot start before the back-links exist"
    );
    let report = collect_all(&after).await;
    assert!(report.marked >= 4, "{report:?}");
    assert_eq!(report.blobs_deleted, 1, "only the loose blob: {report:?}");
    assert_eq!(get(&after, "/v2/old/manifests/v1").await.0, 200);
    assert_eq!(
        get(&after, &format!("/v2/old/blobs/{}", digest(layer)))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&after, &format!("/v2/old/blobs/{}", digest(loose)))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn a_dry_run_reports_and_deletes_nothing() {
    let registry = Registry::new(MemoryStorage::new(), options(true));
    assert_eq!(push_blob(&registry, "app", b"loose").await, 201);
    collect_all(&registry).await; // marks, and collects the loose blob
    assert_eq!(push_blob(&registry, "app", b"loose again").await, 201);
    let dry = Collection {
        dry_run: true,
        ..no_grace()
    };
    for _ in 0..2 {
        let report = registry.collect_garbage(&dry).await.unwrap();
        assert_eq!(
            (report.blobs_deleted, report.bytes_deleted),
            (1, 11),
            "{report:?}"
        );
        assert_eq!(report.by_repository.get("app"), Some(&11));
    }
    assert_eq!(
        get(
            &registry,
            &format!("/v2/app/blobs/{}", digest(b"loose again"))
        )
        .await
        .0,
        200
    );
}

const LAYERS: [&[u8]; 4] = [b"layer zero", b"layer one", b"layer two", b"layer three"];
const CONFIG: &[u8] = b"{\"architecture\":\"amd64\"}";

/// One writer: pushes images of layers from a shared pool (so old, unreferenced layers are
/// referenced again), deletes some of its own manifests again. Returns the tags it was told
/// were pushed and did not delete, with their manifests.
async fn writer<S: Storage>(
    registry: &Registry<S>,
    dice: &Dice,
    number: u64,
) -> BTreeMap<String, String> {
    let mut live = BTreeMap::new();
    for round in 0..4 {
        let chosen: Vec<&[u8]> = LAYERS
            .iter()
            .copied()
            .filter(|_| dice.roll(2) == 0)
            .collect();
        for data in chosen.iter().copied().chain([CONFIG]) {
            push_blob(registry, "race", data).await;
        }
        let tag = format!("w{number}-{round}");
        let manifest = image(CONFIG, &chosen, &tag);
        if push_manifest(registry, "race", &tag, &manifest).await == 201 {
            live.insert(tag, manifest);
        }
        if dice.roll(3) == 0
            && let Some(tag) = live.keys().next().cloned()
        {
            let manifest = live.remove(&tag).expect("a live tag");
            let target = format!("/v2/race/manifests/{}", digest(manifest.as_bytes()));
            let status = send(registry, Method::Delete, &target, &[], b"")
                .await
                .status;
            assert_eq!(status, 202, "deleting {tag}");
        }
    }
    live
}

/// The digests of a manifest's config and layers.
fn blobs_of(manifest: &str) -> Vec<String> {
    let document: serde_json::Value = serde_json::from_str(manifest).expect("a manifest");
    let digest = |descriptor: &serde_json::Value| {
        descriptor["digest"]
            .as_str()
            .expect("a descriptor's digest")
            .to_owned()
    };
    let layers = document["layers"].as_array().expect("layers");
    layers
        .iter()
        .map(digest)
        .chain([digest(&document["config"])])
        .collect()
}

/// Every tag pulls back whole: the manifest, its config and each layer.
async fn check_pullable<S: Storage>(
    registry: &Registry<S>,
    live: &BTreeMap<String, String>,
    seed: u64,
) {
    for (tag, manifest) in live {
        let (status, body) = get(registry, &format!("/v2/race/manifests/{tag}")).await;
        assert_eq!(
            (status, body),
            (200, manifest.clone().into_bytes()),
            "seed {seed}: {tag}"
        );
        for blob in blobs_of(manifest) {
            let (status, _) = get(registry, &format!("/v2/race/blobs/{blob}")).await;
            assert_eq!(status, 200, "seed {seed}: {tag} lost {blob}");
        }
    }
}

#[test]
fn pushes_racing_the_collector_lose_nothing() {
    let schedules: u64 = std::env::var("BERTH_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let mut pushed = 0;
    for seed in 0..schedules {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let live = runtime.block_on(async {
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
                    while writing.load(Ordering::Relaxed) {
                        registry.collect_garbage(&no_grace()).await.expect("a step");
                        tokio::task::yield_now().await;
                    }
                })
            };
            let writers = (0..3).map(|number| {
                let (registry, dice) = (Arc::clone(&registry), Arc::clone(&dice));
                tokio::spawn(async move { writer(&registry, &dice, number).await })
            });
            let mut live = BTreeMap::new();
            for done in futures_util::future::join_all(writers).await {
                live.extend(done.expect("a writer"));
            }
            writing.store(false, Ordering::Relaxed);
            collector.await.expect("the collector");
            check_pullable(&registry, &live, seed).await;
            // With the writers done, one more collection leaves exactly what the live tags
            // need, which still pulls.
            collect_all(&registry).await;
            check_pullable(&registry, &live, seed).await;
            let mut needed: Vec<String> = Vec::new();
            for manifest in live.values() {
                needed.push(digest(manifest.as_bytes()).hex().to_owned());
                for blob in blobs_of(manifest) {
                    needed.push(blob.trim_start_matches("sha256:").to_owned());
                }
            }
            needed.sort();
            needed.dedup();
            let mut stored = stored_blobs(registry.storage()).await;
            stored.sort();
            assert_eq!(
                stored, needed,
                "seed {seed}: what is left is what the live tags need"
            );
            live.len()
        });
        pushed += live;
    }
    eprintln!("{schedules} schedules: {pushed} tags live at the end, each pulled back whole");
}

#[tokio::test]
async fn a_repository_deleted_whole_leaves_its_neighbours() {
    let registry = Registry::new(MemoryStorage::new(), options(true));
    let (config, mine, shared) = (&b"{}"[..], &b"only in app"[..], &b"shared"[..]);
    for (repository, layers) in [
        ("team/app", [mine, shared]),
        ("team/app/nested", [shared, shared]),
    ] {
        for data in [config, layers[0], layers[1]] {
            assert_eq!(push_blob(&registry, repository, data).await, 201);
        }
        let manifest = image(config, &layers[..], repository);
        assert_eq!(
            push_manifest(&registry, repository, "v1", &manifest).await,
            201
        );
    }
    let deleted = send(&registry, Method::Delete, "/v2/team/app/", &[], b"").await;
    assert_eq!(deleted.status, 202);
    let answer: serde_json::Value =
        serde_json::from_slice(&body_bytes(deleted.body).await).expect("a JSON answer");
    assert_eq!(answer["manifests"], 1);
    assert_eq!(answer["tags"], 0, "the tag went with its manifest");
    assert_eq!(answer["blobs"], 3);
    let again = send(&registry, Method::Delete, "/v2/team/app/", &[], b"").await;
    assert_eq!(again.status, 404);
    assert_eq!(get(&registry, "/v2/team/app/manifests/v1").await.0, 404);
    let (_, catalog) = get(&registry, "/v2/_catalog").await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&catalog).expect("a catalog"),
        serde_json::json!({"repositories": ["team/app/nested"]})
    );
    // The nested repository keeps everything; what only the deleted one held goes.
    let report = collect_all(&registry).await;
    assert_eq!(
        report.blobs_deleted, 2,
        "its manifest and its own layer: {report:?}"
    );
    assert_eq!(
        get(&registry, "/v2/team/app/nested/manifests/v1").await.0,
        200
    );
    for data in [config, shared] {
        let target = format!("/v2/team/app/nested/blobs/{}", digest(data));
        assert_eq!(get(&registry, &target).await.0, 200);
    }
    // Pushed to again, the name is back in the catalog.
    assert_eq!(push_blob(&registry, "team/app", mine).await, 201);
    let (_, catalog) = get(&registry, "/v2/_catalog").await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&catalog).expect("a catalog"),
        serde_json::json!({"repositories": ["team/app", "team/app/nested"]})
    );
    // Only DELETE means anything there.
    assert_eq!(get(&registry, "/v2/team/app/").await.0, 405);
}
