//! `berth_registry`: a registry over the configured storage, with the worker threads that
//! drive it; and `berth_check_storage`, the storage contract's test suite for hosts.

use std::ffi::c_char;
use std::sync::Arc;

use berth::storage::ObjectStoreStorage;
use berth::{FsStorage, Registry, Storage};
use tokio::runtime::Runtime;

use crate::config::{StorageChoice, berth_config};
use crate::result::{
    Failure, berth_result, guard, guard_void, optional_str_arg, str_arg, write_out,
};

/// The registry's driver and the runtime it runs on, shared with every exchange it starts
/// so that a response body can outlive `berth_registry_free`.
pub(crate) struct Inner {
    pub(crate) runtime: Runtime,
    pub(crate) registry: Arc<Registry<Arc<dyn Storage>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("options", self.registry.options())
            .finish_non_exhaustive()
    }
}

/// A registry. Create with `berth_registry_new`; serve requests through `berth_exchange`s;
/// release with `berth_registry_free`. Any number of threads may use one registry at once.
#[derive(Debug)]
pub struct berth_registry {
    pub(crate) inner: Arc<Inner>,
}

impl berth_registry {
    /// The registry behind a pointer the host passed.
    ///
    /// # Safety
    /// `registry` is NULL or a live registry from `berth_registry_new`.
    pub(crate) unsafe fn from_ptr<'a>(registry: *const Self) -> Result<&'a Self, Failure> {
        // SAFETY: forwarded from the caller.
        unsafe { registry.as_ref() }.ok_or_else(|| Failure::null("registry"))
    }
}

fn open_storage(config: &berth_config) -> Result<Arc<dyn Storage>, Failure> {
    let unavailable = |detail: String| Failure::new(berth_result::StorageUnavailable, detail);
    match &config.storage {
        None => Err(Failure::new(
            berth_result::InvalidArgument,
            "the configuration names no storage: call berth_config_set_fs, _set_s3, \
             _set_memory or _set_storage first",
        )),
        Some(StorageChoice::Fs(root)) => FsStorage::new(root)
            .map(|storage| Arc::new(storage) as Arc<dyn Storage>)
            .map_err(|e| unavailable(format!("storage root {}: {e}", root.display()))),
        Some(StorageChoice::Memory(storage)) => Ok(storage.clone()),
        Some(StorageChoice::S3(s3)) => ObjectStoreStorage::s3(s3)
            .map(|storage| Arc::new(storage) as Arc<dyn Storage>)
            .map_err(|e| unavailable(format!("S3 bucket {}: {e}", s3.bucket))),
        Some(StorageChoice::Callbacks(storage)) => Ok(storage.clone()),
    }
}

fn runtime(worker_threads: usize) -> Result<Runtime, Failure> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("berth-worker");
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    builder
        .build()
        .map_err(|e| Failure::new(berth_result::RuntimeUnavailable, e.to_string()))
}

/// Creates a registry from a configuration (which stays the caller's).
///
/// # Safety
/// `config` is a live configuration; `out` is valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_registry_new(
    config: *const berth_config,
    out: *mut *mut berth_registry,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let config = unsafe { berth_config::from_ptr(config) }?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let runtime = runtime(config.worker_threads)?;
        // Storage clients (S3's) may look for the runtime they will run on.
        let storage = {
            let _entered = runtime.enter();
            open_storage(config)?
        };
        let registry = Arc::new(Registry::new(storage, config.options.clone()));
        let handle = Box::new(berth_registry {
            inner: Arc::new(Inner { runtime, registry }),
        });
        // SAFETY: checked non-NULL above; the caller promises it is valid.
        unsafe { write_out(out, Box::into_raw(handle), "out") }
    })
}

/// Releases a registry (NULL is fine). Exchanges still open keep what they need alive.
///
/// # Safety
/// `registry` is NULL or from `berth_registry_new`, and not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_registry_free(registry: *mut berth_registry) {
    guard_void(|| {
        if !registry.is_null() {
            // SAFETY: the caller hands back ownership of a pointer from `berth_registry_new`.
            drop(unsafe { Box::from_raw(registry) });
        }
    });
}

/// Removes upload sessions started more than `older_than` seconds ago, with everything
/// they wrote, and sets `*out_purged` to how many there were. Call it now and then (daily,
/// say) with an expiry such as 7 days.
///
/// # Safety
/// `registry` is a live registry; `out_purged` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_registry_purge_uploads(
    registry: *const berth_registry,
    older_than: u64,
    out_purged: *mut u64,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let registry = unsafe { berth_registry::from_ptr(registry) }?;
        let inner = &registry.inner;
        let purged = inner
            .runtime
            .block_on(inner.registry.purge_uploads(older_than))
            .map_err(|e| Failure::new(berth_result::StorageFailed, e.to_string()))?;
        // SAFETY: the caller promises `out_purged` is valid.
        unsafe { write_out(out_purged, purged as u64, "out_purged") }
    })
}

