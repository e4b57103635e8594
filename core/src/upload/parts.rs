//! Gathering a chunk's bytes into parts while they are hashed.

use bytes::Bytes;

use crate::digest::Hasher;

/// A part's bytes, as the chunks they arrived in: parts are passed on without being copied
/// into one buffer (a copy that would also keep a part-sized allocation per thread resident).
pub type Chunks = Vec<Bytes>;

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
