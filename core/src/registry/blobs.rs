//! Blobs: end-2 (GET, HEAD), end-10 (DELETE), end-4 and end-11 (starting an upload, a one-request
//! push, a cross-repository mount).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};

use super::leases::Leased;
use super::{Registry, internal, unauthorized};
use crate::access::{Action, Decision};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, ErrorCode};
use crate::http::{content_length, created, in_progress, parse_digest, query};
use crate::layout;
use crate::range::{Multipart, RangePlan, plan_ranges};
use crate::reference::RepositoryName;
use crate::request::{Method, RequestBody, RequestHead};
use crate::response::{Body, Response};
use crate::storage::{ByteStream, Durability, Key, PutMode, Storage, StorageError, StorageExt};
use crate::upload::UploadId;
use crate::upload::{ChunkPlan, UploadSession};

impl<S: Storage> Registry<S> {
    pub(super) async fn get_blob(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<Response, Error> {
        let linked = self.links(name, digest).await?;
        let unknown = || {
            Error::new(
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not in {name}"),
            )
        };
        if !linked {
            return Err(unknown());
        }
        let key = layout::blob_data(digest);
        let size = match self.storage.head(&key).await {
            Ok(meta) => meta.size,
            Err(StorageError::NotFound) => return Err(unknown()),
            Err(e) => return Err(internal(e)),
        };
        // Redirect only to content known to exist, so a miss is still the spec's 404.
        if head.method == Method::Get
            && let Some(expires_in) = self.options.blob_redirect
            && let Some(url) = self
                .storage
                .presigned_get(&key, expires_in)
                .await
                .map_err(internal)?
        {
            return Ok(Response::empty(307)
                .with_header("Location", url)
                .with_header("Docker-Content-Digest", digest.as_str())
                .with_header("Content-Length", "0"));
        }
        let unsatisfiable = |why: String| {
            Response::error(&Error::new(ErrorCode::SizeInvalid, why).with_status(416))
                .with_header("Content-Range", format!("bytes */{size}"))
        };
        let range = head.header("Range");
        let plan = match plan_ranges(range, size) {
            Ok(RangePlan::Unsatisfiable) => {
                return Ok(unsatisfiable(format!(
                    "range {:?} not satisfiable: the blob has {size} bytes",
                    range.unwrap_or_default()
                )));
            }
            Ok(plan) => plan,
            Err(e) => {
                return Ok(unsatisfiable(format!(
                    "range {:?}: {e}",
                    range.unwrap_or_default()
                )));
            }
        };
        let described = |status: u16, length: u64| {
            Response::empty(status)
                .with_header("Content-Length", length.to_string())
                .with_header("Docker-Content-Digest", digest.as_str())
                .with_header("ETag", format!("\"{digest}\""))
                .with_header("Accept-Ranges", "bytes")
        };
        let octets = "application/octet-stream";
        let (response, span) = match plan {
            RangePlan::Many(spans) => {
                let multipart = Multipart::new(&spans, size, &digest.hex()[..32]);
                let response = described(206, multipart.len())
                    .with_header("Content-Type", multipart.content_type());
                if head.method == Method::Head {
                    return Ok(response);
                }
                return Ok(Response {
                    body: Body::Stream(multipart_body(Arc::clone(&self.storage), key, multipart)),
                    ..response
                });
            }
            RangePlan::One(span) => (
                described(206, span.end - span.start)
                    .with_header("Content-Type", octets)
                    .with_header(
                        "Content-Range",
                        format!("bytes {}-{}/{size}", span.start, span.end - 1),
                    ),
                Some(span),
            ),
            RangePlan::Whole | RangePlan::Unsatisfiable => (
                described(200, size).with_header("Content-Type", octets),
                None,
            ),
        };
        if head.method == Method::Head || size == 0 {
            return Ok(response);
        }
        let (_, stream) = match self.storage.get(&key, span).await {
            Ok(found) => found,
            Err(StorageError::NotFound) => return Err(unknown()),
            Err(e) => return Err(internal(e)),
        };
        Ok(Response {
            body: Body::Stream(stream),
            ..response
        })
    }

    /// Whether `name` links `digest`: as a layer, or as a manifest (manifests are blobs too;
    /// registry:2 links them as revisions, not layers).
    pub(super) async fn links(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, Error> {
        Ok(self
            .read_link(&layout::layer_link(name, digest))
            .await?
            .is_some()
            || self
                .read_link(&layout::revision_link(name, digest))
                .await?
                .is_some())
    }

    pub(super) async fn delete_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<Response, Error> {
        self.check_delete_enabled()?;
        let link = layout::layer_link(name, digest);
        let lease = self.lease(name, Leased::Layer(digest)).await?;
        let unlinked = async {
            if self.read_link(&link).await?.is_none() {
                return Ok(false);
            }
            // Unlinking removes the blob from the repository; the content stays for other
            // repositories until a garbage collection, as with registry:2.
            self.storage
                .delete(&link, Durability::Durable)
                .await
                .map_err(internal)?;
            self.uncharge(name, digest).await?;
            self.may_collect(digest).await?;
            Ok::<_, Error>(true)
        }
        .await;
        self.give_back(lease).await;
        if !unlinked? {
            return Err(Error::new(
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not in {name}"),
            ));
        }
        Ok(Response::empty(202).with_header("Content-Length", "0"))
    }

    pub(super) fn check_delete_enabled(&self) -> Result<(), Error> {
        if self.options.delete_enabled {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::Unsupported,
                "deletes are disabled on this registry",
            ))
        }
    }

