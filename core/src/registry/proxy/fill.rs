//! Cached blobs: one fill per cold blob across every instance, streamed to the client that
//! asked while it is written into an ordinary upload session.
//!
//! The fill's record, `berth/proxy/fills/<digest>`, is its lease (`<until> <nonce>
//! <session>`): created by the first request, renewed after every span it writes, and
//! taken over once it lapses, together with the upload session it names, which goes on
//! from its offset with an upstream `Range` request. Requests that find it held wait for the
//! blob. The session's parts are written and hashed as the upstream's bytes arrive; the
//! blob is published by the session's finish, which verifies the digest: bytes that do not
//! match are never published, and the client's body ends in an error instead of its last
//! chunk (held back until the digest verifies).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;

use crate::digest::Digest;
use crate::error::{Error, ErrorCode};
use crate::layout;
use crate::proxy::Routed;
use crate::reference::RepositoryName;
use crate::registry::{Registry, internal};
use crate::request::{BodyError, Method, RequestBody, RequestHead, empty_body};
use crate::response::{Body, Response};
use crate::storage::{Durability, Key, PutMode, Storage, StorageError, StorageExt, Version};
use crate::upload::{UploadId, UploadSession};

/// How long a fill's lease lasts; renewed after each span.
const FILL_LEASE_SECONDS: u64 = 60;
/// How much a fill writes between two saves of its session (and renewals of its lease): what
/// a fill cut off loses at most.
const FILL_SPAN: u64 = 16 * 1024 * 1024;
/// How many chunks wait for the client before the fill waits for it.
const TEE_DEPTH: usize = 2;
/// How often a request waiting for another's fill looks whether the blob is there.
const FILL_POLL: Duration = Duration::from_millis(100);

/// A fill this request holds.
struct FillLease {
    key: Key,
    version: Version,
    nonce: String,
    /// The upload session it writes into.
    session: Option<UploadId>,
}

enum Taken {
    Ours(FillLease),
    Held,
}

/// Chunks on their way to the client that asked, while the fill writes them.
type Tee = Arc<Mutex<VecDeque<Bytes>>>;

#[cfg(not(target_arch = "wasm32"))]
type FillFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;
#[cfg(target_arch = "wasm32")]
type FillFuture = Pin<Box<dyn Future<Output = Result<(), Error>>>>;

impl<S: Storage> Registry<S> {
    pub(super) async fn cached_blob(
        &self,
        head: &RequestHead,
        routed: &Routed,
        digest: &Digest,
    ) -> Result<Response, Error> {
        let name = &routed.local;
        let path = format!("/v2/{}/blobs/{digest}", routed.remote);
        let unknown = || {
            Error::new(
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not in {name}"),
            )
        };
        loop {
            if self.links(name, digest).await? {
                return self.get_blob(head, name, digest).await;
            }
            let stored = self.blob_exists(digest).await?;
            if stored || head.method == Method::Head {
                // Stored for another repository: linked here once the upstream says this
                // repository has it too. Not stored, and only its size asked: the upstream's
                // answer is passed on, and the fill waits for a GET.
                let answer = self
                    .upstream(routed, Method::Head, &path, Vec::new())
                    .await
                    .map_err(super::UpstreamFailure::into_error)?;
                match answer.status {
                    200 if stored => {
                        self.link_stored(name, digest).await?;
                        continue;
                    }
                    200 => {
                        let mut response = Response::empty(200)
                            .with_header("Docker-Content-Digest", digest.as_str())
                            .with_header("Content-Type", "application/octet-stream");
                        if let Some(length) = answer.header("Content-Length") {
                            response = response.with_header("Content-Length", length.to_owned());
                        }
                        return Ok(response);
                    }
                    404 => return Err(unknown()),
                    _ => {
                        let url = self.options.upstreams.rule(routed.rule).urls.join(", ");
                        return Err(super::UpstreamFailure::answered(
                            &answer,
                            &url,
                            crate::proxy::DEFAULT_BACKOFF,
                        )
                        .into_error());
                    }
                }
            }
            match self.take_fill(digest).await? {
                Taken::Ours(lease) => return self.fill(head, routed, digest, lease).await,
                Taken::Held => match &self.options.pause {
                    Some(pause) => pause(FILL_POLL).await,
                    None => crate::registry::leases::yield_now().await,
                },
            }
        }
    }

