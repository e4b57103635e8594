//! The pull-through cache's driver: repositories the upstream rules ([`crate::proxy`]) route
//! are served from their local copy, filled from the upstream when asked for what they lack.
//!
//! - A manifest by digest, or a blob, once here is served with no upstream call.
//! - A tag is checked upstream with a HEAD (Docker Hub counts only GETs as pulls) at most
//!   every `revalidate` seconds; while the upstream fails, the copy is served for
//!   `stale-if-error` seconds with a `Warning`.
//! - A cold blob is fetched once across every instance: the first request takes a fill
//!   lease in storage and streams the upstream's bytes into an ordinary upload session and
//!   to its client at once; the blob is published only when its digest verifies. Others
//!   wait for it. A fill cut off resumes where its session got to, with a `Range` request.
//! - Pushes to a cached repository are refused (405); deletes remove the local copy.

mod fill;
mod manifests;
mod mirror;

pub use mirror::MirrorReport;

use bytes::Bytes;

use super::{Registry, internal};
use crate::digest::Algorithm;
use crate::error::{Error, ErrorCode};
use crate::layout;
use crate::proxy::{
    DEFAULT_BACKOFF, Routed, UpstreamRequest, UpstreamResponse, bearer_challenge, retry_after,
    token_answer,
};
use crate::request::{Method, RequestHead, percent_encode};
use crate::response::Response;
use crate::routes::Route;
use crate::storage::{PutMode, Storage, StorageError, StorageExt};

/// Why an upstream gave no usable answer.
#[derive(Debug, Clone)]
pub(super) struct UpstreamFailure {
    reason: String,
    /// The upstream said to come back later (429).
    too_many: Option<u64>,
}

impl UpstreamFailure {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            too_many: None,
        }
    }

    /// An answer that is neither the content nor a plain "not found"; a 429 says to come
    /// back in `wait` seconds.
    fn answered(response: &UpstreamResponse, url: &str, wait: u64) -> Self {
        Self {
            reason: format!("{url} answered {}", response.status),
            too_many: (response.status == 429).then_some(wait),
        }
    }

    /// The error a client gets when no cached copy can stand in.
    fn into_error(self) -> Error {
        match self.too_many {
            Some(wait) => Error::new(
                ErrorCode::TooManyRequests,
                format!("the upstream is rate limiting: {}", self.reason),
            )
            .with_detail(serde_json::json!({ "retry_after": wait })),
            None => Error::new(
                ErrorCode::Unknown,
                format!("the upstream is unavailable: {}", self.reason),
            )
            .with_status(502),
        }
    }
}

/// How often a request waiting for its turn at a busy upstream (`max-concurrent`) looks again.
const TURN_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// A request counted open to an upstream, until dropped.
struct OpenRequest {
    upstreams: std::sync::Arc<crate::proxy::Upstreams>,
    url: String,
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.upstreams.leave(&self.url);
    }
}

/// An upstream's body, holding its request's place while it is read.
struct HeldBody {
    body: crate::request::RequestBody,
    _place: OpenRequest,
}

impl futures_util::Stream for HeldBody {
    type Item = Result<Bytes, crate::request::BodyError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.body.as_mut().poll_next(cx)
    }
}

/// The types of manifest a cache asks its upstreams for.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// The most a token service's answer may be.
const TOKEN_ANSWER_LIMIT: usize = 64 * 1024;

impl<S: Storage> Registry<S> {
    /// The route a request takes: a cached repository's endpoints move to its local name.
    pub(super) fn route_cached(&self, head: &RequestHead, route: Route) -> (Route, Option<Routed>) {
        if self.options.upstreams.is_empty() {
            return (route, None);
        }
        let ns = crate::http::query(head, "ns");
        let routed = route
            .repository()
            .and_then(|name| self.options.upstreams.route(name, ns.as_deref()));
        match routed {
            Some(routed) => (route.in_repository(routed.local.clone()), Some(routed)),
            None => (route, None),
        }
    }

