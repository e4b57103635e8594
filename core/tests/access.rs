//! The access hook: every operation passes the host's check, with the right action.

use std::sync::{Arc, Mutex};

use berth::{
    AccessPolicy, Action, Decision, MemoryStorage, Method, Options, ReadOnly, Registry,
    RepositoryName, RequestHead, empty_body, full_body,
};

fn options(access: Arc<dyn AccessPolicy>) -> Options {
    let mut options = Options::new(Arc::new(|| "id".to_owned()), Arc::new(|| 0));
    options.access = access;
    options
}

async fn status(
    registry: &Registry<MemoryStorage>,
    method: Method,
    target: &str,
    body: &str,
) -> u16 {
    let head = RequestHead::from_target(method, target);
    let body = if body.is_empty() {
        empty_body()
    } else {
        full_body(body.as_bytes().to_vec())
    };
    registry.handle(head, body).await.status
}

#[tokio::test]
async fn read_only_refuses_pushes_and_deletes_with_405() {
    let registry = Registry::new(MemoryStorage::new(), options(Arc::new(ReadOnly)));
    assert_eq!(status(&registry, Method::Get, "/v2/", "").await, 200);
    assert_eq!(
        status(&registry, Method::Post, "/v2/r/blobs/uploads/", "").await,
        405
    );
    assert_eq!(
        status(&registry, Method::Put, "/v2/r/manifests/v1", "{}").await,
        405
    );
    assert_eq!(
        status(&registry, Method::Delete, "/v2/r/manifests/v1", "").await,
        405
    );
    assert_eq!(
        status(&registry, Method::Get, "/v2/r/tags/list", "").await,
        404
    );
}

#[tokio::test]
async fn the_hook_sees_repository_and_action() {
    type Seen = Vec<(Option<String>, Action)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let log = Arc::clone(&seen);
    let hook = move |_: &RequestHead, repository: Option<&RepositoryName>, action: Action| {
        log.lock()
            .unwrap()
            .push((repository.map(|r| r.to_string()), action));
        match repository.map(RepositoryName::as_str) {
            Some("secret") => Decision::Unauthorized {
                challenge: r#"Bearer realm="https://auth.example/token",service="berth""#.into(),
            },
            Some("forbidden") => Decision::Denied,
            _ => Decision::Allow,
        }
    };
    let registry = Registry::new(MemoryStorage::new(), options(Arc::new(hook)));

    let response = registry
        .handle(
            RequestHead::new(Method::Get, "/v2/secret/tags/list"),
            empty_body(),
        )
        .await;
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("WWW-Authenticate"),
        Some(r#"Bearer realm="https://auth.example/token",service="berth""#)
    );
    assert_eq!(
        status(&registry, Method::Delete, "/v2/forbidden/manifests/x", "").await,
        403
    );
    assert_eq!(
        status(&registry, Method::Get, "/v2/_catalog", "").await,
        200
    );

    // A mount from a repository the caller may not pull from falls back to a plain upload.
    let digest = berth::Algorithm::Sha256.digest(b"x");
    assert_eq!(
        status(
            &registry,
            Method::Post,
            &format!("/v2/open/blobs/uploads/?digest={digest}"),
            "x"
        )
        .await,
        201
    );
    let target = format!("/v2/other/blobs/uploads/?mount={digest}&from=forbidden");
    assert_eq!(status(&registry, Method::Post, &target, "").await, 202);

    let seen = seen.lock().unwrap();
    assert!(seen.contains(&(Some("secret".into()), Action::Pull)));
    assert!(seen.contains(&(Some("forbidden".into()), Action::Delete)));
    assert!(
        seen.contains(&(None, Action::Catalog)),
        "the catalog is checked with no repository, as the catalog"
    );
    assert!(seen.contains(&(Some("other".into()), Action::Push)));
    assert!(
        seen.contains(&(Some("forbidden".into()), Action::Pull)),
        "the mount source is checked"
    );
}

