#!/usr/bin/env bash
# Both conformance suites against `berth serve` whose storage fails on purpose: BERTH_FAULTS
# makes 3% of storage operations fail before they run or run slowly, and a proxy that retries
# answers of 5xx (as clients do) stands in front. Every answer must be a success or a clear
# error, and every request safe to retry: the suites must pass with 0 failures, with faults
# actually injected. (Failures after an operation ran, its answer lost, need a client's own
# recovery, which a blind proxy cannot do: core/tests/transcripts.rs covers those.)
#   tests/faults.sh BERTH_BINARY      (BERTH_FAULT_RATE: per mille of operations, default 30)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
work=$(mktemp -d /tmp/berth-faults.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT
rate=${BERTH_FAULT_RATE:-30}
percent="$((rate / 10)).$((rate % 10))%"

# through_faults NAME SUITE: runs SUITE (conformance_v1 or conformance_next) through the proxy
# in front of a registry with injected faults (seed from NAME's length, so each run differs).
through_faults() {
  local name=$1 suite=$2
  BERTH_FAULTS="${#name}:$rate:bs" start_berth "$binary" "$work/$name" || return 1
  local registry=$BERTH_ADDR port; port=$(free_port)
  python3 "$here/lib/retry_proxy.py" "$port" "$registry" >"$work/$name.proxy" 2>>"${TEST_LOG:-/dev/null}" &
  local proxy=$!
  SERVER_PIDS+=("$proxy")
  wait_http "http://127.0.0.1:$port/v2/" || return 1
  if [ "$suite" = conformance_v1 ]; then
    conformance_v1 "127.0.0.1:$port" 1 "$work/$name.out"
  else
    conformance_next "127.0.0.1:$port" "$work/$name.out"
  fi
  local ok=$?
  kill "$proxy"; wait "$proxy" 2>/dev/null
  stop_server "$BERTH_PID"
  echo "$name: $(cat "$work/$name.proxy")"
  [ $ok -eq 0 ] || { tail -n 40 "$work/$name.out"; return 1; }
  # The faults were there: some requests failed and were retried.
  grep -qE 'retry proxy: [0-9]+ requests, [1-9][0-9]* retried' "$work/$name.proxy"
}

log "conformance suites over failing storage, against $binary"
check "conformance v1.1 with $percent of storage operations failing: 75 passed, 0 failed" through_faults v1-faults conformance_v1
check "conformance redesigned suite with $percent of storage operations failing: 0 failures" through_faults next-faults conformance_next
for name in v1-faults next-faults; do
  [ -f "$work/$name.proxy" ] && printf '  %s: %s\n' "$name" "$(cat "$work/$name.proxy")"
done
summary faults
