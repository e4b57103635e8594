//! Taking a chunk in: reading the body, writing parts while the next one arrives, handing
//! bytes to the hasher.

use super::*;

impl<S: Storage> Registry<S> {
    /// Takes a chunk into an open session (a PATCH, or the PUT that ends the upload when
    /// `finish` names the digest): loads the record, checks the chunk's range and size,
    /// claims the session where parts are positional, and streams the body into parts.
    /// The advanced session is returned unsaved, or the response that refuses the chunk.
    pub(super) async fn write_chunk(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        id: &UploadId,
        body: &mut RequestBody,
        finish: Option<&Digest>,
    ) -> Result<Taken, Error> {
        let (meta, mut session) = self.load_session(name, id).await?;
        if let Some(published) = session.published() {
            let published = published.to_owned();
            return self
                .finish_published(name, id, &published, finish)
                .await
                .map(Taken::Answered);
        }
        let read_version = meta.version.clone();
        let capabilities = self.storage.capabilities();
        let request = ChunkRequest {
            content_range: head.header("Content-Range"),
            content_length: content_length(head),
            finish,
            chunk_max_length: self.options.chunk_max_length,
            hash_offload: self.options.hash_offload.is_some(),
            parts_read_back: capabilities.readable_parts && capabilities.min_part_size == 0,
        };
        let plan = match session.plan_chunk(&request) {
            Ok(plan) => plan,
            Err(error) => return refuse(error, name, id, &session).map(Taken::Answered),
        };
        if let Some(digest) = finish {
            if plan.hashed_as_named {
                session.adopt_algorithm(digest.algorithm())?;
            } else if self
                .storage
                .exists(&layout::rehash_interim(id))
                .await
                .map_err(internal)?
            {
                return self
                    .finish_interim(name, id, &session, digest)
                    .await
                    .map(Taken::Answered);
            }
            if plan.hashed_as_named
                && session.hashed_offset() == session.offset()
                && self.blob_exists(digest).await?
            {
                return self
                    .finish_stored(name, id, &session, digest, body, plan.expected)
                    .await
                    .map(Taken::Answered);
            }
        }
        let meta = match self.claim(name, id, meta, &mut session).await? {
            Claim::Claimed(meta) => meta,
            Claim::Busy(busy) => return Ok(Taken::Answered(busy)),
        };
        let continued = self.live_hashes.take(id, &read_version);
        let before = session.clone();
        let staging = layout::upload_staging(name, id);
        let received = self
            .receive_continuing(&mut session, &staging, body, &plan, continued)
            .await;
        match received {
            Ok(received) => Ok(Taken::Written(Box::new(Written {
                meta,
                before,
                session,
                received,
                hashed_as_named: plan.hashed_as_named,
            }))),
            Err(error) => {
                self.discard_new_parts(&before, &session).await;
                if error.code() == ErrorCode::BlobUploadUnknown {
                    // Its parts are gone: the session cannot go on, though its record says so.
                    self.discard(&before).await;
                    let _ = self.end_session(id).await;
                } else {
                    self.release(id, &meta, &before).await;
                }
                Err(error)
            }
        }
    }

    /// Streams a request body into parts as `plan` says, advancing `session` (in memory only).
    /// A body longer than it announced or than the chunk limit is refused. When the body is not
    /// the last of the upload and the storage has a minimum part size, the remainder is staged
    /// as the session's tail rather than written as a short part. When the body is the last
    /// and the whole upload fits in one part, nothing is written: the blob is returned in
    /// memory.
    pub(in crate::registry) async fn receive(
        &self,
        session: &mut UploadSession,
        staging: &Key,
        body: &mut RequestBody,
        plan: &ChunkPlan,
    ) -> Result<Received, Error> {
        self.receive_continuing(session, staging, body, plan, None)
            .await
    }

