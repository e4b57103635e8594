//! `JsStorage`: berth's `Storage` over a JavaScript object shaped like the Workers R2 bucket
//! binding, so an R2 binding can be passed as it is.
//!
//! | berth                    | R2-shaped bucket                                               |
//! |--------------------------|----------------------------------------------------------------|
//! | get (range)              | `get(key, { range: { offset, length } })` → object with `body` or `null` |
//! | head                     | `head(key)` → object or `null`                                 |
//! | put Overwrite / Create / Update(v) | `put(key, bytes, { onlyIf })` with no condition, `{ etagDoesNotMatch: "*" }`, `{ etagMatches: v }` → object, or `null` when the condition fails |
//! | delete                   | `delete(key)`                                                  |
//! | list                     | `list({ prefix, delimiter: "/", startAfter, limit })` → `{ objects, delimitedPrefixes, truncated }` |
//! | parts                    | `createMultipartUpload(key)`, `resumeMultipartUpload(key, id)` → `uploadPart(n, bytes)`, `complete(parts)`, `abort()` |
//!
//! An object's version is its `etag`, the value R2's conditions compare. R2 has no copy, so
//! a completed multipart upload (at its staging key) reaches its content address by one
//! streamed get → put; a bucket that offers `berthMove(from, to, { onlyIf })` (berth-wasm's
//! own stores do) is asked to move it instead.

use std::ops::Range;

use async_trait::async_trait;
use berth::Storage;
use berth::storage::{
    ByteStream, Capabilities, Chunks, Durability, Key, ListPage, Listed, ObjectMeta, PartId,
    PartsUploadId, PutMode, PutOptions, StorageError,
};
use bytes::Bytes;
use futures_util::StreamExt;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_streams::ReadableStream;

use crate::error::RegistryError;

/// R2's smallest part but the last.
const R2_MIN_PART: u64 = 5 * 1024 * 1024;
/// R2's (and S3's) most parts per upload.
const R2_MAX_PARTS: u32 = 10_000;

/// The storage a JavaScript host passed.
pub(crate) struct JsStorage {
    bucket: JsValue,
    min_part_size: u64,
}

impl JsStorage {
    pub(crate) fn new(bucket: JsValue, min_part_size: Option<u64>) -> Result<Self, RegistryError> {
        for method in [
            "get",
            "head",
            "put",
            "delete",
            "list",
            "createMultipartUpload",
            "resumeMultipartUpload",
        ] {
            let function = Reflect::get(&bucket, &JsValue::from_str(method)).unwrap_or_default();
            if !function.is_function() {
                return Err(RegistryError::options(format!(
                    "the storage has no {method}() method: pass an R2 bucket binding or one of \
                     berth-wasm's stores (MemoryBucket, NodeFsBucket, BrowserBucket)"
                )));
            }
        }
        Ok(Self {
            bucket,
            min_part_size: min_part_size.unwrap_or(R2_MIN_PART),
        })
    }

    /// Calls `target.method(args...)` and awaits the promise (or value) it returns.
    async fn call(
        target: &JsValue,
        method: &str,
        args: &[JsValue],
    ) -> Result<JsValue, StorageError> {
        let function: Function = Reflect::get(target, &JsValue::from_str(method))
            .map_err(js_error)?
            .dyn_into()
            .map_err(|_| StorageError::Unsupported("a storage method"))?;
        let result = function
            .apply(target, &args.iter().collect::<Array>())
            .map_err(js_error)?;
        match result.dyn_into::<Promise>() {
            Ok(promise) => JsFuture::from(promise).await.map_err(js_error),
            Err(value) => Ok(value),
        }
    }

    async fn bucket_call(&self, method: &str, args: &[JsValue]) -> Result<JsValue, StorageError> {
        Self::call(&self.bucket, method, args).await
    }

    /// The upload object of a parts upload id (`key` and R2 upload id).
    fn resume(&self, upload: &PartsUploadId) -> Result<(JsValue, String), StorageError> {
        let (key, upload_id) = upload
            .as_str()
            .split_once('\n')
            .ok_or_else(|| StorageError::backend(format!("{upload:?} is not a parts upload id")))?;
        let resume: Function =
            Reflect::get(&self.bucket, &JsValue::from_str("resumeMultipartUpload"))
                .map_err(js_error)?
                .unchecked_into();
        let object = resume
            .call2(
                &self.bucket,
                &JsValue::from_str(key),
                &JsValue::from_str(upload_id),
            )
            .map_err(js_error)?;
        Ok((object, key.to_owned()))
    }
}

/// A JavaScript exception as a storage error.
fn js_error(error: JsValue) -> StorageError {
    let message = Reflect::get(&error, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| error.as_string())
        .unwrap_or_else(|| format!("{error:?}"));
    StorageError::backend(format!("storage: {message}"))
}

fn field(object: &JsValue, name: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(name)).unwrap_or_default()
}

