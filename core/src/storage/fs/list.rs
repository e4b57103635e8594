//! Listing keys below a prefix, in order, from the directory tree.

use super::*;

impl Inner {
    pub(super) fn list_sync(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        let base = &prefix[..prefix.rfind('/').map_or(0, |i| i + 1)];
        let dir = if base.is_empty() {
            self.root.clone()
        } else {
            self.path(base.trim_end_matches('/'))?
        };
        let mut entries = Vec::new();
        let mut pending = vec![(dir, base.to_owned())];
        while let Some((dir, key_prefix)) = pending.pop() {
            let read = match fs::read_dir(&dir) {
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(e)),
            };
            for entry in read {
                let entry = entry.map_err(io_error)?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if key_prefix.is_empty() && name == ".berth" {
                    continue;
                }
                let key = format!("{key_prefix}{name}");
                let is_dir = entry.file_type().map_err(io_error)?.is_dir();
                if is_dir {
                    let folder = format!("{key}/");
                    if !(folder.starts_with(prefix) || prefix.starts_with(&folder)) {
                        continue;
                    }
                    if delimiter && folder.starts_with(prefix) {
                        entries.push((folder, true));
                    } else {
                        pending.push((entry.path(), folder));
                    }
                } else if key.starts_with(prefix) {
                    entries.push(fold(prefix, &key, delimiter));
                }
            }
        }
        // A stat for each object in the page (not each entry read): its mtime.
        let modified = |key: &str| {
            let path = self.path(key).ok()?;
            modified_millis(&fs::metadata(path).ok()?)
        };
        Ok(page_of(entries, start_after, limit, modified))
    }
}