    /// Takes the fill of `digest`: a new one, or one whose holder stopped renewing it (with
    /// the session it wrote into).
    async fn take_fill(&self, digest: &Digest) -> Result<Taken, Error> {
        let key = layout::proxy_fill(digest);
        let nonce = (self.options.ids)();
        let now = (self.options.clock)();
        let record =
            |session: &str| Bytes::from(format!("{} {nonce} {session}", now + FILL_LEASE_SECONDS));
        match self
            .storage
            .put(&key, record("-"), PutMode::Create.volatile())
            .await
        {
            Ok(meta) => {
                return Ok(Taken::Ours(FillLease {
                    key,
                    version: meta.version,
                    nonce,
                    session: None,
                }));
            }
            Err(StorageError::AlreadyExists) => {}
            Err(e) => return Err(internal(e)),
        }
        let (meta, held) = match self.storage.read_small(&key, 4096).await {
            Ok(found) => found,
            Err(StorageError::NotFound) => return Ok(Taken::Held),
            Err(e) => return Err(internal(e)),
        };
        let held = String::from_utf8_lossy(&held).into_owned();
        let mut fields = held.split(' ');
        let until = fields.next().and_then(|until| until.parse::<u64>().ok());
        let session = fields.nth(1).and_then(UploadId::parse);
        if until.is_some_and(|until| until > now) {
            return Ok(Taken::Held);
        }
        let session_field = session.as_ref().map_or("-", UploadId::as_str).to_owned();
        match self
            .storage
            .put(
                &key,
                record(&session_field),
                PutMode::Update(meta.version).volatile(),
            )
            .await
        {
            Ok(meta) => Ok(Taken::Ours(FillLease {
                key,
                version: meta.version,
                nonce,
                session,
            })),
            Err(StorageError::PreconditionFailed | StorageError::NotFound) => Ok(Taken::Held),
            Err(e) => Err(internal(e)),
        }
    }

    /// Renews a fill's lease, naming its session; fails when another request took it over.
    async fn renew_fill(&self, lease: &mut FillLease, until: u64) -> Result<(), Error> {
        let session = lease.session.as_ref().map_or("-", UploadId::as_str);
        let record = Bytes::from(format!("{until} {} {session}", lease.nonce));
        match self
            .storage
            .put(
                &lease.key,
                record,
                PutMode::Update(lease.version.clone()).volatile(),
            )
            .await
        {
            Ok(meta) => {
                lease.version = meta.version;
                Ok(())
            }
            Err(StorageError::PreconditionFailed | StorageError::NotFound) => Err(Error::new(
                ErrorCode::Unknown,
                "another request took this blob's fill over",
            )
            .with_status(503)),
            Err(e) => Err(internal(e)),
        }
    }

    /// Ends a fill: its record goes (best effort: one left behind lapses).
    async fn end_fill(&self, lease: FillLease) {
        if let Ok(meta) = self.storage.head(&lease.key).await
            && meta.version == lease.version
        {
            let _ = self.storage.delete(&lease.key, Durability::Volatile).await;
        }
    }

