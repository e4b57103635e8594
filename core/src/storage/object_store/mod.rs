//! A backend over any [`object_store::ObjectStore`]: S3 (and R2, MinIO…), GCS, Azure with the
//! cloud features, and object_store's own in-memory store.
//!
//! Conditional puts map onto object_store's `PutMode` (ETag compare-and-swap on S3).
//!
//! Parts come in two kinds. Given a [`MultipartStore`] ([`ObjectStoreStorage::with_multipart`]),
//! they are the store's native multipart upload at the session's staging key: completing it
//! publishes the staging object without moving a byte through berth, and a server-side copy
//! places it at the content address (objects over 5 GiB, which S3 will not copy in one
//! request, by UploadPartCopy when [`ObjectStoreStorage::with_part_copy`] is set, else by
//! streaming them across). Native parts are positional and at least 5 MiB.
//! Without one ([`ObjectStoreStorage::new`]), parts are ordinary objects below
//! `berth/parts/<upload>/`, named uniquely per write, and `complete_parts` joins them with a
//! streaming multipart upload. object_store's `LocalFileSystem` cannot host a registry:
//! it does not implement `PutMode::Update`, which upload sessions need; use
//! [`FsStorage`](super::FsStorage) for a local disk.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use ::object_store::multipart::{MultipartStore, PartId as NativePartId};
use ::object_store::path::Path;
use ::object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, UpdateVersion,
    WriteMultipart,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use super::{
    ByteStream, Capabilities, Chunks, Durability, Key, ListPage, ObjectMeta, PartId, PartsUploadId,
    PutMode, Storage, StorageError, StorageExt, Version, fold, page_of,
};

/// Where parts live until their upload completes (parts kept as objects).
const PARTS_PREFIX: &str = "berth/parts/";
/// S3's smallest part but the last (`AmazonS3` documents the same bound).
const NATIVE_MIN_PART: u64 = 5 * 1024 * 1024;
/// The most parts of one S3 multipart upload.
const NATIVE_MAX_PARTS: u32 = 10_000;
/// The largest object S3 copies in one request.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// The largest part a server-side copy in parts copies in one request: a blob past the
/// single-copy limit is copied in ranges of this size, several at once (faster than S3's
/// 5 GiB ranges one after the other, and a disk-backed S3 holds one range extra while it
/// completes, not 5 GiB).
#[cfg(feature = "s3")]
const COPY_PART_BYTES: u64 = 512 * 1024 * 1024;
/// Parts uploaded at once while joining, each of object_store's default 5 MiB chunk size.
const JOIN_CONCURRENCY: usize = 4;

/// Storage in an object store.
#[derive(Clone)]
pub struct ObjectStoreStorage {
    store: Arc<dyn ObjectStore>,
    multipart: Option<Arc<dyn MultipartStore>>,
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    signer: Option<Arc<dyn ::object_store::signer::Signer>>,
    #[cfg(feature = "s3")]
    part_copy: Option<PartCopy>,
    /// Objects up to this size are copied in one request; larger ones part by part.
    max_single_copy: u64,
    counter: Arc<AtomicU64>,
}

/// What S3's UploadPartCopy needs, which object_store does not offer: a signer for the
/// requests, the bucket they name as the copy source, and a client to send them.
#[cfg(feature = "s3")]
#[derive(Clone)]
struct PartCopy {
    signer: Arc<dyn ::object_store::signer::Signer>,
    bucket: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for ObjectStoreStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreStorage")
            .field("store", &self.store)
            .field("native_multipart", &self.multipart.is_some())
            .finish()
    }
}

impl ObjectStoreStorage {
    /// Storage over `store`, with parts kept as objects.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            multipart: None,
            #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
            signer: None,
            #[cfg(feature = "s3")]
            part_copy: None,
            max_single_copy: MAX_SINGLE_COPY,
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Lets a completed upload larger than S3's single-copy limit be copied to its content
    /// address part by part, server-side (UploadPartCopy, signed by `signer` for objects in
    /// `bucket`), rather than streamed through berth.
    #[cfg(feature = "s3")]
    pub fn with_part_copy(
        mut self,
        signer: Arc<dyn ::object_store::signer::Signer>,
        bucket: impl Into<String>,
    ) -> Self {
        self.part_copy = Some(PartCopy {
            signer,
            bucket: bucket.into(),
            client: reqwest::Client::new(),
        });
        self
    }

    /// Lowers the size above which objects are copied part by part (S3's limit is 5 GiB),
    /// so that tests can exercise the part copy with small blobs. At least 5 MiB.
    #[cfg(feature = "s3")]
    pub(crate) fn with_max_single_copy(mut self, bytes: u64) -> Self {
        self.max_single_copy = bytes.clamp(NATIVE_MIN_PART, MAX_SINGLE_COPY);
        self
    }

