//! Manifest and tag operations are linearizable: for random concurrent operations on one
//! repository (PUT by tag, by digest and by digest with `?tag=`, DELETE by tag and by digest,
//! referrers, mounts, blob deletes), the final state and every response equal those of some
//! serial order of the same operations, applied to a model.
//!
//! Each schedule starts from a fresh storage, applies a few operations one after the other
//! (checked against the model too), then runs two or three at once, on one registry or spread
//! over two registries sharing one storage. A storage wrapper yields to the scheduler a random
//! number of times before each call, so the operations interleave differently in every
//! schedule; on memory storage and one thread a seed replays its schedule exactly. The same
//! schedules also run over HTTP against `berth serve` processes sharing one root or one bucket
//! (`servers_over_one_storage`, started by tests/linearizable.sh).
//!
//! `BERTH_SCHEDULES` sets the number of schedules per configuration (default 10,000; 1,000 on
//! the filesystem), `BERTH_FIRST_SCHEDULE` the first seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use berth::storage::Storage;
use berth::{Algorithm, Digest, FsStorage, MemoryStorage, Method, Options, Registry};

mod support;
use support::{Dice, Hooked, Jitter, body_bytes};

const TAGS: [&str; 2] = ["a", "b"];
const LAYER: &[u8] = b"the layer";
const CONFIG: &[u8] = b"{\"architecture\":\"amd64\"}";

/// The manifests the schedules push: two images and a referrer of the first.
struct Manifests {
    bodies: Vec<String>,
    digests: Vec<Digest>,
}

impl Manifests {
    fn new() -> Self {
        let descriptor = |media_type: &str, data: &[u8]| {
            serde_json::json!({
                "mediaType": media_type,
                "digest": Algorithm::Sha256.digest(data).as_str(),
                "size": data.len(),
            })
        };
        let image = |extra: serde_json::Value| {
            let mut doc = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": descriptor("application/vnd.oci.image.config.v1+json", CONFIG),
                "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", LAYER)],
            });
            if let (Some(doc), Some(extra)) = (doc.as_object_mut(), extra.as_object()) {
                doc.extend(extra.clone());
            }
            doc.to_string()
        };
        let first = image(serde_json::json!({ "annotations": { "n": "0" } }));
        let second = image(serde_json::json!({ "annotations": { "n": "1" } }));
        let referrer = image(serde_json::json!({
            "artifactType": "application/vnd.example.sig",
            "subject": descriptor("application/vnd.oci.image.manifest.v1+json", first.as_bytes()),
        }));
        let bodies = vec![first, second, referrer];
        let digests = bodies
            .iter()
            .map(|b| Algorithm::Sha256.digest(b.as_bytes()))
            .collect();
        Self { bodies, digests }
    }
}

/// One operation of a schedule.
#[derive(Debug, Clone)]
enum Op {
    PutByTag { manifest: usize, tag: usize },
    PutByDigest { manifest: usize, tags: Vec<usize> },
    DeleteTag { tag: usize },
    DeleteManifest { manifest: usize },
    MountLayer,
    DeleteLayer,
}

impl Op {
    fn random(dice: &Dice) -> Self {
        let manifest = dice.roll(3) as usize;
        let tag = dice.roll(2) as usize;
        match dice.roll(11) {
            0..=2 => Self::PutByTag { manifest, tag },
            3 => Self::PutByDigest {
                manifest,
                tags: Vec::new(),
            },
            4 => Self::PutByDigest {
                manifest,
                tags: vec![0, 1],
            },
            5 | 6 => Self::DeleteTag { tag },
            7 | 8 => Self::DeleteManifest { manifest },
            9 => Self::MountLayer,
            _ => Self::DeleteLayer,
        }
    }
}

/// What the repository holds, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    manifests: BTreeSet<usize>,
    tags: BTreeMap<usize, usize>,
    layer: bool,
}

impl State {
    fn new() -> Self {
        Self {
            manifests: BTreeSet::new(),
            tags: BTreeMap::new(),
            layer: true,
        }
    }

    /// Applies `op`, returning the status a registry answers it with.
    fn apply(&mut self, op: &Op) -> u16 {
        match op {
            Op::PutByTag { manifest, tag } => self.put(*manifest, &[*tag]),
            Op::PutByDigest { manifest, tags } => self.put(*manifest, tags),
            Op::DeleteTag { tag } => match self.tags.remove(tag) {
                Some(_) => 202,
                None => 404,
            },
            Op::DeleteManifest { manifest } => {
                if self.manifests.remove(manifest) {
                    self.tags.retain(|_, m| m != manifest);
                    202
                } else {
                    404
                }
            }
            Op::MountLayer => {
                self.layer = true;
                201
            }
            Op::DeleteLayer => {
                if std::mem::replace(&mut self.layer, false) {
                    202
                } else {
                    404
                }
            }
        }
    }

