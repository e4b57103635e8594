//! `berth_config`: which storage a registry runs over and how it behaves, set up before the
//! registry is created.

use std::ffi::{CString, c_char, c_void};
use std::path::PathBuf;
use std::sync::Arc;

use berth::storage::S3Settings;
use berth::{AccessPolicy, AllowAll, MemoryStorage, Options, ReadOnly, ReadOnlyOver};

use crate::callbacks::{CallbackStorage, berth_storage_vtable};
use crate::result::{
    Failure, berth_result, guard, guard_void, optional_str_arg, str_arg, write_out,
};

/// The storage a configuration names.
#[derive(Debug, Clone)]
pub(crate) enum StorageChoice {
    Fs(PathBuf),
    Memory(Arc<MemoryStorage>),
    S3(S3Settings),
    Callbacks(Arc<CallbackStorage>),
}

/// A registry's configuration: storage and options. Create with `berth_config_new`, adjust
/// with the `berth_config_set_*` functions, pass to `berth_registry_new` (as often as you
/// like), then release with `berth_config_free`.
pub struct berth_config {
    pub(crate) storage: Option<StorageChoice>,
    pub(crate) options: Options,
    pub(crate) worker_threads: usize,
    read_only: bool,
    /// The login policy of `berth_config_set_auth`, if any.
    login: Option<Arc<dyn AccessPolicy>>,
}

impl berth_config {
    /// The configuration behind a pointer the host passed.
    ///
    /// # Safety
    /// `config` is NULL or a live `berth_config` from `berth_config_new`.
    pub(crate) unsafe fn from_ptr<'a>(config: *const Self) -> Result<&'a Self, Failure> {
        // SAFETY: forwarded from the caller.
        unsafe { config.as_ref() }.ok_or_else(|| Failure::null("config"))
    }

    unsafe fn from_mut_ptr<'a>(config: *mut Self) -> Result<&'a mut Self, Failure> {
        // SAFETY: forwarded from the caller.
        unsafe { config.as_mut() }.ok_or_else(|| Failure::null("config"))
    }

    /// The access hook from the login policy and read-only mode, whichever was set first.
    fn update_access(&mut self) {
        self.options.access = match (&self.login, self.read_only) {
            (Some(login), true) => Arc::new(ReadOnlyOver(login.clone())),
            (Some(login), false) => login.clone(),
            (None, true) => Arc::new(ReadOnly),
            (None, false) => Arc::new(AllowAll),
        };
    }
}

impl std::fmt::Debug for berth_config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("berth_config")
            .field("storage", &self.storage)
            .field("options", &self.options)
            .field("worker_threads", &self.worker_threads)
            .field("read_only", &self.read_only)
            .field("login", &self.login.is_some())
            .finish()
    }
}

/// Creates a configuration with berth's defaults and no storage yet.
///
/// # Safety
/// `out` is valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_new(out: *mut *mut berth_config) -> berth_result {
    guard(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let mut options = Options::system();
        // Requests run on the registry's own runtime, so its blocking pool hashes uploads.
        options.hash_offload = Some(berth::offload::tokio_blocking_pool());
        options.pause = Some(berth::tokio_timer());
        let config = Box::new(berth_config {
            storage: None,
            options,
            worker_threads: 0,
            read_only: false,
            login: None,
        });
        // SAFETY: the caller promises `out` is valid.
        unsafe { write_out(out, Box::into_raw(config), "out") }
    })
}

/// Releases a configuration (NULL is fine). Registries made from it are not affected.
///
/// # Safety
/// `config` is NULL or from `berth_config_new`, and not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_free(config: *mut berth_config) {
    guard_void(|| {
        if !config.is_null() {
            // SAFETY: the caller hands back ownership of a pointer from `berth_config_new`.
            drop(unsafe { Box::from_raw(config) });
        }
    });
}

/// Applies `change` to the configuration behind `config`.
///
/// # Safety
/// `config` is NULL or a live `berth_config`.
pub(crate) unsafe fn configure(
    config: *mut berth_config,
    change: impl FnOnce(&mut berth_config) -> Result<(), Failure>,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let config = unsafe { berth_config::from_mut_ptr(config) }?;
        change(config)
    })
}

