//! Untagged collection: manifests no tag points at, that no manifest of their repository
//! names as a child, and that are not referrers of a subject the repository keeps.
//!
//! Candidates come from the writers (`berth/gc/manifests/`): a manifest pushed by digest, a
//! tag moved away or deleted, an index or a subject deleted. A visit decides from the
//! manifest's back-links in its repository alone (one listing): its revision link's (and its
//! age), its tags' (each checked against the tag, since a request that died half-way leaves
//! a stale one), its parents'. Deleting takes the manifest's digest lease, which every push
//! of it holds (no tag can move to it meanwhile), and a claim on its digest, which an index
//! push naming it as a child waits out before it checks the child is there.

use super::collect::Visit;
use super::{Collection, storage_error};
use crate::digest::Digest;
use crate::layout;
use crate::manifest::Manifest;
use crate::reference::{RepositoryName, Tag};
use crate::registry::Registry;
use crate::registry::leases::Leased;
use crate::storage::{Durability, Storage, StorageError, StorageExt};

/// The largest manifest a visit reads (as the registry serves).
const MANIFEST_READ_LIMIT: u64 = 64 * 1024 * 1024;

/// What the back-links of a manifest in its repository decide.
enum Verdict {
    /// Gone already, tagged, a child of a manifest there, a referrer of a subject there, or
    /// pushed within the grace period.
    Keep,
    /// Untagged: it may go, with the back-links of tags that no longer point at it.
    Collect { stale_tags: Vec<Tag> },
}

impl<S: Storage> Registry<S> {
    /// Visits the manifest candidate `digest` of `name`: deletes the manifest from the
    /// repository when it is untagged (its blobs become candidates).
    pub(super) async fn collect_untagged(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        now: u64,
        settings: &Collection,
    ) -> Result<(Visit, bool), StorageError> {
        if let Verdict::Keep = self.verdict(name, digest, now, settings).await? {
            return Ok((Visit::Done, false));
        }
        if settings.dry_run {
            return Ok((Visit::Done, true));
        }
        let lease = self
            .lease(name, Leased::Digest(digest))
            .await
            .map_err(storage_error)?;
        let collected = self.collect_leased(name, digest, now, settings).await;
        self.give_back(lease).await;
        collected
    }

    /// Under the manifest's lease: claims its digest, decides again, and deletes.
    async fn collect_leased(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        now: u64,
        settings: &Collection,
    ) -> Result<(Visit, bool), StorageError> {
        let Some(claimed_at) = self.claim_digest(digest).await? else {
            return Ok((Visit::Busy, false));
        };
        let collected = async {
            let Verdict::Collect { stale_tags } = self.verdict(name, digest, now, settings).await?
            else {
                return Ok((Visit::Done, false));
            };
            if !self.claim_in_time(claimed_at) {
                return Ok((Visit::Busy, false));
            }
            for tag in &stale_tags {
                self.storage
                    .delete(
                        &layout::tag_reference(digest, name, tag),
                        Durability::Durable,
                    )
                    .await?;
            }
            let deleted = self
                .delete_revision(name, digest, Some(Vec::new()))
                .await
                .map_err(storage_error)?;
            Ok((Visit::Done, deleted))
        }
        .await;
        self.storage
            .delete(&layout::claim(digest), Durability::Durable)
            .await?;
        collected
    }

    /// Decides from the manifest's back-links in `name` whether it is untagged.
    async fn verdict(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        now: u64,
        settings: &Collection,
    ) -> Result<Verdict, StorageError> {
        let prefix = layout::references_from(digest, name);
        let mut revision_age = None;
        let mut stale_tags = Vec::new();
        for listed in self.list_objects(&prefix).await? {
            let by = &listed.key[prefix.len()..];
            if by.is_empty() {
                revision_age = Some(
                    listed
                        .last_modified
                        .map_or(0, |written| now.saturating_sub(written)),
                );
            } else if let Some(tag) = by.strip_prefix('~') {
                let Ok(tag) = tag.parse::<Tag>() else {
                    continue;
                };
                let current = self
                    .read_link(&layout::tag_current(name, &tag))
                    .await
                    .map_err(storage_error)?;
                if current.as_ref() == Some(digest) {
                    return Ok(Verdict::Keep);
                }
                stale_tags.push(tag);
            } else if !by.starts_with('^') {
                // Named by a manifest of the repository (an index): kept while it is.
                return Ok(Verdict::Keep);
            }
        }
        let old_enough = revision_age.is_some_and(|age| age >= settings.grace.saturating_mul(1000));
        if !old_enough || self.pulled_lately(name, digest, now).await? {
            return Ok(Verdict::Keep);
        }
        let manifest = match self
            .storage
            .read_small(&layout::blob_data(digest), MANIFEST_READ_LIMIT)
            .await
        {
            Ok((_, bytes)) => Manifest::parse(&bytes, None).ok(),
            Err(StorageError::NotFound) => None,
            Err(e) => return Err(e),
        };
        if let Some(subject) = manifest
            .as_ref()
            .and_then(|manifest| manifest.subject.as_ref())
        {
            let subject_kept = self
                .storage
                .exists(&layout::reference(&subject.digest, name, None))
                .await?;
            if subject_kept || !settings.orphaned_referrers {
                return Ok(Verdict::Keep);
            }
        }
        Ok(Verdict::Collect { stale_tags })
    }
}

impl<S: Storage> Registry<S> {
    /// Whether a cached manifest was pulled within its rule's `evict-after` (caches that
    /// evict keep what is pulled by digest, untagged, while it is pulled).
    async fn pulled_lately(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        now: u64,
    ) -> Result<bool, StorageError> {
        let Some(rule) = self.options.upstreams.owner(name) else {
            return Ok(false);
        };
        if rule.evict_after == 0 {
            return Ok(false);
        }
        match self.storage.head(&layout::proxy_pulled(name, digest)).await {
            Ok(meta) => Ok(meta.last_modified.is_none_or(|pulled| {
                now.saturating_sub(pulled) < rule.evict_after.saturating_mul(1000)
            })),
            Err(StorageError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The manifest and repository a manifest candidate key names
/// (`<time>-<alg>-<hex>-<nonce>/<name>`).
pub(super) fn manifest_candidate(key: &str) -> Option<(Digest, RepositoryName)> {
    let rest = key.strip_prefix(layout::manifest_candidates())?;
    let (head, name) = rest.split_once('/')?;
    let mut fields = head.splitn(4, '-');
    let (_, algorithm, hex) = (fields.next()?, fields.next()?, fields.next()?);
    let digest = format!("{algorithm}:{hex}").parse().ok()?;
    Some((digest, name.parse().ok()?))
}