    fn put(&mut self, manifest: usize, tags: &[usize]) -> u16 {
        // Every manifest names the layer, which must be in the repository.
        if !self.layer {
            return 400;
        }
        self.manifests.insert(manifest);
        for tag in tags {
            self.tags.insert(*tag, manifest);
        }
        201
    }

    /// The referrers of the first manifest: the referrer, while it is there.
    fn referrers(&self) -> BTreeSet<usize> {
        self.manifests.iter().copied().filter(|m| *m == 2).collect()
    }
}

/// Where a schedule's requests go: a registry in this process, or a `berth serve` over HTTP.
#[async_trait]
trait Target: Sync {
    /// Sends one request: the status, the `Docker-Content-Digest` header and the body.
    async fn send(
        &self,
        method: Method,
        target: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Option<String>, Vec<u8>);
}

#[async_trait]
impl<S: Storage> Target for Registry<S> {
    async fn send(
        &self,
        method: Method,
        target: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Option<String>, Vec<u8>) {
        let headers: Vec<_> = content_type
            .map(|t| ("Content-Type", t))
            .into_iter()
            .collect();
        let response = support::send(self, method, target, &headers, body).await;
        let digest = response.header("Docker-Content-Digest").map(str::to_owned);
        (response.status, digest, body_bytes(response.body).await)
    }
}

/// A registry at an HTTP address (`127.0.0.1:5000`), one connection per request.
struct Remote(String);

#[async_trait]
impl Target for Remote {
    async fn send(
        &self,
        method: Method,
        target: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Option<String>, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.0)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.0));
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.0,
            body.len()
        );
        if let Some(content_type) = content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.expect("send request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        parse_response(&raw, method == Method::Head)
    }
}

/// Status, `Docker-Content-Digest` and body of an HTTP/1.1 response read to its end.
fn parse_response(raw: &[u8], head_only: bool) -> (u16, Option<String>, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let mut digest = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if name.eq_ignore_ascii_case("Docker-Content-Digest") {
            digest = Some(value.trim().to_owned());
        }
        if name.eq_ignore_ascii_case("Transfer-Encoding") && value.trim() == "chunked" {
            chunked = true;
        }
    }
    let mut rest = &raw[split + 4..];
    if head_only || !chunked {
        return (
            status,
            digest,
            if head_only { Vec::new() } else { rest.to_vec() },
        );
    }
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size_line = String::from_utf8_lossy(&rest[..end]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        rest = &rest[end + 2..];
        if size == 0 {
            return (status, digest, body);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The two repositories of a schedule: the one operated on and a mount source.
struct Repos {
    r: String,
    src: String,
}

async fn run(target: &impl Target, repos: &Repos, manifests: &Manifests, op: &Op) -> u16 {
    let layer = Algorithm::Sha256.digest(LAYER);
    let Repos { r, src } = repos;
    let oci = Some("application/vnd.oci.image.manifest.v1+json");
    let (path, method, body) = match op {
        Op::PutByTag { manifest, tag } => (
            format!("/v2/{r}/manifests/{}", TAGS[*tag]),
            Method::Put,
            manifests.bodies[*manifest].as_bytes(),
        ),
        Op::PutByDigest { manifest, tags } => {
            let query: Vec<String> = tags.iter().map(|t| format!("tag={}", TAGS[*t])).collect();
            (
                format!(
                    "/v2/{r}/manifests/{}?{}",
                    manifests.digests[*manifest],
                    query.join("&")
                ),
                Method::Put,
                manifests.bodies[*manifest].as_bytes(),
            )
        }
        Op::DeleteTag { tag } => (
            format!("/v2/{r}/manifests/{}", TAGS[*tag]),
            Method::Delete,
            &b""[..],
        ),
        Op::DeleteManifest { manifest } => (
            format!("/v2/{r}/manifests/{}", manifests.digests[*manifest]),
            Method::Delete,
            &b""[..],
        ),
        Op::MountLayer => (
            format!("/v2/{r}/blobs/uploads/?mount={layer}&from={src}"),
            Method::Post,
            &b""[..],
        ),
        Op::DeleteLayer => (format!("/v2/{r}/blobs/{layer}"), Method::Delete, &b""[..]),
    };
    let content_type = if method == Method::Put { oci } else { None };
    let (status, _, body) = target.send(method, &path, content_type, body).await;
    // Never a 5xx, whatever runs at the same time.
    assert!(
        status < 500,
        "{op:?}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    status
}

/// What the registry holds, read through the API.
async fn observe(
    target: &impl Target,
    repos: &Repos,
    manifests: &Manifests,
) -> (State, BTreeSet<usize>) {
    let r = &repos.r;
    let mut state = State::new();
    for (i, digest) in manifests.digests.iter().enumerate() {
        let (status, ..) = target
            .send(
                Method::Head,
                &format!("/v2/{r}/manifests/{digest}"),
                None,
                b"",
            )
            .await;
        if status == 200 {
            state.manifests.insert(i);
        }
    }
    for (i, tag) in TAGS.iter().enumerate() {
        let (status, digest, _) = target
            .send(Method::Get, &format!("/v2/{r}/manifests/{tag}"), None, b"")
            .await;
        if status == 200 {
            let digest = digest.expect("a digest header");
            let manifest = manifests.digests.iter().position(|d| d.as_str() == digest);
            state.tags.insert(i, manifest.expect("a known manifest"));
        }
    }
    // The tag list agrees with what each tag resolves to.
    let (status, _, body) = target
        .send(Method::Get, &format!("/v2/{r}/tags/list"), None, b"")
        .await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let listed: BTreeSet<usize> = listed["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .map(|t| {
                    TAGS.iter()
                        .position(|n| Some(*n) == t.as_str())
                        .expect("known tag")
                })
                .collect()
        })
        .unwrap_or_default();
    let resolved: BTreeSet<usize> = state.tags.keys().copied().collect();
    assert_eq!(
        listed, resolved,
        "the tag list disagrees with the tags that resolve"
    );
    let layer = Algorithm::Sha256.digest(LAYER);
    state.layer = target
        .send(Method::Head, &format!("/v2/{r}/blobs/{layer}"), None, b"")
        .await
        .0
        == 200;
    let (status, _, body) = target
        .send(
            Method::Get,
            &format!("/v2/{r}/referrers/{}", manifests.digests[0]),
            None,
            b"",
        )
        .await;
    assert_eq!(status, 200);
    let index: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let referrers = index["manifests"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|d| {
                    let digest = d["digest"].as_str().unwrap_or_default();
                    manifests
                        .digests
                        .iter()
                        .position(|m| m.as_str() == digest)
                        .expect("known")
                })
                .collect()
        })
        .unwrap_or_default();
    (state, referrers)
}

