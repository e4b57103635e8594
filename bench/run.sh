#!/usr/bin/env bash
# berth's benchmark, the one command: builds berth (release) and the load generator, starts
# berth and its peers on loopback, each over its own filesystem directory — Debian's
# registry:2 (docker-registry), distribution v3 (go install) — plus berth's other hosts
# (the Python package under gunicorn, the WebAssembly build in workerd) and a ceiling (a
# do-nothing endpoint that only hashes uploads); runs every scenario on each in turn, round
# after round; counts the syncs a small image costs berth and registry:2 (strace, on a round
# of its own); writes BENCHMARKS.md and its plots (bench/plots/*.png).
#
#   bench/run.sh            the full run (about 25 minutes on 2 cores, the build included;
#                           first it installs the test suite's tools, which the Python and
#                           WASM hosts run with, unless BERTH_SKIP_INSTALL=1)
#   bench/run.sh --smoke    seconds, tiny sizes, berth beside registry:2: keeps the
#                           benchmark working (CI); the report goes to target/bench-smoke
#
# BENCH_ROUNDS, BENCH_BLOB_MIB, BENCH_DURATION and BENCH_IMAGES change the full run's sizes;
# BENCH_ONLY=small-images,push (of limits, push, push-chunked, pull, manifest-get, blob-head,
# small-images) runs only those,
# and its report goes to target/bench-only rather than replacing BENCHMARKS.md.
#
# zot is not benchmarked: the Go module proxy here does not serve zotregistry.dev/zot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
tools=${BERTH_TOOLS:-$root/.tools}
DISTRIBUTION_VERSION=v3.1.2
MATPLOTLIB_VERSION=3.10.7
smoke=0
[ "${1:-}" = --smoke ] && smoke=1
log() { printf '[bench] %s\n' "$*" >&2; }
source "$root/tests/lib/common.sh"

if [ $smoke = 1 ]; then
  rounds=1 blob_mib=4 duration=0.5 images=8 out=$root/target/bench-smoke
else
  rounds=${BENCH_ROUNDS:-3} blob_mib=${BENCH_BLOB_MIB:-1024} duration=${BENCH_DURATION:-10}
  images=${BENCH_IMAGES:-300} out=$root
  [ -n "${BENCH_ONLY:-}" ] && out=$root/target/bench-only
fi
mkdir -p "$out"
# The raw results: beside the report, except for the full run's, which live in bench/.
results=$out/bench-results.jsonl
[ "$out" = "$root" ] && results=$root/bench/results.jsonl
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
# Each server's root, made in this directory, starts in its own region of the filesystem
# (ext4's "top directory" flag: its subdirectories are spread like those of /). ext4 without
# a journal skips every inode freed in the last minutes when it allocates one, scanning past
# each: a server whose files shared block groups with another's freed upload files (or with a
# deleted earlier run) paid for that scan in every file and directory it made.
chattr +T "$work" 2>/dev/null || true
# Every server keeps the blobs pushed to it (two per round and one to warm up; five servers
# store them) beside the disk-limit file and a scratch file: a disk that fills mid-run fails
# servers with ENOSPC.
need_mib=$((blob_mib * ((2 * rounds + 1) * 5 + 4)))
free_mib=$(df -Pm "$work" | awk 'NR == 2 {print $4}')
if [ "$free_mib" -lt "$need_mib" ]; then
  log "$work has $free_mib MiB free; this run needs about $need_mib MiB"
  rm -rf "$work"
  exit 1
fi
# Server logs are kept (in target/bench-logs) for when a measurement fails.
trap 'stop_all_servers; mkdir -p "$root/target/bench-logs"; cp "$work"/*.log "$root/target/bench-logs/" 2>/dev/null; rm -rf "$work"' EXIT

log "building berth and berth-bench (release)"
(cd "$root" && cargo build --release --locked -p berth-server -p berth-bench -p berth-ffi)
berth=$root/target/release/berth
bench=$root/target/release/berth-bench

