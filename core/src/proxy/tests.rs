use super::*;

fn name(text: &str) -> RepositoryName {
    text.parse().expect("a repository name")
}

#[test]
fn prefix_and_namespace_share_one_cache() {
    let mut hub = UpstreamRule::new("docker-hub", "https://registry-1.docker.io");
    hub.namespace = Some("docker.io".into());
    let ghcr = UpstreamRule::new("ghcr/", "https://ghcr.io/");
    let upstreams = Upstreams::new(vec![hub, ghcr]).expect("valid rules");

    let routed = upstreams
        .route(&name("docker-hub/nginx"), None)
        .expect("cached");
    assert_eq!(
        (routed.local.as_str(), routed.remote.as_str()),
        ("docker-hub/library/nginx", "library/nginx")
    );
    let by_ns = upstreams
        .route(&name("library/nginx"), Some("docker.io"))
        .expect("cached");
    assert_eq!(by_ns.local, routed.local);
    assert_eq!(by_ns.namespace.as_deref(), Some("docker.io"));
    // Not Docker Hub: no library/; URLs lose their trailing slash.
    let routed = upstreams
        .route(&name("ghcr/org/app"), None)
        .expect("cached");
    assert_eq!(routed.remote, "org/app");
    assert_eq!(upstreams.rule(routed.rule).urls, ["https://ghcr.io"]);
    // Unknown ns values are ignored; other repositories are ordinary ones.
    assert!(
        upstreams
            .route(&name("team/app"), Some("quay.io"))
            .is_none()
    );
    assert!(upstreams.route(&name("docker-hubx/app"), None).is_none());
    assert!(upstreams.route(&name("docker-hub"), None).is_none());

    // The empty prefix: a mirror at the root, below the other rules.
    let mut root = UpstreamRule::new("", "https://registry-1.docker.io");
    root.namespace = Some("docker.io".into());
    let upstreams = Upstreams::new(vec![root, UpstreamRule::new("ghcr", "https://ghcr.io")])
        .expect("valid rules");
    let routed = upstreams.route(&name("nginx"), None).expect("cached");
    assert_eq!(
        (routed.local.as_str(), routed.remote.as_str()),
        ("library/nginx", "library/nginx")
    );
    let routed = upstreams
        .route(&name("ghcr/org/app"), None)
        .expect("cached");
    assert_eq!((routed.rule, routed.remote.as_str()), (1, "org/app"));
}

