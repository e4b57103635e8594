//! Deciding, before a byte of a chunk is read, how it is to be taken.

use crate::digest::Digest;
use crate::error::{Error, ErrorCode};

use super::UploadSession;

/// What the driver knows of a chunk's request and its host before reading the body.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkRequest<'a> {
    /// The `Content-Range` header.
    pub content_range: Option<&'a str>,
    /// The body's length, when its headers announce it.
    pub content_length: Option<u64>,
    /// The digest a finishing PUT names; `None` for a PATCH.
    pub finish: Option<&'a Digest>,
    /// The registry's chunk limit (`OCI-Chunk-Max-Length`).
    pub chunk_max_length: Option<u64>,
    /// Whether the host hashes on another thread.
    pub hash_offload: bool,
    /// Whether the storage reads back parts of an upload it has not completed and takes
    /// parts of any size, so that another process can hash what a midstate does not cover.
    pub parts_read_back: bool,
}

/// How a chunk is taken, decided before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkPlan {
    /// The bytes the chunk must carry, when its headers say.
    pub expected: Option<u64>,
    /// The most it may carry.
    pub max: Option<u64>,
    /// Whether it ends the upload (its remainder is written as the last part, or, when the
    /// whole upload fits in one part, kept in memory and stored with one write).
    pub last: bool,
    /// Whether the response may go before the chunk's last bytes are hashed, the record
    /// keeping an earlier midstate.
    pub hashing_may_lag: bool,
    /// Whether the session hashes with the algorithm of the digest that finishes it; if not,
    /// the content is read back once and hashed again at the end.
    pub hashed_as_named: bool,
}

impl ChunkPlan {
    /// A whole blob in one body (a monolithic POST, or content read back to be rehashed).
    pub fn whole_body(expected: Option<u64>) -> Self {
        Self {
            expected,
            max: None,
            last: true,
            hashing_may_lag: false,
            hashed_as_named: true,
        }
    }
}

impl UploadSession {
    /// Decides how to take a chunk: its range must start at the offset (else a 416), its
    /// announced length must be within the chunk limit (else a 413), and a finishing chunk
    /// says whether the session's algorithm is the digest's. The session may switch to the
    /// digest's algorithm when it has received nothing yet ([`UploadSession::adopt_algorithm`]).
    pub fn plan_chunk(&self, request: &ChunkRequest<'_>) -> Result<ChunkPlan, Error> {
        let expected = self.check_chunk(request.content_range)?;
        let max = request.chunk_max_length;
        if let (Some(max), Some(len)) = (max, expected.or(request.content_length))
            && len > max
        {
            return Err(chunk_too_large(max));
        }
        let last = request.finish.is_some();
        let hashed_as_named = match request.finish {
            Some(digest) => self.offset() == 0 || self.hasher()?.algorithm() == digest.algorithm(),
            None => true,
        };
        Ok(ChunkPlan {
            expected,
            max,
            last,
            hashing_may_lag: !last && request.hash_offload && request.parts_read_back,
            hashed_as_named,
        })
    }
}

/// The 413 for a chunk over the registry's limit.
pub(crate) fn chunk_too_large(max: u64) -> Error {
    Error::new(
        ErrorCode::SizeInvalid,
        format!("chunks may be at most {max} bytes (OCI-Chunk-Max-Length): send smaller ones"),
    )
    .with_status(413)
}

/// The error for a body that carries more bytes than its headers announced.
pub(crate) fn longer_than_announced(expected: u64) -> Error {
    Error::new(
        ErrorCode::SizeInvalid,
        format!("the body is longer than the {expected} bytes its headers announce"),
    )
}
