//! The session record and its transitions.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, ErrorCode};
use crate::ids::{Key, PartId, PartsUploadId};
use crate::range::ContentRange;
use crate::reference::RepositoryName;

/// An open upload session: where it stands, what it wrote, and who writes to it now. Its
/// fields change only through the transitions below, each named after what happened; a
/// transition the session's state does not allow is an [`IllegalTransition`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Record", into = "Record")]
pub struct UploadSession {
    repository: String,
    offset: u64,
    /// The hash midstate ([`Hasher::save`]) after `hashed` bytes.
    hash_state: String,
    /// How many bytes `hash_state` covers (at most `offset`): fewer while the process that
    /// received the last chunk still hashes it, the rest lying in the parts.
    hashed: u64,
    parts_upload: Option<PartsUploadId>,
    parts: Vec<PartId>,
    tail: Option<StagedTail>,
    started_at: u64,
    /// The principal that opened it, when the registry authenticates.
    owner: Option<String>,
    state: State,
}

/// What a session is doing between requests.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Taking chunks; no request holds it.
    Open,
    /// A request writes parts now, on storage whose parts are positional.
    Writing(WriterClaim),
    /// Its content is verified and published under this digest; the request that finished
    /// it failed before the repository's link was written, so a retry of the same PUT only
    /// links it.
    Published(String),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Writing(_) => "being written",
            Self::Published(_) => "published",
        }
    }
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

/// Bytes of an upload staged outside its parts: on storage with a minimum part size (S3's
/// 5 MiB), a chunk's remainder waits there for the next chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedTail {
    /// The object holding them.
    pub key: Key,
    /// How many bytes.
    pub len: u64,
}

/// A hash midstate and how many of the upload's bytes it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Midstate {
    /// Bytes hashed.
    pub covers: u64,
    /// [`Hasher::save`] after them.
    pub state: String,
}

/// A transition the session's state does not allow: the driver's mistake, or a record that
/// changed under a request in a way it cannot continue from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IllegalTransition {
    /// What happened.
    pub event: &'static str,
    /// The state it happened in.
    pub state: &'static str,
}

impl std::fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an upload that is {} cannot take: {}",
            self.state, self.event
        )
    }
}

impl std::error::Error for IllegalTransition {}

impl From<IllegalTransition> for Error {
    fn from(illegal: IllegalTransition) -> Self {
        Error::new(ErrorCode::BlobUploadInvalid, illegal.to_string()).with_status(409)
    }
}

impl UploadSession {
    /// A new session in `repository`, hashing with `algorithm`, started at `now` (seconds).
    pub fn start(algorithm: Algorithm, repository: &RepositoryName, now: u64) -> Self {
        Self {
            repository: repository.as_str().to_owned(),
            offset: 0,
            hash_state: Hasher::new(algorithm).save(),
            hashed: 0,
            parts_upload: None,
            parts: Vec::new(),
            tail: None,
            started_at: now,
            owner: None,
            state: State::Open,
        }
    }

