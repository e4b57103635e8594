//! An in-memory backend: for tests, for embedding hosts that keep nothing, and as the
//! reference implementation of the contract.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{
    ByteStream, Capabilities, Chunks, Durability, Key, ListPage, ObjectMeta, PartId, PartsUploadId,
    PutMode, PutOptions, Storage, StorageError, Version, fold, page_of, spans_after,
};

/// Storage held in process memory. Cloning is not offered: share it with `Arc`.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    state: Mutex<State>,
    min_part_size: u64,
    max_parts: Option<u32>,
}

#[derive(Debug, Default)]
struct State {
    /// Each object: its bytes, version and when it was written.
    objects: BTreeMap<String, (Bytes, u64, Option<u64>)>,
    uploads: HashMap<PartsUploadId, HashMap<PartId, Bytes>>,
    /// Source of versions, upload ids and part ids: unique for the life of the store.
    counter: u64,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same store, declaring (like S3) that an upload may have at most `max` parts.
    pub fn with_max_parts(self, max: u32) -> Self {
        Self {
            max_parts: Some(max),
            ..self
        }
    }

    /// An empty store that, like S3, refuses to complete parts uploads whose parts (but the
    /// last) are smaller than `min` bytes: for testing what object stores require.
    pub fn with_min_part_size(min: u64) -> Self {
        Self {
            min_part_size: min,
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated (each update is a
        // single insert or remove), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

fn meta(data: &Bytes, version: u64, last_modified: Option<u64>) -> ObjectMeta {
    ObjectMeta {
        size: data.len() as u64,
        version: Version::new(version.to_string()),
        last_modified,
    }
}

/// The writer's clock, in milliseconds since the Unix epoch. WebAssembly has no system clock
/// here; its hosts use JavaScript storage, which dates objects itself.
fn now_millis() -> Option<u64> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since.ok().and_then(|t| u64::try_from(t.as_millis()).ok())
    }
    #[cfg(target_arch = "wasm32")]
    {
        None
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl Storage for MemoryStorage {
    async fn get(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        let (data, version, modified) = self
            .lock()
            .objects
            .get(key.as_str())
            .cloned()
            .ok_or(StorageError::NotFound)?;
        let meta = meta(&data, version, modified);
        let body = match range {
            Some(range) => {
                let end = usize::try_from(range.end.min(meta.size)).unwrap_or(data.len());
                let start = usize::try_from(range.start).unwrap_or(end).min(end);
                data.slice(start..end)
            }
            None => data,
        };
        let stream = futures_util::stream::iter([Ok(body)]);
        Ok((meta, Box::pin(stream)))
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        let state = self.lock();
        let (data, version, modified) = state
            .objects
            .get(key.as_str())
            .ok_or(StorageError::NotFound)?;
        Ok(meta(data, *version, *modified))
    }

    async fn put(
        &self,
        key: &Key,
        data: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        let mut state = self.lock();
        match (&options.mode, state.objects.get(key.as_str())) {
            (PutMode::Create, Some(_)) => return Err(StorageError::AlreadyExists),
            (PutMode::Update(_), None) => return Err(StorageError::PreconditionFailed),
            (PutMode::Update(expected), Some((_, version, _)))
                if expected.as_str() != version.to_string() =>
            {
                return Err(StorageError::PreconditionFailed);
            }
            _ => {}
        }
        let version = state.next();
        let meta = meta(&data, version, now_millis());
        state
            .objects
            .insert(key.to_string(), (data, version, meta.last_modified));
        Ok(meta)
    }

    async fn delete(&self, key: &Key, _: Durability) -> Result<(), StorageError> {
        self.lock().objects.remove(key.as_str());
        Ok(())
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        let state = self.lock();
        let entries = state
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| fold(prefix, key, delimiter))
            .collect();
        let modified = |key: &str| {
            state
                .objects
                .get(key)
                .and_then(|(_, _, modified)| *modified)
        };
        Ok(page_of(entries, start_after, limit, modified))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            min_part_size: self.min_part_size,
            max_parts: self.max_parts,
            positional_parts: false,
            readable_parts: true,
        }
    }

    async fn create_parts(&self, _staging_key: &Key) -> Result<PartsUploadId, StorageError> {
        let mut state = self.lock();
        let id = PartsUploadId::new(format!("upload-{}", state.next()));
        state.uploads.insert(id.clone(), HashMap::new());
        Ok(id)
    }

    async fn put_part(
        &self,
        upload: &PartsUploadId,
        number: u32,
        data: Chunks,
    ) -> Result<PartId, StorageError> {
        let data = data.concat().into();
        let mut state = self.lock();
        let part_id = PartId::new(format!("{number}-{}", state.next()));
        let parts = state
            .uploads
            .get_mut(upload)
            .ok_or(StorageError::NotFound)?;
        parts.insert(part_id.clone(), data);
        Ok(part_id)
    }

    async fn complete_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        target: &Key,
    ) -> Result<(), StorageError> {
        let mut state = self.lock();
        if state.objects.contains_key(target.as_str()) {
            return Err(StorageError::AlreadyExists);
        }
        let stored = state.uploads.get(upload).ok_or(StorageError::NotFound)?;
        let mut data = BytesMut::new();
        for (i, part) in parts.iter().enumerate() {
            let bytes = stored.get(part).ok_or(StorageError::NotFound)?;
            if i + 1 < parts.len() && (bytes.len() as u64) < self.min_part_size {
                return Err(StorageError::backend(format!(
                    "part {} has {} bytes, less than the minimum {}",
                    i + 1,
                    bytes.len(),
                    self.min_part_size
                )));
            }
            data.extend_from_slice(bytes);
        }
        state.uploads.remove(upload);
        let version = state.next();
        state
            .objects
            .insert(target.to_string(), (data.freeze(), version, now_millis()));
        Ok(())
    }

    async fn abort_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError> {
        self.lock().uploads.remove(upload);
        Ok(())
    }

    async fn read_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        skip: u64,
    ) -> Result<ByteStream, StorageError> {
        let state = self.lock();
        let stored = state.uploads.get(upload).ok_or(StorageError::NotFound)?;
        let bytes = parts
            .iter()
            .map(|part| stored.get(part).ok_or(StorageError::NotFound))
            .collect::<Result<Vec<_>, _>>()?;
        let whole = bytes.iter().map(|part| 0..part.len() as u64);
        let read: Vec<_> = bytes
            .iter()
            .zip(spans_after(whole, skip))
            .filter(|(_, left)| !left.is_empty())
            .map(|(part, left)| Ok(part.slice(left.start as usize..left.end as usize)))
            .collect();
        Ok(Box::pin(futures_util::stream::iter(read)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let report = crate::storage::conformance::run(&MemoryStorage::new()).await;
        assert!(report.passed(), "{report}");
        let report = crate::storage::conformance::run(&MemoryStorage::with_min_part_size(5)).await;
        assert!(report.passed(), "{report}");
    }

    /// A small read of a large object is refused as such, not as a backend failure.
    #[tokio::test]
    async fn small_reads_refuse_large_objects() {
        use crate::storage::StorageExt;
        let storage = MemoryStorage::new();
        storage
            .put(
                &"k".into(),
                Bytes::from_static(b"12345"),
                PutMode::Create.into(),
            )
            .await
            .unwrap();
        assert_eq!(storage.read_small(&"k".into(), 5).await.unwrap().1, "12345");
        let refused = storage.read_small(&"k".into(), 4).await.unwrap_err();
        assert!(matches!(
            refused,
            StorageError::TooLarge {
                size: Some(5),
                limit: 4
            }
        ));
        assert_eq!(
            refused.to_string(),
            "object is 5 bytes, more than the 4 expected"
        );
    }
}