    /// Fills `digest` as the holder of its fill: streamed to this request's client when it
    /// asked for the whole blob and the fill starts from nothing; otherwise the fill runs to
    /// the end first and the request is served from the copy.
    async fn fill(
        &self,
        head: &RequestHead,
        routed: &Routed,
        digest: &Digest,
        mut lease: FillLease,
    ) -> Result<Response, Error> {
        let name = routed.local.clone();
        let now = (self.options.clock)();
        let path = format!("/v2/{}/blobs/{digest}", routed.remote);
        let mut resumed = None;
        if let Some(id) = &lease.session
            && let Ok((_, session)) = self.load_session(&name, id).await
            && !session.is_claimed(now)
            && session.published().is_none()
        {
            resumed = Some((id.clone(), session.offset()));
        }
        let (mut id, mut offset) = match resumed {
            Some(resumed) => resumed,
            None => (self.new_fill_session(&name, digest, now).await?, 0),
        };
        lease.session = Some(id.clone());
        self.renew_fill(&mut lease, now + FILL_LEASE_SECONDS)
            .await?;
        let range = (offset > 0).then(|| vec![("Range".to_owned(), format!("bytes={offset}-"))]);
        let answer = match self
            .upstream(routed, Method::Get, &path, range.unwrap_or_default())
            .await
        {
            Ok(answer) => answer,
            Err(failure) => {
                self.lapse_fill(lease).await;
                return Err(failure.into_error());
            }
        };
        match answer.status {
            200 | 206 if offset == 0 || answer.status == 206 => {}
            // The upstream sent the whole blob rather than the rest: start over with it.
            200 => {
                let (_, session) = self.load_session(&name, &id).await?;
                self.discard(&session).await;
                let _ = self.end_session(&id).await;
                id = self.new_fill_session(&name, digest, now).await?;
                offset = 0;
                lease.session = Some(id.clone());
                self.renew_fill(&mut lease, now + FILL_LEASE_SECONDS)
                    .await?;
            }
            status => {
                self.lapse_fill(lease).await;
                if status == 404 {
                    return Err(Error::new(
                        ErrorCode::BlobUnknown,
                        format!("blob {digest} is not in {name}"),
                    ));
                }
                let url = self.options.upstreams.rule(routed.rule).urls.join(", ");
                return Err(super::UpstreamFailure::answered(
                    &answer,
                    &url,
                    crate::proxy::DEFAULT_BACKOFF,
                )
                .into_error());
            }
        }
        let length = (answer.status == 200)
            .then(|| answer.header("Content-Length"))
            .flatten()
            .map(str::to_owned);
        let run = FillRun {
            registry: self.clone(),
            name: name.clone(),
            id,
            digest: digest.clone(),
            lease,
            upstream: answer.body,
        };
        if offset == 0 && head.header("Range").is_none() {
            let tee = Tee::default();
            let mut response = Response::empty(200)
                .with_header("Docker-Content-Digest", digest.as_str())
                .with_header("Content-Type", "application/octet-stream");
            if let Some(length) = length {
                response = response.with_header("Content-Length", length);
            }
            response.body = Body::Stream(Box::pin(FillBody {
                fill: Some(Box::pin(run.complete(Some(Arc::clone(&tee))))),
                tee,
                held: None,
                failed: None,
            }));
            return Ok(response);
        }
        run.complete(None).await?;
        self.get_blob(head, &name, digest).await
    }

    async fn new_fill_session(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        now: u64,
    ) -> Result<UploadId, Error> {
        let id = self.new_upload_id(now)?;
        self.open_session(&id, &UploadSession::start(digest.algorithm(), name, now))
            .await?;
        Ok(id)
    }

    /// Lets the next request take a failed fill over at once, with its session.
    async fn lapse_fill(&self, mut lease: FillLease) {
        let _ = self.renew_fill(&mut lease, 0).await;
    }
}

/// A fill under way: the upstream's body going into the session `id`.
struct FillRun<S> {
    registry: Registry<S>,
    name: RepositoryName,
    id: UploadId,
    digest: Digest,
    lease: FillLease,
    upstream: RequestBody,
}

