#!/usr/bin/env bash
# berth embedded by other hosts, held to the bar of `berth serve`: the C host (examples/c,
# libmicrohttpd over the C ABI), the same with storage in C callbacks (memstore), the
# Python package's WSGI (gunicorn) and ASGI (uvicorn) hosts, and the WebAssembly build in
# Node (examples/node-server, files) and in workerd (examples/edge-worker, memory). Each
# runs the HTTP transcripts, the OCI conformance suite v1.1, the access matrix with logins on,
# skopeo and crane round trips, and a large chunked push and pull with its rates and peak RSS.
#   tests/hosts.sh c|c-memstore|wsgi|asgi|node|workerd
# BERTH_C_SERVER (default examples/c/berth-c-server), BERTH_PYTHON_VENV (default
# $BERTH_TOOLS/py-venv, with the berth package installed) and BERTH_WORKERD (default the
# npm workerd in $BERTH_TOOLS/npm) name what runs; the wasm hosts use wasm/pkg.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
host=$1
tools=${BERTH_TOOLS:-$here/../.tools}
export PATH=$tools/bin:$PATH
c_server=$(realpath "${BERTH_C_SERVER:-$here/../examples/c/berth-c-server}")
venv=${BERTH_PYTHON_VENV:-$tools/py-venv}
workerd=${BERTH_WORKERD:-$tools/npm/node_modules/@cloudflare/workerd-linux-64/bin/workerd}
work=$(mktemp -d /tmp/berth-hosts.XXXXXX)
export HOME=$work/home
mkdir -p "$HOME"
trap 'stop_all_servers; rm -rf "$work"' EXIT

# start_host ROOT [PART_SIZE]: starts the host on a free port; sets BERTH_ADDR, HOST_PID
# (the process that serves, for its RSS) and BERTH_PID (the one to stop).
start_host() {
  local root=$1 part_size=${2:-}
  local port; port=$(free_port)
  BERTH_ADDR=127.0.0.1:$port
  case $host in
    c | c-memstore)
      local storage=(--root "$root")
      [ "$host" = c-memstore ] && storage=(--memstore)
      "$c_server" --port "$port" "${storage[@]}" ${part_size:+--part-size "$part_size"} \
        >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
      ;;
    wsgi)
      BERTH_ROOT=$root BERTH_PART_SIZE=$part_size "$venv/bin/gunicorn" -k gthread --threads 16 \
        --timeout 600 --log-level warning -b "$BERTH_ADDR" 'berth.wsgi:create_app()' \
        >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
      ;;
    asgi)
      BERTH_ROOT=$root BERTH_PART_SIZE=$part_size "$venv/bin/uvicorn" --factory \
        berth.asgi:create_app --host 127.0.0.1 --port "$port" --log-level warning \
        --timeout-keep-alive 5 --limit-concurrency 1000 \
        >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
      ;;
    node)
      node "$here/../examples/node-server/server.js" --port "$port" --root "$root" \
        ${part_size:+--part-size "$part_size"} >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
      ;;
    workerd)
      # Storage is the worker's memory (a fresh process, a fresh registry).
      "$workerd" serve "$here/../examples/edge-worker/config.capnp" \
        --socket-addr "http=$BERTH_ADDR" >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
      ;;
    *) echo "unknown host $host" >&2; return 1 ;;
  esac
  BERTH_PID=$!
  SERVER_PIDS+=("$BERTH_PID")
  wait_http "http://$BERTH_ADDR/v2/" 30 || return 1
  HOST_PID=$BERTH_PID
  # gunicorn serves from a worker process, a child of the one started.
  if [ "$host" = wsgi ]; then HOST_PID=$(pgrep -P "$BERTH_PID" | head -1); fi
}

replay() {
  local transcript=$1 name; name=$(basename "$transcript" .json)
  start_host "$work/transcript-$name" 4 || return 1
  python3 "$here/lib/replay_transcript.py" "http://$BERTH_ADDR" "$transcript"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}

conformance() {
  start_host "$work/conformance" || return 1
  conformance_v1 "$BERTH_ADDR" 1 "$work/v1.out"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}

conformance_redesigned() {
  start_host "$work/conformance-next" || return 1
  conformance_next "$BERTH_ADDR" "$work/next.out"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}

layout() { (cd "$work" && python3 "$here/lib/make_oci_layout.py" "$@"); }
digest_of_layout() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["digest"])' "$1"; }

