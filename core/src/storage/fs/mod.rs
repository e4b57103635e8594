//! A local-disk backend with the durability registry:2 has and the atomicity it lacks.
//!
//! Every object is written to a private temporary file (unnamed, where Linux allows: see
//! `Temp`), fsynced, and then published with one `rename` (overwrite) or `link`
//! (create-if-absent), and the directory is fsynced, so a reader or a crash sees the old
//! object or the new one, never a torn one. On Linux a small object (a link, a manifest) is
//! published the same way without the fsyncs and made durable by a record in a journal
//! instead, which a crash of the machine replays (see `journal`). Compare-and-swap holds an
//! exclusive `flock` on one lock file, so several processes may share a root. Keys map onto
//! paths below the root unchanged, which is what makes a registry:2 root servable as it is;
//! berth's own scratch space lives in `<root>/.berth/`.
//!
//! Parts are appended to one file per upload, so an upload written in order is published as
//! that file: a blob's bytes are written once (see `complete_parts`). On a local filesystem
//! they become durable only then: until then the upload records the boot that wrote them, and
//! a later boot refuses them (see `Inner::sync_parts`).
//!
//! object_store's `LocalFileSystem` is not used here: it neither fsyncs nor supports
//! `PutMode::Update`, and it has no resumable multipart API (see docs/storage.md).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    ByteStream, Capabilities, Chunks, Durability, Key, Leftovers, ListPage, ObjectMeta, PartId,
    PartsUploadId, PutMode, PutOptions, Storage, StorageError, Version, fold, page_of, spans_after,
};

mod backend;
mod list;
mod parts;
mod read;
mod temp;
#[cfg(test)]
mod tests;
mod write;

use parts::*;
use read::*;
use temp::*;
#[cfg(target_os = "linux")]
mod journal;

/// Storage in a directory on a local filesystem.
#[derive(Debug, Clone)]
pub struct FsStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// Makes temporary names unique within this process; the pid makes them unique across.
    counter: AtomicU64,
    /// Whether temporary files are made unnamed (see `Temp`).
    #[cfg(target_os = "linux")]
    unnamed_temps: bool,
    /// Removed session records, kept under `.berth/spare/` to be written again (see
    /// `Inner::retire`).
    spares: Mutex<Vec<PathBuf>>,
    /// The journal of small durable writes, where the kernel tells boots apart (see
    /// `journal`); without it every durable write is fsynced in place.
    #[cfg(target_os = "linux")]
    journal: Option<journal::Journal>,
    /// This boot's id where the root's filesystem is one this kernel alone mounts: parts are
    /// then named in session records before they are durable (see `Inner::sync_parts`).
    /// `None` elsewhere, where `sync_parts` is an fdatasync.
    page_cache_boot: Option<String>,
    /// Buffers that streamed reads are read into, kept for the next ones.
    read_buffers: Arc<ReadBuffers>,
}

/// How many removed session records a process keeps to write again: more than the uploads
/// that end at once on a busy registry.
const SPARES: usize = 256;

