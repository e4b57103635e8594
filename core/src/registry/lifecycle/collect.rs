//! The collector's side: candidates visited once past the grace period, claims, and the
//! first collection's marking of what was stored before references were tracked.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::track::manifest_back_links;
use super::{CLAIM_SECONDS, Collection, CollectionReport, storage_error, untagged};
use crate::digest::Digest;
use crate::layout;
use crate::manifest::Manifest;
use crate::reference::{RepositoryName, Tag};
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
                // A page a step, within the step's budget: nothing is collected until every
                // page is marked.
                let (marked, done) = self.mark_stored_step(settings.max_candidates).await?;
                report.marked = marked;
                if !done {
                    report.left = 1;
                    return Ok(report);
                }
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
        if !self.options.retention.is_empty() || self.options.upstreams.evicts() {
            // First: the tags it (and eviction) removes leave manifests untagged.
            self.retain(now, settings, &mut report).await?;
            if !report.finished() {
                return Ok(report);
            }
        }
        if settings.untagged {
            // First: the manifests it deletes make their blobs candidates.
            self.walk(Queue::Manifests, now, settings, &mut report)
                .await?;
            if !report.finished() {
                return Ok(report);
            }
        }
        self.walk(Queue::Blobs, now, settings, &mut report).await?;
        Ok(report)
    }

    /// Visits the candidates of `queue` older than the grace period, oldest first, until the
    /// step's budget is spent.
    async fn walk(
        &self,
        queue: Queue,
        now: u64,
        settings: &Collection,
        report: &mut CollectionReport,
    ) -> Result<(), StorageError> {
        let grace_ms = settings.grace.saturating_mul(1000);
        let prefix = match queue {
            Queue::Blobs => layout::candidates(),
            Queue::Manifests => layout::manifest_candidates(),
        };
        let mut after: Option<String> = None;
        loop {
            let page = self
                .storage
                .list(prefix, false, after.as_deref(), 1000)
                .await?;
            for candidate in &page.objects {
                let old_enough = candidate
                    .last_modified
                    .is_some_and(|written| now.saturating_sub(written) >= grace_ms);
                if !old_enough {
                    // Listed in the order they were recorded: the rest are younger still.
                    return Ok(());
                }
                if report.visited as usize >= settings.max_candidates {
                    report.left += 1;
                    return Ok(());
                }
                let visit = match queue {
                    Queue::Blobs => match candidate_digest(&candidate.key) {
                        Some(digest) => {
                            report.visited += 1;
                            Some(
                                self.collect(&digest, now, grace_ms, settings, report)
                                    .await?,
                            )
                        }
                        None => None,
                    },
                    Queue::Manifests => match untagged::manifest_candidate(&candidate.key) {
                        Some((digest, name)) => {
                            report.visited += 1;
                            let (visit, deleted) =
                                self.collect_untagged(&name, &digest, now, settings).await?;
                            report.manifests_deleted += u64::from(deleted);
                            Some(visit)
                        }
                        None => None,
                    },
                };
                match visit {
                    // Unreadable (written by no berth): it goes too.
                    Some(Visit::Done) | None if !settings.dry_run => {
                        self.storage
                            .delete(&candidate.key, Durability::Durable)
                            .await?;
                    }
                    Some(Visit::Done) | None => {}
                    Some(Visit::Busy) => report.left += 1,
                }
            }
            after = page.objects.last().map(|object| object.key.to_string());
            if !page.truncated || after.is_none() {
                return Ok(());
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
        let Some(claimed_at) = self.claim_digest(digest).await? else {
            return Ok(Visit::Busy);
        };
        let deleted = self
            .delete_unheld(digest, now, grace_ms, claimed_at, report)
            .await;
        // Given back even when the deletes failed: what is left is decided again next time.
        self.storage
            .delete(&layout::claim(digest), Durability::Durable)
            .await?;
        deleted
    }

    /// Claims `digest` for deletion: returns when, or `None` while another collector's claim
    /// holds it (one of a collector that died lapses).
    pub(super) async fn claim_digest(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let claimed_at = (self.options.clock)();
        let claim = layout::claim(digest);
        let record = Bytes::from(format!("{}", claimed_at + CLAIM_SECONDS));
        match self
            .storage
            .put(&claim, record.clone(), PutMode::Create.into())
            .await
        {
            Ok(_) => return Ok(Some(claimed_at)),
            Err(StorageError::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
        let (meta, held) = match self.storage.read_small(&claim, 64).await {
            Ok(found) => found,
            Err(StorageError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let until = std::str::from_utf8(&held)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if until > claimed_at {
            return Ok(None);
        }
        match self
            .storage
            .put(&claim, record, PutMode::Update(meta.version).into())
            .await
        {
            Ok(_) => Ok(Some(claimed_at)),
            Err(StorageError::PreconditionFailed | StorageError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a claim taken at `claimed_at` is young enough to delete under: a writer that
    /// found it waits out all of it, so the deletes end half-way.
    pub(super) fn claim_in_time(&self, claimed_at: u64) -> bool {
        (self.options.clock)() < claimed_at + CLAIM_SECONDS / 2
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
        let in_time = || self.claim_in_time(claimed_at);
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
            self.uncharge(&name, digest).await.map_err(storage_error)?;
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
    pub(super) async fn list_objects(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
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
    pub(super) async fn mark_stored(&self) -> Result<u64, StorageError> {
        let mut marked = 0;
        loop {
            let (written, done) = self.mark_stored_step(1000).await?;
            marked += written;
            if done {
                return Ok(marked);
            }
        }
    }

    /// One page of [`Registry::mark_stored`]: at most `budget` keys below the repositories,
    /// from where the cursor in storage (`berth/gc/mark-cursor`) says the last page ended, so
    /// that any instance's next step continues it. Returns the entries written and whether
    /// the storage is now marked complete. (Steps of two collectors at once mark some keys
    /// twice, which writes nothing new.)
    pub(super) async fn mark_stored_step(
        &self,
        budget: usize,
    ) -> Result<(u64, bool), StorageError> {
        let repositories = layout::repositories();
        let mut marked = 0;
        let cursor = layout::mark_cursor();
        let mut after = match self.storage.read_small(&cursor, 4096).await {
            Ok((_, bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(StorageError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let now = (self.options.clock)();
        let mut budget = budget.max(1);
        loop {
            let page = self
                .storage
                .list(&repositories, false, after.as_deref(), budget.min(1000))
                .await?;
            budget = budget.saturating_sub(page.objects.len());
            after = page.objects.last().map(|object| object.key.to_string());
            for listed in &page.objects {
                let Some((name, link)) = stored_link(&listed.key[repositories.len()..]) else {
                    continue;
                };
                let keys = match link {
                    StoredLink::Revision(digest) => {
                        let manifest = match self
                            .storage
                            .read_small(&layout::blob_data(&digest), 64 * 1024 * 1024)
                            .await
                        {
                            Ok((_, bytes)) => Manifest::parse(&bytes, None).ok(),
                            Err(StorageError::NotFound) => None,
                            Err(e) => return Err(e),
                        };
                        let mut keys = match &manifest {
                            Some(manifest) => manifest_back_links(&name, &digest, manifest),
                            None => vec![layout::reference(&digest, &name, None)],
                        };
                        // Every manifest stored before may be untagged.
                        keys.push(layout::manifest_candidate(now, &digest, &name, "mark"));
                        keys
                    }
                    StoredLink::Layer(digest) => vec![
                        layout::linked_in_entry(&digest, &name),
                        layout::candidate(now, &digest, "mark"),
                    ],
                    StoredLink::Tag(tag) => {
                        let current = self
                            .storage
                            .read_small(&listed.key, 1024)
                            .await
                            .ok()
                            .and_then(|(_, link)| {
                                std::str::from_utf8(&link)
                                    .ok()?
                                    .trim()
                                    .parse::<Digest>()
                                    .ok()
                            });
                        match current {
                            Some(digest) => vec![layout::tag_reference(&digest, &name, &tag)],
                            None => Vec::new(),
                        }
                    }
                };
                for key in &keys {
                    self.storage
                        .put(key, Bytes::new(), PutMode::Overwrite.into())
                        .await?;
                }
                marked += keys.len() as u64;
            }
            if !page.truncated || after.is_none() {
                break;
            }
            if budget == 0 {
                if let Some(last) = &after {
                    self.storage
                        .put(
                            &cursor,
                            Bytes::from(last.clone()),
                            PutMode::Overwrite.into(),
                        )
                        .await?;
                }
                return Ok((marked, false));
            }
        }
        self.storage
            .put(
                &layout::references_complete(),
                Bytes::new(),
                PutMode::Overwrite.into(),
            )
            .await?;
        self.storage.delete(&cursor, Durability::Durable).await?;
        Ok((marked, true))
    }
}
/// The two queues of candidates.
#[derive(Clone, Copy)]
enum Queue {
    /// Digests whose content and layer links may be unheld.
    Blobs,
    /// Manifests that may be untagged in a repository.
    Manifests,
}

/// How a visit of a candidate ended.
pub(super) enum Visit {
    /// Decided: the candidate can go.
    Done,
    /// Another collector holds the digest, or time ran out: visit it again later.
    Busy,
}

/// A link below `repositories/` that references hold.
pub(in crate::registry) enum StoredLink {
    /// A manifest's revision link.
    Revision(Digest),
    /// A layer link.
    Layer(Digest),
    /// A tag's current link (the digest is its content).
    Tag(Tag),
}

/// The repository and link a key below `repositories/` is, if it is one that references hold
/// (`<name>/_manifests/revisions/<alg>/<hex>/link`, `<name>/_layers/<alg>/<hex>/link`,
/// `<name>/_manifests/tags/<tag>/current/link`).
pub(in crate::registry) fn stored_link(rest: &str) -> Option<(RepositoryName, StoredLink)> {
    let rest = rest.strip_suffix("/link")?;
    if let Some(tag) = rest.strip_suffix("/current") {
        let (name, tag) = tag.rsplit_once("/_manifests/tags/")?;
        return Some((name.parse().ok()?, StoredLink::Tag(tag.parse().ok()?)));
    }
    let (before, hex) = rest.rsplit_once('/')?;
    let (before, algorithm) = before.rsplit_once('/')?;
    let digest: Digest = format!("{algorithm}:{hex}").parse().ok()?;
    if let Some(name) = before.strip_suffix("/_manifests/revisions") {
        return Some((name.parse().ok()?, StoredLink::Revision(digest)));
    }
    let name = before.strip_suffix("/_layers")?;
    Some((name.parse().ok()?, StoredLink::Layer(digest)))
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
            Some((found, StoredLink::Layer(d))) if found == name && d == digest
        ));
        let revision = layout::revision_link(&name, &digest);
        assert!(matches!(
            stored_link(&revision[layout::repositories().len()..]),
            Some((_, StoredLink::Revision(_)))
        ));
        let tag: Tag = "v1".parse().unwrap();
        let current = layout::tag_current(&name, &tag);
        assert!(matches!(
            stored_link(&current[layout::repositories().len()..]),
            Some((found, StoredLink::Tag(t))) if found == name && t == tag
        ));
        let history = layout::tag_index(&name, &tag, &digest);
        assert!(stored_link(&history[layout::repositories().len()..]).is_none());
        assert_eq!(
            untagged::manifest_candidate(&layout::manifest_candidate(3, &digest, &name, "n/1")),
            Some((digest.clone(), name.clone()))
        );
    }
}