/// What a garbage collection step did (or, in a dry run, would do).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct berth_collection_report {
    /// Candidates visited.
    pub visited: u64,
    /// Blobs (layers, configs, manifests) deleted.
    pub blobs_deleted: u64,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Layer links removed from repositories whose manifests no longer reference the blob.
    pub links_removed: u64,
    /// Candidates left for a later step (0: every candidate old enough was visited; 1 while
    /// the first marking has pages left).
    pub left: u64,
    /// Back-links the first collection wrote for what was stored before.
    pub marked: u64,
    /// Untagged manifests deleted (with `BERTH_COLLECTION_FLAG_UNTAGGED`).
    pub manifests_deleted: u64,
    /// Tags the retention rules removed (`berth_config_set_retention`).
    pub tags_deleted: u64,
}

/// Flags of a collection step, or-ed together into `berth_registry_collect_garbage`'s
/// `flags`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum berth_collection_flag {
    /// Count what would be deleted; delete nothing, write nothing.
    DryRun = 1,
    /// Also delete manifests untagged for the grace period: no tag points at them, no
    /// manifest of their repository names them as a child, and they are not referrers of a
    /// subject the repository keeps.
    Untagged = 2,
    /// With `BERTH_COLLECTION_FLAG_UNTAGGED`: also delete referrers whose subject goes.
    OrphanedReferrers = 4,
}

/// One step of garbage collection (see `berth_config_set_track_references`, which every
/// registry over the storage must have on): visits at most `max_candidates` candidates older
/// than `grace_seconds` and deletes the blobs and layer links nothing references (and with
/// `BERTH_COLLECTION_FLAG_UNTAGGED`, untagged manifests), or with
/// `BERTH_COLLECTION_FLAG_DRY_RUN` only counts them. `flags` or-s `berth_collection_flag`s;
/// an unknown one is refused. Call it again while `out->left` is not 0; any registry over
/// the storage may run steps at any time. Blocks until the step is done.
///
/// # Safety
/// `registry` is a live registry; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_registry_collect_garbage(
    registry: *const berth_registry,
    grace_seconds: u64,
    max_candidates: usize,
    flags: u32,
    out: *mut berth_collection_report,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let registry = unsafe { berth_registry::from_ptr(registry) }?;
        let inner = &registry.inner;
        let flag = |flag: berth_collection_flag| flags & flag as u32 != 0;
        let known = berth_collection_flag::DryRun as u32
            | berth_collection_flag::Untagged as u32
            | berth_collection_flag::OrphanedReferrers as u32;
        if flags & !known != 0 {
            return Err(Failure::new(
                berth_result::InvalidArgument,
                format!("unknown collection flags {:#x}", flags & !known),
            ));
        }
        let settings = berth::Collection {
            grace: grace_seconds,
            max_candidates,
            dry_run: flag(berth_collection_flag::DryRun),
            untagged: flag(berth_collection_flag::Untagged),
            orphaned_referrers: flag(berth_collection_flag::OrphanedReferrers),
        };
        let report = inner
            .runtime
            .block_on(inner.registry.collect_garbage(&settings))
            .map_err(|e| Failure::new(berth_result::StorageFailed, e.to_string()))?;
        let report = berth_collection_report {
            visited: report.visited,
            blobs_deleted: report.blobs_deleted,
            bytes_deleted: report.bytes_deleted,
            links_removed: report.links_removed,
            left: report.left,
            marked: report.marked,
            manifests_deleted: report.manifests_deleted,
            tags_deleted: report.tags_deleted,
        };
        // SAFETY: the caller promises `out` is valid.
        unsafe { write_out(out, report, "out") }
    })
}

/// What a scrub found (and, unless a dry run, did): see `berth_registry_scrub`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct berth_scrub_report {
    /// Back-links and link entries written again.
    pub marked: u64,
    /// Blobs looked at.
    pub blobs: u64,
    /// Of those, blobs nothing references or links: now candidates for collection.
    pub stray_blobs: u64,
    /// Their bytes.
    pub stray_bytes: u64,
    /// Expired upload sessions purged.
    pub uploads_purged: u64,
    /// Scratch files and orphaned parts uploads removed (a filesystem storage's).
    pub leftovers: u64,
    /// Their bytes.
    pub leftover_bytes: u64,
    /// 1 when quota usage is to be counted afresh (quota rules set), else 0.
    pub usage_recounted: u32,
}

