#!/usr/bin/env bash
# The `berth serve` binary itself: configuration by TOML file and environment, read-only mode,
# TLS with rustls (pushed to and pulled from by skopeo), graceful shutdown, clear start-up errors,
# and hostile clients (slow heads, endless lengths, pipelining, malformed framing).
#   tests/server.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
work=$(mktemp -d /tmp/berth-server.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

toml_and_environment() {
  local port; port=$(free_port)
  cat >berth.toml <<TOML
addr = "127.0.0.1:$port"
root = "$work/toml-root"
no-delete = true
manifest-limit = 1000
TOML
  BERTH_LOG=warn "$binary" serve --config berth.toml >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  local pid=$!
  SERVER_PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/v2/" || return 1
  local big; big=$(head -c 2000 /dev/zero | tr '\0' ' ')
  equal "$(status -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data "{$big}" "http://127.0.0.1:$port/v2/r/manifests/x")" 413 &&
  equal "$(status -X DELETE "http://127.0.0.1:$port/v2/r/manifests/x")" 405 &&
  [ -d "$work/toml-root/.berth" ] || return 1
  stop_server "$pid"
  # An environment variable overrides the file.
  BERTH_MANIFEST_LIMIT=5000 BERTH_LOG=warn "$binary" serve --config berth.toml >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  pid=$!
  SERVER_PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/v2/" || return 1
  equal "$(status -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data "{$big}" "http://127.0.0.1:$port/v2/r/manifests/x")" 400
}
check "TOML config file, overridden by environment variables" toml_and_environment

start_up_errors() {
  local out
  out=$("$binary" serve --config /nonexistent.toml 2>&1); [ $? -eq 2 ] && contains "$out" "cannot read config file" || return 1
  echo 'colour = "blue"' >bad.toml
  out=$("$binary" serve --config bad.toml 2>&1); [ $? -eq 2 ] && contains "$out" "unknown field" || return 1
  out=$("$binary" serve --tls-cert x.pem 2>&1); [ $? -ne 0 ] && contains "$out" "tls-key"
}
check "start-up errors say what is wrong" start_up_errors

read_only() {
  start_berth "$binary" "$work/ro-root" --read-only || return 1
  equal "$(status "http://$BERTH_ADDR/v2/")" 200 &&
  equal "$(status -X POST "http://$BERTH_ADDR/v2/r/blobs/uploads/")" 405 &&
  contains "$(curl -s -X POST "http://$BERTH_ADDR/v2/r/blobs/uploads/")" '"code":"UNSUPPORTED"'
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
check "--read-only refuses pushes with 405 UNSUPPORTED" read_only

tls() {
  openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null || return 1
  local port; port=$(free_port)
  "$binary" serve --addr "127.0.0.1:$port" --root "$work/tls-root" --tls-cert cert.pem --tls-key key.pem \
    --log warn >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  local pid=$!
  SERVER_PIDS+=("$pid")
  local deadline=$((SECONDS + 20))
  until curl -s --cacert cert.pem -o /dev/null "https://127.0.0.1:$port/v2/"; do
    [ $SECONDS -lt $deadline ] || return 1; sleep 0.1
  done
  equal "$(curl -s --cacert cert.pem -o /dev/null -w '%{http_code} %{http_version}' "https://127.0.0.1:$port/v2/")" "200 2" &&
  python3 "$here/lib/make_oci_layout.py" image v1 >/dev/null &&
  skopeo copy --dest-tls-verify=false oci:image:v1 "docker://127.0.0.1:$port/tls/image:v1" &&
  skopeo copy --src-tls-verify=false "docker://127.0.0.1:$port/tls/image:v1" oci:pulled:v1 &&
  equal "$(python3 -c 'import json; print(json.load(open("pulled/index.json"))["manifests"][0]["digest"])')" \
        "$(python3 -c 'import json; print(json.load(open("image/index.json"))["manifests"][0]["digest"])')"
  local ok=$?; stop_server "$pid"; return $ok
}
check "TLS (rustls, HTTP/2 by ALPN): skopeo pushes and pulls over HTTPS" tls

graceful_shutdown() {
  start_berth "$binary" "$work/graceful-root" || return 1
  head -c 6000000 /dev/urandom >blob.bin
  local digest=sha256:$(sha256sum blob.bin | cut -d' ' -f1)
  # A slow push is in flight when SIGTERM arrives: it completes, then the server exits 0.
  curl -s -o /dev/null -w '%{http_code}' --limit-rate 3M -X POST --data-binary @blob.bin \
    "http://$BERTH_ADDR/v2/r/blobs/uploads/?digest=$digest" >code.txt &
  local client=$!
  sleep 0.7
  kill -TERM "$BERTH_PID"
  wait "$client"
  wait "$BERTH_PID"; local exit_code=$?
  equal "$(cat code.txt)" 201 && equal "$exit_code" 0 &&
  [ -f "$work/graceful-root/docker/registry/v2/blobs/sha256/${digest:7:2}/${digest#sha256:}/data" ] &&
  ! curl -s -o /dev/null "http://$BERTH_ADDR/v2/"
}
check "SIGTERM lets an in-flight push finish, then exits 0" graceful_shutdown

purge_command() {
  start_berth "$binary" "$work/purge-root" || return 1
  local location
  location=$(curl -s -D - -o /dev/null -X POST "http://$BERTH_ADDR/v2/r/blobs/uploads/" | tr -d '\r' | sed -n 's/^location: //Ip')
  equal "$(status -X PATCH --data-binary 'abandoned bytes' "http://$BERTH_ADDR$location")" 202 || return 1
  stop_server "$BERTH_PID"
  contains "$("$binary" purge-uploads --root "$work/purge-root" --upload-expiry 1h)" "purged 0 upload sessions" &&
  sleep 2 &&
  contains "$("$binary" purge-uploads --root "$work/purge-root" --upload-expiry 1s)" "purged 1 upload sessions" &&
  equal "$(ls "$work/purge-root/.berth/parts" | wc -l)" 0 || return 1
  start_berth "$binary" "$work/purge-root" || return 1
  equal "$(status "http://$BERTH_ADDR$location")" 404
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
check "berth purge-uploads removes sessions older than the expiry, with their parts" purge_command

check_storage() {
  contains "$("$binary" check-storage --root "$work/check-root")" "every check passed" &&
  [ -z "$(ls "$work/check-root" | grep -v '^berth$')" ]
}
check "berth check-storage runs the storage conformance suite on a root and cleans up" check_storage

check_storage_failing() {
  # Storage that fails half its operations: the report names a failed check, and the exit
  # status says so.
  local out
  out=$(BERTH_FAULTS=1:500 "$binary" check-storage --root "$work/failing-root" 2>/dev/null) && return 1
  contains "$out" "FAIL "
}
check "berth check-storage reports the checks failing storage breaks, and exits non-zero" check_storage_failing

notices_logged() {
  # A root registry:2 wrote, with a folder no repository can be named: the catalog leaves it
  # out, and the log says which and why.
  mkdir -p "$work/notice-root/docker/registry/v2/repositories/"{good,Bad..Name}/_layers/sha256/00
  local name
  for name in good Bad..Name; do
    printf 'sha256:00' >"$work/notice-root/docker/registry/v2/repositories/$name/_layers/sha256/00/link"
  done
  local port; port=$(free_port)
  "$binary" serve --addr "127.0.0.1:$port" --root "$work/notice-root" --log warn >"$work/notice.log" 2>&1 &
  local pid=$!
  SERVER_PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/v2/" || return 1
  equal "$(curl -s "http://127.0.0.1:$port/v2/_catalog")" '{"repositories":["good"]}' &&
  contains "$(cat "$work/notice.log")" 'WARN' &&
  contains "$(cat "$work/notice.log")" 'the catalog left out the repository folder "Bad..Name"'
  local ok=$?; stop_server "$pid"; return $ok
}
check "a catalog entry that cannot be indexed is left out and logged as a warning" notices_logged

# Storage that accepts connections and never answers (an S3 endpoint gone silent): berth
# serve still starts, /healthz says it is alive, and /readyz answers 503 within its probe's
# bound (5 s), the reason in the log.
silent_storage() {
  local hole_port port pid
  hole_port=$(free_port) port=$(free_port)
  python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
while True: held.append(s.accept())' "$hole_port" &
  SERVER_PIDS+=($!)
  AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1 "$binary" serve \
    --addr "127.0.0.1:$port" --storage s3 --s3-bucket silent --s3-endpoint "http://127.0.0.1:$hole_port" \
    --s3-allow-http --s3-path-style --log warn >"$work/silent.log" 2>&1 &
  pid=$!
  SERVER_PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/healthz" || return 1
  equal "$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/healthz")" '{"status":"ok"} 200' &&
  equal "$(curl -s -m 20 -w ' %{http_code}' "http://127.0.0.1:$port/readyz")" \
    '{"status":"unavailable","checks":{"storage":"unreachable","upstreams":"none"}} 503' &&
  contains "$(cat "$work/silent.log")" 'readiness probe: the storage did not answer within 5 s'
  local ok=$?; stop_all_servers; return $ok
}
check "silent storage: alive at /healthz, 503 at /readyz within the probe's 5 s, the reason logged" silent_storage

# hostile CHECK: berth serve keeps answering everyone else (tests/lib/hostile_clients.py);
# the hosts get the same checks in tests/hosts.sh.
hostile() {
  start_berth "$binary" "$work/hostile-$1" || return 1
  python3 "$here/lib/hostile_clients.py" "http://$BERTH_ADDR" "$1"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
check "a length no byte count can be is refused at once" hostile endless-length
check "30 clients sending their heads slowly starve no one" hostile slow-heads
check "pipelined requests, a malformed one among them, are answered in order" hostile pipelined
check "21 requests only a raw socket sends get a 4xx or a close; nothing stored" hostile malformed

summary server
