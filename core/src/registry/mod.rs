//! The driver: `Registry<S>` is the only code that awaits storage. It parses the request with
//! the pure modules, reads and writes through [`Storage`], and makes no protocol decision the
//! pure layer could make instead.
//!
//! # Drive rule
//!
//! A host calls [`Registry::handle`] once per HTTP request with the request head and its body
//! as a stream of chunks, then writes the [`Response`]'s status and headers and streams its
//! body. Memory per request is bounded by two upload parts, one being written while the next is
//! received (see [`Options::part_size`]); three with [`Options::hash_offload`], which hashes
//! up to two parts behind the one arriving, and may go on hashing them for a moment after the
//! chunk's response, until the upload's next chunk joins them.

mod blobs;
mod catalog;
mod health;
mod index;
mod leases;
mod lifecycle;
mod manifests;
mod proxy;
mod quota;
mod referrers;
mod repository;
mod tags;
mod uploads;

pub use health::{DEBUG_HEALTH_PATH, HEALTH_PATH, READY_PATH};
pub use leases::LEASE_SECONDS;
pub use lifecycle::{
    CLAIM_SECONDS, Collection, CollectionReport, DEFAULT_GRACE_SECONDS, Scrub, ScrubReport,
};
pub use proxy::MirrorReport;
pub use quota::{NamespaceUsage, QuotaUsage, Usage};

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use crate::access::{AccessPolicy, Action, AllowAll, Decision};
use crate::digest::Digest;
use crate::error::{Error, ErrorCode};
use crate::offload::Offload;
use crate::reference::RepositoryName;
use crate::request::{Method, RequestBody, RequestHead};
use crate::response::Response;
use crate::routes::Route;
use crate::storage::{Key, Storage, StorageError, StorageExt};

/// The default [`Options::part_size`]: small parts keep the storage busy while the network
/// delivers the next (2 MiB: 1.07 GB/s for a one-PUT push to the filesystem against 1.01 GB/s
/// at 8 MiB, at half the memory; object stores raise it to their minimum, 5 MiB on S3).
pub const DEFAULT_PART_SIZE: usize = 2 * 1024 * 1024;

/// Produces ids unique across every instance that shares the storage (upload sessions, lease
/// nonces); the host supplies randomness.
pub type IdSource = Arc<dyn Fn() -> String + Send + Sync>;
/// Tells the time in seconds since the Unix epoch; the host supplies the clock.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;
/// Waits for the given time; the host supplies the timer.
pub type Pause = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// Waits on tokio's timer (the runtime must have its time driver enabled).
#[cfg(feature = "fs")]
pub fn tokio_timer() -> Pause {
    Arc::new(|duration| Box::pin(tokio::time::sleep(duration)))
}

/// Where the access hook's token service answers ([`AccessPolicy::token_service`]).
pub const TOKEN_PATH: &str = "/token";

/// Where the token service publishes its public keys (a JWKS), for other registries that
/// verify its tokens (distribution v3's `auth.token.jwks`).
pub const TOKEN_KEYS_PATH: &str = "/token/keys";

