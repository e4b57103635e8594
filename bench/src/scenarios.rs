//! The scenarios: each measures one thing against one target and returns its figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::{self, Conn, Error, Reads, location, with_param};
use crate::content::{Blob, Rng, digest_of, hex_digest};
use crate::process;

/// A server under test.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) addr: String,
    /// The process that serves, for CPU and memory figures.
    pub(crate) pid: Option<u32>,
    /// A do-nothing endpoint: it stores nothing, so pulled bytes are not checked.
    pub(crate) ceiling: bool,
    /// The `Authorization` header every request carries, for a registry with logins.
    pub(crate) authorization: Option<String>,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// How many times a round pulls the blob (see `blob_round`).
const PULLS_PER_ROUND: usize = 3;

/// The middle value (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[middle],
        _ => (values[middle - 1] + values[middle]) / 2.0,
    }
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn expect(status: hyper::StatusCode, wanted: u16, what: &str) -> Result<(), Error> {
    if status.as_u16() == wanted {
        Ok(())
    } else {
        Err(format!("{what}: status {status}, expected {wanted}").into())
    }
}

/// Starts an upload; returns its location.
async fn start_upload(conn: &mut Conn, repo: &str) -> Result<String, Error> {
    let (status, headers, _) = conn
        .call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            client::empty(),
        )
        .await?;
    expect(status, 202, "starting an upload")?;
    location(&headers)
}

/// Pushes `blob` in one PUT (POST, then PUT with the whole body).
pub(crate) async fn push_whole(conn: &mut Conn, repo: &str, blob: &Blob) -> Result<(), Error> {
    let upload = start_upload(conn, repo).await?;
    let headers = [
        ("Content-Length", blob.size.to_string()),
        ("Content-Type", "application/octet-stream".to_owned()),
    ];
    let (status, _, body) = conn
        .call(
            Method::PUT,
            &with_param(&upload, "digest", &blob.digest),
            &headers,
            client::chunks(blob.frames(0, blob.size)),
        )
        .await?;
    expect(
        status,
        201,
        &format!("PUT of the blob ({})", String::from_utf8_lossy(&body)),
    )
}

/// Pushes `blob` in PATCH chunks of `chunk` bytes, then an empty PUT.
pub(crate) async fn push_chunked(
    conn: &mut Conn,
    repo: &str,
    blob: &Blob,
    chunk: u64,
) -> Result<(), Error> {
    let mut upload = start_upload(conn, repo).await?;
    let mut offset = 0;
    while offset < blob.size {
        let end = (offset + chunk).min(blob.size);
        let headers = [
            ("Content-Range", format!("{offset}-{}", end - 1)),
            ("Content-Length", (end - offset).to_string()),
            ("Content-Type", "application/octet-stream".to_owned()),
        ];
        let (status, response_headers, body) = conn
            .call(
                Method::PATCH,
                &upload,
                &headers,
                client::chunks(blob.frames(offset, end)),
            )
            .await?;
        expect(
            status,
            202,
            &format!("PATCH ({})", String::from_utf8_lossy(&body)),
        )?;
        upload = location(&response_headers)?;
        offset = end;
    }
    let (status, _, body) = conn
        .call(
            Method::PUT,
            &with_param(&upload, "digest", &blob.digest),
            &[("Content-Length", "0".to_owned())],
            client::empty(),
        )
        .await?;
    expect(
        status,
        201,
        &format!("closing PUT ({})", String::from_utf8_lossy(&body)),
    )
}

