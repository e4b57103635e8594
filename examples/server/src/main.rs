//! `berth serve`: the standalone registry, a drop-in for registry:2.

mod auth;
mod config;
mod http;
mod lifecycle;
mod proxy;
mod threads;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use berth::storage::{ObjectStoreStorage, Storage};
use berth::{FsStorage, Options, ReadOnly, Registry};
use clap::Parser;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Cli, Command, Settings, StorageSettings};
use crate::lifecycle::GcSettings;
use crate::threads::ConnectionThreads;

/// How long open connections may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Keeps memory freed by one upload for the next instead of returning it to the kernel:
/// glibc hands buffers over 128 KiB (hyper's read buffers, upload parts) back with
/// `munmap`/`madvise` when freed, so every new buffer is page-faulted in again. Allocating them
/// from the heap and trimming it only past 64 MiB cut a push's CPU per GB by ~13% (1.27 →
/// 1.11 s/GB, same-run A/B); the resident size stays what the busiest moment needed.
///
/// glibc reads these settings (its tunables) only when a process starts, so the server runs
/// itself again with them set: `exec`, the same process. Setting them from inside would take
/// `mallopt`, an `unsafe` call, and berth keeps `unsafe` code in ffi/. Where the exec fails
/// (no /proc), the server runs with glibc's defaults.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const TUNABLES: &str =
            "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864";
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        // Set already: by the exec below, or by whoever started the server.
        if current.contains("glibc.malloc.mmap_threshold") {
            return;
        }
        let tunables = if current.is_empty() {
            TUNABLES.to_owned()
        } else {
            format!("{current}:{TUNABLES}")
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new("/proc/self/exe");
        if let Some(name) = args.next() {
            command.arg0(name);
        }
        // Returns only if the exec failed.
        let _ = command.args(args).env("GLIBC_TUNABLES", tunables).exec();
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let (args, mode) = match cli.command {
        Command::Serve(args) => (args, Mode::Serve),
        Command::PurgeUploads(args) => (args, Mode::PurgeUploads),
        Command::CheckStorage(args) => (args, Mode::CheckStorage),
        Command::DeleteRepository(args) => (args.serve, Mode::DeleteRepository(args.name)),
        Command::Usage(args) => (args.serve, Mode::Usage(args.name)),
        Command::Mirror(args) => (
            args.serve,
            Mode::Mirror {
                images: args.images,
                platforms: args.platforms,
            },
        ),
        Command::Scrub(args) => {
            let dry_run = args.dry_run;
            (args.collecting(), Mode::Scrub { dry_run })
        }
        Command::Gc(args) => {
            let dry_run = args.dry_run;
            (args.collecting(), Mode::CollectGarbage { dry_run })
        }
    };
    let settings = match args.settings() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("berth: {message}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&settings.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // Accepting connections, signals and purges; connections are served on threads of their
    // own (see `threads`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let work = async move {
        let (storage, description) = open_storage(&settings)?;
        let (storage, description) = with_injected_faults(storage, description)?;
        match mode {
            Mode::CheckStorage => check_storage(storage, &description).await,
            Mode::DeleteRepository(name) => {
                let settings = Settings {
                    auth: None,
                    read_only: false,
                    ..settings
                };
                let registry = Registry::new(storage, registry_options(&settings, None)?);
                let path = format!("/v2/{name}/");
                admin_request(&registry, berth::Method::Delete, &path, 202).await
            }
            Mode::Mirror { images, platforms } => {
                let settings = Settings {
                    auth: None,
                    ..settings
                };
                let registry = Registry::new(storage, registry_options(&settings, None)?);
                proxy::mirror(&registry, &images, &platforms).await
            }
            Mode::Usage(name) => {
                let settings = Settings {
                    auth: None,
                    ..settings
                };
                let registry = Registry::new(storage, registry_options(&settings, None)?);
                let path = format!("/v2/_usage/{name}");
                admin_request(&registry, berth::Method::Get, &path, 200).await
            }
            Mode::CollectGarbage { dry_run } | Mode::Scrub { dry_run } => {
                // Collecting needs no logins (and no token key).
                let settings = Settings {
                    auth: None,
                    ..settings
                };
                let registry = Registry::new(storage, registry_options(&settings, None)?);
                if matches!(mode, Mode::Scrub { .. }) {
                    scrub(&registry, &settings, dry_run).await?;
                }
                let collection = settings
                    .gc
                    .as_ref()
                    .map(|gc| gc.collection())
                    .unwrap_or_default();
                collect_garbage(&registry, collection, dry_run).await
            }
            Mode::PurgeUploads => {
                // Purging needs no logins (and no token key).
                let settings = Settings {
                    auth: None,
                    ..settings
                };
                let registry = Registry::new(storage, registry_options(&settings, None)?);
                let purged = registry
                    .purge_uploads(settings.upload_expiry)
                    .await
                    .map_err(|e| format!("purging uploads: {e}"))?;
                println!(
                    "purged {purged} upload sessions older than {} s",
                    settings.upload_expiry
                );
                Ok(())
            }
            Mode::Serve => {
                let stored_key = match &settings.auth {
                    Some(auth)
                        if auth
                            .issuing
                            .as_ref()
                            .is_some_and(|own| own.key_in_storage()) =>
                    {
                        let fresh = berth::system::new_token_key()
                            .ok_or("the system gives no randomness for a token key")?;
                        let key = berth::auth::stored_key(&*storage, || fresh)
                            .await
                            .map_err(|e| format!("the token key in the storage: {e}"))?;
                        Some(key)
                    }
                    _ => None,
                };
                let options = registry_options(&settings, stored_key)?;
                let registry = Arc::new(Registry::new(storage, options));
                serve(registry, description, settings).await
            }
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("berth: {message}");
            ExitCode::FAILURE
        }
    }
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate or key rejected: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What the command line asked for.
#[derive(Debug, Clone)]
enum Mode {
    Serve,
    PurgeUploads,
    CheckStorage,
    CollectGarbage {
        dry_run: bool,
    },
    Scrub {
        dry_run: bool,
    },
    DeleteRepository(String),
    Usage(String),
    Mirror {
        images: Vec<String>,
        platforms: Vec<String>,
    },
}

/// Scrubs the storage and prints what it found (the collection that follows deletes it).
async fn scrub(
    registry: &Registry<Arc<dyn Storage>>,
    settings: &Settings,
    dry_run: bool,
) -> Result<(), String> {
    let report = registry
        .scrub(&berth::Scrub {
            dry_run,
            upload_expiry: (settings.upload_expiry > 0).then_some(settings.upload_expiry),
            // Older than any write in progress: a part is written within a request.
            leftovers_older_than: settings.upload_lease.max(3600),
        })
        .await
        .map_err(|e| format!("scrubbing: {e}"))?;
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "scrub: wrote {} back-links; {} of {} blobs ({} bytes) nothing references or links{}",
        report.marked,
        report.stray_blobs,
        report.blobs,
        report.stray_bytes,
        if dry_run { "" } else { ": now candidates" }
    );
    println!(
        "scrub: purged {} expired uploads; {verb} {} leftovers of killed writes ({} bytes){}",
        report.uploads_purged,
        report.leftovers.objects,
        report.leftovers.bytes,
        if report.usage_recounted {
            "; quota usage will be counted afresh"
        } else {
            ""
        }
    );
    Ok(())
}

