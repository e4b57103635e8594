//! Garbage collection: what nothing references goes, what a manifest references stays, and
//! pushes racing the collector lose nothing (random schedules of writers and a collector
//! with no grace period, every acknowledged tag pulled back afterwards).
//!
//! `BERTH_SCHEDULES` sets the number of racing schedules (default 1,000; without the claim check a layer was lost within them).

use std::sync::Arc;

use berth::storage::StorageExt;
use berth::{Collection, MemoryStorage, Method, Registry};

mod support;
use support::images::{
    Live, Racing, Writer, collect_all, delete_first, digest, get, image, no_grace, options,
    push_blob, push_manifest, race_schedules, stored_blobs,
};
use support::{Dice, body_bytes, send};

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
async fn the_first_marking_goes_a_budget_at_a_time() {
    let storage = Arc::new(MemoryStorage::new());
    let before = Registry::new(Arc::clone(&storage), options(false));
    let config = &b"{}"[..];
    assert_eq!(push_blob(&before, "old", config).await, 201);
    let layers: Vec<Vec<u8>> = (0..6)
        .map(|n| format!("old layer {n}").into_bytes())
        .collect();
    for (n, layer) in layers.iter().enumerate() {
        assert_eq!(push_blob(&before, "old", layer).await, 201);
        let manifest = image(config, &[layer], &n.to_string());
        assert_eq!(
            push_manifest(&before, "old", &format!("v{n}"), &manifest).await,
            201
        );
    }
    assert_eq!(push_blob(&before, "old", b"old loose").await, 201);

    let after = Registry::new(Arc::clone(&storage), options(true));
    let step = Collection {
        max_candidates: 4,
        ..no_grace()
    };
    let mut steps = 0;
    let mut marked = 0;
    loop {
        let report = after.collect_garbage(&step).await.expect("a step");
        steps += 1;
        marked += report.marked;
        if report.left == 0 && report.marked == 0 {
            break;
        }
        if report.left > 0 {
            // Marking: nothing is collected before every page is marked.
            assert_eq!(report.blobs_deleted, 0, "{report:?}");
            assert!(report.marked > 0, "{report:?}");
        }
        assert!(steps < 100, "the marking ends");
    }
    // 6 tags, 6 revisions, 8 layer links (config, 6 layers, loose): 20 keys, 4 a step.
    assert!(steps >= 5, "{steps} steps");
    assert!(marked >= 20, "{marked}");
    let report = collect_all(&after).await;
    assert_eq!(
        report.blobs_deleted, 0,
        "the loose blob went already: {report:?}"
    );
    assert_eq!(
        get(&after, &format!("/v2/old/blobs/{}", digest(b"old loose")))
            .await
            .0,
        404
    );
    for (n, layer) in layers.iter().enumerate() {
        assert_eq!(get(&after, &format!("/v2/old/manifests/v{n}")).await.0, 200);
        assert_eq!(
            get(&after, &format!("/v2/old/blobs/{}", digest(layer)))
                .await
                .0,
            200
        );
    }
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
async fn writer(registry: Arc<Racing>, dice: Arc<Dice>, number: u64) -> Live {
    let registry = &*registry;
    let mut live = Live::new();
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
            live.insert(tag, vec![manifest]);
        }
        if dice.roll(3) == 0 {
            delete_first(registry, &mut live).await;
        }
    }
    live
}

#[test]
fn pushes_racing_the_collector_lose_nothing() {
    let writers: Writer = |registry, dice, number| Box::pin(writer(registry, dice, number));
    let (pushed, _) = race_schedules(no_grace(), writers);
    eprintln!("{pushed} tags live at the ends of the schedules, each pulled back whole");
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
