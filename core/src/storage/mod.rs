//! The storage contract every backend implements, and the conveniences built on it.
//!
//! # Contract
//!
//! Keys ([`Key`]) are `/`-separated UTF-8 paths without a leading `/`. A backend promises:
//!
//! - **Atomic publish.** [`Storage::put`] and [`Storage::complete_parts`] make an object
//!   visible whole or not at all; a reader never sees a partial object. On a local disk the
//!   data is durable (fsync) before the call returns.
//! - **Durability is the caller's to ask.** A write or delete asks for [`Durability::Durable`]
//!   (the default) or [`Durability::Volatile`] (state the registry rebuilds rather than
//!   recovers, written and removed at a high rate: upload-session records, leases). A backend
//!   may skip syncs for volatile objects and keep their folders when they empty; it never
//!   infers durability from a key's name. Treating every write as durable is always correct.
//! - **Conditional writes.** [`PutMode::Create`] fails with [`StorageError::AlreadyExists`]
//!   when the key exists; [`PutMode::Update`] succeeds only while the object's version is the
//!   one given, else [`StorageError::PreconditionFailed`]. Concurrent writers lose nothing.
//! - **Versions.** Every [`ObjectMeta`] carries an opaque [`Version`] that changes whenever
//!   the object's content is replaced, and (from `head` and `get`) when it was last written,
//!   by the storage's clock. Versions, parts uploads ([`PartsUploadId`]) and parts
//!   ([`PartId`]) are names the backend hands out, each a type of its own.
//! - **Ranges.** [`Storage::get`] with a range returns exactly those bytes; callers check the
//!   range against [`Storage::head`] first.
//! - **Listing.** [`Storage::list`] returns keys in lexical order after `start_after`; with a
//!   delimiter, keys below the next `/` are folded into one prefix ending in `/`. Each object
//!   listed carries the modification time `head` reports ([`Listed::last_modified`]), so that
//!   ages are read from a listing, not from a `head` per object.
//! - **Parts.** A large object is written as parts (`create_parts`, `put_part`,
//!   `complete_parts`, `abort_parts`). Unless the backend declares
//!   [`Capabilities::positional_parts`], part ids are unique even when two writers send the same
//!   part number, so a writer that loses a compare-and-swap never damages the winner's parts.
//!   Nothing written as parts is visible until `complete_parts` publishes it.
//! - **Deletes** are idempotent: deleting a missing key is not an error.
//!
//! [`conformance`] checks all of this, and every backend runs it in its tests.

use std::ops::Range;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

pub mod conformance;
mod faults;
#[cfg(feature = "fs")]
mod fs;
mod memory;
#[cfg(feature = "object-store")]
mod object_store;
#[cfg(feature = "s3")]
mod s3;

pub use faults::{Faults, FaultyStorage};
#[cfg(feature = "fs")]
pub use fs::FsStorage;
pub use memory::MemoryStorage;
#[cfg(feature = "object-store")]
pub use object_store::ObjectStoreStorage;
#[cfg(feature = "s3")]
pub use s3::S3Settings;

/// `Send` on native targets, nothing on wasm, where JavaScript futures are not `Send`.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}
/// `Send` on native targets, nothing on wasm, where JavaScript futures are not `Send`.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// `Sync` on native targets, nothing on wasm, where storage holds JavaScript objects (and
/// there is only one thread).
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> MaybeSync for T {}
/// `Sync` on native targets, nothing on wasm, where storage holds JavaScript objects (and
/// there is only one thread).
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSync for T {}

pub use crate::ids::{Key, PartId, PartsUploadId, Version};
pub use crate::stream::{ByteStream, StorageError};
pub use crate::upload::Chunks;

/// What a backend reports of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// Opaque version for [`PutMode::Update`].
    pub version: Version,
    /// When the object was last written, in milliseconds since the Unix epoch, by the
    /// storage's own clock (a file's mtime, S3's `LastModified`, the writer's clock for memory,
    /// C and JavaScript storage), so that ages (a grace period, a retention rule) never
    /// depend on a host's clock. [`Storage::head`] and [`Storage::get`] report it;
    /// [`Storage::put`] may not (`None`), where the backend's answer to a write lacks it.
    pub last_modified: Option<u64>,
}

