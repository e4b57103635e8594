//! Scrubs: stray blobs (content nothing references or links) become candidates and go with
//! the next collection, while every image stays; lost back-links are written again; scratch
//! files and parts no session names are removed from a filesystem root; quota usage is
//! counted afresh. A dry run counts and changes nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth::storage::{PutMode, Storage, StorageExt};
use berth::{FsStorage, MemoryStorage, Method, Registry, Scrub};

mod support;
use support::images::{collect_all, digest, get, image, options, push_blob, push_manifest};
use support::send;

/// Content stored under `digest`'s blob key with no link anywhere: a push that died after
/// publishing it, or what another tool left.
async fn store_stray(storage: &impl Storage, data: &[u8]) {
    let hex = digest(data).hex().to_owned();
    let key = format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
    storage
        .put(
            &key.as_str().into(),
            data.to_vec().into(),
            PutMode::Overwrite.into(),
        )
        .await
        .expect("a stray blob");
}

/// `app:v1`, an image of `config` and `layer`.
async fn push_image<S: Storage>(registry: &Registry<S>, config: &[u8], layer: &[u8]) {
    for blob in [config, layer] {
        assert_eq!(push_blob(registry, "app", blob).await, 201);
    }
    let manifest = image(config, &[layer], "kept");
    assert_eq!(push_manifest(registry, "app", "v1", &manifest).await, 201);
}

#[tokio::test]
async fn stray_blobs_go_and_images_stay() {
    let storage = Arc::new(MemoryStorage::new());
    let registry = Registry::new(Arc::clone(&storage), options(true));
    let (config, layer) = (&b"{}"[..], &b"a layer"[..]);
    push_image(&registry, config, layer).await;
    let stray = b"nothing links this".to_vec();
    store_stray(&*storage, &stray).await;
    // A collection alone never visits it: no candidate names it.
    collect_all(&registry).await;
    let stray_key = format!(
        "docker/registry/v2/blobs/sha256/{}/{}/data",
        &digest(&stray).hex()[..2],
        digest(&stray).hex()
    );
    assert!(storage.exists(&stray_key.as_str().into()).await.unwrap());

    let dry = registry
        .scrub(&Scrub {
            dry_run: true,
            ..Scrub::default()
        })
        .await
        .expect("a dry run");
    assert_eq!((dry.blobs, dry.stray_blobs), (4, 1), "{dry:?}");
    assert_eq!(dry.stray_bytes, stray.len() as u64);
    assert_eq!(dry.marked, 0);
    collect_all(&registry).await;
    assert!(storage.exists(&stray_key.as_str().into()).await.unwrap());

    let report = registry.scrub(&Scrub::default()).await.expect("a scrub");
    assert_eq!(report.stray_blobs, 1, "{report:?}");
    assert!(report.marked > 0, "{report:?}");
    let collected = collect_all(&registry).await;
    assert_eq!(collected.blobs_deleted, 1, "{collected:?}");
    assert!(!storage.exists(&stray_key.as_str().into()).await.unwrap());
    assert_eq!(get(&registry, "/v2/app/manifests/v1").await.0, 200);
    for blob in [config, layer] {
        let target = format!("/v2/app/blobs/{}", digest(blob));
        assert_eq!(get(&registry, &target).await.0, 200);
    }
}

#[tokio::test]
async fn lost_back_links_are_written_again() {
    let storage = Arc::new(MemoryStorage::new());
    let registry = Registry::new(Arc::clone(&storage), options(true));
    let (config, layer) = (&b"{}"[..], &b"a layer"[..]);
    push_image(&registry, config, layer).await;
    // Lose the layer's back-links (a bucket restored from an old copy, a hand's delete).
    let refs = format!("berth/refs/sha256/{}/", digest(layer).hex());
    storage.delete_all(&refs).await.unwrap();
    assert!(storage.list_all(&refs).await.unwrap().is_empty());
    registry.scrub(&Scrub::default()).await.expect("a scrub");
    assert!(!storage.list_all(&refs).await.unwrap().is_empty());
    // The image keeps its layer through a collection with no grace period.
    collect_all(&registry).await;
    let target = format!("/v2/app/blobs/{}", digest(layer));
    assert_eq!(get(&registry, &target).await.0, 200);
}

