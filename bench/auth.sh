#!/usr/bin/env bash
# What logins cost on the small-request hot path: manifest GET and blob HEAD on `berth serve`
# without logins, with token logins (each request carries a Bearer token berth issued:
# one Ed25519 signature check), and with Basic passwords (bcrypt once a minute, a digest
# lookup otherwise), side by side in one run (rounds alternate A B C A B C), beside
# registry:2 without logins. Prints each scenario's median per target and its ratio to
# berth without logins (the issue's target: tokens within 15%).
#
#   bench/auth.sh          BENCH_ROUNDS (5) and BENCH_DURATION (seconds per measurement, 10)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${BENCH_ROUNDS:-5} duration=${BENCH_DURATION:-10}
log() { printf '[bench-auth] %s\n' "$*" >&2; }
source "$root/tests/lib/common.sh"

log "building berth and berth-bench (release)"
(cd "$root" && cargo build --release --locked -p berth-server -p berth-bench -p berth-ffi)
berth=$root/target/release/berth
work=$(mktemp -d /tmp/berth-bench-auth.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"
htpasswd -Bbc users bench s3cret 2>/dev/null
openssl genpkey -algorithm ed25519 -out token.pem 2>/dev/null

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
start tokens --htpasswd users --token-key token.pem --token-lifetime 2h
token=$(curl -s -u bench:s3cret "http://$ADDR/token?service=berth&scope=repository:bench/read:pull,push" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
targets+=(--target "tokens=$ADDR,pid=$PID,authorization=Bearer $token")
start basic --htpasswd users
targets+=(--target "basic=$ADDR,pid=$PID,authorization=Basic $(printf bench:s3cret | base64)")
port=$(free_port); registry_config "$work/registry2" "127.0.0.1:$port" >"$work/registry2.yml"
docker-registry serve "$work/registry2.yml" >"$work/registry2.log" 2>&1 &
SERVER_PIDS+=("$!")
wait_http "http://127.0.0.1:$port/v2/"
targets+=(--target "registry2=127.0.0.1:$port,pid=$!")

log "$rounds rounds of manifest-get and blob-head, $duration s each"
status=0
"$root/target/release/berth-bench" run "${targets[@]}" --rounds "$rounds" --duration "$duration" \
  --only manifest-get,blob-head --out "$work/auth.jsonl" >"$work/bench.log" 2>&1 || status=$?
grep '"error"' "$work/auth.jsonl" >&2 && status=1
BERTH_RATIO_LABEL="berth without logins" python3 "$here/ratios.py" "$work/auth.jsonl" off tokens basic registry2
exit $status
