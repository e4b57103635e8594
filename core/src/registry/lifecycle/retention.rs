//! Retention rules applied by a collection step ([`crate::retention`] decides): repositories
//! visited in catalog order from a cursor in storage (`berth/gc/retention-cursor`), so any
//! instance's next step continues the pass (a new pass starts at most hourly, or once the
//! grace period has passed since the last one ended: `berth/gc/retention-pass`); each covered repository's tags read (one request
//! each: the tag's link, whose modification time is its push time by the storage's clock),
//! and the expired ones deleted as a DELETE of the tag would, under the tag's lease and only
//! if the tag was not pushed again meanwhile. Immutable tags are never removed.
//!
//! The same pass evicts from pull-through caches whose rule sets `evict-after`
//! ([`crate::proxy::unpulled`] decides): tags whose image was neither cached nor pulled for
//! that long, by the last-pull keys (one listing a repository); manifests pulled by digest
//! alone, as old, are handed to untagged collection (a candidate each, their keys removed).

use bytes::Bytes;

use super::{Collection, CollectionReport, storage_error};
use crate::digest::Digest;
use crate::layout;
use crate::reference::{RepositoryName, Tag};
use crate::registry::Registry;
use crate::registry::leases::Leased;
use crate::retention::TagState;
use crate::storage::{Durability, PutMode, Storage, StorageError, StorageExt};

/// Repositories read from the catalog at once.
const CATALOG_PAGE: usize = 100;

/// The longest time between two passes of the rules (shorter with a shorter grace period).
const PASS_INTERVAL_SECONDS: u64 = 60 * 60;

impl<S: Storage> Registry<S> {
    /// Applies the retention rules to repositories after the cursor, until the step's budget
    /// (`max_candidates` tag reads) is spent; a dry run reads them all and writes nothing.
    pub(super) async fn retain(
        &self,
        now: u64,
        settings: &Collection,
        report: &mut CollectionReport,
    ) -> Result<(), StorageError> {
        let cursor_key = layout::retention_cursor();
        let mut cursor = if settings.dry_run {
            None
        } else {
            match self.storage.read_small(&cursor_key, 1024).await {
                Ok((_, bytes)) => String::from_utf8(bytes.to_vec()).ok(),
                Err(StorageError::NotFound) => None,
                Err(e) => return Err(e),
            }
        };
        if cursor.is_none() && !settings.dry_run && !self.retention_due(now, settings).await? {
            return Ok(());
        }
        let mut budget = settings.max_candidates;
        loop {
            let (names, more) = self
                .catalog_page(cursor.as_deref(), Some(CATALOG_PAGE))
                .await
                .map_err(storage_error)?;
            for name in &names {
                if let Ok(repository) = name.parse::<RepositoryName>()
                    && (self.options.retention.rule_for(name).is_some()
                        || self.eviction_age(&repository) > 0)
                {
                    budget = budget.saturating_sub(
                        self.retain_repository(&repository, now, settings, report)
                            .await?,
                    );
                }
                cursor = Some(name.clone());
                if budget == 0 && !settings.dry_run {
                    report.left += 1;
                    return self.save_cursor(cursor.as_deref()).await;
                }
            }
            if !more || names.is_empty() {
                // A whole pass: the next one starts from the beginning, once due.
                if settings.dry_run {
                    return Ok(());
                }
                self.storage
                    .put(
                        &layout::retention_pass(),
                        Bytes::new(),
                        PutMode::Overwrite.into(),
                    )
                    .await?;
                return self.save_cursor(None).await;
            }
        }
    }

