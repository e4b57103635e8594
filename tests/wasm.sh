#!/usr/bin/env bash
# The WebAssembly build (wasm/pkg, built by wasm/build.sh): the .wasm within its size
# budget; wasm-bindgen-test under Node (the adapter, and berth's storage contract against
# the JavaScript MemoryBucket); `node --test` for the npm package as Node users get it
# (NodeFsBucket's contract, streaming, sessions continued across Registry instances); and
# the browser build in headless Chromium through chromedriver (BrowserBucket's contract, an
# image pushed and pulled by direct calls).
#   tests/wasm.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
root=$(cd "$here/.." && pwd)
tools=${BERTH_TOOLS:-$root/.tools}
pkg=$root/wasm/pkg
# 536 KB before logins; the token service and token checks in Rust (ES256 and Ed25519 with
# PEM keys: p256, ed25519-dalek) added 344 KB (340 KB gzipped in all). Key sets at URLs and
# the failed-login delay added 15 KB, online garbage collection 70 KB; panics that abort at
# once with no locations (wasm/cargo.sh) took 59 KB out; binaryen's wasm-opt 69 KB: 911 KB,
# 368 KB gzipped. Quotas (usage listings, counting, the admin's usage report) added 51 KB: 962 KB,
# 386 KB gzipped, in December 2026. The pull-through cache (upstream rules, fills streamed
# into upload sessions, the fetch client) added 64 KB: 1,036 KB, 406 KB gzipped. Workers take
# 3 MB gzipped on the free plan.
budget=1100000

size_budget() {
  local size gzipped
  size=$(stat -c %s "$pkg/berth_wasm_bg.wasm") || return 1
  gzipped=$(gzip -9 -c "$pkg/berth_wasm_bg.wasm" | wc -c)
  echo "berth_wasm_bg.wasm: $size bytes, $gzipped bytes gzipped (budget $budget bytes)"
  [ "$size" -le "$budget" ]
}
check "the release .wasm is at most 1,100 KB" size_budget

# add_counts PASSED FAILED NAME: adds a runner's own counts to the suite's.
add_counts() {
  TESTS_PASSED=$((TESTS_PASSED + ${1:-0})); TESTS_FAILED=$((TESTS_FAILED + ${2:-0}))
  if [ -z "$1" ] || [ "${2:-0}" -ne 0 ]; then
    FAILED_NAMES+=("$3"); [ -n "$1" ] || TESTS_FAILED=$((TESTS_FAILED + 1))
  fi
}

log "wasm-bindgen-test under Node"
out=$(mktemp)
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$tools/bin/wasm-bindgen-test-runner \
  "$root/wasm/cargo.sh" test -p berth-wasm --tests 2>&1 | grep -vE '^\s+Compiling' | tee "$out"
line=$(grep -E '^test result:' "$out" | tail -1)
add_counts "$(grep -E '^test result:' "$out" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {if (NR) print s}')" \
  "$(grep -E '^test result:' "$out" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')" "wasm-bindgen-test"
[ -n "$line" ] || echo "wasm-bindgen-test did not run"

log "node --test (the npm package)"
(cd "$root" && node --test wasm/test/package.test.mjs) >"$out" 2>&1
tail -n 12 "$out"
add_counts "$(sed -nE 's/^# pass ([0-9]+)/\1/p' "$out")" "$(sed -nE 's/^# fail ([0-9]+)/\1/p' "$out")" "node --test"
[ -n "${TEST_LOG:-}" ] && cat "$out" >>"$TEST_LOG"

browser() {
  local port; port=$(free_port)
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$root" >/dev/null 2>&1 &
  local server=$!
  wait_http "http://127.0.0.1:$port/" || { kill "$server"; return 1; }
  python3 "$here/lib/browser_check.py" "http://127.0.0.1:$port/wasm/test/browser.html" 180
  local ok=$?
  kill "$server"; wait "$server" 2>/dev/null
  return $ok
}
check "headless Chromium: BrowserBucket meets the contract; an image is pushed and pulled" browser
rm -f "$out"
summary wasm
