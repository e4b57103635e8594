//! Storage keys: the layout registry:2 (distribution) writes, so that an existing registry:2
//! root or bucket is served as it is and registry:2 can serve what berth wrote
//! (distribution's `registry/storage/paths.go`). What registry:2 has no key for — upload
//! session records and the referrers index — goes under berth's own names beside it.

use crate::digest::Digest;
use crate::ids::Key;
use crate::reference::{RepositoryName, Tag};
use crate::upload::UploadId;

const ROOT: &str = "docker/registry/v2";

/// `blobs/<alg>/<first two hex>/<hex>/data`: content shared by every repository.
pub(crate) fn blob_data(digest: &Digest) -> Key {
    let hex = digest.hex();
    Key::new(format!(
        "{ROOT}/blobs/{}/{}/{hex}/data",
        digest.algorithm(),
        &hex[..2]
    ))
}

/// The prefix below which every repository lives.
pub(crate) fn repositories() -> String {
    format!("{ROOT}/repositories/")
}

/// Everything a repository holds.
pub(crate) fn repository(name: &RepositoryName) -> String {
    format!("{ROOT}/repositories/{name}/")
}

/// The link that makes a blob part of a repository.
pub(crate) fn layer_link(name: &RepositoryName, digest: &Digest) -> Key {
    Key::new(format!(
        "{ROOT}/repositories/{name}/_layers/{}/{}/link",
        digest.algorithm(),
        digest.hex()
    ))
}

/// The link that makes a manifest part of a repository.
pub(crate) fn revision_link(name: &RepositoryName, digest: &Digest) -> Key {
    Key::new(format!(
        "{ROOT}/repositories/{name}/_manifests/revisions/{}/{}/link",
        digest.algorithm(),
        digest.hex()
    ))
}

/// The folder of all tags; each tag is a sub-folder.
pub(crate) fn tags(name: &RepositoryName) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags/")
}

/// Everything stored for one tag.
pub(crate) fn tag(name: &RepositoryName, tag: &Tag) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags/{tag}/")
}

/// The digest a tag currently points at.
pub(crate) fn tag_current(name: &RepositoryName, tag: &Tag) -> Key {
    Key::new(format!(
        "{ROOT}/repositories/{name}/_manifests/tags/{tag}/current/link"
    ))
}

/// The history entry registry:2 keeps for every digest a tag has pointed at.
pub(crate) fn tag_index(name: &RepositoryName, tag: &Tag, digest: &Digest) -> Key {
    Key::new(format!(
        "{ROOT}/repositories/{name}/_manifests/tags/{tag}/index/{}/{}/link",
        digest.algorithm(),
        digest.hex()
    ))
}

/// berth's record of an upload session. One object per session, in one folder for all of
/// them: the id begins with the session's start time, so the folder lists in the order
/// sessions started and expiry reads only the ones it purges. (registry:2 keeps its own
/// sessions under each repository's `_uploads/`.)
pub(crate) fn upload_session(id: &UploadId) -> Key {
    Key::new(format!("berth/uploads/{}", id.as_str()))
}

/// Where an upload hashed with another algorithm than its digest's is kept while it is read
/// back and hashed again: outside every blob path, so unverified content is never a blob.
pub(crate) fn rehash_interim(id: &UploadId) -> Key {
    Key::new(format!("berth/rehash/{}", id.as_str()))
}

/// The folder of all upload session records.
pub(crate) fn upload_sessions() -> &'static str {
    "berth/uploads/"
}

/// Where berth kept a session's record until November 2026, when its entry in
/// `berth/uploads/` held only the repository name. Read only to purge such sessions.
pub(crate) fn legacy_upload_session(name: &RepositoryName, id: &str) -> Key {
    Key::new(format!(
        "{ROOT}/repositories/{name}/_uploads/{id}/berth-session.json"
    ))
}

/// The lease on one manifest or tag (see `registry/leases.rs`), named by a hash of what it
/// protects. All leases share one flat folder.
pub(crate) fn lease(id: &str) -> Key {
    Key::new(format!("berth/leases/{id}"))
}

/// Where a parts upload for a session may be staged.
pub(crate) fn upload_staging(name: &RepositoryName, id: &UploadId) -> Key {
    Key::new(format!(
        "{ROOT}/repositories/{name}/_uploads/{}/data",
        id.as_str()
    ))
}

/// The index of a repository's tags: one object per tag, named by the tag, holding its
/// digest, so a page of the tag list costs one listing of that page.
pub(crate) fn tag_index_folder(name: &RepositoryName) -> String {
    format!("berth/tags/{name}/_tags/")
}

/// One tag's entry in the index.
pub(crate) fn tag_index_entry(name: &RepositoryName, tag: &Tag) -> Key {
    Key::new(format!("berth/tags/{name}/_tags/{tag}"))
}

/// Present once the tag index of a repository is complete (tags registry:2 wrote included).
pub(crate) fn tag_index_complete(name: &RepositoryName) -> Key {
    Key::new(format!("berth/tags/{name}/_complete"))
}

/// The catalog index: one object per repository.
pub(crate) fn catalog_index() -> &'static str {
    "berth/catalog/"
}

/// A repository's catalog entry. The `!` ends the name: it sorts below every character a
/// name may hold, so entries list in the order of the names ("a" before "a-b" before "a/b"),
/// and no entry is a folder of another's.
pub(crate) fn catalog_entry(name: &RepositoryName) -> Key {
    Key::new(format!("berth/catalog/{name}!"))
}

/// Present once the catalog index is complete (repositories registry:2 made included).
pub(crate) fn catalog_complete() -> Key {
    Key::new("berth/catalog-complete")
}

/// The referrers of one subject: one object per referrer, so concurrent pushes of referrers
/// of the same subject never contend for one key.
pub(crate) fn referrers(name: &RepositoryName, subject: &Digest) -> String {
    format!(
        "berth/referrers/{name}/_subjects/{}/{}/",
        subject.algorithm(),
        subject.hex()
    )
}

/// One referrer's descriptor.
pub(crate) fn referrer(name: &RepositoryName, subject: &Digest, referrer: &Digest) -> Key {
    Key::new(format!(
        "{}{}-{}",
        referrers(name, subject),
        referrer.algorithm(),
        referrer.hex()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_registry2_paths() {
        let digest: Digest =
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse()
                .unwrap();
        let name: RepositoryName = "library/alpine".parse().unwrap();
        let latest: Tag = "latest".parse().unwrap();
        assert_eq!(
            blob_data(&digest),
            "docker/registry/v2/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/data"
        );
        assert_eq!(
            layer_link(&name, &digest),
            "docker/registry/v2/repositories/library/alpine/_layers/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/link"
        );
        assert_eq!(
            tag_current(&name, &latest),
            "docker/registry/v2/repositories/library/alpine/_manifests/tags/latest/current/link"
        );
        assert!(tag_index(&name, &latest, &digest).starts_with(&tag(&name, &latest)));
        assert!(tag(&name, &latest).starts_with(&tags(&name)));
    }
}
