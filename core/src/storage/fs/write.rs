//! Writes and deletes: durable in place, by the journal, or not at all (session state); and
//! recovery of what an interrupted process left.

use super::*;

impl Inner {
    /// Writes `data` to `target` (see `Storage::put` and `Syncing`).
    pub(super) fn put(
        &self,
        target: &Path,
        data: &[u8],
        mode: PutMode,
        how: Syncing,
    ) -> Result<ObjectMeta, StorageError> {
        let durable = how == Syncing::Fsync;
        let mut temp = self.write_temp(data, how, target).map_err(io_error)?;
        let meta = match mode {
            PutMode::Create => {
                let meta = temp.file.metadata().map_err(io_error);
                self.publish(temp, target, Placement::Create, durable)?;
                meta?
            }
            PutMode::Overwrite => {
                let current = metadata_if_any(target)?;
                let meta = temp.stamp(current.as_ref())?;
                let how = match current {
                    Some(_) => Placement::Replace,
                    None => Placement::Fill,
                };
                self.publish(temp, target, how, durable)?;
                meta
            }
            PutMode::Update(expected) => {
                let lock = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(self.root.join(".berth/cas.lock"))
                    .map_err(io_error)?;
                lock.lock().map_err(io_error)?;
                let current = metadata_if_any(target)?;
                if current.as_ref().map(version_of).as_ref() != Some(&expected) {
                    temp.discard();
                    return Err(StorageError::PreconditionFailed);
                }
                let meta = temp.stamp(current.as_ref())?;
                if how == Syncing::Recycled {
                    self.exchange(temp, target)?;
                } else {
                    self.publish(temp, target, Placement::Replace, durable)?;
                }
                drop(lock);
                meta
            }
        };
        // Renamed or linked into place, the file is the one written: same inode, same
        // time, same size, so the same version.
        Ok(object_meta(&meta))
    }

    /// Writes a durable object in place, with its fsyncs: one too large for the journal, or
    /// any where there is no journal (small ones with a journal are written by
    /// `FsStorage::put` on the calling thread). Where the journal holds records of the key,
    /// the write is recorded too, so that replay does not bring the older content back.
    pub(super) fn put_in_place(
        &self,
        key: &str,
        target: &Path,
        data: &[u8],
        mode: PutMode,
    ) -> Result<ObjectMeta, StorageError> {
        #[cfg(target_os = "linux")]
        if let Some(journal) = &self.journal
            && journal.holds(key)
        {
            let (meta, pending) = journal.record(key, journal::Kind::External, &[], || {
                self.put(target, data, mode, Syncing::Fsync)
            })?;
            journal.commit(pending)?;
            return Ok(meta);
        }
        let _ = key;
        self.put(target, data, mode, Syncing::Fsync)
    }

    /// Deletes a durable object, recording that where the journal holds the key.
    pub(super) fn delete_durable(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        #[cfg(target_os = "linux")]
        if let Some(journal) = &self.journal
            && journal.holds(key)
        {
            let ((), pending) =
                journal.record(key, journal::Kind::Delete, &[], || self.delete(path))?;
            return journal.commit(pending);
        }
        let _ = key;
        self.delete(path)
    }

    /// Applies what the journals of processes before this one recorded (see `journal`):
    /// a crash of the machine may have lost the objects they name.
    #[cfg(target_os = "linux")]
    pub(super) fn recover(&self) -> io::Result<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let stale = journal.stale()?;
        if stale.replay.is_empty() && stale.settled.is_empty() {
            return Ok(());
        }
        for record in journal::final_records(&stale.replay)? {
            // A key that is not safe was never written.
            let Ok(path) = self.path(&record.key) else {
                continue;
            };
            // Written again after the record (by a process still running, say): newer.
            let written_after = fs::symlink_metadata(&path).is_ok_and(|meta| {
                let nanos = meta.mtime() as i128 * 1_000_000_000 + i128::from(meta.mtime_nsec());
                nanos > i128::from(record.stamp)
            });
            if written_after {
                continue;
            }
            let applied = match record.kind {
                journal::Kind::Put => self
                    .put(&path, &record.data, PutMode::Overwrite, Syncing::Journaled)
                    .map(drop),
                journal::Kind::Delete => self.delete(&path),
                journal::Kind::External => Ok(()),
            };
            applied.map_err(io::Error::other)?;
        }
        // The objects replayed and those the page cache kept for the exited processes.
        journal::sync_filesystem(&self.root)?;
        journal.remove(&[stale.replay.as_slice(), &stale.settled].concat())
    }

    /// Moves a finished temporary file to `target` and makes that durable if `durable`.
    pub(super) fn publish(
        &self,
        mut temp: Temp,
        target: &Path,
        how: Placement,
        durable: bool,
    ) -> Result<(), StorageError> {
        let placed = match how {
            Placement::Create => self.place(&mut temp, target, false),
            Placement::Replace => self.place(&mut temp, target, true),
            // An unnamed file is linked straight into place, which spares naming it first;
            // should something have appeared meanwhile, it is replaced after all.
            Placement::Fill if temp.path.is_none() => match self.place(&mut temp, target, false) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.place(&mut temp, target, true)
                }
                other => other,
            },
            Placement::Fill => self.place(&mut temp, target, true),
        };
        // A link leaves the scratch name behind; a rename that failed, too.
        if how == Placement::Create || placed.is_err() {
            temp.discard();
        }
        placed.map_err(io_error)?;
        if durable {
            let parent = target.parent().unwrap_or(&self.root);
            sync_dir(parent).map_err(io_error)?;
        }
        Ok(())
    }

    /// Removes the file at `path` and the directories that leaves empty.
    pub(super) fn delete(&self, path: &Path) -> Result<(), StorageError> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(e)),
        }
        if let Some(parent) = path.parent() {
            self.prune(parent);
        }
        Ok(())
    }

    /// Removes empty directories from `dir` up to (not including) the root.
    pub(super) fn prune(&self, mut dir: &Path) {
        while dir != self.root && dir.starts_with(&self.root) {
            if fs::remove_dir(dir).is_err() {
                return;
            }
            match dir.parent() {
                Some(parent) => dir = parent,
                None => return,
            }
        }
    }
}