    /// Answers a request for a cached repository: pulls from the cache, pushes refused;
    /// `None` for what is served as in any repository (tag lists, referrers, deletes of the
    /// local copy, admin requests).
    pub(super) async fn serve_cached(
        &self,
        head: &RequestHead,
        route: &Route,
        routed: &Routed,
    ) -> Option<Result<Response, Error>> {
        match (route, head.method) {
            (Route::Manifest { reference, .. }, Method::Get | Method::Head) => {
                let served = self.cached_manifest(routed, reference).await;
                let pulled = served.as_ref().ok().and_then(|response| {
                    response
                        .header("Docker-Content-Digest")
                        .and_then(|digest| digest.parse().ok())
                });
                if let Some(digest) = pulled {
                    self.note_pulled(routed, &digest).await;
                }
                Some(served)
            }
            (Route::Blob { digest, .. }, Method::Get | Method::Head) => {
                Some(self.cached_blob(head, routed, digest).await)
            }
            (Route::Manifest { .. } | Route::Blob { .. }, Method::Delete)
            | (Route::Tags { .. } | Route::Referrers { .. }, _)
            | (Route::Repository { .. } | Route::Usage { .. }, _) => None,
            _ => {
                let rule = self.options.upstreams.rule(routed.rule);
                let cache = match rule.prefix.as_str() {
                    "" => "this registry".to_owned(),
                    prefix => format!("{prefix}/"),
                };
                Some(Err(Error::new(
                    ErrorCode::Unsupported,
                    format!(
                        "{cache} is a pull-through cache of {}: push to the upstream instead",
                        rule.urls.join(", ")
                    ),
                )
                .with_status(405)))
            }
        }
    }

    /// Sends a request for `path` (below the upstream's base URL) to the rule's upstreams in
    /// order: with a cached token, or credentials, or none; answering a Bearer challenge by
    /// asking the upstream's token service (the token is kept in storage for every instance).
    /// An upstream that fails (no answer, 429, 5xx) rests for what it asked, or a few
    /// seconds, and the next is tried. Answers other than those are returned as they are.
    pub(super) async fn upstream(
        &self,
        routed: &Routed,
        method: Method,
        path: &str,
        headers: Vec<(String, String)>,
    ) -> Result<UpstreamResponse, UpstreamFailure> {
        if self.options.upstream_client.is_none() {
            return Err(UpstreamFailure::new("no upstream client is configured"));
        }
        let upstreams = &self.options.upstreams;
        let rule = upstreams.rule(routed.rule);
        let scope = format!("repository:{}:pull", routed.remote);
        let mut failure = UpstreamFailure::new("no upstream URL is configured");
        for base in &rule.urls {
            let now = (self.options.clock)();
            if upstreams.is_resting(base, now) {
                failure = UpstreamFailure::new(format!("{base} failed a moment ago"));
                continue;
            }
            let basic = basic_credentials(rule);
            // Named by the credentials too: rules with other credentials (or none) for the
            // same upstream get tokens of their own.
            let token_id = Algorithm::Sha256
                .digest(format!("{base} {scope} {}", basic.as_deref().unwrap_or("")).as_bytes())
                .hex()[..32]
                .to_owned();
            let mut authorization = match self.stored_token(&token_id, now).await {
                Some(token) => Some(format!("Bearer {token}")),
                None => basic.clone(),
            };
            let url = format!("{base}{path}");
            for attempt in 0..2 {
                let mut sent = headers.clone();
                if let Some(authorization) = &authorization {
                    sent.push(("Authorization".into(), authorization.clone()));
                }
                let request = UpstreamRequest {
                    method,
                    url: url.clone(),
                    headers: sent,
                };
                let response = match self.send_within_limit(rule, base, request).await {
                    Ok(response) => response,
                    Err(reason) => {
                        upstreams.rest(base, now + DEFAULT_BACKOFF);
                        failure = UpstreamFailure::new(format!("{url}: {reason}"));
                        break;
                    }
                };
                if response.status == 401 && attempt == 0 {
                    let challenge = response.header("WWW-Authenticate").unwrap_or_default();
                    if let Some(challenge) = bearer_challenge(challenge) {
                        match self
                            .fetch_token(rule, &challenge, &scope, &token_id, now)
                            .await
                        {
                            Ok(token) => authorization = Some(format!("Bearer {token}")),
                            Err(reason) => {
                                failure = reason;
                                break;
                            }
                        }
                        continue;
                    }
                    if basic.is_some() && authorization != basic {
                        authorization = basic.clone();
                        continue;
                    }
                }
                if response.status == 429 || response.status >= 500 {
                    let wait =
                        retry_after(response.header("Retry-After"), now).unwrap_or(DEFAULT_BACKOFF);
                    upstreams.rest(base, now + wait);
                    failure = UpstreamFailure::answered(&response, &url, wait);
                    break;
                }
                upstreams.recovered(base);
                return Ok(response);
            }
        }
        Err(failure)
    }

