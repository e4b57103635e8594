//! The collector's side: candidates visited once past the grace period, claims, and the
//! first collection's marking of what was stored before references were tracked.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::{CLAIM_SECONDS, Collection, CollectionReport};
use crate::digest::Digest;
use crate::layout;
use crate::manifest::Manifest;
use crate::reference::RepositoryName;
use crate::registry::Registry;
use crate::storage::{Durability, Listed, PutMode, Storage, StorageError, StorageExt};

/// What the collector found for one digest.
struct Holders {
    /// Whether any manifest anywhere references the digest (or is it).
    referenced: bool,
    /// Of the repositories that link it, those with a manifest that references it.
    referencing: BTreeSet<String>,
    /// Repositories that link the digest as a blob, with the link's age in milliseconds
    /// (`None`: unknown, taken as young).
    linked: Vec<(String, Option<u64>)>,
}

impl Holders {
    /// The repositories whose link may go: no manifest there references the digest, and the
    /// link is older than `grace_ms`.
    fn unlinkable(&self, grace_ms: u64) -> Vec<String> {
        self.linked
            .iter()
            .filter(|(name, age)| {
                !self.referencing.contains(name) && age.is_some_and(|age| age >= grace_ms)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether the content may go once `unlinkable` links are gone.
    fn deletable(&self, unlinkable: &[String]) -> bool {
        !self.referenced && self.linked.len() == unlinkable.len()
    }
}

impl<S: Storage> Registry<S> {
    /// One step of garbage collection: visits up to `settings.max_candidates` candidates
    /// older than the grace period and deletes what nothing references any more. Any
    /// instance may run steps at any time, several at once; each continues where the
    /// candidates stand. The first step on a storage also writes the back-links of what was
    /// stored before references were tracked.
    pub async fn collect_garbage(
        &self,
        settings: &Collection,
    ) -> Result<CollectionReport, StorageError> {
        let mut report = CollectionReport::default();
        if !self.storage.exists(&layout::references_complete()).await? {
            if !settings.dry_run {
                report.marked = self.mark_stored().await?;
            } else if !self
                .storage
                .list(&layout::repositories(), false, None, 1)
                .await?
                .objects
                .is_empty()
            {
                // Marking writes; a dry run writes nothing.
                return Err(StorageError::Unsupported(
                    "a dry run before the first collection has written the back-links",
                ));
            }
        }
        let now = self.storage_now().await?;
        let grace_ms = settings.grace.saturating_mul(1000);
        let mut after: Option<String> = None;
        loop {
            let page = self
                .storage
                .list(layout::candidates(), false, after.as_deref(), 1000)
                .await?;
            for candidate in &page.objects {
                let old_enough = candidate
                    .last_modified
                    .is_some_and(|written| now.saturating_sub(written) >= grace_ms);
                if !old_enough {
                    // Listed in the order they were recorded: the rest are younger still.
                    return Ok(report);
                }
                if report.visited as usize >= settings.max_candidates {
                    report.left += 1;
                    return Ok(report);
                }
                let Some(digest) = candidate_digest(&candidate.key) else {
                    if !settings.dry_run {
                        self.storage
                            .delete(&candidate.key, Durability::Durable)
                            .await?;
                    }
                    continue;
                };
                report.visited += 1;
                match self
                    .collect(&digest, now, grace_ms, settings, &mut report)
                    .await?
                {
                    Visit::Done if !settings.dry_run => {
                        self.storage
                            .delete(&candidate.key, Durability::Durable)
                            .await?;
                    }
                    Visit::Done => {}
                    Visit::Busy => report.left += 1,
                }
            }
            after = page.objects.last().map(|object| object.key.to_string());
            if !page.truncated || after.is_none() {
                return Ok(report);
            }
        }
    }

    /// Deletes what nothing holds of `digest`: layer links that no manifest in their
    /// repository references and that are older than the grace period, then the content once
    /// nothing references or links it.
    async fn collect(
        &self,
        digest: &Digest,
        now: u64,
        grace_ms: u64,
        settings: &Collection,
        report: &mut CollectionReport,
    ) -> Result<Visit, StorageError> {
        let holders = self.holders(digest, now).await?;
        let unlinkable = holders.unlinkable(grace_ms);
        let deletable = holders.deletable(&unlinkable);
        if unlinkable.is_empty() && !deletable {
            return Ok(Visit::Done);
        }
        if settings.dry_run {
            self.count_deletions(digest, &unlinkable, deletable, report)
                .await?;
            return Ok(Visit::Done);
        }
        let claimed_at = (self.options.clock)();
        let claim = layout::claim(digest);
        let record = Bytes::from(format!("{}", claimed_at + CLAIM_SECONDS));
        match self
            .storage
            .put(&claim, record.clone(), PutMode::Create.into())
            .await
        {
            Ok(_) => {}
            Err(StorageError::AlreadyExists) => {
                // Another collector is at it, or died at it: its claim lapses.
                let (meta, held) = match self.storage.read_small(&claim, 64).await {
                    Ok(found) => found,
                    Err(StorageError::NotFound) => return Ok(Visit::Busy),
                    Err(e) => return Err(e),
                };
                let until = std::str::from_utf8(&held)
                    .ok()
                    .and_then(|text| text.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                if until > claimed_at {
                    return Ok(Visit::Busy);
                }
                match self
                    .storage
                    .put(&claim, record, PutMode::Update(meta.version).into())
                    .await
                {
                    Ok(_) => {}
                    Err(StorageError::PreconditionFailed | StorageError::NotFound) => {
                        return Ok(Visit::Busy);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        let deleted = self
            .delete_unheld(digest, now, grace_ms, claimed_at, report)
            .await;
        // Given back even when the deletes failed: what is left is decided again next time.
        self.storage.delete(&claim, Durability::Durable).await?;
        deleted
    }

    /// Under a claim: lists the holders again and deletes what is still unheld, while the
    /// claim is young enough that a waiting writer has not given up on it.
    async fn delete_unheld(
        &self,
        digest: &Digest,
        now: u64,
        grace_ms: u64,
        claimed_at: u64,
        report: &mut CollectionReport,
    ) -> Result<Visit, StorageError> {
        let in_time = || (self.options.clock)() < claimed_at + CLAIM_SECONDS / 2;
        let holders = self.holders(digest, now).await?;
        let unlinkable = holders.unlinkable(grace_ms);
        let deletable = holders.deletable(&unlinkable);
        let size = if deletable || !unlinkable.is_empty() {
            match self.storage.head(&layout::blob_data(digest)).await {
                Ok(meta) => Some(meta.size),
                Err(StorageError::NotFound) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        for repository in &unlinkable {
            let Ok(name) = repository.parse::<RepositoryName>() else {
                continue;
            };
            if !in_time() {
                return Ok(Visit::Busy);
            }
            self.storage
                .delete(&layout::layer_link(&name, digest), Durability::Durable)
                .await?;
            self.storage
                .delete(&layout::linked_in_entry(digest, &name), Durability::Durable)
                .await?;
            report.links_removed += 1;
            if let Some(size) = size {
                *report.by_repository.entry(repository.clone()).or_default() += size;
            }
        }
        if deletable {
            if !in_time() {
                return Ok(Visit::Busy);
            }
            self.storage
                .delete(&layout::blob_data(digest), Durability::Durable)
                .await?;
            if let Some(size) = size {
                report.blobs_deleted += 1;
                report.bytes_deleted += size;
            }
        }
        Ok(Visit::Done)
    }

    /// A dry run's account of what [`Registry::collect`] would delete.
    async fn count_deletions(
        &self,
        digest: &Digest,
        unlinkable: &[String],
        deletable: bool,
        report: &mut CollectionReport,
    ) -> Result<(), StorageError> {
        let size = match self.storage.head(&layout::blob_data(digest)).await {
            Ok(meta) => meta.size,
            Err(StorageError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        report.links_removed += unlinkable.len() as u64;
        for repository in unlinkable {
            *report.by_repository.entry(repository.clone()).or_default() += size;
        }
        if deletable {
            report.blobs_deleted += 1;
            report.bytes_deleted += size;
        }
        Ok(())
    }

    /// Who references and who links `digest`, with the links' ages at `now`: short
    /// listings (one entry) however many manifests reference a popular base layer.
    async fn holders(&self, digest: &Digest, now: u64) -> Result<Holders, StorageError> {
        let any = |prefix: String| async move {
            let page = self.storage.list(&prefix, false, None, 1).await?;
            Ok::<_, StorageError>(!page.objects.is_empty())
        };
        let referenced = any(layout::references(digest)).await?;
        let linked_in = layout::linked_in(digest);
        let linked = self
            .list_objects(&linked_in)
            .await?
            .into_iter()
            .filter_map(|listed| {
                let name = repository_of(&listed.key[linked_in.len()..])?;
                let age = listed
                    .last_modified
                    .map(|written| now.saturating_sub(written));
                Some((name, age))
            })
            .collect::<Vec<(String, Option<u64>)>>();
        let mut referencing = BTreeSet::new();
        if referenced {
            for (repository, _) in &linked {
                let Ok(name) = repository.parse::<RepositoryName>() else {
                    continue;
                };
                if any(layout::references_from(digest, &name)).await? {
                    referencing.insert(repository.clone());
                }
            }
        }
        Ok(Holders {
            referenced,
            referencing,
            linked,
        })
    }

    /// Every object below `prefix`, with its modification time.
    async fn list_objects(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        let mut objects = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .storage
                .list(prefix, false, after.as_deref(), 1000)
                .await?;
            after = page.objects.last().map(|object| object.key.to_string());
            objects.extend(page.objects);
            if !page.truncated || after.is_none() {
                return Ok(objects);
            }
        }
    }

    /// The storage's time, in milliseconds: the modification time of an object written now.
    async fn storage_now(&self) -> Result<u64, StorageError> {
        let key = layout::storage_clock();
        self.storage
            .put(&key, Bytes::new(), PutMode::Overwrite.volatile())
            .await?;
        self.storage
            .head(&key)
            .await?
            .last_modified
            .ok_or(StorageError::Unsupported(
                "garbage collection without modification times",
            ))
    }

    /// Writes the back-links and link entries of everything stored (every revision link and
    /// layer link), with a candidate per layer link, then marks the storage complete.
    /// Returns how many entries it wrote.
    async fn mark_stored(&self) -> Result<u64, StorageError> {
        let repositories = layout::repositories();
        let mut marked = 0;
        let mut after: Option<String> = None;
        let now = (self.options.clock)();
        loop {
            let page = self
                .storage
                .list(&repositories, false, after.as_deref(), 1000)
                .await?;
            after = page.objects.last().map(|object| object.key.to_string());
            for listed in &page.objects {
                let Some((name, kind, digest)) = stored_link(&listed.key[repositories.len()..])
                else {
                    continue;
                };
                match kind {
                    StoredLink::Revision => {
                        let manifest = match self
                            .storage
                            .read_small(&layout::blob_data(&digest), 64 * 1024 * 1024)
                            .await
                        {
                            Ok((_, bytes)) => Manifest::parse(&bytes, None).ok(),
                            Err(StorageError::NotFound) => None,
                            Err(e) => return Err(e),
                        };
                        let mut keys = vec![layout::reference(&digest, &name, None)];
                        if let Some(manifest) = &manifest {
                            keys.extend(manifest.referenced_digests().into_iter().map(
                                |referenced| layout::reference(referenced, &name, Some(&digest)),
                            ));
                        }
                        for key in &keys {
                            self.storage
                                .put(key, Bytes::new(), PutMode::Overwrite.into())
                                .await?;
                        }
                        marked += keys.len() as u64;
                    }
                    StoredLink::Layer => {
                        for key in [
                            layout::linked_in_entry(&digest, &name),
                            layout::candidate(now, &digest, "mark"),
                        ] {
                            self.storage
                                .put(&key, Bytes::new(), PutMode::Overwrite.into())
                                .await?;
                        }
                        marked += 1;
                    }
                }
            }
            if !page.truncated || after.is_none() {
                break;
            }
        }
        self.storage
            .put(
                &layout::references_complete(),
                Bytes::new(),
                PutMode::Overwrite.into(),
            )
            .await?;
        Ok(marked)
    }
}
/// How a visit of a candidate ended.
enum Visit {
    /// Decided: the candidate can go.
    Done,
    /// Another collector holds the digest, or time ran out: visit it again later.
    Busy,
}

/// The kind of link a key below `repositories/` is.
enum StoredLink {
    Revision,
    Layer,
}

/// The repository, kind and digest of a revision or layer link key below `repositories/`
/// (`<name>/_manifests/revisions/<alg>/<hex>/link`, `<name>/_layers/<alg>/<hex>/link`).
fn stored_link(rest: &str) -> Option<(RepositoryName, StoredLink, Digest)> {
    let rest = rest.strip_suffix("/link")?;
    let (before, hex) = rest.rsplit_once('/')?;
    let (before, algorithm) = before.rsplit_once('/')?;
    let digest: Digest = format!("{algorithm}:{hex}").parse().ok()?;
    if let Some(name) = before.strip_suffix("/_manifests/revisions") {
        return Some((name.parse().ok()?, StoredLink::Revision, digest));
    }
    let name = before.strip_suffix("/_layers")?;
    Some((name.parse().ok()?, StoredLink::Layer, digest))
}

/// The repository an entry below a digest's back-links or link entries belongs to
/// (`<repo>/!...`).
fn repository_of(rest: &str) -> Option<String> {
    rest.split_once("/!").map(|(name, _)| name.to_owned())
}

/// The digest a candidate key names (`<time>-<alg>-<hex>-<nonce>`).
fn candidate_digest(key: &str) -> Option<Digest> {
    let name = key.strip_prefix(layout::candidates())?;
    let mut fields = name.splitn(4, '-');
    let (_, algorithm, hex) = (fields.next()?, fields.next()?, fields.next()?);
    format!("{algorithm}:{hex}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_repository_and_digest() {
        let digest: Digest =
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse()
                .unwrap();
        let name: RepositoryName = "a/b".parse().unwrap();
        let reference = layout::reference(&digest, &name, Some(&digest));
        let prefix = layout::references(&digest);
        assert_eq!(
            repository_of(&reference[prefix.len()..]).as_deref(),
            Some("a/b")
        );
        assert!(reference.starts_with(&layout::references_from(&digest, &name)));
        let a: RepositoryName = "a".parse().unwrap();
        assert!(!reference.starts_with(&layout::references_from(&digest, &a)));
        assert_eq!(
            candidate_digest(&layout::candidate(12, &digest, "n-1")),
            Some(digest.clone())
        );
        let layer = layout::layer_link(&name, &digest);
        let rest = &layer[layout::repositories().len()..];
        assert!(matches!(
            stored_link(rest),
            Some((found, StoredLink::Layer, d)) if found == name && d == digest
        ));
        let revision = layout::revision_link(&name, &digest);
        assert!(matches!(
            stored_link(&revision[layout::repositories().len()..]),
            Some((_, StoredLink::Revision, _))
        ));
    }
}
