#!/usr/bin/env bash
# Same-run A/B of this tree's `berth serve` against another commit's: builds both (release;
# the other in a git worktree under target/), starts each over its own root, and runs
# berth-bench's scenarios on both in turn, round after round (A B A B …), so the machine's
# drift touches both alike. Prints each scenario's median per side and their ratio.
#
#   bench/ab.sh COMMIT [SCENARIOS]     SCENARIOS: push,push-chunked,pull (the default),
#                                      or any of berth-bench's (small-images, manifest-get, …);
#                                      pull reads the blob push wrote, so name push with it
#
# BENCH_ROUNDS (5) and BENCH_BLOB_MIB (1024) change the sizes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
commit=${1:?usage: bench/ab.sh COMMIT [SCENARIOS]}
scenarios=${2:-push,push-chunked,pull}
rounds=${BENCH_ROUNDS:-5} blob_mib=${BENCH_BLOB_MIB:-1024}
log() { printf '[ab] %s\n' "$*" >&2; }
source "$root/tests/lib/common.sh"

old_tree=$root/target/ab-worktree
log "building this tree and $commit (release)"
(cd "$root" && cargo build --release --locked -p berth-server -p berth-bench -p berth-ffi)
git -C "$root" worktree remove --force "$old_tree" 2>/dev/null || rm -rf "$old_tree"
git -C "$root" worktree add --force --detach "$old_tree" "$commit" >/dev/null
(cd "$old_tree" && CARGO_TARGET_DIR=$root/target/ab-target cargo build --release --locked -p berth-server)

work=$(mktemp -d /tmp/berth-ab.XXXXXX)
chattr +T "$work" 2>/dev/null || true
trap 'stop_all_servers; git -C "$root" worktree remove --force "$old_tree" 2>/dev/null; rm -rf "$work"' EXIT
targets=()
for side in new old; do
  binary=$root/target/release/berth
  [ $side = old ] && binary=$root/target/ab-target/release/berth
  port=$(free_port)
  "$binary" serve --addr "127.0.0.1:$port" --root "$work/$side" --log warn >"$work/$side.log" 2>&1 &
  pid=$!
  SERVER_PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/v2/" || { log "$side did not start"; cat "$work/$side.log" >&2; exit 1; }
  targets+=(--target "$side=127.0.0.1:$port,pid=$pid")
done
log "$rounds rounds of $scenarios, $blob_mib MiB blobs"
status=0
"$root/target/release/berth-bench" run "${targets[@]}" --rounds "$rounds" --blob-mib "$blob_mib" \
  --only "$scenarios" --out "$work/ab.jsonl" >/dev/null || status=$?
grep '"error"' "$work/ab.jsonl" >&2 || true
python3 - "$work/ab.jsonl" "$commit" <<'EOF'
import json, statistics, sys
from collections import defaultdict
figures = defaultdict(list)
for line in open(sys.argv[1]):
    record = json.loads(line)
    value = record.get("value")
    if value is not None and record["target"] in ("new", "old"):
        figures[(record["scenario"], record["target"])].append(value)
for scenario in sorted({s for s, _ in figures}):
    new, old = figures[(scenario, "new")], figures[(scenario, "old")]
    if not new or not old:
        continue
    ratio = statistics.median(new) / statistics.median(old)
    print(f"{scenario:16} this tree {statistics.median(new):9.1f}   {sys.argv[2][:10]} "
          f"{statistics.median(old):9.1f}   ratio {ratio:.3f}   "
          f"(rounds: {', '.join(f'{v:.0f}' for v in new)} vs {', '.join(f'{v:.0f}' for v in old)})")
EOF
exit $status
