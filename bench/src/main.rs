//! berth-bench: the load generator of berth's benchmarks (bench/run.sh drives it).
//!
//! ```text
//! berth-bench run --target berth=127.0.0.1:5000,pid=123 --target registry2=127.0.0.1:5001,pid=456 \
//!     [--target ceiling=127.0.0.1:5002,pid=789,ceiling] [--target auth=ADDR,authorization="Bearer TOKEN"] \
//!     [--rounds 3] [--blob-mib 1024] \
//!     [--duration 10] [--concurrency 32] [--images 300] [--pushers 8] [--limits-dir DIR] \
//!     [--first-round 0] --out results.jsonl
//! berth-bench ceiling --addr 127.0.0.1:5002 [--blob-mib 1024]
//! ```
//!
//! Each scenario runs for every target in turn, round after round (A B A B …), so slow drift
//! of the machine touches every target alike. Every measurement is one JSON line.

mod ceiling;
mod client;
mod content;
mod limits;
mod process;
mod scenarios;

use std::io::Write;
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};

use crate::client::Error;
use crate::scenarios::Target;

struct Settings {
    targets: Vec<Target>,
    rounds: u64,
    /// The number of the first round, which seeds its content: a later run against the same
    /// servers (bench/run.sh's count of syncs) pushes images they do not hold yet.
    first_round: u64,
    blob_size: u64,
    duration: Duration,
    concurrency: usize,
    images: usize,
    pushers: usize,
    limits_dir: Option<std::path::PathBuf>,
    out: Option<std::path::PathBuf>,
    only: Option<Vec<String>>,
}

impl Settings {
    fn round_numbers(&self) -> std::ops::Range<u64> {
        self.first_round..self.first_round + self.rounds
    }
}

fn parse_target(spec: &str) -> Result<Target, Error> {
    let mut parts = spec.split(',');
    let (name, addr) = parts
        .next()
        .and_then(|first| first.split_once('='))
        .ok_or_else(|| {
            format!("--target {spec}: expected NAME=ADDR[,pid=N][,ceiling][,authorization=VALUE]")
        })?;
    let mut target = Target {
        name: name.to_owned(),
        addr: addr.to_owned(),
        pid: None,
        ceiling: false,
        authorization: None,
    };
    for part in parts {
        match part.split_once('=') {
            Some(("pid", pid)) => target.pid = Some(pid.parse()?),
            Some(("authorization", value)) => target.authorization = Some(value.to_owned()),
            None if part == "ceiling" => target.ceiling = true,
            _ => return Err(format!("--target {spec}: unknown part {part}").into()),
        }
    }
    Ok(target)
}

fn settings(args: &[String]) -> Result<Settings, Error> {
    let mut settings = Settings {
        targets: Vec::new(),
        rounds: 3,
        first_round: 0,
        blob_size: 1 << 30,
        duration: Duration::from_secs(10),
        concurrency: 32,
        images: 300,
        pushers: 8,
        limits_dir: None,
        out: None,
        only: None,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => settings.targets.push(parse_target(value()?)?),
            "--rounds" => settings.rounds = value()?.parse()?,
            "--first-round" => settings.first_round = value()?.parse()?,
            "--blob-mib" => settings.blob_size = value()?.parse::<u64>()? << 20,
            "--duration" => settings.duration = Duration::from_secs_f64(value()?.parse()?),
            "--concurrency" => settings.concurrency = value()?.parse()?,
            "--images" => settings.images = value()?.parse()?,
            "--pushers" => settings.pushers = value()?.parse()?,
            "--limits-dir" => settings.limits_dir = Some(value()?.into()),
            "--out" => settings.out = Some(value()?.into()),
            "--only" => settings.only = Some(value()?.split(',').map(str::to_owned).collect()),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if settings.targets.is_empty() {
        return Err("give at least one --target".into());
    }
    client::set_credentials(
        settings
            .targets
            .iter()
            .filter_map(|target| Some((target.addr.clone(), target.authorization.clone()?)))
            .collect(),
    );
    Ok(settings)
}

struct Recorder {
    out: Option<std::fs::File>,
    failures: usize,
}

impl Recorder {
    /// Records that a scenario failed on a target; the run goes on with the others.
    fn failed(&mut self, scenario: &str, target: &str, round: u64, error: &Error) {
        self.failures += 1;
        self.record(scenario, target, round, json!({"error": error.to_string()}));
    }

    fn record(&mut self, scenario: &str, target: &str, round: u64, figures: Value) {
        let mut line = json!({"scenario": scenario, "target": target, "round": round});
        if let (Some(line), Value::Object(figures)) = (line.as_object_mut(), figures) {
            line.extend(figures);
        }
        eprintln!("{line}");
        if let Some(out) = self.out.as_mut() {
            let _ = writeln!(out, "{line}");
        }
    }
}

async fn run(settings: Settings) -> Result<(), Error> {
    let mut recorder = Recorder {
        out: settings
            .out
            .as_ref()
            .map(std::fs::File::create)
            .transpose()?,
        failures: 0,
    };
    let wanted = |scenario: &str| {
        settings
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == scenario))
    };
    if let Some(dir) = &settings.limits_dir
        && wanted("limits")
    {
        for (scenario, figures) in limits::measure(dir, settings.blob_size).await? {
            recorder.record(&scenario, "machine", 0, figures);
        }
    }
    let blob_scenarios: Vec<&str> = ["push", "push-chunked", "pull"]
        .into_iter()
        .filter(|s| wanted(s))
        .collect();
    if blob_scenarios.iter().any(|s| s.starts_with("push")) {
        warm_up(&settings).await;
    }
    if !blob_scenarios.is_empty() {
        for round in settings.round_numbers() {
            for target in &settings.targets {
                let blobs = blob_round_on_own_thread(
                    target.clone(),
                    round,
                    settings.blob_size,
                    blob_scenarios.iter().map(|s| (*s).to_owned()).collect(),
                );
                match blobs.await {
                    Ok(results) => {
                        for (scenario, figures) in results {
                            recorder.record(&scenario, &target.name, round, figures);
                        }
                    }
                    Err(e) => recorder.failed("blobs", &target.name, round, &e),
                }
            }
        }
    }
    if wanted("manifest-get") || wanted("blob-head") {
        let mut reads = Vec::new();
        for target in &settings.targets {
            match scenarios::prepare_reads(target).await {
                Ok(paths) => reads.push(Some(paths)),
                Err(e) => {
                    recorder.failed("reads", &target.name, 0, &e);
                    reads.push(None);
                }
            }
        }
        let rate = |target, method, path, headers| {
            scenarios::closed_loop(
                target,
                method,
                path,
                headers,
                settings.concurrency,
                settings.duration,
            )
        };
        for round in settings.round_numbers() {
            for (target, paths) in settings.targets.iter().zip(&reads) {
                let Some((manifest, blob)) = paths else {
                    continue;
                };
                let runs = [
                    (
                        "manifest-get",
                        Method::GET,
                        manifest,
                        scenarios::manifest_headers(),
                    ),
                    ("blob-head", Method::HEAD, blob, Vec::new()),
                ];
                for (scenario, method, path, headers) in runs {
                    if !wanted(scenario) {
                        continue;
                    }
                    match rate(target, method, path.clone(), headers).await {
                        Ok(figures) => recorder.record(scenario, &target.name, round, figures),
                        Err(e) => recorder.failed(scenario, &target.name, round, &e),
                    }
                }
            }
        }
    }
    if wanted("small-images") {
        for round in settings.round_numbers() {
            for target in &settings.targets {
                let images =
                    scenarios::small_images(target, round, settings.images, settings.pushers);
                match images.await {
                    Ok(figures) => recorder.record("small-images", &target.name, round, figures),
                    Err(e) => recorder.failed("small-images", &target.name, round, &e),
                }
            }
        }
    }
    match recorder.failures {
        0 => Ok(()),
        n => Err(format!("{n} measurement(s) failed (see the \"error\" lines)").into()),
    }
}

