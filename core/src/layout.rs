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

/// The prefix below which every blob's content lives.
pub(crate) fn blobs() -> String {
    format!("{ROOT}/blobs/")
}

/// The digest whose content a key below [`blobs`] holds (`<alg>/<xx>/<hex>/data`).
pub(crate) fn blob_digest(key: &str) -> Option<Digest> {
    let rest = key.strip_prefix(&blobs())?.strip_suffix("/data")?;
    let mut fields = rest.split('/');
    let (algorithm, _, hex) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    format!("{algorithm}:{hex}").parse().ok()
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

/// The repositories deleted whole (their catalog entries stay, and the catalog hides those
/// without content): one object per name, `!`-terminated as catalog entries are.
pub(crate) fn deleted_repositories() -> &'static str {
    "berth/deleted/"
}

/// A deleted repository's entry.
pub(crate) fn deleted_repository(name: &RepositoryName) -> Key {
    Key::new(format!("berth/deleted/{name}!"))
}

/// Every referrer entry of a repository.
pub(crate) fn repository_referrers(name: &RepositoryName) -> String {
    format!("berth/referrers/{name}/_subjects/")
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

/// The back-links of one digest: who references it (see `registry/lifecycle.rs`).
pub(crate) fn references(digest: &Digest) -> String {
    format!("berth/refs/{}/{}/", digest.algorithm(), digest.hex())
}

/// The back-links of `digest` from one repository. The `!` ends the name (it is in no
/// repository name), so the prefix of `a` holds none of `a/b`'s.
pub(crate) fn references_from(digest: &Digest, name: &RepositoryName) -> String {
    format!("{}{name}/!", references(digest))
}

/// The back-link that says the manifest `by` of `name` references `digest` (as its config, a
/// layer or a child); `by` is `None` for the revision link of the manifest `digest` itself.
pub(crate) fn reference(digest: &Digest, name: &RepositoryName, by: Option<&Digest>) -> Key {
    let by = by.map_or(String::new(), |by| {
        format!("{}-{}", by.algorithm(), by.hex())
    });
    Key::new(format!("{}{by}", references_from(digest, name)))
}

/// The back-link that says the manifest `referrer` of `name` names `subject` as its subject:
/// it keeps the subject's content, but not the subject's manifest from untagged collection.
pub(crate) fn subject_reference(subject: &Digest, name: &RepositoryName, referrer: &Digest) -> Key {
    Key::new(format!(
        "{}^{}-{}",
        references_from(subject, name),
        referrer.algorithm(),
        referrer.hex()
    ))
}

/// The back-link that says the tag `tag` of `name` points at the manifest `digest` (`~` is
/// in no tag and no digest).
pub(crate) fn tag_reference(digest: &Digest, name: &RepositoryName, tag: &Tag) -> Key {
    Key::new(format!("{}~{tag}", references_from(digest, name)))
}

/// The repositories that link `digest` as a blob (one entry per layer link).
pub(crate) fn linked_in(digest: &Digest) -> String {
    format!("berth/links/{}/{}/", digest.algorithm(), digest.hex())
}

/// The entry that says `name` links `digest`; its modification time is the link's age.
pub(crate) fn linked_in_entry(digest: &Digest, name: &RepositoryName) -> Key {
    Key::new(format!("{}{name}/!", linked_in(digest)))
}

/// Digests to look at once the grace period has passed, in the order they were recorded.
pub(crate) fn candidates() -> &'static str {
    "berth/gc/candidates/"
}

/// A candidate: `digest`, recorded at `now` (seconds by the host's clock, for the order
/// only: ages are the storage's), by the request `nonce` names. Each recording has a key of
/// its own: a collector that visited one deletes it, never one recorded during its visit.
pub(crate) fn candidate(now: u64, digest: &Digest, nonce: &str) -> Key {
    Key::new(format!(
        "berth/gc/candidates/{now:016}-{}-{}-{nonce}",
        digest.algorithm(),
        digest.hex()
    ))
}

/// Manifests that may have become untagged in a repository (pushed by digest, a tag moved
/// away or deleted, their index or subject deleted), in the order they were recorded.
pub(crate) fn manifest_candidates() -> &'static str {
    "berth/gc/manifests/"
}

/// A manifest candidate: the manifest `digest` of `name` (after the `/`, which no digest or
/// nonce holds), recorded as [`candidate`]s are.
pub(crate) fn manifest_candidate(
    now: u64,
    digest: &Digest,
    name: &RepositoryName,
    nonce: &str,
) -> Key {
    Key::new(format!(
        "berth/gc/manifests/{now:016}-{}-{}-{}/{name}",
        digest.algorithm(),
        digest.hex(),
        nonce.replace('/', "_")
    ))
}

/// Every repository's charges toward its quotas.
pub(crate) fn usage() -> &'static str {
    "berth/usage/"
}