# The full run measures the Python and WASM hosts too: what they need (gunicorn, workerd, the
# wasm toolchain) comes with the test suite's tools. BERTH_SKIP_INSTALL=1 assumes them there.
if [ $smoke = 0 ] && [ "${BERTH_SKIP_INSTALL:-0}" != 1 ]; then
  log "installing the tools of berth's other hosts (scripts/install-test-deps.sh)"
  "$root/scripts/install-test-deps.sh"
fi
command -v docker-registry >/dev/null || { log "registry:2 is needed: apt-get install docker-registry"; exit 1; }
if [ ! -x "$tools/bin/distribution-v3" ] && [ $smoke = 0 ]; then
  log "go install distribution $DISTRIBUTION_VERSION"
  GOBIN=$work/gobin go install "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION"
  mkdir -p "$tools/bin" && mv "$work/gobin/registry" "$tools/bin/distribution-v3"
fi
if [ ! -x "$tools/bench-venv/bin/python" ]; then
  log "pip install matplotlib (into $tools/bench-venv)"
  python3 -m venv "$tools/bench-venv"
  "$tools/bench-venv/bin/pip" install -q "matplotlib==$MATPLOTLIB_VERSION"
fi

targets=()
# serve NAME PID_OF_SERVER ADDR [ceiling]: waits for it, then adds it to the targets.
serve() {
  local name=$1 pid=$2 addr=$3 extra=${4:-}
  SERVER_PIDS+=("$pid")
  wait_http "http://$addr/v2/" 30 || { log "$name did not start"; exit 1; }
  # gunicorn serves from a worker, a child of the process started.
  [ "$name" = python ] && pid=$(pgrep -P "$pid" | head -1)
  targets+=(--target "$name=$addr,pid=$pid${extra:+,$extra}")
}

port=$(free_port); "$berth" serve --addr "127.0.0.1:$port" --root "$work/berth" --log warn >"$work/berth.log" 2>&1 &
serve berth $! "127.0.0.1:$port"
traced=("berth=127.0.0.1:$port,pid=$!")
port=$(free_port); registry_config "$work/registry2" "127.0.0.1:$port" >"$work/registry2.yml"
docker-registry serve "$work/registry2.yml" >"$work/registry2.log" 2>&1 &
serve registry2 $! "127.0.0.1:$port"
traced+=("registry2=127.0.0.1:$port,pid=$!")
port=$(free_port); "$bench" ceiling --addr "127.0.0.1:$port" --blob-mib "$blob_mib" >"$work/ceiling.log" 2>&1 &
serve ceiling $! "127.0.0.1:$port" ceiling

if [ $smoke = 0 ]; then
  port=$(free_port); registry_config "$work/distribution3" "127.0.0.1:$port" >"$work/distribution3.yml"
  "$tools/bin/distribution-v3" serve "$work/distribution3.yml" >"$work/distribution3.log" 2>&1 &
  serve distribution3 $! "127.0.0.1:$port"
  # berth's other hosts.
  [ -x "$tools/py-venv/bin/gunicorn" ] || { log "gunicorn is missing: run scripts/install-test-deps.sh"; exit 1; }
  BERTH_FFI_LIB=$root/target/release/libberth_ffi.so "$tools/py-venv/bin/pip" install -q --no-build-isolation --force-reinstall --no-deps "$root/bindings/python"
  port=$(free_port)
  BERTH_ROOT=$work/python "$tools/py-venv/bin/gunicorn" -k gthread --threads 16 --timeout 600 \
    --log-level warning -b "127.0.0.1:$port" 'berth.wsgi:create_app()' >"$work/python.log" 2>&1 &
  serve python $! "127.0.0.1:$port"
fi

