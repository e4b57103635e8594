#!/usr/bin/env bash
# What garbage collection costs, in one run on this machine:
#  1. pushes (small images, and blobs) to `berth serve` without --gc, and with --gc collecting
#     every second (a grace period of an hour: it visits every candidate and deletes nothing
#     a push needs), beside registry:2; rounds alternate, and each figure is reported as a
#     ratio to berth without --gc;
#  2. a collection over many candidates: BENCH_GC_BLOBS loose blobs (default 20,000) and
#     BENCH_GC_IMAGES images (2,000) of which half are deleted, collected with no grace
#     period: seconds, and candidates visited per second.
#
#   bench/gc.sh        BENCH_ROUNDS (3), BENCH_DURATION (seconds per measurement, 10)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${BENCH_ROUNDS:-3} duration=${BENCH_DURATION:-10}
blobs=${BENCH_GC_BLOBS:-20000} images=${BENCH_GC_IMAGES:-2000}
log() { printf '[bench-gc] %s\n' "$*" >&2; }
source "$root/tests/lib/common.sh"

log "building berth and berth-bench (release)"
(cd "$root" && cargo build --release --locked -p berth-server -p berth-bench -p berth-ffi)
berth=$root/target/release/berth
work=$(mktemp -d /tmp/berth-bench-gc.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"

targets=()
start() { # NAME ARGS...: berth serve with ARGS over a root of its own
  local name=$1; shift
  local port; port=$(free_port)
  "$berth" serve --addr "127.0.0.1:$port" --root "$work/$name" --log warn "$@" >"$work/$name.log" 2>&1 &
  SERVER_PIDS+=("$!")
  wait_http "http://127.0.0.1:$port/v2/" || { log "$name did not start"; cat "$work/$name.log" >&2; exit 1; }
  ADDR=127.0.0.1:$port PID=$!
}
start off
targets+=(--target "off=$ADDR,pid=$PID")
start gc --gc --gc-grace 1h --gc-interval 1s
targets+=(--target "gc=$ADDR,pid=$PID")
port=$(free_port); registry_config "$work/registry2" "127.0.0.1:$port" >"$work/registry2.yml"
docker-registry serve "$work/registry2.yml" >"$work/registry2.log" 2>&1 &
SERVER_PIDS+=("$!")
wait_http "http://127.0.0.1:$port/v2/"
targets+=(--target "registry2=127.0.0.1:$port,pid=$!")

log "$rounds rounds of small-images and push, $duration s each"
status=0
"$root/target/release/berth-bench" run "${targets[@]}" --rounds "$rounds" --duration "$duration" \
  --only small-images,push --out "$work/gc.jsonl" >"$work/bench.log" 2>&1 || status=$?
grep '"error"' "$work/gc.jsonl" >&2 && status=1
BERTH_RATIO_LABEL="berth without --gc" python3 "$here/ratios.py" "$work/gc.jsonl" off gc registry2

# fill URL BLOBS IMAGES: loose blobs, and images of which half are deleted again.
fill() {
  python3 - "$@" <<'EOF'
import concurrent.futures, hashlib, http.client, json, os, sys, urllib.parse
url, blobs, images = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
parts = urllib.parse.urlsplit(url)
def request(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse(); answer = response.read(); connection.close()
    if response.status >= 300:
        print(f"{method} {path}: {response.status} {answer[:300]!r}", file=sys.stderr)
    return response.status
def sha(data): return "sha256:" + hashlib.sha256(data).hexdigest()
def blob(n):
    data = os.urandom(64)
    assert request("POST", f"/v2/many/blobs/uploads/?digest={sha(data)}", data) == 201
    return data
def image(n):
    layer, config = blob(0), blob(0)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": 64},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": 64}]}).encode()
    assert request("PUT", f"/v2/many/manifests/t{n}", manifest, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}) == 201
    if n % 2:
        assert request("DELETE", f"/v2/many/manifests/{sha(manifest)}") == 202
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(blob, range(blobs)))
    list(pool.map(image, range(images)))
EOF
}

# collection NAME BLOBS IMAGES STORAGE_FLAGS...: fills a registry over that storage, then
# times `berth gc` (no grace period) over it; over S3, counts its requests too.
collection() {
  local name=$1 blobs=$2 images=$3; shift 3
  log "$name: a collection over $blobs loose blobs and $images images, half of them deleted"
  local port; port=$(free_port)
  "$berth" serve --addr "127.0.0.1:$port" --log warn --gc --gc-grace 0 "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  SERVER_PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/v2/"
  fill "http://127.0.0.1:$port" "$blobs" "$images" ||
    { log "filling failed; the server said:"; tail -5 "$work/$name.log" >&2; exit 1; }
  stop_server "$pid"
  [ -z "${counter:-}" ] || curl -s -X POST "$counter/_counts/reset"
  local started; started=$(date +%s.%N)
  "$berth" gc "$@" --gc-grace 0 --log warn | tee "$work/$name.out"
  local elapsed; elapsed=$(echo "$(date +%s.%N) - $started" | bc)
  local visited; visited=$(awk '/^visited/ {print $2}' "$work/$name.out")
  echo "collection ($name): $visited candidates in ${elapsed} s ($(echo "$visited / $elapsed" | bc) a second)"
  if [ -n "${counter:-}" ]; then
    curl -s "$counter/_counts" | python3 -c '
import json, sys
counts, visited = json.load(sys.stdin), int(sys.argv[1])
total = sum(counts.values())
print(f"storage requests: {total} ({total / visited:.1f} a candidate): " +
      ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))' "$visited"
  fi
}

collection fs "$blobs" "$images" --root "$work/many"

# The same on S3 (moto, in memory; its listings slow with the bucket, so fewer objects:
# the time is moto's, the request counts are what an S3 bill counts), through a counter.
moto=${BERTH_TOOLS:-$root/.tools}/moto-venv/bin/moto_server
if [ -x "$moto" ]; then
  moto_port=$(free_port)
  "$moto" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
  SERVER_PIDS+=("$!")
  wait_http "http://127.0.0.1:$moto_port/" 30
  curl -s -o /dev/null -X PUT "http://127.0.0.1:$moto_port/bench-gc"
  counter_port=$(free_port)
  python3 "$here/s3_counter.py" "$counter_port" "http://127.0.0.1:$moto_port" &
  SERVER_PIDS+=("$!")
  counter=http://127.0.0.1:$counter_port
  wait_http "$counter/_counts"
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
  collection s3 "${BENCH_GC_S3_BLOBS:-1000}" "${BENCH_GC_S3_IMAGES:-100}" --storage s3 \
    --s3-bucket bench-gc --s3-endpoint "$counter" --s3-allow-http --s3-path-style
else
  log "no moto ($moto): scripts/install-test-deps.sh installs it; S3 skipped"
fi
exit $status
