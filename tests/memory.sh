#!/usr/bin/env bash
# Memory per upload is bounded: the peak RSS of `berth serve` while a 1 GiB blob is pushed in
# 16 MiB chunks (and pulled back) stays under the limit, whatever the blob's size.
#   tests/memory.sh BERTH_BINARY      (BERTH_MEMORY_LIMIT_KIB, default 65536)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
limit_kib=${BERTH_MEMORY_LIMIT_KIB:-65536}
work=$(mktemp -d /tmp/berth-memory.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT

head -c $((1024 * 1024 * 1024)) /dev/urandom >"$work/blob.bin"

peak_rss_for_push() {
  start_berth "$binary" "$work/root" || return 1
  python3 "$here/lib/push_chunked.py" "http://$BERTH_ADDR" memory/big "$work/blob.bin" $((16 * 1024 * 1024)) || return 1
  local peak; peak=$(awk '/VmHWM/ {print $2}' "/proc/$BERTH_PID/status")
  stop_server "$BERTH_PID"
  echo "peak RSS of berth serve ($([ -n "${BERTH_S3_ENDPOINT:-}" ] && echo s3 || echo fs)) during a 1 GiB chunked push and pull: $peak KiB (limit $limit_kib KiB)"
  echo "peak RSS: $peak KiB"
  [ "$peak" -lt "$limit_kib" ]
}
check "peak RSS during a 1 GiB push in 16 MiB chunks (and its pull) stays under $((limit_kib / 1024)) MiB" peak_rss_for_push
summary memory