/// How a registry behaves. Build with [`Options::new`] and adjust fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// Largest manifest accepted, in bytes; larger ones get 413.
    pub manifest_limit: usize,
    /// Upload part size (raised to the storage's minimum). An upload request writes one part
    /// while it receives the next, so it holds at most two parts in memory (three with a
    /// [`Options::hash_offload`]).
    pub part_size: usize,
    /// Whether `?mount=<digest>` without `from` links any blob the registry already has.
    /// Only while the access hook answers everyone alike
    /// ([`AccessPolicy::decides_per_caller`]): otherwise such a mount answers with an upload
    /// session instead.
    pub automatic_mount: bool,
    /// Whether DELETE is allowed (registry:2's `delete.enabled`); if not, 405.
    pub delete_enabled: bool,
    /// Whether an image manifest's config and layers must exist before it is accepted.
    pub require_manifest_blobs: bool,
    /// How long (seconds) a request may hold an upload session while it writes parts, on
    /// storage whose parts are positional; a request that dies frees it after this long.
    pub upload_lease: u64,
    /// When set, a blob GET is answered with a 307 redirect to a URL the storage signs for
    /// this many seconds (S3 presigned URLs), so blob bytes bypass the registry. Off by
    /// default; storage that cannot sign is served directly.
    pub blob_redirect: Option<u64>,
    /// The largest chunk a PATCH may carry, advertised as `OCI-Chunk-Max-Length`, for hosts
    /// whose platform limits request bodies; larger chunks get 413.
    pub chunk_max_length: Option<u64>,
    /// Where an upload's parts are hashed while the body goes on arriving: one piece of work
    /// per upload whose chunk has more than one part, which runs until the body ends or, where
    /// the storage reads parts back, on into the upload's next chunk. `None`
    /// (the default) hashes each chunk on the receiving task as it arrives. `berth serve` and
    /// the C library use tokio's blocking pool ([`crate::offload::tokio_blocking_pool`]).
    pub hash_offload: Option<Offload>,
    /// The timer a request waits on while another one holds the lease on a manifest or tag it
    /// changes (rare: two changes of one digest or tag at once). `None` (the default) tries
    /// again at the pace of storage reads. `berth serve` and the C library use
    /// [`tokio_timer`].
    pub pause: Option<Pause>,
    /// Where the registry reports what its responses cannot carry (entries an index rebuild
    /// left out). `None` (the default) drops them.
    pub notices: Option<crate::NoticeSink>,
    /// The access hook.
    pub access: Arc<dyn AccessPolicy>,
    /// Records who references and who links each digest, so that
    /// [`Registry::collect_garbage`] can delete what nothing needs while pushes go on (see
    /// the `lifecycle` module). Every instance over a storage must have it on before the
    /// first collection. Costs a few small writes per manifest push and per blob upload.
    /// Default: off.
    pub track_references: bool,
    /// Retention rules ([`crate::retention`]): which tags collection steps remove. Default:
    /// none.
    pub retention: Arc<crate::retention::Retention>,
    /// Quota rules ([`crate::quota`]): how many bytes repositories and namespaces may hold.
    /// With rules set, each link writes a small charge key first. Default: none.
    pub quotas: Arc<crate::quota::Quotas>,
    /// The HTTP client that fetches the key sets the access hook wants (token issuers'
    /// keys at URLs). `None` (the default) fetches nothing: such issuers keep the keys the
    /// host gave them.
    pub key_sets: Option<Arc<dyn crate::KeySetFetcher>>,
    /// Pull-through cache rules ([`crate::proxy`]): which repositories are cached from
    /// which upstream registries. Default: none. Needs [`Options::upstream_client`].
    pub upstreams: Arc<crate::proxy::Upstreams>,
    /// The HTTP client that fetches from upstreams. `None` (the default): cached
    /// repositories serve what they hold, as if every upstream were down.
    pub upstream_client: Option<Arc<dyn crate::proxy::UpstreamClient>>,
    /// Upload id source.
    pub ids: IdSource,
    /// Clock.
    pub clock: Clock,
}

