//! Configuration: command-line flags, each with an environment variable, over an optional
//! TOML file, over defaults. A flag beats its variable, which beats the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use berth::storage::S3Settings;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::lifecycle::GcSettings;

/// berth: an OCI container registry.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the registry.
    Serve(ServeArgs),
    /// Purge upload sessions older than the expiry once, then exit (`serve` also does this
    /// periodically).
    PurgeUploads(ServeArgs),
    /// Run the storage conformance suite against the configured storage (it writes and then
    /// removes keys under `conformance/`): does this bucket or disk give berth what it needs?
    CheckStorage(ServeArgs),
    /// Collect garbage to the end, then exit: blobs no manifest references, older than the
    /// grace period (`serve --gc` also does it periodically). Safe while registries serve,
    /// once every instance over the storage runs with --gc.
    Gc(GcArgs),
    /// Delete a repository whole (its manifests, tags and links; blobs other repositories
    /// use stay, the rest is garbage for `gc`), then exit. Servers may run meanwhile.
    DeleteRepository(RepositoryArgs),
    /// Scrub the storage, then collect garbage to the end: write every back-link again, make
    /// blobs nothing references or links candidates, purge expired uploads, remove what
    /// killed writes left (scratch files, orphaned parts), have quota usage counted afresh.
    /// An occasional command; safe while registries serve with --gc.
    Scrub(GcArgs),
    /// Print what a repository and the repositories below its name hold (bytes, objects),
    /// and the quotas on it with their usage, as JSON; then exit.
    Usage(RepositoryArgs),
    /// Pre-fill the pull-through cache with images (as clients name them through berth:
    /// `docker-hub/nginx:1.27`, `docker-hub/redis@sha256:...`), fetching what a pull would
    /// and nothing already cached; then exit. Servers may run meanwhile.
    Mirror(MirrorArgs),
}

