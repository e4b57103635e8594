//! Blobs: end-2 (GET, HEAD), end-10 (DELETE), end-4 and end-11 (starting an upload, a one-request
//! push, a cross-repository mount).

use super::uploads::in_progress;
use super::{Registry, internal, query};
use crate::access::Action;
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, ErrorCode};
use crate::layout;
use crate::range::ByteRange;
use crate::reference::RepositoryName;
use crate::request::{Method, RequestBody, RequestHead};
use crate::response::{Body, Response};
use crate::routes::UploadId;
use crate::storage::{PutMode, Storage, StorageError, StorageExt};
use crate::upload::UploadSession;

impl<S: Storage> Registry<S> {
    pub(super) async fn get_blob(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<Response, Error> {
        // Manifests are blobs too; registry:2 links them as revisions, not layers.
        let linked = self
            .read_link(&layout::layer_link(name, digest))
            .await?
            .is_some()
            || self
                .read_link(&layout::revision_link(name, digest))
                .await?
                .is_some();
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
            Response::error(&Error::new(ErrorCode::RangeInvalid, why))
                .with_header("Content-Range", format!("bytes */{size}"))
        };
        let span = match head.header("Range") {
            None => None,
            // Other units are ignored, as RFC 9110 §14.2 allows; a malformed byte range
            // (an inverted one, say) is refused like an unsatisfiable one.
            Some(text) if !text.trim_start().starts_with("bytes=") => None,
            Some(text) => match text.parse::<ByteRange>().map(|range| range.resolve(size)) {
                Ok(Some(span)) => Some(span),
                Ok(None) => {
                    return Ok(unsatisfiable(format!(
                        "range {text:?} not satisfiable: the blob has {size} bytes"
                    )));
                }
                Err(e) => return Ok(unsatisfiable(format!("range {text:?}: {e}"))),
            },
        };
        let (status, length) = match &span {
            Some(span) => (206, span.end - span.start),
            None => (200, size),
        };
        let mut response = Response::empty(status)
            .with_header("Content-Type", "application/octet-stream")
            .with_header("Content-Length", length.to_string())
            .with_header("Docker-Content-Digest", digest.as_str())
            .with_header("ETag", format!("\"{digest}\""))
            .with_header("Accept-Ranges", "bytes");
        if let Some(span) = &span {
            response = response.with_header(
                "Content-Range",
                format!("bytes {}-{}/{size}", span.start, span.end.saturating_sub(1)),
            );
        }
        if head.method == Method::Head || length == 0 {
            return Ok(response);
        }
        let (_, stream) = match self.storage.get(&key, span).await {
            Ok(found) => found,
            Err(StorageError::NotFound) => return Err(unknown()),
            Err(e) => return Err(internal(e)),
        };
        response.body = Body::Stream(stream);
        Ok(response)
    }

    pub(super) async fn delete_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<Response, Error> {
        self.check_delete_enabled()?;
        let link = layout::layer_link(name, digest);
        if self.read_link(&link).await?.is_none() {
            return Err(Error::new(
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not in {name}"),
            ));
        }
        // Unlinking removes the blob from the repository; the content stays for other
        // repositories until a garbage collection, as with registry:2.
        self.storage.delete(&link).await.map_err(internal)?;
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
        let now = (self.options.clock)();
        // The start time leads the id so that session records list in the order they began.
        let id =
            UploadId::parse(&format!("{now:016}-{}", (self.options.ids)())).ok_or_else(|| {
                Error::new(
                    ErrorCode::Unknown,
                    "the host's upload id source produced an invalid id",
                )
            })?;
        if let Some(digest) = query(head, "digest") {
            let digest = parse_digest(&digest)?;
            let mut session = UploadSession::start(digest.algorithm(), now);
            let staging = layout::upload_staging(name, &id);
            let expected = content_length(head);
            let received = match self
                .receive(&mut session, &staging, body, expected, None, true)
                .await
            {
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
        let mut session = UploadSession::start(algorithm, now);
        session.repository = name.as_str().to_owned();
        self.storage
            .put(
                &layout::upload_session(&id),
                session.encode(),
                PutMode::Create,
            )
            .await
            .map_err(internal)?;
        let mut response = in_progress(202, name, &id, &session);
        let min = self.storage.min_part_size();
        if min > 0 {
            response = response.with_header("OCI-Chunk-Min-Length", min.to_string());
        }
        if let Some(max) = self.options.chunk_max_length {
            response = response.with_header("OCI-Chunk-Max-Length", max.to_string());
        }
        Ok(response)
    }

    /// Links `digest` into `name` from `from` (or, with automatic mounts, from anywhere).
    async fn try_mount(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        digest: &Digest,
        from: Option<String>,
    ) -> Result<bool, Error> {
        let available = match from {
            Some(from) => {
                let Ok(source) = from.parse::<RepositoryName>() else {
                    return Ok(false);
                };
                if self.authorize(head, Some(&source), Action::Pull).is_err() {
                    return Ok(false);
                }
                self.read_link(&layout::layer_link(&source, digest))
                    .await?
                    .is_some()
                    && self.blob_exists(digest).await?
            }
            None => self.options.automatic_mount && self.blob_exists(digest).await?,
        };
        if available {
            self.write_link(&layout::layer_link(name, digest), digest)
                .await?;
            self.register_repository(name).await?;
        }
        Ok(available)
    }

    pub(super) async fn blob_exists(&self, digest: &Digest) -> Result<bool, Error> {
        self.storage
            .exists(&layout::blob_data(digest))
            .await
            .map_err(internal)
    }
}

pub(super) fn parse_digest(text: &str) -> Result<Digest, Error> {
    text.parse().map_err(|e: crate::digest::DigestError| {
        Error::new(ErrorCode::DigestInvalid, format!("{text:?}: {e}"))
    })
}

pub(super) fn content_length(head: &RequestHead) -> Option<u64> {
    head.header("Content-Length")
        .and_then(|v| v.trim().parse().ok())
}

pub(super) fn created(name: &RepositoryName, digest: &Digest) -> Response {
    Response::empty(201)
        .with_header("Location", format!("/v2/{name}/blobs/{digest}"))
        .with_header("Docker-Content-Digest", digest.as_str())
        .with_header("Content-Length", "0")
}
