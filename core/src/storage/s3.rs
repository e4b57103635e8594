//! S3 storage from a handful of settings: the one way every berth host (the server, the C
//! ABI, Python) opens a bucket, so that all of them use S3's native multipart uploads,
//! presigned redirects and server-side part copies alike.

use std::sync::Arc;

use ::object_store::ClientConfigKey;
use ::object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

use super::{ObjectStoreStorage, StorageError};

/// How long one request to S3 may take, body included.
const REQUEST_TIMEOUT: &str = "600s";

/// Where and how to reach an S3 bucket (AWS, R2, MinIO, any S3-compatible service).
///
/// Credentials, session tokens and the like come from the usual `AWS_*` variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// Endpoint URL for S3-compatible services; AWS when `None`.
    pub endpoint: Option<String>,
    /// Region; `AWS_REGION`, else `us-east-1`, when `None`.
    pub region: Option<String>,
    /// Whether a plain-HTTP endpoint is acceptable.
    pub allow_http: bool,
    /// Address the bucket by path (`endpoint/bucket`) rather than by virtual host.
    pub path_style: bool,
    /// Objects above this many bytes are copied part by part (S3's limit, 5 GiB, when
    /// `None`); lowered only to test the part copy with small blobs.
    pub max_single_copy: Option<u64>,
}

impl S3Settings {
    /// Settings for `bucket`, everything else by default.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            ..Self::default()
        }
    }
}

impl ObjectStoreStorage {
    /// Storage on an S3 bucket, with S3's own multipart uploads (finishing an upload moves no
    /// byte through berth), presigned URLs for blob redirects, and UploadPartCopy for blobs
    /// over 5 GiB.
    pub fn s3(settings: &S3Settings) -> Result<Self, StorageError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_allow_http(settings.allow_http)
            .with_virtual_hosted_style_request(!settings.path_style)
            // object_store's default limits a request to 30 s, whole. Completing a multipart
            // upload of a large blob can take longer than that (the server joins the parts:
            // s3s-fs took over 30 s for 6 GiB here, and S3 itself may take minutes); the retry
            // after such a timeout finds the upload gone and fails the push.
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                REQUEST_TIMEOUT,
            );
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        } else if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let store = Arc::new(builder.build().map_err(StorageError::backend)?);
        let mut storage = Self::with_multipart(store.clone(), store.clone())
            .with_signer(store.clone())
            .with_part_copy(store, &settings.bucket);
        if let Some(bytes) = settings.max_single_copy {
            storage = storage.with_max_single_copy(bytes);
        }
        Ok(storage)
    }
}