    pub(super) async fn start_upload(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        body: &mut RequestBody,
    ) -> Result<Response, Error> {
        if let Some(mount) = query(head, "mount") {
            // A mount that cannot be done falls back to a new session (spec: end-11).
            if let Ok(digest) = mount.parse::<Digest>()
                && self
                    .try_mount(head, name, &digest, query(head, "from"))
                    .await?
            {
                return Ok(created(name, &digest));
            }
        }
        let announced = query(head, "digest")
            .and_then(|digest| digest.parse::<Digest>().ok())
            .zip(content_length(head))
            .map(|(digest, length)| (length, digest));
        self.check_room(name, announced).await?;
        let now = (self.options.clock)();
        let id = self.new_upload_id(now)?;
        if let Some(digest) = query(head, "digest") {
            let digest = parse_digest(&digest)?;
            let mut session = UploadSession::start(digest.algorithm(), name, now);
            let staging = layout::upload_staging(name, &id);
            let plan = ChunkPlan::whole_body(content_length(head));
            let received = match self.receive(&mut session, &staging, body, &plan).await {
                Ok(received) => received,
                Err(error) => {
                    self.discard(&session).await;
                    return Err(error);
                }
            };
            self.finish(name, &digest, &session, &staging, received.whole)
                .await?;
            return Ok(created(name, &digest));
        }
        let algorithm = match query(head, "digest-algorithm") {
            Some(algorithm) => Algorithm::parse(&algorithm).map_err(|e| {
                Error::new(
                    ErrorCode::DigestInvalid,
                    format!("digest-algorithm {algorithm:?}: {e}"),
                )
            })?,
            None => Algorithm::Sha256,
        };
        let session = UploadSession::start(algorithm, name, now)
            .owned_by(self.options.access.principal(head));
        self.open_session(&id, &session).await?;
        let mut response = in_progress(202, name, &id, &session);
        let min = self.storage.capabilities().min_part_size;
        if min > 0 {
            response = response.with_header("OCI-Chunk-Min-Length", min.to_string());
        }
        if let Some(max) = self.options.chunk_max_length {
            response = response.with_header("OCI-Chunk-Max-Length", max.to_string());
        }
        Ok(response)
    }

    /// A new upload id, starting with the time so that session records list in the order
    /// they began.
    pub(super) fn new_upload_id(&self, now: u64) -> Result<UploadId, Error> {
        UploadId::parse(&format!("{now:016}-{}", (self.options.ids)())).ok_or_else(|| {
            Error::new(
                ErrorCode::Unknown,
                "the host's upload id source produced an invalid id",
            )
        })
    }

    /// Writes a new session's record.
    pub(super) async fn open_session(
        &self,
        id: &UploadId,
        session: &UploadSession,
    ) -> Result<(), Error> {
        self.storage
            .put(
                &layout::upload_session(id),
                session.encode(),
                PutMode::Create.volatile(),
            )
            .await
            .map(drop)
            .map_err(internal)
    }

