//! `/healthz`, `/readyz` and registry:2's `/debug/health`: alive whatever the storage does;
//! ready only when the storage answers the probe in time; degraded while upstreams rest.

use std::sync::{Arc, Mutex};

use berth::proxy::Upstreams;
use berth::storage::{Faults, FaultyStorage};
use berth::{MemoryStorage, Method, Notice, Options, Registry, RequestHead, Storage};

mod support;
use support::body_bytes;
use support::images::options;

async fn ask<S: Storage>(registry: &Registry<S>, method: Method, path: &str) -> (u16, String) {
    let response = registry
        .handle(RequestHead::from_target(method, path), berth::empty_body())
        .await;
    let body = body_bytes(response.body).await;
    (
        response.status,
        String::from_utf8(body).expect("a text body"),
    )
}

/// Options that keep the notices they are given.
fn noting(notices: &Arc<Mutex<Vec<Notice>>>) -> Options {
    let mut options = options(false);
    let kept = Arc::clone(notices);
    options.notices = Some(Arc::new(move |notice: &Notice| {
        kept.lock().expect("the notices").push(notice.clone());
    }));
    options
}

#[tokio::test]
async fn a_working_registry_is_alive_and_ready() {
    let registry = Registry::new(MemoryStorage::new(), options(false));
    assert_eq!(
        ask(&registry, Method::Get, "/healthz").await,
        (200, r#"{"status":"ok"}"#.to_owned())
    );
    let ready = r#"{"status":"ready","checks":{"storage":"ok","upstreams":"none"}}"#.to_owned();
    assert_eq!(
        ask(&registry, Method::Get, "/readyz").await,
        (200, ready.clone())
    );
    assert_eq!(
        ask(&registry, Method::Get, "/debug/health").await,
        (200, ready)
    );
    assert_eq!(
        ask(&registry, Method::Head, "/readyz").await,
        (200, String::new())
    );
    let (status, _) = ask(&registry, Method::Post, "/readyz").await;
    assert_eq!(status, 405);
    // Only these paths: a repository named like them is still one.
    let (status, _) = ask(&registry, Method::Get, "/readyz/x").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn failing_storage_is_alive_but_not_ready() {
    let notices = Arc::new(Mutex::new(Vec::new()));
    let failing = FaultyStorage::new(
        MemoryStorage::new(),
        Faults {
            seed: 1,
            per_mille: 1000,
            fail_before: true,
            fail_after: false,
            slow: false,
        },
        None,
    );
    let registry = Registry::new(failing, noting(&notices));
    assert_eq!(ask(&registry, Method::Get, "/healthz").await.0, 200);
    assert_eq!(
        ask(&registry, Method::Get, "/readyz").await,
        (
            503,
            r#"{"status":"unavailable","checks":{"storage":"unreachable","upstreams":"none"}}"#
                .to_owned()
        )
    );
    let notices = notices.lock().expect("the notices");
    assert!(
        matches!(&notices[..], [Notice::StorageUnready { reason }] if reason.contains("failed")),
        "{notices:?}"
    );
}

#[tokio::test]
async fn silent_storage_is_not_ready_once_the_probe_times_out() {
    let notices = Arc::new(Mutex::new(Vec::new()));
    // The storage's delays never end; the registry's timer ends at once.
    let never: berth::Pause = Arc::new(|_| Box::pin(futures_util::future::pending()));
    let silent = FaultyStorage::new(
        MemoryStorage::new(),
        Faults {
            seed: 1,
            per_mille: 1000,
            fail_before: false,
            fail_after: false,
            slow: true,
        },
        Some(never),
    );
    let mut options = noting(&notices);
    options.pause = Some(Arc::new(|_| Box::pin(async {})));
    let registry = Registry::new(silent, options);
    assert_eq!(ask(&registry, Method::Get, "/readyz").await.0, 503);
    let notices = notices.lock().expect("the notices");
    assert!(
        matches!(&notices[..], [Notice::StorageUnready { reason }] if reason.contains("did not answer")),
        "{notices:?}"
    );
}

#[tokio::test]
async fn a_cache_whose_upstreams_rest_is_degraded_but_ready() {
    let upstreams = Upstreams::from_json(
        r#"[{"prefix":"hub","urls":["http://a.test","http://b.test"]},
            {"prefix":"quay","urls":["http://a.test"]}]"#,
    )
    .expect("rules");
    let mut options = options(false);
    let now = (options.clock)();
    upstreams.rest("http://a.test", now + 60);
    options.upstreams = Arc::new(upstreams);
    let registry = Registry::new(MemoryStorage::new(), options);
    assert_eq!(
        ask(&registry, Method::Get, "/readyz").await,
        (
            200,
            r#"{"status":"degraded","checks":{"storage":"ok","upstreams":"degraded: 1 of 2 resting"}}"#
                .to_owned()
        )
    );
}
