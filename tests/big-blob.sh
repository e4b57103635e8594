#!/usr/bin/env bash
# Slow: a blob of 5 GiB and 64 MiB pushed in 64 MiB chunks to S3 storage, past S3's 5 GiB
# limits on a single PUT and a single copy (it reaches its content address by two server-side
# part copies), then pulled back and verified. The S3 server is s3s-fs (disk-backed; moto would
# hold every byte in memory three times over). The pusher makes the bytes as it sends them, so
# the disk holds at most two copies of the blob and one 512 MiB copied part (the finished upload,
# and the copied parts while s3s-fs joins them), and the test refuses to start, saying so, on a
# disk with less room. CI runs it once per run.
#   tests/big-blob.sh BERTH_BINARY     (BERTH_BIG_BLOB_MIB, default 5184)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
tools=${BERTH_TOOLS:-$here/../.tools}
size_mib=${BERTH_BIG_BLOB_MIB:-5184}
work=$(mktemp -d /var/tmp/berth-big-blob.XXXXXX)
s3_port=$(free_port)
mkdir -p "$work/s3/big"
"$tools/bin/s3s-fs" --host 127.0.0.1 --port "$s3_port" --access-key big --secret-key big "$work/s3" \
  >"$work/s3s-fs.log" 2>&1 &
s3=$!
trap 'stop_all_servers; kill $s3 2>/dev/null; wait $s3 2>/dev/null; rm -rf "$work"' EXIT
wait_http "http://127.0.0.1:$s3_port/" 30 || { echo "s3s-fs did not start"; exit 1; }

big_push() {
  local needed_mib=$((2 * size_mib + 512 + 512)) free_mib
  free_mib=$(df -m --output=avail "$work" | tail -1 | tr -d ' ')
  if [ "$free_mib" -lt "$needed_mib" ]; then
    echo "the disk under $work has $free_mib MiB free; this test needs $needed_mib MiB"
    return 1
  fi
  local port; port=$(free_port)
  AWS_ACCESS_KEY_ID=big AWS_SECRET_ACCESS_KEY=big AWS_REGION=us-east-1 "$binary" serve \
    --addr "127.0.0.1:$port" --storage s3 --s3-bucket big --s3-endpoint "http://127.0.0.1:$s3_port" \
    --s3-allow-http --s3-path-style --log warn >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  local pid=$!
  SERVER_PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/v2/" || return 1
  local started=$SECONDS
  local digest
  digest=$(python3 "$here/lib/push_chunked.py" "http://127.0.0.1:$port" big/blob \
    "random:$((size_mib * 1024 * 1024))" $((64 * 1024 * 1024))) || {
    echo "free disk: $(df -m --output=avail "$work" | tail -1 | tr -d ' ') MiB; the S3 server's last words:"
    tail -5 "$work/s3s-fs.log"
    return 1
  }
  echo "pushed and pulled $size_mib MiB through S3 in $((SECONDS - started)) s; berth peak RSS $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") KiB"
  # The blob is one object at its content address, larger than any single PUT or copy.
  digest=${digest#sha256:}
  equal "$(stat -c %s "$work/s3/big/docker/registry/v2/blobs/sha256/${digest:0:2}/$digest/data")" "$((size_mib * 1024 * 1024))"
}
check "a ${size_mib} MiB blob pushed in chunks to S3 and pulled back, verified" big_push
summary big-blob