    /// Whether a new pass is due: the last one ended at least the grace period ago (at most
    /// an hour), so steps in between visit candidates rather than read every tag again.
    async fn retention_due(&self, now: u64, settings: &Collection) -> Result<bool, StorageError> {
        let every = settings
            .grace
            .min(PASS_INTERVAL_SECONDS)
            .saturating_mul(1000);
        match self.storage.head(&layout::retention_pass()).await {
            Ok(meta) => Ok(meta
                .last_modified
                .is_none_or(|ended| now.saturating_sub(ended) >= every)),
            Err(StorageError::NotFound) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Deletes the expired tags of one repository; returns how many tags it read.
    async fn retain_repository(
        &self,
        name: &RepositoryName,
        now: u64,
        settings: &Collection,
        report: &mut CollectionReport,
    ) -> Result<usize, StorageError> {
        let (tags, _) = self
            .tags_page(name, None, None)
            .await
            .map_err(storage_error)?;
        let mut states = Vec::with_capacity(tags.len());
        for tag in &tags {
            let Ok(tag) = tag.parse::<Tag>() else {
                continue;
            };
            if let Some(state) = self.tag_state(name, &tag).await? {
                states.push(state);
            }
        }
        let mut expired = self.options.retention.expired(name.as_str(), &states, now);
        let mut read = tags.len();
        let evict_after = self.eviction_age(name);
        if evict_after > 0 {
            let pulls = self.pulls_of(name).await?;
            read += 1;
            let (evicted, forgotten) = crate::proxy::unpulled(&states, &pulls, now, evict_after);
            for tag in evicted {
                if !expired.contains(&tag) {
                    expired.push(tag);
                }
            }
            if !settings.dry_run {
                self.forget_pulls(name, &forgotten).await?;
            }
        }
        for tag in expired {
            if self.options.access.is_immutable(name, tag) {
                continue;
            }
            let (Ok(tag), Some(seen)) = (
                tag.parse::<Tag>(),
                states.iter().find(|state| state.name == tag),
            ) else {
                continue;
            };
            let deleted = settings.dry_run || self.expire_tag(name, &tag, seen).await?;
            if deleted {
                report.tags_deleted += 1;
                report
                    .tags_by_repository
                    .entry(name.as_str().to_owned())
                    .or_default()
                    .push(tag.as_str().to_owned());
            }
        }
        Ok(read)
    }

    /// Seconds after its last pull that a cached repository's content is evicted (0: not
    /// a cache, or one that keeps everything).
    fn eviction_age(&self, name: &RepositoryName) -> u64 {
        self.options
            .upstreams
            .owner(name)
            .map_or(0, |rule| rule.evict_after)
    }

    /// A cached repository's last-pull times: `(digest, written)`, by the storage's clock.
    async fn pulls_of(&self, name: &RepositoryName) -> Result<Vec<(String, u64)>, StorageError> {
        let prefix = layout::proxy_pulled_in(name);
        Ok(self
            .list_objects(&prefix)
            .await?
            .into_iter()
            .filter_map(|listed| {
                let (algorithm, hex) = listed.key[prefix.len()..].split_once('-')?;
                let digest = format!("{algorithm}:{hex}").parse::<Digest>().ok()?;
                Some((
                    digest.as_str().to_owned(),
                    listed.last_modified.unwrap_or(0),
                ))
            })
            .collect())
    }

    /// Leaves manifests no longer pulled (and no longer tagged) to untagged collection: a
    /// candidate each, then their last-pull keys go (so a visit no longer keeps them).
    async fn forget_pulls(
        &self,
        name: &RepositoryName,
        digests: &[&str],
    ) -> Result<(), StorageError> {
        let digests: Vec<Digest> = digests.iter().filter_map(|d| d.parse().ok()).collect();
        let named: Vec<&Digest> = digests.iter().collect();
        self.record_manifest_candidates(name, &named)
            .await
            .map_err(storage_error)?;
        for digest in &digests {
            self.storage
                .delete(&layout::proxy_pulled(name, digest), Durability::Durable)
                .await?;
        }
        Ok(())
    }

    /// A tag's digest and push time (`None`: gone, or its link unreadable).
    async fn tag_state(
        &self,
        name: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<TagState>, StorageError> {
        let (meta, link) = match self
            .storage
            .read_small(&layout::tag_current(name, tag), 1024)
            .await
        {
            Ok(found) => found,
            Err(StorageError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let digest = std::str::from_utf8(&link)
            .ok()
            .and_then(|text| text.trim().parse::<Digest>().ok());
        Ok(digest.map(|digest| TagState {
            name: tag.as_str().to_owned(),
            digest: digest.as_str().to_owned(),
            pushed: meta.last_modified.unwrap_or(u64::MAX),
        }))
    }

    /// Deletes an expired tag under its lease, if it still is what the decision saw.
    async fn expire_tag(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        seen: &TagState,
    ) -> Result<bool, StorageError> {
        let lease = self
            .lease(name, Leased::Tag(tag))
            .await
            .map_err(storage_error)?;
        let deleted = async {
            if self.tag_state(name, tag).await?.as_ref() != Some(seen) {
                // Pushed again meanwhile: the next pass decides.
                return Ok(false);
            }
            let digest: Digest = seen.digest.parse().map_err(storage_error)?;
            self.delete_tag_if(name, tag, Some(&digest))
                .await
                .map_err(storage_error)
        }
        .await;
        self.give_back(lease).await;
        deleted
    }

    /// Writes (or, at the end of a pass, removes) the cursor.
    async fn save_cursor(&self, cursor: Option<&str>) -> Result<(), StorageError> {
        let key = layout::retention_cursor();
        match cursor {
            Some(name) => self
                .storage
                .put(
                    &key,
                    Bytes::from(name.to_owned()),
                    PutMode::Overwrite.into(),
                )
                .await
                .map(drop),
            None => self.storage.delete(&key, Durability::Durable).await,
        }
    }
}
