//! Manifests: end-3 (GET/HEAD), end-7 (PUT) and end-9 (DELETE).

use futures_util::future::{try_join, try_join_all};

use super::leases::Leased;
use super::{Registry, internal, read_body};
use crate::access::Action;
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, ErrorCode};
use crate::layout;
use crate::manifest::{Descriptor, Manifest, ManifestKind, OCI_INDEX, stored_media_type};
use crate::reference::{Reference, RepositoryName, Tag};
use crate::request::{RequestBody, RequestHead};
use crate::response::Response;
use crate::storage::{Durability, PutMode, Storage, StorageError, StorageExt};

/// Where a manifest being committed comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// A client pushed it: its blobs must be here, and moving a tag may need a right.
    Pushed,
    /// A pull-through cache fetched it from its upstream.
    Cached,
}

/// The most a stored manifest may be when read back, whatever today's push limit is.
const STORED_MANIFEST_LIMIT: u64 = 64 * 1024 * 1024;

impl<S: Storage> Registry<S> {
    /// The digest a reference names in `name`, if the repository has it.
    pub(super) async fn resolve(
        &self,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<Digest>, Error> {
        match reference {
            Reference::Tag(tag) => self.read_link(&layout::tag_current(name, tag)).await,
            Reference::Digest(digest) => Ok(self
                .read_link(&layout::revision_link(name, digest))
                .await?
                .map(|_| digest.clone())),
        }
    }

    pub(super) async fn get_manifest(
        &self,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<Response, Error> {
        let unknown = || {
            Error::new(
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in {name}"),
            )
        };
        let digest = self.resolve(name, reference).await?.ok_or_else(unknown)?;
        let bytes = match self
            .storage
            .read_small(&layout::blob_data(&digest), STORED_MANIFEST_LIMIT)
            .await
        {
            Ok((_, bytes)) => bytes,
            Err(StorageError::NotFound) => return Err(unknown()),
            Err(e) => return Err(internal(e)),
        };
        let media_type = stored_media_type(&bytes).unwrap_or_else(|| OCI_INDEX.to_owned());
        Ok(Response::empty(200)
            .with_header("Docker-Content-Digest", digest.as_str())
            .with_header("ETag", format!("\"{digest}\""))
            .with_full_body(&media_type, bytes))
    }

    pub(super) async fn put_manifest(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        reference: &Reference,
        body: &mut RequestBody,
    ) -> Result<Response, Error> {
        let limit = self.options.manifest_limit;
        let bytes = read_body(body, limit).await.map_err(|e| {
            if e.status() == 413 {
                Error::new(
                    ErrorCode::SizeInvalid,
                    format!("manifest exceeds the {limit}-byte limit"),
                )
                .with_status(413)
            } else {
                e
            }
        })?;
        self.commit_manifest(head, name, reference, bytes, Source::Pushed)
            .await
    }

    /// Stores and links a manifest: one a client pushed, or one fetched from an upstream
    /// into a pull-through cache (whose blobs come only when asked for, and whose tags move
    /// as the upstream's do).
    pub(super) async fn commit_manifest(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        reference: &Reference,
        bytes: bytes::Bytes,
        source: Source,
    ) -> Result<Response, Error> {
        let manifest = Manifest::parse(&bytes, head.header("Content-Type"))?;
        let pushed = source == Source::Pushed;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = expected.algorithm().digest(&bytes);
                if &actual != expected {
                    return Err(Error::new(
                        ErrorCode::DigestInvalid,
                        format!("manifest has digest {actual}, not {expected}"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Algorithm::Sha256.digest(&bytes),
        };
        let mut tags = Vec::new();
        if let Reference::Tag(tag) = reference {
            tags.push(tag.clone());
        }
        for (key, value) in head.query_pairs() {
            if key == "tag" {
                tags.push(value.parse::<Tag>().map_err(|e| {
                    Error::new(ErrorCode::ManifestInvalid, format!("?tag={value}: {e}"))
                })?);
            }
        }
        // With references tracked, the blobs are looked up under the leases below, after the
        // back-links that keep them from the collector are written.
        let tracked = self.options.track_references;
        if !tracked && pushed {
            self.check_manifest_blobs(name, &manifest).await?;
        }

        // Refused before anything is written; checked again under the leases below, where a
        // concurrent push can no longer move the tag in between.
        if pushed {
            self.check_overwrites(head, name, &digest, &tags).await?;
        }
        if !tracked {
            self.store_manifest(&digest, &bytes).await?;
        }
        // Checked before the revision link (nothing, for a manifest the repository has).
        let charge = self
            .check_quota(name, &digest, Some(bytes.len() as u64))
            .await?;
        // The catalog entry first, so a failure leaves no link behind it.
        self.register_repository(name).await?;
        let leases = self.lease_all(name, Some(&digest), &tags).await?;
        let linked = async {
            // Under the tags' leases, so no concurrent push moves one in between.
            if pushed {
                self.check_overwrites(head, name, &digest, &tags).await?;
            }
            // What the tags point at now, under their leases (with references tracked).
            let mut moved = Vec::new();
            if tracked {
                for tag in &tags {
                    if let Some(previous) = self.read_link(&layout::tag_current(name, tag)).await? {
                        moved.push((tag.clone(), previous));
                    }
                }
                // Under the digest's lease, so a delete of the same manifest cannot remove
                // the back-links between their write and the revision link's.
                self.track_manifest(name, &digest, &manifest, &tags).await?;
                let stored = async {
                    if pushed {
                        self.check_manifest_blobs(name, &manifest).await?;
                    }
                    self.store_manifest(&digest, &bytes).await
                }
                .await;
                if let Err(refused) = stored {
                    self.abandon_manifest(name, &digest, &manifest, &tags).await;
                    return Err(refused);
                }
            }
            self.link_manifest(name, &digest, &manifest, bytes.len() as u64, &tags)
                .await?;
            self.track_retags(name, &digest, &moved, !tags.is_empty())
                .await
        }
        .await;
        self.release_all(leases).await;
        linked?;
        self.record(charge).await?;

        let mut response = Response::empty(201)
            .with_header("Location", format!("/v2/{name}/manifests/{digest}"))
            .with_header("Docker-Content-Digest", digest.as_str())
            .with_header("Content-Length", "0");
        if let Some(subject) = &manifest.subject {
            response = response.with_header("OCI-Subject", subject.digest.as_str());
        }
        for tag in &tags {
            response = response.with_header("OCI-Tag", tag.as_str());
        }
        Ok(response)
    }

    /// Refuses a manifest whose blobs the repository lacks (unless the registry is told not
    /// to check).
    async fn check_manifest_blobs(
        &self,
        name: &RepositoryName,
        manifest: &Manifest,
    ) -> Result<(), Error> {
        if !self.options.require_manifest_blobs {
            return Ok(());
        }
        let blobs: Vec<_> = manifest.required_blobs().collect();
        let keys: Vec<_> = blobs
            .iter()
            .map(|blob| layout::layer_link(name, &blob.digest))
            .collect();
        // Looked up at once: each lookup is a storage round trip.
        let links = try_join_all(keys.iter().map(|key| self.read_link(key))).await?;
        if self.options.track_references && manifest.kind == ManifestKind::Index {
            // Untagged collection may delete a child this index names: its back-links are
            // written, so a child still here now stays.
            self.check_index_children(name, manifest).await?;
        }
        // With references tracked, this runs after the back-links are written, and then the
        // content itself is looked at too: a collector that decided before the back-links
        // landed may have deleted it under a link written again since; none deletes it
        // after this.
        let stored = if self.options.track_references {
            try_join_all(blobs.iter().map(|blob| self.blob_exists(&blob.digest))).await?
        } else {
            vec![true; blobs.len()]
        };
        for ((blob, link), stored) in blobs.iter().zip(links).zip(stored) {
            if link.is_none() || !stored {
                return Err(Error::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!(
                        "blob {} is not in {name}: push it before the manifest",
                        blob.digest
                    ),
                )
                .with_detail(serde_json::json!({ "digest": blob.digest })));
            }
        }
        Ok(())
    }

    /// Refuses an index whose child manifests the repository lacks (as registry:2 does).
    async fn check_index_children(
        &self,
        name: &RepositoryName,
        index: &Manifest,
    ) -> Result<(), Error> {
        let keys: Vec<_> = index
            .references
            .iter()
            .map(|child| layout::revision_link(name, &child.digest))
            .collect();
        let children = try_join_all(keys.iter().map(|key| self.read_link(key))).await?;
        for (child, link) in index.references.iter().zip(children) {
            if link.is_none() {
                return Err(Error::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!(
                        "manifest {} is not in {name}: push it before the index",
                        child.digest
                    ),
                )
                .with_detail(serde_json::json!({ "digest": child.digest })));
            }
        }
        Ok(())
    }

    /// Stores a manifest's content at its digest (already there: the same content).
    async fn store_manifest(&self, digest: &Digest, bytes: &bytes::Bytes) -> Result<(), Error> {
        match self
            .storage
            .put(
                &layout::blob_data(digest),
                bytes.clone(),
                PutMode::Create.into(),
            )
            .await
        {
            Ok(_) | Err(StorageError::AlreadyExists) => Ok(()),
            Err(e) => Err(internal(e)),
        }
    }

    /// Moving a tag that points at another manifest needs [`Action::Overwrite`], when the
    /// access hook decides per caller (re-pushing the manifest a tag holds does not).
    async fn check_overwrites(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
        digest: &Digest,
        tags: &[Tag],
    ) -> Result<(), Error> {
        if !self.options.access.decides_per_caller() {
            return Ok(());
        }
        for tag in tags {
            let current = self.read_link(&layout::tag_current(name, tag)).await?;
            if current.is_some_and(|current| &current != digest) {
                if self.options.access.is_immutable(name, tag.as_str()) {
                    return Err(immutable(name, tag));
                }
                self.authorize(head, Some(name), Action::Overwrite)?;
            }
        }
        Ok(())
    }

    /// Deleting a manifest by digest would leave an immutable tag that holds it pointing at
    /// nothing: refused. (Deletes are rare; this reads the repository's tags.)
    async fn check_no_immutable_tag_holds(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), Error> {
        if !self.options.access.decides_per_caller() {
            return Ok(());
        }
        let (tags, _) = self.tags_page(name, None, None).await?;
        for tag in tags {
            if !self.options.access.is_immutable(name, &tag) {
                continue;
            }
            let Ok(tag) = tag.parse::<Tag>() else {
                continue;
            };
            if self
                .read_link(&layout::tag_current(name, &tag))
                .await?
                .as_ref()
                == Some(digest)
            {
                return Err(immutable(name, &tag));
            }
        }
        Ok(())
    }

    /// Writes the names that lead to a stored manifest, holding its leases: the subject's
    /// referrer entry, the revision link, and each tag's links and index entry.
    async fn link_manifest(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        manifest: &Manifest,
        size: u64,
        tags: &[Tag],
    ) -> Result<(), Error> {
        // With the content durable, the names that lead to it are written at once (their
        // fsyncs overlap). None is acknowledged before all are stored.
        let referrer = async {
            let Some(subject) = &manifest.subject else {
                return Ok(());
            };
            let descriptor = Descriptor {
                media_type: manifest.media_type.clone(),
                digest: digest.clone(),
                size,
                artifact_type: manifest.artifact_type.clone(),
                annotations: manifest.annotations.clone(),
                urls: None,
                extra: Default::default(),
            };
            let entry = serde_json::to_vec(&descriptor).map_err(|e| {
                Error::new(
                    ErrorCode::Unknown,
                    format!("cannot encode a descriptor: {e}"),
                )
            })?;
            self.storage
                .put(
                    &layout::referrer(name, &subject.digest, digest),
                    entry.into(),
                    PutMode::Overwrite.into(),
                )
                .await
                .map(drop)
                .map_err(internal)
        };
        let mut links = vec![layout::revision_link(name, digest)];
        for tag in tags {
            links.push(layout::tag_index(name, tag, digest));
            links.push(layout::tag_current(name, tag));
            // The tag index entry (see `index_tag`) holds the digest too.
            links.push(layout::tag_index_entry(name, tag));
        }
        try_join(
            referrer,
            try_join_all(links.iter().map(|key| self.write_link(key, digest))),
        )
        .await
        .map(drop)
    }

    pub(super) async fn delete_manifest(
        &self,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<Response, Error> {
        self.check_delete_enabled()?;
        let unknown = || {
            Error::new(
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in {name}"),
            )
        };
        let found = match reference {
            Reference::Tag(tag) => {
                if self.options.access.is_immutable(name, tag.as_str()) {
                    return Err(immutable(name, tag));
                }
                let lease = self.lease(name, Leased::Tag(tag)).await?;
                let deleted = self.delete_tag_if(name, tag, None).await;
                self.give_back(lease).await;
                deleted?
            }
            Reference::Digest(digest) => {
                self.check_no_immutable_tag_holds(name, digest).await?;
                let lease = self.lease(name, Leased::Digest(digest)).await?;
                let deleted = self.delete_revision(name, digest, None).await;
                self.give_back(lease).await;
                deleted?
            }
        };
        if !found {
            return Err(unknown());
        }
        Ok(Response::empty(202).with_header("Content-Length", "0"))
    }

    /// Removes a tag, holding its lease, if it exists and (when `pointing_at` is given) points
    /// at that digest. Returns whether it did.
    pub(in crate::registry) async fn delete_tag_if(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        pointing_at: Option<&Digest>,
    ) -> Result<bool, Error> {
        let Some(current) = self.read_link(&layout::tag_current(name, tag)).await? else {
            return Ok(false);
        };
        if pointing_at.is_some_and(|digest| digest != &current) {
            return Ok(false);
        }
        self.delete_tag(name, tag).await?;
        self.untrack_tag(name, tag, &current).await?;
        Ok(true)
    }

    /// Removes a manifest from a repository, holding its digest's lease: its referrer entry,
    /// the tags that point at it (as registry:2 does; all of the repository's are read unless
    /// `tags` says which), then its revision link. Returns whether the repository had it.
    pub(super) async fn delete_revision(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        tags: Option<Vec<Tag>>,
    ) -> Result<bool, Error> {
        if self
            .read_link(&layout::revision_link(name, digest))
            .await?
            .is_none()
        {
            return Ok(false);
        }
        // Forget it as a referrer of its subject. A storage failure here fails the request
        // (which a retry completes); only a manifest that is gone or unreadable has no subject.
        let stored = match self
            .storage
            .read_small(&layout::blob_data(digest), STORED_MANIFEST_LIMIT)
            .await
        {
            Ok((_, bytes)) => Some(bytes),
            Err(StorageError::NotFound) => None,
            Err(e) => return Err(internal(e)),
        };
        let manifest = stored.and_then(|bytes| Manifest::parse(&bytes, None).ok());
        if let Some(subject) = manifest
            .as_ref()
            .and_then(|manifest| manifest.subject.as_ref())
        {
            self.storage
                .delete(
                    &layout::referrer(name, &subject.digest, digest),
                    Durability::Durable,
                )
                .await
                .map_err(internal)?;
        }
        // No tag can be moved to this digest meanwhile (that needs the lease held here); one
        // moved away from it is seen under its own lease and left alone.
        let tags = match tags {
            Some(tags) => tags,
            None => self.tag_names(name).await?,
        };
        for tag in tags {
            if self
                .read_link(&layout::tag_current(name, &tag))
                .await?
                .as_ref()
                == Some(digest)
            {
                let lease = self.lease(name, Leased::Tag(&tag)).await?;
                let deleted = self.delete_tag_if(name, &tag, Some(digest)).await;
                self.give_back(lease).await;
                deleted?;
            }
        }
        // Last, so that a request that dies half-way leaves a manifest with fewer tags, which
        // some serial order of deletes also leaves, and never a tag without its manifest.
        self.storage
            .delete(&layout::revision_link(name, digest), Durability::Durable)
            .await
            .map_err(internal)?;
        // After the revision link: a request that dies in between leaves back-links that
        // only keep blobs longer.
        self.untrack_manifest(name, digest, manifest.as_ref())
            .await?;
        self.uncharge(name, digest).await?;
        Ok(true)
    }
}

/// The refusal to move or delete an immutable tag.
fn immutable(name: &RepositoryName, tag: &Tag) -> Error {
    Error::new(
        ErrorCode::Denied,
        format!("tag {tag} of {name} is immutable: it cannot be moved or deleted; push a new tag"),
    )
}