    /// Sends `request` to the upstream `base` once fewer than the rule's `max-concurrent`
    /// requests to it are open on this instance; the answer's body holds its place until it
    /// is read or dropped.
    async fn send_within_limit(
        &self,
        rule: &crate::proxy::UpstreamRule,
        base: &str,
        request: UpstreamRequest,
    ) -> Result<UpstreamResponse, String> {
        let Some(client) = &self.options.upstream_client else {
            return Err("no upstream client is configured".into());
        };
        if rule.max_concurrent == 0 {
            return client.send(request).await;
        }
        let upstreams = std::sync::Arc::clone(&self.options.upstreams);
        while !upstreams.enter(base, rule.max_concurrent) {
            match &self.options.pause {
                Some(pause) => pause(TURN_POLL).await,
                None => crate::registry::leases::yield_now().await,
            }
        }
        let place = OpenRequest {
            upstreams,
            url: base.to_owned(),
        };
        let mut response = client.send(request).await?;
        let body = std::mem::replace(&mut response.body, crate::request::empty_body());
        response.body = Box::pin(HeldBody {
            body,
            _place: place,
        });
        Ok(response)
    }

    /// A token an instance fetched before and stored, while it is valid.
    async fn stored_token(&self, id: &str, now: u64) -> Option<String> {
        let (_, record) = self
            .storage
            .read_small(&layout::proxy_token(id), TOKEN_ANSWER_LIMIT as u64)
            .await
            .ok()?;
        let record = std::str::from_utf8(&record).ok()?;
        let (expires, token) = record.split_once(' ')?;
        (expires.parse::<u64>().ok()? > now).then(|| token.to_owned())
    }

    /// Asks an upstream's token service for a pull token (with the rule's credentials, if
    /// any) and stores it for every instance until shortly before it expires.
    async fn fetch_token(
        &self,
        rule: &crate::proxy::UpstreamRule,
        challenge: &crate::proxy::BearerChallenge,
        scope: &str,
        id: &str,
        now: u64,
    ) -> Result<String, UpstreamFailure> {
        let Some(client) = &self.options.upstream_client else {
            return Err(UpstreamFailure::new("no upstream client is configured"));
        };
        let mut url = challenge.realm.clone();
        let mut separator = if url.contains('?') { '&' } else { '?' };
        if let Some(service) = &challenge.service {
            url.push_str(&format!("{separator}service={}", percent_encode(service)));
            separator = '&';
        }
        let scope = challenge.scope.as_deref().unwrap_or(scope);
        url.push_str(&format!("{separator}scope={}", percent_encode(scope)));
        let headers = basic_credentials(rule)
            .map(|basic| vec![("Authorization".to_owned(), basic)])
            .unwrap_or_default();
        let mut answer = client
            .send(UpstreamRequest {
                method: Method::Get,
                url: url.clone(),
                headers,
            })
            .await
            .map_err(|reason| UpstreamFailure::new(format!("token service {url}: {reason}")))?;
        if answer.status != 200 {
            return Err(UpstreamFailure::answered(&answer, &url, DEFAULT_BACKOFF));
        }
        let body = super::read_body(&mut answer.body, TOKEN_ANSWER_LIMIT)
            .await
            .map_err(|e| UpstreamFailure::new(format!("token service {url}: {e}")))?;
        let (token, lifetime) = token_answer(&body).ok_or_else(|| {
            UpstreamFailure::new(format!("token service {url} answered no token"))
        })?;
        // Kept a little shorter than it lives, so no instance sends one about to expire.
        let expires = now + lifetime.saturating_sub(lifetime / 10 + 1);
        if expires > now {
            // Best effort: a token not stored is fetched again next time.
            let _ = self
                .storage
                .put(
                    &layout::proxy_token(id),
                    Bytes::from(format!("{expires} {token}")),
                    PutMode::Overwrite.volatile(),
                )
                .await;
        }
        Ok(token)
    }

    /// Reads a small record the cache keeps (`None`: there is none).
    async fn proxy_record(&self, key: &crate::storage::Key) -> Result<Option<String>, Error> {
        match self.storage.read_small(key, 4096).await {
            Ok((_, bytes)) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(StorageError::NotFound) => Ok(None),
            Err(e) => Err(internal(e)),
        }
    }
}

fn basic_credentials(rule: &crate::proxy::UpstreamRule) -> Option<String> {
    use base64::Engine;
    let username = rule.username.as_deref()?;
    let password = rule.password.as_deref().unwrap_or_default();
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    Some(format!("Basic {encoded}"))
}