#[test]
fn rules_are_checked() {
    let bad = |rule: UpstreamRule| Upstreams::new(vec![rule]).unwrap_err();
    assert!(bad(UpstreamRule::new("Bad Name", "https://x")).contains("repository name"));
    assert!(bad(UpstreamRule::new("hub", "ftp://x")).contains("URL"));
    let twice = Upstreams::new(vec![
        UpstreamRule::new("hub", "https://a"),
        UpstreamRule::new("hub/", "https://b"),
    ]);
    assert!(twice.unwrap_err().contains("share"));
    let parsed = Upstreams::from_json(
        r#"{"upstreams": [{"prefix": "hub", "urls": ["http://127.0.0.1:5000"],
            "revalidate": "2m", "stale-if-error": 30, "immutable-tags": ["semver", "stable-*"]}]}"#,
    )
    .expect("valid JSON rules");
    let rule = parsed.rule(0);
    assert_eq!((rule.revalidate, rule.stale_if_error), (120, 30));
    assert!(rule.is_immutable("v1.2.3") && rule.is_immutable("1.25.0-alpine"));
    assert!(rule.is_immutable("stable-2024"));
    assert!(!rule.is_immutable("1.25") && !rule.is_immutable("latest"));
    assert!(Upstreams::from_json(r#"[{"prefix": "hub"}]"#).is_err());
}

#[test]
fn challenges_and_token_answers() {
    let challenge = bearer_challenge(
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
    )
    .expect("a bearer challenge");
    assert_eq!(challenge.realm, "https://auth.docker.io/token");
    assert_eq!(challenge.service.as_deref(), Some("registry.docker.io"));
    assert_eq!(
        challenge.scope.as_deref(),
        Some("repository:library/nginx:pull")
    );
    assert!(bearer_challenge(r#"Basic realm="x""#).is_none());
    assert_eq!(
        token_answer(br#"{"access_token":"abc","expires_in":300}"#),
        Some(("abc".into(), 300))
    );
    assert_eq!(token_answer(br#"{"token":"t"}"#), Some(("t".into(), 60)));
    assert_eq!(token_answer(b"<html>"), None);
    assert_eq!(retry_after(Some(" 7 "), 0), Some(7));
    // 2026-12-07 22:00:00 UTC is 1_796_680_800.
    let now = 1_796_680_800;
    assert_eq!(
        retry_after(Some("Mon, 07 Dec 2026 22:00:30 GMT"), now),
        Some(30)
    );
    assert_eq!(
        retry_after(Some("Sun, 06 Nov 1994 08:49:37 GMT"), now),
        Some(0)
    );
    assert_eq!(
        http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784_111_777)
    );
    assert_eq!(
        http_date("Thu, 29 Feb 2024 00:00:00 GMT"),
        Some(1_709_164_800)
    );
    assert_eq!(retry_after(Some("soon"), now), None);
    assert_eq!(
        retry_after(Some("Mon, 07 Foo 2026 22:00:30 GMT"), now),
        None
    );
    assert_eq!(parse_seconds("7d"), Ok(7 * 86_400));
    assert!(parse_seconds("soon").is_err());
}

#[test]
fn eviction_follows_the_last_pull() {
    let tag = |name: &str, digest: &str, pushed: u64| TagState {
        name: name.into(),
        digest: digest.into(),
        pushed,
    };
    // Evict after 10 s; now is 100 s (in milliseconds).
    let tags = [
        tag("hot", "sha256:a", 0),
        tag("cold", "sha256:b", 0),
        tag("new", "sha256:c", 95_000),
        tag("alias", "sha256:a", 0),
    ];
    let pulls = [
        ("sha256:a".to_owned(), 95_000),
        ("sha256:b".to_owned(), 80_000),
        ("sha256:d".to_owned(), 10_000),
        ("sha256:e".to_owned(), 99_000),
    ];
    let (evicted, forgotten) = unpulled(&tags, &pulls, 100_000, 10);
    assert_eq!(evicted, ["cold"]);
    // b's tag goes; d was pulled by digest long ago; e recently.
    assert_eq!(forgotten, ["sha256:b", "sha256:d"]);
    let mut rule = UpstreamRule::new("hub", "https://x");
    assert_eq!(rule.pull_note_interval(), PULL_NOTE_INTERVAL);
    rule.evict_after = 8;
    assert_eq!(rule.pull_note_interval(), 2);
    let upstreams = Upstreams::new(vec![rule]).expect("valid");
    assert!(upstreams.evicts());
    assert!(upstreams.owner(&name("hub/app")).is_some());
    assert!(upstreams.owner(&name("other/app")).is_none());
    assert!(upstreams.pull_note_due("k", 100, 2));
    assert!(!upstreams.pull_note_due("k", 101, 2));
    assert!(upstreams.pull_note_due("k", 102, 2));
}

#[test]
fn open_requests_are_counted_per_url() {
    let mut rule = UpstreamRule::new("hub", "https://x");
    rule.max_concurrent = 2;
    let upstreams = Upstreams::new(vec![rule]).expect("valid");
    assert!(upstreams.enter("https://x", 2));
    assert!(upstreams.enter("https://x", 2));
    assert!(!upstreams.enter("https://x", 2));
    assert!(upstreams.enter("https://y", 2));
    upstreams.leave("https://x");
    assert!(upstreams.enter("https://x", 2));
    let parsed =
        Upstreams::from_json(r#"[{"prefix": "a", "urls": ["http://a"], "max-concurrent": 4}]"#)
            .expect("valid");
    assert_eq!(parsed.rule(0).max_concurrent, 4);
    assert!(
        Upstreams::from_json(r#"[{"prefix": "a", "urls": ["http://a"], "max-concurrent": "x"}]"#)
            .is_err()
    );
}