    /// [`Registry::receive`], continuing the previous chunk's hasher when this process still
    /// has it (`continued`, from [`LiveHashes`]). Where the plan lets hashing lag, its hasher
    /// may be left at work on its last bytes and returned in [`Received::hashing`].
    pub(super) async fn receive_continuing(
        &self,
        session: &mut UploadSession,
        staging: &Key,
        body: &mut RequestBody,
        plan: &ChunkPlan,
        continued: Option<HashQueue>,
    ) -> Result<Received, Error> {
        let ChunkPlan {
            expected,
            max,
            last,
            hashing_may_lag: leave_hashing,
            ..
        } = *plan;
        let part_size = self.part_size();
        let offload = self.options.hash_offload.as_ref();
        let mut hashing: Option<HashQueue> = match (continued, offload) {
            (Some(queue), Some(offload)) => queue.resume(offload).await,
            _ => None,
        };
        let (hasher, hashed_before) = match hashing {
            // Taken from the queue when it finishes; this one hashes nothing.
            Some(_) => (Hasher::new(session.hasher()?.algorithm()), None),
            None => {
                let hasher = self.caught_up_hasher(session).await?;
                let hashed = leave_hashing.then(|| Midstate {
                    covers: session.offset(),
                    state: hasher.save(),
                });
                (hasher, hashed)
            }
        };
        let mut writer = PartWriter::new(hasher, part_size);
        if offload.is_some() {
            writer = writer.deferring_hash();
        }
        if let Some(tail) = session.tail() {
            let (_, bytes) = self
                .storage
                .read_small(&tail.key, part_size as u64)
                .await
                .map_err(internal)?;
            writer.preload(bytes);
        }
        // One part is written while the next is received, so the network and the storage
        // work at once. With a hash offload, the bytes of a body larger than one part (by its
        // announced length, else once it is) are hashed on another thread meanwhile, in
        // batches of an eighth of a part, at most `HASHED_BEHIND` parts behind, so this task
        // only receives; a body within one part is hashed here.
        let hash_batch = (part_size / HASH_BATCHES_PER_PART).max(1);
        let mut in_flight = None;
        loop {
            let next = match in_flight.as_mut() {
                None => body.next().await,
                Some(write) => match select(body.next(), write).await {
                    Either::Left((next, _)) => next,
                    Either::Right((written, _)) => {
                        let written: Result<PartId, StorageError> = written;
                        in_flight = None;
                        session.part_written(written.map_err(parts_error)?)?;
                        continue;
                    }
                },
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(body_error)?;
            if expected.is_some_and(|e| writer.received() + chunk.len() as u64 > e) {
                return Err(longer_than_announced(expected.unwrap_or_default()));
            }
            if let Some(max) = max
                && writer.received() + chunk.len() as u64 > max
            {
                return Err(chunk_too_large(max));
            }
            let parts = writer.push(chunk);
            if let Some(offload) = offload
                && writer.unhashed_len() >= hash_batch
                && (hashing.is_some() || expected.unwrap_or(writer.received()) > part_size as u64)
            {
                let queue =
                    hashing.get_or_insert_with(|| HashQueue::start(offload, writer.take_hasher()));
                if !queue
                    .push(writer.take_unhashed(), HASHED_BEHIND * part_size)
                    .await
                {
                    return Err(hashing_dropped());
                }
            }
            for part in parts {
                if let Some(write) = in_flight.take() {
                    let written: Result<PartId, StorageError> = write.await;
                    session.part_written(written.map_err(parts_error)?)?;
                }
                in_flight = Some(Box::pin(self.start_part(session, staging, part).await?));
            }
        }
        if let Some(write) = in_flight.take() {
            let written: Result<PartId, StorageError> = write.await;
            session.part_written(written.map_err(parts_error)?)?;
        }
        let still_hashing = match (hashing, leave_hashing) {
            (Some(mut queue), true) => {
                let rest = writer.take_unhashed();
                if !rest.is_empty() && !queue.push(rest, usize::MAX).await {
                    return Err(hashing_dropped());
                }
                queue.mark(session.offset() + writer.received());
                queue.pause();
                Some(queue)
            }
            (Some(queue), false) => {
                writer.put_hasher(queue.finish().await.ok_or_else(hashing_dropped)?);
                None
            }
            (None, _) => None,
        };
        if let Some(expected) = expected
            && writer.received() != expected
        {
            return Err(Error::new(
                ErrorCode::SizeInvalid,
                format!(
                    "the body has {} bytes, not the {expected} its headers announce",
                    writer.received()
                ),
            ));
        }
        let received = writer.received();
        let (hasher, rest) = writer.finish();
        let mut received_parts = Received {
            obsolete_tail: session.tail_consumed().map(|tail| tail.key),
            whole: None,
            hashing: None,
        };
        if last && session.parts_upload().is_none() {
            received_parts.whole = Some(rest.map_or_else(Bytes::new, concat));
        } else if let Some(rest) = rest {
            if last || self.storage.capabilities().min_part_size == 0 {
                self.write_part(session, staging, rest).await?;
            } else {
                let data = concat(rest);
                let key = Key::new(format!(
                    "{staging}.tail-{}-{}",
                    session.offset() + received,
                    (self.options.ids)()
                ));
                self.storage
                    .put(&key, data.clone(), PutMode::Overwrite.into())
                    .await
                    .map_err(internal)?;
                session.tail_staged(StagedTail {
                    key,
                    len: data.len() as u64,
                })?;
            }
        }
        // The session record saved next will name these parts: they must be durable first, or
        // be refused once a crash may have lost them (see `Storage::sync_parts`). The last
        // body's parts are made durable when they are published.
        if !last && let Some(upload) = session.parts_upload() {
            self.storage.sync_parts(upload).await.map_err(parts_error)?;
        }
        match still_hashing {
            Some(queue) => {
                // The latest midstate known: from a mark the hasher has passed, from before
                // this chunk, or the record's own.
                let reached = queue
                    .reached()
                    .map(|(covers, state)| Midstate { covers, state });
                session.chunk_received_hashing(
                    received,
                    [hashed_before, reached].into_iter().flatten(),
                )?;
                received_parts.hashing = Some(queue);
            }
            None => session.chunk_received(received, &hasher)?,
        }
        Ok(received_parts)
    }

    /// The session's hasher after all `session.offset` bytes: the record's midstate continued
    /// with the bytes it does not cover, read back from the parts.
    pub(super) async fn caught_up_hasher(&self, session: &UploadSession) -> Result<Hasher, Error> {
        let mut hasher = session.hasher()?;
        let hashed = session.hashed_offset();
        if hashed == session.offset() {
            return Ok(hasher);
        }
        let gone = || parts_error(StorageError::NotFound);
        let upload = session.parts_upload().ok_or_else(gone)?;
        let mut unhashed = self
            .storage
            .read_parts(upload, session.parts(), hashed)
            .await
            .map_err(parts_error)?;
        let mut read = 0;
        while let Some(chunk) = unhashed.next().await {
            let chunk = chunk.map_err(parts_error)?;
            read += chunk.len() as u64;
            hasher.update(&chunk);
        }
        if hashed + read != session.offset() {
            return Err(gone());
        }
        Ok(hasher)
    }

    /// The size of every part but an upload's last: the configured size, raised to the
    /// storage's minimum.
    pub(super) fn part_size(&self) -> usize {
        let min = usize::try_from(self.storage.capabilities().min_part_size).unwrap_or(usize::MAX);
        self.options.part_size.max(min).max(1)
    }

    pub(super) async fn write_part(
        &self,
        session: &mut UploadSession,
        staging: &Key,
        data: Chunks,
    ) -> Result<(), Error> {
        let part = self.start_part(session, staging, data).await?.await;
        session.part_written(part.map_err(parts_error)?)?;
        Ok(())
    }

    /// Starts writing the session's next part (creating the storage's parts upload for the
    /// first); the returned future finishes the write and yields the part's id, which the
    /// caller records ([`UploadSession::part_written`]) before it starts another part.
    pub(super) async fn start_part(
        &self,
        session: &mut UploadSession,
        staging: &Key,
        data: Chunks,
    ) -> Result<impl Future<Output = Result<PartId, StorageError>> + '_, Error> {
        let upload = match session.parts_upload() {
            Some(upload) => upload.to_owned(),
            None => {
                let upload = self.storage.create_parts(staging).await.map_err(internal)?;
                session.parts_created(upload.clone())?;
                upload
            }
        };
        let number = session.next_part_number();
        if self
            .storage
            .capabilities()
            .max_parts
            .is_some_and(|max| number > max)
        {
            return Err(Error::new(
                ErrorCode::SizeInvalid,
                format!(
                    "this blob needs more than {} parts of {} bytes: the registry's part size \
                     must grow to store it",
                    number - 1,
                    self.part_size()
                ),
            )
            .with_status(413));
        }
        Ok(async move { self.storage.put_part(&upload, number, data).await })
    }
}

