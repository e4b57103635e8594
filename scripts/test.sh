#!/usr/bin/env bash
# Runs every test of berth on a fresh Debian machine, installing what the tests need:
# lints, unit/property/transcript tests, then one release build of `berth` and of the C ABI
# library that the conformance suites, the real clients, the registry:2 compatibility
# checks, the C tests and the C and Python hosts all run against; then one build of the
# WebAssembly package that its tests and the Node and workerd hosts run against; a short run
# of each fuzz target.
#
#   scripts/test.sh            everything
#   BERTH_SKIP_INSTALL=1 ...   assume the tools are already installed
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export BERTH_TOOLS=${BERTH_TOOLS:-$root/.tools}
logs=$root/target/test-logs
mkdir -p "$logs"
started=$SECONDS
failures=()
passed_total=0
failed_total=0

step() { printf '\n\033[1m### %s\033[0m (at %d s)\n' "$*" "$((SECONDS - started))"; }
# count SUITE_OUTPUT: adds a suite's closing "N passed, N failed" to the totals.
count() {
  local line; line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
  local p f
  p=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line"); f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
  passed_total=$((passed_total + ${p:-0})); failed_total=$((failed_total + ${f:-0}))
}

# A CI machine builds once: incremental state would only take disk (1.5 GB of it).
[ -z "${CI:-}" ] || export CARGO_INCREMENTAL=0

if [ "${BERTH_SKIP_INSTALL:-0}" != 1 ]; then
  step "install test dependencies"
  command -v cargo >/dev/null || {
    echo "Rust is required: install it with rustup (https://rustup.rs), then rerun." >&2; exit 1; }
  scripts/install-test-deps.sh || { echo "installing test dependencies failed" >&2; exit 1; }
fi

step "format, lints, docs"
cargo fmt --all --check || failures+=("cargo fmt")
cargo clippy --workspace --all-targets --features berth/object-store,berth/tokens --locked -- -D warnings || failures+=("cargo clippy")
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --features berth/object-store,berth/tokens --locked || failures+=("cargo doc")
# The fuzz targets are a workspace of their own.
cargo fmt --manifest-path fuzz/Cargo.toml --check || failures+=("cargo fmt (fuzz)")
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings || failures+=("cargo clippy (fuzz)")

step "unit, property, transcript and concurrency tests"
cargo test --workspace --features berth/object-store,berth/tokens --locked 2>&1 | tee "$logs/cargo-test.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || failures+=("cargo test")
sum_field() { grep -E '^test result:' "$logs/cargo-test.out" | sed -E "s/.* ([0-9]+) $1.*/\\1/" | awk '{s+=$1} END {print s+0}'; }
cargo_passed=$(sum_field passed)
cargo_failed=$(sum_field failed)
passed_total=$((passed_total + ${cargo_passed:-0})); failed_total=$((failed_total + ${cargo_failed:-0}))

step "build berth and its C ABI library once (release)"
# suite NAME COMMAND...: runs one shell suite, adding its counts to the totals.
suite() {
  local name=$1; shift
  step "$name"
  TEST_LOG=$logs/$name.log "$@" 2>&1 | tee "$logs/$name.out"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failures+=("$name")
  count "$logs/$name.out"
}
# The S3 suites spend most of their time waiting on moto (one Python process): they run in
# the background beside the suites below, on the second core, and report when those are done.
background=()
background_suites() {
  local name
  for name in "$@"; do
    TEST_LOG=$logs/$name.log "tests/$name.sh" "$binary" >"$logs/$name.out" 2>&1
    echo $? >"$logs/$name.status"
  done
}
report_background() {
  local name
  wait
  for name in "${background[@]}"; do
    step "$name (ran in the background)"
    cat "$logs/$name.out"
    [ "$(cat "$logs/$name.status" 2>/dev/null)" = 0 ] || failures+=("$name")
    count "$logs/$name.out"
  done
}
if cargo build --release --locked -p berth-server -p berth-ffi -p berth-bench; then
  binary=$root/target/release/berth
  background=(s3)
  background_suites "${background[@]}" &
  for name in transcripts conformance faults clients auth tokens registry2 durability scaleout linearizable gc quota proxy memory server; do
    suite "$name" "tests/$name.sh" "$binary"
  done
  # The C ABI, the C host and the Python package, over the library built above.
  suite ffi tests/ffi.sh "$root/target/release"
  suite python tests/python.sh "$root/target/release"
  for host in c c-memstore wsgi asgi; do
    suite "hosts-$host" tests/hosts.sh "$host"
  done
else
  failures+=("release build")
fi

step "build the WebAssembly package once (wasm/pkg)"
if wasm/build.sh; then
  suite wasm tests/wasm.sh
  for host in node workerd; do
    suite "hosts-$host" tests/hosts.sh "$host"
  done
else
  failures+=("wasm build")
fi

report_background
# Alone: it needs room for two copies of a 5 GiB blob on the disk.
[ -z "${binary:-}" ] || suite big-blob tests/big-blob.sh "$binary"

# The fuzz targets, briefly (20 s each, from the transcripts' seeds); longer runs by hand.
suite fuzz fuzz/run.sh 20

# The benchmarks are not tests: these smoke runs (seconds, tiny sizes) keep them working.
step "benchmark smoke runs (bench/run.sh --smoke; bench/proxy.sh, one round of 4 MiB layers)"
if bench/run.sh --smoke >"$logs/bench-smoke.out" 2>&1 &&
  BENCH_ROUNDS=1 BENCH_PROXY_MIB=4 bench/proxy.sh >>"$logs/bench-smoke.out" 2>&1; then
  tail -n 3 "$logs/bench-smoke.out"
  passed_total=$((passed_total + 1))
else
  tail -n 30 "$logs/bench-smoke.out"
  failures+=("bench smoke"); failed_total=$((failed_total + 1))
fi

step "summary ($((SECONDS - started)) s; logs in target/test-logs)"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failures[@]}"
  [ "$failed_total" -gt 0 ] || failed_total=${#failures[@]}
fi
echo "total: $passed_total passed, $failed_total failed"
[ ${#failures[@]} -eq 0 ]
