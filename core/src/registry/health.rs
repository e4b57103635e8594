//! `/healthz` (the registry answers) and `/readyz` (it can serve: its storage answered a
//! bounded probe; a pull-through cache with resting upstreams is named degraded, since it
//! serves stale copies but fetches nothing new). registry:2's `/debug/health` answers as
//! readiness. They answer anyone, without credentials, as probes of load balancers and
//! orchestrators do, and so name no repository, upstream or storage detail: the reason a
//! probe failed goes to the operator's log ([`Notice::StorageUnready`]).

use std::time::Duration;

use futures_util::future::{Either, select};

use super::Registry;
use crate::Notice;
use crate::request::Method;
use crate::response::Response;
use crate::storage::{Key, Storage, StorageError};

/// Where the registry says it is alive.
pub const HEALTH_PATH: &str = "/healthz";
/// Where the registry says whether it can serve.
pub const READY_PATH: &str = "/readyz";
/// registry:2's health endpoint, answered as [`READY_PATH`].
pub const DEBUG_HEALTH_PATH: &str = "/debug/health";

/// How long the storage may take to answer the readiness probe (hosts with a timer).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The key the probe asks about: it need not exist, the storage must only answer.
const PROBE_KEY: &str = "berth/health/probe";

impl<S: Storage> Registry<S> {
    /// Answers a health or readiness probe, or `None` for any other path.
    pub(super) async fn probe(&self, method: Method, path: &str) -> Option<Response> {
        let ready = match path {
            HEALTH_PATH => false,
            READY_PATH | DEBUG_HEALTH_PATH => true,
            _ => return None,
        };
        if !matches!(method, Method::Get | Method::Head) {
            return Some(
                Response::json(
                    405,
                    br#"{"status":"method not allowed: GET or HEAD"}"#.to_vec(),
                )
                .with_header("Allow", "GET, HEAD"),
            );
        }
        if !ready {
            return Some(Response::json(200, br#"{"status":"ok"}"#.to_vec()));
        }
        let storage = match self.probe_storage().await {
            Ok(()) => "ok",
            Err(reason) => {
                self.notify(Notice::StorageUnready { reason });
                "unreachable"
            }
        };
        let (resting, urls) = self.options.upstreams.resting_urls((self.options.clock)());
        let upstreams = match (urls, resting) {
            (0, _) => "none".to_owned(),
            (_, 0) => "ok".to_owned(),
            (urls, resting) => format!("degraded: {resting} of {urls} resting"),
        };
        let status = match (storage, resting) {
            ("ok", 0) => "ready",
            ("ok", _) => "degraded",
            _ => "unavailable",
        };
        let code = if storage == "ok" { 200 } else { 503 };
        let body = format!(
            r#"{{"status":"{status}","checks":{{"storage":"{storage}","upstreams":"{upstreams}"}}}}"#
        );
        Some(Response::json(code, body.into_bytes()))
    }

    /// Asks the storage about one key, within [`PROBE_TIMEOUT`] when the host gave a timer.
    async fn probe_storage(&self) -> Result<(), String> {
        let key = Key::new(PROBE_KEY);
        let answer = self.storage.head(&key);
        let answer = match &self.options.pause {
            Some(pause) => match select(Box::pin(answer), pause(PROBE_TIMEOUT)).await {
                Either::Left((answer, _)) => answer,
                Either::Right(_) => {
                    return Err(format!(
                        "the storage did not answer within {} s",
                        PROBE_TIMEOUT.as_secs()
                    ));
                }
            },
            None => answer.await,
        };
        match answer {
            Ok(_) | Err(StorageError::NotFound) => Ok(()),
            Err(error) => Err(format!("the storage failed: {error}")),
        }
    }
}
