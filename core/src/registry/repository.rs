//! Deleting a repository whole (`DELETE /v2/<name>/`, an admin's request): its manifests and
//! tags, its layer links, its upload sessions and its index entries. Blobs stay for other
//! repositories, and for the garbage collector (with references tracked, each becomes a
//! candidate). Its catalog entry stays too, with a tombstone the catalog reads: another
//! instance that still remembers the entry would not write it again when the name is pushed
//! to anew, and the catalog shows a tombstoned name only while it has content.

use bytes::Bytes;

use super::{Registry, internal};
use crate::error::{Error, ErrorCode};
use crate::layout;
use crate::reference::RepositoryName;
use crate::response::Response;
use crate::storage::{Durability, PutMode, Storage, StorageExt};

impl<S: Storage> Registry<S> {
    pub(super) async fn delete_repository(&self, name: &RepositoryName) -> Result<Response, Error> {
        self.check_delete_enabled()?;
        if !self.has_content(name).await? {
            return Err(Error::new(
                ErrorCode::NameUnknown,
                format!("repository {name} is not known to this registry"),
            ));
        }
        // The tombstone first: from here on the catalog looks whether the name has content.
        self.storage
            .put(
                &layout::deleted_repository(name),
                Bytes::new(),
                PutMode::Overwrite.into(),
            )
            .await
            .map_err(internal)?;
        let own = layout::repository(name);
        let mut manifests = 0u64;
        for key in self
            .storage
            .list_all(&format!("{own}_manifests/revisions/"))
            .await
            .map_err(internal)?
        {
            let Some(digest) = link_digest(&key) else {
                continue;
            };
            // As a DELETE by digest: under its lease, its tags, referrer entry and
            // back-links with it.
            let lease = self
                .lease(name, super::leases::Leased::Digest(&digest))
                .await?;
            let deleted = self.delete_revision(name, &digest, None).await;
            self.give_back(lease).await;
            manifests += u64::from(deleted?);
        }
        let mut tags = 0u64;
        for tag in self.tag_names(name).await? {
            // Tags left pointing at no manifest of the repository.
            let current = self.read_link(&layout::tag_current(name, &tag)).await?;
            self.delete_tag(name, &tag).await?;
            if let Some(current) = current {
                self.untrack_tag(name, &tag, &current).await?;
            }
            tags += 1;
        }
        let mut blobs = 0u64;
        for key in self
            .storage
            .list_all(&format!("{own}_layers/"))
            .await
            .map_err(internal)?
        {
            self.storage
                .delete(&key, Durability::Durable)
                .await
                .map_err(internal)?;
            if let Some(digest) = link_digest(&key) {
                self.may_collect(&digest).await?;
                blobs += 1;
            }
        }
        // What is left of its own: upload sessions' staging, index entries. (Only its own
        // folders: `<name>/` also holds the repositories nested below it.)
        for prefix in [
            format!("{own}_manifests/"),
            format!("{own}_uploads/"),
            layout::tag_index_folder(name),
            layout::repository_referrers(name),
        ] {
            self.storage.delete_all(&prefix).await.map_err(internal)?;
        }
        self.storage
            .delete(&layout::tag_index_complete(name), Durability::Durable)
            .await
            .map_err(internal)?;
        self.uncharge_repository(name).await?;
        let body = serde_json::json!({
            "repository": name.as_str(),
            "manifests": manifests,
            "tags": tags,
            "blobs": blobs,
        });
        Ok(Response::json(202, body.to_string().into_bytes()))
    }

    /// Whether a repository has content of its own (manifests, layer links or uploads), not
    /// counting the repositories nested below its name.
    pub(super) async fn has_content(&self, name: &RepositoryName) -> Result<bool, Error> {
        let page = self
            .storage
            .list(&layout::repository(name), true, None, 1000)
            .await
            .map_err(internal)?;
        let own = layout::repository(name);
        Ok(page
            .prefixes
            .iter()
            .any(|prefix| prefix[own.len()..].starts_with('_')))
    }

    /// Of a catalog page, the names whose repositories were deleted whole and have no
    /// content since.
    pub(super) async fn deleted_of(&self, page: &[String]) -> Result<Vec<String>, Error> {
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Ok(Vec::new());
        };
        let folder = layout::deleted_repositories();
        // Tombstones sort as catalog entries do: those of this page's names lie between its
        // first and its last.
        let mut tombstoned = Vec::new();
        let mut after = Some(format!("{folder}{first}"));
        'listing: loop {
            let listed = self
                .storage
                .list(folder, false, after.as_deref(), 1000)
                .await
                .map_err(internal)?;
            for object in &listed.objects {
                let Some(name) = object.key[folder.len()..].strip_suffix('!') else {
                    continue;
                };
                if name > last.as_str() {
                    break 'listing;
                }
                tombstoned.push(name.to_owned());
            }
            after = listed.objects.last().map(|object| object.key.to_string());
            if !listed.truncated || after.is_none() {
                break;
            }
        }
        let mut deleted = Vec::new();
        for name in tombstoned {
            if !page.contains(&name) {
                continue;
            }
            let Ok(parsed) = name.parse::<RepositoryName>() else {
                continue;
            };
            if !self.has_content(&parsed).await? {
                deleted.push(name);
            }
        }
        Ok(deleted)
    }
}

/// The digest of a link key (`.../<alg>/<hex>/link`).
fn link_digest(key: &str) -> Option<crate::digest::Digest> {
    let rest = key.strip_suffix("/link")?;
    let (before, hex) = rest.rsplit_once('/')?;
    let (_, algorithm) = before.rsplit_once('/')?;
    format!("{algorithm}:{hex}").parse().ok()
}
