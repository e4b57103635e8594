//! Retention rules at collection time: the tags a rule expires go (a dry run names them
//! first), the manifests they held follow with untagged collection, then their blobs;
//! repositories no rule covers are left alone.

use std::sync::Arc;
use std::time::Duration;

use berth::retention::Retention;
use berth::{Collection, MemoryStorage, Registry};

mod support;
use support::images::{
    collect_all_with, digest, get, image, no_grace, options, push_blob, push_manifest,
};

#[tokio::test]
async fn rules_remove_expired_tags_and_collection_takes_what_they_held() {
    let mut options = options(true);
    options.retention = Arc::new(
        Retention::from_json(
            r#"[{"repositories": "app", "keep-last": 2, "keep-tags": ["stable"]}]"#,
        )
        .expect("rules"),
    );
    let registry = Registry::new(MemoryStorage::new(), options);
    let config = &b"{}"[..];
    let layers: Vec<Vec<u8>> = (0..5).map(|n| format!("layer {n}").into_bytes()).collect();
    let mut images = Vec::new();
    for repository in ["app", "other"] {
        assert_eq!(push_blob(&registry, repository, config).await, 201);
    }
    for (n, layer) in layers.iter().enumerate() {
        assert_eq!(push_blob(&registry, "app", layer).await, 201);
        let manifest = image(config, &[layer], &format!("{n}"));
        assert_eq!(
            push_manifest(&registry, "app", &format!("t{n}"), &manifest).await,
            201
        );
        if n == 0 {
            assert_eq!(
                push_manifest(&registry, "app", "stable", &manifest).await,
                201
            );
        }
        images.push(manifest);
        // Push times are the storage's, in milliseconds: one apart at least.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(push_blob(&registry, "other", &layers[0]).await, 201);
    let elsewhere = image(config, &[&layers[0]], "elsewhere");
    assert_eq!(
        push_manifest(&registry, "other", "t0", &elsewhere).await,
        201
    );

    let untagged = Collection {
        untagged: true,
        ..no_grace()
    };
    let dry = registry
        .collect_garbage(&Collection {
            dry_run: true,
            ..untagged
        })
        .await
        .expect("a dry run");
    assert_eq!(dry.tags_deleted, 3, "{dry:?}");
    assert_eq!(dry.tags_by_repository["app"], ["t0", "t1", "t2"]);
    assert_eq!(get(&registry, "/v2/app/manifests/t0").await.0, 200);

    let report = collect_all_with(&registry, &untagged).await;
    assert_eq!(report.tags_deleted, 3, "{report:?}");
    assert_eq!(
        report.manifests_deleted, 2,
        "t1's and t2's; stable holds t0's: {report:?}"
    );
    for (tag, status) in [
        ("t0", 404),
        ("t1", 404),
        ("t2", 404),
        ("t3", 200),
        ("t4", 200),
        ("stable", 200),
    ] {
        assert_eq!(
            get(&registry, &format!("/v2/app/manifests/{tag}")).await.0,
            status,
            "{tag}"
        );
    }
    for (n, status) in [(0, 200), (1, 404), (2, 404), (3, 200)] {
        let manifest = format!("/v2/app/manifests/{}", digest(images[n].as_bytes()));
        assert_eq!(get(&registry, &manifest).await.0, status, "image {n}");
        let layer = format!("/v2/app/blobs/{}", digest(&layers[n]));
        assert_eq!(get(&registry, &layer).await.0, status, "layer {n}");
    }
    assert_eq!(get(&registry, "/v2/other/manifests/t0").await.0, 200);
    // A second pass finds nothing more.
    assert_eq!(collect_all_with(&registry, &untagged).await.tags_deleted, 0);
}
