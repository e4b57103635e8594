//! A storage that fails on purpose: a wrapper over any [`Storage`] that makes chosen or
//! random operations fail before they run, fail after they ran (the change is made but the
//! caller hears an error, as when a connection drops before the answer), or run slowly.
//!
//! The registry must answer each request with either a success or a clear error, leave
//! nothing half-visible, and be safe to retry; the transcripts and both conformance suites run
//! over this wrapper to check it (`core/tests/transcripts.rs`, `tests/faults.sh`). `berth
//! serve` wraps its storage in it when `BERTH_FAULTS` is set (for tests only).

use std::future::Future;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    ByteStream, Capabilities, Chunks, Durability, Key, ListPage, ObjectMeta, PartId, PartsUploadId,
    PutOptions, Storage, StorageError,
};
use crate::registry::Pause;

/// Which faults to inject, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Faults {
    /// Seeds the choice of the operations that fail.
    pub seed: u64,
    /// Of every thousand operations, how many fault.
    pub per_mille: u32,
    /// Whether a fault may make an operation fail before it runs.
    pub fail_before: bool,
    /// Whether a fault may run an operation and then report that it failed.
    pub fail_after: bool,
    /// Whether a fault may delay an operation (by up to 20 ms, with a timer).
    pub slow: bool,
}

impl Faults {
    /// Every kind of fault, in `per_mille` of the operations.
    pub fn all(seed: u64, per_mille: u32) -> Self {
        Self {
            seed,
            per_mille,
            fail_before: true,
            fail_after: true,
            slow: true,
        }
    }

    /// Parses `seed:per_mille[:kinds]`, kinds being letters `b` (fail before), `a` (fail
    /// after) and `s` (slow); all three when left out. For `BERTH_FAULTS`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split(':');
        let seed = fields.next()?.trim().parse().ok()?;
        let per_mille = fields.next()?.trim().parse().ok().filter(|n| *n <= 1000)?;
        let kinds = fields.next().unwrap_or("bas");
        if fields.next().is_some() || kinds.chars().any(|c| !"bas".contains(c)) {
            return None;
        }
        Some(Self {
            seed,
            per_mille,
            fail_before: kinds.contains('b'),
            fail_after: kinds.contains('a'),
            slow: kinds.contains('s'),
        })
    }
}

/// What happens to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Run,
    FailBefore,
    FailAfter,
    Slow(Duration),
}

/// A [`Storage`] that injects [`Faults`] into the one it wraps.
pub struct FaultyStorage<S> {
    inner: S,
    faults: Faults,
    dice: Mutex<u64>,
    pause: Option<Pause>,
    enabled: AtomicBool,
    injected: AtomicU64,
}

impl<S> std::fmt::Debug for FaultyStorage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStorage")
            .field("faults", &self.faults)
            .field("injected", &self.injected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner`; slow operations wait on `pause` (without one, none is slowed).
    pub fn new(inner: S, faults: Faults, pause: Option<Pause>) -> Self {
        Self {
            dice: Mutex::new(faults.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            inner,
            faults,
            pause,
            enabled: AtomicBool::new(true),
            injected: AtomicU64::new(0),
        }
    }

    /// The storage it wraps.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Turns the faults on or off (on when made).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn roll(&self, below: u64) -> u64 {
        let mut dice = self
            .dice
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut x = *dice;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *dice = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
    }

    /// Decides the fate of an operation; `changes` says whether it changes storage (only
    /// those can fail after running).
    fn fate(&self, changes: bool) -> Fate {
        if !self.enabled.load(Ordering::Relaxed)
            || self.roll(1000) >= u64::from(self.faults.per_mille)
        {
            return Fate::Run;
        }
        let mut kinds = Vec::with_capacity(3);
        if self.faults.fail_before {
            kinds.push(Fate::FailBefore);
        }
        if self.faults.fail_after && changes {
            kinds.push(Fate::FailAfter);
        }
        if self.faults.slow && self.pause.is_some() {
            kinds.push(Fate::Slow(Duration::from_millis(1 + self.roll(20))));
        }
        if kinds.is_empty() {
            return Fate::Run;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        kinds[self.roll(kinds.len() as u64) as usize]
    }

    /// Runs `operation` as its fate says.
    async fn run<T>(
        &self,
        what: &'static str,
        changes: bool,
        operation: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        match self.fate(changes) {
            Fate::Run => operation.await,
            Fate::FailBefore => Err(injected(what, "before it ran")),
            Fate::FailAfter => {
                operation.await?;
                Err(injected(what, "after it ran"))
            }
            Fate::Slow(delay) => {
                if let Some(pause) = &self.pause {
                    pause(delay).await;
                }
                operation.await
            }
        }
    }
}

fn injected(what: &str, when: &str) -> StorageError {
    StorageError::backend(format!("injected fault: {what} failed {when}"))
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<S: Storage> Storage for FaultyStorage<S> {
    async fn get(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        self.run("get", false, self.inner.get(key, range)).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        self.run("head", false, self.inner.head(key)).await
    }

    async fn put(
        &self,
        key: &Key,
        data: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        self.run("put", true, self.inner.put(key, data, options))
            .await
    }

    async fn delete(&self, key: &Key, durability: Durability) -> Result<(), StorageError> {
        self.run("delete", true, self.inner.delete(key, durability))
            .await
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        let listing = self.inner.list(prefix, delimiter, start_after, limit);
        self.run("list", false, listing).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn presigned_get(
        &self,
        key: &Key,
        expires_in: u64,
    ) -> Result<Option<String>, StorageError> {
        self.inner.presigned_get(key, expires_in).await
    }

    async fn create_parts(&self, staging_key: &Key) -> Result<PartsUploadId, StorageError> {
        self.run("create_parts", true, self.inner.create_parts(staging_key))
            .await
    }

    async fn put_part(
        &self,
        upload: &PartsUploadId,
        number: u32,
        data: Chunks,
    ) -> Result<PartId, StorageError> {
        let part = self.inner.put_part(upload, number, data);
        self.run("put_part", true, part).await
    }

    async fn sync_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError> {
        self.run("sync_parts", true, self.inner.sync_parts(upload))
            .await
    }

    async fn complete_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        target: &Key,
    ) -> Result<(), StorageError> {
        let completed = self.inner.complete_parts(upload, parts, target);
        self.run("complete_parts", true, completed).await
    }

    async fn abort_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError> {
        self.run("abort_parts", true, self.inner.abort_parts(upload))
            .await
    }

    async fn remove_leftovers(
        &self,
        live: &[PartsUploadId],
        older_than: u64,
        dry_run: bool,
    ) -> Result<super::Leftovers, StorageError> {
        self.inner.remove_leftovers(live, older_than, dry_run).await
    }

    async fn read_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        skip: u64,
    ) -> Result<ByteStream, StorageError> {
        let read = self.inner.read_parts(upload, parts, skip);
        self.run("read_parts", false, read).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_variable() {
        assert_eq!(Faults::parse("7:100"), Some(Faults::all(7, 100)));
        let only_before = Faults::parse("1:5:b").unwrap();
        assert!(only_before.fail_before && !only_before.fail_after && !only_before.slow);
        for bad in ["", "1", "x:1", "1:1001", "1:1:z", "1:1:b:x"] {
            assert_eq!(Faults::parse(bad), None, "{bad}");
        }
    }
}