#[derive(Debug, Args, Default)]
pub(crate) struct MirrorArgs {
    /// The images: `NAME:TAG` or `NAME@DIGEST`.
    #[arg(required = true)]
    pub(crate) images: Vec<String>,
    /// Of an index, only these platforms (`linux/amd64`, `linux/arm/v7`; repeatable)
    /// [default: every platform].
    #[arg(long = "platform")]
    pub(crate) platforms: Vec<String>,
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

#[derive(Debug, Args, Default)]
pub(crate) struct RepositoryArgs {
    /// The repository (or namespace), e.g. `team/app`.
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

#[derive(Debug, Args, Default)]
pub(crate) struct GcArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Also delete manifests untagged for the grace period (as --gc-untagged).
    #[arg(long)]
    pub(crate) untagged: bool,
    /// With --untagged: also delete referrers whose subject goes (as
    /// --gc-orphaned-referrers).
    #[arg(long)]
    pub(crate) orphaned_referrers: bool,
}

impl GcArgs {
    /// The serve settings of a command that collects: --gc on, the command's flags added.
    pub(crate) fn collecting(self) -> ServeArgs {
        ServeArgs {
            gc: true,
            gc_untagged: self.serve.gc_untagged || self.untagged,
            gc_orphaned_referrers: self.serve.gc_orphaned_referrers || self.orphaned_referrers,
            ..self.serve
        }
    }
}

#[derive(Debug, Args, Default)]
pub(crate) struct ServeArgs {
    /// TOML file with any of the settings below (flags and variables override it).
    #[arg(long, short, env = "BERTH_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long, env = "BERTH_ADDR")]
    pub(crate) addr: Option<SocketAddr>,
    /// Storage backend: `fs` (a directory) or `s3` (a bucket) [default: fs].
    #[arg(long, env = "BERTH_STORAGE")]
    pub(crate) storage: Option<StorageKind>,
    /// Directory of the filesystem storage (a registry:2 root works as it is) [default: ./berth-data].
    #[arg(long, env = "BERTH_ROOT")]
    pub(crate) root: Option<PathBuf>,
    /// S3 bucket (with --storage s3).
    #[arg(long, env = "BERTH_S3_BUCKET")]
    pub(crate) s3_bucket: Option<String>,
    /// S3 endpoint URL, for S3-compatible services (R2, MinIO, …) [default: AWS].
    #[arg(long, env = "BERTH_S3_ENDPOINT")]
    pub(crate) s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION, else us-east-1].
    #[arg(long, env = "BERTH_S3_REGION")]
    pub(crate) s3_region: Option<String>,
    /// Allow a plain-HTTP S3 endpoint.
    #[arg(long, env = "BERTH_S3_ALLOW_HTTP")]
    pub(crate) s3_allow_http: bool,
    /// Address buckets by path (`endpoint/bucket`) rather than virtual host (`bucket.endpoint`).
    #[arg(long, env = "BERTH_S3_PATH_STYLE")]
    pub(crate) s3_path_style: bool,
    /// Objects above this many bytes are copied part by part (S3's limit, 5 GiB, by default;
    /// lower it only to test the part copy with small blobs).
    #[arg(long, env = "BERTH_S3_MAX_SINGLE_COPY", hide = true)]
    pub(crate) s3_max_single_copy: Option<u64>,
    /// Refuse pushes and deletes (405).
    #[arg(long, env = "BERTH_READ_ONLY")]
    pub(crate) read_only: bool,
    /// Refuse deletes (405), as registry:2 does unless `delete.enabled`.
    #[arg(long, env = "BERTH_NO_DELETE")]
    pub(crate) no_delete: bool,
    /// Whether `?mount=` without `from` links a blob the registry already has [default: true].
    #[arg(long, env = "BERTH_AUTOMATIC_MOUNT")]
    pub(crate) automatic_mount: Option<bool>,
    /// Largest manifest accepted, in bytes [default: 4194304].
    #[arg(long, env = "BERTH_MANIFEST_LIMIT")]
    pub(crate) manifest_limit: Option<usize>,
    /// Upload part size in bytes; an upload request holds at most two in memory
    /// [default: 2097152].
    #[arg(long, env = "BERTH_PART_SIZE")]
    pub(crate) part_size: Option<usize>,
    /// Largest chunk a PATCH may carry, advertised as OCI-Chunk-Max-Length (for proxies with body limits).
    #[arg(long, env = "BERTH_CHUNK_MAX_LENGTH")]
    pub(crate) chunk_max_length: Option<u64>,
    /// Age after which abandoned upload sessions are purged: `7d`, `12h`, `30m`, `90s`; `0` keeps them [default: 7d].
    #[arg(long, env = "BERTH_UPLOAD_EXPIRY")]
    pub(crate) upload_expiry: Option<String>,
    /// How long a request may hold an upload session while writing parts to S3 (it frees it
    /// when done; a request that dies frees it after this long): `15m`, `30s` [default: 15m].
    #[arg(long, env = "BERTH_UPLOAD_LEASE")]
    pub(crate) upload_lease: Option<String>,
    /// Answer blob GETs with a 307 to a presigned S3 URL valid this long (`15m`), so blob
    /// bytes bypass berth [default: off].
    #[arg(long, env = "BERTH_BLOB_REDIRECT")]
    pub(crate) blob_redirect: Option<String>,
    /// An htpasswd file of bcrypt hashes (`htpasswd -B`): requests must log in with Basic
    /// credentials (re-read when the file changes). Without --access, every user listed
    /// may do everything, as with registry:2's `auth.htpasswd`.
    #[arg(long, env = "BERTH_HTPASSWD")]
    pub(crate) htpasswd: Option<PathBuf>,
    /// A TOML file of access rules: who may pull, push, overwrite and delete which
    /// repositories, and what anonymous callers may do (see the README).
    #[arg(long, env = "BERTH_ACCESS")]
    pub(crate) access: Option<PathBuf>,
    /// The realm named in the Basic challenge [default: berth].
    #[arg(long, env = "BERTH_AUTH_REALM")]
    pub(crate) auth_realm: Option<String>,
    /// A PEM private key (Ed25519, or P-256 for ES256) that turns on the token service at
    /// `/token`: clients log in there and present its tokens (`Bearer` challenges). `storage`
    /// keeps a generated Ed25519 key in the storage (`berth/keys/token.pem`), shared by every
    /// instance over it.
    #[arg(long, env = "BERTH_TOKEN_KEY")]
    pub(crate) token_key: Option<PathBuf>,
    /// The PEM certificate chain of --token-key, sent in each token's `x5c` header so
    /// registry:2 2.8 (`auth.token.rootcertbundle`) can verify berth's tokens.
    #[arg(long, env = "BERTH_TOKEN_CERT", requires = "token_key")]
    pub(crate) token_cert: Option<PathBuf>,
    /// The token service's absolute URL sent in challenges; `{host}` stands for the
    /// request's Host [default: http(s)://{host}/token].
    #[arg(long, env = "BERTH_TOKEN_REALM")]
    pub(crate) token_realm: Option<String>,
    /// How long the access tokens berth issues are good for: `5m`, `1h` [default: 5m].
    #[arg(long, env = "BERTH_TOKEN_LIFETIME")]
    pub(crate) token_lifetime: Option<String>,
    /// This registry's service name: the audience of the tokens it accepts and issues
    /// [default: berth].
    #[arg(long, env = "BERTH_TOKEN_SERVICE")]
    pub(crate) token_service: Option<String>,
    /// The issuer name of the tokens berth issues, and of those --token-jwks verifies
    /// [default: berth].
    #[arg(long, env = "BERTH_TOKEN_ISSUER")]
    pub(crate) token_issuer: Option<String>,
    /// The public keys (a JWKS file, or an http(s) URL fetched when a token names a key not
    /// yet seen) of an external token service whose distribution-format tokens are accepted.
    #[arg(long, env = "BERTH_TOKEN_JWKS")]
    pub(crate) token_jwks: Option<String>,
    /// How long to wait before answering credentials that prove nothing (wrong passwords,
    /// bad tokens), slowing password guessing: `2s` [default: 0].
    #[arg(long, env = "BERTH_LOGIN_FAIL_DELAY")]
    pub(crate) login_fail_delay: Option<String>,
    /// Track who references each blob and collect garbage while serving: blobs no manifest
    /// references (deleted manifests' layers, abandoned uploads) are deleted once older than
    /// --gc-grace. Every instance over one storage must run with it.
    #[arg(long, env = "BERTH_GC")]
    pub(crate) gc: bool,
    /// How often `serve --gc` collects: `1h`, `10m` [default: 1h].
    #[arg(long, env = "BERTH_GC_INTERVAL")]
    pub(crate) gc_interval: Option<String>,
    /// How old an unreferenced blob must be before it is deleted (longer than any push
    /// takes): `24h`, `0` [default: 24h].
    #[arg(long, env = "BERTH_GC_GRACE")]
    pub(crate) gc_grace: Option<String>,
    /// With --gc: also delete manifests untagged for the grace period (no tag points at
    /// them, no index of their repository lists them, and they are not referrers of a
    /// subject their repository keeps); then their blobs.
    #[arg(long, env = "BERTH_GC_UNTAGGED")]
    pub(crate) gc_untagged: bool,
    /// With --gc-untagged: also delete referrers (signatures, SBOMs) whose subject goes
    /// [default: kept].
    #[arg(long, env = "BERTH_GC_ORPHANED_REFERRERS")]
    pub(crate) gc_orphaned_referrers: bool,
    /// With --gc: retention rules (a TOML file of `[[rule]]` tables, a JSON file, or JSON
    /// text): which tags each collection removes, by repository: keep-last, keep-tags,
    /// remove-older-than.
    #[arg(long, env = "BERTH_RETENTION")]
    pub(crate) retention: Option<PathBuf>,
    /// Quota rules (a TOML file of `[[rule]]` tables, a JSON file, or JSON text): how many
    /// bytes each repository (`repositories` glob) or namespace may hold; pushes past a
    /// limit are refused with DENIED. Admins read usage at /v2/_usage/<name>.
    #[arg(long, env = "BERTH_QUOTAS")]
    pub(crate) quotas: Option<PathBuf>,
    /// Cache the repositories below PREFIX from the registry at URL (repeatable):
    /// `--upstream docker-hub=https://registry-1.docker.io` serves `docker-hub/nginx` from
    /// Docker Hub's `library/nginx`, fetching what it lacks when asked. Pushes there get 405.
    #[arg(
        long = "upstream",
        value_name = "PREFIX=URL",
        env = "BERTH_UPSTREAM",
        value_delimiter = ' '
    )]
    pub(crate) upstream: Vec<String>,
    /// Upstream rules (a TOML file of `[[upstream]]` tables, a JSON file, or JSON text):
    /// several URLs per prefix, an `ns` namespace, credentials, how often tags are checked
    /// (`revalidate`), how long a copy stands in for a failing upstream (`stale-if-error`),
    /// tags never checked again (`immutable-tags`).
    #[arg(long, env = "BERTH_UPSTREAMS")]
    pub(crate) upstreams: Option<PathBuf>,
    /// How long an upstream may stay silent (to connect, or between two reads of a body)
    /// before berth gives up on it: a stalled fill is cut off, kept, and resumed by the next
    /// request. `30s`, `2m` [default: 30s].
    #[arg(long, env = "BERTH_UPSTREAM_TIMEOUT")]
    pub(crate) upstream_timeout: Option<String>,
    /// Log filter, e.g. `info` or `berth=debug` [default: info].
    #[arg(long, env = "BERTH_LOG")]
    pub(crate) log: Option<String>,
    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, env = "BERTH_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
}

