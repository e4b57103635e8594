//! A scrub: the occasional full pass that collection steps, which visit only candidates,
//! never make. It writes the back-links of every manifest, layer link and tag again, makes
//! every blob that nothing references or links a candidate (a blob published by a push that
//! died before its link, or left by another tool), purges expired upload sessions, removes
//! what writes killed half-way left in the storage (scratch files, parts no session names)
//! and has quota usage counted afresh. Collection steps then delete what it found, once the
//! grace period has passed.

use crate::digest::Digest;
use crate::error::Error;
use crate::layout;
use crate::registry::Registry;
use crate::registry::internal;
use crate::storage::{Leftovers, PartsUploadId, Storage, StorageError, StorageExt};
use crate::upload::UploadSession;

/// How a scrub runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scrub {
    /// Count what would be done; write and delete nothing.
    pub dry_run: bool,
    /// Purge upload sessions started longer ago than this (seconds); `None` keeps them.
    pub upload_expiry: Option<u64>,
    /// Remove scratch files and orphaned parts untouched for this long (seconds).
    pub leftovers_older_than: u64,
}

impl Default for Scrub {
    fn default() -> Self {
        Self {
            dry_run: false,
            upload_expiry: Some(7 * 24 * 60 * 60),
            leftovers_older_than: 24 * 60 * 60,
        }
    }
}

/// What a scrub found (and, unless a dry run, did).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Back-links and link entries written again.
    pub marked: u64,
    /// Blobs looked at.
    pub blobs: u64,
    /// Of those, blobs nothing references or links: now candidates for collection.
    pub stray_blobs: u64,
    /// Their bytes.
    pub stray_bytes: u64,
    /// Upload sessions purged (expired).
    pub uploads_purged: u64,
    /// Scratch files and orphaned parts uploads removed.
    pub leftovers: Leftovers,
    /// Whether quota usage was set to be counted afresh.
    pub usage_recounted: bool,
}

impl<S: Storage> Registry<S> {
    /// Scrubs the whole storage (see the module's notes): a walk of every repository and
    /// blob, for an occasional command (`berth scrub`), not a bounded step. Needs references
    /// tracked ([`crate::Options::track_references`]).
    pub async fn scrub(&self, settings: &Scrub) -> Result<ScrubReport, Error> {
        if !self.options.track_references {
            return Err(Error::new(
                crate::error::ErrorCode::Unsupported,
                "a scrub writes back-links: turn on reference tracking (berth serve --gc)",
            ));
        }
        let mut report = ScrubReport::default();
        if !settings.dry_run {
            report.marked = self.mark_stored().await.map_err(internal)?;
        }
        self.find_stray_blobs(settings.dry_run, &mut report)
            .await
            .map_err(internal)?;
        if let Some(expiry) = settings.upload_expiry
            && !settings.dry_run
        {
            report.uploads_purged = self.purge_uploads(expiry).await? as u64;
        }
        let live = self.live_parts().await.map_err(internal)?;
        report.leftovers = self
            .storage
            .remove_leftovers(&live, settings.leftovers_older_than, settings.dry_run)
            .await
            .map_err(internal)?;
        if !self.options.quotas.is_empty() && !settings.dry_run {
            self.storage
                .delete_all(layout::usage())
                .await
                .map_err(internal)?;
            report.usage_recounted = true;
        }
        Ok(report)
    }

    /// Makes every stored blob that nothing references or links a candidate.
    async fn find_stray_blobs(
        &self,
        dry_run: bool,
        report: &mut ScrubReport,
    ) -> Result<(), StorageError> {
        let blobs = layout::blobs();
        let now = (self.options.clock)();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .storage
                .list(&blobs, false, after.as_deref(), 1000)
                .await?;
            after = page.objects.last().map(|object| object.key.to_string());
            for listed in &page.objects {
                let Some(digest) = layout::blob_digest(&listed.key) else {
                    continue;
                };
                report.blobs += 1;
                if self.held(&digest).await? {
                    continue;
                }
                let size = match self.storage.head(&listed.key).await {
                    Ok(meta) => meta.size,
                    Err(StorageError::NotFound) => continue,
                    Err(e) => return Err(e),
                };
                report.stray_blobs += 1;
                report.stray_bytes += size;
                if !dry_run {
                    self.storage
                        .put(
                            &layout::candidate(now, &digest, "scrub"),
                            bytes::Bytes::new(),
                            crate::storage::PutMode::Overwrite.into(),
                        )
                        .await?;
                }
            }
            if !page.truncated || after.is_none() {
                return Ok(());
            }
        }
    }

    /// Whether a manifest references `digest` or a repository links it.
    async fn held(&self, digest: &Digest) -> Result<bool, StorageError> {
        for prefix in [layout::references(digest), layout::linked_in(digest)] {
            if !self
                .storage
                .list(&prefix, false, None, 1)
                .await?
                .objects
                .is_empty()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The parts uploads that upload sessions name.
    async fn live_parts(&self) -> Result<Vec<PartsUploadId>, StorageError> {
        let mut live = Vec::new();
        for key in self.storage.list_all(layout::upload_sessions()).await? {
            let Ok((_, record)) = self.storage.read_small(&key, 1 << 20).await else {
                continue;
            };
            if let Ok(session) = UploadSession::decode(&record)
                && let Some(upload) = session.parts_upload()
            {
                live.push(upload.clone());
            }
        }
        Ok(live)
    }
}
