#!/usr/bin/env bash
# Linearizable manifest and tag changes across processes: two `berth serve` over one root (or,
# with BERTH_S3_ENDPOINT set, one bucket: tests/s3.sh runs this suite on moto), driven over
# HTTP by the model test of core/tests/linearizable.rs (`servers_over_one_storage`): random
# concurrent pushes, tag moves, deletes and mounts, each schedule explained by a serial order.
#   tests/linearizable.sh BERTH_BINARY
# BERTH_SCHEDULES sets the number of schedules (default 10,000; 1,000 on S3).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
work=$(mktemp -d /tmp/berth-linearizable.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT
root=$(cd "$here/.." && pwd)

default=10000
[ -n "${BERTH_S3_ENDPOINT:-}" ] && default=1000
schedules=${BERTH_SCHEDULES:-$default}

model_over_two_servers() {
  start_berth "$binary" "$work/shared" || return 1
  local first=$BERTH_ADDR
  start_berth "$binary" "$work/shared" || return 1
  # The same build of the test as `cargo test --workspace` in scripts/test.sh: no rebuild.
  (cd "$root" && BERTH_MODEL_SERVERS="$first,$BERTH_ADDR" BERTH_SCHEDULES=$schedules \
    cargo test --workspace --features berth/object-store --locked --test linearizable \
    -- --ignored --exact servers_over_one_storage --nocapture)
}
check "$schedules random schedules over two berth serve sharing one storage: each a serial order" \
  model_over_two_servers

summary linearizable
