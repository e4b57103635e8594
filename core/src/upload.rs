//! The blob-upload state machine, as a record that lives in storage between requests.
//!
//! ```text
//!   start ──► Open{offset: 0} ──append(start == offset)──► Open{offset + n} ──finish(digest)──► done
//!                  │    ▲                                       │
//!                  │    └──────append(start != offset): 416 ────┘
//!                  └──────────────cancel──────────────────────────────────────────────────► gone
//! ```
//!
//! The record holds everything the next request needs, whichever process takes it: the
//! offset, the serialized hash midstate, and the parts written so far. Finishing therefore
//! never re-reads the blob: the digest is the midstate's, and the parts are published as they
//! are. Where the storage reads parts back, the midstate may lag one chunk behind the offset
//! while the process that received that chunk still hashes it: that process continues its
//! hasher, any other reads the chunk back from the parts and hashes it again. A request changes the record only by compare-and-swap, so of two writers racing at
//! one offset exactly one wins; the other is told the current range (416).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, ErrorCode};
use crate::range::ContentRange;
use crate::storage::Chunks;

/// The record of an open upload session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    /// The repository the session uploads to; a request naming another one does not find it.
    #[serde(default)]
    pub repository: String,
    /// Bytes received so far.
    pub offset: u64,
    /// The hash midstate ([`Hasher::save`]) after `hashed` bytes, or after `offset` bytes.
    pub hash_state: String,
    /// How many bytes `hash_state` covers, when fewer than `offset`: the rest lies in the
    /// parts, being hashed by the process that received it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed: Option<u64>,
    /// The storage parts upload, once the first part is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts_upload: Option<String>,
    /// Part ids, in order.
    #[serde(default)]
    pub parts: Vec<String>,
    /// Received bytes not yet in a part, kept as an object of their own: on storage with a
    /// minimum part size (S3's 5 MiB), a chunk's remainder waits there for the next chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<StagedTail>,
    /// When the session started (seconds since the Unix epoch, from the host's clock).
    pub started_at: u64,
    /// The request writing parts now, on storage whose parts are positional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<WriterClaim>,
    /// The digest the session's content was verified against and published under, when the
    /// request that finished it failed after that (its link not written): a retry of the
    /// same PUT only links it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
}

/// A request's claim on a session while it writes parts, so that no other request writes
/// parts under the same numbers meanwhile. It lapses at `until`, should its request die.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterClaim {
    /// Who claims it.
    pub token: String,
    /// Until when (seconds since the Unix epoch).
    pub until: u64,
}

impl UploadSession {
    /// A new session hashing with `algorithm`.
    pub fn start(algorithm: Algorithm, now: u64) -> Self {
        Self {
            repository: String::new(),
            offset: 0,
            hash_state: Hasher::new(algorithm).save(),
            hashed: None,
            parts_upload: None,
            parts: Vec::new(),
            tail: None,
            started_at: now,
            writer: None,
            published: None,
        }
    }

    /// Decodes a stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(|_| {
            Error::new(
                ErrorCode::BlobUploadUnknown,
                "upload session record is unreadable",
            )
        })
    }

    /// Encodes the record for storage.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// How many bytes the hash midstate covers: `offset`, unless the last chunk is still
    /// being hashed.
    pub fn hashed_offset(&self) -> u64 {
        self.hashed.unwrap_or(self.offset).min(self.offset)
    }

    /// The restored hasher, after [`UploadSession::hashed_offset`] bytes.
    pub fn hasher(&self) -> Result<Hasher, Error> {
        Hasher::restore(&self.hash_state)
            .map_err(|e| Error::new(ErrorCode::BlobUploadInvalid, e.to_string()).with_status(400))
    }

    /// The `Range` header value that reports progress: `0-<last byte>`. An empty session
    /// reports `0-0`, as registry:2 does, since clients parse both ends as numbers.
    pub fn range(&self) -> String {
        format!("0-{}", self.offset.saturating_sub(1))
    }

    /// Checks a chunk's `Content-Range` (if any) against the offset. A chunk without one is
    /// appended ("streamed" upload, as docker sends). Returns the number of bytes the chunk
    /// must carry, when the range says.
    pub fn check_chunk(&self, content_range: Option<&str>) -> Result<Option<u64>, Error> {
        let Some(text) = content_range else {
            return Ok(None);
        };
        let range: ContentRange = text.parse().map_err(|e: crate::range::RangeError| {
            Error::new(
                ErrorCode::BlobUploadInvalid,
                format!("Content-Range {text:?}: {e}"),
            )
            .with_status(416)
        })?;
        if range.start != self.offset {
            return Err(self.out_of_order());
        }
        Ok(Some(range.len()))
    }

    /// Whether another request is writing parts to this session at `now`.
    pub fn is_claimed(&self, now: u64) -> bool {
        self.writer.as_ref().is_some_and(|claim| claim.until > now)
    }

    /// The 416 a request receives while another one writes to the session.
    pub fn busy(&self) -> Error {
        Error::new(
            ErrorCode::BlobUploadInvalid,
            format!(
                "another request is writing to this upload; it has {} bytes: GET it for the \
                 current Range and retry",
                self.offset
            ),
        )
        .with_status(416)
    }

    /// The 416 a chunk that does not start at the current offset receives.
    pub fn out_of_order(&self) -> Error {
        Error::new(
            ErrorCode::BlobUploadInvalid,
            format!(
                "chunk must start at byte {}: GET the upload for its current Range",
                self.offset
            ),
        )
        .with_status(416)
    }

    /// Makes the session hash with `algorithm` if it can: when it already does, or when it
    /// has received nothing yet (a client that names a sha512 digest only at the end of a
    /// one-shot upload). Returns false when bytes were already hashed with another algorithm.
    pub fn adopt_algorithm(&mut self, algorithm: Algorithm) -> Result<bool, Error> {
        if self.hasher()?.algorithm() == algorithm {
            return Ok(true);
        }
        if self.offset > 0 {
            return Ok(false);
        }
        self.hash_state = Hasher::new(algorithm).save();
        Ok(true)
    }

    /// Verifies the finished upload against the client's digest.
    pub fn verify(&self, expected: &Digest) -> Result<(), Error> {
        if self.hashed_offset() != self.offset {
            return Err(Error::new(
                ErrorCode::Unknown,
                "the upload's last chunk was not hashed before it was verified",
            ));
        }
        let actual = self.hasher()?.finish();
        if &actual != expected {
            return Err(Error::new(
                ErrorCode::DigestInvalid,
                format!("uploaded content has digest {actual}, not {expected}"),
            ));
        }
        Ok(())
    }
}