log "running: ${targets[*]}"
status=0
"$bench" run "${targets[@]}" --rounds "$rounds" --blob-mib "$blob_mib" --duration "$duration" \
  --images "$images" --limits-dir "$work" ${BENCH_ONLY:+--only "$BENCH_ONLY"} --out "$results" || status=$?

# The WASM host runs on its in-memory store, which keeps every blob pushed to it (two per
# round). Memory held that way slowed every page-cache writer measured after it on this VM:
# berth's 1 GiB push ran at 560-670 MB/s and 1.9-2.3 server CPU s/GB in the rounds after it,
# against 1,020-1,160 MB/s and 1.1-1.2 with it measured last (a process holding 6 GiB did the
# same: 1,120 -> 900 MB/s). So it is started only now, and measured in a pass of its own.
workerd=$tools/npm/node_modules/@cloudflare/workerd-linux-64/bin/workerd
if [ $smoke = 0 ]; then
  [ -x "$workerd" ] || { log "workerd is missing: run scripts/install-test-deps.sh"; exit 1; }
  "$root/wasm/build.sh" >"$work/wasm-build.log" 2>&1 || { log "the wasm build failed: $work/wasm-build.log"; cat "$work/wasm-build.log" >&2; exit 1; }
  port=$(free_port)
  "$workerd" serve "$root/examples/edge-worker/config.capnp" --socket-addr "http=127.0.0.1:$port" >"$work/workerd.log" 2>&1 &
  targets=()
  serve wasm-workerd $! "127.0.0.1:$port"
  # Every scenario but the machine's limits, measured once above.
  only=$(echo "${BENCH_ONLY:-push,push-chunked,pull,manifest-get,blob-head,small-images}" \
    | tr , '\n' | grep -vx limits | paste -sd, -)
  if [ -n "$only" ]; then
    log "running, after the others: ${targets[*]}"
    "$bench" run "${targets[@]}" --rounds "$rounds" --blob-mib "$blob_mib" --duration "$duration" \
      --images "$images" --only "$only" --out "$work/workerd.jsonl" || status=$?
    cat "$work/workerd.jsonl" >>"$results"
  fi
fi
# The syncs a small image costs berth and registry:2: each, traced by strace, takes a round of
# images it does not hold yet (apart from the timed rounds: strace slows every call down).
if ! command -v strace >/dev/null; then
  log "strace is not installed: the syncs per small image are not counted"
elif [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *,small-images,* ]]; then
  sync_images=$((images < 64 ? images : 64))
  for spec in "${traced[@]}"; do
    name=${spec%%=*} pid=${spec##*pid=}
    strace -f -c -e trace=fsync,fdatasync,syncfs,sync -o "$work/$name.syncs" -p "$pid" 2>/dev/null &
    tracer=$!
    sleep 1
    "$bench" run --target "$spec" --rounds 1 --first-round 1000 --images "$sync_images" \
      --only small-images 2>/dev/null || status=1
    kill -INT "$tracer"; wait "$tracer" || true
    # strace -c: "% time, seconds, usecs/call, calls, [errors,] syscall" per traced call,
    # then a "total" line; none where it could not attach (no ptrace permission).
    grep -q total "$work/$name.syncs" 2>/dev/null || { log "strace could not trace $name"; continue; }
    awk -v name="$name" -v images="$sync_images" '
      $NF ~ /^(fsync|fdatasync|syncfs|sync)$/ { calls[$NF] = $4 }
      END { printf "{\"scenario\":\"syncs-per-image\",\"target\":\"%s\",\"round\":0,\"images\":%d", name, images
            for (c in calls) printf ",\"%s\":%d", c, calls[c]
            print "}" }' "$work/$name.syncs" >>"$results"
  done
fi
"$tools/bench-venv/bin/python" "$here/report.py" "$results" "$out" \
  --blob-mib "$blob_mib" --rounds "$rounds" --duration "$duration" --images "$images"
log "report: $out/BENCHMARKS.md"
exit $status