impl FsStorage {
    /// Storage rooted at `root`, which is created if missing.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        return Self::with_journal(root.into(), journal::Journal::open);
        #[cfg(not(target_os = "linux"))]
        Self::with_journal(root.into())
    }

    /// Storage rooted at `root`, with the journal `open_journal` gives (Linux); the journals
    /// of earlier processes are applied before it returns.
    fn with_journal(
        root: PathBuf,
        #[cfg(target_os = "linux")] open_journal: impl FnOnce(
            &Path,
        )
            -> io::Result<Option<journal::Journal>>,
    ) -> io::Result<Self> {
        fs::create_dir_all(root.join(".berth/tmp"))?;
        fs::create_dir_all(root.join(".berth/parts"))?;
        fs::create_dir_all(root.join(".berth/spare"))?;
        remove_stale_spares(&root.join(".berth/spare"));
        let pid = std::process::id();
        #[cfg(target_os = "linux")]
        let unnamed_temps = unnamed::work_in(
            &root.join(".berth/tmp"),
            &root.join(format!(".berth/tmp/{pid}-probe")),
        );
        #[cfg(target_os = "linux")]
        let page_cache_boot = journal::boot_id().filter(|_| mounted_here_only(&root));
        #[cfg(not(target_os = "linux"))]
        let page_cache_boot = None;
        let inner = Inner {
            #[cfg(target_os = "linux")]
            journal: open_journal(&root)?,
            page_cache_boot,
            root,
            counter: AtomicU64::new(0),
            #[cfg(target_os = "linux")]
            unnamed_temps,
            spares: Mutex::new(Vec::new()),
            read_buffers: Arc::default(),
        };
        #[cfg(target_os = "linux")]
        inner.recover()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Starts writing `len` bytes of `file` from `offset` to disk, without waiting: what
    /// `put_part` does with each part it has written (on Linux; elsewhere nothing).
    /// `berth::testing` lends it to the benchmark, which measures a disk as berth writes it.
    ///
    /// The disk then writes each part while the next is received, and the fsync that makes
    /// the parts durable (when the upload completes, and on a network filesystem also before
    /// a session record names them: see `Inner::sync_parts`) finds little left to write. An
    /// fdatasync per part instead flushed the disk's cache for each, and no fsync until the
    /// end, without this, let the whole blob wait to be written then (measured: docs/
    /// decisions/2026-12-07-measured-and-adopted.md). `POSIX_FADV_DONTNEED` starts writeback of the range's dirty pages;
    /// pages being written stay cached.
    pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
        #[cfg(target_os = "linux")]
        {
            // Advice only: a failure costs speed, never data, as the fdatasync still follows.
            let _ = rustix::fs::fadvise(
                file,
                offset,
                std::num::NonZeroU64::new(len),
                rustix::fs::Advice::DontNeed,
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (file, offset, len);
    }

    /// Allocates the `len` bytes of `file` from `offset` that a part is about to be written
    /// into, without changing the file's size (on Linux; elsewhere nothing): what `put_part`
    /// does before it writes each part (the benchmark measures both through `berth::testing`).
    ///
    /// ext4 then allocates a part's blocks in one call, where it would otherwise reserve and
    /// later allocate them page by page as they are written: the write path's share of the
    /// server's CPU fell from 25% to 17% (measured: docs/decisions/
    /// 2026-12-07-measured-and-adopted.md). What a failed write leaves allocated past the end is freed when the
    /// upload completes (the file is truncated to its parts) or is removed.
    pub(crate) fn preallocate(file: &File, offset: u64, len: u64) {
        #[cfg(target_os = "linux")]
        if len > 0 {
            // Advice only: without it (a filesystem that cannot, a full disk) the write
            // allocates as it goes, or reports the error itself.
            let _ = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, offset, len);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (file, offset, len);
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(StorageError::backend)?
    }
}

fn io_error(error: io::Error) -> StorageError {
    match error.kind() {
        io::ErrorKind::NotFound => StorageError::NotFound,
        io::ErrorKind::AlreadyExists => StorageError::AlreadyExists,
        _ => StorageError::backend(error),
    }
}

fn version_of(meta: &fs::Metadata) -> Version {
    // Inode numbers are reused and file times are coarse, so neither alone tells two writes
    // apart; `stamp` makes every replacement's mtime later than the one it replaced.
    Version::new(format!(
        "{:x}-{:x}.{:x}-{:x}",
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.size()
    ))
}

/// The modification time for the file about to replace `current`: now, or just after the
/// current one's if that is not earlier, so the version of a replaced object always changes
/// (see `version_of`).
fn replacement_time(current: Option<&fs::Metadata>) -> SystemTime {
    let now = SystemTime::now();
    match current.and_then(|meta| meta.modified().ok()) {
        Some(modified) if modified >= now => modified + std::time::Duration::from_nanos(1),
        _ => now,
    }
}

/// The metadata of `path`, or `None` if nothing is there.
fn metadata_if_any(path: &Path) -> Result<Option<fs::Metadata>, StorageError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(e)),
    }
}

/// Removes the session records that processes no longer running kept in `dir` (their names
/// begin with the keeping process's id); the live ones' stay. Where `/proc` is missing, all
/// are kept: they are few and small.
fn remove_stale_spares(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let pid = name.split('-').next().unwrap_or_default();
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Creates `dir` and whatever parents it lacks. Unlike `fs::create_dir_all`, a directory that
/// exists costs one failed `mkdir` and no `stat`: most objects go into existing directories.
/// Should `dir` be a file, the write into it fails instead.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    // A concurrent delete may prune a parent made a moment ago: make it again, a few times.
    let mut attempts = 0;
    loop {
        match make_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 100 => attempts += 1,
            other => return other,
        }
    }
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                ensure_dir(parent)?;
            }
            match fs::create_dir(dir) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn object_meta(meta: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        size: meta.size(),
        version: version_of(meta),
        last_modified: modified_millis(meta),
    }
}

/// A file's mtime, in milliseconds since the Unix epoch.
fn modified_millis(meta: &fs::Metadata) -> Option<u64> {
    let since = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

impl Inner {
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let relative = Path::new(key);
        let safe = !key.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            && !key.starts_with(".berth");
        if !safe {
            return Err(StorageError::backend(format!("unsafe storage key {key:?}")));
        }
        Ok(self.root.join(relative))
    }

    fn unique(&self) -> String {
        super::unique_name(&self.counter)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