/// Bytes of an upload staged outside its parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedTail {
    /// The object holding them.
    pub key: String,
    /// How many bytes.
    pub len: u64,
}

/// Hashes a chunk's bytes as they arrive and gathers them into parts of `part_size` bytes, so
/// that at most one part is held in memory. Bytes are never copied: a part is the received
/// chunks themselves, split where a part ends.
///
/// A writer that defers hashing ([`PartWriter::deferring_hash`]) keeps the bytes it took
/// instead, for the caller to hash elsewhere ([`PartWriter::take_unhashed`]) with the hasher it
/// takes and puts back; what is left unhashed is hashed by [`PartWriter::finish`].
#[derive(Debug)]
pub struct PartWriter {
    hasher: Hasher,
    part_size: usize,
    pending: Chunks,
    pending_len: usize,
    received: u64,
    /// Bytes pushed and not hashed yet, when hashing is deferred.
    unhashed: Option<Chunks>,
}

impl PartWriter {
    /// Continues `hasher` with parts of `part_size` bytes.
    pub fn new(hasher: Hasher, part_size: usize) -> Self {
        Self {
            hasher,
            part_size: part_size.max(1),
            pending: Vec::new(),
            pending_len: 0,
            received: 0,
            unhashed: None,
        }
    }

    /// Leaves the bytes pushed unhashed until the caller takes them or the writer finishes.
    pub fn deferring_hash(mut self) -> Self {
        self.unhashed = Some(Vec::new());
        self
    }

    /// Puts back bytes received (and hashed) earlier, ahead of what is pushed next: a staged
    /// tail. They are not hashed again nor counted as received.
    pub fn preload(&mut self, bytes: Bytes) {
        self.pending_len += bytes.len();
        self.pending.push(bytes);
    }

    /// Feeds bytes; returns a part each time one fills up.
    pub fn push(&mut self, mut bytes: Bytes) -> Vec<Chunks> {
        match &mut self.unhashed {
            Some(unhashed) => unhashed.push(bytes.clone()),
            None => self.hasher.update(&bytes),
        }
        self.received += bytes.len() as u64;
        let mut full = Vec::new();
        while !bytes.is_empty() {
            let take = self
                .part_size
                .saturating_sub(self.pending_len)
                .min(bytes.len())
                .max(1);
            self.pending.push(bytes.split_to(take));
            self.pending_len += take;
            if self.pending_len == self.part_size {
                full.push(std::mem::take(&mut self.pending));
                self.pending_len = 0;
            }
        }
        full
    }