/// The round number of the unmeasured pushes, far from any measured round's content.
const WARM_UP_ROUND: u64 = 1 << 20;

/// Pushes one blob to every target, unmeasured, before the measured rounds. On this VM the
/// first writes of a run fault their pages in from the host: in a 4-round run, round 0 pushed
/// 1 GiB into berth at 469 MB/s and 2.77 server CPU s/GB, rounds 1–3 at 980–1,303 and
/// 1.1–1.45; registry:2 at 223, then 311–344 (December 2). The ceiling, which writes
/// nothing, never paid it, so round 0 measured the machine more than the servers.
async fn warm_up(settings: &Settings) {
    for target in &settings.targets {
        let warmed = blob_round_on_own_thread(
            target.clone(),
            WARM_UP_ROUND,
            settings.blob_size,
            vec!["push".to_owned()],
        );
        if let Err(e) = warmed.await {
            eprintln!("berth-bench: warming up {} failed: {e}", target.name);
        }
    }
}

/// Runs a round of the blob scenarios on a thread of its own, with a single-threaded runtime,
/// so that the client reads its connection where it uses the bytes, as curl and Go's clients
/// do. On the work-stealing runtime hyper's connection task and the reader of the body took
/// turns on the two cores, and the client was the bound of the ceiling's pull (2 cores, two
/// runs back to back, 3 rounds each: 2,738 MB/s there, 5,382 on one thread; berth's pull 2,498
/// and 2,524, its push in one PUT 1,120 and 1,134).
async fn blob_round_on_own_thread(
    target: Target,
    round: u64,
    size: u64,
    wanted: Vec<String>,
) -> Result<Vec<(String, Value)>, Error> {
    let (done, outcome) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-blobs".into())
        .spawn(move || {
            let measured = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::from)
                .and_then(|runtime| {
                    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
                    runtime.block_on(scenarios::blob_round(&target, round, size, &wanted))
                });
            let _ = done.send(measured);
        })?;
    outcome
        .await
        .map_err(|_| Error::from("the blob round's thread ended without a result"))?
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("berth-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = match args.first().map(String::as_str) {
        Some("run") => settings(&args[1..]).map(|s| runtime.block_on(run(s))).and_then(|r| r),
        Some("ceiling") => {
            let mut addr = "127.0.0.1:0".to_owned();
            let mut blob_size = 1u64 << 30;
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                match (flag.as_str(), rest.next()) {
                    ("--addr", Some(value)) => addr = value.clone(),
                    ("--blob-mib", Some(value)) => blob_size = value.parse::<u64>().unwrap_or(1024) << 20,
                    _ => {}
                }
            }
            runtime.block_on(ceiling::run(&addr, blob_size))
        }
        _ => Err("usage: berth-bench run --target NAME=ADDR[,pid=N][,ceiling] ... | berth-bench ceiling --addr ADDR".into()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