/// How long a write or a delete must last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Survives the machine stopping once the call returns.
    #[default]
    Durable,
    /// May be lost when the machine stops, and comes and goes often: a backend may skip
    /// syncs, and keep the object's folder when it empties.
    Volatile,
}

/// What [`Storage::put`] is asked to do: how it treats an existing object, and how long the
/// write must last. A [`PutMode`] converts into durable options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOptions {
    /// How an existing object is treated.
    pub mode: PutMode,
    /// How long the write must last.
    pub durability: Durability,
}

impl From<PutMode> for PutOptions {
    fn from(mode: PutMode) -> Self {
        Self {
            mode,
            durability: Durability::Durable,
        }
    }
}

impl PutMode {
    /// Options for a [`Durability::Volatile`] write in this mode.
    pub fn volatile(self) -> PutOptions {
        PutOptions {
            mode: self,
            durability: Durability::Volatile,
        }
    }
}

/// How [`Storage::put`] treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Write only if the key does not exist.
    Create,
    /// Write only if the object still has this version (compare-and-swap).
    Update(Version),
}

/// What [`Storage::remove_leftovers`] found (and, unless asked only to count, removed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Scratch files and parts uploads.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What a backend can do with parts, declared once ([`Storage::capabilities`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The smallest part (but the last) the backend accepts; 0 when any size goes.
    pub min_part_size: u64,
    /// The most parts one upload may have (S3 allows 10,000); `None` for no limit.
    pub max_parts: Option<u32>,
    /// Whether a part written again under the same number replaces the earlier one, as in
    /// the native multipart uploads of S3, GCS, Azure and R2. The registry then lets one
    /// request at a time write a session's parts (it claims the session first).
    pub positional_parts: bool,
    /// Whether [`Storage::read_parts`] reads back the parts of an upload not yet completed (a
    /// filesystem can; the multipart uploads of object stores cannot).
    pub readable_parts: bool,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects, in lexical order of their keys.
    pub objects: Vec<Listed>,
    /// Folded prefixes (each ending in `/`), in lexical order; only with a delimiter.
    pub prefixes: Vec<String>,
    /// Whether more entries follow; continue with the last key or prefix as `start_after`.
    pub truncated: bool,
}

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key.
    pub key: Key,
    /// When it was last written, by the storage's clock, as [`ObjectMeta::last_modified`]
    /// reports it: what the lifecycle rules measure ages by without a `head` per object.
    /// `None` where the backend's listing cannot say (a C storage that does not report it).
    pub last_modified: Option<u64>,
}

impl Listed {
    /// An object of unknown age.
    pub fn new(key: impl Into<Key>) -> Self {
        Self {
            key: key.into(),
            last_modified: None,
        }
    }
}

impl ListPage {
    /// The objects' keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.objects.iter().map(|object| object.key.as_str())
    }

    /// The last key or prefix listed: where the next page starts.
    pub fn last_entry(&self) -> Option<&str> {
        let key = self.objects.last().map(|object| object.key.as_str());
        let prefix = self.prefixes.last().map(String::as_str);
        key.max(prefix)
    }
}

