//! Blob contents: a random buffer repeated, different for every (round, target), so no
//! server sees the same blob twice; its digest is computed before the clock starts.

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// How much of a blob one request body frame carries.
pub(crate) const FRAME: usize = 1 << 20;

/// A small deterministic generator (xorshift), for contents and sizes.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Bytes {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        Bytes::from(out)
    }
}

/// A blob of `size` bytes: `block` repeated (and cut), sent as 1 MiB frames.
pub(crate) struct Blob {
    pub(crate) block: Bytes,
    pub(crate) size: u64,
    pub(crate) digest: String,
}

impl Blob {
    pub(crate) fn new(seed: u64, size: u64) -> Self {
        let block = Rng::new(seed).bytes((16 << 20).min(size as usize).max(1));
        let mut blob = Self {
            block,
            size,
            digest: String::new(),
        };
        let mut hash = Sha256::new();
        for frame in blob.frames(0, size) {
            hash.update(&frame);
        }
        blob.digest = hex_digest(hash);
        blob
    }

    /// The frames of bytes `start..end`.
    pub(crate) fn frames(&self, start: u64, end: u64) -> Vec<Bytes> {
        let block = self.block.len() as u64;
        let mut frames = Vec::new();
        let mut at = start;
        while at < end {
            let offset = at % block;
            let len = (end - at).min(block - offset).min(FRAME as u64);
            frames.push(self.block.slice(offset as usize..(offset + len) as usize));
            at += len;
        }
        frames
    }
}

pub(crate) fn hex_digest(hash: Sha256) -> String {
    let bytes = hash.finalize();
    let mut out = String::from("sha256:");
    for b in bytes.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

pub(crate) fn digest_of(bytes: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(bytes);
    hex_digest(hash)
}