/// Where the registry keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StorageKind {
    /// A directory on a local filesystem.
    Fs,
    /// An S3 (or S3-compatible) bucket; credentials come from the usual AWS_* variables.
    S3,
}

/// The TOML file's shape: every key optional, named as the flags are.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    addr: Option<SocketAddr>,
    storage: Option<StorageKind>,
    root: Option<PathBuf>,
    s3_bucket: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_allow_http: Option<bool>,
    s3_path_style: Option<bool>,
    read_only: Option<bool>,
    no_delete: Option<bool>,
    automatic_mount: Option<bool>,
    manifest_limit: Option<usize>,
    part_size: Option<usize>,
    chunk_max_length: Option<u64>,
    upload_expiry: Option<String>,
    upload_lease: Option<String>,
    blob_redirect: Option<String>,
    htpasswd: Option<PathBuf>,
    access: Option<PathBuf>,
    auth_realm: Option<String>,
    token_key: Option<PathBuf>,
    token_cert: Option<PathBuf>,
    token_realm: Option<String>,
    token_lifetime: Option<String>,
    token_service: Option<String>,
    token_issuer: Option<String>,
    token_jwks: Option<String>,
    #[serde(default)]
    token_issuers: Vec<ExternalIssuer>,
    login_fail_delay: Option<String>,
    gc: Option<bool>,
    gc_interval: Option<String>,
    gc_grace: Option<String>,
    gc_untagged: Option<bool>,
    gc_orphaned_referrers: Option<bool>,
    retention: Option<PathBuf>,
    quotas: Option<PathBuf>,
    #[serde(default)]
    upstream: Vec<String>,
    upstreams: Option<PathBuf>,
    upstream_timeout: Option<String>,
    log: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// Who may do what, when requests must log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthSettings {
    /// The htpasswd file, if passwords are checked.
    pub(crate) htpasswd: Option<PathBuf>,
    /// The access rules' file; without one, every listed user may do everything.
    pub(crate) access: Option<PathBuf>,
    /// The Basic challenge's realm.
    pub(crate) realm: String,
    /// The token service, when berth issues tokens.
    pub(crate) issuing: Option<IssuingSettings>,
    /// This registry's service name (the tokens' audience).
    pub(crate) service: String,
    /// Token services whose tokens are accepted.
    pub(crate) external: Vec<ExternalIssuer>,
    /// Seconds to wait before a 401 to a request that sent credentials.
    pub(crate) fail_delay: u64,
}