    /// Links `digest` into `name` from `from` (or, with automatic mounts, from anywhere).
    async fn try_mount(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        digest: &Digest,
        from: Option<String>,
    ) -> Result<bool, Error> {
        let mut source_link = None;
        let available = match from {
            Some(from) => {
                let Ok(source) = from.parse::<RepositoryName>() else {
                    return Ok(false);
                };
                match self.options.access.check_mount(head, name, &source) {
                    Decision::Allow => {}
                    // A new token would let it: the client asks for one, then again.
                    Decision::Unauthorized { challenge } => {
                        return Err(unauthorized(Action::Pull, challenge));
                    }
                    _ => return Ok(false),
                }
                let link = layout::layer_link(&source, digest);
                let linked = self.read_link(&link).await?.is_some();
                source_link = Some(link);
                linked && self.blob_exists(digest).await?
            }
            None if !self.options.automatic_mount => false,
            None if !self.options.access.decides_per_caller() => self.blob_exists(digest).await?,
            // With logins, only from a repository the caller may pull: the link entries
            // name the repositories that hold the blob.
            None if self.options.track_references => {
                match self.pullable_source(head, digest).await? {
                    Some(link) => {
                        source_link = Some(link);
                        self.blob_exists(digest).await?
                    }
                    None => false,
                }
            }
            None => false,
        };
        if available && self.options.track_references {
            // Looked up again once the link is tracked: a collector may have deleted the
            // blob in between.
            self.track_link(name, digest).await?;
            let still = match &source_link {
                Some(link) => self.read_link(link).await?.is_some(),
                None => true,
            };
            if !still || !self.blob_exists(digest).await? {
                return Ok(false);
            }
        }
        if available {
            // Past a quota the mount is refused, not turned into an upload that would be.
            let charge = self.check_quota(name, digest, None).await?;
            self.register_repository(name).await?;
            self.write_link(&layout::layer_link(name, digest), digest)
                .await?;
            self.record(charge).await?;
            self.may_collect(digest).await?;
        }
        Ok(available)
    }

    /// The layer link of `digest` in a repository the caller of `head` may pull, if one
    /// of the repositories the link entries name (at most a hundred are looked at) has it.
    async fn pullable_source(
        &self,
        head: &RequestHead,
        digest: &Digest,
    ) -> Result<Option<Key>, Error> {
        let entries = layout::linked_in(digest);
        let page = self
            .storage
            .list(&entries, false, None, 100)
            .await
            .map_err(internal)?;
        for object in &page.objects {
            let Some(source) = object.key[entries.len()..]
                .strip_suffix("/!")
                .and_then(|name| name.parse::<RepositoryName>().ok())
            else {
                continue;
            };
            if self.options.access.check(head, Some(&source), Action::Pull) != Decision::Allow {
                continue;
            }
            // An entry may outlive its link (a blob deleted from that repository).
            let link = layout::layer_link(&source, digest);
            if self.read_link(&link).await?.is_some() {
                return Ok(Some(link));
            }
        }
        Ok(None)
    }

    pub(super) async fn blob_exists(&self, digest: &Digest) -> Result<bool, Error> {
        self.storage
            .exists(&layout::blob_data(digest))
            .await
            .map_err(internal)
    }
}

/// A `multipart/byteranges` body: each part's head, then its span read from storage only
/// when the part before it has been sent, so one span at a time is in flight.
fn multipart_body<S: Storage>(storage: Arc<S>, key: Key, layout: Multipart) -> ByteStream {
    enum Piece {
        Text(String),
        Span(std::ops::Range<u64>),
    }
    let mut pieces = Vec::with_capacity(layout.parts.len() * 2 + 1);
    for (head, span) in layout.parts {
        pieces.push(Piece::Text(head));
        pieces.push(Piece::Span(span));
    }
    pieces.push(Piece::Text(layout.closing));
    let streams = stream::iter(pieces).then(move |piece| {
        let storage = Arc::clone(&storage);
        let key = key.clone();
        async move {
            Ok::<ByteStream, StorageError>(match piece {
                Piece::Text(text) => Box::pin(stream::iter([Ok(Bytes::from(text))])),
                Piece::Span(span) => storage.get(&key, Some(span)).await?.1,
            })
        }
    });
    Box::pin(streams.try_flatten())
}
