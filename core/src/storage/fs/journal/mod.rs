//! The journal of small durable writes (Linux).
//!
//! A durable object is made durable where it lies with two fsyncs: the file's, before it is
//! named, and its directory's, after. For a small object (a link, a manifest, an index entry)
//! those two writes and cache flushes cost more than the object. So a small durable write is
//! placed like any other but without the fsyncs, and recorded, whole, in this process's
//! journal file; one `fdatasync` of the journal makes every record appended before it durable
//! (group commit). A write returns once its record is durable. A writer on an async task
//! (`Journal::durable`) places and records its object on its own thread and leaves the
//! fdatasync to the journal's thread, so that no thread of the caller's waits for the disk.
//!
//! Should the machine stop before the objects reach the disk by themselves, the next storage
//! opened on the root writes the journaled objects again ("replay", `FsStorage::new`). A
//! process holds an exclusive `flock` on its journal file while it runs; a file nobody holds
//! is an exited process's. One written under another boot (`/proc/sys/kernel/random/boot_id`;
//! or by another machine sharing the root) may name objects a page cache lost, and is
//! replayed, except over an object written after the record (a later mtime). One written
//! under this boot names only objects this page cache still holds: a `syncfs` makes them
//! durable, and the file goes. A held file is left alone, so several processes, in any
//! containers or on any machines, may share a root.
//!
//! Once a journal file grows past its limit, a checkpoint starts a new file, makes everything
//! the old one recorded durable in place with one `syncfs`, and removes the old file.
//!
//! A key's records apply in order, the last deciding. So a write that bypasses the journal (a
//! large object, a delete) of a key the journal holds records for is recorded too, as
//! `External` or `Delete`, or replay would bring the journaled content back.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::storage::StorageError;

mod record;

pub(super) use record::{Kind, Record, encode, read_records};

/// The largest object written through the journal. Links and index entries are 71 bytes, a
/// typical manifest a few KiB.
pub(super) const JOURNALED_MAX: usize = 64 * 1024;
/// The size past which a journal file is checkpointed: some 20,000 links.
const CHECKPOINT_AT: u64 = 4 << 20;
/// Locks that order the writes of one key (by its hash): the order the objects are placed
/// in is the order their records are appended in.
const KEY_LOCKS: usize = 64;
/// This boot's id, or `None` where the kernel does not say (the journal is then not used).
pub(super) fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id: String = id.trim().chars().filter(|c| *c != '-').collect();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

