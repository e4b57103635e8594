//! Untagged collection: manifests no tag points at go (once old enough), and then their
//! blobs; what a tag holds, an index's children and the referrers of a kept subject stay;
//! pushes that move tags and push indexes, racing a collector with no grace period, lose
//! nothing (`BERTH_SCHEDULES` random schedules, default 1,000).

use std::sync::Arc;

use berth::storage::StorageExt;
use berth::{Collection, MemoryStorage, Method, Registry, Storage};

mod support;
use support::images::{
    Live, Racing, Writer, collect_all, collect_all_with, delete_first, digest, get, image, index,
    no_grace, options, push_blob, push_manifest, race_schedules, referrer,
};
use support::{Dice, send};

fn untagged() -> Collection {
    Collection {
        untagged: true,
        ..no_grace()
    }
}

async fn status<S: Storage>(registry: &Registry<S>, target: &str) -> u16 {
    get(registry, target).await.0
}

async fn manifest_status<S: Storage>(registry: &Registry<S>, manifest: &str) -> u16 {
    status(
        registry,
        &format!("/v2/app/manifests/{}", digest(manifest.as_bytes())),
    )
    .await
}

async fn blob_status<S: Storage>(registry: &Registry<S>, data: &[u8]) -> u16 {
    status(registry, &format!("/v2/app/blobs/{}", digest(data))).await
}

#[tokio::test]
async fn untagged_manifests_go_and_what_holds_one_keeps_it() {
    let registry = Registry::new(MemoryStorage::new(), options(true));
    let config = &b"{\"os\":\"linux\"}"[..];
    let blobs: [&[u8]; 6] = [config, b"{}", b"old", b"new", b"child", b"by digest"];
    for data in blobs {
        assert_eq!(push_blob(&registry, "app", data).await, 201);
    }
    let old = image(config, &[b"old"], "old");
    let new = image(config, &[b"new"], "new");
    let child = image(config, &[b"child"], "child");
    let by_digest = image(config, &[b"by digest"], "by digest");
    let multi = index(&[&child, &new]);
    let signature_of_new = referrer(&new, "signs new");
    let signature_of_old = referrer(&old, "signs old");
    assert_eq!(push_manifest(&registry, "app", "v1", &old).await, 201);
    assert_eq!(push_manifest(&registry, "app", "v1", &new).await, 201);
    for manifest in [&child, &by_digest, &signature_of_new, &signature_of_old] {
        let reference = digest(manifest.as_bytes()).to_string();
        assert_eq!(
            push_manifest(&registry, "app", &reference, manifest).await,
            201
        );
    }
    assert_eq!(push_manifest(&registry, "app", "multi", &multi).await, 201);

    // Without untagged collection, manifests stay.
    let report = collect_all(&registry).await;
    assert_eq!(report.manifests_deleted, 0, "{report:?}");
    assert_eq!(manifest_status(&registry, &old).await, 200);

    // A dry run says what would go, and nothing goes.
    let dry = Collection {
        dry_run: true,
        ..untagged()
    };
    let report = registry.collect_garbage(&dry).await.unwrap();
    assert_eq!(report.manifests_deleted, 2, "{report:?}");
    assert_eq!(manifest_status(&registry, &old).await, 200);

    // Within the grace period, nothing goes.
    let within = Collection {
        untagged: true,
        ..Collection::default()
    };
    assert_eq!(
        registry
            .collect_garbage(&within)
            .await
            .unwrap()
            .manifests_deleted,
        0
    );

    // The manifest the tag moved away from goes, and the one pushed by digest alone; then
    // their own layers. The signature of the old one stays (orphaned referrers are kept).
    let report = collect_all_with(&registry, &untagged()).await;
    assert_eq!(report.manifests_deleted, 2, "{report:?}");
    for (manifest, expected) in [
        (&old, 404),
        (&by_digest, 404),
        (&new, 200),
        (&child, 200),
        (&multi, 200),
        (&signature_of_new, 200),
        (&signature_of_old, 200),
    ] {
        assert_eq!(
            manifest_status(&registry, manifest).await,
            expected,
            "{manifest}"
        );
    }
    for (data, expected) in [
        (&b"old"[..], 404),
        (b"by digest", 404),
        (b"new", 200),
        (b"child", 200),
        (config, 200),
    ] {
        assert_eq!(blob_status(&registry, data).await, expected);
    }

    // The index's tag deleted: the index goes, then its child no tag holds; the image a tag
    // holds stays.
    let delete = send(
        &registry,
        Method::Delete,
        "/v2/app/manifests/multi",
        &[],
        b"",
    )
    .await;
    assert_eq!(delete.status, 202);
    let report = collect_all_with(&registry, &untagged()).await;
    assert_eq!(report.manifests_deleted, 2, "{report:?}");
    assert_eq!(manifest_status(&registry, &multi).await, 404);
    assert_eq!(manifest_status(&registry, &child).await, 404);
    assert_eq!(blob_status(&registry, b"child").await, 404);
    assert_eq!(
        get(&registry, "/v2/app/manifests/v1").await,
        (200, new.clone().into_bytes())
    );

    // By rule, the referrers of a subject that goes go too.
    let delete = send(&registry, Method::Delete, "/v2/app/manifests/v1", &[], b"").await;
    assert_eq!(delete.status, 202);
    let rule = Collection {
        orphaned_referrers: true,
        ..untagged()
    };
    let report = collect_all_with(&registry, &rule).await;
    assert_eq!(report.manifests_deleted, 2, "{report:?}");
    assert_eq!(manifest_status(&registry, &new).await, 404);
    assert_eq!(manifest_status(&registry, &signature_of_new).await, 404);
    assert_eq!(
        manifest_status(&registry, &signature_of_old).await,
        200,
        "orphaned before the rule was on"
    );
    assert!(
        registry
            .storage()
            .list_all("berth/gc/manifests/")
            .await
            .unwrap()
            .is_empty(),
        "every manifest candidate visited"
    );
}