/// How many parts' worth of bytes may wait to be hashed on the offload, those being hashed
/// included: two keep its thread busy, and a request then holds at most three parts (one
/// being hashed, one hashed next and written, one arriving); four gained little and held
/// more memory (measured: docs/decisions/2026-12-07-measured-and-adopted.md).
pub(super) const HASHED_BEHIND: usize = 2;

/// Into how many batches a part's bytes are handed to the offload (256 KiB of a 2 MiB part).
/// Handed over a part at a time, the hasher sat idle while each body's first part arrived, and
/// a body's end waited for up to two parts to be hashed.
pub(super) const HASH_BATCHES_PER_PART: usize = 8;

pub(super) fn hashing_dropped() -> Error {
    Error::new(
        ErrorCode::Unknown,
        "the host dropped the hashing of this upload",
    )
}

/// A parts upload the storage no longer has is an unknown upload to the client, which starts
/// it again; any other storage failure is the registry's.
pub(super) fn parts_error(error: StorageError) -> Error {
    match error {
        StorageError::NotFound => Error::new(
            ErrorCode::BlobUploadUnknown,
            "the upload's parts are gone: it was cancelled, finished elsewhere, or lost when the \
             machine stopped; start it again",
        ),
        other => internal(other),
    }
}

/// Answers a refused chunk: a 416 tells the client where the upload stands; any other
/// refusal is an error like any other.
pub(super) fn refuse(
    error: Error,
    name: &RepositoryName,
    id: &UploadId,
    session: &UploadSession,
) -> Result<Response, Error> {
    if error.status() == 416 {
        Ok(range_error(&error, name, id, session))
    } else {
        Err(error)
    }
}

pub(super) fn range_error(
    error: &Error,
    name: &RepositoryName,
    id: &UploadId,
    session: &UploadSession,
) -> Response {
    with_progress(Response::error(error), name, id, session)
}

/// One buffer of a part's chunks (no copy when there is only one).
pub(super) fn concat(chunks: Chunks) -> Bytes {
    match <[Bytes; 1]>::try_from(chunks) {
        Ok([only]) => only,
        Err(chunks) => Bytes::from(chunks.concat()),
    }
}
