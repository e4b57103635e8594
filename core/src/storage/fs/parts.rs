//! Parts uploads: one file per upload that parts are appended to, and when its bytes are
//! durable.

use super::*;

/// The file in a parts upload's directory that its parts are appended to.
pub(super) const PARTS_DATA: &str = "data";
/// The file in a parts upload's directory that holds the boot under which its parts were
/// named before they were durable (see `Inner::sync_parts`).
pub(super) const PARTS_UNSYNCED: &str = "unsynced-boot";
/// How much of a part is held at once when parts must be copied into a new order.
pub(super) const COPY_BUFFER: usize = 1 << 20;

/// Opens a parts upload's data file under its exclusive lock, and checks that the path still
/// names it: an upload completed or aborted while this waited is gone (`NotFound`).
pub(super) fn open_locked(path: &Path) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound,
            _ => io_error(e),
        })?;
    file.lock().map_err(io_error)?;
    let held = file.metadata().map_err(io_error)?;
    match fs::metadata(path) {
        Ok(named) if named.dev() == held.dev() && named.ino() == held.ino() => Ok(file),
        _ => Err(StorageError::NotFound),
    }
}

/// The boot recorded in the parts upload `dir` by `Inner::record_unsynced`, if any.
pub(super) fn unsynced_boot(dir: &Path) -> Result<Option<String>, StorageError> {
    match fs::read_to_string(dir.join(PARTS_UNSYNCED)) {
        Ok(boot) => Ok(Some(boot)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(e)),
    }
}

/// Whether the filesystem holding `path` is one only this kernel mounts (a local disk's, or
/// memory), rather than a network filesystem that other machines write too.
#[cfg(target_os = "linux")]
pub(super) fn mounted_here_only(path: &Path) -> bool {
    const LOCAL: [u32; 8] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0xF2F5_2010, // f2fs
        0xCA45_1A4E, // bcachefs
        0x2FC1_2FC1, // zfs
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs (a container's)
    ];
    // The kernel's magic numbers are 32-bit; the field is wider on some targets.
    rustix::fs::statfs(path).is_ok_and(|stat| LOCAL.contains(&(stat.f_type as u32)))
}

/// Where a part lies in its upload's data file, from its id (`number-offset-length`).
pub(super) fn part_range(id: &str) -> Option<Range<u64>> {
    let mut fields = id.split('-');
    let (_number, offset, len) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    let offset: u64 = offset.parse().ok()?;
    Some(offset..offset.checked_add(len.parse().ok()?)?)
}

impl Inner {
    pub(super) fn parts_dir(&self, upload: &str) -> Result<PathBuf, StorageError> {
        if upload.is_empty()
            || !upload
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(StorageError::NotFound);
        }
        Ok(self.root.join(".berth/parts").join(upload))
    }

    /// Makes an upload's parts safe for a session record to name (see `Storage::sync_parts`).
    ///
    /// Where this kernel alone mounts the root (`page_cache_boot`), every process that reads
    /// the parts shares the page cache that holds them, until the machine stops; the next boot
    /// has another id. So the first call records this boot in the upload, durably, and the
    /// parts become durable only when the upload completes (`complete_parts` fsyncs them);
    /// parts recorded under another boot are refused as lost. A chunked push then no longer
    /// waits, at the end of each PATCH, for the disk to write the PATCH's last parts (figures
    /// in docs/storage.md). Elsewhere (a network filesystem, which other machines write), one
    /// fdatasync of the file.
    pub(super) fn sync_parts(&self, upload: &str) -> Result<(), StorageError> {
        let dir = self.parts_dir(upload)?;
        let synced = match &self.page_cache_boot {
            Some(boot) => match unsynced_boot(&dir)? {
                Some(recorded) if recorded == *boot => return Ok(()),
                Some(_) => return Err(StorageError::NotFound),
                None => self.record_unsynced(&dir, boot),
            },
            None => File::open(dir.join(PARTS_DATA)).and_then(|file| file.sync_data()),
        };
        match synced {
            // Completed or aborted meanwhile: nothing of it is left to make durable.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(io_error),
        }
    }

    /// Records, durably, that the parts in `dir` are named before they are durable under
    /// `boot`. Written under a name of its own and renamed into place: a reader never finds it
    /// half written.
    pub(super) fn record_unsynced(&self, dir: &Path, boot: &str) -> io::Result<()> {
        let temp = dir.join(format!("{PARTS_UNSYNCED}.{}", self.unique()));
        let written = File::create(&temp).and_then(|mut file| {
            file.write_all(boot.as_bytes())?;
            file.sync_all()
        });
        let placed = written.and_then(|()| fs::rename(&temp, dir.join(PARTS_UNSYNCED)));
        if placed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        placed?;
        sync_dir(dir)
    }

    /// Whether the parts in `dir` were named before they were durable under a boot other than
    /// this one: the machine has stopped since, and they may be lost.
    pub(super) fn unsynced_under_another_boot(&self, dir: &Path) -> Result<bool, StorageError> {
        Ok(unsynced_boot(dir)?.is_some_and(|recorded| Some(recorded) != self.page_cache_boot))
    }
}

impl Inner {
    /// Scratch files in `.berth/tmp` and parts uploads in `.berth/parts` that nothing has
    /// touched for `older_than` seconds (parts uploads only when no session names them):
    /// what processes killed while they wrote left behind.
    pub(super) fn remove_leftovers(
        &self,
        live: &[String],
        older_than: u64,
        dry_run: bool,
    ) -> io::Result<Leftovers> {
        let now = SystemTime::now();
        let old = |modified: SystemTime| {
            now.duration_since(modified)
                .is_ok_and(|age| age.as_secs() >= older_than)
        };
        let mut found = Leftovers::default();
        for entry in fs::read_dir(self.root.join(".berth/tmp"))?.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || !meta.modified().is_ok_and(old) {
                continue;
            }
            if dry_run || fs::remove_file(entry.path()).is_ok() {
                found.objects += 1;
                found.bytes += meta.len();
            }
        }
        for entry in fs::read_dir(self.root.join(".berth/parts"))?.flatten() {
            let name = entry.file_name();
            if live.iter().any(|id| *id == *name.to_string_lossy()) {
                continue;
            }
            // The upload's age is its newest file's.
            let (mut newest, mut bytes) = (entry.metadata()?.modified()?, 0);
            for file in fs::read_dir(entry.path())?.flatten() {
                let Ok(meta) = file.metadata() else { continue };
                newest = newest.max(meta.modified()?);
                bytes += meta.len();
            }
            if !old(newest) {
                continue;
            }
            if dry_run || fs::remove_dir_all(entry.path()).is_ok() {
                found.objects += 1;
                found.bytes += bytes;
            }
        }
        Ok(found)
    }
}