/// Stores data in the directory `root` (created if missing), in registry:2's layout: a
/// registry:2 root works as it is.
///
/// # Safety
/// `config` is a live configuration; `root` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_fs(
    config: *mut berth_config,
    root: *const c_char,
) -> berth_result {
    // SAFETY: the caller's promises cover both pointers.
    unsafe {
        configure(config, |config| {
            let root = str_arg(root, "root")?;
            config.storage = Some(StorageChoice::Fs(PathBuf::from(root)));
            Ok(())
        })
    }
}

/// Stores data in memory, lost when the last registry over it is freed (for tests).
/// Registries made from one configuration share the memory.
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_memory(config: *mut berth_config) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.storage = Some(StorageChoice::Memory(Arc::new(MemoryStorage::new())));
            Ok(())
        })
    }
}

/// Stores data in an S3 bucket (AWS, R2, MinIO, any S3-compatible service), with S3's own
/// multipart uploads. `endpoint` and `region` may be NULL (AWS; `AWS_REGION`, else
/// us-east-1). Credentials come from the usual `AWS_*` environment variables.
///
/// # Safety
/// `config` is a live configuration; the strings are NUL-terminated or (where allowed) NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_s3(
    config: *mut berth_config,
    bucket: *const c_char,
    endpoint: *const c_char,
    region: *const c_char,
    allow_http: bool,
    path_style: bool,
) -> berth_result {
    // SAFETY: the caller's promises cover every pointer.
    unsafe {
        configure(config, |config| {
            let mut s3 = S3Settings::new(str_arg(bucket, "bucket")?);
            s3.endpoint = optional_str_arg(endpoint, "endpoint")?.map(str::to_owned);
            s3.region = optional_str_arg(region, "region")?.map(str::to_owned);
            s3.allow_http = allow_http;
            s3.path_style = path_style;
            config.storage = Some(StorageChoice::S3(s3));
            Ok(())
        })
    }
}

/// Stores data through the host's callbacks. berth copies `vtable`; it passes `env` to
/// every callback, and calls `finalizer(env)` (if not NULL) once no registry or
/// configuration uses the storage any more — also when this call fails.
///
/// # Safety
/// `config` is a live configuration; `vtable` points to a filled `berth_storage_vtable`;
/// the callbacks are safe to call from several threads at once with `env`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_storage(
    config: *mut berth_config,
    vtable: *const berth_storage_vtable,
    env: *mut c_void,
    finalizer: Option<unsafe extern "C" fn(env: *mut c_void)>,
) -> berth_result {
    // Take ownership of `env` first, so that every path out runs the finalizer exactly once.
    let storage = CallbackStorage::new(env, finalizer);
    // SAFETY: the caller's promises cover `config` and `vtable`.
    unsafe {
        configure(config, move |config| {
            let vtable = vtable.as_ref().ok_or_else(|| Failure::null("vtable"))?;
            let storage = storage.with_vtable(vtable)?;
            config.storage = Some(StorageChoice::Callbacks(Arc::new(storage)));
            Ok(())
        })
    }
}

/// Refuses pushes and deletes (405) when `read_only` is true.
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_read_only(
    config: *mut berth_config,
    read_only: bool,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.read_only = read_only;
            config.update_access();
            Ok(())
        })
    }
}

/// Turns on logins: `settings` is a JSON document (see berth's `auth::Settings`) with
/// `htpasswd` (the file's text), `rules` (who may pull, push, overwrite and delete what),
/// `realm`, `service`, `token` (a PEM key that turns on the token service at `/token`) and
/// `issuers` (other token services' keys). NULL turns logins off again. Invalid settings
/// give `BERTH_RESULT_INVALID_ARGUMENT` with the reason in `berth_last_error`.
///
/// # Safety
/// `config` is a live configuration; `settings` is NUL-terminated or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_auth(
    config: *mut berth_config,
    settings: *const c_char,
) -> berth_result {
    // SAFETY: the caller's promises cover both pointers.
    unsafe {
        configure(config, |config| {
            config.login = match optional_str_arg(settings, "settings")? {
                None => None,
                Some(text) => {
                    let policy = berth::auth::Settings::from_json(text)
                        .and_then(|settings| settings.policy(Arc::new(berth::system::unix_now)))
                        .map_err(|e| Failure::new(berth_result::InvalidArgument, e))?;
                    Some(Arc::new(policy))
                }
            };
            config.update_access();
            Ok(())
        })
    }
}