/// berth's own token service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IssuingSettings {
    /// The key's PEM file, or `storage` for a key kept in the storage.
    pub(crate) key: PathBuf,
    pub(crate) certificates: Option<PathBuf>,
    /// The realm sent in challenges; `{host}` is replaced by the request's Host.
    pub(crate) realm: String,
    pub(crate) issuer: String,
    /// Seconds an access token is good for.
    pub(crate) lifetime: Option<u64>,
}

impl IssuingSettings {
    /// Whether the key is kept in the storage rather than in a file.
    pub(crate) fn key_in_storage(&self) -> bool {
        self.key.as_os_str() == "storage"
    }
}

/// A token service, or an OIDC provider, whose tokens berth accepts (`[[token-issuers]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ExternalIssuer {
    /// The tokens' `iss`.
    pub(crate) issuer: String,
    /// Its public keys: a JWKS file, or an http(s) URL.
    pub(crate) jwks: String,
    /// The audience its tokens must name [default: the service name].
    pub(crate) audience: Option<String>,
    /// For identity (OIDC) tokens: the claim naming the principal. Without it, tokens carry
    /// distribution-format `access` grants.
    pub(crate) subject_claim: Option<String>,
    /// For identity tokens: the claim listing the principal's groups.
    pub(crate) groups_claim: Option<String>,
}