/// Pulls a blob, hashing it if `hash`, and checking the hash against `digest` if `compare`;
/// returns the bytes received.
pub(crate) async fn pull(
    conn: &mut Conn,
    repo: &str,
    digest: &str,
    hash: bool,
    compare: bool,
) -> Result<u64, Error> {
    let response = conn
        .send(
            Method::GET,
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            client::empty(),
        )
        .await?;
    expect(response.status(), 200, "GET of the blob")?;
    let mut body = response.into_body().into_data_stream();
    // Hashed as it is read, on the thread that reads the connection, as Go's clients verify a
    // pull (a hashing thread of its own, fed the frames, was no faster).
    let mut hash = hash.then(Sha256::new);
    let mut received = 0u64;
    while let Some(frame) = body.next().await {
        let frame = frame?;
        received += frame.len() as u64;
        if let Some(hash) = hash.as_mut() {
            hash.update(&frame);
        }
    }
    if let Some(hash) = hash
        && hex_digest(hash) != digest
        && compare
    {
        return Err("the pulled blob does not match its digest".into());
    }
    Ok(received)
}

/// An image's blobs (config first, then two layers) with their digests, and its manifest:
/// generated before the clock starts, so the load generator only sends.
pub(crate) struct Image {
    blobs: Vec<(Bytes, String)>,
    manifest: Bytes,
}

impl Image {
    pub(crate) fn generate(tag: &str, rng: &mut Rng, layer_sizes: (usize, usize)) -> Self {
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","tag":"{tag}","n":{}}}"#,
            rng.next()
        ));
        let mut size =
            || layer_sizes.0 + (rng.next() as usize) % (layer_sizes.1 - layer_sizes.0 + 1);
        let sizes = [size(), size()];
        let blobs: Vec<(Bytes, String)> = std::iter::once(config)
            .chain(sizes.iter().map(|&n| rng.bytes(n)))
            .map(|blob| {
                let digest = digest_of(&blob);
                (blob, digest)
            })
            .collect();
        let descriptor = |(blob, digest): &(Bytes, String), media_type: &str| json!({"mediaType": media_type, "digest": digest, "size": blob.len()});
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(&blobs[0], "application/vnd.oci.image.config.v1+json"),
            "layers": blobs[1..].iter()
                .map(|blob| descriptor(blob, "application/vnd.oci.image.layer.v1.tar+gzip"))
                .collect::<Vec<_>>(),
        });
        let manifest = Bytes::from(serde_json::to_vec(&manifest).expect("a JSON value"));
        Self { blobs, manifest }
    }

    /// The layers' digests.
    pub(crate) fn layers(&self) -> Vec<String> {
        self.blobs[1..]
            .iter()
            .map(|(_, digest)| digest.clone())
            .collect()
    }
}

/// Pushes `image` as `repo:tag`: each blob in a POST and a PUT, then the manifest.
pub(crate) async fn push_image(
    conn: &mut Conn,
    repo: &str,
    tag: &str,
    image: &Image,
) -> Result<(), Error> {
    for (blob, digest) in &image.blobs {
        let upload = start_upload(conn, repo).await?;
        let (status, _, body) = conn
            .call(
                Method::PUT,
                &with_param(&upload, "digest", digest),
                &[
                    ("Content-Length", blob.len().to_string()),
                    ("Content-Type", "application/octet-stream".to_owned()),
                ],
                client::full(blob.clone()),
            )
            .await?;
        expect(
            status,
            201,
            &format!("PUT of a small blob ({})", String::from_utf8_lossy(&body)),
        )?;
    }
    let (status, _, body) = conn
        .call(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[
                ("Content-Type", OCI_MANIFEST.to_owned()),
                ("Content-Length", image.manifest.len().to_string()),
            ],
            client::full(image.manifest.clone()),
        )
        .await?;
    expect(
        status,
        201,
        &format!("PUT of a manifest ({})", String::from_utf8_lossy(&body)),
    )
}

/// Latency figures of a closed-loop run.
fn latency_figures(mut latencies: Vec<u32>, elapsed: Duration) -> Value {
    latencies.sort_unstable();
    let at = |q: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            f64::from(latencies[((latencies.len() - 1) as f64 * q) as usize]) / 1000.0
        }
    };
    json!({
        "value": latencies.len() as f64 / elapsed.as_secs_f64(),
        "unit": "req/s",
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "requests": latencies.len(),
    })
}

