//! Upload sessions: end-5 (PATCH), end-6 (the finishing PUT), end-13 (status), end-14
//! (cancel), and their expiry. The state machine is `crate::upload`; this is its driver.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{Either, select};

use super::{Registry, body_error, internal};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, ErrorCode};
use crate::http::{content_length, created, in_progress, parse_digest, query, with_progress};
use crate::layout;
use crate::offload::HashQueue;
use crate::reference::RepositoryName;
use crate::request::{BodyError, RequestBody, RequestHead};
use crate::response::Response;
use crate::storage::{
    Chunks, Durability, Key, ObjectMeta, PartId, PutMode, Storage, StorageError, StorageExt,
    Version,
};
use crate::upload::{
    ChunkPlan, ChunkRequest, Midstate, PartWriter, StagedTail, UploadId, UploadSession,
    chunk_too_large, longer_than_announced,
};

mod finish;
mod receive;
mod session;

use receive::*;

/// What became of a chunk's request.
pub(super) enum Taken {
    /// The chunk was taken into the session, not yet recorded.
    Written(Box<Written>),
    /// The request was answered without taking a chunk: refused (416 with the current
    /// range), or finished without parts (its content already stored or published).
    Answered(Response),
}

/// How claiming a session for a request went.
pub(super) enum Claim {
    /// The request may write parts; the record's version after the claim.
    Claimed(ObjectMeta),
    /// Another request writes to the session: the 416 to answer with.
    Busy(Response),
}

/// How saving an advanced session record went.
pub(super) enum Saved {
    /// Stored, at this version.
    Stored(ObjectMeta),
    /// Another request advanced it first: this request's parts are dropped, and this is the
    /// record as the other request left it.
    Overtaken(UploadSession),
}

/// A chunk taken into a session, not yet recorded.
pub(super) struct Written {
    /// The record's version (after the claim, if one was taken).
    meta: ObjectMeta,
    /// The session as the record holds it.
    before: UploadSession,
    /// The session advanced by the chunk.
    session: UploadSession,
    /// What the chunk left: a tail to delete, or the whole blob in memory.
    received: Received,
    /// Whether the session hashes with the algorithm of the digest that finishes it.
    hashed_as_named: bool,
}

/// What [`Registry::receive`] leaves besides the advanced session.
pub(super) struct Received {
    /// A staged tail the session no longer needs, for the caller to delete once the advanced
    /// record is stored.
    pub(super) obsolete_tail: Option<Key>,
    /// The whole blob, when the request that ended the upload carried all of it within one
    /// part: kept in memory and stored with one write instead of as a parts upload.
    pub(super) whole: Option<Bytes>,
    /// The chunk's hasher, still at work on its last bytes: the session records an earlier
    /// midstate, and the next chunk queues its bytes to this hasher (see [`LiveHashes`]).
    pub(super) hashing: Option<HashQueue>,
}

/// Hashers still at work on the chunks this process acknowledged, by upload id, each with the
/// version of the session record its chunk saved. A chunk's response does not wait for its
/// last bytes to be hashed: the client's next chunk queues its bytes to the same hasher, so
/// one hasher runs from chunk to chunk without pause (measured: docs/decisions/
/// 2026-12-07-measured-and-adopted.md). A chunk that finds no hasher here for the record it read
/// (another process took the previous chunk, or this one restarted) reads back from the parts
/// what the record's midstate does not cover.
#[derive(Default)]
pub(super) struct LiveHashes(std::sync::Mutex<HashMap<String, (Version, HashQueue)>>);

/// How many uploads' hashers [`LiveHashes`] keeps; beyond that the next chunk of an upload
/// whose hasher was dropped reads its previous chunk back. Each holds at most
/// `HASHED_BEHIND` parts until it finishes, then only its midstate.
const LIVE_HASHES_KEPT: usize = 1024;

impl LiveHashes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Version, HashQueue)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn keep(&self, id: &UploadId, record_version: Version, hashing: HashQueue) {
        let mut live = self.lock();
        if live.len() >= LIVE_HASHES_KEPT
            && let Some(dropped) = live.keys().next().cloned()
        {
            live.remove(&dropped);
        }
        live.insert(id.as_str().to_owned(), (record_version, hashing));
    }

    /// The hasher of the chunk that saved the record at `record_version`, if this process has it.
    fn take(&self, id: &UploadId, record_version: &Version) -> Option<HashQueue> {
        // Another one is stale for good: records only move on.
        match self.lock().remove(id.as_str()) {
            Some((version, hashing)) if &version == record_version => Some(hashing),
            _ => None,
        }
    }

    fn forget(&self, id: &UploadId) {
        self.lock().remove(id.as_str());
    }
}

