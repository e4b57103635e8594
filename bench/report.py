#!/usr/bin/env python3
"""Turns berth-bench's results (JSON lines) into BENCHMARKS.md and plots.

    report.py RESULTS.jsonl OUT_DIR --blob-mib N --rounds N --duration S --images N

Every figure is a median over rounds, with its min-max; ratios compare medians measured in
the same run. The targets are those of berth's benchmark issue.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PEERS = ["registry2", "distribution3"]
ORDER = ["berth", "python", "wasm-workerd", "registry2", "distribution3", "ceiling"]
LABELS = {
    "berth": "berth serve",
    "python": "berth (Python host, gunicorn)",
    "wasm-workerd": "berth (WASM host, workerd)",
    "registry2": "registry:2 (Debian 2.8.2)",
    "distribution3": "distribution v3.1.2",
    "ceiling": "ceiling (hash-only endpoint)",
}
SCENARIOS = [
    ("push-whole", "push {size} in one PUT", "MB/s"),
    ("push-chunked", "push {size} in 16 MiB PATCH chunks", "MB/s"),
    ("pull", "pull {size}", "MB/s"),
    ("pull-verified", "pull {size}, client verifies the digest", "MB/s"),
    ("manifest-get", "manifest GET by tag, 32 connections", "req/s"),
    ("blob-head", "blob HEAD, 32 connections", "req/s"),
    ("small-images", "push {images} small images, 8 pushers", "images/s"),
]


def machine():
    def first(path, key):
        try:
            for line in open(path):
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            return "?"
        return "?"

    memory = first("/proc/meminfo", "MemTotal")
    return f"{os.cpu_count()} cores ({first('/proc/cpuinfo', 'model name')}), {memory} RAM, Linux {platform.release()}"


def version(command):
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("out")
    parser.add_argument("--blob-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()

    rows = [json.loads(line) for line in open(args.results) if line.strip()]
    # Counts of sync calls over a traced round of small images, per server (bench/run.sh).
    syncs = {row["target"]: row for row in rows if row["scenario"] == "syncs-per-image"}
    rows = [row for row in rows if row["scenario"] != "syncs-per-image"]

    def per_image(target):
        row = syncs.get(target)
        if not row or not row.get("images"):
            return None
        counts = [f"{row[call] / row['images']:.1f} {call}" for call in ("fsync", "fdatasync", "syncfs", "sync")
                  if row.get(call)]
        return " + ".join(counts) or "none"

    failures = [row for row in rows if "error" in row]
    rows = [row for row in rows if "error" not in row]
    # Until the load generator recorded "client_hashed", it did not hash the ceiling's
    # "verified" pulls, so those figures are not comparable and are left out.
    skipped = [row for row in rows if row["scenario"] == "pull-verified" and row["target"] == "ceiling"
               and "client_hashed" not in row]
    rows = [row for row in rows if row not in skipped]
    values = defaultdict(list)
    extra = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key = (row["scenario"], row["target"])
        values[key].append(row["value"])
        for field in ("cpu_s_per_gb", "peak_rss_mib", "p50_ms", "p99_ms"):
            if row.get(field) is not None:
                extra[key][field].append(row[field])
    targets = [t for t in ORDER if any(k[1] == t for k in values)]
    med = lambda key: statistics.median(values[key]) if values.get(key) else None  # noqa: E731
    med_extra = lambda key, field: statistics.median(extra[key][field]) if extra[key].get(field) else None  # noqa: E731
    size = f"{args.blob_mib} MiB" if args.blob_mib < 1024 else f"{args.blob_mib // 1024} GiB"

    def cell(scenario, target):
        key = (scenario, target)
        if not values.get(key):
            return "–"
        v = values[key]
        text = f"{med(key):,.0f} ({min(v):,.0f}–{max(v):,.0f})"
        if scenario in ("manifest-get", "blob-head"):
            text += f"<br>p50 {med_extra(key, 'p50_ms'):.2f} ms, p99 {med_extra(key, 'p99_ms'):.2f} ms"
        cpu = med_extra(key, "cpu_s_per_gb")
        if cpu is not None and scenario.startswith(("push", "pull")):
            text += f"<br>{cpu:.2f} CPU s/GB"
        rss = med_extra(key, "peak_rss_mib")
        if rss is not None:
            text += f"<br>peak RSS {rss:.0f} MiB"
        return text

    def ratio(scenario, peer):
        a, b = med((scenario, "berth")), med((scenario, peer))
        return f"{a / b:.2f}×" if a and b else "–"

    lines = [
        "# Benchmarks",
        "",
        f"Generated by `bench/run.sh` on {datetime.date.today().isoformat()}: {machine()}.",
        "Every server runs on loopback beside the load generator (`bench/`, Rust), over its own directory on the",
        "same disk. The load generator reads the connection of a blob's push or pull on one thread, where it uses",
        "the bytes, as curl and Go's clients do: on tokio's work-stealing runtime it had been the bound of the",
        "ceiling's pull (2,738 MB/s there, 5,382 on one thread; berth's pull and pushes the same either way).",
        "A pull reads as the client is fastest against the ceiling: 32 KiB at a time when it only counts the",
        "bytes, as Go's `io.Copy` does (6,032 MB/s, against 5,231 for hyper's adaptive reads of up to ~400 KiB),",
        "and up to 1 MiB at a time when it hashes them (1,857 against 1,477). The adaptive reads had also cost",
        "berth more than the ceiling: its pull ran at 62% of the ceiling's with them and at 80% with 32 KiB.",
        f"Each scenario ran on every server in turn, {args.rounds} round(s) (A B A B …); figures are",
        f"medians with min–max. Blobs are {size}; request-rate runs last {args.duration:g} s each.",
        "Before every push the page cache is emptied (`drop_caches`, as root) and a scratch file a quarter larger",
        "than what is pushed is written and deleted unsynced, so each server starts from the same memory: neither",
        "a cache full of earlier pushes nor pages this VM has handed back to its host, which cost 2.4 s of system",
        "CPU per GB to fault in again (see `bench/src/process.rs`). Pulls read the blob pushed last, from the cache;",
        "consecutive pulls swing by a fifth on this VM, so a round's pull figure is the median of three.",
        "Every push first waits (at most 10 s) for the machine to be 90% idle, so no server pays for the work of",
        "the one before it. Each server is first pushed one blob unmeasured: the first writes of a run fault their",
        "pages in from this VM's host (a first round had pushed into berth at 469 MB/s and 2.77 CPU s/GB, the next",
        "three at 980–1,303 and 1.1–1.45), which the ceiling, writing nothing, never pays. The WASM host is measured after the others, in a pass of its own: its in-memory store",
        "keeps every blob pushed to it, and memory held that way slows every page-cache writer after it on this VM.",
        "",
        f"Peers: {version(['docker-registry', '--version'])} (Debian's registry:2) and distribution v3.1.2",
        "(`go install`). zot is not here: the Go module proxy of this machine does not serve",
        "`zotregistry.dev/zot`. The ceiling is `berth-bench ceiling`, an HTTP endpoint that only hashes",
        "what it is sent and serves generated bytes: no registry on this machine can beat it. It serves each",
        "connection as `berth serve` does, on one of a single-threaded runtime per CPU: on tokio's work-stealing",
        "runtime it pushed and pulled 6–12% slower, and did 5–11% more small requests per second (November 29,",
        "on an earlier machine). It lets hyper read up to 1 MiB at a time (its default is ~400 KiB), which pushed",
        "12–18% faster there. It serves a blob's",
        "worth of distinct bytes from memory, as any server of such a blob must read them: repeating a 16 MiB",
        "block, it had served them from the CPU's cache (6,188 MB/s, against 4,443 from memory).",
        "",
        "## Physical limits (same run)",
        "",
        "| limit | MB/s |",
        "|---|---|",
    ]
    for scenario, label in [("limit-sha256", "SHA-256 on one core"), ("limit-loopback-tcp", "loopback TCP, one stream between two threads, 1 MiB writes"),
                            ("limit-disk-fdatasync", f"disk write of {size}, then fdatasync"),
                            ("limit-disk-fdatasync-parts", f"disk write of {size} in 2 MiB parts, each allocated first and handed to the disk as written, one fdatasync (as berth writes)")]:
        if values.get((scenario, "machine")):
            lines.append(f"| {label} | {med((scenario, 'machine')):,.0f} |")
    lines += ["", "## Results", "", "| scenario | " + " | ".join(LABELS[t] for t in targets) + " |",
              "|---|" + "---|" * len(targets)]
    for scenario, label, unit in SCENARIOS:
        if not any(values.get((scenario, t)) for t in targets):
            continue
        label = label.format(size=size, images=args.images)
        lines.append(f"| {label} ({unit}) | " + " | ".join(cell(scenario, t) for t in targets) + " |")
    if syncs:
        traced = next(iter(syncs.values()))["images"]
        lines += ["", f"Syncs per small image (a separate round of {traced} images each server has not seen, "
                  "traced with `strace -f -c`, every committed blob and manifest durable): "
                  + "; ".join(f"{LABELS.get(t, t)}: {per_image(t)}" for t in syncs) + "."]
    peers = [p for p in PEERS if p in targets]
    if peers:
        lines += ["", "## berth serve against its peers", "", "| scenario | " + " | ".join(f"berth / {p}" for p in peers) +
                  " | berth / ceiling |", "|---|" + "---|" * (len(peers) + 1)]
        for scenario, label, _ in SCENARIOS:
            if values.get((scenario, "berth")):
                lines.append(f"| {label.format(size=size, images=args.images)} | " +
                             " | ".join(ratio(scenario, p) for p in peers) + f" | {ratio(scenario, 'ceiling')} |")

    # The targets, checked.
    checks = []
    reg = "registry2"

    def check(name, ok, detail):
        checks.append(f"| {name} | {'✓' if ok else '✗'} | {detail} |")

    # Each target is checked where its scenario ran (BENCH_ONLY runs some).
    for scenario in ("push-whole", "push-chunked"):
        b, r, c = med((scenario, "berth")), med((scenario, reg)), med((scenario, "ceiling"))
        if not (b and r):
            continue
        bc, rc = med_extra((scenario, "berth"), "cpu_s_per_gb"), med_extra((scenario, reg), "cpu_s_per_gb")
        check(f"{scenario}: ≥ 2× registry:2", b >= 2 * r, f"{b / r:.2f}×")
        if bc is not None and rc:
            check(f"{scenario}: ≤ 0.5× registry:2's CPU per GB", bc <= 0.5 * rc, f"{bc:.2f} vs {rc:.2f} s/GB ({bc / rc:.2f}×)")
        if c:
            check(f"{scenario}: ≥ 80% of the ceiling", b >= 0.8 * c, f"{100 * b / c:.0f}%")
    for scenario in ("pull", "pull-verified"):
        b, c = med((scenario, "berth")), med((scenario, "ceiling"))
        if b and c:
            check(f"{scenario}: ≥ 90% of the ceiling", b >= 0.9 * c, f"{100 * b / c:.0f}%")
    for scenario in ("manifest-get", "blob-head"):
        b, r = med((scenario, "berth")), med((scenario, reg))
        bp, rp = med_extra((scenario, "berth"), "p99_ms"), med_extra((scenario, reg), "p99_ms")
        if b and r:
            check(f"{scenario}: ≥ 10× registry:2 req/s", b >= 10 * r, f"{b / r:.1f}×")
            check(f"{scenario}: p99 ≤ 1/10 of registry:2's", bp <= rp / 10, f"{bp:.2f} vs {rp:.2f} ms")
    b, r = med(("small-images", "berth")), med(("small-images", reg))
    if b and r:
        counted = [f"{t} {per_image(t)}" for t in ("berth", reg) if per_image(t)]
        durable = "; syncs per image: " + ", ".join(counted) if counted else ""
        check("small images: ≥ 5× registry:2", b >= 5 * r, f"{b / r:.2f}×{durable}")
    rss = med_extra(("push-whole", "berth"), "peak_rss_mib")
    if rss is not None:
        check(f"peak RSS during the {size} push ≤ 32 MiB", rss <= 32, f"{rss:.0f} MiB")
    if checks:
        lines += ["", "## Targets", "", "| target | met | measured |", "|---|---|---|"] + checks
    # Nothing on this machine can beat the ceiling: where berth did, the ceiling had slow rounds
    # (noise of a shared VM), and every ratio to it in this run reads high.
    above = [s for s in ("push-whole", "push-chunked", "pull", "pull-verified")
             if med((s, "berth")) and med((s, "ceiling")) and med((s, "berth")) > med((s, "ceiling"))]
    if above:
        lines += ["", f"berth measured above the ceiling in {', '.join(above)}: the ceiling had slow "
                  "rounds in this run (see its min–max), so the ratios to it read high here. The "
                  "same-run A/B comparisons of more rounds in docs/storage.md are the closer estimate."]

    os.makedirs(os.path.join(args.out, "bench", "plots"), exist_ok=True)
    plots = []
    for name, scenarios, unit in [("throughput", ["push-whole", "push-chunked", "pull", "pull-verified"], "MB/s"),
                                  ("requests", ["manifest-get", "blob-head"], "req/s"),
                                  ("small-images", ["small-images"], "images/s")]:
        present = [s for s in scenarios if any(values.get((s, t)) for t in targets)]
        if not present:
            continue
        figure, axis = plt.subplots(figsize=(10, 4.5))
        width = 0.8 / max(1, len(targets))
        for i, target in enumerate(targets):
            heights = [med((s, target)) or 0 for s in present]
            errors = [[(med((s, target)) or 0) - min(values.get((s, target), [0])) for s in present],
                      [max(values.get((s, target), [0])) - (med((s, target)) or 0) for s in present]]
            axis.bar([x + i * width for x in range(len(present))], heights, width, yerr=errors, label=LABELS[target], capsize=2)
        axis.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(present))])
        axis.set_xticklabels(present)
        axis.set_ylabel(unit)
        axis.set_title(f"{name} (median, min–max over {args.rounds} round(s))")
        axis.legend(fontsize=8)
        figure.tight_layout()
        path = os.path.join("bench", "plots", f"{name}.png")
        figure.savefig(os.path.join(args.out, path), dpi=110)
        plt.close(figure)
        plots.append(path)
    latency = [t for t in targets if values.get(("manifest-get", t))]
    if latency:
        figure, axis = plt.subplots(figsize=(10, 4.5))
        for j, (scenario, hatch) in enumerate([("manifest-get", ""), ("blob-head", "//")]):
            for k, field in enumerate(["p50_ms", "p99_ms"]):
                xs = [i * 5 + j * 2 + k for i in range(len(latency))]
                axis.bar(xs, [med_extra((scenario, t), field) or 0 for t in latency], 0.9, hatch=hatch,
                         label=f"{scenario} {field[:3]}")
        axis.set_xticks([i * 5 + 1.5 for i in range(len(latency))])
        axis.set_xticklabels([LABELS[t] for t in latency], fontsize=7)
        axis.set_yscale("log")
        axis.set_ylabel("latency, ms (log)")
        axis.set_title("request latency at 32 connections (median over rounds)")
        axis.legend(fontsize=8)
        figure.tight_layout()
        path = os.path.join("bench", "plots", "latency.png")
        figure.savefig(os.path.join(args.out, path), dpi=110)
        plt.close(figure)
        plots.append(path)
    if skipped:
        lines += ["", "The ceiling's verified-pull figures of this run are left out: the load generator did",
                  "not hash the ceiling's bytes then, so they were not comparable (it does now)."]
    if failures:
        lines += ["", "## Failed measurements", ""] + [
            f"- {row['scenario']} on {row['target']} (round {row['round']}): {row['error']}" for row in failures]
    lines += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({p})" for p in plots]
    lines += ["", "Raw results: `bench/results.jsonl` (one JSON line per measurement).", ""]
    with open(os.path.join(args.out, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
