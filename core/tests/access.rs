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
        seen.contains(&(None, Action::Pull)),
        "the catalog is checked with no repository"
    );
    assert!(seen.contains(&(Some("other".into()), Action::Push)));
    assert!(
        seen.contains(&(Some("forbidden".into()), Action::Pull)),
        "the mount source is checked"
    );
}
