//! Quotas: pushes past a repository's or a namespace's limit are refused with `DENIED` and a
//! message naming the limit and the usage, and leave nothing behind; what a repository
//! already holds costs nothing again; deletes, collection and repository deletes give the
//! bytes back; content stored before the rules were set is counted once.

use std::sync::Arc;

use berth::quota::Quotas;
use berth::{MemoryStorage, Method, Options, Registry};

mod support;
use support::images::{collect_all, digest, get, image, options, push_blob, push_manifest};
use support::{body_bytes, send};

fn with_quotas(rules: &str, track: bool) -> Options {
    let mut options = options(track);
    options.quotas = Arc::new(Quotas::from_json(rules).expect("rules"));
    options
}

/// What `GET /v2/_usage/<name>` says.
async fn usage<S: berth::storage::Storage>(
    registry: &Registry<S>,
    name: &str,
) -> serde_json::Value {
    let (status, body) = get(registry, &format!("/v2/_usage/{name}")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("usage JSON")
}

/// The error a refused request answered with: status, code, message.
async fn refusal(response: berth::Response) -> (u16, String, String) {
    let status = response.status;
    let body: serde_json::Value =
        serde_json::from_slice(&body_bytes(response.body).await).expect("an error body");
    let error = &body["errors"][0];
    (
        status,
        error["code"].as_str().unwrap_or_default().to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn bytes(n: usize, fill: u8) -> Vec<u8> {
    vec![fill; n]
}

#[tokio::test]
async fn a_repository_limit_refuses_what_would_pass_it_and_nothing_else() {
    let registry = Registry::new(
        MemoryStorage::new(),
        with_quotas(r#"[{"repositories": "small/*", "limit": 1200}]"#, false),
    );
    let first = bytes(600, b'a');
    let second = bytes(700, b'b');
    assert_eq!(push_blob(&registry, "small/app", &first).await, 201);
    // The same blob again costs nothing.
    assert_eq!(push_blob(&registry, "small/app", &first).await, 201);

    // One request with its length announced: refused before the body is stored.
    let target = format!("/v2/small/app/blobs/uploads/?digest={}", digest(&second));
    let length = second.len().to_string();
    let refused = send(
        &registry,
        Method::Post,
        &target,
        &[("Content-Length", &length)],
        &second,
    )
    .await;
    let (status, code, message) = refusal(refused).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{message}");
    assert!(
        message.contains("repository small/app")
            && message.contains("600 B of its 1.2 KiB limit")
            && message.contains("needs 700 B more"),
        "{message}"
    );

    // A chunked upload starts (no length announced, room left), and its finish is refused.
    let started = send(
        &registry,
        Method::Post,
        "/v2/small/app/blobs/uploads/",
        &[],
        b"",
    )
    .await;
    assert_eq!(started.status, 202);
    let location = started.header("Location").expect("a location").to_owned();
    let patched = send(&registry, Method::Patch, &location, &[], &second).await;
    assert_eq!(patched.status, 202);
    let location = patched.header("Location").expect("a location").to_owned();
    let separator = if location.contains('?') { '&' } else { '?' };
    let finish = format!("{location}{separator}digest={}", digest(&second));
    let (status, code, _) = refusal(send(&registry, Method::Put, &finish, &[], b"").await).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"));
    // Nothing of it is stored: no repository can have it.
    let other = format!("/v2/elsewhere/blobs/{}", digest(&second));
    assert_eq!(get(&registry, &other).await.0, 404);
    assert_eq!(
        send(
            &registry,
            Method::Head,
            &format!("/v2/small/app/blobs/{}", digest(&second)),
            &[],
            b""
        )
        .await
        .status,
        404
    );

    // Repositories no rule covers have no limit.
    assert_eq!(push_blob(&registry, "elsewhere", &second).await, 201);
    // A mount past the limit is refused too, not turned into an upload.
    let mount = format!(
        "/v2/small/app/blobs/uploads/?mount={}&from=elsewhere",
        digest(&second)
    );
    let (status, code, _) = refusal(send(&registry, Method::Post, &mount, &[], b"").await).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"));

    // A manifest of what it holds fits (it is small); at the limit, more manifests do not.
    let config = bytes(10, b'c');
    assert_eq!(push_blob(&registry, "small/app", &config).await, 201);
    let manifest = image(&config, &[&first], "one");
    assert_eq!(
        push_manifest(&registry, "small/app", "v1", &manifest).await,
        201
    );
    let report = usage(&registry, "small/app").await;
    let held = 600 + 10 + manifest.len() as u64;
    assert_eq!(report["bytes"], held, "{report}");
    assert_eq!(report["objects"], 3, "{report}");
    assert_eq!(report["quotas"][0]["rule"], "small/*");
    assert_eq!(report["quotas"][0]["limit"], 1200);
    assert_eq!(report["quotas"][0]["used"], held);
    let big_note = "x".repeat(1200 - held as usize);
    let too_big = image(&config, &[&first], &big_note);
    assert_eq!(
        push_manifest(&registry, "small/app", "v2", &too_big).await,
        403
    );
    // Tagging what it holds adds nothing.
    assert_eq!(
        push_manifest(&registry, "small/app", "v1-again", &manifest).await,
        201
    );

    // Deleting gives the bytes back.
    let manifest_digest = digest(manifest.as_bytes());
    let deleted = send(
        &registry,
        Method::Delete,
        &format!("/v2/small/app/manifests/{manifest_digest}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(deleted.status, 202);
    let deleted = send(
        &registry,
        Method::Delete,
        &format!("/v2/small/app/blobs/{}", digest(&first)),
        &[],
        b"",
    )
    .await;
    assert_eq!(deleted.status, 202);
    assert_eq!(usage(&registry, "small/app").await["bytes"], 10);
    assert_eq!(push_blob(&registry, "small/app", &second).await, 201);

    // A repository deleted whole holds nothing.
    let deleted = send(&registry, Method::Delete, "/v2/small/app/", &[], b"").await;
    assert_eq!(deleted.status, 202);
    assert_eq!(usage(&registry, "small/app").await["bytes"], 0);
}

#[tokio::test]
async fn a_namespace_limit_counts_its_repositories_together() {
    let registry = Registry::new(
        MemoryStorage::new(),
        with_quotas(r#"[{"namespace": "team", "limit": "2KiB"}]"#, false),
    );
    let shared = bytes(800, b's');
    assert_eq!(push_blob(&registry, "team/a", &shared).await, 201);
    // A blob in two repositories counts in each.
    assert_eq!(push_blob(&registry, "team/b", &shared).await, 201);
    let third = bytes(500, b't');
    let refused = send(
        &registry,
        Method::Post,
        &format!("/v2/team/c/blobs/uploads/?digest={}", digest(&third)),
        &[("Content-Length", "500")],
        &third,
    )
    .await;
    let (status, code, message) = refusal(refused).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"));
    assert!(
        message.contains("namespace team holds 1.6 KiB of its 2.0 KiB limit"),
        "{message}"
    );
    // Outside the namespace, and in one named like it, nothing is limited.
    assert_eq!(push_blob(&registry, "teammate/x", &third).await, 201);
    let report = usage(&registry, "team").await;
    assert_eq!(report["below"]["bytes"], 1600, "{report}");
    assert_eq!(report["below"]["repositories"], 2, "{report}");
    assert_eq!(report["quotas"][0]["scope"], "namespace");
    assert_eq!(report["quotas"][0]["used"], 1600);
}

#[tokio::test]
async fn content_stored_before_the_rules_is_counted_once() {
    let storage = Arc::new(MemoryStorage::new());
    let before = Registry::new(Arc::clone(&storage), options(false));
    let config = bytes(100, b'c');
    let layer = bytes(700, b'l');
    for blob in [&config, &layer] {
        assert_eq!(push_blob(&before, "team/old", blob).await, 201);
    }
    let manifest = image(&config, &[&layer], "old");
    assert_eq!(
        push_manifest(&before, "team/old", "v1", &manifest).await,
        201
    );
    // Without rules, usage is counted afresh each time.
    let held = 800 + manifest.len() as u64;
    assert_eq!(usage(&before, "team/old").await["bytes"], held);

    let after = Registry::new(
        Arc::clone(&storage),
        with_quotas(
            r#"[{"repositories": "team/*", "limit": 1500}, {"namespace": "team", "limit": 1600}]"#,
            false,
        ),
    );
    let more = bytes(600, b'm');
    let (status, _, message) = refusal(
        send(
            &after,
            Method::Post,
            &format!("/v2/team/old/blobs/uploads/?digest={}", digest(&more)),
            &[("Content-Length", "600")],
            &more,
        )
        .await,
    )
    .await;
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("repository team/old"), "{message}");
    // The namespace counted what team/old held before as well.
    let (status, _, message) = refusal(
        send(
            &after,
            Method::Post,
            &format!("/v2/team/new/blobs/uploads/?digest={}", digest(&more)),
            &[("Content-Length", "600")],
            &more,
        )
        .await,
    )
    .await;
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("namespace team"), "{message}");
    assert_eq!(usage(&after, "team/old").await["bytes"], held);
}

#[tokio::test]
async fn collection_gives_back_what_it_unlinks() {
    let registry = Registry::new(
        MemoryStorage::new(),
        with_quotas(r#"[{"repositories": "**", "limit": "1MiB"}]"#, true),
    );
    let config = bytes(100, b'c');
    let layer = bytes(5000, b'l');
    for blob in [&config, &layer] {
        assert_eq!(push_blob(&registry, "app", blob).await, 201);
    }
    let manifest = image(&config, &[&layer], "gone soon");
    assert_eq!(push_manifest(&registry, "app", "v1", &manifest).await, 201);
    assert_eq!(
        usage(&registry, "app").await["bytes"],
        5100 + manifest.len() as u64
    );
    let target = format!("/v2/app/manifests/{}", digest(manifest.as_bytes()));
    assert_eq!(
        send(&registry, Method::Delete, &target, &[], b"")
            .await
            .status,
        202
    );
    assert_eq!(usage(&registry, "app").await["bytes"], 5100);
    let report = collect_all(&registry).await;
    assert_eq!(report.links_removed, 2, "{report:?}");
    assert_eq!(usage(&registry, "app").await["bytes"], 0);
}

/// Pushers may do everything but administer.
struct PushersOnly;

impl berth::AccessPolicy for PushersOnly {
    fn check(
        &self,
        _: &berth::RequestHead,
        _: Option<&berth::RepositoryName>,
        action: berth::Action,
    ) -> berth::Decision {
        match action {
            berth::Action::Admin => berth::Decision::Denied,
            _ => berth::Decision::Allow,
        }
    }
}

#[tokio::test]
async fn usage_is_for_admins_only() {
    let mut options = with_quotas(r#"[{"repositories": "**", "limit": 10}]"#, false);
    options.access = Arc::new(PushersOnly);
    let registry = Registry::new(MemoryStorage::new(), options);
    assert_eq!(push_blob(&registry, "app", b"0123").await, 201);
    let (status, body) = get(&registry, "/v2/_usage/app").await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
}