/// Whether registries made from this configuration record who references each blob, so
/// that `berth_registry_collect_garbage` can delete what nothing needs while pushes go on
/// (default false). Every registry over one storage must have it on before the first
/// collection.
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_track_references(
    config: *mut berth_config,
    track: bool,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.options.track_references = track;
            Ok(())
        })
    }
}

/// Retention rules, which `berth_registry_collect_garbage` applies at each step: `rules` is
/// JSON, a list of `{"repositories": GLOB, "keep-last": N, "keep-tags": [GLOB...],
/// "remove-older-than": SECONDS or "30d"}` (see berth's `retention` module). NULL removes
/// them. Invalid rules give `BERTH_RESULT_INVALID_ARGUMENT` with the reason in
/// `berth_last_error`.
///
/// # Safety
/// `config` is a live configuration; `rules` is NUL-terminated or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_retention(
    config: *mut berth_config,
    rules: *const c_char,
) -> berth_result {
    // SAFETY: the caller's promises cover both pointers.
    unsafe {
        configure(config, |config| {
            config.options.retention = match optional_str_arg(rules, "rules")? {
                None => Arc::default(),
                Some(text) => Arc::new(
                    berth::retention::Retention::from_json(text)
                        .map_err(|e| Failure::new(berth_result::InvalidArgument, e))?,
                ),
            };
            Ok(())
        })
    }
}

/// Quota rules: `rules` is JSON, a list of `{"repositories": GLOB, "limit": BYTES or
/// "10GiB"}` (each repository the glob matches) and `{"namespace": PREFIX, "limit": ...}`
/// (the repositories below the prefix together); see berth's `quota` module. Pushes past a
/// limit are refused with `DENIED`; admins read usage at `GET /v2/_usage/<name>`. NULL
/// removes them. Invalid rules give `BERTH_RESULT_INVALID_ARGUMENT` with the reason in
/// `berth_last_error`.
///
/// # Safety
/// `config` is a live configuration; `rules` is NUL-terminated or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_quotas(
    config: *mut berth_config,
    rules: *const c_char,
) -> berth_result {
    // SAFETY: the caller's promises cover both pointers.
    unsafe {
        configure(config, |config| {
            config.options.quotas = match optional_str_arg(rules, "rules")? {
                None => Arc::default(),
                Some(text) => Arc::new(
                    berth::quota::Quotas::from_json(text)
                        .map_err(|e| Failure::new(berth_result::InvalidArgument, e))?,
                ),
            };
            Ok(())
        })
    }
}

/// Pull-through cache rules: `rules` is JSON, a list of `{"prefix": "docker-hub", "urls":
/// ["https://registry-1.docker.io"], ...}` (see berth's `proxy` module: `namespace`,
/// `username`, `password`, `revalidate`, `stale-if-error`, `missing-for`, `immutable-tags`,
/// `library-prefix`). Repositories below a prefix are filled from their upstream, fetched by
/// the library's own HTTP client (on its runtime). NULL removes them. Invalid rules give
/// `BERTH_RESULT_INVALID_ARGUMENT` with the reason in `berth_last_error`.
///
/// # Safety
/// `config` is a live configuration; `rules` is NUL-terminated or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_upstreams(
    config: *mut berth_config,
    rules: *const c_char,
) -> berth_result {
    // SAFETY: the caller's promises cover both pointers.
    unsafe {
        configure(config, |config| {
            let invalid = |e: String| Failure::new(berth_result::InvalidArgument, e);
            match optional_str_arg(rules, "rules")? {
                None => {
                    config.options.upstreams = Arc::default();
                    config.options.upstream_client = None;
                }
                Some(text) => {
                    config.options.upstreams =
                        Arc::new(berth::proxy::Upstreams::from_json(text).map_err(invalid)?);
                    config.options.upstream_client = Some(Arc::new(
                        berth::proxy::HttpUpstream::new().map_err(invalid)?,
                    ));
                }
            }
            Ok(())
        })
    }
}