/// Collects garbage until no candidate older than `grace` is left (a dry run: visits each
/// once), and prints what it deleted (or would).
async fn collect_garbage(
    registry: &Registry<Arc<dyn Storage>>,
    collection: berth::Collection,
    dry_run: bool,
) -> Result<(), String> {
    let settings = berth::Collection {
        dry_run,
        max_candidates: if dry_run { usize::MAX } else { 1000 },
        ..collection
    };
    let mut total = berth::CollectionReport::default();
    loop {
        let report = registry
            .collect_garbage(&settings)
            .await
            .map_err(|e| format!("collecting garbage: {e}"))?;
        total.visited += report.visited;
        total.manifests_deleted += report.manifests_deleted;
        total.tags_deleted += report.tags_deleted;
        for (repository, tags) in report.tags_by_repository {
            total
                .tags_by_repository
                .entry(repository)
                .or_default()
                .extend(tags);
        }
        total.blobs_deleted += report.blobs_deleted;
        total.bytes_deleted += report.bytes_deleted;
        total.links_removed += report.links_removed;
        total.marked += report.marked;
        for (repository, bytes) in report.by_repository {
            *total.by_repository.entry(repository).or_default() += bytes;
        }
        // A step that deleted manifests recorded their blobs as candidates: one more step
        // visits those old enough.
        if dry_run || report.visited == 0 && report.left == 0 {
            break;
        }
        if report.left > 0 && report.blobs_deleted + report.links_removed + report.marked == 0 {
            // Only busy candidates left (another collector's claims, perhaps of one that
            // died): they lapse within seconds.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    if total.marked > 0 {
        println!(
            "wrote {} back-links for what was stored before",
            total.marked
        );
    }
    let evicts = registry.options().upstreams.evicts();
    if total.tags_deleted > 0 || !registry.options().retention.is_empty() || evicts {
        let by = if evicts {
            "the retention rules and cache eviction"
        } else {
            "the retention rules"
        };
        println!("{verb} {} tags by {by}", total.tags_deleted);
        for (repository, tags) in &total.tags_by_repository {
            println!("  {repository}: {}", tags.join(" "));
        }
    }
    if settings.untagged {
        println!("{verb} {} untagged manifests", total.manifests_deleted);
    }
    println!(
        "visited {} candidates; {verb} {} blobs ({} bytes) and {} repository links",
        total.visited, total.blobs_deleted, total.bytes_deleted, total.links_removed
    );
    for (repository, bytes) in &total.by_repository {
        println!("  {repository}: {bytes} bytes unlinked");
    }
    Ok(())
}

/// Deletes a repository whole, as `DELETE /v2/<name>/` does, and prints what went.
/// Sends an admin's request (the command line is one) and prints the JSON it answers.
async fn admin_request(
    registry: &Registry<Arc<dyn Storage>>,
    method: berth::Method,
    path: &str,
    expected: u16,
) -> Result<(), String> {
    let head = berth::RequestHead::from_target(method, path);
    let response = registry.handle(head, berth::empty_body()).await;
    let body = match response.body {
        berth::Body::Full(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    };
    if response.status == expected {
        println!("{body}");
        Ok(())
    } else {
        Err(format!("{method:?} {path}: {} {body}", response.status))
    }
}

/// Runs the storage conformance suite and prints its report, one line per check.
async fn check_storage(storage: Arc<dyn Storage>, description: &str) -> Result<(), String> {
    let report = berth::storage::conformance::run(&*storage).await;
    print!("{report}");
    if report.passed() {
        println!("storage conformance: every check passed ({description})");
        Ok(())
    } else {
        let failed: Vec<_> = report.failures().map(|(name, _)| name).collect();
        Err(format!(
            "{description} does not meet the storage contract: {} failed",
            failed.join(", ")
        ))
    }
}

/// For tests of the registry under failing storage (`tests/faults.sh`): `BERTH_FAULTS` set to
/// `seed:per_mille[:kinds]` wraps the storage in [`berth::storage::FaultyStorage`]. Never set
/// it in production: the registry then fails on purpose.
fn with_injected_faults(
    storage: Arc<dyn Storage>,
    description: String,
) -> Result<(Arc<dyn Storage>, String), String> {
    let Ok(spec) = std::env::var("BERTH_FAULTS") else {
        return Ok((storage, description));
    };
    let faults = berth::storage::Faults::parse(&spec)
        .ok_or_else(|| format!("BERTH_FAULTS={spec:?}: expected seed:per_mille[:kinds]"))?;
    tracing::warn!(%spec, "BERTH_FAULTS: storage fails on purpose (for tests only)");
    let faulty = berth::storage::FaultyStorage::new(storage, faults, Some(berth::tokio_timer()));
    Ok((
        Arc::new(faulty),
        format!("{description} with injected faults {spec}"),
    ))
}

/// The storage the settings name, and a description for the log.
fn open_storage(settings: &Settings) -> Result<(Arc<dyn Storage>, String), String> {
    match &settings.storage {
        StorageSettings::Fs(root) => {
            let storage = FsStorage::new(root)
                .map_err(|e| format!("cannot use storage root {}: {e}", root.display()))?;
            Ok((Arc::new(storage), format!("fs:{}", root.display())))
        }
        StorageSettings::S3(s3) => {
            let storage = ObjectStoreStorage::s3(s3).map_err(|e| format!("S3 storage: {e}"))?;
            Ok((Arc::new(storage), format!("s3:{}", s3.bucket)))
        }
    }
}

/// The registry's options.
fn registry_options(settings: &Settings, stored_key: Option<String>) -> Result<Options, String> {
    let mut options = Options::system();
    options.manifest_limit = settings.manifest_limit;
    options.part_size = settings.part_size;
    options.automatic_mount = settings.automatic_mount;
    options.delete_enabled = settings.delete_enabled;
    options.chunk_max_length = settings.chunk_max_length;
    options.upload_lease = settings.upload_lease;
    options.blob_redirect = settings.blob_redirect;
    options.hash_offload = Some(berth::offload::tokio_blocking_pool());
    options.track_references = settings.gc.is_some();
    if let Some(gc) = &settings.gc {
        options.retention = Arc::new(gc.retention()?);
    }
    options.quotas = Arc::new(lifecycle::quotas(settings.quotas.as_deref())?);
    let upstreams = proxy::upstreams(settings.upstreams.as_deref(), &settings.upstream)?;
    if !upstreams.is_empty() {
        options.upstreams = Arc::new(upstreams);
        let silence = Duration::from_secs(settings.upstream_timeout);
        options.upstream_client =
            Some(Arc::new(berth::proxy::HttpUpstream::with_timeout(silence)?));
    }
    options.pause = Some(berth::tokio_timer());
    options.notices = Some(Arc::new(|notice: &berth::Notice| {
        tracing::warn!("{notice}");
    }));
    if let Some(auth) = &settings.auth {
        let policy = Arc::new(auth::FilePolicy::load(auth.clone(), stored_key)?);
        options.access = if settings.read_only {
            Arc::new(berth::ReadOnlyOver(policy))
        } else {
            policy
        };
        options.key_sets = Some(Arc::new(auth::KeySetsOverHttp::new()?));
    } else if settings.read_only {
        options.access = Arc::new(ReadOnly);
    }
    Ok(options)
}

/// Collects garbage every interval, for as long as the server runs (each run visits every
/// candidate old enough, in steps).
fn spawn_collector(registry: Arc<Registry<Arc<dyn Storage>>>, gc: GcSettings) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(gc.interval));
        let settings = gc.collection();
        loop {
            ticks.tick().await;
            loop {
                match registry.collect_garbage(&settings).await {
                    Ok(report) => {
                        let changed = report.tags_deleted
                            + report.manifests_deleted
                            + report.blobs_deleted
                            + report.links_removed
                            + report.marked;
                        if changed > 0 {
                            tracing::info!(
                                tags = report.tags_deleted,
                                manifests = report.manifests_deleted,
                                blobs = report.blobs_deleted,
                                bytes = report.bytes_deleted,
                                links = report.links_removed,
                                marked = report.marked,
                                "collected garbage"
                            );
                        }
                        if report.left == 0 || report.visited == 0 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "collecting garbage failed");
                        break;
                    }
                }
            }
        }
    });
}