/// `concurrency` connections send `method target` back to back for `duration`.
pub(crate) async fn closed_loop(
    target: &Target,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    concurrency: usize,
    duration: Duration,
) -> Result<Value, Error> {
    let path = Arc::new(path);
    let headers = Arc::new(headers);
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (addr, method, path, headers) = (
            target.addr.clone(),
            method.clone(),
            Arc::clone(&path),
            Arc::clone(&headers),
        );
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let (status, _, _) = conn
                    .call(method.clone(), &path, &headers, client::empty())
                    .await?;
                if !status.is_success() {
                    return Err::<Vec<u32>, Error>(
                        format!("{method} {path}: status {status}").into(),
                    );
                }
                latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await??);
    }
    Ok(latency_figures(all, started.elapsed()))
}

/// Runs `work`, returning its figures with the server's CPU seconds per GB moved.
pub(crate) async fn with_cpu<F>(
    target: &Target,
    bytes: u64,
    work: F,
) -> Result<(Duration, Option<f64>), Error>
where
    F: Future<Output = Result<(), Error>>,
{
    let before = target.pid.and_then(process::cpu_seconds);
    let started = Instant::now();
    work.await?;
    let elapsed = started.elapsed();
    let after = target.pid.and_then(process::cpu_seconds);
    let per_gb = before
        .zip(after)
        .map(|(b, a)| (a - b) / (bytes as f64 / 1e9));
    Ok((elapsed, per_gb))
}

/// Blob push and pull figures for one round.
pub(crate) async fn blob_round(
    target: &Target,
    round: u64,
    size: u64,
    scenarios: &[&str],
) -> Result<Vec<(String, Value)>, Error> {
    let mut out = Vec::new();
    // Each measurement opens its connection after settling memory, which takes seconds: an
    // idle connection may be closed by then (gunicorn keeps one alive for 2 s).
    let seed = round * 1000 + target.name.bytes().map(u64::from).sum::<u64>();
    let mut pushed: Option<Blob> = None;
    if scenarios.contains(&"push") {
        let blob = Blob::new(seed, size);
        let cache_dropped = process::settle_memory(size);
        if let Some(pid) = target.pid {
            process::reset_peak_rss(pid);
        }
        let mut conn = Conn::open(&target.addr).await?;
        let (elapsed, cpu) =
            with_cpu(target, size, push_whole(&mut conn, "bench/blobs", &blob)).await?;
        let peak = target.pid.and_then(process::peak_rss_kib);
        out.push(("push-whole".into(), json!({"value": mb_per_s(size, elapsed), "unit": "MB/s", "cpu_s_per_gb": cpu, "peak_rss_mib": peak.map(|k| k as f64 / 1024.0), "cache_dropped": cache_dropped})));
        pushed = Some(blob);
    }
    if scenarios.contains(&"push-chunked") {
        let blob = Blob::new(seed + 7, size);
        let cache_dropped = process::settle_memory(size);
        let mut conn = Conn::open(&target.addr).await?;
        let (elapsed, cpu) = with_cpu(
            target,
            size,
            push_chunked(&mut conn, "bench/blobs", &blob, 16 << 20),
        )
        .await?;
        out.push((
            "push-chunked".into(),
            json!({"value": mb_per_s(size, elapsed), "unit": "MB/s", "cpu_s_per_gb": cpu, "cache_dropped": cache_dropped}),
        ));
        // The pull reads the blob pushed last: the cache was dropped before this push, so
        // an earlier blob would be read from the disk in one pull and from memory in the next.
        pushed = Some(blob);
    }
    if scenarios.contains(&"pull") {
        let digest = match &pushed {
            Some(blob) if !target.ceiling => blob.digest.clone(),
            _ => format!("sha256:{}", "0".repeat(64)),
        };
        for verify in [false, true] {
            // Each pull reads as the client is fastest against the ceiling (2 cores, 3 rounds
            // of 3 pulls, median MB/s): without hashing, 32 KiB at a time (6,032, against
            // 5,231 for hyper's adaptive reads, 5,629 for 64 KiB, 5,412 for up to 1 MiB);
            // hashing, up to 1 MiB at a time (1,857, against 1,477 adaptive, 1,281 for 64
            // KiB). Each also changed what the servers spent: berth's CPU per GB pulled fell
            // from 0.30 to 0.20 s with the small reads.
            let reads = if verify {
                Reads::UpTo(1 << 20)
            } else {
                Reads::Exact(32 << 10)
            };
            let mut conn = Conn::open_reading(&target.addr, reads).await?;
            // Pulls from memory swing by a fifth from one to the next on this VM, so a
            // round's figure is the median of several, on every target alike.
            let mut pulls = Vec::with_capacity(PULLS_PER_ROUND);
            for _ in 0..PULLS_PER_ROUND {
                let mut received = 0;
                // The ceiling stores nothing: its bytes are hashed (the client's cost is the
                // same) but not compared with a digest.
                let compare = verify && !target.ceiling;
                let (elapsed, cpu) = with_cpu(target, size, async {
                    received = pull(&mut conn, "bench/blobs", &digest, verify, compare).await?;
                    Ok(())
                })
                .await?;
                pulls.push((mb_per_s(received, elapsed), cpu));
            }
            let each: Vec<f64> = pulls.iter().map(|(rate, _)| *rate).collect();
            let cpu: Option<Vec<f64>> = pulls.iter().map(|(_, cpu)| *cpu).collect();
            let name = if verify { "pull-verified" } else { "pull" };
            out.push((
                name.into(),
                json!({"value": median(each.clone()), "each": each, "unit": "MB/s", "cpu_s_per_gb": cpu.map(median), "client_hashed": verify}),
            ));
        }
    }
    Ok(out)
}