/// The storage a [`crate::Registry`] runs over. See the module docs for the contract.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait Storage: MaybeSend + MaybeSync + 'static {
    /// Reads an object, or the `range` of it (half-open, within its size).
    async fn get(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError>;

    /// Size and version of an object.
    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError>;

    /// Writes a whole (small) object atomically (pass a [`PutMode`] for a durable write).
    async fn put(
        &self,
        key: &Key,
        data: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError>;

    /// Removes an object; a missing key is not an error.
    async fn delete(&self, key: &Key, durability: Durability) -> Result<(), StorageError>;

    /// Lists keys that start with `prefix`, after `start_after`, at most `limit` entries.
    async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError>;

    /// What the backend can and cannot do with parts (the defaults: any part size, any
    /// number of parts, part ids unique per write, parts not readable before completion).
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// A URL from which a client may GET the object directly for `expires_in` seconds, when
    /// the backend can sign one (an S3 presigned URL); `None` otherwise.
    async fn presigned_get(
        &self,
        _key: &Key,
        _expires_in: u64,
    ) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    /// Begins a parts upload; `staging_key` names where the backend may keep it.
    async fn create_parts(&self, staging_key: &Key) -> Result<PartsUploadId, StorageError>;

    /// Stores part `number` (from 1) of a parts upload, returning its unique part id.
    async fn put_part(
        &self,
        upload: &PartsUploadId,
        number: u32,
        data: Chunks,
    ) -> Result<PartId, StorageError>;

    /// Makes every part written to `upload` so far safe for a session record to name: durable,
    /// or, where the backend can tell when a crash may have lost them, refused from then on
    /// ([`StorageError::NotFound`] here and from [`Storage::complete_parts`]). A backend's
    /// `put_part` may return before its part is durable (`FsStorage` only starts writing it to
    /// disk); the registry calls this before a session record names the parts, and
    /// `complete_parts` makes them durable itself.
    async fn sync_parts(&self, _upload: &PartsUploadId) -> Result<(), StorageError> {
        Ok(())
    }

    /// Publishes the parts, in order, as the object `target`; fails with
    /// [`StorageError::AlreadyExists`] (and publishes nothing) when `target` exists.
    async fn complete_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        target: &Key,
    ) -> Result<(), StorageError>;

    /// Discards a parts upload and everything written to it.
    async fn abort_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError>;

    /// Removes what writes that never finished left behind (a process killed while it wrote):
    /// scratch files, and parts uploads that no upload session names (`live`), untouched for
    /// `older_than` seconds; with `dry_run`, only counts them. The default finds none: object
    /// stores expire abandoned multipart uploads by their own lifecycle rules.
    async fn remove_leftovers(
        &self,
        live: &[PartsUploadId],
        older_than: u64,
        dry_run: bool,
    ) -> Result<Leftovers, StorageError> {
        let _ = (live, older_than, dry_run);
        Ok(Leftovers::default())
    }

    /// Streams `parts` of `upload` (ids as [`Storage::put_part`] returned them), in order,
    /// from byte `skip` of their concatenation. [`StorageError::NotFound`] when the upload or a
    /// part is gone; [`StorageError::Unsupported`] where [`Capabilities::readable_parts`] is
    /// false.
    async fn read_parts(
        &self,
        _upload: &PartsUploadId,
        _parts: &[PartId],
        _skip: u64,
    ) -> Result<ByteStream, StorageError> {
        Err(StorageError::Unsupported(
            "reading back the parts of an upload",
        ))
    }
}

/// Shared storage is storage: `Arc<dyn Storage>` lets a host choose its backend at run time.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<T: Storage + ?Sized> Storage for std::sync::Arc<T> {
    async fn get(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        (**self).get(key, range).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        (**self).head(key).await
    }

    async fn put(
        &self,
        key: &Key,
        data: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        (**self).put(key, data, options).await
    }

    async fn delete(&self, key: &Key, durability: Durability) -> Result<(), StorageError> {
        (**self).delete(key, durability).await
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        (**self).list(prefix, delimiter, start_after, limit).await
    }

    async fn presigned_get(
        &self,
        key: &Key,
        expires_in: u64,
    ) -> Result<Option<String>, StorageError> {
        (**self).presigned_get(key, expires_in).await
    }

    async fn create_parts(&self, staging_key: &Key) -> Result<PartsUploadId, StorageError> {
        (**self).create_parts(staging_key).await
    }

    async fn put_part(
        &self,
        upload: &PartsUploadId,
        number: u32,
        data: Chunks,
    ) -> Result<PartId, StorageError> {
        (**self).put_part(upload, number, data).await
    }

    async fn sync_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError> {
        (**self).sync_parts(upload).await
    }

    async fn complete_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        target: &Key,
    ) -> Result<(), StorageError> {
        (**self).complete_parts(upload, parts, target).await
    }

    async fn abort_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError> {
        (**self).abort_parts(upload).await
    }

    async fn remove_leftovers(
        &self,
        live: &[PartsUploadId],
        older_than: u64,
        dry_run: bool,
    ) -> Result<Leftovers, StorageError> {
        (**self).remove_leftovers(live, older_than, dry_run).await
    }

    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }

    async fn read_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        skip: u64,
    ) -> Result<ByteStream, StorageError> {
        (**self).read_parts(upload, parts, skip).await
    }
}