impl Options {
    /// Defaults, with the host's id source and clock.
    pub fn new(ids: IdSource, clock: Clock) -> Self {
        Self {
            manifest_limit: crate::manifest::DEFAULT_MANIFEST_LIMIT,
            part_size: DEFAULT_PART_SIZE,
            automatic_mount: true,
            delete_enabled: true,
            require_manifest_blobs: true,
            chunk_max_length: None,
            blob_redirect: None,
            upload_lease: 15 * 60,
            hash_offload: None,
            pause: None,
            notices: None,
            access: Arc::new(AllowAll),
            track_references: false,
            retention: Arc::default(),
            quotas: Arc::default(),
            key_sets: None,
            upstreams: Arc::default(),
            upstream_client: None,
            ids,
            clock,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("manifest_limit", &self.manifest_limit)
            .field("part_size", &self.part_size)
            .field("automatic_mount", &self.automatic_mount)
            .field("delete_enabled", &self.delete_enabled)
            .field("require_manifest_blobs", &self.require_manifest_blobs)
            .field("chunk_max_length", &self.chunk_max_length)
            .field("upload_lease", &self.upload_lease)
            .field("blob_redirect", &self.blob_redirect)
            .field("hash_offload", &self.hash_offload.is_some())
            .field("pause", &self.pause.is_some())
            .field("notices", &self.notices.is_some())
            .field("key_sets", &self.key_sets.is_some())
            .field("track_references", &self.track_references)
            .field("retention", &self.retention)
            .field("quotas", &self.quotas)
            .field("upstreams", &self.upstreams.rules().len())
            .finish_non_exhaustive()
    }
}

/// An OCI registry over a storage backend.
#[derive(Debug)]
pub struct Registry<S> {
    /// Shared with response bodies that read more than one span (`multipart/byteranges`).
    storage: Arc<S>,
    options: Options,
    /// Repositories this registry has seen in the catalog index. Catalog entries are never
    /// removed, so what is here needs no second look at storage.
    cataloged: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Hashers still at work on chunks already acknowledged.
    live_hashes: Arc<uploads::LiveHashes>,
    /// Whether this registry looked whether the storage was fresh when it first tracked a
    /// write (see `lifecycle.rs`), so that its tracked writes need not look again.
    references_complete: Arc<std::sync::atomic::AtomicBool>,
}

/// A clone shares everything with the original (storage, options, what it remembers): a
/// response body that goes on working after [`Registry::handle`] returns (a pull-through
/// fill) owns one.
impl<S> Clone for Registry<S> {
    fn clone(&self) -> Self {
        Self {
            storage: Arc::clone(&self.storage),
            options: self.options.clone(),
            cataloged: Arc::clone(&self.cataloged),
            live_hashes: Arc::clone(&self.live_hashes),
            references_complete: Arc::clone(&self.references_complete),
        }
    }
}

impl<S: Storage> Registry<S> {
    /// A registry over `storage`.
    pub fn new(storage: S, options: Options) -> Self {
        Self {
            storage: Arc::new(storage),
            options,
            cataloged: Default::default(),
            live_hashes: Default::default(),
            references_complete: Default::default(),
        }
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        self.storage.as_ref()
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Reports `notice` to the host, if it listens.
    pub(crate) fn notify(&self, notice: crate::Notice) {
        if let Some(sink) = &self.options.notices {
            sink(&notice);
        }
    }

    /// Answers one request. Never fails: every error becomes a spec error response.
    pub async fn handle(&self, head: RequestHead, body: RequestBody) -> Response {
        // A length that is no byte count (too large for one, or not digits), or lengths that
        // disagree (RFC 9112 §6.3: the framing is invalid), are refused without reading or
        // draining the body: a host that trusted one would wait for bytes that never come, or
        // take a body of another length than the client meant.
        if let Err(lengths) = agreed_content_length(&head) {
            return error_response(&Error::new(
                ErrorCode::SizeInvalid,
                format!("Content-Length {lengths:?} is not one byte count"),
            ));
        }
        let is_head = head.method == Method::Head;
        let sent_credentials = head.header("authorization").is_some();
        self.fetch_key_sets(&head).await;
        // Handlers and the drain below may both look for the end of the body; a fused
        // stream answers `None` again rather than panic, whatever stream the host passed.
        let mut body: RequestBody = Box::pin(body.fuse());
        let response = match self.dispatch(&head, &mut body).await {
            Ok(response) => response,
            Err(error) => error_response(&error),
        };
        drain(body).await;
        if let (Some(delay), Some(pause)) = (
            self.login_fail_delay(sent_credentials, response.status),
            &self.options.pause,
        ) {
            pause(delay).await;
        }
        if is_head {
            response.without_body()
        } else {
            response
        }
    }

    /// Fetches the key sets the access hook wants before it decides `head` (a token names a
    /// key no issuer is known to have); a set that cannot be fetched is reported, and the
    /// keys fetched before stay.
    async fn fetch_key_sets(&self, head: &RequestHead) {
        let Some(fetcher) = &self.options.key_sets else {
            return;
        };
        for source in self.options.access.key_sets_wanted(head) {
            let accepted = match fetcher.fetch(&source.url).await {
                Ok(text) => self.options.access.accept_key_set(&source, &text),
                Err(reason) => Err(reason),
            };
            if let Err(reason) = accepted {
                self.notify(crate::Notice::KeySetUnavailable {
                    url: source.url,
                    reason,
                });
            }
        }
    }

    /// How long to hold back a response of `status` to a request that did or did not send
    /// credentials: the access hook's delay after a failed login, for a 401 to a request
    /// that sent some. [`Registry::handle`] waits on [`Options::pause`]; hosts without one
    /// (WebAssembly) wait this long themselves.
    pub fn login_fail_delay(&self, sent_credentials: bool, status: u16) -> Option<Duration> {
        let delay = self.options.access.login_fail_delay();
        (status == 401 && sent_credentials && !delay.is_zero()).then_some(delay)
    }

    async fn dispatch(
        &self,
        head: &RequestHead,
        body: &mut RequestBody,
    ) -> Result<Response, Error> {
        let method = head.method;
        if let Some(answer) = self.probe(method, &head.path).await {
            return Ok(answer);
        }
        if head.path == TOKEN_PATH || head.path == TOKEN_KEYS_PATH {
            return self.token_service(head, body).await;
        }
        let route = Route::parse(method, &head.path)?;
        let (route, cached) = self.route_cached(head, route);

        if !route.allows(method) {
            return Err(Error::new(
                ErrorCode::Unsupported,
                match method {
                    Method::Other => "this method is not supported on this endpoint".to_owned(),
                    known => format!("{known} is not supported on this endpoint"),
                },
            ));
        }
        let action = match (&route, method) {
            (Route::Catalog, _) => Action::Catalog,
            (Route::Repository { .. } | Route::Usage { .. }, _) => Action::Admin,
            // Cancelling an upload removes nothing stored: it is the pusher's own business.
            (Route::Upload { .. }, Method::Delete) => Action::Push,
            (_, Method::Get | Method::Head) => Action::Pull,
            (_, Method::Delete) => Action::Delete,
            _ => Action::Push,
        };
        self.authorize(head, route.repository(), action)
            .map_err(|refused| self.mount_challenge(head, &route, refused))?;
        let namespace = cached.as_ref().and_then(|routed| routed.namespace.clone());
        let answered = match &cached {
            Some(routed) => self.serve_cached(head, &route, routed).await,
            None => None,
        };
        let response = match answered {
            Some(answered) => answered?,
            None => self.serve(head, route, body).await?,
        };
        Ok(match namespace {
            Some(namespace) => response.with_header("OCI-Namespace", namespace),
            None => response,
        })
    }

    /// Answers an authorized request for a route.
    async fn serve(
        &self,
        head: &RequestHead,
        route: Route,
        body: &mut RequestBody,
    ) -> Result<Response, Error> {
        let method = head.method;
        match route {
            Route::ApiVersion => Ok(Response::json(200, b"{}".to_vec())),
            Route::Catalog => self.catalog(head).await,
            Route::Tags { name } => self.list_tags(head, &name).await,
            Route::Referrers { name, digest } => self.referrers(head, &name, &digest).await,
            Route::Manifest { name, reference } => match method {
                Method::Put => self.put_manifest(head, &name, &reference, body).await,
                Method::Delete => self.delete_manifest(&name, &reference).await,
                _ => self.get_manifest(&name, &reference).await,
            },
            Route::Blob { name, digest } => match method {
                Method::Delete => self.delete_blob(&name, &digest).await,
                _ => self.get_blob(head, &name, &digest).await,
            },
            Route::StartUpload { name } => self.start_upload(head, &name, body).await,
            Route::Repository { name } => self.delete_repository(&name).await,
            Route::Usage { name } => self.usage_response(&name).await,
            Route::Upload { name, id } => {
                self.check_upload_owner(head, &name, &id).await?;
                match method {
                    Method::Patch => self.patch_upload(head, &name, &id, body).await,
                    Method::Put => self.finish_upload(head, &name, &id, body).await,
                    Method::Delete => self.cancel_upload(&name, &id).await,
                    _ => self.upload_status(&name, &id).await,
                }
            }
        }
    }

    /// `/v2/_usage/<name>`: the usage report as JSON.
    async fn usage_response(&self, name: &RepositoryName) -> Result<Response, Error> {
        let usage = self.usage(name).await?;
        let body = serde_json::to_vec(&usage)
            .map_err(|e| Error::new(ErrorCode::Unknown, format!("cannot encode usage: {e}")))?;
        Ok(Response::json(200, body))
    }

    /// A refused mount (`?mount=&from=`) that logging in would allow is challenged for every
    /// scope it needs, the source's `pull` included, so the client's one token covers all.
    fn mount_challenge(&self, head: &RequestHead, route: &Route, refused: Error) -> Error {
        let Route::StartUpload { name } = route else {
            return refused;
        };
        if refused.code() != ErrorCode::Unauthorized {
            return refused;
        }
        let source =
            crate::http::query(head, "from").and_then(|from| from.parse::<RepositoryName>().ok());
        match (source, crate::http::query(head, "mount")) {
            (Some(source), Some(_)) => match self.options.access.check_mount(head, name, &source) {
                Decision::Unauthorized { challenge } => unauthorized(Action::Push, challenge),
                _ => refused,
            },
            _ => refused,
        }
    }

    /// `/token`: the access hook's token service, when it runs one.
    async fn token_service(
        &self,
        head: &RequestHead,
        body: &mut RequestBody,
    ) -> Result<Response, Error> {
        let form = match head.method {
            Method::Get => Bytes::new(),
            Method::Post => read_body(body, crate::auth::TOKEN_FORM_LIMIT).await?,
            _ => Bytes::new(),
        };
        let answer = self.options.access.token_service(head, &form);
        match (answer, head.method) {
            (None, _) => Err(crate::routes::not_found()),
            (Some(answer), Method::Get | Method::Post) => Ok(answer),
            (Some(_), _) => Err(Error::new(
                ErrorCode::Unsupported,
                "the token service answers GET and POST",
            )),
        }
    }

    fn authorize(
        &self,
        head: &RequestHead,
        repository: Option<&RepositoryName>,
        action: Action,
    ) -> Result<(), Error> {
        match self.options.access.check(head, repository, action) {
            Decision::Allow => Ok(()),
            Decision::Unauthorized { challenge } => Err(unauthorized(action, challenge)),
            Decision::Denied => Err(Error::new(
                ErrorCode::Denied,
                format!("not allowed to {action} here"),
            )),
            Decision::Unsupported => Err(Error::new(
                ErrorCode::Unsupported,
                format!("this registry does not allow {action}"),
            )),
        }
    }

    /// Reads a `link` file: the digest it holds, or `None` when there is no link.
    async fn read_link(&self, key: &Key) -> Result<Option<Digest>, Error> {
        match self.storage.read_small(key, 1024).await {
            Ok((_, bytes)) => {
                let text = std::str::from_utf8(&bytes).unwrap_or("").trim();
                let digest = text.parse().map_err(|_| {
                    internal(StorageError::backend(format!("link {key} holds no digest")))
                })?;
                Ok(Some(digest))
            }
            Err(StorageError::NotFound) => Ok(None),
            Err(e) => Err(internal(e)),
        }
    }

    async fn write_link(&self, key: &Key, digest: &Digest) -> Result<(), Error> {
        self.storage
            .put(
                key,
                Bytes::copy_from_slice(digest.as_str().as_bytes()),
                crate::storage::PutMode::Overwrite.into(),
            )
            .await
            .map(drop)
            .map_err(internal)
    }
}

/// 401 `UNAUTHORIZED` with the access hook's challenge (sent as `WWW-Authenticate`).
pub(crate) fn unauthorized(action: Action, challenge: String) -> Error {
    Error::new(
        ErrorCode::Unauthorized,
        format!("authentication required to {action}"),
    )
    .with_detail(serde_json::json!({ "challenge": challenge }))
}

/// The response for an error: its JSON body, and for a 401 the challenge the access hook gave
/// (`WWW-Authenticate`), which clients need to find the token service.
/// The request's body length from every `Content-Length` field (a field may hold a list of
/// equal values, RFC 9110 §8.6), or the values as received when one is no byte count or
/// they disagree.
fn agreed_content_length(head: &RequestHead) -> Result<Option<u64>, Vec<&str>> {
    let fields: Vec<&str> = head
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, value)| value.as_str())
        .collect();
    let mut agreed = None;
    for value in fields.iter().flat_map(|field| field.split(',')) {
        match value.trim().parse::<u64>() {
            Ok(length) if agreed.is_none_or(|agreed| agreed == length) => agreed = Some(length),
            _ => return Err(fields),
        }
    }
    Ok(agreed)
}

