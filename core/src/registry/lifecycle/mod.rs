//! Online garbage collection that never deletes what a push is about to reference.
//!
//! With [`Options::track_references`] on, every write that makes a digest reachable records
//! it where a collector finds it with one short listing, and every change that may leave a
//! digest unreachable records a candidate:
//!
//! - **Back-links** (`berth/refs/<digest>/<repo>/!<manifest>`): a manifest PUT writes one per
//!   digest the manifest names (config, layers or children, subject), and one for its own
//!   revision link (`.../<repo>/!`), *before* it commits the revision link; a manifest delete
//!   removes them *after* it removes the revision link. "Does anything reference X?" is a
//!   listing of `berth/refs/X/`.
//! - **Link entries** (`berth/links/<digest>/<repo>/!`): an upload's finish and a mount write
//!   one before the layer link; its modification time is the link's age. A blob linked but
//!   referenced by no manifest (a push not yet finished) is kept for the grace period.
//! - **Candidates** (`berth/gc/candidates/<time>-<digest>`): recorded by uploads, mounts,
//!   blob deletes and manifest deletes. The collector visits only candidates older than the
//!   grace period, by the storage's clock, and removes each once visited.
//! - **Tag and subject back-links** (`.../<repo>/!~<tag>`, `.../<repo>/!^<referrer>`), and
//!   **manifest candidates** (`berth/gc/manifests/<time>-<digest>/<repo>`) for manifests
//!   that may have become untagged: what untagged collection decides from (`untagged.rs`).
//!   Manifest candidates wait for a collection with [`Collection::untagged`].
//!
//! The race that loses layers elsewhere (a blob unreferenced long ago, referenced again by
//! a push while the collector decides) is closed by a pair of flags, without locks or
//! clocks. The collector lists X's back-links and links (nothing left), creates a **claim**
//! on X, lists them again, and deletes only what is still unreferenced. A writer writes its
//! back-link or link entry, then lists the claims: while one covers a digest it needs, it
//! waits; then it checks that the layer links it relies on are still there. Either the
//! writer's entry lands before the collector's second listing (which then keeps X), or after
//! it, hence after the claim, which the writer then sees. A claim of a collector that died
//! lapses after [`CLAIM_SECONDS`]; a collector stops deleting half-way through that time, so
//! a writer that waited it out finds every deletion done.
//!
//! What registry:2 (or berth before tracking) wrote has no back-links: the first collection
//! steps write them for every revision and layer link they find, `max_candidates` keys a step
//! from a cursor in storage, then mark the storage complete; nothing is collected before.

use std::collections::BTreeMap;

mod collect;
mod retention;
mod scrub;
mod track;
mod untagged;

pub use scrub::{Scrub, ScrubReport};

pub(super) use collect::{StoredLink, stored_link};

/// How long a collector's claim on a digest lasts. A collector deletes nothing once half of
/// it has passed; a writer that finds a claim waits at most this long.
pub const CLAIM_SECONDS: u64 = 30;

/// The default grace period: blobs linked or unreferenced more recently are kept (longer
/// than any push takes between its first upload and its manifest).
pub const DEFAULT_GRACE_SECONDS: u64 = 24 * 60 * 60;

/// How a collection step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collection {
    /// Seconds a candidate, and a link no manifest references, must be old before anything
    /// is deleted for it.
    pub grace: u64,
    /// At most this many candidates are visited in one step (each costs a few requests).
    pub max_candidates: usize,
    /// Report what would be deleted; delete nothing, write nothing.
    pub dry_run: bool,
    /// Also delete manifests that have been untagged for the grace period: no tag points at
    /// them, no manifest of their repository names them as a child, and they are not
    /// referrers of a subject the repository keeps. (Their blobs follow a grace period
    /// later, as a deleted manifest's do.)
    pub untagged: bool,
    /// With `untagged`: also delete referrers whose subject the repository no longer has
    /// (kept by default: a signature or SBOM may be pushed before its image).
    pub orphaned_referrers: bool,
}

impl Default for Collection {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE_SECONDS,
            max_candidates: 1000,
            dry_run: false,
            untagged: false,
            orphaned_referrers: false,
        }
    }
}

/// What a collection step did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionReport {
    /// Candidates visited.
    pub visited: u64,
    /// Untagged manifests deleted from their repositories.
    pub manifests_deleted: u64,
    /// Tags the retention rules ([`crate::Options::retention`]) removed.
    pub tags_deleted: u64,
    /// Those tags, per repository.
    pub tags_by_repository: BTreeMap<String, Vec<String>>,
    /// Blobs (layers, configs, manifests) deleted.
    pub blobs_deleted: u64,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Layer links removed from repositories (a blob no manifest there references).
    pub links_removed: u64,
    /// Per repository: the bytes of the blobs whose last link there was removed.
    pub by_repository: BTreeMap<String, u64>,
    /// Candidates left for a later step: busy (another collector's claim), or one more when
    /// the step reached `max_candidates`. Those younger than the grace period are not
    /// counted. 1 while the first marking (see `marked`) has pages left.
    pub left: u64,
    /// Back-links written by the first collection for what was stored before.
    pub marked: u64,
}

/// An error met by the collector, as the storage error it reports.
fn storage_error(error: impl std::fmt::Display) -> crate::storage::StorageError {
    crate::storage::StorageError::backend(error.to_string())
}

impl CollectionReport {
    /// Whether every candidate old enough was visited.
    pub fn finished(&self) -> bool {
        self.left == 0
    }
}