/// The rules-backed hook through the registry: who may pull and push what, the challenge a
/// refused client is sent, and nothing stored by a refused push.
#[tokio::test]
async fn rules_decide_through_the_registry() {
    use base64::Engine as _;
    use berth::auth::{Authenticator, Htpasswd, Rules, RulesPolicy};

    let users = "alice:$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK
carol:$2y$04$F42Zc9fKY4hSGHlgq6n2xuppaPxbbyb/LWbZHUDrJ2l8ZiVtHmnvq
";
    let policy = RulesPolicy::new(
        Authenticator::new().with_users(Arc::new(Htpasswd::parse(users).unwrap())),
        Rules::from_json(
            r#"{"repositories": {"team-a/**": {"policies": [
                {"users": ["alice", "carol"], "actions": ["pull", "push"]}]}}}"#,
        )
        .unwrap(),
        "berth",
        Arc::new(|| 0),
    );
    let mut options = options(Arc::new(policy));
    // Several sessions are opened here: each needs an id of its own.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    options.ids = Arc::new(move || {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("id{n}")
    });
    let registry = Registry::new(MemoryStorage::new(), options);
    let alice = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let send = |method: Method, target: &str, credentials: Option<&str>, body: &str| {
        let mut head = RequestHead::from_target(method, target);
        if let Some(credentials) = credentials {
            head = head.with_header("Authorization", credentials);
        }
        let body = if body.is_empty() {
            empty_body()
        } else {
            full_body(body.as_bytes().to_vec())
        };
        registry.handle(head, body)
    };

    let ping = send(Method::Get, "/v2/", None, "").await;
    assert_eq!(ping.status, 401);
    assert_eq!(
        ping.header("WWW-Authenticate"),
        Some(r#"Basic realm="berth""#)
    );
    assert_eq!(
        send(Method::Get, "/v2/", Some(&alice), "").await.status,
        200
    );

    let digest = berth::Algorithm::Sha256.digest(b"layer");
    let push = |repository: &str| format!("/v2/{repository}/blobs/uploads/?digest={digest}");
    assert_eq!(
        send(Method::Post, &push("team-a/app"), Some(&alice), "layer")
            .await
            .status,
        201
    );
    // Elsewhere alice is known but not allowed: 403, and nothing is stored there.
    assert_eq!(
        send(Method::Post, &push("team-b/app"), Some(&alice), "layer")
            .await
            .status,
        403
    );
    assert_eq!(
        send(Method::Post, &push("team-a/app"), None, "layer")
            .await
            .status,
        401
    );
    let blob = |repository: &str| format!("/v2/{repository}/blobs/{digest}");
    assert_eq!(
        send(Method::Head, &blob("team-a/app"), Some(&alice), "")
            .await
            .status,
        200
    );
    assert_eq!(
        send(Method::Head, &blob("team-a/app"), None, "")
            .await
            .status,
        401
    );
    // An upload session answers only the user who opened it: to carol, who may push here
    // too, alice's session does not exist.
    let carol = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("carol:pw")
    );
    let started = send(
        Method::Post,
        "/v2/team-a/app/blobs/uploads/",
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(started.status, 202);
    let location = started.header("Location").unwrap().to_owned();
    for method in [Method::Get, Method::Patch, Method::Delete] {
        let refused = send(method, &location, Some(&carol), "x").await;
        assert_eq!(refused.status, 404, "{method:?}");
    }
    assert_eq!(
        send(Method::Patch, &location, Some(&alice), "x")
            .await
            .status,
        202
    );
    assert_eq!(
        send(Method::Get, &location, Some(&alice), "").await.status,
        204
    );
    // alice may push but not overwrite: a new tag, and the same manifest again, are fine;
    // moving the tag to another manifest is refused, and the tag stays where it was.
    let manifest = |note: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":5}},"layers":[],"annotations":{{"note":"{note}"}}}}"#
        )
    };
    let put = |body: String| {
        let head = RequestHead::from_target(Method::Put, "/v2/team-a/app/manifests/v1")
            .with_header("Authorization", alice.as_str())
            .with_header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
        registry.handle(head, full_body(body.into_bytes()))
    };
    assert_eq!(put(manifest("one")).await.status, 201);
    assert_eq!(put(manifest("one")).await.status, 201);
    let moved = put(manifest("two")).await;
    assert_eq!(moved.status, 403);
    let tagged = send(Method::Get, "/v2/team-a/app/manifests/v1", Some(&alice), "").await;
    assert_eq!(
        tagged.header("Docker-Content-Digest"),
        Some(
            berth::Algorithm::Sha256
                .digest(manifest("one").as_bytes())
                .as_str()
        )
    );
    // A mount without `from` links nothing under a hook that may refuse pulls: a new
    // session instead, even for a blob the caller could pull.
    let automatic = format!("/v2/team-a/other/blobs/uploads/?mount={digest}");
    assert_eq!(
        send(Method::Post, &automatic, Some(&alice), "")
            .await
            .status,
        202
    );
    let from = format!("/v2/team-a/other/blobs/uploads/?mount={digest}&from=team-a/app");
    assert_eq!(
        send(Method::Post, &from, Some(&alice), "").await.status,
        201
    );
    {
        use berth::storage::StorageExt;
        let team_b = registry
            .storage()
            .list_all("docker/registry/v2/repositories/team-b/")
            .await
            .unwrap();
        assert!(team_b.is_empty(), "a refused push left {team_b:?}");
    }
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:wrong")
    );
    assert_eq!(
        send(Method::Head, &blob("team-a/app"), Some(&wrong), "")
            .await
            .status,
        401
    );
}

