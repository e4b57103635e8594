//! The writers' side: back-links, link entries and candidates, and waiting out a
//! collector's claim.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::try_join_all;

use super::CLAIM_SECONDS;
use crate::digest::Digest;
use crate::error::{Error, ErrorCode};
use crate::layout;
use crate::manifest::{Manifest, ManifestKind};
use crate::reference::{RepositoryName, Tag};
use crate::registry::{Registry, internal};
use crate::storage::{Durability, Key, PutMode, Storage, StorageExt};

impl<S: Storage> Registry<S> {
    /// Writes the back-links of the manifest `digest` of `name` (before its revision link),
    /// and of the tags about to point at it, then waits out any collector's claim on what it
    /// references.
    pub(in crate::registry) async fn track_manifest(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        manifest: &Manifest,
        tags: &[Tag],
    ) -> Result<(), Error> {
        if !self.options.track_references {
            return Ok(());
        }
        self.note_fresh_storage().await?;
        let mut keys = manifest_back_links(name, digest, manifest);
        keys.extend(
            tags.iter()
                .map(|tag| layout::tag_reference(digest, name, tag)),
        );
        try_join_all(keys.iter().map(|key| self.put_marker(key))).await?;
        let mut digests = manifest.referenced_digests();
        digests.push(digest);
        // Collectors remove no back-link another request wrote (a manifest's own go only
        // under its digest's lease, which this request holds): once written, they hold
        // whatever a claim waited out here did not delete, which the caller checks next.
        self.wait_out_claims(&digests).await.map(drop)
    }

    /// After a manifest push: the tags it moved away from other manifests no longer hold
    /// them (their back-links go, and each becomes a manifest candidate); a manifest pushed
    /// without a tag is a manifest candidate itself.
    pub(in crate::registry) async fn track_retags(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        moved: &[(Tag, Digest)],
        tagged: bool,
    ) -> Result<(), Error> {
        if !self.options.track_references {
            return Ok(());
        }
        for (tag, previous) in moved {
            if previous != digest {
                self.untrack_tag(name, tag, previous).await?;
            }
        }
        if !tagged {
            self.record_manifest_candidates(name, &[digest]).await?;
        }
        Ok(())
    }

    /// After the tag `tag` of `name` stopped pointing at `digest` (moved or deleted, under
    /// the tag's lease): its back-link goes, and `digest` becomes a manifest candidate.
    pub(in crate::registry) async fn untrack_tag(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), Error> {
        if !self.options.track_references {
            return Ok(());
        }
        self.storage
            .delete(
                &layout::tag_reference(digest, name, tag),
                Durability::Durable,
            )
            .await
            .map_err(internal)?;
        // Its content too: a visit that saw the back-link kept it.
        self.record_candidates(&[digest]).await?;
        self.record_manifest_candidates(name, &[digest]).await
    }

    /// Removes the back-links of a manifest whose revision link is gone, and records what it
    /// referenced as candidates: its blobs, and its children and referrers as manifest
    /// candidates (they may be untagged now).
    pub(in crate::registry) async fn untrack_manifest(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        manifest: Option<&Manifest>,
    ) -> Result<(), Error> {
        if !self.options.track_references {
            return Ok(());
        }
        let keys = match manifest {
            Some(manifest) => manifest_back_links(name, digest, manifest),
            None => vec![layout::reference(digest, name, None)],
        };
        try_join_all(
            keys.iter()
                .map(|key| self.storage.delete(key, Durability::Durable)),
        )
        .await
        .map_err(internal)?;
        let referenced = manifest
            .map(Manifest::referenced_digests)
            .unwrap_or_default();
        let mut digests = referenced;
        digests.push(digest);
        self.record_candidates(&digests).await?;
        let mut manifests: Vec<Digest> = manifest
            .filter(|manifest| manifest.kind == ManifestKind::Index)
            .map(|index| {
                index
                    .references
                    .iter()
                    .map(|child| child.digest.clone())
                    .collect()
            })
            .unwrap_or_default();
        let referrers = layout::referrers(name, digest);
        for key in self.storage.list_all(&referrers).await.map_err(internal)? {
            if let Ok(referrer) = key[referrers.len()..]
                .replacen('-', ":", 1)
                .parse::<Digest>()
            {
                manifests.push(referrer);
            }
        }
        let manifests: Vec<&Digest> = manifests.iter().collect();
        self.record_manifest_candidates(name, &manifests).await
    }

    /// Records that `name` is about to link the blob `digest`, then waits out any
    /// collector's claim on it. After this, no collector deletes the blob for the grace
    /// period: the caller then checks the content is there (or publishes it), writes the
    /// layer link, and records the blob as a candidate ([`Registry::may_collect`]), which
    /// has the collector look at it once the grace period is over.
    pub(in crate::registry) async fn track_link(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), Error> {
        if !self.options.track_references {
            return Ok(());
        }
        self.note_fresh_storage().await?;
        // The entry is written again each time (its age is the link's). A collector whose
        // claim this waited out may have removed it (and the link, and the content): then
        // it is written again, and what it covers is checked by the caller after.
        for _ in 0..3 {
            self.put_marker(&layout::linked_in_entry(digest, name))
                .await?;
            if !self.wait_out_claims(&[digest]).await? {
                return Ok(());
            }
        }
        // The entry stays: the candidate has the collector look at it again.
        self.record_candidates(&[digest]).await?;
        Err(Error::new(
            ErrorCode::Unknown,
            format!("blob {digest} is being collected as garbage over and over: try again"),
        )
        .with_status(503))
    }