    /// Signs URLs with `signer` (usually the store itself), so that blob GETs may be
    /// redirected to the store ([`Storage::presigned_get`]).
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    pub fn with_signer(mut self, signer: Arc<dyn ::object_store::signer::Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Storage over `store` whose parts are the native multipart uploads of `multipart`
    /// (usually the same store: S3, GCS and Azure implement both traits).
    pub fn with_multipart(store: Arc<dyn ObjectStore>, multipart: Arc<dyn MultipartStore>) -> Self {
        Self {
            multipart: Some(multipart),
            ..Self::new(store)
        }
    }

    /// A name no other write of any process will choose.
    fn unique(&self) -> String {
        super::unique_name(&self.counter)
    }

    fn parts_prefix(upload: &str) -> Result<String, StorageError> {
        if upload.is_empty()
            || !upload
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(StorageError::NotFound);
        }
        Ok(format!("{PARTS_PREFIX}{upload}/"))
    }
}

/// A native multipart upload: the staging key it writes and the store's id for it, kept in
/// one string as `<staging key>\n<id>` (keys cannot hold a newline).
fn native_upload(upload: &str) -> Result<(Path, String), StorageError> {
    let (staging, id) = upload.split_once('\n').ok_or(StorageError::NotFound)?;
    Ok((path(staging)?, id.to_owned()))
}

/// A key as it appears in an `x-amz-copy-source` header: each segment percent-encoded.
#[cfg(feature = "s3")]
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn path(key: &str) -> Result<Path, StorageError> {
    Path::parse(key).map_err(StorageError::backend)
}

fn error(error: ::object_store::Error) -> StorageError {
    match error {
        ::object_store::Error::NotFound { .. } => StorageError::NotFound,
        ::object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists,
        ::object_store::Error::Precondition { .. } => StorageError::PreconditionFailed,
        ::object_store::Error::NotImplemented { .. } => {
            StorageError::Unsupported("this operation on this object store")
        }
        other => StorageError::backend(other),
    }
}

/// Versions carry both the ETag and the object version, since stores use either for CAS.
fn version(e_tag: Option<&str>, version: Option<&str>) -> Version {
    Version::new(format!(
        "{}\n{}",
        e_tag.unwrap_or_default(),
        version.unwrap_or_default()
    ))
}

fn update_version(version: &Version) -> UpdateVersion {
    let text = version.as_str();
    let (e_tag, version) = text.split_once('\n').unwrap_or((text, ""));
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    UpdateVersion {
        e_tag: some(e_tag),
        version: some(version),
    }
}

fn meta(meta: &::object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        size: meta.size,
        version: version(meta.e_tag.as_deref(), meta.version.as_deref()),
        last_modified: u64::try_from(meta.last_modified.timestamp_millis()).ok(),
    }
}

