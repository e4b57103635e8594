#!/usr/bin/env bash
# Crash safety of `berth serve`: kill -9 in the middle of uploads, restart on the same root.
# Nothing half-written becomes visible, and an upload session survives the crash of the
# process; one from before the machine stopped is refused (its parts may be lost) and pushed again.
#   tests/durability.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
work=$(mktemp -d /tmp/berth-durability.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"
root=$work/root

head -c 8000000 /dev/urandom >blob.bin
digest=sha256:$(sha256sum blob.bin | cut -d' ' -f1)
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

killed_monolithic_push() {
  start_berth "$binary" "$root" || return 1
  # A slow one-request push, killed with SIGKILL half way.
  curl -s -o /dev/null --limit-rate 2M -X POST --data-binary @blob.bin \
    "http://$BERTH_ADDR/v2/crash/blobs/uploads/?digest=$digest" &
  local client=$!
  sleep 1.5
  kill -9 "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null
  wait "$client" 2>/dev/null
  start_berth "$binary" "$root" || return 1
  equal "$(status -I "http://$BERTH_ADDR/v2/crash/blobs/$digest")" 404 &&
  [ ! -e "$root/docker/registry/v2/blobs/sha256/${digest:7:2}/${digest#sha256:}/data" ]
}
check "kill -9 during a one-request push: the blob is not visible after restart" killed_monolithic_push

session_survives_kill() {
  local location
  location=$(curl -s -D - -o /dev/null -X POST "http://$BERTH_ADDR/v2/crash/blobs/uploads/" | tr -d '\r' | sed -n 's/^location: //Ip')
  [ -n "$location" ] || { echo "no Location"; return 1; }
  head -c 3000000 blob.bin >first.bin
  tail -c +3000001 blob.bin >rest.bin
  equal "$(status -X PATCH -H 'Content-Range: 0-2999999' --data-binary @first.bin "http://$BERTH_ADDR$location")" 202 || return 1
  kill -9 "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null
  start_berth "$binary" "$root" || return 1
  equal "$(curl -s -D - -o /dev/null "http://$BERTH_ADDR$location" | tr -d '\r' | sed -n 's/^range: //Ip')" "0-2999999" &&
  equal "$(status -I "http://$BERTH_ADDR/v2/crash/blobs/$digest")" 404 &&
  equal "$(status -X PATCH -H 'Content-Range: 3000000-7999999' --data-binary @rest.bin "http://$BERTH_ADDR$location")" 202 &&
  equal "$(status -X PUT "http://$BERTH_ADDR$location?digest=$digest")" 201 &&
  curl -s -o pulled.bin "http://$BERTH_ADDR/v2/crash/blobs/$digest" &&
  cmp blob.bin pulled.bin
}
check "kill -9 between chunks: the session resumes after restart and the blob verifies" session_survives_kill

session_refused_after_a_machine_stop() {
  local root=$work/restart-root location
  start_berth "$binary" "$root" || return 1
  location=$(curl -s -D - -o /dev/null -X POST "http://$BERTH_ADDR/v2/crash/blobs/uploads/" | tr -d '\r' | sed -n 's/^location: //Ip')
  [ -n "$location" ] || { echo "no Location"; return 1; }
  equal "$(status -X PATCH -H 'Content-Range: 0-2999999' --data-binary @first.bin "http://$BERTH_ADDR$location")" 202 || return 1
  kill -9 "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null
  # The machine stopped too: the parts were recorded under a boot that is over.
  local marker; marker=$(ls "$root"/.berth/parts/*/unsynced-boot)
  [ -f "$marker" ] || { echo "no boot recorded in the parts: $marker"; return 1; }
  printf '%032d' 0 >"$marker"
  start_berth "$binary" "$root" || return 1
  curl -s -o refused.json -w '%{http_code}' -X PATCH -H 'Content-Range: 3000000-7999999' \
    --data-binary @rest.bin "http://$BERTH_ADDR$location" >refused.status
  equal "$(cat refused.status)" 404 && grep -q BLOB_UPLOAD_UNKNOWN refused.json || { cat refused.json; return 1; }
  equal "$(status "http://$BERTH_ADDR$location")" 404 &&
  equal "$(ls "$root/.berth/parts")" "" &&
  equal "$(status -X POST --data-binary @blob.bin "http://$BERTH_ADDR/v2/crash/blobs/uploads/?digest=$digest")" 201 &&
  curl -s -o pulled.bin "http://$BERTH_ADDR/v2/crash/blobs/$digest" &&
  cmp blob.bin pulled.bin
}
if [ -z "${BERTH_S3_ENDPOINT:-}" ]; then
  check "machine stop between chunks: the upload is unknown after restart and is pushed again" session_refused_after_a_machine_stop
fi

# push_tagged TAG: pushes a one-blob image to journal:TAG; sets MANIFEST_DIGEST.
push_tagged() {
  printf '{"tag":"%s"}' "$1" >config.json
  local config=sha256:$(sha256sum config.json | cut -d' ' -f1)
  equal "$(status -X POST --data-binary @config.json "http://$BERTH_ADDR/v2/journal/blobs/uploads/?digest=$config")" 201 || return 1
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[]}' \
    "$config" "$(stat -c %s config.json)" >manifest.json
  MANIFEST_DIGEST=sha256:$(sha256sum manifest.json | cut -d' ' -f1)
  equal "$(status -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @manifest.json "http://$BERTH_ADDR/v2/journal/manifests/$1")" 201
}

# tag_digest TAG: the digest of what journal:TAG serves.
tag_digest() {
  curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$BERTH_ADDR/v2/journal/manifests/$1" | sha256sum | cut -d' ' -f1
}

journal_replayed_after_a_machine_stop() {
  local root=$work/journal-root journal=$work/journal-root/.berth/journal
  start_berth "$binary" "$root" || return 1
  push_tagged v1 || return 1
  local v1=$MANIFEST_DIGEST
  # A process killed: its journal is settled at the next start (the page cache kept all).
  kill -9 "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null
  start_berth "$binary" "$root" || return 1
  equal "$(tag_digest v1)" "${v1#sha256:}" && equal "$(ls "$journal")" "" || return 1
  push_tagged v2 || return 1
  local v2=$MANIFEST_DIGEST
  kill -9 "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null
  # The machine stopped too: the journal is another boot's, and the page cache's copies of
  # the tag's link (what the disk kept is empty, and older than the record) and of the
  # manifest were lost.
  local file; file=$(ls "$journal")
  [ "$(printf '%s\n' "$file" | wc -l)" = 1 ] && [ -n "$file" ] || { echo "journal files: $file"; return 1; }
  mv "$journal/$file" "$journal/00000000000000000000000000000000.${file#*.}"
  local link=$root/docker/registry/v2/repositories/journal/_manifests/tags/v2/current/link
  : >"$link" && touch -d @1 "$link"
  rm "$root/docker/registry/v2/blobs/sha256/${v2:7:2}/${v2#sha256:}/data"
  start_berth "$binary" "$root" || return 1
  equal "$(tag_digest v2)" "${v2#sha256:}" && equal "$(tag_digest v1)" "${v1#sha256:}" &&
    equal "$(ls "$journal")" ""
}
if [ -z "${BERTH_S3_ENDPOINT:-}" ]; then
  check "machine stop after a push: the journal restores the manifest and the tag" journal_replayed_after_a_machine_stop
fi

# killed_during_concurrent_pushes ROUNDS: 8 clients push images (chunked layers, configs,
# manifests by tag); berth is killed with SIGKILL a moment in, restarted on the same root or
# bucket; every write it acknowledged must be there, whole, and the clients push on.
killed_during_concurrent_pushes() {
  local rounds=$1 root=$work/concurrent-root ledger=$work/acknowledged round
  : >"$ledger"
  for round in $(seq "$rounds"); do
    start_berth "$binary" "$root" || return 1
    python3 "$here/lib/concurrent_pushes.py" push "http://$BERTH_ADDR" "$ledger" &
    local pusher=$!
    sleep "0.$((RANDOM % 9 + 1))"
    kill -9 "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null
    wait "$pusher"
  done
  start_berth "$binary" "$root" || return 1
  python3 "$here/lib/concurrent_pushes.py" check "http://$BERTH_ADDR" "$ledger"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
check "kill -9 during 8 concurrent pushes, 10 rounds: no acknowledged write lost or corrupt" killed_during_concurrent_pushes 10

summary durability
