//! Manifests: OCI image manifest and index, Docker v2 schema 2 manifest and manifest list.
//!
//! A manifest is stored byte for byte, and its digest is the digest of those bytes, so this
//! module only reads: it finds the media type, the blobs a manifest needs, its children, its
//! `subject` and `artifactType`. Unknown fields are tolerated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, ErrorCode};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The default manifest size limit: 4 MiB, the bound the spec asks registries to accept
/// (`spec.md#pushing-manifests`).
pub const DEFAULT_MANIFEST_LIMIT: usize = 4 * 1024 * 1024;

/// Which of the two manifest shapes a document has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image (or artifact) manifest: a config and layers.
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

/// A content descriptor, with the fields berth reads; the rest are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The artifact type, for referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Where non-distributable content may be fetched instead of this registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Every other field (platform, data, …), kept as sent.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What berth needs to know of a manifest it is asked to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The media type: the document's `mediaType`, else the request's `Content-Type`.
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// The config descriptor of an image manifest.
    pub config: Option<Descriptor>,
    /// Layers of an image manifest; children of an index.
    pub references: Vec<Descriptor>,
    /// The manifest this one refers to.
    pub subject: Option<Descriptor>,
    /// The artifact type as the referrers API reports it: `artifactType`, else the config's
    /// media type (`spec.md#listing-referrers`).
    pub artifact_type: Option<String>,
    /// Annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Parses a manifest sent with `content_type` (the request's header, if any).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, Error> {
        let invalid = |why: String| Error::new(ErrorCode::ManifestInvalid, why);
        let document: Document = serde_json::from_slice(bytes).map_err(|e| {
            invalid(format!(
                "manifest is not valid JSON of the expected shape: {e}"
            ))
        })?;
        if document.schema_version != Some(2) {
            return Err(invalid("manifest schemaVersion must be 2".into()));
        }
        let header_type = content_type
            .map(|t| t.split(';').next().unwrap_or(t).trim())
            .filter(|t| !t.is_empty());
        if let (Some(declared), Some(header)) = (&document.media_type, header_type)
            && declared != header
        {
            return Err(invalid(format!(
                "Content-Type {header} does not match the manifest's mediaType {declared}"
            )));
        }
        let media_type = document
            .media_type
            .clone()
            .or(header_type.map(str::to_owned))
            .unwrap_or_else(|| infer_media_type(&document).to_owned());
        let kind = match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => ManifestKind::Image,
            OCI_INDEX | DOCKER_MANIFEST_LIST => ManifestKind::Index,
            other => {
                return Err(invalid(format!(
                    "unsupported manifest media type {other}: push an OCI image manifest or \
                     index, or a Docker v2 schema 2 manifest or manifest list"
                )));
            }
        };
        let (config, references) = match kind {
            ManifestKind::Image => {
                let config = document
                    .config
                    .ok_or_else(|| invalid("an image manifest needs a config".into()))?;
                (Some(config), document.layers.unwrap_or_default())
            }
            ManifestKind::Index => {
                let manifests = document
                    .manifests
                    .ok_or_else(|| invalid("an index needs a manifests array".into()))?;
                (None, manifests)
            }
        };
        let artifact_type = document
            .artifact_type
            .or_else(|| config.as_ref().map(|c| c.media_type.clone()));
        Ok(Self {
            media_type,
            kind,
            config,
            references,
            subject: document.subject,
            artifact_type,
            annotations: document.annotations,
        })
    }

    /// Every digest the manifest names (config, layers or children, subject), each once: what
    /// it keeps from the garbage collector.
    pub fn referenced_digests(&self) -> Vec<&Digest> {
        let mut digests: Vec<&Digest> = self
            .config
            .iter()
            .chain(&self.references)
            .chain(&self.subject)
            .map(|descriptor| &descriptor.digest)
            .collect();
        digests.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        digests.dedup();
        digests
    }

    /// Blobs that must exist in the repository before this manifest is accepted: the config
    /// and the layers, less non-distributable layers that carry `urls`.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        let layers = match self.kind {
            ManifestKind::Image => self.references.as_slice(),
            ManifestKind::Index => &[],
        };
        self.config
            .iter()
            .chain(layers.iter().filter(|layer| layer.urls.is_none()))
    }
}

/// The media type of a document that does not declare one (older OCI manifests).
fn infer_media_type(document: &Document) -> &'static str {
    match (&document.config, &document.manifests) {
        (Some(config), _) if config.media_type.starts_with("application/vnd.docker.") => {
            DOCKER_MANIFEST
        }
        (Some(_), _) => OCI_MANIFEST,
        (None, Some(_)) => OCI_INDEX,
        (None, None) => OCI_MANIFEST,
    }
}

/// The media type of stored manifest bytes, read back without the request that stored them.
pub(crate) fn stored_media_type(bytes: &[u8]) -> Option<String> {
    let document: Document = serde_json::from_slice(bytes).ok()?;
    Some(
        document
            .media_type
            .clone()
            .unwrap_or_else(|| infer_media_type(&document).to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0}"#;

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{CONFIG},"layers":[{CONFIG}]{extra}}}"#
        )
    }

    #[test]
    fn reads_an_image_manifest() {
        let manifest = Manifest::parse(image("").as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(manifest.kind, ManifestKind::Image);
        assert_eq!(manifest.required_blobs().count(), 2);
        assert_eq!(
            manifest.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn reads_subject_and_artifact_type() {
        let bytes = image(&format!(
            r#","artifactType":"application/x-sig","subject":{CONFIG},"unknown":[1]"#
        ));
        let manifest = Manifest::parse(bytes.as_bytes(), None).unwrap();
        assert_eq!(manifest.artifact_type.as_deref(), Some("application/x-sig"));
        assert!(manifest.subject.is_some());
    }

    #[test]
    fn media_type_from_header_when_absent() {
        let bytes = format!(r#"{{"schemaVersion":2,"manifests":[{CONFIG}]}}"#);
        let manifest = Manifest::parse(bytes.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(manifest.kind, ManifestKind::Index);
        assert_eq!(manifest.required_blobs().count(), 0);
        assert_eq!(
            stored_media_type(bytes.as_bytes()).as_deref(),
            Some(OCI_INDEX)
        );
    }

    #[test]
    fn rejects_bad_manifests() {
        for (bytes, content_type) in [
            ("not json".to_owned(), None),
            (r#"{"schemaVersion":1}"#.to_owned(), None),
            (image(""), Some(OCI_INDEX)),
            (format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}"}}"#), None),
            (r#"{"schemaVersion":2,"mediaType":"text/plain"}"#.to_owned(), None),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:bad","size":1},"layers":[]}"#
                    .to_owned(),
                None,
            ),
        ] {
            let error = Manifest::parse(bytes.as_bytes(), content_type).unwrap_err();
            assert_eq!(error.code(), ErrorCode::ManifestInvalid, "{bytes}");
        }
    }
}