/// Scrubs the whole storage (with `berth_config_set_track_references` on): writes every
/// back-link again, makes each blob nothing references or links a candidate (the collection
/// steps that follow delete it once past their grace period), purges upload sessions started
/// more than `upload_expiry` seconds ago (0 keeps them), removes what writes killed half-way
/// left (scratch files, parts no session names) untouched for `leftovers_older_than` seconds,
/// and has quota usage counted afresh. With `BERTH_COLLECTION_FLAG_DRY_RUN` in `flags`, it
/// only counts. An occasional walk of everything, not a bounded step; blocks until done.
///
/// # Safety
/// `registry` is a live registry; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_registry_scrub(
    registry: *const berth_registry,
    upload_expiry: u64,
    leftovers_older_than: u64,
    flags: u32,
    out: *mut berth_scrub_report,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let registry = unsafe { berth_registry::from_ptr(registry) }?;
        let inner = &registry.inner;
        let dry_run = berth_collection_flag::DryRun as u32;
        if flags & !dry_run != 0 {
            return Err(Failure::new(
                berth_result::InvalidArgument,
                format!("unknown scrub flags {:#x}", flags & !dry_run),
            ));
        }
        let settings = berth::Scrub {
            dry_run: flags & dry_run != 0,
            upload_expiry: (upload_expiry > 0).then_some(upload_expiry),
            leftovers_older_than,
        };
        let report = inner
            .runtime
            .block_on(inner.registry.scrub(&settings))
            .map_err(|e| Failure::new(berth_result::StorageFailed, e.to_string()))?;
        let report = berth_scrub_report {
            marked: report.marked,
            blobs: report.blobs,
            stray_blobs: report.stray_blobs,
            stray_bytes: report.stray_bytes,
            uploads_purged: report.uploads_purged,
            leftovers: report.leftovers.objects,
            leftover_bytes: report.leftovers.bytes,
            usage_recounted: u32::from(report.usage_recounted),
        };
        // SAFETY: the caller promises `out` is valid.
        unsafe { write_out(out, report, "out") }
    })
}

/// Runs berth's storage contract suite against the configured storage — what a callback
/// storage (or a bucket) must pass before a registry can trust it. It writes, then removes,
/// keys under `conformance/`. Returns `BERTH_RESULT_CHECK_FAILED` with the failed check in
/// `berth_last_error()`.
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_check_storage(config: *const berth_config) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let config = unsafe { berth_config::from_ptr(config) }?;
        let runtime = runtime(config.worker_threads)?;
        let storage = {
            let _entered = runtime.enter();
            open_storage(config)?
        };
        let report = runtime.block_on(berth::storage::conformance::run(&*storage));
        if report.passed() {
            return Ok(());
        }
        let failures: Vec<String> = report
            .failures()
            .map(|(check, why)| format!("{check}: {why}"))
            .collect();
        Err(Failure::new(
            berth_result::CheckFailed,
            format!("storage contract: {}", failures.join("; ")),
        ))
    })
}

/// What `berth_registry_mirror` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct berth_mirror_report {
    /// Manifests read: the image's, and an index's children for the platforms asked for.
    pub manifests: u64,
    /// Blobs fetched from the upstream.
    pub blobs_fetched: u64,
    /// Their bytes.
    pub bytes_fetched: u64,
    /// Blobs the cache held already.
    pub blobs_cached: u64,
}

/// Pre-fills the pull-through cache (`berth_config_set_upstreams`) with the image
/// `name:reference` (`name` as clients pull it, e.g. `docker-hub/nginx`; `reference` a tag
/// or digest), fetching what a pull would: the manifest, an index's children for
/// `platforms` (a comma-separated list such as `linux/amd64,linux/arm64`; NULL or empty: all
/// of them), their configs and layers, each blob once and verified; nothing already cached.
/// `BERTH_RESULT_INVALID_ARGUMENT` when `name` is not in a cache, `BERTH_RESULT_NOT_FOUND`
/// when the upstream has no such image, `BERTH_RESULT_STORAGE_FAILED` when the upstream or
/// the storage failed (`berth_last_error` says which). Blocks until done.
///
/// # Safety
/// `registry` is a live registry; `name` and `reference` are NUL-terminated strings,
/// `platforms` one or NULL; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_registry_mirror(
    registry: *const berth_registry,
    name: *const c_char,
    reference: *const c_char,
    platforms: *const c_char,
    out: *mut berth_mirror_report,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let (registry, name, reference, platforms) = unsafe {
            (
                berth_registry::from_ptr(registry)?,
                str_arg(name, "name")?,
                str_arg(reference, "reference")?,
                optional_str_arg(platforms, "platforms")?,
            )
        };
        let platforms: Vec<String> = platforms
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|platform| !platform.is_empty())
            .map(str::to_owned)
            .collect();
        let inner = &registry.inner;
        let report = inner
            .runtime
            .block_on(inner.registry.mirror(name, reference, &platforms))
            .map_err(|e| {
                let code = match e.status() {
                    400 => berth_result::InvalidArgument,
                    404 => berth_result::NotFound,
                    _ => berth_result::StorageFailed,
                };
                Failure::new(code, e.message().to_owned())
            })?;
        let report = berth_mirror_report {
            manifests: report.manifests,
            blobs_fetched: report.blobs_fetched,
            bytes_fetched: report.bytes_fetched,
            blobs_cached: report.blobs_cached,
        };
        // SAFETY: the caller promises `out` is valid.
        unsafe { write_out(out, report, "out") }
    })
}