/// Immutable tags: pushed once, then neither moved nor deleted, by anyone; the manifest a
/// tag holds may be pushed again, and other tags move freely.
#[tokio::test]
async fn immutable_tags_stay() {
    use base64::Engine as _;
    use berth::auth::{Authenticator, Htpasswd, Rules, RulesPolicy};

    let users = "alice:$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK\n";
    let policy = RulesPolicy::new(
        Authenticator::new().with_users(Arc::new(Htpasswd::parse(users).unwrap())),
        Rules::from_json(
            r#"{"repositories": {"team-a/**": {
                "policies": [{"users": ["alice"], "actions": ["pull", "push", "overwrite", "delete"]}],
                "immutable-tags": ["v*"]}}}"#,
        )
        .unwrap(),
        "berth",
        Arc::new(|| 0),
    );
    let registry = Registry::new(MemoryStorage::new(), options(Arc::new(policy)));
    let alice = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let digest = berth::Algorithm::Sha256.digest(b"layer");
    let push = RequestHead::from_target(
        Method::Post,
        &format!("/v2/team-a/app/blobs/uploads/?digest={digest}"),
    )
    .with_header("Authorization", alice.as_str());
    assert_eq!(
        registry
            .handle(push, full_body(b"layer".to_vec()))
            .await
            .status,
        201
    );
    let manifest = |note: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":5}},"layers":[],"annotations":{{"note":"{note}"}}}}"#
        )
    };
    let put = |tag: &str, body: String| {
        let head =
            RequestHead::from_target(Method::Put, &format!("/v2/team-a/app/manifests/{tag}"))
                .with_header("Authorization", alice.as_str())
                .with_header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
        registry.handle(head, full_body(body.into_bytes()))
    };
    assert_eq!(put("v1", manifest("one")).await.status, 201);
    assert_eq!(put("v1", manifest("one")).await.status, 201);
    let moved = put("v1", manifest("two")).await;
    assert_eq!(moved.status, 403);
    let body = match moved.body {
        berth::Body::Full(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    };
    assert!(body.contains("immutable"), "{body}");
    let delete = RequestHead::from_target(Method::Delete, "/v2/team-a/app/manifests/v1")
        .with_header("Authorization", alice.as_str());
    assert_eq!(registry.handle(delete, empty_body()).await.status, 403);
    // Nor is the manifest it holds deleted by digest.
    let held = berth::Algorithm::Sha256.digest(manifest("one").as_bytes());
    let delete =
        RequestHead::from_target(Method::Delete, &format!("/v2/team-a/app/manifests/{held}"))
            .with_header("Authorization", alice.as_str());
    assert_eq!(registry.handle(delete, empty_body()).await.status, 403);
    // Other tags move and go as alice's rights allow.
    assert_eq!(put("latest", manifest("one")).await.status, 201);
    assert_eq!(put("latest", manifest("two")).await.status, 201);
    let delete = RequestHead::from_target(Method::Delete, "/v2/team-a/app/manifests/latest")
        .with_header("Authorization", alice.as_str());
    assert_eq!(registry.handle(delete, empty_body()).await.status, 202);
}

/// Fetches the key set it holds, counting fetches (the host's HTTP client, in the tests).
#[cfg(feature = "tokens")]
struct HeldKeySet {
    text: Mutex<String>,
    fetches: std::sync::atomic::AtomicUsize,
}