/// Makes every file on the filesystem of `path` durable.
pub(super) fn sync_filesystem(path: &Path) -> io::Result<()> {
    Ok(rustix::fs::syncfs(File::open(path)?)?)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Names journal files uniquely across the storages of a process.
static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// A process's journal on one root.
#[derive(Debug)]
pub(super) struct Journal {
    /// `<root>/.berth/journal`.
    dir: PathBuf,
    /// The filesystem's root, what a checkpoint syncs.
    root: PathBuf,
    boot: String,
    limit: u64,
    key_locks: Vec<Mutex<()>>,
    state: Mutex<State>,
    /// The records waited for by `durable`, and the thread that makes them durable.
    commits: Arc<Commits>,
}

/// Records that writers on async tasks wait for (`Journal::durable`). One thread of the
/// journal's own makes them durable, so that a task waits without holding a thread: each
/// fdatasync covers every record appended before it starts, and the records appended while
/// it runs wait for the next.
#[derive(Debug, Default)]
struct Commits {
    queue: Mutex<CommitQueue>,
    arrived: Condvar,
}

#[derive(Debug, Default)]
struct CommitQueue {
    waiting: Vec<(Pending, tokio::sync::oneshot::Sender<Result<(), String>>)>,
    /// Whether the thread is running.
    started: bool,
    /// Set when the journal is dropped: the thread ends once nothing waits.
    closed: bool,
}

#[derive(Debug, Default)]
struct State {
    /// The file records are appended to; made at the first record.
    current: Option<Arc<LogFile>>,
    /// When the last record was appended (see `Record::stamp`).
    last_stamp: u64,
    /// Keys (`key_hash`) with records in the current file.
    keys: HashSet<u64>,
    /// Keys with records in a file being checkpointed.
    retiring: HashSet<u64>,
    checkpointing: bool,
}

#[derive(Debug)]
struct LogFile {
    file: File,
    path: PathBuf,
    /// Bytes appended so far.
    appended: AtomicU64,
    /// Bytes made durable so far; held while an fdatasync runs, so that writers arriving
    /// meanwhile wait for it and then, mostly, find their records durable already.
    synced: Mutex<u64>,
    /// The same figure, read without waiting for an fdatasync to end (`Journal::durable`).
    durable: AtomicU64,
}

impl LogFile {
    /// Makes the records up to `end`, and all appended before the fdatasync starts, durable.
    fn sync_to(&self, end: u64) -> io::Result<()> {
        let mut synced = lock(&self.synced);
        if *synced < end {
            let appended = self.appended.load(Ordering::Acquire);
            self.file.sync_data()?;
            *synced = appended;
            self.durable.store(appended, Ordering::Release);
        }
        Ok(())
    }
}

/// A record appended but not yet durable: where it ends, in which file.
#[must_use = "a record is durable only once committed"]
#[derive(Debug)]
pub(super) struct Pending {
    log: Arc<LogFile>,
    end: u64,
}

/// A journal file grown past its limit, to checkpoint (`Journal::checkpoint`) on a thread
/// that may wait for a `syncfs`.
#[must_use = "a full journal file is checkpointed by the writer that filled it"]
pub(super) struct Due(Arc<LogFile>);

/// The journal files a new storage found: to replay, and to remove once the filesystem is
/// synced.
#[derive(Debug, Default)]
pub(super) struct Stale {
    pub(super) replay: Vec<PathBuf>,
    pub(super) settled: Vec<PathBuf>,
    /// Their locks, held until they are removed: a process starting meanwhile leaves them.
    held: Vec<File>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Journal {
    /// The journal of `root`; `None` where the boot cannot be told (see `boot_id`).
    pub(super) fn open(root: &Path) -> io::Result<Option<Self>> {
        Self::open_with_limit(root, CHECKPOINT_AT)
    }

    pub(super) fn open_with_limit(root: &Path, limit: u64) -> io::Result<Option<Self>> {
        let Some(boot) = boot_id() else {
            return Ok(None);
        };
        let dir = root.join(".berth/journal");
        fs::create_dir_all(&dir)?;
        Ok(Some(Self {
            dir,
            root: root.to_owned(),
            boot,
            limit,
            key_locks: (0..KEY_LOCKS).map(|_| Mutex::new(())).collect(),
            state: Mutex::new(State::default()),
            commits: Arc::default(),
        }))
    }

    /// The journal files of processes no longer running: those of an earlier boot to replay,
    /// those of this one only to remove after a `syncfs`.
    pub(super) fn stale(&self) -> io::Result<Stale> {
        let mut stale = Stale::default();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some((boot, _)) = name.split_once('.') else {
                continue;
            };
            // Held: a running process's, or one that another new storage is settling.
            let file = OpenOptions::new().write(true).open(entry.path())?;
            if file.try_lock().is_err() {
                continue;
            }
            stale.held.push(file);
            if boot == self.boot {
                stale.settled.push(entry.path());
            } else {
                stale.replay.push(entry.path());
            }
        }
        // By name (boot, pid, creation time): one process's files in the order it wrote them,
        // the order `final_records` uses to break ties between records with equal stamps.
        stale.replay.sort();
        Ok(stale)
    }

    /// Removes journal files whose objects are durable, and makes that durable.
    pub(super) fn remove(&self, files: &[PathBuf]) -> io::Result<()> {
        for file in files {
            match fs::remove_file(file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        sync_dir(&self.dir)
    }

    /// Whether `key` has records that a replay would apply.
    pub(super) fn holds(&self, key: &str) -> bool {
        let state = lock(&self.state);
        let hash = key_hash(key);
        state.keys.contains(&hash) || state.retiring.contains(&hash)
    }

    /// Runs `write` (which places the object at `key`, or deletes it) and, if it succeeds,
    /// appends its record; the caller commits the returned `Pending`. The writes of one key
    /// are placed and recorded in the same order.
    pub(super) fn record<T>(
        &self,
        key: &str,
        kind: Kind,
        data: &[u8],
        write: impl FnOnce() -> Result<T, StorageError>,
    ) -> Result<(T, Option<Pending>), StorageError> {
        let hash = key_hash(key);
        let _ordered = lock(&self.key_locks[(hash % KEY_LOCKS as u64) as usize]);
        let written = write()?;
        let mut state = lock(&self.state);
        match self.append(&mut state, kind, key, data) {
            Ok(pending) => {
                state.keys.insert(hash);
                Ok((written, Some(pending)))
            }
            // The object is placed but unrecorded: make it durable another way.
            Err(error) => self.salvage(&mut state, error).map(|()| (written, None)),
        }
    }

    fn append(&self, state: &mut State, kind: Kind, key: &str, data: &[u8]) -> io::Result<Pending> {
        let log = match &state.current {
            Some(log) => Arc::clone(log),
            None => {
                let log = Arc::new(self.create_file()?);
                state.current = Some(Arc::clone(&log));
                log
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        state.last_stamp = now.max(state.last_stamp + 1);
        let record = encode(kind, state.last_stamp, key, data);
        // Appends are serialized by the state lock.
        let start = log.appended.load(Ordering::Acquire);
        log.file.write_all_at(&record, start)?;
        let end = start + record.len() as u64;
        log.appended.store(end, Ordering::Release);
        Ok(Pending { log, end })
    }

    /// A new journal file, its name durable before any record relies on it. Its first
    /// `limit` bytes are written (zeros) and synced now: a record written over them changes
    /// neither the file's size nor its block map, so its fdatasync writes the data alone, not
    /// also the inode (as an append would). Reading stops at the zeros.
    fn create_file(&self) -> io::Result<LogFile> {
        let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = self.dir.join(format!(
            "{}.{}.{nanos:032}.{n}",
            self.boot,
            std::process::id()
        ));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Held while this process runs (the kernel lets go when it exits): see `stale`.
        file.lock()?;
        let zeros = vec![0u8; 64 * 1024];
        let mut written = 0;
        while written < self.limit {
            let n = zeros
                .len()
                .min(usize::try_from(self.limit - written).unwrap_or(usize::MAX));
            file.write_all(&zeros[..n])?;
            written += n as u64;
        }
        file.sync_all()?;
        sync_dir(&self.dir)?;
        Ok(LogFile {
            file,
            path,
            appended: AtomicU64::new(0),
            synced: Mutex::new(0),
            durable: AtomicU64::new(0),
        })
    }

    /// After a failed append: the current file may end in a partial record, after which no
    /// record could be read back. Everything placed so far is made durable in place, and the
    /// file is dropped; the next record starts a new one.
    fn salvage(&self, state: &mut State, error: io::Error) -> Result<(), StorageError> {
        sync_filesystem(&self.root).map_err(|_| StorageError::backend(error))?;
        if let Some(log) = state.current.take() {
            let _ = self.remove(std::slice::from_ref(&log.path));
        }
        state.keys.clear();
        Ok(())
    }

    /// Returns once the record is durable.
    pub(super) fn commit(&self, pending: Option<Pending>) -> Result<(), StorageError> {
        let Some(Pending { log, end }) = pending else {
            return Ok(());
        };
        log.sync_to(end).map_err(StorageError::backend)?;
        self.checkpoint_if_due(&log);
        Ok(())
    }

    /// Returns once the record is durable, without holding a thread meanwhile (the journal's
    /// own thread runs the fdatasync); for a writer on an async task. Returns the file to
    /// checkpoint if the record filled it.
    pub(super) async fn durable(
        &self,
        pending: Option<Pending>,
    ) -> Result<Option<Due>, StorageError> {
        let Some(pending) = pending else {
            return Ok(None);
        };
        let log = Arc::clone(&pending.log);
        if log.durable.load(Ordering::Acquire) < pending.end {
            let (done, result) = tokio::sync::oneshot::channel();
            self.wait_for(pending, done)?;
            match result.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(StorageError::backend(error)),
                Err(_) => return Err(StorageError::backend("the journal's thread stopped")),
            }
        }
        let full = log.appended.load(Ordering::Acquire) >= self.limit;
        Ok(full.then_some(Due(log)))
    }

    /// Queues `pending` for the journal's thread, starting the thread if it is not running.
    fn wait_for(
        &self,
        pending: Pending,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    ) -> Result<(), StorageError> {
        let mut queue = lock(&self.commits.queue);
        if !queue.started {
            let commits = Arc::clone(&self.commits);
            std::thread::Builder::new()
                .name("berth-journal".into())
                .spawn(move || commit_waiting(&commits))
                .map_err(StorageError::backend)?;
            queue.started = true;
        }
        queue.waiting.push((pending, done));
        drop(queue);
        self.commits.arrived.notify_one();
        Ok(())
    }

    /// Checkpoints a file `durable` found full (see `checkpoint_if_due`).
    pub(super) fn checkpoint(&self, due: Due) {
        self.checkpoint_if_due(&due.0);
    }

    /// Once `log` (the current file) has grown past the limit: new records go to a new file,
    /// a `syncfs` makes durable in place all that `log` recorded, and `log` is removed.
    fn checkpoint_if_due(&self, log: &Arc<LogFile>) {
        if log.appended.load(Ordering::Acquire) < self.limit {
            return;
        }
        let old = {
            let mut state = lock(&self.state);
            let is_current = state
                .current
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, log));
            if state.checkpointing || !is_current {
                return;
            }
            state.checkpointing = true;
            state.retiring = std::mem::take(&mut state.keys);
            state.current.take()
        };
        // Every object `old` records was placed before its record was appended, so before
        // `current` was taken: the sync covers them all.
        let synced = sync_filesystem(&self.root).and_then(|()| {
            self.remove(
                old.iter()
                    .map(|log| log.path.clone())
                    .collect::<Vec<_>>()
                    .as_slice(),
            )
        });
        let mut state = lock(&self.state);
        state.checkpointing = false;
        let retired = std::mem::take(&mut state.retiring);
        if synced.is_err() {
            // The old file stays, replayed after a crash and removed by the next storage
            // opened on the root: its keys still count as journaled.
            state.keys.extend(retired);
        }
    }
}

#[cfg(test)]
impl Journal {
    /// The bytes appended to the current file and how many of them are durable.
    pub(super) fn progress(&self) -> Option<(u64, u64)> {
        let state = lock(&self.state);
        let log = state.current.as_ref()?;
        Some((
            log.appended.load(Ordering::Acquire),
            log.durable.load(Ordering::Acquire),
        ))
    }

    /// What the journal's thread holds while it runs.
    pub(super) fn commit_thread_holds(&self) -> std::sync::Weak<dyn std::any::Any + Send + Sync> {
        let commits: Arc<dyn std::any::Any + Send + Sync> = self.commits.clone();
        Arc::downgrade(&commits)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        lock(&self.commits.queue).closed = true;
        self.commits.arrived.notify_all();
    }
}

/// The journal's thread: makes the queued records durable, one fdatasync per file for all
/// that queued meanwhile, until the journal is dropped.
fn commit_waiting(commits: &Commits) {
    loop {
        let batch = {
            let mut queue = lock(&commits.queue);
            while queue.waiting.is_empty() && !queue.closed {
                queue = commits
                    .arrived
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if queue.waiting.is_empty() {
                return;
            }
            std::mem::take(&mut queue.waiting)
        };
        // Mostly one file; two while a checkpoint moves records to a new one. A file whose
        // waiting records an fdatasync already covered (one that was running when they
        // queued) is not synced again.
        let mut files: Vec<(Arc<LogFile>, u64)> = Vec::new();
        for (pending, _) in &batch {
            match files
                .iter_mut()
                .find(|(log, _)| Arc::ptr_eq(log, &pending.log))
            {
                Some((_, end)) => *end = (*end).max(pending.end),
                None => files.push((Arc::clone(&pending.log), pending.end)),
            }
        }
        let synced: Vec<(Arc<LogFile>, Result<(), String>)> = files
            .into_iter()
            .map(|(log, end)| {
                let result = log.sync_to(end).map_err(|e| e.to_string());
                (log, result)
            })
            .collect();
        for (pending, done) in batch {
            let result = synced
                .iter()
                .find(|(log, _)| Arc::ptr_eq(log, &pending.log))
                .map_or(Ok(()), |(_, result)| result.clone());
            // The writer may have gone (its request dropped): nothing to tell.
            let _ = done.send(result);
        }
    }
}

/// A key's hash: what the journal remembers of the keys it holds (a collision costs only a
/// needless record), and what picks the lock that orders a key's writes.
fn key_hash(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The last record of each key in `files` (read in order, merged by stamp): what replay
/// applies.
pub(super) fn final_records(files: &[PathBuf]) -> io::Result<Vec<Record>> {
    let mut all = Vec::new();
    for (order, file) in files.iter().enumerate() {
        for (position, record) in read_records(file)?.into_iter().enumerate() {
            all.push((record.stamp, order, position, record));
        }
    }
    all.sort_by_key(|(stamp, order, position, _)| (*stamp, *order, *position));
    let mut last: HashMap<String, Record> = HashMap::new();
    for (_, _, _, record) in all {
        last.insert(record.key.clone(), record);
    }
    let mut records: Vec<Record> = last.into_values().collect();
    records.sort_by_key(|record| record.stamp);
    Ok(records)
}
