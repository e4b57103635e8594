#!/usr/bin/env bash
# What the pull-through cache costs, in one run on this machine: an image (BENCH_PROXY_LAYERS
# layers of BENCH_PROXY_MIB MiB each; default 4 x 64) in registry:2 as the upstream, pulled
#   - from the upstream directly,
#   - through `berth serve --upstream` cold (a new, empty cache each round), then warm,
#   - through registry:2 in proxy mode (`proxy.remoteurl`) cold, then warm,
#   - from a berth that holds the image itself (pushed there: a local pull),
# and, to show what the storage takes, the same bytes pushed to a new berth in one request,
# by one client fetching the manifest, then the blobs 3 at a time (as docker pulls), reading
# every byte. Each figure is a median over BENCH_ROUNDS (3) rounds; ratios compare medians of
# the same run: a cold pull through a cache against a direct one and against the push (a
# cold fill writes what it serves), a warm one against a local one. The upstream's access log counts what each cold pull asked of it.
#
#   bench/proxy.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${BENCH_ROUNDS:-3} layers=${BENCH_PROXY_LAYERS:-4} mib=${BENCH_PROXY_MIB:-64}
log() { printf '[bench-proxy] %s\n' "$*" >&2; }
source "$root/tests/lib/common.sh"
export PATH=${BERTH_TOOLS:-$root/.tools}/bin:$PATH

log "building berth (release)"
# The test command's package set: built alone, berth-server unifies other features and is built again.
(cd "$root" && cargo build --release --locked -p berth-server -p berth-bench -p berth-ffi)
berth=$root/target/release/berth
work=$(mktemp -d /tmp/berth-bench-proxy.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"

# registry NAME [YAML...]: registry:2 over a root of its own, with extra configuration (and
# its generated configuration edited by the sed script REGISTRY_EDIT).
registry() {
  local name=$1; shift
  local port; port=$(free_port)
  { registry_config "$work/$name" "127.0.0.1:$port" | sed "${REGISTRY_EDIT:-}"; printf '%s\n' "$@"; } >"$work/$name.yml"
  docker-registry serve "$work/$name.yml" >>"$work/$name.log" 2>&1 &
  SERVER_PIDS+=("$!")
  wait_http "http://127.0.0.1:$port/v2/" || { log "$name did not start"; exit 1; }
  ADDR=127.0.0.1:$port PID=$!
}
# serve NAME FLAGS...: berth serve over a root of its own.
serve() {
  local name=$1; shift
  local port; port=$(free_port)
  "$berth" serve --addr "127.0.0.1:$port" --root "$work/$name" --log warn "$@" >>"$work/$name.log" 2>&1 &
  SERVER_PIDS+=("$!")
  wait_http "http://127.0.0.1:$port/v2/" || { log "$name did not start"; exit 1; }
  ADDR=127.0.0.1:$port PID=$!
}

log "an image of $layers layers of $mib MiB"
python3 "$root/tests/lib/make_oci_layout.py" image v1 --layers "$layers" --size $((mib * 1024 * 1024)) >/dev/null
# The upstream's access log counts what the caches ask of it.
REGISTRY_EDIT='s/disabled: true/disabled: false/; s/level: warn/level: error/' registry upstream
upstream=$ADDR
skopeo copy -q --dest-tls-verify=false oci:image:v1 "docker://$upstream/bench/image:v1"
serve local
local_addr=$ADDR
skopeo copy -q --dest-tls-verify=false oci:image:v1 "docker://$local_addr/bench/image:v1"

# pull NAME URL REPOSITORY: one pull; prints a JSON line (seconds, bytes).
pull() {
  python3 - "$@" <<'EOF'
import concurrent.futures, http.client, json, sys, time, urllib.parse
name, url, repository = sys.argv[1:4]
parts = urllib.parse.urlsplit(url)
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
def get(path, sink):
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    connection.request("GET", path, headers={"Accept": ACCEPT})
    response = connection.getresponse()
    if response.status != 200:
        sys.exit(f"{name}: GET {path}: {response.status} {response.read()[:200]!r}")
    read = 0
    while chunk := response.read(1 << 20):
        read += len(chunk)
        sink(chunk)
    connection.close()
    return read
started = time.monotonic()
document = bytearray()
get(f"/v2/{repository}/manifests/v1", document.extend)
manifest = json.loads(document)
digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
with concurrent.futures.ThreadPoolExecutor(3) as pool:
    total = sum(pool.map(lambda digest: get(f"/v2/{repository}/blobs/{digest}", lambda _: None), digests))
print(json.dumps({"target": name, "seconds": time.monotonic() - started, "bytes": total}))
EOF
}
# push NAME: the image's bytes in one monolithic push to a new berth; prints a JSON line.
head -c $((layers * mib * 1024 * 1024)) /dev/urandom >payload.bin
payload_digest=sha256:$(sha256sum payload.bin | cut -d' ' -f1)
push() {
  serve "$1"
  local answer; answer=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -X POST \
    -H 'Content-Type: application/octet-stream' --data-binary @payload.bin \
    "http://$ADDR/v2/bench/payload/blobs/uploads/?digest=$payload_digest")
  [ "${answer% *}" = 201 ] || { log "push answered $answer"; exit 1; }
  echo "{\"target\": \"push\", \"seconds\": ${answer#* }, \"bytes\": $(stat -c %s payload.bin)}"
  stop_server "$PID"
  rm -rf "${work:?}/$1"
}
upstream_gets() { grep -c "\"GET /v2/bench/image/blobs/" "$work/upstream.log" || true; }