/// Small images pushed by `pushers` at once: images per second.
pub(crate) async fn small_images(
    target: &Target,
    round: u64,
    images: usize,
    pushers: usize,
) -> Result<Value, Error> {
    let batches: Vec<Vec<(String, Image)>> = (0..pushers)
        .map(|worker| {
            let count = images / pushers + usize::from(worker < images % pushers);
            let mut rng = Rng::new(round * 7919 + worker as u64 * 104_729 + 1);
            (0..count)
                .map(|i| {
                    let tag = format!("r{round}-{i}");
                    let image = Image::generate(&tag, &mut rng, (64 << 10, 1 << 20));
                    (tag, image)
                })
                .collect()
        })
        .collect();
    // Up to 1.2 MB per image.
    process::settle_memory(images as u64 * 1_200_000);
    let started = Instant::now();
    let mut workers = Vec::new();
    for (worker, batch) in batches.into_iter().enumerate() {
        let addr = target.addr.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let repo = format!("bench/small-{worker}");
            for (tag, image) in &batch {
                push_image(&mut conn, &repo, tag, image).await?;
            }
            Ok::<(), Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let elapsed = started.elapsed();
    Ok(json!({"value": images as f64 / elapsed.as_secs_f64(), "unit": "images/s"}))
}

/// Pushes the image the request-rate scenarios read; returns (manifest path, blob HEAD path).
pub(crate) async fn prepare_reads(target: &Target) -> Result<(String, String), Error> {
    let mut conn = Conn::open(&target.addr).await?;
    let mut rng = Rng::new(42);
    let layers = if target.ceiling {
        vec![format!("sha256:{}", "0".repeat(64))]
    } else {
        let image = Image::generate("latest", &mut rng, (4096, 8192));
        push_image(&mut conn, "bench/read", "latest", &image).await?;
        image.layers()
    };
    Ok((
        "/v2/bench/read/manifests/latest".into(),
        format!("/v2/bench/read/blobs/{}", layers[0]),
    ))
}

pub(crate) fn manifest_headers() -> Vec<(&'static str, String)> {
    vec![(
        "Accept",
        format!("{OCI_MANIFEST}, application/vnd.oci.image.index.v1+json"),
    )]
}