/// Every order of `0..n`.
fn orders(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for order in orders(n - 1) {
        for at in 0..=order.len() {
            let mut next = order.clone();
            next.insert(at, n - 1);
            all.push(next);
        }
    }
    all
}

/// Runs one schedule over `targets` (registries sharing one storage, or servers sharing one
/// root or bucket) on the repositories `repos`; panics on an inconsistency, naming the seed.
async fn schedule<T: Target>(
    seed: u64,
    dice: &Dice,
    targets: &[T],
    repos: &Repos,
    manifests: &Manifests,
    plan: Plan,
) {
    let first = &targets[0];
    let layer = Algorithm::Sha256.digest(LAYER);
    let config = Algorithm::Sha256.digest(CONFIG);
    for (repo, digest, data) in [
        (&repos.r, &config, CONFIG),
        (&repos.r, &layer, LAYER),
        (&repos.src, &layer, LAYER),
    ] {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        assert_eq!(first.send(Method::Post, &path, None, data).await.0, 201);
    }
    let mut model = State::new();
    let (serial, ops) = plan(dice);
    for op in serial {
        let target = &targets[dice.roll(targets.len() as u64) as usize];
        let expected = model.apply(&op);
        assert_eq!(
            run(target, repos, manifests, &op).await,
            expected,
            "seed {seed}: serial {op:?}"
        );
    }
    let placed: Vec<usize> = ops
        .iter()
        .map(|_| dice.roll(targets.len() as u64) as usize)
        .collect();
    let statuses = futures_util::future::join_all(
        ops.iter()
            .zip(&placed)
            .map(|(op, at)| run(&targets[*at], repos, manifests, op)),
    )
    .await;
    let (observed, referrers) = observe(first, repos, manifests).await;
    assert_eq!(referrers, observed.referrers(), "seed {seed}: referrers");
    let explained = orders(ops.len()).into_iter().any(|order| {
        let mut state = model.clone();
        order.iter().all(|&i| state.apply(&ops[i]) == statuses[i]) && state == observed
    });
    assert!(
        explained,
        "seed {seed}: no serial order of {ops:?} answers {statuses:?} and leaves {observed:?} \
         (from {model:?})"
    );
}

fn options() -> Options {
    // Ids are unique across instances, as a host's must be (upload ids, lease nonces).
    static IDS: AtomicU64 = AtomicU64::new(0);
    let mut options = Options::new(
        Arc::new(|| format!("s{}", IDS.fetch_add(1, Ordering::Relaxed))),
        Arc::new(|| 1_000),
    );
    options.pause = Some(berth::tokio_timer());
    options
}

