//! Finishing an upload: verifying the digest, publishing the blob (or its rehashed copy), and
//! discarding what a failed request wrote.

use super::*;

impl<S: Storage> Registry<S> {
    /// Finishes an upload whose content the registry already stores (pushed before, to this
    /// or another repository, or published by an earlier try of this request that failed
    /// after): the rest of the body is hashed, not stored, and the blob is linked once the
    /// digest verifies. Nothing is written but the link, and a retry needs none of the parts
    /// an earlier try consumed.
    pub(super) async fn finish_stored(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        session: &UploadSession,
        digest: &Digest,
        body: &mut RequestBody,
        expected: Option<u64>,
    ) -> Result<Response, Error> {
        let mut hasher = session.hasher()?;
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(body_error)?;
            received += chunk.len() as u64;
            hasher.update(&chunk);
        }
        if let Some(expected) = expected
            && expected != received
        {
            return Err(Error::new(
                ErrorCode::SizeInvalid,
                format!("Content-Range announced {expected} bytes, the body has {received}"),
            ));
        }
        let actual = hasher.finish();
        self.discard(session).await;
        if &actual != digest {
            self.end_session(id).await?;
            return Err(Error::new(
                ErrorCode::DigestInvalid,
                format!("uploaded content has digest {actual}, not {digest}"),
            ));
        }
        self.link_stored(name, digest).await?;
        self.end_session(id).await?;
        Ok(created(name, digest))
    }

    /// Links content the registry stored before (by an earlier upload or an earlier try)
    /// into `name`; with references tracked, once the link is tracked and the content is
    /// seen still there.
    pub(in crate::registry) async fn link_stored(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), Error> {
        let charge = self.check_quota(name, digest, None).await?;
        if self.options.track_references {
            self.track_link(name, digest).await?;
            if !self.blob_exists(digest).await? {
                return Err(Error::new(
                    ErrorCode::BlobUploadUnknown,
                    format!("blob {digest} was collected as garbage meanwhile: upload it again"),
                ));
            }
        }
        self.register_repository(name).await?;
        self.write_link(&layout::layer_link(name, digest), digest)
            .await?;
        self.record(charge).await?;
        self.may_collect(digest).await
    }

    /// Finishes a rehashed upload (see `finish_rehashed`) whose earlier try published its
    /// content as the interim object and failed after: the session's parts went into that
    /// object, so it is read back again (the body, the same last chunk sent again, is not
    /// needed).
    pub(super) async fn finish_interim(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        session: &UploadSession,
        digest: &Digest,
    ) -> Result<Response, Error> {
        let interim = layout::rehash_interim(id);
        let staging = layout::upload_staging(name, id);
        let rehashed = self.rehash(name, digest, session, &interim, &staging).await;
        if rehashed.as_ref().is_ok() || rehashed.as_ref().is_err_and(|e| e.status() < 500) {
            self.delete_quietly(Some(interim)).await;
            self.end_session(id).await?;
        }
        rehashed?;
        Ok(created(name, digest))
    }

    /// Records that a session's content is verified and published as `digest` (its link
    /// perhaps not yet written), for the retry of the request that failed after that: best
    /// effort, by compare-and-swap on the version this request read or claimed. Without it,
    /// the retry finds the parts gone and the client pushes again, finding the blob stored.
    pub(super) async fn mark_published(
        &self,
        id: &UploadId,
        before: &UploadSession,
        read: &ObjectMeta,
        digest: &Digest,
    ) {
        let mut published = before.clone();
        published.release();
        if published.content_published(digest).is_ok() {
            self.replace_record(id, read, published).await;
        }
    }

    /// Answers a request for a session whose content is verified and published, its link not
    /// yet written: the PUT that finishes it with the same digest links it (whatever last
    /// chunk it carries again); anything else is refused.
    pub(super) async fn finish_published(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        published: &str,
        finish: Option<&Digest>,
    ) -> Result<Response, Error> {
        let Some(digest) = finish else {
            return Err(Error::new(
                ErrorCode::BlobUploadInvalid,
                "the upload is complete: finish it with PUT ?digest=",
            ));
        };
        if digest.as_str() != published {
            return Err(Error::new(
                ErrorCode::DigestInvalid,
                format!("the upload's content has digest {published}, not {digest}"),
            ));
        }
        self.link_stored(name, digest).await?;
        self.end_session(id).await?;
        Ok(created(name, digest))
    }

    /// Verifies the digest, publishes the content, and links it into the repository.
    pub(in crate::registry) async fn finish(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        session: &UploadSession,
        staging: &Key,
        whole: Option<Bytes>,
    ) -> Result<(), Error> {
        if let Err(error) = session.verify(digest) {
            self.discard(session).await;
            return Err(error);
        }
        // Checked before anything is published: a push past a quota leaves nothing behind.
        let charge = match self.check_quota(name, digest, Some(session.offset())).await {
            Ok(charge) => charge,
            Err(error) => {
                self.discard(session).await;
                return Err(error);
            }
        };
        // Tracked before the content is published: no collector deletes it after that.
        if let Err(error) = self.track_link(name, digest).await {
            self.discard(session).await;
            return Err(error);
        }
        self.publish(digest, session, staging, whole).await?;
        // The catalog entry first: a link is what makes the blob visible, so it comes last.
        self.register_repository(name).await?;
        self.write_link(&layout::layer_link(name, digest), digest)
            .await?;
        self.record(charge).await?;
        self.may_collect(digest).await
    }

    /// Finishes an upload that was hashed with another algorithm than the digest it is
    /// finished with (a chunked sha512 push that did not say `?digest-algorithm=sha512`): the
    /// content is published under a key of the session's own, outside every blob path, read
    /// back once and written again under the named digest, then the interim object is
    /// deleted. Content whose named digest does not verify is never a blob, so nothing can
    /// mount or pull it. The only path that re-reads a blob.
    pub(super) async fn finish_rehashed(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
        session: &UploadSession,
        staging: &Key,
        whole: Option<Bytes>,
    ) -> Result<(), Error> {
        let interim = layout::rehash_interim(id);
        // A retry after a storage failure finds the interim object there (its session's parts
        // went into it) and reads it back again.
        self.publish_to(&interim, session, staging, whole).await?;
        let rehashed = self.rehash(name, digest, session, &interim, staging).await;
        if rehashed.as_ref().is_ok() || rehashed.as_ref().is_err_and(|e| e.status() < 500) {
            self.delete_quietly(Some(interim)).await;
        }
        rehashed
    }

    pub(super) async fn rehash(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        session: &UploadSession,
        interim: &Key,
        staging: &Key,
    ) -> Result<(), Error> {
        let (_, stream) = self.storage.get(interim, None).await.map_err(internal)?;
        let mut body: RequestBody =
            Box::pin(stream.map(|chunk| chunk.map_err(|e| Box::new(e) as BodyError)));
        let mut rehashed = UploadSession::start(digest.algorithm(), name, session.started_at());
        let received = match self
            .receive(
                &mut rehashed,
                staging,
                &mut body,
                &ChunkPlan::whole_body(None),
            )
            .await
        {
            Ok(received) => received,
            Err(error) => {
                self.discard(&rehashed).await;
                return Err(error);
            }
        };
        self.finish(name, digest, &rehashed, staging, received.whole)
            .await
    }

    /// Publishes a verified session's parts, or the `whole` blob held in memory, as the blob
    /// `digest` (or drops them when the registry already has that content).
    pub(super) async fn publish(
        &self,
        digest: &Digest,
        session: &UploadSession,
        staging: &Key,
        whole: Option<Bytes>,
    ) -> Result<(), Error> {
        self.publish_to(&layout::blob_data(digest), session, staging, whole)
            .await
    }

    /// Publishes a session's parts, or the `whole` object held in memory, as `target` (or
    /// drops them when `target` already exists: it holds the same content).
    pub(super) async fn publish_to(
        &self,
        target: &Key,
        session: &UploadSession,
        staging: &Key,
        whole: Option<Bytes>,
    ) -> Result<(), Error> {
        if let Some(whole) = whole {
            return match self
                .storage
                .put(target, whole, PutMode::Create.into())
                .await
            {
                // Already there: the content is the same.
                Ok(_) | Err(StorageError::AlreadyExists) => Ok(()),
                Err(e) => Err(internal(e)),
            };
        }
        if self.storage.exists(target).await.map_err(internal)? {
            self.discard(session).await;
        } else {
            let upload = match session.parts_upload() {
                Some(upload) => upload.to_owned(),
                None => self.storage.create_parts(staging).await.map_err(internal)?,
            };
            match self
                .storage
                .complete_parts(&upload, session.parts(), target)
                .await
            {
                Ok(()) => {}
                // Someone else published the same content meanwhile: ours is redundant.
                Err(StorageError::AlreadyExists) => {
                    let _ = self.storage.abort_parts(&upload).await;
                }
                Err(e) => {
                    if matches!(e, StorageError::NotFound) {
                        // Whatever is left of them (parts lost when the machine stopped).
                        let _ = self.storage.abort_parts(&upload).await;
                    }
                    return Err(parts_error(e));
                }
            }
        }
        Ok(())
    }

    /// Drops a session's parts (best effort: an abandoned parts upload is also purged later).
    pub(in crate::registry) async fn discard(&self, session: &UploadSession) {
        if let Some(upload) = session.parts_upload() {
            let _ = self.storage.abort_parts(upload).await;
        }
        self.delete_quietly(session.tail().map(|t| t.key.clone()))
            .await;
    }

    /// Drops what this request wrote but could not record: a parts upload it created, a tail
    /// it staged.
    pub(super) async fn discard_new_parts(&self, before: &UploadSession, after: &UploadSession) {
        if before.parts_upload().is_none()
            && let Some(upload) = after.parts_upload()
        {
            let _ = self.storage.abort_parts(upload).await;
        }
        if after.tail() != before.tail() {
            self.delete_quietly(after.tail().map(|t| t.key.clone()))
                .await;
        }
    }

    /// Deletes an object nothing refers to any more; failing leaves only garbage.
    pub(super) async fn delete_quietly(&self, key: Option<Key>) {
        if let Some(key) = key {
            let _ = self.storage.delete(&key, Durability::Durable).await;
        }
    }
}