#[tokio::test]
async fn manifests_stored_before_tracking_are_candidates_of_the_first_collection() {
    let storage = Arc::new(MemoryStorage::new());
    let before = Registry::new(Arc::clone(&storage), options(false));
    let config = &b"{}"[..];
    for data in [config, b"one", b"two"] {
        assert_eq!(push_blob(&before, "app", data).await, 201);
    }
    let one = image(config, &[b"one"], "one");
    let two = image(config, &[b"two"], "two");
    assert_eq!(push_manifest(&before, "app", "latest", &one).await, 201);
    assert_eq!(push_manifest(&before, "app", "latest", &two).await, 201);
    assert_eq!(push_manifest(&before, "app", "stable", &two).await, 201);

    let after = Registry::new(Arc::clone(&storage), options(true));
    let report = collect_all_with(&after, &untagged()).await;
    assert_eq!(report.manifests_deleted, 1, "{report:?}");
    assert_eq!(manifest_status(&after, &one).await, 404);
    assert_eq!(blob_status(&after, b"one").await, 404);
    assert_eq!(manifest_status(&after, &two).await, 200);
    // Deleting one of two tags leaves the manifest the other holds.
    let delete = send(&after, Method::Delete, "/v2/app/manifests/latest", &[], b"").await;
    assert_eq!(delete.status, 202);
    assert_eq!(
        collect_all_with(&after, &untagged())
            .await
            .manifests_deleted,
        0
    );
    assert_eq!(
        get(&after, "/v2/app/manifests/stable").await,
        (200, two.into_bytes())
    );
}

const LAYERS: [&[u8]; 4] = [b"layer zero", b"layer one", b"layer two", b"layer three"];
const CONFIG: &[u8] = b"{\"architecture\":\"arm64\"}";

/// One writer: pushes images and indexes to two tags of its own (so tags move, leaving
/// manifests untagged), sometimes deletes what a tag holds. Returns the tags it was told
/// were pushed and did not delete, with the manifests each needs (the tagged one first).
async fn writer(registry: Arc<Racing>, dice: Arc<Dice>, number: u64) -> Live {
    let registry = &*registry;
    let mut live = Live::new();
    let mut history: Vec<Vec<String>> = Vec::new();
    for round in 0..5 {
        let tag = format!("w{number}-{}", dice.roll(2));
        let image_of = |note: String| {
            let chosen: Vec<&[u8]> = LAYERS
                .iter()
                .copied()
                .filter(|_| dice.roll(2) == 0)
                .collect();
            (image(CONFIG, &chosen, &note), chosen)
        };
        if dice.roll(3) == 0 && !history.is_empty() {
            // A tag moved back to a manifest pushed before, perhaps untagged since (a
            // rollback): refused if the collector took what it needs, whole if accepted.
            let needed: Vec<String> = history[dice.roll(history.len() as u64) as usize].clone();
            if push_manifest(registry, "race", &tag, &needed[0]).await == 201 {
                live.insert(tag, needed);
            }
            continue;
        }
        let mut needed = Vec::new();
        let children = if dice.roll(2) == 0 { 0 } else { 2 };
        let mut pushed = true;
        for child in 0..children.max(1) {
            let (manifest, chosen) = image_of(format!("{tag}-{round}-{child}"));
            for data in chosen.iter().copied().chain([CONFIG]) {
                push_blob(registry, "race", data).await;
            }
            if children > 0 {
                let reference = digest(manifest.as_bytes()).to_string();
                pushed &= push_manifest(registry, "race", &reference, &manifest).await == 201;
            }
            needed.push(manifest);
        }
        if !pushed {
            continue;
        }
        if children > 0 {
            let children: Vec<&str> = needed.iter().map(String::as_str).collect();
            needed.insert(0, index(&children));
        }
        if push_manifest(registry, "race", &tag, &needed[0]).await == 201 {
            history.push(needed.clone());
            live.insert(tag, needed);
        }
        if dice.roll(4) == 0 {
            delete_first(registry, &mut live).await;
        }
    }
    live
}

#[test]
fn pushes_moving_tags_racing_untagged_collection_lose_nothing() {
    let writers: Writer = |registry, dice, number| Box::pin(writer(registry, dice, number));
    let (pushed, collected) = race_schedules(untagged(), writers);
    eprintln!(
        "{collected} untagged manifests collected, {pushed} tags live at the ends of the \
         schedules, each pulled back whole"
    );
}
