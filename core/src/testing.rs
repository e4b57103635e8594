//! The knobs the benchmark measures berth's disk writes with: not part of the supported API,
//! and only built with the `testing` feature.

#[cfg(feature = "fs")]
use std::fs::File;

/// Starts writing a just-written range of `file` to the disk, as `FsStorage` does after each
/// part (see its `put_part`).
#[cfg(feature = "fs")]
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    crate::storage::FsStorage::start_writeback(file, offset, len);
}

/// Allocates the range of `file` a part is about to be written into, as `FsStorage` does
/// before each part.
#[cfg(feature = "fs")]
pub fn preallocate(file: &File, offset: u64, len: u64) {
    crate::storage::FsStorage::preallocate(file, offset, len);
}