/// The charges of a repository toward its quotas: one key per distinct blob or manifest it
/// links (`!<alg>-<hex>-<size>`: its size is in the key, so a listing sums them), and
/// `!counted` once what it held before it had charges has been counted. The `!` ends the
/// name, so the prefix of `a` holds none of `a/b`'s.
pub(crate) fn charges(name: &RepositoryName) -> String {
    format!("berth/usage/{name}/!")
}

/// The charges of every repository below a namespace (and of the one named as it).
pub(crate) fn charges_below(namespace: &str) -> String {
    format!("berth/usage/{namespace}/")
}

/// The charge of `digest`, `size` bytes, in `name`.
pub(crate) fn charge(name: &RepositoryName, digest: &Digest, size: u64) -> Key {
    Key::new(format!("{}{size}", charges_of(name, digest)))
}

/// The prefix of `digest`'s charge in `name`, whatever its size.
pub(crate) fn charges_of(name: &RepositoryName, digest: &Digest) -> String {
    format!("{}{}-{}-", charges(name), digest.algorithm(), digest.hex())
}

/// Present once a repository's charges cover what it held before charges were written.
pub(crate) fn charges_counted(name: &RepositoryName) -> Key {
    Key::new(format!("{}{COUNTED}", charges(name)))
}

/// Present once every repository below a namespace has been counted.
pub(crate) fn namespace_counted(namespace: &str) -> Key {
    Key::new(format!("{}!{NAMESPACE_COUNTED}", charges_below(namespace)))
}

/// The last segment of [`charges_counted`] and [`namespace_counted`].
pub(crate) const COUNTED: &str = "counted";
pub(crate) const NAMESPACE_COUNTED: &str = "namespace-counted";

/// Where the pass of retention rules over the repositories stands: the last one done.
pub(crate) fn retention_cursor() -> Key {
    Key::new("berth/gc/retention-cursor")
}

/// Written when a pass of the retention rules ends (its modification time is when).
pub(crate) fn retention_pass() -> Key {
    Key::new("berth/gc/retention-pass")
}

/// The claims of collectors on digests they are about to delete.
pub(crate) fn claims() -> &'static str {
    "berth/gc/claims/"
}

/// A collector's claim on `digest`.
pub(crate) fn claim(digest: &Digest) -> Key {
    Key::new(format!(
        "berth/gc/claims/{}-{}",
        digest.algorithm(),
        digest.hex()
    ))
}

/// Written and read back to tell the storage's time.
pub(crate) fn storage_clock() -> Key {
    Key::new("berth/gc/clock")
}

/// Where the marking of what was stored before stands: the last key below the repositories
/// marked (see [`references_complete`]).
pub(crate) fn mark_cursor() -> Key {
    Key::new("berth/gc/mark-cursor")
}

/// Present once every manifest and layer link has its back-links (the first collection
/// writes them for what registry:2 or berth wrote before references were tracked).
pub(crate) fn references_complete() -> Key {
    // Version 2: tags and subjects have back-links of their own.
    Key::new("berth/gc/references-complete-2")
}

/// When a cached tag was last checked upstream, (`<time>`).
pub(crate) fn proxy_checked(name: &RepositoryName, tag: &Tag) -> Key {
    Key::new(format!("berth/proxy/checked/{name}/{tag}"))
}

/// When a cached manifest was last pulled: the key's modification time (it holds the
/// writer's time, and is written again at most every `pull_note_interval`). `@` keeps a repository's keys apart from those of the
/// repositories below its name (no name component starts with it).
pub(crate) fn proxy_pulled(name: &RepositoryName, digest: &Digest) -> Key {
    Key::new(format!(
        "{}{}-{}",
        proxy_pulled_in(name),
        digest.algorithm(),
        digest.hex()
    ))
}

/// The prefix of a repository's last-pull keys.
pub(crate) fn proxy_pulled_in(name: &RepositoryName) -> String {
    format!("berth/proxy/pulled/{name}/@")
}

/// Until when an upstream's "not found" for a reference is remembered.
pub(crate) fn proxy_missing(name: &RepositoryName, reference: &str) -> Key {
    Key::new(format!(
        "berth/proxy/missing/{name}/{}",
        reference.replace(':', "-")
    ))
}

/// The fill of a cold blob: its lease and its upload session (`<until> <nonce> <session>`).
pub(crate) fn proxy_fill(digest: &Digest) -> Key {
    Key::new(format!(
        "berth/proxy/fills/{}-{}",
        digest.algorithm(),
        digest.hex()
    ))
}

/// An upstream token (`<expires> <token>`), shared by every instance; named by a hash of
/// the upstream and the scope.
pub(crate) fn proxy_token(id: &str) -> Key {
    Key::new(format!("berth/proxy/tokens/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_name_their_digest() {
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(blob_digest(&blob_data(&digest)), Some(digest));
        assert_eq!(blob_digest(&format!("{ROOT}/blobs/sha256/ab/data")), None);
        assert_eq!(blob_digest("berth/gc/clock"), None);
    }

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
