//! Assembling an upload's parts into the object they make: streamed into a new object, copied
//! part by part on the server, or completed as a native multipart upload.

use super::*;

impl ObjectStoreStorage {
    /// Writes the objects `sources`, one after the other, as the object `target`, through a
    /// streaming multipart upload: memory stays bounded by its few chunks in flight.
    pub(super) async fn stream_into(
        &self,
        sources: &[Key],
        target: &Path,
    ) -> Result<(), StorageError> {
        let upload = self.store.put_multipart(target).await.map_err(error)?;
        let mut writer = WriteMultipart::new(upload);
        for source in sources {
            let (_, mut stream) = self.get(source, None).await?;
            while let Some(chunk) = stream.next().await {
                writer
                    .wait_for_capacity(JOIN_CONCURRENCY)
                    .await
                    .map_err(error)?;
                writer.put(chunk?);
            }
        }
        writer.finish().await.map_err(error).map(drop)
    }

    /// Copies `from` to `to` server-side in parts of at most the single-copy limit, when part
    /// copies are configured (`None` when they are not).
    #[cfg(feature = "s3")]
    pub(super) async fn copy_in_parts(
        &self,
        multipart: &dyn MultipartStore,
        from: &Path,
        to: &Path,
        size: u64,
    ) -> Option<Result<(), StorageError>> {
        let copier = self.part_copy.as_ref()?;
        let id = match multipart.create_multipart(to).await {
            Ok(id) => id,
            Err(e) => return Some(Err(error(e))),
        };
        let result = self.copy_parts(copier, from, to, &id, size).await;
        match result {
            Ok(parts) => Some(
                multipart
                    .complete_multipart(to, &id, parts)
                    .await
                    .map(drop)
                    .map_err(error),
            ),
            Err(e) => {
                let _ = multipart.abort_multipart(to, &id).await;
                Some(Err(e))
            }
        }
    }

    #[cfg(not(feature = "s3"))]
    pub(super) async fn copy_in_parts(
        &self,
        _multipart: &dyn MultipartStore,
        _from: &Path,
        _to: &Path,
        _size: u64,
    ) -> Option<Result<(), StorageError>> {
        None
    }

    /// Sends one UploadPartCopy per range of `from` (of at most [`COPY_PART_BYTES`], a few
    /// at once) and collects the parts' ETags in order.
    #[cfg(feature = "s3")]
    pub(super) async fn copy_parts(
        &self,
        copier: &PartCopy,
        from: &Path,
        to: &Path,
        upload_id: &str,
        size: u64,
    ) -> Result<Vec<NativePartId>, StorageError> {
        let source = format!("/{}/{}", copier.bucket, encode_key(from.as_ref()));
        let part_bytes = self.max_single_copy.min(COPY_PART_BYTES);
        let ranges = (0..size.div_ceil(part_bytes)).map(|index| {
            let start = index * part_bytes;
            (index + 1, start..(start + part_bytes).min(size))
        });
        futures_util::stream::iter(ranges)
            .map(|(number, range)| copy_part(copier, &source, to, upload_id, number, range))
            .buffered(JOIN_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Completes a native multipart upload at its staging key, then places the object at
    /// `target`: a server-side copy, or for objects S3 will not copy at once, a stream.
    pub(super) async fn complete_native(
        &self,
        multipart: &dyn MultipartStore,
        upload: &PartsUploadId,
        parts: &[PartId],
        target: &Key,
    ) -> Result<(), StorageError> {
        let (staging, id) = native_upload(upload.as_str())?;
        if self.exists(target).await? {
            return Err(StorageError::AlreadyExists);
        }
        let mut ids: Vec<NativePartId> = parts
            .iter()
            .map(|part| NativePartId {
                content_id: part.as_str().to_owned(),
            })
            .collect();
        if ids.is_empty() {
            // A multipart upload needs a part; the empty blob is one empty part.
            ids.push(
                multipart
                    .put_part(&staging, &id, 0, PutPayload::default())
                    .await
                    .map_err(error)?,
            );
        }
        multipart
            .complete_multipart(&staging, &id, ids)
            .await
            .map_err(error)?;
        let size = self.store.head(&staging).await.map_err(error)?.size;
        let target_path = path(target)?;
        if size <= self.max_single_copy {
            self.store
                .copy(&staging, &target_path)
                .await
                .map_err(error)?;
        } else if let Some(copied) = self
            .copy_in_parts(multipart, &staging, &target_path, size)
            .await
        {
            copied?;
        } else {
            self.stream_into(&[Key::new(staging.to_string())], &target_path)
                .await?;
        }
        match self.store.delete(&staging).await {
            Ok(()) | Err(::object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(error(e)),
        }
    }
}

/// One UploadPartCopy: the bytes `range` of `source` as part `number` of the upload.
#[cfg(feature = "s3")]
async fn copy_part(
    copier: &PartCopy,
    source: &str,
    to: &Path,
    upload_id: &str,
    number: u64,
    range: Range<u64>,
) -> Result<NativePartId, StorageError> {
    use ::object_store::signer::{HeaderMap, HeaderValue, Method, SignedUrlOptions};
    let number = number.to_string();
    let mut headers = HeaderMap::new();
    let value = |text: &str| HeaderValue::from_str(text).map_err(StorageError::backend);
    headers.insert("x-amz-copy-source", value(source)?);
    headers.insert(
        "x-amz-copy-source-range",
        value(&format!("bytes={}-{}", range.start, range.end - 1))?,
    );
    let mut options = SignedUrlOptions::default()
        .with_query([("partNumber", number.as_str()), ("uploadId", upload_id)]);
    options.signed_headers = headers.clone();
    let url = copier
        .signer
        .signed_url_opts(
            Method::PUT,
            to,
            std::time::Duration::from_secs(3600),
            &options,
        )
        .await
        .map_err(error)?;
    let response = copier
        .client
        .put(url)
        .headers(headers)
        .send()
        .await
        .map_err(StorageError::backend)?;
    let status = response.status();
    let body = response.text().await.map_err(StorageError::backend)?;
    if !status.is_success() {
        return Err(StorageError::backend(format!(
            "UploadPartCopy answered {status}: {body}"
        )));
    }
    let e_tag = body
        .split("<ETag>")
        .nth(1)
        .and_then(|rest| rest.split("</ETag>").next())
        .ok_or_else(|| StorageError::backend(format!("no ETag in UploadPartCopy answer: {body}")))?
        .replace("&quot;", "\"");
    Ok(NativePartId { content_id: e_tag })
}