fn error_response(error: &Error) -> Response {
    let response = Response::error(error);
    match (
        error.code(),
        error.detail().and_then(|d| d["challenge"].as_str()),
    ) {
        (ErrorCode::Unauthorized, Some(challenge)) => {
            response.with_header("WWW-Authenticate", challenge)
        }
        _ => response,
    }
}

/// A storage failure, reported as the registry's own fault.
pub(crate) fn internal(error: StorageError) -> Error {
    Error::new(ErrorCode::Unknown, format!("storage failure: {error}"))
}

/// Reads a whole small body, refusing more than `limit` bytes with 413.
/// How much of a request body that was answered before it was read (an out-of-order chunk,
/// say) is read and dropped, so that the client, still sending, gets to read the answer.
/// Past this the connection is dropped instead.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

async fn drain(mut body: RequestBody) {
    let mut drained = 0u64;
    while drained <= DRAIN_LIMIT {
        match body.next().await {
            Some(Ok(chunk)) => drained += chunk.len() as u64,
            Some(Err(_)) | None => return,
        }
    }
}

pub(crate) async fn read_body(body: &mut RequestBody, limit: usize) -> Result<Bytes, Error> {
    let mut buffer = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(body_error)?;
        if buffer.len() + chunk.len() > limit {
            return Err(Error::new(
                ErrorCode::SizeInvalid,
                format!("body exceeds the {limit}-byte limit"),
            )
            .with_status(413));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

pub(crate) fn body_error(error: crate::request::BodyError) -> Error {
    Error::new(
        ErrorCode::BlobUploadInvalid,
        format!("request body could not be read: {error}"),
    )
}
