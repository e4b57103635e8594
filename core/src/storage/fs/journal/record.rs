//! The journal's record format: what a record says, how it is written and read back.

use std::fs;
use std::io;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// A record's checksum: the first bytes of its SHA-256.
const CHECKSUM: usize = 16;

/// Length, kind, stamp, key length.
const HEADER: usize = 4 + 1 + 8 + 4;

/// What a record says happened to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::storage::fs) enum Kind {
    /// The object was written with the record's content.
    Put = 1,
    /// The object was deleted.
    Delete = 2,
    /// The object was written durably without the journal: replay leaves it.
    External = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Put),
            2 => Some(Self::Delete),
            3 => Some(Self::External),
            _ => None,
        }
    }
}

/// One record read back from a journal file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::storage::fs) struct Record {
    pub(in crate::storage::fs) kind: Kind,
    /// When it was appended (nanoseconds since the epoch, strictly rising in a process):
    /// orders the records of several processes' journals.
    pub(in crate::storage::fs) stamp: u64,
    pub(in crate::storage::fs) key: String,
    pub(in crate::storage::fs) data: Vec<u8>,
}

/// Encodes a record: length (of all that follows it), kind, stamp, key length, key, data,
/// checksum (of all that precedes it). A record cut short by a crash fails its checksum, and
/// reading stops there.
pub(in crate::storage::fs) fn encode(kind: Kind, stamp: u64, key: &str, data: &[u8]) -> Vec<u8> {
    let length = HEADER - 4 + key.len() + data.len() + CHECKSUM;
    let mut record = Vec::with_capacity(4 + length);
    record.extend_from_slice(&(length as u32).to_le_bytes());
    record.push(kind as u8);
    record.extend_from_slice(&stamp.to_le_bytes());
    record.extend_from_slice(&(key.len() as u32).to_le_bytes());
    record.extend_from_slice(key.as_bytes());
    record.extend_from_slice(data);
    let checksum = Sha256::digest(&record);
    record.extend_from_slice(&checksum[..CHECKSUM]);
    record
}

/// The records of a journal file, up to the first that is incomplete or damaged.
pub(in crate::storage::fs) fn read_records(path: &Path) -> io::Result<Vec<Record>> {
    let bytes = fs::read(path)?;
    let mut records = Vec::new();
    let mut rest = bytes.as_slice();
    while let Some((record, after)) = decode(rest) {
        records.push(record);
        rest = after;
    }
    Ok(records)
}

fn decode(bytes: &[u8]) -> Option<(Record, &[u8])> {
    let length = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let whole = bytes.get(..4usize.checked_add(length)?)?;
    let (body, checksum) = whole.split_at(whole.len().checked_sub(CHECKSUM)?);
    if body.len() < HEADER || Sha256::digest(body)[..CHECKSUM] != *checksum {
        return None;
    }
    let kind = Kind::from_byte(body[4])?;
    let stamp = u64::from_le_bytes(body[5..13].try_into().ok()?);
    let key_length = u32::from_le_bytes(body[13..17].try_into().ok()?) as usize;
    let key = body.get(HEADER..HEADER.checked_add(key_length)?)?;
    let record = Record {
        kind,
        stamp,
        key: String::from_utf8(key.to_vec()).ok()?,
        data: body[HEADER + key_length..].to_vec(),
    };
    Some((record, &bytes[whole.len()..]))
}