#[cfg(feature = "tokens")]
#[async_trait::async_trait]
impl berth::KeySetFetcher for HeldKeySet {
    async fn fetch(&self, url: &str) -> Result<String, String> {
        assert_eq!(url, "https://idp.example/jwks");
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.text.lock().expect("the held key set").clone())
    }
}

#[cfg(feature = "tokens")]
#[tokio::test]
async fn key_sets_at_a_url_are_fetched_seldom_and_failed_logins_wait() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use base64::Engine as _;
    use berth::auth::{Issuing, Settings, SigningKey};

    let issuer = |seed| {
        let key = SigningKey::from_ed25519_seed([seed; 32]);
        Issuing::new(Arc::new(key), "https://idp.example", "svc")
    };
    let (first, second) = (issuer(1), issuer(2));
    let key_set =
        |issuing: &Issuing| serde_json::to_string(&issuing.verifier().keys).expect("a key set");
    let settings = Settings::from_json(
        r#"{"service": "svc",
            "htpasswd": "alice:$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK\n",
            "issuers": [{"issuer": "https://idp.example", "keys-url": "https://idp.example/jwks"}],
            "key-refetch-interval": 10, "login-fail-delay": 3}"#,
    )
    .unwrap();
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = {
        let now = Arc::clone(&now);
        Arc::new(move || now.load(Ordering::Relaxed))
    };
    let held = Arc::new(HeldKeySet {
        text: Mutex::new(key_set(&first)),
        fetches: Default::default(),
    });
    let waits = Arc::new(Mutex::new(Vec::new()));
    let mut options = options(Arc::new(settings.policy(clock.clone()).unwrap()));
    options.clock = clock;
    options.key_sets = Some(held.clone());
    options.pause = Some({
        let waits = Arc::clone(&waits);
        Arc::new(move |duration: Duration| {
            waits.lock().unwrap().push(duration);
            Box::pin(async {}) as futures_util::future::BoxFuture<'static, ()>
        })
    });
    let registry = Registry::new(MemoryStorage::new(), options);
    let ping = |authorization: String| {
        let head = RequestHead::from_target(Method::Get, "/v2/")
            .with_header("Authorization", authorization);
        registry.handle(head, empty_body())
    };
    let bearer = |issuing: &Issuing| {
        format!(
            "Bearer {}",
            issuing.access_token("robot", &[], now.load(Ordering::Relaxed))
        )
    };
    let fetches = || held.fetches.load(Ordering::Relaxed);

    // The first token fetches the set; tokens after it use the keys fetched.
    assert_eq!(ping(bearer(&first)).await.status, 200);
    assert_eq!(ping(bearer(&first)).await.status, 200);
    assert_eq!(fetches(), 1);
    // The issuer rotates a second key in: a token naming it fetches again, once the interval
    // since the last fetch has passed.
    *held.text.lock().unwrap() = format!(
        r#"{{"keys": [{}, {}]}}"#,
        serde_json::to_string(&first.verifier().keys.keys[0]).unwrap(),
        serde_json::to_string(&second.verifier().keys.keys[0]).unwrap()
    );
    assert_eq!(ping(bearer(&second)).await.status, 401);
    assert_eq!(fetches(), 1, "within the interval, nothing is fetched");
    now.fetch_add(10, Ordering::Relaxed);
    assert_eq!(ping(bearer(&second)).await.status, 200);
    assert_eq!(fetches(), 2);
    // An answer that is no key set keeps the keys there are.
    *held.text.lock().unwrap() = "<html>maintenance</html>".into();
    now.fetch_add(10, Ordering::Relaxed);
    let unknown = issuer(3);
    assert_eq!(ping(bearer(&unknown)).await.status, 401);
    assert_eq!(fetches(), 3);
    assert_eq!(ping(bearer(&second)).await.status, 200);
    assert_eq!(ping(bearer(&first)).await.status, 200);

    // Only a 401 to a request with credentials waits, as long as the settings say.
    waits.lock().unwrap().clear();
    let basic = |pair: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        format!("Basic {encoded}")
    };
    assert_eq!(ping(basic("alice:wrong")).await.status, 401);
    assert_eq!(ping(basic("alice:s3cret")).await.status, 200);
    let anonymous = RequestHead::from_target(Method::Get, "/v2/");
    assert_eq!(registry.handle(anonymous, empty_body()).await.status, 401);
    assert_eq!(*waits.lock().unwrap(), [Duration::from_secs(3)]);
}
