//! Storage with hooks a test watches or steers (what listings return, when part writes run,
//! a pause before each call), and the helpers tests share to send requests and read bodies.

pub(crate) mod images;

use std::ops::Range;

use async_trait::async_trait;
use berth::MemoryStorage;
use berth::storage::{
    ByteStream, Capabilities, Chunks, Durability, Key, ListPage, ObjectMeta, PartId, PartsUploadId,
    PutOptions, Storage, StorageError,
};
use bytes::Bytes;

/// What a test observes; every hook does nothing unless implemented.
#[allow(dead_code)] // Not every test that shares this module watches its storage.
#[async_trait]
pub(crate) trait Hooks: std::fmt::Debug + Send + Sync + 'static {
    /// A call to the storage begins (get, head, put, delete, list, complete_parts); it
    /// proceeds when this returns.
    async fn before(&self) {}
    /// A listing returned this many entries (objects and prefixes).
    fn listed(&self, _entries: usize) {}
    /// A part write begins; it proceeds when this returns.
    async fn part_started(&self) {}
    /// A part write ended.
    fn part_finished(&self) {}
    /// The parts of an upload were made durable (`sync_parts`).
    fn parts_synced(&self) {}
    /// An object was written (`put`).
    fn stored(&self, _key: &str) {}
    /// Parts were read back (`read_parts`) from byte `skip`.
    fn parts_read(&self, _skip: u64) {}
}

/// A storage (memory unless said) calling `hooks`.
#[allow(dead_code)] // Not every test that shares this module watches its storage.
#[derive(Debug, Default)]
pub(crate) struct Hooked<H, S = MemoryStorage> {
    pub(crate) inner: S,
    pub(crate) hooks: H,
}

#[async_trait]
impl<H: Hooks, S: Storage> Storage for Hooked<H, S> {
    async fn get(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        self.hooks.before().await;
        self.inner.get(key, range).await
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        self.hooks.before().await;
        self.inner.head(key).await
    }
    async fn put(
        &self,
        key: &Key,
        data: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        self.hooks.before().await;
        self.hooks.stored(key);
        self.inner.put(key, data, options).await
    }
    async fn delete(&self, key: &Key, durability: Durability) -> Result<(), StorageError> {
        self.hooks.before().await;
        self.inner.delete(key, durability).await
    }
    async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        self.hooks.before().await;
        let page = self
            .inner
            .list(prefix, delimiter, start_after, limit)
            .await?;
        self.hooks.listed(page.objects.len() + page.prefixes.len());
        Ok(page)
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn create_parts(&self, staging_key: &Key) -> Result<PartsUploadId, StorageError> {
        self.inner.create_parts(staging_key).await
    }
    async fn put_part(
        &self,
        upload: &PartsUploadId,
        number: u32,
        data: Chunks,
    ) -> Result<PartId, StorageError> {
        self.hooks.part_started().await;
        let part = self.inner.put_part(upload, number, data).await;
        self.hooks.part_finished();
        part
    }
    async fn sync_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError> {
        self.hooks.parts_synced();
        self.inner.sync_parts(upload).await
    }
    async fn complete_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        target: &Key,
    ) -> Result<(), StorageError> {
        self.hooks.before().await;
        self.inner.complete_parts(upload, parts, target).await
    }
    async fn abort_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError> {
        self.inner.abort_parts(upload).await
    }
    async fn read_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        skip: u64,
    ) -> Result<ByteStream, StorageError> {
        self.hooks.parts_read(skip);
        self.inner.read_parts(upload, parts, skip).await
    }
}

/// Sends one request with `headers` and `body`.
#[allow(dead_code)] // Not every test that shares this module sends requests this way.
pub(crate) async fn send<S: Storage>(
    registry: &berth::Registry<S>,
    method: berth::Method,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> berth::Response {
    let mut head = berth::RequestHead::from_target(method, target);
    for (name, value) in headers {
        head = head.with_header(*name, *value);
    }
    let body = if body.is_empty() {
        berth::empty_body()
    } else {
        berth::full_body(body.to_vec())
    };
    registry.handle(head, body).await
}

/// All of a response body's bytes.
#[allow(dead_code)] // Not every test that shares this module reads bodies.
pub(crate) async fn body_bytes(body: berth::Body) -> Vec<u8> {
    use futures_util::StreamExt;
    match body {
        berth::Body::Empty => Vec::new(),
        berth::Body::Full(bytes) => bytes.to_vec(),
        berth::Body::Stream(mut stream) => {
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.expect("chunk"));
            }
            out
        }
    }
}

/// A tiny deterministic random source (xorshift64*), for random schedules a seed replays.
#[allow(dead_code)] // Not every test that shares this module draws schedules.
#[derive(Debug)]
pub(crate) struct Dice(std::sync::atomic::AtomicU64);

#[allow(dead_code)]
impl Dice {
    pub(crate) fn new(seed: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        ))
    }

    /// A number below `below`.
    pub(crate) fn roll(&self, below: u64) -> u64 {
        use std::sync::atomic::Ordering;
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
    }
}

/// Yields to the scheduler a random number of times before each storage call, so that
/// concurrent requests interleave differently under each seed.
#[allow(dead_code)] // Not every test that shares this module draws schedules.
#[derive(Debug)]
pub(crate) struct Jitter(pub(crate) std::sync::Arc<Dice>);

#[async_trait]
impl Hooks for Jitter {
    async fn before(&self) {
        for _ in 0..self.0.roll(4) {
            tokio::task::yield_now().await;
        }
    }
}