/// Whether DELETE is allowed (default true; registry:2's `delete.enabled`).
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_delete_enabled(
    config: *mut berth_config,
    enabled: bool,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.options.delete_enabled = enabled;
            Ok(())
        })
    }
}

/// Whether `?mount=<digest>` without `from` links a blob the registry already has
/// (default true).
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_automatic_mount(
    config: *mut berth_config,
    enabled: bool,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.options.automatic_mount = enabled;
            Ok(())
        })
    }
}

/// Upload part size in bytes (default 2 MiB; at least 1 byte): an upload request holds at most
/// three parts in memory: one arriving, one being written, and what is still to be hashed on
/// the registry's blocking threads (at most two parts, the one being written included).
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_part_size(
    config: *mut berth_config,
    bytes: usize,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            if bytes == 0 {
                return Err(Failure::new(
                    berth_result::InvalidArgument,
                    "the part size must be at least one byte",
                ));
            }
            config.options.part_size = bytes;
            Ok(())
        })
    }
}

/// The largest manifest accepted, in bytes (default 4 MiB); larger ones get 413.
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_manifest_limit(
    config: *mut berth_config,
    bytes: usize,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.options.manifest_limit = bytes;
            Ok(())
        })
    }
}

/// The largest chunk a PATCH may carry, advertised as `OCI-Chunk-Max-Length`; 0 for no
/// limit (the default).
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_chunk_max_length(
    config: *mut berth_config,
    bytes: u64,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.options.chunk_max_length = (bytes > 0).then_some(bytes);
            Ok(())
        })
    }
}

/// Answers blob GETs with a 307 to a URL the storage signs for `seconds` (S3 only); 0 turns
/// redirects off (the default).
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_blob_redirect(
    config: *mut berth_config,
    seconds: u64,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.options.blob_redirect = (seconds > 0).then_some(seconds);
            Ok(())
        })
    }
}

/// How many worker threads each registry made from this configuration runs (0, the
/// default, for one per core).
///
/// # Safety
/// `config` is a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_worker_threads(
    config: *mut berth_config,
    threads: usize,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.worker_threads = threads;
            Ok(())
        })
    }
}

/// A host's notice callback and the `env` it is called with.
struct NoticeCallback {
    callback: unsafe extern "C" fn(env: *mut c_void, message: *const c_char),
    env: *mut c_void,
}

// SAFETY: the host promises (berth_config_set_notice_callback) that its callback may be called
// from any thread, concurrently, with `env`; berth never touches `env` itself.
unsafe impl Send for NoticeCallback {}
// SAFETY: as above.
unsafe impl Sync for NoticeCallback {}

impl NoticeCallback {
    fn call(&self, notice: &berth::Notice) {
        // A message with a NUL in it (from a folder name) is cut there.
        let text = notice.to_string();
        let text = text.split('\0').next().unwrap_or_default();
        if let Ok(message) = CString::new(text) {
            // SAFETY: the host promised the callback may be called with `env`, from any thread.
            unsafe { (self.callback)(self.env, message.as_ptr()) };
        }
    }
}

/// Calls `callback(env, message)` with each notice of registries made from this
/// configuration: what a response could not carry, for the host's log (a catalog or tag
/// listing that left out an entry it cannot index, and why). `message` is valid during the
/// call only. NULL `callback` stops the notices (the default).
///
/// # Safety
/// `config` is a live configuration. `callback` may be called from any of the registry's
/// threads, concurrently, with `env`, for as long as a registry made from this configuration
/// lives.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_notice_callback(
    config: *mut berth_config,
    callback: Option<unsafe extern "C" fn(env: *mut c_void, message: *const c_char)>,
    env: *mut c_void,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.options.notices = callback.map(|callback| {
                let host = NoticeCallback { callback, env };
                Arc::new(move |notice: &berth::Notice| host.call(notice)) as berth::NoticeSink
            });
            Ok(())
        })
    }
}