/// The storage after merging.
#[derive(Debug, Clone)]
pub(crate) enum StorageSettings {
    Fs(PathBuf),
    S3(S3Settings),
}

/// Settings after merging.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) addr: SocketAddr,
    pub(crate) storage: StorageSettings,
    pub(crate) read_only: bool,
    pub(crate) delete_enabled: bool,
    pub(crate) automatic_mount: bool,
    pub(crate) manifest_limit: usize,
    pub(crate) part_size: usize,
    pub(crate) chunk_max_length: Option<u64>,
    /// Seconds; 0 keeps sessions forever.
    pub(crate) upload_expiry: u64,
    /// Seconds.
    pub(crate) upload_lease: u64,
    /// Seconds a presigned blob URL lives; `None` serves blobs directly.
    pub(crate) blob_redirect: Option<u64>,
    pub(crate) auth: Option<AuthSettings>,
    /// Garbage collection, when on.
    pub(crate) gc: Option<GcSettings>,
    /// The quota rules' file (or JSON text).
    pub(crate) quotas: Option<PathBuf>,
    /// `PREFIX=URL` upstream pairs.
    pub(crate) upstream: Vec<String>,
    /// The upstream rules' file (or JSON text).
    pub(crate) upstreams: Option<PathBuf>,
    /// Seconds an upstream may stay silent.
    pub(crate) upstream_timeout: u64,
    pub(crate) log: String,
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
}