/// Conveniences over any [`Storage`].
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait StorageExt: Storage {
    /// Reads a whole object of at most `limit` bytes into memory (manifests, links, records).
    async fn read_small(&self, key: &Key, limit: u64) -> Result<(ObjectMeta, Bytes), StorageError> {
        let (meta, mut stream) = self.get(key, None).await?;
        if meta.size > limit {
            return Err(StorageError::TooLarge {
                size: Some(meta.size),
                limit,
            });
        }
        let mut buffer = BytesMut::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            buffer.extend_from_slice(&chunk);
            if buffer.len() as u64 > limit {
                return Err(StorageError::TooLarge { size: None, limit });
            }
        }
        Ok((meta, buffer.freeze()))
    }

    /// Whether an object exists.
    async fn exists(&self, key: &Key) -> Result<bool, StorageError> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every key below `prefix` (no delimiter), following pages.
    async fn list_all(&self, prefix: &str) -> Result<Vec<Key>, StorageError> {
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list(prefix, false, after.as_deref(), 1000).await?;
            after = page.objects.last().map(|object| object.key.to_string());
            keys.extend(page.objects.into_iter().map(|object| object.key));
            if !page.truncated || after.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Deletes every object below `prefix`.
    async fn delete_all(&self, prefix: &str) -> Result<(), StorageError> {
        for key in self.list_all(prefix).await? {
            self.delete(&key, Durability::Durable).await?;
        }
        Ok(())
    }
}

impl<S: Storage + ?Sized> StorageExt for S {}

/// A name no other write of any process will choose (scratch files, parts uploads, parts):
/// this process, the time, and `counter`'s next value. The process id is read each time, not
/// kept: a process that forks after making a storage must not share its names with the child.
#[cfg(any(feature = "fs", feature = "object-store"))]
pub(crate) fn unique_name(counter: &std::sync::atomic::AtomicU64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{nanos:x}-{n}", std::process::id())
}

/// Applies `start_after` and `limit` to a sorted, de-duplicated list of entries; shared by the
/// backends that list by filtering everything they hold. `modified` tells when an object
/// taken into the page was last written (asked only of those, not of every entry).
pub(crate) fn page_of(
    mut entries: Vec<(String, bool)>,
    start_after: Option<&str>,
    limit: usize,
    modified: impl Fn(&str) -> Option<u64>,
) -> ListPage {
    entries.sort();
    entries.dedup();
    let mut page = ListPage::default();
    let mut taken = 0;
    for (key, is_prefix) in entries {
        if start_after.is_some_and(|after| key.as_str() <= after) {
            continue;
        }
        if taken == limit {
            page.truncated = true;
            break;
        }
        taken += 1;
        if is_prefix {
            page.prefixes.push(key);
        } else {
            let last_modified = modified(&key);
            page.objects.push(Listed {
                key: Key::new(key),
                last_modified,
            });
        }
    }
    page
}

/// Splits `key` (which starts with `prefix`) for a delimited listing: the key itself, or the
/// folded prefix up to and including the next `/`.
/// What is left of each of `spans` (of parts, in order) once their first `skip` bytes are
/// passed over, one range per span (empty where nothing is left): for [`Storage::read_parts`].
pub(crate) fn spans_after(
    spans: impl IntoIterator<Item = Range<u64>>,
    mut skip: u64,
) -> Vec<Range<u64>> {
    spans
        .into_iter()
        .map(|span| {
            let from = span.start + skip.min(span.end - span.start);
            skip -= from - span.start;
            from..span.end
        })
        .collect()
}

pub(crate) fn fold(prefix: &str, key: &str, delimiter: bool) -> (String, bool) {
    if delimiter && let Some(slash) = key[prefix.len()..].find('/') {
        return (key[..prefix.len() + slash + 1].to_owned(), true);
    }
    (key.to_owned(), false)
}
