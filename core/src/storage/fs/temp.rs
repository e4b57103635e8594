//! Temporary files and where they come from: unnamed files, kept spares of removed session
//! records, and how a finished one takes its place.

use super::*;

/// How a write is made durable (if at all), and where its file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syncing {
    /// Durable in place: the file is fsynced before it is named, its directory after.
    Fsync,
    /// Durable by a journal record (see `journal`), placed without fsyncs.
    Journaled,
    /// Not durable (upload-session state), written into a kept session record's inode.
    Recycled,
}

/// How a temporary file takes its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// Only where nothing is (`link`).
    Create,
    /// Over what is there (`rename`).
    Replace,
    /// Where nothing was a moment ago, replacing whatever appeared since.
    Fill,
}

/// A file written before it is published: unnamed where the filesystem allows (`O_TMPFILE`:
/// fsyncing it does not also sync a directory, which a new name would, and a
/// create-if-absent publish is one `link`), else named in the scratch directory.
pub(super) struct Temp {
    pub(super) file: File,
    pub(super) path: Option<PathBuf>,
}

impl Temp {
    /// Links the file at `path`; fails if something is there.
    pub(super) fn link(&self, path: &Path) -> io::Result<()> {
        match &self.path {
            Some(named) => fs::hard_link(named, path),
            #[cfg(target_os = "linux")]
            None => unnamed::link(&self.file, path),
            #[cfg(not(target_os = "linux"))]
            None => Err(io::Error::other("unnamed temporary files are Linux-only")),
        }
    }

    /// Gives the file, about to replace `current` (the target's metadata, if it exists), its
    /// modification time; returns the metadata it will have in place. The file is discarded
    /// if that fails.
    pub(super) fn stamp(
        &mut self,
        current: Option<&fs::Metadata>,
    ) -> Result<fs::Metadata, StorageError> {
        let stamped = self
            .file
            .set_modified(replacement_time(current))
            .and_then(|()| self.file.metadata());
        stamped.map_err(|e| {
            self.discard();
            io_error(e)
        })
    }

    /// Removes the file's scratch name, if it has one (an unnamed file vanishes when closed).
    pub(super) fn discard(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Unnamed temporary files on Linux.
#[cfg(target_os = "linux")]
pub(super) mod unnamed {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    use rustix::fs::{AtFlags, CWD, Mode, OFlags};

    /// An unnamed file on the filesystem of `dir`.
    pub(in crate::storage::fs) fn create(dir: &Path) -> io::Result<File> {
        let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(
            CWD,
            dir,
            flags,
            Mode::from_raw_mode(0o644),
        )?))
    }

    /// Gives `file` the name `path`, by its `/proc/self/fd` entry (naming it by descriptor
    /// directly, `AT_EMPTY_PATH`, needs a capability).
    pub(in crate::storage::fs) fn link(file: &File, path: &Path) -> io::Result<()> {
        let fd = format!("/proc/self/fd/{}", file.as_raw_fd());
        Ok(rustix::fs::linkat(
            CWD,
            fd.as_str(),
            CWD,
            path,
            AtFlags::SYMLINK_FOLLOW,
        )?)
    }

    /// Whether unnamed files can be made in `dir` and named: the kernel, the filesystem and
    /// `/proc` must all allow it.
    pub(in crate::storage::fs) fn work_in(dir: &Path, probe: &Path) -> bool {
        let linked = create(dir).and_then(|file| link(&file, probe));
        let _ = std::fs::remove_file(probe);
        linked.is_ok()
    }
}

impl Inner {
    /// Writes `data` to a new temporary file (see `Syncing`).
    pub(super) fn write_temp(&self, data: &[u8], how: Syncing, target: &Path) -> io::Result<Temp> {
        // Session records are written into the inodes of removed ones.
        let spare = match how {
            Syncing::Recycled => self.take_spare(),
            Syncing::Fsync | Syncing::Journaled => None,
        };
        let (mut temp, previous) = match spare {
            Some(spare) => spare,
            None => (self.create_temp(target)?, None),
        };
        let written = temp.file.write_all(data).and_then(|()| {
            if let Some(previous) = &previous {
                temp.file.set_len(data.len() as u64)?;
                // The inode is not new: its version must still change.
                temp.file.set_modified(replacement_time(Some(previous)))?;
            }
            if how == Syncing::Fsync {
                temp.file.sync_all()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => Ok(temp),
            Err(e) => {
                temp.discard();
                Err(e)
            }
        }
    }

    /// A new temporary file for `target`. An unnamed one is made in the target's directory,
    /// which ext4 allocates its inode near: the scratch directory's inode group would collect
    /// the inodes of deleted session records, and ext4 without a journal scans past every
    /// recently deleted inode when it allocates one.
    pub(super) fn create_temp(&self, target: &Path) -> io::Result<Temp> {
        let scratch = self.root.join(".berth/tmp");
        #[cfg(target_os = "linux")]
        if self.unnamed_temps {
            let dir = target.parent().unwrap_or(&scratch);
            // As in `place`: a concurrent delete may prune the directory just made; try again.
            // A directory being removed at that moment refuses an unnamed file with EPERM
            // rather than ENOENT. Should unnamed files keep failing, a named one will do.
            let mut attempts = 0;
            loop {
                match unnamed::create(dir) {
                    Ok(file) => return Ok(Temp { file, path: None }),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                        ) && attempts < 100 =>
                    {
                        attempts += 1;
                        ensure_dir(dir)?;
                    }
                    Err(_) => break,
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = target;
        let path = scratch.join(self.unique());
        Ok(Temp {
            file: File::create(&path)?,
            path: Some(path),
        })
    }

    /// A kept session record to write into, open, with its metadata.
    pub(super) fn take_spare(&self) -> Option<(Temp, Option<fs::Metadata>)> {
        loop {
            let path = self
                .spares
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            // Another process sharing the root may have removed it (see `remove_stale_spares`).
            if let Ok(file) = OpenOptions::new().write(true).open(&path) {
                let previous = file.metadata().ok();
                return Some((
                    Temp {
                        file,
                        path: Some(path),
                    },
                    previous,
                ));
            }
        }
    }

    /// Removes a session record but keeps its inode, to write a later record into.
    ///
    /// A registry frees one record per upload, and ext4 without a journal skips every inode
    /// freed in the last minutes (or more) when it allocates one, scanning past them: with
    /// records freed at hundreds a second, each allocation got slower the longer a registry
    /// ran. Kept inodes are neither freed nor allocated.
    pub(super) fn retire(&self, path: &Path) -> Result<(), StorageError> {
        if self
            .spares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
            >= SPARES
        {
            // Its folder stays: volatile objects come and go at hundreds a second, and a
            // folder removed and made again costs a directory inode each time (a filesystem
            // slows down as freed inodes pile up).
            return match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(e)),
                _ => Ok(()),
            };
        }
        let spare = self.root.join(".berth/spare").join(self.unique());
        match fs::rename(path, &spare) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(e)),
        }
        self.keep_spare(spare);
        Ok(())
    }