for round in $(seq "$rounds"); do
  log "round $round of $rounds"
  pull direct "http://$upstream" bench/image >>results.jsonl
  serve "cache-$round" --upstream "mirror=http://$upstream"
  cache=$ADDR cache_pid=$PID
  before=$(upstream_gets)
  pull berth-cold "http://$cache" mirror/bench/image >>results.jsonl
  echo "{\"target\": \"berth-cold-gets\", \"gets\": $(($(upstream_gets) - before))}" >>results.jsonl
  pull berth-warm "http://$cache" mirror/bench/image >>results.jsonl
  stop_server "$cache_pid"
  registry "proxy-$round" "proxy:" "  remoteurl: http://$upstream"
  proxy=$ADDR proxy_pid=$PID
  before=$(upstream_gets)
  pull registry2-cold "http://$proxy" bench/image >>results.jsonl
  echo "{\"target\": \"registry2-cold-gets\", \"gets\": $(($(upstream_gets) - before))}" >>results.jsonl
  pull registry2-warm "http://$proxy" bench/image >>results.jsonl
  stop_server "$proxy_pid"
  pull local "http://$local_addr" bench/image >>results.jsonl
  push "push-$round" >>results.jsonl
done

python3 - results.jsonl "$layers" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def rate(target):
    rates = [r["bytes"] / r["seconds"] / 2**20 for r in rows if r["target"] == target]
    return statistics.median(rates), min(rates), max(rates)
def gets(target):
    return statistics.median(r["gets"] for r in rows if r["target"] == target + "-gets")
print(f"pull of {int(sys.argv[2])} layers, MiB/s (median, min-max over rounds):")
for target in ["direct", "berth-cold", "berth-warm", "registry2-cold", "registry2-warm", "local", "push"]:
    median, low, high = rate(target)
    print(f"  {target:15} {median:8.0f}  ({low:.0f}-{high:.0f})")
direct, local = rate("direct")[0], rate("local")[0]
print(f"berth cold / direct:          {rate('berth-cold')[0] / direct:.2f}")
print(f"berth cold / push to berth:   {rate('berth-cold')[0] / rate('push')[0]:.2f}")
print(f"registry:2 proxy cold / direct: {rate('registry2-cold')[0] / direct:.2f}")
print(f"berth warm / local:           {rate('berth-warm')[0] / local:.2f}")
print(f"registry:2 proxy warm / local: {rate('registry2-warm')[0] / local:.2f}")
print(f"upstream blob GETs per cold pull ({int(sys.argv[2]) + 1} blobs): "
      f"berth {gets('berth-cold'):.0f}, registry:2 proxy {gets('registry2-cold'):.0f}")
EOF
