#!/usr/bin/env bash
# The request→response transcripts of tests/transcripts/, replayed over HTTP against
# `berth serve` (each on a fresh storage root), so the hyper glue is held to the same data
# as the driver.
#   tests/transcripts.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
work=$(mktemp -d /tmp/berth-transcripts.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT

replay() {
  local transcript=$1 name; name=$(basename "$transcript" .json)
  start_berth "$binary" "$work/$name" --part-size 4 || return 1
  python3 "$here/lib/replay_transcript.py" "http://$BERTH_ADDR" "$transcript"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
for transcript in "$here"/transcripts/*.json; do
  check "HTTP transcript $(basename "$transcript" .json)" replay "$transcript"
done
summary transcripts
