//! Tags: the registry:2 tag folders and the tag list (end-8).

use serde::Serialize;

use super::{Registry, internal};
use crate::error::{Error, ErrorCode};
use crate::http::{next_page, page_size, query};
use crate::layout;
use crate::reference::{RepositoryName, Tag};
use crate::request::RequestHead;
use crate::response::Response;
use crate::storage::Storage;

impl<S: Storage> Registry<S> {
    /// The names of the folders directly below `prefix` (without the prefix or the `/`),
    /// following every page of the listing.
    pub(super) async fn folders(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let mut folders = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .storage
                .list(prefix, true, after.as_deref(), 1000)
                .await
                .map_err(internal)?;
            after = page.last_entry().map(str::to_owned);
            folders.extend(
                page.prefixes
                    .iter()
                    .map(|p| p[prefix.len()..].trim_end_matches('/').to_owned()),
            );
            if !page.truncated || after.is_none() {
                return Ok(folders);
            }
        }
    }

    /// Every tag of a repository, in lexical order.
    pub(super) async fn tag_names(&self, name: &RepositoryName) -> Result<Vec<Tag>, Error> {
        let mut tags: Vec<Tag> = self
            .folders(&layout::tags(name))
            .await?
            .iter()
            .filter_map(|folder| folder.parse().ok())
            .collect();
        // Storage orders "v1-rc/" before "v1/"; tags order "v1" before "v1-rc".
        tags.sort();
        Ok(tags)
    }

    async fn repository_exists(&self, name: &RepositoryName) -> Result<bool, Error> {
        let page = self
            .storage
            .list(&layout::repository(name), true, None, 1)
            .await
            .map_err(internal)?;
        Ok(!page.objects.is_empty() || !page.prefixes.is_empty())
    }

    pub(super) async fn list_tags(
        &self,
        head: &RequestHead,
        name: &RepositoryName,
    ) -> Result<Response, Error> {
        let limit = page_size(head)?;
        let last = query(head, "last");
        let (page, truncated) = self.tags_page(name, last.as_deref(), limit).await?;
        if page.is_empty() && last.is_none() && !self.repository_exists(name).await? {
            return Err(Error::new(
                ErrorCode::NameUnknown,
                format!("repository {name} is not known"),
            ));
        }
        let next = page.last().filter(|_| truncated).cloned();
        #[derive(Serialize)]
        struct TagList<'a> {
            name: &'a str,
            tags: &'a [String],
        }
        let body = serde_json::to_vec(&TagList {
            name: name.as_str(),
            tags: &page,
        })
        .unwrap_or_default();
        let mut response = Response::json(200, body);
        if let (Some(next), Some(n)) = (next, limit) {
            response = response.with_header(
                "Link",
                next_page(&format!("/v2/{name}/tags/list"), n, &next),
            );
        }
        Ok(response)
    }
}
