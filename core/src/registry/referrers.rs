//! Referrers (end-12): the manifests whose subject is a digest, as an image index.

use bytes::Bytes;

use super::{Registry, internal};
use crate::digest::Digest;
use crate::error::Error;
use crate::http::query;
use crate::layout;
use crate::manifest::{Descriptor, OCI_INDEX};
use crate::reference::RepositoryName;
use crate::request::RequestHead;
use crate::response::Response;
use crate::storage::{Storage, StorageError, StorageExt};

impl<S: Storage> Registry<S> {
    pub(super) async fn referrers(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        subject: &Digest,
    ) -> Result<Response, Error> {
        let filter = query(head, "artifactType").filter(|t| !t.is_empty());
        let prefix = layout::referrers(name, subject);
        let mut descriptors = Vec::new();
        for key in self.storage.list_all(&prefix).await.map_err(internal)? {
            let bytes = match self.storage.read_small(&key, 1024 * 1024).await {
                Ok((_, bytes)) => bytes,
                // Deleted between the listing and the read.
                Err(StorageError::NotFound) => continue,
                Err(e) => return Err(internal(e)),
            };
            let Ok(descriptor) = serde_json::from_slice::<Descriptor>(&bytes) else {
                continue;
            };
            if filter
                .as_ref()
                .is_none_or(|f| descriptor.artifact_type.as_ref() == Some(f))
            {
                descriptors.push(descriptor);
            }
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": descriptors,
        });
        let body = Bytes::from(serde_json::to_vec(&index).unwrap_or_default());
        let mut response = Response::empty(200).with_full_body(OCI_INDEX, body);
        if filter.is_some() {
            response = response.with_header("OCI-Filters-Applied", "artifactType");
        }
        Ok(response)
    }
}