/// When an R2 object was uploaded (`uploaded`, a `Date`), in milliseconds since the epoch.
fn uploaded(object: &JsValue) -> Option<u64> {
    field(object, "uploaded")
        .dyn_into::<js_sys::Date>()
        .ok()
        .map(|date| date.get_time())
        .filter(|millis| millis.is_finite() && *millis >= 0.0)
        .map(|millis| millis as u64)
}

/// Size, version and upload time of an R2 object.
fn meta(object: &JsValue) -> Result<ObjectMeta, StorageError> {
    let size = field(object, "size").as_f64();
    let etag = field(object, "etag").as_string();
    let uploaded = uploaded(object);
    match (size, etag) {
        (Some(size), Some(version)) => Ok(ObjectMeta {
            size: size as u64,
            version: version.into(),
            last_modified: uploaded,
        }),
        _ => Err(StorageError::backend(
            "storage: an object without a numeric size and a string etag",
        )),
    }
}

fn options(entries: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (name, value) in entries {
        let _ = Reflect::set(&object, &JsValue::from_str(name), value);
    }
    object.into()
}

/// The bytes of a part, joined: R2's `uploadPart` takes one value.
fn joined(chunks: &Chunks) -> Uint8Array {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let array = Uint8Array::new_with_length(total as u32);
    let mut at = 0u32;
    for chunk in chunks {
        array.subarray(at, at + chunk.len() as u32).copy_from(chunk);
        at += chunk.len() as u32;
    }
    array
}

/// A `ReadableStream` of `Uint8Array`s as berth's byte stream.
fn byte_stream(body: JsValue) -> Result<ByteStream, StorageError> {
    if body.is_undefined() || body.is_null() {
        return Ok(Box::pin(futures_util::stream::empty()));
    }
    let stream: web_sys::ReadableStream = body.dyn_into().map_err(|_| {
        StorageError::backend("storage: get() returned a body that is not a ReadableStream")
    })?;
    Ok(Box::pin(
        ReadableStream::from_raw(stream).into_stream().map(|chunk| {
            chunk
                .map(|chunk| Bytes::from(Uint8Array::new(&chunk).to_vec()))
                .map_err(js_error)
        }),
    ))
}

#[async_trait(?Send)]
impl Storage for JsStorage {
    async fn get(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        let request = match &range {
            Some(range) => options(&[(
                "range",
                options(&[
                    ("offset", JsValue::from_f64(range.start as f64)),
                    (
                        "length",
                        JsValue::from_f64((range.end - range.start) as f64),
                    ),
                ]),
            )]),
            None => JsValue::UNDEFINED,
        };
        let object = self
            .bucket_call("get", &[JsValue::from_str(key), request])
            .await?;
        if object.is_null() || object.is_undefined() {
            return Err(StorageError::NotFound);
        }
        let meta = meta(&object)?;
        // An empty range has nothing to read, whatever the bucket returns as its body.
        if range.as_ref().is_some_and(|r| r.start == r.end) {
            return Ok((meta, Box::pin(futures_util::stream::empty())));
        }
        Ok((meta, byte_stream(field(&object, "body"))?))
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        let object = self.bucket_call("head", &[JsValue::from_str(key)]).await?;
        if object.is_null() || object.is_undefined() {
            return Err(StorageError::NotFound);
        }
        meta(&object)
    }

    /// Buckets have one durability: every write is durable.
    async fn put(
        &self,
        key: &Key,
        data: Bytes,
        put: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        let mode = put.mode;
        let (condition, failure) = match &mode {
            PutMode::Overwrite => (None, StorageError::PreconditionFailed),
            PutMode::Create => (
                Some(options(&[("etagDoesNotMatch", JsValue::from_str("*"))])),
                StorageError::AlreadyExists,
            ),
            PutMode::Update(version) => (
                Some(options(&[(
                    "etagMatches",
                    JsValue::from_str(version.as_str()),
                )])),
                StorageError::PreconditionFailed,
            ),
        };
        let put_options = match condition {
            Some(condition) => options(&[("onlyIf", condition)]),
            None => JsValue::UNDEFINED,
        };
        let value = Uint8Array::from(&data[..]);
        let object = self
            .bucket_call("put", &[JsValue::from_str(key), value.into(), put_options])
            .await?;
        if object.is_null() || object.is_undefined() {
            return Err(failure);
        }
        meta(&object)
    }