skopeo_round_trip() {
  local image=$1 ref=$BERTH_ADDR/skopeo/$1:v1
  skopeo copy --all --dest-tls-verify=false "oci:$work/$image:v1" "docker://$ref" &&
  skopeo copy --all --src-tls-verify=false "docker://$ref" "oci:$work/skopeo-$image:v1" &&
  equal "$(digest_of_layout "$work/skopeo-$image")" "$(digest_of_layout "$work/$image")"
}

crane_round_trip() {
  local image=$1 ref=$BERTH_ADDR/crane/$1:v1
  crane push --insecure "$work/$image" "$ref" &&
  equal "$(crane digest --insecure "$ref")" "$(digest_of_layout "$work/$image")" &&
  crane validate --insecure --remote "$ref" &&
  crane pull --insecure --format oci "$ref" "$work/crane-$image"
}

# big_push MIB LIMIT_MIB: a MIB MiB blob pushed in 16 MiB chunks and pulled back, with the
# host's peak RSS under LIMIT_MIB.
big_push() {
  local mib=$1 limit=$2
  head -c $((mib * 1024 * 1024)) /dev/urandom >"$work/big.bin"
  start_host "$work/big" || return 1
  python3 "$here/lib/push_chunked.py" "http://$BERTH_ADDR" hosts/big "$work/big.bin" $((16 * 1024 * 1024)) 2>"$work/rates" || { cat "$work/rates"; return 1; }
  local peak; peak=$(awk '/VmHWM/ {print $2}' "/proc/$HOST_PID/status")
  stop_server "$BERTH_PID"; rm -f "$work/big.bin"
  echo "the $host host, $mib MiB in 16 MiB chunks: $(cat "$work/rates"); peak RSS $((peak / 1024)) MiB (limit $limit MiB)"
  [ "$peak" -lt $((limit * 1024)) ]
}