    /// Keeps the file at `spare` (in `.berth/spare/`, no longer a record) to write a later
    /// record into, unless enough are kept already.
    pub(super) fn keep_spare(&self, spare: PathBuf) {
        let mut spares = self.spares.lock().unwrap_or_else(PoisonError::into_inner);
        if spares.len() < SPARES {
            spares.push(spare);
        } else {
            drop(spares);
            let _ = fs::remove_file(spare);
        }
    }

    /// Puts a session record in the place of the one at `target` by exchanging the two files
    /// (`RENAME_EXCHANGE`), and keeps the replaced one as a spare (see `retire`); where the
    /// filesystem cannot exchange, renames it over the old one.
    ///
    /// A rename over the old record frees its inode, and ext4 writes a file renamed over
    /// another out at once (`auto_da_alloc`), queued behind whatever the disk is writing:
    /// during a chunked push, the parts. Each PATCH waited about 1 ms for it.
    pub(super) fn exchange(&self, mut temp: Temp, target: &Path) -> Result<(), StorageError> {
        let spares = self.root.join(".berth/spare");
        let spare = match temp.path.take() {
            Some(path) if path.starts_with(&spares) => path,
            named => {
                let path = spares.join(self.unique());
                let moved = match &named {
                    Some(named) => fs::rename(named, &path),
                    None => temp.link(&path),
                };
                if let Err(e) = moved {
                    temp.path = named;
                    temp.discard();
                    return Err(io_error(e));
                }
                path
            }
        };
        #[cfg(target_os = "linux")]
        {
            use rustix::io::Errno;
            let flags = rustix::fs::RenameFlags::EXCHANGE;
            match rustix::fs::renameat_with(rustix::fs::CWD, &spare, rustix::fs::CWD, target, flags)
            {
                Ok(()) => {
                    self.keep_spare(spare);
                    return Ok(());
                }
                // The filesystem (or kernel) cannot exchange.
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
                // The record was removed meanwhile (its session ended): not brought back.
                Err(Errno::NOENT) => {
                    let _ = fs::remove_file(&spare);
                    return Err(StorageError::NotFound);
                }
                Err(e) => {
                    let _ = fs::remove_file(&spare);
                    return Err(io_error(e.into()));
                }
            }
        }
        fs::rename(&spare, target).map_err(|e| {
            let _ = fs::remove_file(&spare);
            io_error(e)
        })
    }

    /// The temporary file's name in the scratch directory, given to it now if it has none.
    pub(super) fn name_temp<'a>(&self, temp: &'a mut Temp) -> io::Result<&'a Path> {
        if temp.path.is_none() {
            let path = self.root.join(".berth/tmp").join(self.unique());
            temp.link(&path)?;
            temp.path = Some(path);
        }
        Ok(temp.path.as_deref().unwrap_or(Path::new("")))
    }

    /// Renames (`replace`) or links the temporary file at `target`, making its directory.
    pub(super) fn place(&self, temp: &mut Temp, target: &Path, replace: bool) -> io::Result<()> {
        let parent = target.parent().unwrap_or(&self.root);
        if replace {
            self.name_temp(temp)?;
        }
        // The parent is made only when the first try finds it missing (an unnamed temporary
        // file was made in it, so it mostly exists: a `mkdir` first would cost a failed call
        // and a lock of the grandparent per object). A concurrent delete may prune the freshly
        // made parent; try again.
        let mut attempts = 0;
        loop {
            let result = match &temp.path {
                Some(path) if replace => fs::rename(path, target),
                _ => temp.link(target),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 100 => {
                    attempts += 1;
                    ensure_dir(parent)?;
                }
                other => return other,
            }
        }
    }
}