    async fn delete(&self, key: &Key, _: Durability) -> Result<(), StorageError> {
        self.bucket_call("delete", &[JsValue::from_str(key)])
            .await?;
        Ok(())
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        // R2 lists at least one entry; a page of none only says whether any exist.
        let mut entries = vec![
            ("prefix", JsValue::from_str(prefix)),
            ("limit", JsValue::from_f64(limit.clamp(1, 1000) as f64)),
        ];
        if delimiter {
            entries.push(("delimiter", JsValue::from_str("/")));
        }
        if let Some(after) = start_after {
            entries.push(("startAfter", JsValue::from_str(after)));
        }
        let result = self.bucket_call("list", &[options(&entries)]).await?;
        let mut page = ListPage::default();
        if let Ok(objects) = field(&result, "objects").dyn_into::<Array>() {
            page.objects = objects
                .iter()
                .filter_map(|object| {
                    let key = field(&object, "key").as_string()?;
                    Some(Listed {
                        key: key.into(),
                        last_modified: uploaded(&object),
                    })
                })
                .collect();
        }
        if let Ok(prefixes) = field(&result, "delimitedPrefixes").dyn_into::<Array>() {
            page.prefixes = prefixes.iter().filter_map(|p| p.as_string()).collect();
        }
        page.truncated = field(&result, "truncated").as_bool().unwrap_or(false);
        if limit == 0 {
            let any = !page.objects.is_empty() || !page.prefixes.is_empty();
            return Ok(ListPage {
                truncated: any,
                ..ListPage::default()
            });
        }
        Ok(page)
    }

    fn capabilities(&self) -> Capabilities {
        // R2's multipart uploads: numbered parts, at most 10,000.
        Capabilities {
            min_part_size: self.min_part_size,
            max_parts: Some(R2_MAX_PARTS),
            positional_parts: true,
            readable_parts: false,
        }
    }

    async fn create_parts(&self, staging_key: &Key) -> Result<PartsUploadId, StorageError> {
        let upload = self
            .bucket_call("createMultipartUpload", &[JsValue::from_str(staging_key)])
            .await?;
        let id = field(&upload, "uploadId")
            .as_string()
            .ok_or_else(|| StorageError::backend("storage: a multipart upload without uploadId"))?;
        Ok(PartsUploadId::new(format!("{staging_key}\n{id}")))
    }

    async fn put_part(
        &self,
        upload: &PartsUploadId,
        number: u32,
        data: Chunks,
    ) -> Result<PartId, StorageError> {
        let (upload, _) = self.resume(upload)?;
        let part = Self::call(
            &upload,
            "uploadPart",
            &[JsValue::from_f64(f64::from(number)), joined(&data).into()],
        )
        .await?;
        let etag = field(&part, "etag")
            .as_string()
            .ok_or_else(|| StorageError::backend("storage: an uploaded part without etag"))?;
        Ok(PartId::new(format!("{number}:{etag}")))
    }

    async fn complete_parts(
        &self,
        upload: &PartsUploadId,
        parts: &[PartId],
        target: &Key,
    ) -> Result<(), StorageError> {
        if self.head(target).await.is_ok() {
            return Err(StorageError::AlreadyExists);
        }
        let (multipart, staging_key) = self.resume(upload)?;
        let uploaded = Array::new();
        for part in parts {
            let (number, etag) = part
                .as_str()
                .split_once(':')
                .ok_or_else(|| StorageError::backend(format!("{part:?} is not a part id")))?;
            let number: u32 = number
                .parse()
                .map_err(|_| StorageError::backend(format!("{part:?} is not a part id")))?;
            uploaded.push(&options(&[
                ("partNumber", JsValue::from_f64(f64::from(number))),
                ("etag", JsValue::from_str(etag)),
            ]));
        }
        Self::call(&multipart, "complete", &[uploaded.into()]).await?;
        self.publish(&staging_key, target).await
    }

    async fn abort_parts(&self, upload: &PartsUploadId) -> Result<(), StorageError> {
        let (multipart, _) = self.resume(upload)?;
        // An upload already completed or aborted is gone either way.
        let _ = Self::call(&multipart, "abort", &[]).await;
        Ok(())
    }
}

impl JsStorage {
    /// Moves a completed upload from its staging key to `target`, create-only.
    async fn publish(&self, staging_key: &str, target: &str) -> Result<(), StorageError> {
        let create = options(&[(
            "onlyIf",
            options(&[("etagDoesNotMatch", JsValue::from_str("*"))]),
        )]);
        let published = if field(&self.bucket, "berthMove").is_function() {
            self.bucket_call(
                "berthMove",
                &[
                    JsValue::from_str(staging_key),
                    JsValue::from_str(target),
                    create,
                ],
            )
            .await?
        } else {
            // R2: stream the object once from the staging key to its address.
            let object = self
                .bucket_call("get", &[JsValue::from_str(staging_key)])
                .await?;
            if object.is_null() || object.is_undefined() {
                return Err(StorageError::NotFound);
            }
            self.bucket_call(
                "put",
                &[JsValue::from_str(target), field(&object, "body"), create],
            )
            .await?
        };
        let _ = self
            .delete(&Key::new(staging_key), Durability::Durable)
            .await;
        if published.is_null() || published.is_undefined() {
            return Err(StorageError::AlreadyExists);
        }
        Ok(())
    }
}
