#!/usr/bin/env bash
# Builds the fuzz targets once (cargo-fuzz, libFuzzer with AddressSanitizer) and runs each for
# SECONDS (default 60) on one core, from a seed corpus made of the transcripts plus what
# earlier runs found (fuzz/corpus/, not committed). Prints each target's executions; a crash
# leaves its input in fuzz/artifacts/<target>/ and fails the run.
#   fuzz/run.sh [SECONDS] [TARGET...]      targets: heads references manifests ranges uploads
# A crash replays with: fuzz/target/x86_64-unknown-linux-gnu/release/<target> <input>
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
seconds=${1:-60}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(heads references manifests ranges uploads)
cargo_fuzz=$(command -v cargo-fuzz || echo "${BERTH_TOOLS:-$here/../.tools}/bin/cargo-fuzz")
[ -x "$cargo_fuzz" ] || { echo "cargo-fuzz is missing: scripts/install-test-deps.sh installs it" >&2; exit 1; }

cd "$here"
# Stable Rust: RUSTC_BOOTSTRAP lets it take the sanitizer flags cargo-fuzz passes.
RUSTC_BOOTSTRAP=1 "$cargo_fuzz" build -O >build.log 2>&1 || { tail -30 build.log; echo "fuzz: 0 passed, 1 failed"; exit 1; }
seeds=$(mktemp -d /tmp/berth-fuzz-seeds.XXXXXX)
trap 'rm -rf "$seeds"' EXIT
python3 seeds.py "$seeds"
passed=0 failed=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target" "$seeds/$target"
  log=$(mktemp)
  RUSTC_BOOTSTRAP=1 "$cargo_fuzz" run -O "$target" "corpus/$target" "$seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="artifacts/$target/" >"$log" 2>&1
  status=$?
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    passed=$((passed + 1))
    printf '  ok    %s: %s executions in %s s, no crash\n' "$target" "${runs:-?}" "$seconds"
  else
    failed=$((failed + 1))
    printf '  FAIL  %s: a crash after %s executions\n' "$target" "${runs:-?}"
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -8 | sed 's/^/        /'
  fi
  rm -f "$log"
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
