#!/usr/bin/env bash
# The official OCI distribution-spec conformance suites against `berth serve`:
# the Ginkgo suite of the v1.1 line in both cross-mount modes, and the redesigned suite.
#   tests/conformance.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
tools=${BERTH_TOOLS:-$here/../.tools}/bin
work=$(mktemp -d /tmp/berth-conformance.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT

# v1 MODE FLAGS...: one run of the Ginkgo suite; MODE is OCI_AUTOMATIC_CROSSMOUNT.
v1() {
  local mode=$1; shift
  start_berth "$binary" "$work/v1-$mode" "$@" || return 1
  conformance_v1 "$BERTH_ADDR" "$mode" "$work/v1-$mode.out"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}

next() {
  start_berth "$binary" "$work/next" || return 1
  conformance_next "$BERTH_ADDR" "$work/next.out"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}

log "conformance suites against $binary"
check "conformance v1.1 (automatic cross-mount on): 75 passed, 0 failed" v1 1
check "conformance v1.1 (automatic cross-mount off): 75 passed, 0 failed" v1 0 --automatic-mount false
check "conformance redesigned suite: 0 failures" next
for mode in 1 0; do
  printf '  v1.1, OCI_AUTOMATIC_CROSSMOUNT=%s: %s\n' "$mode" \
    "$(strip_colour <"$work/v1-$mode.out" | grep -E 'Passed \| [0-9]+ Failed' | tail -1)"
done
grep -E '^\s+(Pass|Fail|Skip)\.+:' "$work/next.out" | sed 's/^/  /'
summary conformance