log "the $host host"
layout image v1 --layers 3 --size 300000 >/dev/null
layout multi v1 --platforms linux/amd64,linux/arm64 >/dev/null
case $host in
  c | wsgi | asgi | node | workerd)
    for transcript in "$here"/transcripts/*.json; do
      check "$host host: HTTP transcript $(basename "$transcript" .json)" replay "$transcript"
    done
    ;;
esac
# hostile CHECK: the host keeps answering everyone else (tests/lib/hostile_clients.py).
hostile() {
  start_host "$work/hostile-$1" || return 1
  python3 "$here/lib/hostile_clients.py" "http://$BERTH_ADDR" "$1"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
check "$host host: a length no byte count can be is refused at once" hostile endless-length
check "$host host: pipelined requests, a malformed one among them, are answered in order" hostile pipelined
check "$host host: 21 requests only a raw socket sends get a 4xx or a close; nothing stored" hostile malformed
case $host in
  # gunicorn's gthread workers read request heads on their threads, so slow heads hold them
  # all: served from gunicorn, berth needs a proxy that buffers heads in front (README).
  wsgi) echo "  (the wsgi host is not held to slow heads: put a buffering proxy in front of gunicorn)" ;;
  *) check "$host host: 30 clients sending their heads slowly starve no one" hostile slow-heads ;;
esac
# Probes as a load balancer sends them: no credentials, though logins are on; the registry
# itself refuses anonymous callers.
probes() {
  export BERTH_AUTH
  BERTH_AUTH=$(python3 -c 'import json, sys; print(json.dumps({"htpasswd": sys.argv[1]}))' \
    "$(htpasswd -nbB alice s3cret)")
  start_host "$work/probes"; local started=$?
  unset BERTH_AUTH
  [ $started -eq 0 ] || return 1
  local addr=$BERTH_ADDR
  equal "$(curl -s -w ' %{http_code}' "http://$addr/healthz")" '{"status":"ok"} 200' &&
  equal "$(curl -s -w ' %{http_code}' "http://$addr/readyz")" \
    '{"status":"ready","checks":{"storage":"ok","upstreams":"none"}} 200' &&
  equal "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/debug/health")" 200 &&
  equal "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/")" 401
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
check "$host host: /healthz and /readyz answer probes without credentials (logins on)" probes
check "$host host: conformance v1.1: 75 passed, 0 failed" conformance
case $host in
  node | workerd) check "$host host: conformance redesigned suite: 0 failures" conformance_redesigned ;;
esac
# logins_on SCRIPT: a host started with the login settings tests/lib/SCRIPT.py writes
# (BERTH_AUTH), checked by that script over HTTP.
logins_on() {
  local script=$here/lib/$1.py dir=$work/$1
  "$venv/bin/python" "$script" setup "$dir" || return 1
  export BERTH_AUTH; BERTH_AUTH=$(cat "$dir/settings.json")
  start_host "$dir-root"; local started=$?
  unset BERTH_AUTH
  [ $started -eq 0 ] || return 1
  "$venv/bin/python" "$script" run "http://$BERTH_ADDR" "$dir"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
# The access matrix (htpasswd, rules, a token key, another issuer's keys): every principal x
# operation x repository answers as the rules say.
check "$host host: logins on: the access matrix, 0 unauthorized successes, 0 wrongful refusals" logins_on auth_matrix
# An issuer's key set at a URL, fetched through the host's HTTP client when a token names a
# new key (kept when a fetch fails), and failed logins held back.
check "$host host: keys at a URL: fetched when a token names a new key, kept when a fetch fails; failed logins held back" logins_on key_urls
# Garbage collection with no grace period (tests/lib/gc_host.py): the host's own collector
# (BERTH_GC_INTERVAL), or in workerd the worker's bounded step asked for at /_berth/gc.
gc_collects() {
  export BERTH_GC=1 BERTH_GC_GRACE=0 BERTH_GC_INTERVAL=1 BERTH_GC_STEP=2 BERTH_GC_UNTAGGED=1 \
    BERTH_GC_TOKEN=gc-$RANDOM$RANDOM BERTH_RETENTION='[{"repositories": "gc/kept", "keep-last": 1}]'
  start_host "$work/gc-root"; local started=$?
  local token=$BERTH_GC_TOKEN
  unset BERTH_GC BERTH_GC_GRACE BERTH_GC_INTERVAL BERTH_GC_STEP BERTH_GC_UNTAGGED BERTH_GC_TOKEN \
    BERTH_RETENTION
  [ $started -eq 0 ] || return 1
  if [ "$host" = workerd ]; then
    python3 "$here/lib/gc_host.py" "http://$BERTH_ADDR" "$token"
  else
    python3 "$here/lib/gc_host.py" "http://$BERTH_ADDR"
  fi
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
check "$host host: garbage collection: a deleted image's layer, a loose blob, an untagged manifest and a tag past its retention rule go, what is shared stays" gc_collects
# Quotas (tests/lib/quota_host.py): BERTH_QUOTAS read by the host, refusals and usage.
quotas_hold() {
  export BERTH_QUOTAS='[{"repositories": "quota/*", "limit": 4096}, {"namespace": "quota", "limit": 6144}]'
  start_host "$work/quota-root"; local started=$?
  unset BERTH_QUOTAS
  [ $started -eq 0 ] || return 1
  python3 "$here/lib/quota_host.py" "http://$BERTH_ADDR"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
check "$host host: quotas: pushes past a repository's or a namespace's limit refused with the limit and the usage; usage reported" quotas_hold
# The pull-through cache (BERTH_UPSTREAMS) over the host's own HTTP client, from the scripted
# upstream (tests/lib/proxy_upstream.py): a cold pull costs one upstream GET per blob and of
# the tag, a warm one none; corrupt upstream bytes are never published.
# stub_upstream DIR LOG IMAGE...: the scripted upstream serving a small image layout DIR/IMAGE
# for each IMAGE (its tag v1), logging to LOG; sets port and upstream (its pid).
stub_upstream() {
  local dir=$1 log=$2 image; shift 2
  for image in "$@"; do
    python3 "$here/lib/make_oci_layout.py" "$dir/${image%:*}" v1 --layers "${image#*:}" \
      --size "${STUB_SIZE:-100000}" >/dev/null || return 1
  done
  port=$(free_port)
  python3 "$here/lib/proxy_upstream.py" "$port" "$dir" "$log" &
  upstream=$!
  wait_http "http://127.0.0.1:$port/v2/" || { kill $upstream; return 1; }
}
proxy_fills() {
  local port upstream
  STUB_SIZE=3000000 stub_upstream "$work/upstream" "$work/upstream.log" app:2 || return 1
  python3 "$here/lib/make_oci_layout.py" "$work/upstream/bad" v1 --layers 1 --size 100000 >/dev/null
  export BERTH_UPSTREAMS="[{\"prefix\": \"cache\", \"urls\": [\"http://127.0.0.1:$port\"]}]"
  start_host "$work/proxy-root"; local started=$?
  unset BERTH_UPSTREAMS
  [ $started -eq 0 ] || { kill $upstream; return 1; }
  local gets ok=0
  # 4 GETs: the tag, the config and the two layers.
  crane pull --insecure --format oci "$BERTH_ADDR/cache/app:v1" "$work/cold" &&
  gets=$(grep -c '"method": "GET", "path": "/v2/app/' "$work/upstream.log") &&
  equal "$gets" 4 &&
  crane pull --insecure --format oci "$BERTH_ADDR/cache/app:v1" "$work/warm" &&
  diff -r "$work/cold" "$work/warm" &&
  equal "$(grep -c '"method": "GET", "path": "/v2/app/' "$work/upstream.log")" 4 &&
  curl -s -o /dev/null "http://127.0.0.1:$port/_mode/corrupt" &&
  ! crane pull --insecure --format oci "$BERTH_ADDR/cache/bad:v1" "$work/bad" 2>/dev/null &&
  curl -s -o /dev/null "http://127.0.0.1:$port/_mode/normal" &&
  crane pull --insecure --format oci "$BERTH_ADDR/cache/bad:v1" "$work/good" || ok=1
  kill $upstream; stop_server "$BERTH_PID"; return $ok
}
check "$host host: pull-through cache: a cold pull costs 1 upstream GET per blob and of the tag, a warm one none; corrupt upstream bytes are refused, then fetched right" proxy_fills
# Eviction (evict-after 4 s) by the host's collector, or in workerd by the worker's steps: an
# image pulled every second stays and costs no upstream request; one left alone loses its tag
# and is fetched again when asked for.
proxy_evicts() {
  local port upstream
  stub_upstream "$work/evict-upstream" "$work/evict.log" hot:1 cold:1 || return 1
  export BERTH_UPSTREAMS="[{\"prefix\": \"cache\", \"urls\": [\"http://127.0.0.1:$port\"], \"evict-after\": 4}]" \
    BERTH_GC=1 BERTH_GC_GRACE=0 BERTH_GC_INTERVAL=1 BERTH_GC_UNTAGGED=1 BERTH_GC_TOKEN=gc-$RANDOM$RANDOM
  start_host "$work/evict-root"; local started=$?
  local token=$BERTH_GC_TOKEN
  unset BERTH_UPSTREAMS BERTH_GC BERTH_GC_GRACE BERTH_GC_INTERVAL BERTH_GC_UNTAGGED BERTH_GC_TOKEN
  [ $started -eq 0 ] || { kill $upstream; return 1; }
  local ok=0 round
  gets() { grep -c "\"method\": \"GET\", \"path\": \"/v2/$1" "$work/evict.log"; }
  crane pull --insecure --format oci "$BERTH_ADDR/cache/hot:v1" "$work/evict-hot" &&
  crane pull --insecure --format oci "$BERTH_ADDR/cache/cold:v1" "$work/evict-cold" || ok=1
  for round in $(seq 10); do
    [ $ok -eq 0 ] || break
    sleep 1
    curl -sf -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://$BERTH_ADDR/v2/cache/hot/manifests/v1" || ok=1
    if [ "$host" = workerd ]; then
      curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" "http://$BERTH_ADDR/_berth/gc" || ok=1
    fi
  done
  [ $ok -eq 0 ] &&
  ! curl -s "http://$BERTH_ADDR/v2/cache/cold/tags/list" | grep -q '"v1"' &&
  curl -s "http://$BERTH_ADDR/v2/cache/hot/tags/list" | grep -q '"v1"' &&
  crane pull --insecure --format oci "$BERTH_ADDR/cache/hot:v1" "$work/evict-hot-again" &&
  equal "$(gets hot/)" 3 &&
  equal "$(gets cold/manifests/v1)" 1 &&
  crane pull --insecure --format oci "$BERTH_ADDR/cache/cold:v1" "$work/evict-cold-again" &&
  equal "$(gets cold/manifests/v1)" 2 || ok=1
  kill $upstream; stop_server "$BERTH_PID"; return $ok
}
check "$host host: pull-through cache eviction by the collector: an image pulled every second stays warm, one not pulled for evict-after goes and is fetched again" proxy_evicts
start_host "$work/clients"
check "$host host: skopeo pushes and pulls an image" skopeo_round_trip image
check "$host host: skopeo pushes and pulls a multi-arch index (--all)" skopeo_round_trip multi
check "$host host: crane pushes, validates and pulls an image" crane_round_trip image
check "$host host: crane pushes and validates a multi-arch index" crane_round_trip multi
stop_server "$BERTH_PID"
case $host in
  c) check "$host host: a 2 GiB blob passes in bounded memory" big_push 2048 64 ;;
  wsgi | asgi) check "$host host: a 1 GiB blob passes in bounded memory" big_push 1024 96 ;;
  node) check "$host host: a 1 GiB blob passes in bounded memory" big_push 1024 160 ;;
  # The worker's store is its own memory, so its RSS holds the blob (twice while the parts
  # are joined): the limit allows that and no more.
  workerd) check "$host host: a 256 MiB blob pushed and pulled (rates reported)" big_push 256 1024 ;;
esac
summary "hosts-$host"