#[tokio::test]
async fn leftovers_of_killed_writes_are_removed_from_a_filesystem_root() {
    let root = std::env::temp_dir().join(format!("berth-scrub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let storage = FsStorage::new(&root).expect("a root");
    let registry = Registry::new(storage, options(true));
    // A live chunked upload: its parts stay.
    let started = send(&registry, Method::Post, "/v2/app/blobs/uploads/", &[], b"").await;
    let location = started.header("Location").expect("a location").to_owned();
    let patched = send(
        &registry,
        Method::Patch,
        &location,
        &[],
        &vec![7u8; 3 << 20],
    )
    .await;
    assert_eq!(patched.status, 202);
    // What killed processes left: a scratch file and an orphaned parts upload, an hour old.
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let scratch = root.join(".berth/tmp/12345-1-1");
    std::fs::write(&scratch, vec![0u8; 1000]).unwrap();
    let orphan = root.join(".berth/parts/99999-1-1");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("data"), vec![0u8; 5000]).unwrap();
    for path in [&scratch, &orphan.join("data"), &orphan] {
        std::fs::File::open(path)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
    }
    let parts_before = std::fs::read_dir(root.join(".berth/parts"))
        .unwrap()
        .count();
    assert_eq!(parts_before, 2, "the live upload's parts and the orphan");
    let settings = Scrub {
        leftovers_older_than: 1800,
        ..Scrub::default()
    };
    let dry = registry
        .scrub(&Scrub {
            dry_run: true,
            ..settings
        })
        .await
        .expect("a dry run");
    assert_eq!((dry.leftovers.objects, dry.leftovers.bytes), (2, 6000));
    assert!(scratch.exists() && orphan.exists());
    let report = registry.scrub(&settings).await.expect("a scrub");
    assert_eq!(report.leftovers.objects, 2, "{report:?}");
    assert!(!scratch.exists() && !orphan.exists());
    // The live upload finishes.
    let separator = if location.contains('?') { '&' } else { '?' };
    let finish = format!(
        "{location}{separator}digest={}",
        digest(&vec![7u8; 3 << 20])
    );
    assert_eq!(
        send(&registry, Method::Put, &finish, &[], b"").await.status,
        201
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn quota_usage_is_counted_afresh() {
    let storage = Arc::new(MemoryStorage::new());
    let mut options = options(true);
    options.quotas = Arc::new(
        berth::quota::Quotas::from_json(r#"[{"repositories": "**", "limit": "1MiB"}]"#).unwrap(),
    );
    let registry = Registry::new(Arc::clone(&storage), options);
    assert_eq!(push_blob(&registry, "app", &[1u8; 1000]).await, 201);
    // A charge for nothing (a key left by hand) inflates usage until a scrub.
    storage
        .put(
            &"berth/usage/app/!sha256-00-5000".into(),
            Vec::new().into(),
            PutMode::Overwrite.into(),
        )
        .await
        .unwrap();
    assert_eq!(usage_bytes(&registry, "app").await, 6000);
    let report = registry.scrub(&Scrub::default()).await.unwrap();
    assert!(report.usage_recounted);
    assert_eq!(usage_bytes(&registry, "app").await, 1000);
}

async fn usage_bytes<S: Storage>(registry: &Registry<S>, name: &str) -> u64 {
    let (_, body) = get(registry, &format!("/v2/_usage/{name}")).await;
    serde_json::from_slice::<serde_json::Value>(&body).expect("usage JSON")["bytes"]
        .as_u64()
        .expect("a byte count")
}
