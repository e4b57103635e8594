#!/usr/bin/env bash
# Stateless scale-out: two `berth serve` processes over one storage root (or, under
# tests/s3.sh, one bucket). A chunked push alternates between them request by request; one is
# killed with SIGKILL in the middle of a chunk and the other finishes the upload; both serve
# the result.
#   tests/scaleout.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
work=$(mktemp -d /tmp/berth-scaleout.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"
root=$work/shared-root
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
header() { tr -d '\r' | sed -n "s/^$1: //Ip"; }

start_berth "$binary" "$root"; a=$BERTH_ADDR a_pid=$BERTH_PID
start_berth "$binary" "$root"; b=$BERTH_ADDR b_pid=$BERTH_PID

chunk_size=1048576
head -c $((chunk_size * 12 + 12345)) /dev/urandom >blob.bin
size=$(stat -c %s blob.bin)
digest=sha256:$(sha256sum blob.bin | cut -d' ' -f1)
split -b $chunk_size -d -a 3 blob.bin chunk.

# alternating_push CHUNK_BYTES REPOSITORY
alternating_push() {
  local bytes=$1 repository=$2 location offset=0 i=0 host chunk len
  rm -f piece.*; split -b "$bytes" -d -a 3 blob.bin piece.
  location=$(curl -s -D - -o /dev/null -X POST "http://$a/v2/shared/$repository/blobs/uploads/" | header location)
  [ -n "$location" ] || return 1
  for chunk in piece.*; do
    if [ $((i % 2)) -eq 0 ]; then host=$b; else host=$a; fi
    len=$(stat -c %s "$chunk")
    equal "$(status -X PATCH -H "Content-Range: $offset-$((offset + len - 1))" --data-binary "@$chunk" "http://$host$location")" 202 || return 1
    offset=$((offset + len)); i=$((i + 1))
  done
  equal "$(status -X PUT "http://$b$location?digest=$digest")" 201 &&
  for host in $a $b; do
    curl -s -o "pulled-$host.bin" "http://$host/v2/shared/$repository/blobs/$digest" && cmp blob.bin "pulled-$host.bin" || return 1
  done
}
check "a chunked push alternating between two instances, pulled back from both" alternating_push $chunk_size alternating
# Chunks larger than a part are hashed on a second thread, and a chunk's 202 does not wait for
# its hash on a local disk: each instance reads back the chunk the other one took.
check "the same with chunks of 3 MiB, each hashed while the next arrives" alternating_push $((chunk_size * 3)) alternating-large

racing_instances() {
  local location codes
  location=$(curl -s -D - -o /dev/null -X POST "http://$a/v2/shared/race/blobs/uploads/" | header location)
  # Two chunks for offset 0, one to each instance at once: exactly one wins.
  status -X PATCH -H "Content-Range: 0-$((chunk_size - 1))" --data-binary @chunk.000 "http://$a$location" >code-a &
  local first=$!
  status -X PATCH -H "Content-Range: 0-$((chunk_size - 1))" --data-binary @chunk.001 "http://$b$location" >code-b &
  wait "$first" $!
  codes=$( (cat code-a; echo; cat code-b; echo) | sort | paste -sd,)
  equal "$codes" "202,416" &&
  equal "$(curl -s -D - -o /dev/null "http://$b$location" | header range)" "0-$((chunk_size - 1))"
}
check "two chunks for offset 0 sent to both instances at once: one 202, one 416" racing_instances

killed_instance() {
  local location offset
  location=$(curl -s -D - -o /dev/null -X POST "http://$a/v2/shared/killed/blobs/uploads/" | header location)
  head -c $((chunk_size * 4)) blob.bin >first.bin
  equal "$(status -X PATCH -H "Content-Range: 0-$((chunk_size * 4 - 1))" --data-binary @first.bin "http://$a$location")" 202 || return 1
  # A slow second chunk to instance A, which dies half way through it.
  tail -c +$((chunk_size * 4 + 1)) blob.bin >rest.bin
  curl -s -o /dev/null --limit-rate 1M -X PATCH -H "Content-Range: $((chunk_size * 4))-$((size - 1))" \
    --data-binary @rest.bin "http://$a$location" &
  local client=$!
  sleep 2
  kill -9 "$a_pid"; wait "$a_pid" 2>/dev/null; wait "$client" 2>/dev/null
  # The client asks B where the upload stands and sends the rest there. On storage with
  # native multipart uploads the dead request's claim must lapse first (BERTH_UPLOAD_LEASE),
  # so the client retries a 416 a few times, as clients do.
  equal "$(curl -s -D - -o /dev/null "http://$b$location" | header range)" "0-$((chunk_size * 4 - 1))" || return 1
  local code tries=0
  while code=$(status -X PATCH -H "Content-Range: $((chunk_size * 4))-$((size - 1))" --data-binary @rest.bin "http://$b$location") &&
        [ "$code" = 416 ] && [ $tries -lt 15 ]; do
    tries=$((tries + 1)); sleep 1
  done
  echo "PATCH on the surviving instance: $code after $tries retries"
  equal "$code" 202 &&
  equal "$(status -X PUT "http://$b$location?digest=$digest")" 201 || return 1
  start_berth "$binary" "$root"; a=$BERTH_ADDR a_pid=$BERTH_PID
  for host in $a $b; do
    curl -s -o "killed-$host.bin" "http://$host/v2/shared/killed/blobs/$digest" && cmp blob.bin "killed-$host.bin" || return 1
  done
}
check "kill -9 one instance mid-chunk, finish on the other, pull from both" killed_instance

summary scaleout