    /// Records `digest` as a candidate, after a layer link to it was written or removed.
    /// Recorded last, so that the collector's visit sees what the request left. (A removed
    /// link's entry stays until the collector removes it: a link written again meanwhile
    /// keeps its entry that way.)
    pub(in crate::registry) async fn may_collect(&self, digest: &Digest) -> Result<(), Error> {
        if !self.options.track_references {
            return Ok(());
        }
        self.record_candidates(&[digest]).await
    }

    /// Before this registry's first tracked write: a storage that holds no repository yet has
    /// every reference it will ever hold recorded, so it is marked complete at once (the
    /// first collection then has nothing to mark, and a dry run can run). Looked at once per
    /// registry, whatever it found.
    async fn note_fresh_storage(&self) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        if self.references_complete.load(Ordering::Relaxed) {
            return Ok(());
        }
        let marker = layout::references_complete();
        if !self.storage.exists(&marker).await.map_err(internal)? {
            let stored = self
                .storage
                .list(&layout::repositories(), false, None, 1)
                .await
                .map_err(internal)?;
            // Written before references were tracked, the first collection marks it;
            // otherwise it is complete now.
            if stored.objects.is_empty() {
                self.put_marker(&marker).await?;
            }
        }
        self.references_complete.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Records candidates for `digests`, stamped with the host's time (their order only).
    async fn record_candidates(&self, digests: &[&Digest]) -> Result<(), Error> {
        let now = (self.options.clock)();
        let nonce = (self.options.ids)();
        let keys: Vec<Key> = digests
            .iter()
            .map(|digest| layout::candidate(now, digest, &nonce))
            .collect();
        try_join_all(keys.iter().map(|key| self.put_marker(key)))
            .await
            .map(drop)
    }

    /// Records manifest candidates for `digests` of `name`.
    pub(super) async fn record_manifest_candidates(
        &self,
        name: &RepositoryName,
        digests: &[&Digest],
    ) -> Result<(), Error> {
        if digests.is_empty() {
            return Ok(());
        }
        let now = (self.options.clock)();
        let nonce = (self.options.ids)();
        let keys: Vec<Key> = digests
            .iter()
            .map(|digest| layout::manifest_candidate(now, digest, name, &nonce))
            .collect();
        try_join_all(keys.iter().map(|key| self.put_marker(key)))
            .await
            .map(drop)
    }

    /// Writes an empty key whose presence (and modification time) is what it says.
    pub(in crate::registry) async fn put_marker(&self, key: &Key) -> Result<(), Error> {
        self.storage
            .put(key, Bytes::new(), PutMode::Overwrite.into())
            .await
            .map(drop)
            .map_err(internal)
    }

    /// Waits while a collector claims one of `digests` (one listing when none does, as
    /// almost always), at most [`CLAIM_SECONDS`]. Returns whether it waited.
    async fn wait_out_claims(&self, digests: &[&Digest]) -> Result<bool, Error> {
        let ours: BTreeSet<Key> = digests.iter().map(|digest| layout::claim(digest)).collect();
        let started = (self.options.clock)();
        let mut wait = Duration::from_millis(10);
        let mut waited = false;
        loop {
            let claims = self
                .storage
                .list_all(layout::claims())
                .await
                .map_err(internal)?;
            if !claims.iter().any(|claim| ours.contains(claim)) {
                return Ok(waited);
            }
            waited = true;
            if (self.options.clock)() >= started + CLAIM_SECONDS {
                // The claim lapsed: its collector stopped deleting long ago.
                return Ok(waited);
            }
            match &self.options.pause {
                Some(pause) => {
                    pause(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                None => crate::registry::leases::yield_now().await,
            }
        }
    }

    /// Takes back the back-links of a manifest push that failed before its revision link,
    /// holding the digest's lease (best effort: back-links left behind only keep blobs).
    /// Were the manifest there already, they are its own and stay.
    pub(in crate::registry) async fn abandon_manifest(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        manifest: &Manifest,
        tags: &[Tag],
    ) {
        // The tags' back-links first, for those (their leases held) that do not point at it:
        // the candidates recorded next come after them.
        for tag in tags {
            if let Ok(current) = self.read_link(&layout::tag_current(name, tag)).await
                && current.as_ref() != Some(digest)
            {
                let _ = self
                    .storage
                    .delete(
                        &layout::tag_reference(digest, name, tag),
                        Durability::Durable,
                    )
                    .await;
            }
        }
        if let Ok(None) = self.read_link(&layout::revision_link(name, digest)).await {
            let _ = self.untrack_manifest(name, digest, Some(manifest)).await;
        }
    }
}

/// The back-links a manifest's revision link needs: its own, and one per digest it names
/// (the subject's of a kind of its own).
pub(super) fn manifest_back_links(
    name: &RepositoryName,
    digest: &Digest,
    manifest: &Manifest,
) -> Vec<Key> {
    let subject = manifest.subject.as_ref().map(|subject| &subject.digest);
    let mut keys = vec![layout::reference(digest, name, None)];
    for referenced in manifest.referenced_digests() {
        let named = manifest
            .config
            .iter()
            .chain(&manifest.references)
            .any(|descriptor| &descriptor.digest == referenced);
        if named {
            keys.push(layout::reference(referenced, name, Some(digest)));
        }
        if Some(referenced) == subject {
            keys.push(layout::subject_reference(referenced, name, digest));
        }
    }
    keys
}