    /// The bytes pushed since the last call and not hashed, in order (none unless deferring).
    pub fn take_unhashed(&mut self) -> Chunks {
        self.unhashed
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// How many bytes [`PartWriter::take_unhashed`] would give.
    pub fn unhashed_len(&self) -> usize {
        self.unhashed.iter().flatten().map(Bytes::len).sum()
    }

    /// Takes the hasher, to continue it elsewhere with what [`PartWriter::take_unhashed`]
    /// gives; put it back with [`PartWriter::put_hasher`] before [`PartWriter::finish`].
    pub fn take_hasher(&mut self) -> Hasher {
        let algorithm = self.hasher.algorithm();
        std::mem::replace(&mut self.hasher, Hasher::new(algorithm))
    }

    /// Puts back the hasher taken, continued with every byte taken unhashed.
    pub fn put_hasher(&mut self, hasher: Hasher) {
        self.hasher = hasher;
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Ends the chunk: the hasher (continued with any bytes still unhashed), and the last
    /// (short) part if any bytes are pending.
    pub fn finish(mut self) -> (Hasher, Option<Chunks>) {
        for chunk in self.take_unhashed() {
            self.hasher.update(&chunk);
        }
        let rest = (self.pending_len > 0).then_some(self.pending);
        (self.hasher, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn range_header_and_order() {
        let mut session = UploadSession::start(Algorithm::Sha256, 7);
        assert_eq!(session.range(), "0-0");
        assert_eq!(session.check_chunk(None).unwrap(), None);
        assert_eq!(session.check_chunk(Some("0-9")).unwrap(), Some(10));
        session.offset = 10;
        assert_eq!(session.range(), "0-9");
        let error = session.check_chunk(Some("0-9")).unwrap_err();
        assert_eq!(
            (error.code(), error.status()),
            (ErrorCode::BlobUploadInvalid, 416)
        );
        assert_eq!(session.check_chunk(Some("10-19")).unwrap(), Some(10));
        assert_eq!(session.check_chunk(Some("x")).unwrap_err().status(), 416);
        // A full-width digit is no digit: refused like any other malformed range.
        assert_eq!(
            session
                .check_chunk(Some("\u{ff10}-9"))
                .unwrap_err()
                .status(),
            416
        );
    }

    #[test]
    fn record_round_trips() {
        let session = UploadSession::start(Algorithm::Sha512, 1);
        assert_eq!(UploadSession::decode(&session.encode()).unwrap(), session);
        assert_eq!(
            UploadSession::decode(b"{").unwrap_err().code(),
            ErrorCode::BlobUploadUnknown
        );
    }

    #[test]
    fn adopts_algorithm_only_when_empty() {
        let mut session = UploadSession::start(Algorithm::Sha256, 0);
        assert!(session.adopt_algorithm(Algorithm::Sha512).unwrap());
        assert_eq!(session.hasher().unwrap().algorithm(), Algorithm::Sha512);
        session.offset = 1;
        assert!(!session.adopt_algorithm(Algorithm::Sha256).unwrap());
        assert!(session.adopt_algorithm(Algorithm::Sha512).unwrap());
    }

    /// A transcript: three chunks, each resumed from the stored record, verify at the end.
    #[test]
    fn chunked_transcript_verifies() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut session = UploadSession::start(Algorithm::Sha256, 0);
        let mut stored = Vec::new();
        for chunk in data.chunks(40) {
            let end = session.offset + chunk.len() as u64 - 1;
            let expected = session
                .check_chunk(Some(&format!("{}-{end}", session.offset)))
                .unwrap();
            let mut writer = PartWriter::new(session.hasher().unwrap(), 16);
            for part in writer.push(Bytes::copy_from_slice(chunk)) {
                stored.extend_from_slice(&part.concat());
            }
            assert_eq!(Some(writer.received()), expected);
            let received = writer.received();
            let (hasher, rest) = writer.finish();
            stored.extend_from_slice(&rest.unwrap_or_default().concat());
            session.offset += received;
            session.hash_state = hasher.save();
            session = UploadSession::decode(&session.encode()).unwrap();
        }
        assert_eq!(stored, data);
        session.verify(&Algorithm::Sha256.digest(&data)).unwrap();
        let wrong = session
            .verify(&Algorithm::Sha256.digest(b"other"))
            .unwrap_err();
        assert_eq!(wrong.code(), ErrorCode::DigestInvalid);
    }

    proptest! {
        #[test]
        fn parts_reassemble(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..10), part_size in 1usize..40) {
            let mut writer = PartWriter::new(Hasher::new(Algorithm::Sha256), part_size);
            let mut out = Vec::new();
            for chunk in &chunks {
                for part in writer.push(Bytes::from(chunk.clone())) {
                    let part = part.concat();
                    prop_assert_eq!(part.len(), part_size);
                    out.extend_from_slice(&part);
                }
            }
            let (hasher, rest) = writer.finish();
            if let Some(rest) = rest {
                let rest = rest.concat();
                prop_assert!(!rest.is_empty() && rest.len() < part_size);
                out.extend_from_slice(&rest);
            }
            let all: Vec<u8> = chunks.concat();
            prop_assert_eq!(&out, &all);
            prop_assert_eq!(hasher.finish(), Algorithm::Sha256.digest(&all));
        }
    }
}