fn schedules(default: u64) -> u64 {
    std::env::var("BERTH_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// The operations of a schedule: those applied one after the other, then those run at once.
type Plan = fn(&Dice) -> (Vec<Op>, Vec<Op>);

/// A few random operations, then two or three at once.
fn random_plan(dice: &Dice) -> (Vec<Op>, Vec<Op>) {
    let serial = (0..dice.roll(4)).map(|_| Op::random(dice)).collect();
    let concurrent = (0..2 + dice.roll(2)).map(|_| Op::random(dice)).collect();
    (serial, concurrent)
}

/// Runs `count` random schedules, each over `instances` registries on a storage `make`
/// returns.
async fn check<S: Storage>(count: u64, instances: usize, make: impl Fn(u64) -> Vec<S>) {
    check_plan(count, instances, make, random_plan).await;
}

/// Runs `count` schedules of `plan`.
async fn check_plan<S: Storage>(
    count: u64,
    instances: usize,
    make: impl Fn(u64) -> Vec<S>,
    plan: Plan,
) {
    let manifests = Manifests::new();
    let first: u64 = std::env::var("BERTH_FIRST_SCHEDULE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for seed in first..first + count {
        let dice = Arc::new(Dice::new(seed));
        let registries: Vec<_> = make(seed)
            .into_iter()
            .take(instances)
            .map(|inner| {
                let hooks = Jitter(Arc::clone(&dice));
                Registry::new(Hooked { inner, hooks }, options())
            })
            .collect();
        let repos = Repos {
            r: "r".to_owned(),
            src: "src".to_owned(),
        };
        schedule(seed, &dice, &registries, &repos, &manifests, plan).await;
    }
}

/// The race issue 27 found: a DELETE by digest and a PUT by tag of the same manifest left the
/// tag pointing at a manifest that was gone.
#[tokio::test]
async fn delete_by_digest_racing_put_by_tag_of_the_same_manifest() {
    let plan: Plan = |_| {
        let put = Op::PutByTag {
            manifest: 0,
            tag: 0,
        };
        (
            vec![put.clone()],
            vec![Op::DeleteManifest { manifest: 0 }, put],
        )
    };
    let shared = |_| {
        let shared = Arc::new(MemoryStorage::new());
        vec![Arc::clone(&shared), shared]
    };
    check_plan(schedules(2_000), 2, shared, plan).await;
}

#[tokio::test]
async fn one_registry_over_memory() {
    check(schedules(10_000), 1, |_| vec![MemoryStorage::new()]).await;
}

#[tokio::test]
async fn two_registries_over_one_memory_storage() {
    check(schedules(10_000), 2, |_| {
        let shared = Arc::new(MemoryStorage::new());
        vec![Arc::clone(&shared), shared]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registries_over_one_filesystem_root() {
    let dir = std::env::temp_dir().join(format!("berth-linearizable-{}", std::process::id()));
    check(schedules(1_000), 2, |seed| {
        // One root per schedule, the last one's removed first (its registries are gone).
        if let Some(last) = seed.checked_sub(1) {
            let _ = std::fs::remove_dir_all(dir.join(last.to_string()));
        }
        let root = dir.join(seed.to_string());
        let _ = std::fs::remove_dir_all(&root);
        vec![
            FsStorage::new(&root).expect("root"),
            FsStorage::new(&root).expect("root"),
        ]
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "object-store")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registries_over_one_object_store_bucket() {
    use berth::storage::ObjectStoreStorage;
    check(schedules(10_000), 2, |_| {
        let bucket: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        vec![
            ObjectStoreStorage::new(Arc::clone(&bucket)),
            ObjectStoreStorage::new(bucket),
        ]
    })
    .await;
}

/// Two or more `berth serve` processes over one root or one bucket, named by
/// `BERTH_MODEL_SERVERS` (`127.0.0.1:5000,127.0.0.1:5001`): tests/linearizable.sh starts them.
/// Each schedule works in repositories of its own, so the servers need no fresh storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs servers: run by tests/linearizable.sh"]
async fn servers_over_one_storage() {
    let servers: Vec<Remote> = std::env::var("BERTH_MODEL_SERVERS")
        .expect("BERTH_MODEL_SERVERS: the addresses of the servers")
        .split(',')
        .map(|addr| Remote(addr.trim().to_owned()))
        .collect();
    let manifests = Manifests::new();
    let first: u64 = std::env::var("BERTH_FIRST_SCHEDULE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // A run of its own, so that a rerun against the same servers starts from nothing.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos());
    let count = schedules(10_000);
    for seed in first..first + count {
        let dice = Dice::new(seed);
        let repos = Repos {
            r: format!("model-{run}/{seed}/r"),
            src: format!("model-{run}/{seed}/src"),
        };
        schedule(seed, &dice, &servers, &repos, &manifests, random_plan).await;
    }
    println!(
        "{count} schedules over {} servers: consistent",
        servers.len()
    );
}