impl<S: Storage> FillRun<S> {
    /// Writes the upstream's body into the session span by span (each a PATCH, saved, the
    /// lease renewed), then finishes the session, which verifies the digest and publishes
    /// the blob. Each chunk also goes to `tee`, when a client waits for it.
    async fn complete(self, tee: Option<Tee>) -> Result<(), Error> {
        let Self {
            registry,
            name,
            id,
            digest,
            mut lease,
            upstream,
        } = self;
        let feed = Arc::new(Mutex::new(Feed {
            upstream,
            carry: None,
            ended: false,
        }));
        let upload = format!("/v2/{name}/blobs/uploads/{}", id.as_str());
        let patch = RequestHead::new(Method::Patch, upload.clone());
        loop {
            let mut span: RequestBody = Box::pin(Span {
                feed: Arc::clone(&feed),
                left: FILL_SPAN,
                tee: tee.clone(),
            });
            let written = registry.patch_upload(&patch, &name, &id, &mut span).await;
            let failed = match written {
                Ok(response) if response.status == 202 => None,
                Ok(response) => Some(Error::new(
                    ErrorCode::Unknown,
                    format!("the fill's upload session answered {}", response.status),
                )),
                Err(error) => Some(error),
            };
            if let Some(error) = failed {
                registry.lapse_fill(lease).await;
                return Err(error);
            }
            if feed.lock().is_ok_and(|feed| feed.ended) {
                break;
            }
            let now = (registry.options.clock)();
            registry
                .renew_fill(&mut lease, now + FILL_LEASE_SECONDS)
                .await?;
        }
        let finish = RequestHead::new(Method::Put, upload).with_query(format!("digest={digest}"));
        let finished = registry
            .finish_upload(&finish, &name, &id, &mut empty_body())
            .await;
        registry.end_fill(lease).await;
        match finished {
            Ok(response) if response.status == 201 => Ok(()),
            Ok(response) => Err(Error::new(
                ErrorCode::Unknown,
                format!("the fill's upload session answered {}", response.status),
            )),
            Err(error) => Err(Error::new(
                ErrorCode::BlobUnknown,
                format!(
                    "the upstream's bytes for {digest} were not published: {}",
                    error.message()
                ),
            )
            .with_status(502)),
        }
    }
}

/// The upstream's body, shared by the spans that take it in turn.
struct Feed {
    upstream: RequestBody,
    /// What the last span could not take of a chunk.
    carry: Option<Bytes>,
    ended: bool,
}

/// One PATCH's body: up to `left` bytes of the upstream's.
struct Span {
    feed: Arc<Mutex<Feed>>,
    left: u64,
    tee: Option<Tee>,
}

impl Stream for Span {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        // The client's body drains the tee, and is polled again whenever it yields a chunk:
        // waiting here needs no wake-up.
        if let Some(tee) = &self.tee
            && tee.lock().is_ok_and(|queue| queue.len() >= TEE_DEPTH)
        {
            return Poll::Pending;
        }
        let Ok(mut feed) = self.feed.lock() else {
            return Poll::Ready(Some(Err("the fill's feed was poisoned".into())));
        };
        let mut chunk = match feed.carry.take() {
            Some(chunk) => chunk,
            None if feed.ended => return Poll::Ready(None),
            None => match feed.upstream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => chunk,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => {
                    feed.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        if chunk.len() as u64 > self.left {
            feed.carry = Some(chunk.split_off(self.left as usize));
        }
        drop(feed);
        self.left -= chunk.len() as u64;
        if let Some(tee) = &self.tee
            && let Ok(mut queue) = tee.lock()
        {
            queue.push_back(chunk.clone());
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

/// The client's body while the fill runs: it drives the fill and passes on each chunk the
/// fill takes, holding the last one back until the digest verifies.
struct FillBody {
    fill: Option<FillFuture>,
    tee: Tee,
    held: Option<Bytes>,
    failed: Option<Error>,
}

impl Stream for FillBody {
    type Item = Result<Bytes, StorageError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let next = self.tee.lock().ok().and_then(|mut queue| queue.pop_front());
            if let Some(chunk) = next {
                match self.held.replace(chunk) {
                    Some(previous) => return Poll::Ready(Some(Ok(previous))),
                    None => continue,
                }
            }
            let Some(fill) = self.fill.as_mut() else {
                if let Some(error) = self.failed.take() {
                    return Poll::Ready(Some(Err(StorageError::backend(error.message()))));
                }
                return Poll::Ready(self.held.take().map(Ok));
            };
            match fill.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    self.fill = None;
                    if let Err(error) = result {
                        self.held = None;
                        self.failed = Some(error);
                    }
                }
                Poll::Pending => {
                    let waiting = self.tee.lock().is_ok_and(|queue| !queue.is_empty());
                    if !waiting {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}