impl ServeArgs {
    pub(crate) fn settings(self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("TLS needs both a certificate (tls-cert) and a key (tls-key)".into()),
        };
        let part_size = self
            .part_size
            .or(file.part_size)
            .unwrap_or(berth::DEFAULT_PART_SIZE);
        if part_size == 0 {
            return Err("part-size must be at least 1 byte".into());
        }
        Ok(Settings {
            addr: self
                .addr
                .or(file.addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5000))),
            storage: match self.storage.or(file.storage).unwrap_or(StorageKind::Fs) {
                StorageKind::Fs => StorageSettings::Fs(
                    self.root
                        .or(file.root)
                        .unwrap_or_else(|| PathBuf::from("berth-data")),
                ),
                StorageKind::S3 => {
                    let mut s3 = S3Settings::new(
                        self.s3_bucket
                            .or(file.s3_bucket)
                            .ok_or("S3 storage needs a bucket (s3-bucket)")?,
                    );
                    s3.endpoint = self.s3_endpoint.or(file.s3_endpoint);
                    s3.region = self.s3_region.or(file.s3_region);
                    s3.allow_http = self.s3_allow_http || file.s3_allow_http.unwrap_or(false);
                    s3.path_style = self.s3_path_style || file.s3_path_style.unwrap_or(false);
                    s3.max_single_copy = self.s3_max_single_copy;
                    StorageSettings::S3(s3)
                }
            },
            read_only: self.read_only || file.read_only.unwrap_or(false),
            delete_enabled: !(self.no_delete || file.no_delete.unwrap_or(false)),
            automatic_mount: self
                .automatic_mount
                .or(file.automatic_mount)
                .unwrap_or(true),
            manifest_limit: self
                .manifest_limit
                .or(file.manifest_limit)
                .unwrap_or(berth::DEFAULT_MANIFEST_LIMIT),
            part_size,
            chunk_max_length: self.chunk_max_length.or(file.chunk_max_length),
            upload_expiry: parse_age(
                self.upload_expiry
                    .or(file.upload_expiry)
                    .as_deref()
                    .unwrap_or("7d"),
            )?,
            upload_lease: parse_age(
                self.upload_lease
                    .or(file.upload_lease)
                    .as_deref()
                    .unwrap_or("15m"),
            )?,
            blob_redirect: self
                .blob_redirect
                .or(file.blob_redirect)
                .map(|age| parse_age(&age))
                .transpose()?,
            auth: {
                let htpasswd = self.htpasswd.or(file.htpasswd);
                let access = self.access.or(file.access);
                let realm = self.auth_realm.or(file.auth_realm);
                let issuer = self
                    .token_issuer
                    .or(file.token_issuer)
                    .unwrap_or_else(|| "berth".into());
                let scheme = if tls.is_some() { "https" } else { "http" };
                let lifetime = self
                    .token_lifetime
                    .or(file.token_lifetime)
                    .map(|age| parse_age(&age))
                    .transpose()?;
                let issuing = self
                    .token_key
                    .or(file.token_key)
                    .map(|key| IssuingSettings {
                        key,
                        certificates: self.token_cert.or(file.token_cert),
                        realm: self
                            .token_realm
                            .or(file.token_realm)
                            .unwrap_or_else(|| format!("{scheme}://{{host}}/token")),
                        issuer: issuer.clone(),
                        lifetime,
                    });
                let mut external = file.token_issuers;
                if let Some(jwks) = self.token_jwks.or(file.token_jwks) {
                    external.push(ExternalIssuer {
                        issuer,
                        jwks,
                        audience: None,
                        subject_claim: None,
                        groups_claim: None,
                    });
                }
                let fail_delay = parse_age(
                    self.login_fail_delay
                        .or(file.login_fail_delay)
                        .as_deref()
                        .unwrap_or("0"),
                )?;
                let on = htpasswd.is_some()
                    || access.is_some()
                    || issuing.is_some()
                    || !external.is_empty();
                on.then(|| AuthSettings {
                    htpasswd,
                    access,
                    realm: realm.unwrap_or_else(|| "berth".into()),
                    issuing,
                    service: self
                        .token_service
                        .or(file.token_service)
                        .unwrap_or_else(|| "berth".into()),
                    external,
                    fail_delay,
                })
            },
            gc: if self.gc || file.gc.unwrap_or(false) {
                let interval = self.gc_interval.or(file.gc_interval);
                let grace = self.gc_grace.or(file.gc_grace);
                Some(GcSettings {
                    interval: parse_age(interval.as_deref().unwrap_or("1h"))?.max(1),
                    grace: parse_age(grace.as_deref().unwrap_or("24h"))?,
                    untagged: self.gc_untagged || file.gc_untagged.unwrap_or(false),
                    orphaned_referrers: self.gc_orphaned_referrers
                        || file.gc_orphaned_referrers.unwrap_or(false),
                    retention: self.retention.or(file.retention),
                })
            } else {
                None
            },
            quotas: self.quotas.or(file.quotas),
            upstream: if self.upstream.is_empty() {
                file.upstream
            } else {
                self.upstream
            },
            upstreams: self.upstreams.or(file.upstreams),
            upstream_timeout: parse_age(
                self.upstream_timeout
                    .or(file.upstream_timeout)
                    .as_deref()
                    .unwrap_or("30s"),
            )?
            .max(1),
            log: self.log.or(file.log).unwrap_or_else(|| "info".into()),
            tls,
        })
    }
}

/// Parses an age such as `7d`, `12h`, `30m`, `90s` or `3600` (seconds) into seconds.
fn parse_age(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "upload-expiry {text:?}: use a number with s, m, h or d"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?}: use a number with s, m, h or d"))
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("7d"), Ok(604_800));
        assert_eq!(parse_age("12h"), Ok(43_200));
        assert_eq!(parse_age("90"), Ok(90));
        assert_eq!(parse_age("0"), Ok(0));
        assert!(parse_age("7w").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("berth-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("berth.toml");
        std::fs::write(
            &file,
            "addr = \"127.0.0.1:6000\"\nroot = \"/srv/r\"\nno-delete = true\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            root: Some("/flag".into()),
            ..ServeArgs::default()
        };
        let settings = args.settings().unwrap();
        assert_eq!(settings.addr.port(), 6000);
        assert!(
            matches!(&settings.storage, StorageSettings::Fs(root) if root == &PathBuf::from("/flag"))
        );
        assert!(!settings.delete_enabled);
        assert!(settings.automatic_mount);
        std::fs::write(&file, "colour = \"blue\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        };
        assert!(args.settings().unwrap_err().contains("unknown field"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