    /// Binds the session to the principal that opens it: no one else finds it.
    pub fn owned_by(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    /// The principal that opened the session, if the registry authenticated it.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
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

    /// The repository the session uploads to; a request naming another one does not find it.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Bytes received so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// When the session started (seconds since the Unix epoch, by the host's clock).
    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    /// The storage's parts upload, once the first part is written.
    pub fn parts_upload(&self) -> Option<&PartsUploadId> {
        self.parts_upload.as_ref()
    }

    /// Part ids, in order.
    pub fn parts(&self) -> &[PartId] {
        &self.parts
    }

    /// The number the next part is written under (parts count from 1).
    pub fn next_part_number(&self) -> u32 {
        u32::try_from(self.parts.len() + 1).unwrap_or(u32::MAX)
    }

    /// Received bytes staged outside the parts.
    pub fn tail(&self) -> Option<&StagedTail> {
        self.tail.as_ref()
    }

    /// The digest the content was published under, when only its link is missing.
    pub fn published(&self) -> Option<&str> {
        match &self.state {
            State::Published(digest) => Some(digest),
            _ => None,
        }
    }

    /// Whether a request holds a claim to write parts.
    pub fn has_writer(&self) -> bool {
        matches!(self.state, State::Writing(_))
    }

    /// Whether another request is writing parts to this session at `now`.
    pub fn is_claimed(&self, now: u64) -> bool {
        matches!(&self.state, State::Writing(claim) if claim.until > now)
    }

    /// How many bytes the hash midstate covers: `offset`, unless the last chunk is still
    /// being hashed.
    pub fn hashed_offset(&self) -> u64 {
        self.hashed.min(self.offset)
    }

    /// The midstate the record holds.
    pub fn midstate(&self) -> Midstate {
        Midstate {
            covers: self.hashed_offset(),
            state: self.hash_state.clone(),
        }
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

    fn illegal(&self, event: &'static str) -> IllegalTransition {
        IllegalTransition {
            event,
            state: self.state.name(),
        }
    }

    fn refuse_if_published(&self, event: &'static str) -> Result<(), IllegalTransition> {
        match self.state {
            State::Published(_) => Err(self.illegal(event)),
            _ => Ok(()),
        }
    }

    /// A request claims the session to write parts, until `until`. Refused with the 416
    /// [`UploadSession::busy`] while another request's claim holds at `now`.
    pub fn claim(&mut self, token: String, until: u64, now: u64) -> Result<(), Error> {
        self.refuse_if_published("a claim")?;
        if self.is_claimed(now) {
            return Err(self.busy());
        }
        self.state = State::Writing(WriterClaim { token, until });
        Ok(())
    }

    /// The request writing parts is done (its chunk recorded, or failed). Returns whether a
    /// claim was held.
    pub fn release(&mut self) -> bool {
        let held = self.has_writer();
        if held {
            self.state = State::Open;
        }
        held
    }

    /// The storage created the parts upload the session's parts go into.
    pub fn parts_created(&mut self, upload: PartsUploadId) -> Result<(), IllegalTransition> {
        self.refuse_if_published("a new parts upload")?;
        if self.parts_upload.is_some() {
            return Err(self.illegal("a second parts upload"));
        }
        self.parts_upload = Some(upload);
        Ok(())
    }

    /// The next part was written, with this id.
    pub fn part_written(&mut self, part: PartId) -> Result<(), IllegalTransition> {
        self.refuse_if_published("a part")?;
        if self.parts_upload.is_none() {
            return Err(self.illegal("a part before its parts upload"));
        }
        self.parts.push(part);
        Ok(())
    }

    /// A chunk's remainder was staged as the session's tail.
    pub fn tail_staged(&mut self, tail: StagedTail) -> Result<(), IllegalTransition> {
        self.refuse_if_published("a staged tail")?;
        if self.tail.is_some() {
            return Err(self.illegal("a second staged tail"));
        }
        self.tail = Some(tail);
        Ok(())
    }

    /// The staged tail was read into the chunk being received; returns it, to delete once
    /// the advanced record is stored.
    pub fn tail_consumed(&mut self) -> Option<StagedTail> {
        self.tail.take()
    }

    /// A chunk of `len` bytes was received and fully hashed: `hasher` is after all of it.
    pub fn chunk_received(&mut self, len: u64, hasher: &Hasher) -> Result<(), IllegalTransition> {
        self.refuse_if_published("a chunk")?;
        self.offset += len;
        self.hash_state = hasher.save();
        self.hashed = self.offset;
        Ok(())
    }

    /// A chunk of `len` bytes was received while its hasher still works on its last bytes:
    /// the record keeps the furthest midstate `known` (or its own), and another process
    /// continues from there by reading the rest back from the parts.
    pub fn chunk_received_hashing(
        &mut self,
        len: u64,
        known: impl IntoIterator<Item = Midstate>,
    ) -> Result<(), IllegalTransition> {
        self.refuse_if_published("a chunk")?;
        self.offset += len;
        let mut furthest = self.midstate();
        for midstate in known {
            if midstate.covers > furthest.covers && midstate.covers <= self.offset {
                furthest = midstate;
            }
        }
        self.hash_state = furthest.state;
        self.hashed = furthest.covers;
        Ok(())
    }

    /// The content was verified and published as `digest`, its link not yet written.
    pub fn content_published(&mut self, digest: &Digest) -> Result<(), IllegalTransition> {
        match &self.state {
            State::Published(earlier) if earlier != digest.as_str() => {
                Err(self.illegal("a second digest"))
            }
            _ => {
                self.state = State::Published(digest.as_str().to_owned());
                Ok(())
            }
        }
    }
}

/// The record as stored, field for field as earlier versions wrote it, so that a session
/// survives an upgrade of the registry in the middle of an upload.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(default)]
    repository: String,
    offset: u64,
    hash_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hashed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parts_upload: Option<PartsUploadId>,
    #[serde(default)]
    parts: Vec<PartId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail: Option<StagedTail>,
    started_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writer: Option<WriterClaim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    published: Option<String>,
}

impl From<Record> for UploadSession {
    fn from(record: Record) -> Self {
        let state = match (record.published, record.writer) {
            (Some(digest), _) => State::Published(digest),
            (None, Some(claim)) => State::Writing(claim),
            (None, None) => State::Open,
        };
        Self {
            repository: record.repository,
            offset: record.offset,
            hash_state: record.hash_state,
            hashed: record.hashed.unwrap_or(record.offset).min(record.offset),
            parts_upload: record.parts_upload,
            parts: record.parts,
            tail: record.tail,
            started_at: record.started_at,
            owner: record.owner,
            state,
        }
    }
}

impl From<UploadSession> for Record {
    fn from(session: UploadSession) -> Self {
        let (writer, published) = match session.state {
            State::Open => (None, None),
            State::Writing(claim) => (Some(claim), None),
            State::Published(digest) => (None, Some(digest)),
        };
        Self {
            repository: session.repository,
            offset: session.offset,
            hash_state: session.hash_state,
            hashed: (session.hashed < session.offset).then_some(session.hashed),
            parts_upload: session.parts_upload,
            parts: session.parts,
            tail: session.tail,
            started_at: session.started_at,
            owner: session.owner,
            writer,
            published,
        }
    }
}
