//! Index keys for the tag list and the catalog, so that a page costs one listing of that page
//! on an object store rather than a walk of the repository tree. registry:2 keeps no such
//! index: for a root it wrote, the first listing builds the index from its folders once.

use bytes::Bytes;

use super::leases::Leased;
use super::{Registry, internal};
use crate::digest::Digest;
use crate::error::Error;
use crate::layout;
use crate::notice::Notice;
use crate::reference::{RepositoryName, Tag};
use crate::storage::{Durability, Key, ListPage, PutMode, Storage, StorageError, StorageExt};

impl<S: Storage> Registry<S> {
    /// Records a tag in the tag index.
    pub(super) async fn index_tag(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), Error> {
        self.write_link(&layout::tag_index_entry(name, tag), digest)
            .await
    }

    /// Indexes a tag found in the registry:2 folders, holding its lease, so that a tag
    /// deleted meanwhile is not indexed again.
    async fn reindex_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<(), Error> {
        let lease = self.lease(name, Leased::Tag(tag)).await?;
        let indexed = match self.read_link(&layout::tag_current(name, tag)).await {
            Ok(Some(digest)) => self.index_tag(name, tag, &digest).await,
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        self.give_back(lease).await;
        indexed
    }

    /// Removes a tag: its index entry, then its registry:2 folder. In that order, a request
    /// that fails half-way leaves a tag that still resolves but is not listed, which its
    /// retry (finding the folder) removes; the other order would leave an entry no retry finds.
    pub(super) async fn delete_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<(), Error> {
        self.storage
            .delete(&layout::tag_index_entry(name, tag), Durability::Durable)
            .await
            .map_err(internal)?;
        self.storage
            .delete_all(&layout::tag(name, tag))
            .await
            .map_err(internal)
    }

    /// Adds a repository to the catalog index, once.
    pub(super) async fn register_repository(&self, name: &RepositoryName) -> Result<(), Error> {
        if self.is_cataloged(name) {
            return Ok(());
        }
        let entry = layout::catalog_entry(name);
        if !self.storage.exists(&entry).await.map_err(internal)? {
            match self
                .storage
                .put(&entry, Bytes::new(), PutMode::Create.into())
                .await
            {
                Ok(_) | Err(StorageError::AlreadyExists) => {}
                Err(e) => return Err(internal(e)),
            }
        }
        self.remember_cataloged(name);
        Ok(())
    }

    fn is_cataloged(&self, name: &RepositoryName) -> bool {
        self.cataloged
            .lock()
            .is_ok_and(|known| known.contains(name.as_str()))
    }

    fn remember_cataloged(&self, name: &RepositoryName) {
        /// Enough for the repositories in active use; past it the memory starts over.
        const REMEMBERED: usize = 10_000;
        if let Ok(mut known) = self.cataloged.lock() {
            if known.len() >= REMEMBERED {
                known.clear();
            }
            known.insert(name.as_str().to_owned());
        }
    }

    /// One page of a repository's tags, after `last`, at most `limit` (all when `None`);
    /// and whether more follow.
    pub(super) async fn tags_page(
        &self,
        name: &RepositoryName,
        last: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<String>, bool), Error> {
        if !self
            .storage
            .exists(&layout::tag_index_complete(name))
            .await
            .map_err(internal)?
        {
            let tags = self.tag_names(name).await?;
            // A tag that cannot be indexed (its link unreadable, say) is left out of this
            // listing and the index stays incomplete, so a later listing tries it again:
            // one bad entry never stops the listing.
            let mut complete = true;
            for tag in &tags {
                if let Err(error) = self.reindex_tag(name, tag).await {
                    complete = false;
                    self.notify(Notice::Unindexed {
                        repository: Some(name.as_str().to_owned()),
                        entry: tag.as_str().to_owned(),
                        reason: error.to_string(),
                    });
                }
            }
            // A repository without tags (or without existence) is cheap to look at again,
            // and leaves no marker behind.
            if complete && !tags.is_empty() {
                self.mark_complete(&layout::tag_index_complete(name))
                    .await?;
            }
        }
        let folder = layout::tag_index_folder(name);
        let page = self
            .index_page(&folder, last.map(|l| format!("{folder}{l}")), limit)
            .await?;
        let tags = page
            .keys()
            .map(|key| key[folder.len()..].to_owned())
            .collect();
        Ok((tags, page.truncated))
    }

    /// One page of the catalog, after `last`, at most `limit` (all when `None`); and whether
    /// more follow.
    pub(super) async fn catalog_page(
        &self,
        last: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<String>, bool), Error> {
        if !self
            .storage
            .exists(&layout::catalog_complete())
            .await
            .map_err(internal)?
        {
            // As with tags: a repository that cannot be indexed (a folder whose name is no
            // valid repository name, a failing write) is left out and the index stays
            // incomplete, so the catalog still answers with every other repository.
            let mut complete = true;
            for folder in self.walk_repositories().await? {
                let indexed = match folder.parse::<RepositoryName>() {
                    Ok(name) => self
                        .register_repository(&name)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(reason) = indexed {
                    complete = false;
                    self.notify(Notice::Unindexed {
                        repository: None,
                        entry: folder,
                        reason,
                    });
                }
            }
            if complete {
                self.mark_complete(&layout::catalog_complete()).await?;
            }
        }
        let folder = layout::catalog_index();
        // `last` is a name; its entry is the name with the `!` terminator.
        let page = self
            .index_page(folder, last.map(|l| format!("{folder}{l}!")), limit)
            .await?;
        let names = page
            .keys()
            .map(|key| key[folder.len()..].trim_end_matches('!').to_owned())
            .collect();
        Ok((names, page.truncated))
    }

    async fn index_page(
        &self,
        folder: &str,
        start_after: Option<String>,
        limit: Option<usize>,
    ) -> Result<ListPage, Error> {
        match limit {
            Some(limit) => self
                .storage
                .list(folder, false, start_after.as_deref(), limit)
                .await
                .map_err(internal),
            None => {
                let mut all = ListPage::default();
                let mut after = start_after;
                loop {
                    let page = self
                        .storage
                        .list(folder, false, after.as_deref(), 1000)
                        .await
                        .map_err(internal)?;
                    after = page.last_entry().map(str::to_owned);
                    all.objects.extend(page.objects);
                    if !page.truncated || after.is_none() {
                        return Ok(all);
                    }
                }
            }
        }
    }

    async fn mark_complete(&self, key: &Key) -> Result<(), Error> {
        self.storage
            .put(key, Bytes::new(), PutMode::Overwrite.into())
            .await
            .map(drop)
            .map_err(internal)
    }
}
