//! Pre-filling a cache: an image fetched as a pull would fetch it, before anyone pulls it.

use futures_util::StreamExt;

use crate::digest::Digest;
use crate::error::{Error, ErrorCode};
use crate::manifest::{Manifest, ManifestKind};
use crate::reference::{Reference, RepositoryName};
use crate::registry::Registry;
use crate::request::{Method, RequestHead};
use crate::response::{Body, Response};
use crate::storage::Storage;

/// What pre-filling an image did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorReport {
    /// Manifests read (the image's, an index's children for the platforms asked for).
    pub manifests: u64,
    /// Blobs fetched from the upstream.
    pub blobs_fetched: u64,
    /// Their bytes.
    pub bytes_fetched: u64,
    /// Blobs the cache held already.
    pub blobs_cached: u64,
}

impl<S: Storage> Registry<S> {
    /// Pre-fills the cached image `name:reference` (a name as clients pull it:
    /// `docker-hub/nginx`, `library/nginx` under a mirror at the root) the way a pull
    /// would: the manifest, checked upstream as a tag is; an index's children for
    /// `platforms` (`linux/amd64`, `linux/arm/v7`; all of them when empty), then each
    /// image's config and layers, each fetched once (however many instances pre-fill or
    /// pull at once) and verified. Nothing already cached is fetched again.
    pub async fn mirror(
        &self,
        name: &str,
        reference: &str,
        platforms: &[String],
    ) -> Result<MirrorReport, Error> {
        let invalid = |why: String| Error::new(ErrorCode::NameInvalid, why);
        let name: RepositoryName = name
            .parse()
            .map_err(|_| invalid(format!("{name:?} is not a repository name")))?;
        let reference: Reference = reference.parse().map_err(|_| {
            Error::new(
                ErrorCode::ManifestInvalid,
                format!("{reference:?} is neither a tag nor a digest"),
            )
        })?;
        let routed = self
            .options
            .upstreams
            .route(&name, None)
            .ok_or_else(|| invalid(format!("{name} is not in a pull-through cache")))?;
        let mut report = MirrorReport::default();
        let mut images = Vec::new();
        let top = self.cached_manifest(&routed, &reference).await?;
        let top = manifest_of(top).await?;
        report.manifests += 1;
        match top.kind {
            ManifestKind::Index => {
                for child in &top.references {
                    let platform = child.extra.get("platform");
                    if !platforms.is_empty()
                        && !platforms.iter().any(|wanted| is_platform(platform, wanted))
                    {
                        continue;
                    }
                    let child = Reference::Digest(child.digest.clone());
                    let image = self.cached_manifest(&routed, &child).await?;
                    report.manifests += 1;
                    images.push(manifest_of(image).await?);
                }
            }
            _ => images.push(top),
        }
        let get = RequestHead::new(Method::Get, format!("/v2/{name}/blobs/"));
        for image in &images {
            let blobs = image.config.iter().chain(image.references.iter());
            for blob in blobs {
                if self.links(&routed.local, &blob.digest).await? {
                    report.blobs_cached += 1;
                    continue;
                }
                let response = self.cached_blob(&get, &routed, &blob.digest).await?;
                report.bytes_fetched += drain(response, &blob.digest).await?;
                report.blobs_fetched += 1;
            }
        }
        Ok(report)
    }
}

/// The manifest a response carries.
async fn manifest_of(response: Response) -> Result<Manifest, Error> {
    let content_type = response.header("Content-Type").map(str::to_owned);
    match response.body {
        Body::Full(bytes) => Manifest::parse(&bytes, content_type.as_deref()),
        _ => Err(Error::new(
            ErrorCode::Unknown,
            "a manifest came without a body",
        )),
    }
}

/// Reads a blob's body to its end (the fill behind it verifies the digest), returning its
/// length.
async fn drain(response: Response, digest: &Digest) -> Result<u64, Error> {
    let mut read = 0u64;
    match response.body {
        Body::Full(bytes) => read = bytes.len() as u64,
        Body::Empty => {}
        Body::Stream(mut stream) => {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    Error::new(ErrorCode::Unknown, format!("fetching {digest}: {e}"))
                        .with_status(502)
                })?;
                read += chunk.len() as u64;
            }
        }
    }
    Ok(read)
}

/// Whether an index entry's `platform` is `wanted` (`os/architecture[/variant]`).
fn is_platform(platform: Option<&serde_json::Value>, wanted: &str) -> bool {
    let Some(platform) = platform else {
        return false;
    };
    let field = |name: &str| platform.get(name).and_then(|value| value.as_str());
    let mut parts = wanted.split('/');
    let (os, architecture, variant) = (parts.next(), parts.next(), parts.next());
    field("os") == os
        && field("architecture") == architecture
        && (variant.is_none() || field("variant") == variant)
}
