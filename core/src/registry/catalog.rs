//! The catalog (`/v2/_catalog`): every repository, found once by walking the tree, then listed
//! from the index.

use super::Registry;
use crate::error::Error;
use crate::http::{next_page, page_size, query};
use crate::layout;
use crate::request::RequestHead;
use crate::response::Response;
use crate::storage::Storage;

impl<S: Storage> Registry<S> {
    /// Every repository, found by walking the registry:2 tree: a folder is a repository when
    /// it holds `_manifests`, `_layers` or `_uploads`; other folders are namespaces.
    pub(super) async fn walk_repositories(&self) -> Result<Vec<String>, Error> {
        let root = layout::repositories();
        let mut repositories = Vec::new();
        let mut pending = vec![root.clone()];
        while let Some(prefix) = pending.pop() {
            for segment in self.folders(&prefix).await? {
                if !segment.starts_with('_') {
                    pending.push(format!("{prefix}{segment}/"));
                } else if prefix != root {
                    repositories.push(prefix[root.len()..].trim_end_matches('/').to_owned());
                }
            }
        }
        repositories.sort();
        repositories.dedup();
        Ok(repositories)
    }

    pub(super) async fn catalog(&self, head: &RequestHead) -> Result<Response, Error> {
        let limit = page_size(head)?;
        let last = query(head, "last");
        let (mut page, truncated) = self.catalog_page(last.as_deref(), limit).await?;
        // The next page starts after the last name read, shown or not.
        let next = page.last().filter(|_| truncated).cloned();
        let deleted = self.deleted_of(&page).await?;
        page.retain(|name| !deleted.contains(name));
        // Each caller sees only what it may pull (a page may then hold fewer than `n`).
        let page: Vec<String> = if self.options.access.decides_per_caller() {
            self.options.access.listed(head, page)
        } else {
            page
        };
        let body =
            serde_json::to_vec(&serde_json::json!({ "repositories": page })).unwrap_or_default();
        let mut response = Response::json(200, body);
        if let (Some(next), Some(n)) = (next, limit) {
            response = response.with_header("Link", next_page("/v2/_catalog", n, &next));
        }
        Ok(response)
    }
}