/// Purges expired upload sessions now and then, for as long as the server runs.
fn spawn_upload_purger(registry: Arc<Registry<Arc<dyn Storage>>>, expiry: u64) {
    if expiry == 0 {
        return;
    }
    let every = Duration::from_secs((expiry / 4).clamp(10, 3600));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            match registry.purge_uploads(expiry).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged expired upload sessions"),
                Err(e) => tracing::warn!(error = %e, "purging expired upload sessions failed"),
            }
        }
    });
}

async fn serve(
    registry: Arc<Registry<Arc<dyn Storage>>>,
    description: String,
    settings: Settings,
) -> Result<(), String> {
    spawn_upload_purger(Arc::clone(&registry), settings.upload_expiry);
    if let Some(gc) = settings.gc {
        spawn_collector(Arc::clone(&registry), gc);
    }
    let tls = match &settings.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let listener = TcpListener::bind(settings.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        addr = %local,
        storage = %description,
        tls = tls.is_some(),
        read_only = settings.read_only,
        login = settings.auth.is_some(),
        "berth is serving"
    );

    let threads = ConnectionThreads::per_cpu()
        .map_err(|e| format!("cannot start the connection threads: {e}"))?;
    let builder = auto::Builder::new(threads.clone());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Handed over without its registration with this runtime: the connection's thread
        // registers it with its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "accepted connection unusable");
                continue;
            }
        };
        let registry = Arc::clone(&registry);
        let service = service_fn(move |request| http::serve(Arc::clone(&registry), request));
        let builder = builder.clone();
        let acceptor = tls.clone();
        let watcher = graceful.watcher();
        threads.spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "accepted connection unusable");
                    return;
                }
            };
            let served = match acceptor {
                None => {
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(connection).await
                }
                Some(acceptor) => {
                    let stream = match acceptor.accept(stream).await {
                        Ok(stream) => stream,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(connection).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: finishing open requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("gave up waiting for connections"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