impl std::fmt::Debug for LiveHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHashes")
            .field("uploads", &self.lock().len())
            .finish()
    }
}

/// Upload session records are tiny; anything larger is not one of ours.
const SESSION_RECORD_LIMIT: u64 = 1024 * 1024;

impl<S: Storage> Registry<S> {
    pub(super) async fn patch_upload(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        id: &UploadId,
        body: &mut RequestBody,
    ) -> Result<Response, Error> {
        let written = match self.write_chunk(head, name, id, body, None).await? {
            Taken::Written(written) => written,
            Taken::Answered(response) => return Ok(response),
        };
        let Written {
            meta,
            before,
            mut session,
            received,
            ..
        } = *written;
        session.release();
        match self
            .save_session(name, id, &meta, &before, &session)
            .await?
        {
            Saved::Stored(saved) => {
                if let Some(hashing) = received.hashing {
                    self.live_hashes.keep(id, saved.version, hashing);
                }
                self.delete_quietly(received.obsolete_tail).await;
                Ok(in_progress(202, name, id, &session))
            }
            Saved::Overtaken(current) => {
                Ok(range_error(&current.out_of_order(), name, id, &current))
            }
        }
    }

    pub(super) async fn finish_upload(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        id: &UploadId,
        body: &mut RequestBody,
    ) -> Result<Response, Error> {
        let digest = query(head, "digest").ok_or_else(|| {
            Error::new(
                ErrorCode::DigestInvalid,
                "finish an upload with PUT ?digest=<digest>",
            )
        })?;
        let digest = parse_digest(&digest)?;
        let written = match self
            .write_chunk(head, name, id, body, Some(&digest))
            .await?
        {
            Taken::Written(written) => written,
            Taken::Answered(response) => return Ok(response),
        };
        let staging = layout::upload_staging(name, id);
        let session = &written.session;
        let whole = written.received.whole.clone();
        let finished = if written.hashed_as_named {
            self.finish(name, &digest, session, &staging, whole).await
        } else {
            self.finish_rehashed(name, id, &digest, session, &staging, whole)
                .await
        };
        if let Err(error) = &finished
            && error.status() >= 500
        {
            // The storage failed, not the client: the client may send the same PUT again.
            if written.hashed_as_named
                && session.verify(&digest).is_ok()
                && self.blob_exists(&digest).await.unwrap_or(false)
            {
                self.mark_published(id, &written.before, &written.meta, &digest)
                    .await;
            } else {
                // The session stays as its record says, with what this request wrote dropped.
                self.discard_new_parts(&written.before, &written.session)
                    .await;
                self.release(id, &written.meta, &written.before).await;
            }
            return Err(error.clone());
        }
        // Finished or refused, the session is over: a digest mismatch cannot be repaired by
        // sending more bytes, and registry:2 also ends the session. Should its record stay,
        // the request fails, and the record no longer holds this request's claim: a finished
        // upload's record says it is published, so the retry only links; a refused one is as
        // before, and the retry is refused again from its midstate.
        if let Err(error) = self.end_session(id).await {
            if finished.is_ok() {
                self.mark_published(id, &written.before, &written.meta, &digest)
                    .await;
            } else {
                self.release(id, &written.meta, &written.before).await;
            }
            return Err(error);
        }
        self.delete_quietly(written.received.obsolete_tail).await;
        finished?;
        Ok(created(name, &digest))
    }

    pub(super) async fn cancel_upload(
        &self,
        name: &RepositoryName,
        id: &UploadId,
    ) -> Result<Response, Error> {
        let (_, session) = self.load_session(name, id).await?;
        self.discard(&session).await;
        self.end_session(id).await?;
        Ok(Response::empty(204).with_header("Content-Length", "0"))
    }

    /// An upload session answers only the principal that opened it, when the access hook
    /// authenticates: to anyone else it is unknown (404), as if it did not exist.
    pub(super) async fn check_upload_owner(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        id: &UploadId,
    ) -> Result<(), Error> {
        if !self.options.access.decides_per_caller() {
            return Ok(());
        }
        let (_, session) = self.load_session(name, id).await?;
        if session.owner() != self.options.access.principal(head).as_deref() {
            return Err(Error::new(
                ErrorCode::BlobUploadUnknown,
                format!("upload {} is not open in {name}", id.as_str()),
            ));
        }
        Ok(())
    }

    pub(super) async fn upload_status(
        &self,
        name: &RepositoryName,
        id: &UploadId,
    ) -> Result<Response, Error> {
        let (_, session) = self.load_session(name, id).await?;
        Ok(in_progress(204, name, id, &session))
    }
}