#[async_trait]
impl Storage for ObjectStoreStorage {
    async fn get(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        let location = path(key)?;
        if range.as_ref().is_some_and(|r| r.start >= r.end) {
            // object_store refuses empty ranges; the answer is no bytes.
            let found = self.store.head(&location).await.map_err(error)?;
            return Ok((meta(&found), Box::pin(futures_util::stream::empty())));
        }
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&location, options)
            .await
            .map_err(error)?;
        let found = meta(&result.meta);
        Ok((found, Box::pin(result.into_stream().map_err(error))))
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        Ok(meta(&self.store.head(&path(key)?).await.map_err(error)?))
    }

    /// Object stores have one durability: every write is durable.
    async fn put(
        &self,
        key: &Key,
        data: Bytes,
        options: super::PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        let size = data.len() as u64;
        let mode = match options.mode {
            PutMode::Overwrite => ::object_store::PutMode::Overwrite,
            PutMode::Create => ::object_store::PutMode::Create,
            PutMode::Update(version) => ::object_store::PutMode::Update(update_version(&version)),
        };
        let result = self
            .store
            .put_opts(&path(key)?, data.into(), PutOptions::from(mode))
            .await
            .map_err(error)?;
        // A PUT's answer carries no modification time; head reports it.
        Ok(ObjectMeta {
            size,
            version: version(result.e_tag.as_deref(), result.version.as_deref()),
            last_modified: None,
        })
    }

    async fn delete(&self, key: &Key, _: Durability) -> Result<(), StorageError> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(::object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(error(e)),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        // object_store lists whole path segments: list the folder, then filter by prefix.
        let folder = &prefix[..prefix.rfind('/').map_or(0, |i| i + 1)];
        let folder_path = (!folder.is_empty())
            .then(|| path(folder.trim_end_matches('/')))
            .transpose()?;
        let mut entries = Vec::new();
        let mut modified = std::collections::HashMap::new();
        if delimiter {
            let listing = self
                .store
                .list_with_delimiter(folder_path.as_ref())
                .await
                .map_err(error)?;
            for object in listing.objects {
                let key = object.location.to_string();
                if key.starts_with(prefix) {
                    modified.insert(key.clone(), meta(&object).last_modified);
                    entries.push((key, false));
                }
            }
            for common in listing.common_prefixes {
                let key = format!("{common}/");
                if key.starts_with(prefix) {
                    entries.push((key, true));
                }
            }
        } else {
            // Object stores list in lexical order and can start after a key (S3's
            // StartAfter), so a page costs what it holds, not what the prefix holds.
            let mut stream = match start_after {
                Some(after) => {
                    let offset = Path::parse(after).map_err(StorageError::backend)?;
                    self.store.list_with_offset(folder_path.as_ref(), &offset)
                }
                None => self.store.list(folder_path.as_ref()),
            };
            while let Some(object) = stream.next().await {
                let object = object.map_err(error)?;
                let key = object.location.to_string();
                if key.starts_with(prefix) {
                    modified.insert(key.clone(), meta(&object).last_modified);
                    entries.push(fold(prefix, &key, false));
                    if entries.len() > limit {
                        break;
                    }
                }
            }
        }
        let modified = |key: &str| modified.get(key).copied().flatten();
        Ok(page_of(entries, start_after, limit, modified))
    }

    fn capabilities(&self) -> Capabilities {
        // Native multipart uploads have S3's rules; parts emulated as objects have none.
        let native = self.multipart.is_some();
        Capabilities {
            min_part_size: if native { NATIVE_MIN_PART } else { 0 },
            max_parts: native.then_some(NATIVE_MAX_PARTS),
            positional_parts: native,
            readable_parts: false,
        }
    }

    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    async fn presigned_get(
        &self,
        key: &Key,
        expires_in: u64,
    ) -> Result<Option<String>, StorageError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let url = signer
            .signed_url(
                ::object_store::signer::Method::GET,
                &path(key)?,
                std::time::Duration::from_secs(expires_in),
            )
            .await
            .map_err(error)?;
        Ok(Some(url.to_string()))
    }

    async fn create_parts(&self, staging_key: &Key) -> Result<PartsUploadId, StorageError> {
        match &self.multipart {
            Some(multipart) => {
                let id = multipart
                    .create_multipart(&path(staging_key)?)
                    .await
                    .map_err(error)?;
                Ok(PartsUploadId::new(format!("{staging_key}\n{id}")))
            }
            None => Ok(PartsUploadId::new(self.unique())),
        }
    }

    async fn put_part(
        &self,
        upload: &PartsUploadId,
        number: u32,
        data: Chunks,
    ) -> Result<PartId, StorageError> {
        if let Some(multipart) = &self.multipart {
            let (staging, id) = native_upload(upload.as_str())?;
            let index = usize::try_from(number.saturating_sub(1)).unwrap_or(usize::MAX);
            let payload: PutPayload = data.into_iter().collect();
            let part = multipart
                .put_part(&staging, &id, index, payload)
                .await
                .map_err(error)?;
            return Ok(PartId::new(part.content_id));
        }
        let part = format!("{number:05}-{}", self.unique());
        let key = format!("{}{part}", Self::parts_prefix(upload.as_str())?);
        let payload: PutPayload = data.into_iter().collect();
        let options = PutOptions::from(::object_store::PutMode::Create);
        self.store
            .put_opts(&path(&key)?, payload, options)
            .await
            .map_err(error)?;
        Ok(PartId::new(part))
    }

    async fn complete_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        target: &Key,
    ) -> Result<(), StorageError> {
        if let Some(multipart) = &self.multipart {
            return self
                .complete_native(multipart.as_ref(), upload, parts, target)
                .await;
        }
        let prefix = Self::parts_prefix(upload.as_str())?;
        if self.exists(target).await? {
            return Err(StorageError::AlreadyExists);
        }
        let target_path = path(target)?;
        match parts {
            [] => {
                self.put(target, Bytes::new(), PutMode::Create.into())
                    .await?;
            }
            [only] => {
                let source = path(&format!("{prefix}{only}"))?;
                self.store
                    .copy(&source, &target_path)
                    .await
                    .map_err(error)?;
            }
            _ => {
                let sources: Vec<Key> = parts
                    .iter()
                    .map(|part| Key::new(format!("{prefix}{part}")))
                    .collect();
                self.stream_into(&sources, &target_path).await?;
            }
        }
        self.delete_all(&prefix).await
    }

    async fn abort_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError> {
        if let Some(multipart) = &self.multipart {
            let (staging, id) = native_upload(upload.as_str())?;
            return match multipart.abort_multipart(&staging, &id).await {
                Ok(()) | Err(::object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(error(e)),
            };
        }
        self.delete_all(&Self::parts_prefix(upload.as_str())?).await
    }
}

mod assemble;
#[cfg(test)]
mod tests;
