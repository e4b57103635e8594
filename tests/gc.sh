#!/usr/bin/env bash
# Garbage collection while registries serve: `berth serve --gc` instances over one storage,
# `berth gc` beside them. A deleted image's blobs go, shared ones stay; pushes racing the
# collector with no grace period lose nothing; afterwards exactly what the tags need is
# stored, and registry:2's own collector finds nothing more to delete. With
# BERTH_S3_ENDPOINT set (tests/s3.sh), the same over S3.
#   tests/gc.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
export PATH=${BERTH_TOOLS:-$here/../.tools}/bin:$PATH
work=$(mktemp -d /tmp/berth-gc.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"

# collect ROOT [FLAGS...]: `berth gc` over the storage of ROOT.
collect() {
  local root=$1; shift
  local storage; mapfile -t storage < <(storage_flags "$root")
  "$binary" gc "${storage[@]}" --log warn "$@"
}

# stored_blobs ROOT: the digests (hex) of the blobs stored under ROOT, sorted.
stored_blobs() {
  if [ -z "${BERTH_S3_ENDPOINT:-}" ]; then
    find "$1/docker/registry/v2/blobs" -name data 2>/dev/null | awk -F/ '{print $(NF-1)}' | sort
    return
  fi
  local bucket="berth-$(printf '%s' "$1" | sha256sum | cut -c1-24)"
  python3 - "$BERTH_S3_ENDPOINT/$bucket" <<'PY' | sort
import re, sys, urllib.parse, urllib.request
token = None
while True:
    query = {"list-type": "2", "prefix": "docker/registry/v2/blobs/"}
    if token:
        query["continuation-token"] = token
    page = urllib.request.urlopen(f"{sys.argv[1]}?{urllib.parse.urlencode(query)}").read().decode()
    for key in re.findall(r"<Key>([^<]*)/data</Key>", page):
        print(key.rsplit("/", 1)[1])
    found = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", page)
    if not found:
        break
    token = found.group(1)
PY
}

layout() { python3 "$here/lib/make_oci_layout.py" "$@" >/dev/null; }
push() { skopeo copy --dest-tls-verify=false "oci:$1" "docker://$2" >/dev/null; }
pull() { skopeo copy --src-tls-verify=false "docker://$1" "oci:$work/pulled:x" >/dev/null; }
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
manifest_digest() {
  curl -s -o /dev/null -D - -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$1" |
    tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" {print $2}'
}

layout one v1 --layers 2 --size 50000
layout two v2 --layers 2 --size 50000

deleted_image() {
  start_berth "$binary" "$work/root" --gc --gc-grace 0 || return 1
  local r=$BERTH_ADDR
  push one:v1 "$r/app/one:v1" && push one:v1 "$r/app/two:v1" && push two:v2 "$r/app/one:v2" || return 1
  local loose; loose=$(head -c 1000 /dev/urandom | tee loose.bin | sha256sum | cut -d' ' -f1)
  equal "$(status -X POST --data-binary @loose.bin "http://$r/v2/app/one/blobs/uploads/?digest=sha256:$loose")" 201 || return 1
  local layer; layer=$(python3 -c 'import json; print(json.load(open("one/blobs/sha256/" + json.load(open("one/index.json"))["manifests"][0]["digest"][7:]))["layers"][0]["digest"])')
  local v1; v1=$(manifest_digest "$r/v2/app/one/manifests/v1")
  equal "$(status -X DELETE "http://$r/v2/app/one/manifests/$v1")" 202 || return 1
  # Within the grace period (24 h by default) nothing goes.
  collect "$work/root" | tee gc-graced.out && contains "$(cat gc-graced.out)" "deleted 0 blobs" || return 1
  collect "$work/root" --gc-grace 0 | tee gc.out || return 1
  contains "$(cat gc.out)" "deleted 1 blobs" || return 1
  # Both images stay whole (each has a config, two layers and a manifest); the loose blob
  # went, and so did the links of the deleted image's layers in app/one.
  equal "$(stored_blobs "$work/root" | wc -l)" 8 &&
  equal "$(status "http://$r/v2/app/one/blobs/sha256:$loose")" 404 &&
  equal "$(status "http://$r/v2/app/one/blobs/$layer")" 404 &&
  equal "$(status "http://$r/v2/app/two/blobs/$layer")" 200 &&
  pull "$r/app/two:v1" && pull "$r/app/one:v2" || return 1
  # Deleting the other copy leaves nothing of that image.
  local copy; copy=$(manifest_digest "$r/v2/app/two/manifests/v1")
  equal "$(status -X DELETE "http://$r/v2/app/two/manifests/$copy")" 202 &&
  collect "$work/root" --gc-grace 0 >/dev/null &&
  equal "$(stored_blobs "$work/root" | wc -l)" 4 && pull "$r/app/one:v2"
}
check "a deleted image's blobs go (once past the grace period), what another tag shares stays and pulls" deleted_image

dry_run() {
  local r=$BERTH_ADDR
  head -c 2000 /dev/urandom >loose2.bin
  local loose; loose=$(sha256sum loose2.bin | cut -d' ' -f1)
  equal "$(status -X POST --data-binary @loose2.bin "http://$r/v2/app/one/blobs/uploads/?digest=sha256:$loose")" 201 &&
  collect "$work/root" --gc-grace 0 --dry-run | tee dry.out &&
  contains "$(cat dry.out)" "would delete 1 blobs (2000 bytes)" &&
  equal "$(status "http://$r/v2/app/one/blobs/sha256:$loose")" 200
}
check "berth gc --dry-run reports what it would delete and deletes nothing" dry_run

registry2_agrees() {
  [ -z "${BERTH_S3_ENDPOINT:-}" ] || { echo "(on the filesystem only)"; return 0; }
  stop_server "$BERTH_PID"
  collect "$work/root" --gc-grace 0 >/dev/null || return 1
  registry_config "$work/root" 127.0.0.1:1 >registry2.yml
  docker-registry garbage-collect --dry-run registry2.yml >r2gc.out 2>&1 || { cat r2gc.out; return 1; }
  # registry:2 marks every manifest's blobs and lists the rest as eligible: none.
  equal "$(grep -c 'eligible for deletion:' r2gc.out)" 0 && contains "$(cat r2gc.out)" '0 blobs and 0 manifests eligible' || { cat r2gc.out; return 1; }
  local port; port=$(free_port)
  registry_config "$work/root" "127.0.0.1:$port" >serve2.yml
  docker-registry serve serve2.yml >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  SERVER_PIDS+=("$!")
  wait_http "http://127.0.0.1:$port/v2/" && pull "127.0.0.1:$port/app/one:v2"
}
check "registry:2's garbage-collect --dry-run finds nothing more to delete, and registry:2 serves what is left" registry2_agrees
stop_all_servers

repository_deleted() {
  start_berth "$binary" "$work/repos" --gc --gc-grace 0 || return 1
  local r=$BERTH_ADDR
  push one:v1 "$r/app/del:v1" && push two:v2 "$r/app/del/nested:v2" || return 1
  equal "$(status -X DELETE "http://$r/v2/app/del/")" 202 &&
  equal "$(curl -s "http://$r/v2/_catalog")" '{"repositories":["app/del/nested"]}' &&
  equal "$(status "http://$r/v2/app/del/manifests/v1")" 404 &&
  pull "$r/app/del/nested:v2" || return 1
  local storage; mapfile -t storage < <(storage_flags "$work/repos")
  "$binary" delete-repository app/del/nested "${storage[@]}" --gc --log warn >/dev/null &&
  equal "$(curl -s "http://$r/v2/_catalog")" '{"repositories":[]}' &&
  collect "$work/repos" --gc-grace 0 >/dev/null &&
  equal "$(stored_blobs "$work/repos" | wc -l)" 0
}
check "DELETE /v2/<name>/ and berth delete-repository delete a repository whole, not the ones nested below it; the collector takes its blobs" repository_deleted
stop_all_servers

# Untagged collection: the manifest a moved tag left goes with its own layers; an index's
# children (untagged themselves) stay; registry:2's collector agrees there is nothing more.
layout multi v3 --platforms linux/amd64,linux/arm64 --layers 1 --size 20000
untagged() {
  start_berth "$binary" "$work/untagged" --gc --gc-grace 0 || return 1
  local r=$BERTH_ADDR
  push one:v1 "$r/app/u:v1" &&
  skopeo copy --all --dest-tls-verify=false oci:multi:v3 "docker://$r/app/u:multi" >/dev/null || return 1
  local old; old=$(manifest_digest "$r/v2/app/u/manifests/v1")
  push two:v2 "$r/app/u:v1" || return 1
  collect "$work/untagged" --gc-grace 0 --untagged --dry-run | tee untagged-dry.out &&
  contains "$(cat untagged-dry.out)" "would delete 1 untagged manifests" &&
  equal "$(status -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$r/v2/app/u/manifests/$old")" 200 || return 1
  collect "$work/untagged" --gc-grace 0 --untagged | tee untagged.out &&
  contains "$(cat untagged.out)" "deleted 1 untagged manifests" &&
  equal "$(status -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$r/v2/app/u/manifests/$old")" 404 || return 1
  # Left: the image v1 holds now (manifest, config, two layers) and the index with its two
  # children (each a manifest, a config and a layer).
  equal "$(stored_blobs "$work/untagged" | wc -l)" 11 &&
  pull "$r/app/u:v1" &&
  skopeo copy --all --src-tls-verify=false "docker://$r/app/u:multi" "oci:$work/pulled-multi:x" >/dev/null || return 1
  [ -z "${BERTH_S3_ENDPOINT:-}" ] || return 0
  stop_server "$BERTH_PID"
  registry_config "$work/untagged" 127.0.0.1:1 >untagged-r2.yml
  docker-registry garbage-collect --dry-run untagged-r2.yml >untagged-r2.out 2>&1 || { cat untagged-r2.out; return 1; }
  contains "$(cat untagged-r2.out)" '0 blobs and 0 manifests eligible' || { cat untagged-r2.out; return 1; }
  # With --delete-untagged, registry:2 (2.8) also takes an index's children, which berth
  # keeps (distribution#3178): reported, not required.
  docker-registry garbage-collect --dry-run --delete-untagged untagged-r2.yml >untagged-r2-all.out 2>&1
  echo "registry:2 garbage-collect --delete-untagged --dry-run: $(grep -Eo '[0-9]+ blobs and [0-9]+ manifests eligible' untagged-r2-all.out)"
}
check "berth gc --untagged: the manifest a moved tag left goes with its layers, an index's children stay; registry:2 finds nothing more" untagged
stop_all_servers

# Retention rules (a TOML file): the tags a rule expires go, a dry run names them first,
# and untagged collection takes what they held.
retention() {
  start_berth "$binary" "$work/retention" --gc --gc-grace 0 || return 1
  local r=$BERTH_ADDR
  local n
  for n in 1 2 3; do
    layout "keep$n" "v$n" --layers 1 --size 20000 && push "keep$n:v$n" "$r/app/kept:v$n" || return 1
    # Push times have the storage's resolution: S3's is a second.
    sleep 1.1
  done
  push one:v1 "$r/app/kept:stable" && push two:v2 "$r/other:v1" || return 1
  cat >rules.toml <<'TOML'
[[rule]]
repositories = "app/*"
keep-last = 2
keep-tags = ["stable"]
TOML
  collect "$work/retention" --gc-grace 0 --untagged --retention rules.toml --dry-run | tee retention-dry.out &&
  contains "$(cat retention-dry.out)" "would delete 1 tags by the retention rules" &&
  contains "$(cat retention-dry.out)" "app/kept: v1" &&
  equal "$(status "http://$r/v2/app/kept/manifests/v1")" 200 || return 1
  collect "$work/retention" --gc-grace 0 --untagged --retention rules.toml | tee retention.out &&
  contains "$(cat retention.out)" "deleted 1 tags by the retention rules" &&
  contains "$(cat retention.out)" "deleted 1 untagged manifests" &&
  equal "$(status "http://$r/v2/app/kept/manifests/v1")" 404 &&
  equal "$(curl -s "http://$r/v2/app/kept/tags/list")" '{"name":"app/kept","tags":["stable","v2","v3"]}' &&
  pull "$r/app/kept:v3" && pull "$r/app/kept:stable" && pull "$r/other:v1" || return 1
  # Left: v2's and v3's images and stable's (a manifest, a config and layers each), and
  # other:v1's. v1's image went whole.
  equal "$(stored_blobs "$work/retention" | wc -l)" $((3 + 3 + 4 + 4))
}
check "retention rules: berth gc --retention --dry-run names the tags, then they go and collection takes their images" retention
stop_all_servers

# kill -9 of a collector half-way: nothing is damaged, its claims lapse, and the next
# collection finishes the work.

# put_object ROOT KEY FILE: writes an object straight into the storage of ROOT, as another
# tool (or a push that died before its link) would.
put_object() {
  if [ -z "${BERTH_S3_ENDPOINT:-}" ]; then
    mkdir -p "$(dirname "$1/$2")" && cp "$3" "$1/$2"
  else
    local bucket="berth-$(printf '%s' "$1" | sha256sum | cut -c1-24)"
    # (moto waits forever on a form-encoded body: say what it is.)
    equal "$(status -X PUT -H "Content-Type: application/octet-stream" --data-binary @"$3" \
      "$BERTH_S3_ENDPOINT/$bucket/$2")" 200
  fi
}

scrub() {
  start_berth "$binary" "$work/scrub" --gc || return 1
  push one:v1 "$BERTH_ADDR/app/scrubbed:v1" || return 1
  local stray; stray=$(head -c 3000 /dev/urandom | tee stray.bin | sha256sum | cut -d' ' -f1)
  put_object "$work/scrub" "docker/registry/v2/blobs/sha256/${stray:0:2}/$stray/data" stray.bin || return 1
  # What a killed write left on a filesystem root, two hours ago.
  if [ -z "${BERTH_S3_ENDPOINT:-}" ]; then
    head -c 5000 /dev/zero >"$work/scrub/.berth/tmp/424242-1-1" &&
      touch -d '2 hours ago' "$work/scrub/.berth/tmp/424242-1-1" || return 1
  fi
  # A collection alone never finds the stray blob: no candidate names it.
  collect "$work/scrub" --gc-grace 0 >/dev/null && contains "$(stored_blobs "$work/scrub")" "$stray" || return 1
  local storage; mapfile -t storage < <(storage_flags "$work/scrub")
  "$binary" scrub "${storage[@]}" --log warn --dry-run | tee scrub-dry.out || return 1
  contains "$(cat scrub-dry.out)" "1 of 5 blobs (3000 bytes) nothing references" &&
  contains "$(stored_blobs "$work/scrub")" "$stray" || return 1
  "$binary" scrub "${storage[@]}" --log warn --gc-grace 0 | tee scrub.out || return 1
  contains "$(cat scrub.out)" "deleted 1 blobs (3000 bytes)" || return 1
  if [ -z "${BERTH_S3_ENDPOINT:-}" ]; then
    contains "$(cat scrub.out)" "removed 1 leftovers of killed writes (5000 bytes)" &&
      [ ! -e "$work/scrub/.berth/tmp/424242-1-1" ] || return 1
  fi
  ! stored_blobs "$work/scrub" | grep -q "$stray" &&
  equal "$(stored_blobs "$work/scrub" | wc -l)" 4 &&
  pull "$BERTH_ADDR/app/scrubbed:v1"
  local ok=$?; stop_server "$BERTH_PID"; return $ok
}
check "berth scrub: a blob nothing links (written by another tool) and a killed write's scratch file go; the image stays" scrub
killed_collector() {
  start_berth "$binary" "$work/killed" --gc --gc-grace 0 || return 1
  local r=$BERTH_ADDR
  push one:v1 "$r/kept:v1" || return 1
  python3 - "http://$r" <<'PY' || return 1
import hashlib, os, sys, urllib.request
for n in range(1000):
    data = os.urandom(64)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    request = urllib.request.Request(f"{sys.argv[1]}/v2/loose/blobs/uploads/?digest={digest}", data, method="POST")
    assert urllib.request.urlopen(request).status == 201
PY
  local storage; mapfile -t storage < <(storage_flags "$work/killed")
  "$binary" gc "${storage[@]}" --gc-grace 0 --log warn >/dev/null 2>&1 &
  local collector=$!
  # Killed once it has deleted something.
  while kill -0 "$collector" 2>/dev/null && [ "$(stored_blobs "$work/killed" | wc -l)" -eq 1004 ]; do
    sleep 0.01
  done
  kill -9 "$collector"; wait "$collector" 2>/dev/null
  local left; left=$(stored_blobs "$work/killed" | wc -l)
  echo "killed with $left blobs stored (of 1004)"
  [ "$left" -gt 4 ] || { echo "the collector finished before it was killed"; return 1; }
  collect "$work/killed" --gc-grace 0 >/dev/null &&
  equal "$(stored_blobs "$work/killed" | wc -l)" 4 && pull "$r/kept:v1"
}
check "kill -9 of a collector half-way: the next one finishes once its claims lapse; the image stays whole" killed_collector
stop_all_servers

# Both conformance suites against an instance that tracks references, with collections
# running beside them. (With no grace period at all, a blob may go between its upload and
# the manifest that references it: the push is refused, as the race below counts; the
# suites expect none to be.)
suites_with_collections() {
  start_berth "$binary" "$work/suites" --gc --gc-grace 0 || return 1
  (while [ ! -e suites.done ]; do collect "$work/suites" --gc-grace 1m >/dev/null 2>&1; done) &
  local collector=$!
  conformance_v1 "$BERTH_ADDR" 1 v1.out && conformance_next "$BERTH_ADDR" next.out
  local ok=$?
  touch suites.done; wait "$collector"
  stop_server "$BERTH_PID"
  return $ok
}
check "both conformance suites with references tracked, a collector running beside them" suites_with_collections

# layout_blobs LAYOUT: the digests of its tagged image: manifest, config, layers.
layout_blobs() {
  python3 - "$1" <<'PY'
import json, sys
layout = sys.argv[1]
digest = json.load(open(layout + "/index.json"))["manifests"][0]["digest"]
manifest = json.load(open(layout + "/blobs/sha256/" + digest[7:]))
print("\n".join([digest, manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]))
PY
}

race() {
  start_berth "$binary" "$work/race" --gc --gc-grace 0 || return 1
  local first=$BERTH_ADDR
  start_berth "$binary" "$work/race" --gc --gc-grace 0 || return 1
  local second=$BERTH_ADDR
  # The collector runs over and over beside the two instances while they are pushed to.
  (while [ ! -e race.done ]; do collect "$work/race" --gc-grace 0 --untagged >>collections.out 2>&1; done) &
  local collector=$!
  # Real clients beside the writers: crane (first instance) and skopeo (second) in turn move
  # one tag between two images, whose layers and manifest the collector may take while the
  # tag points away, and which the next push references again.
  (n=0; while [ ! -e race.done ]; do
    for image in one two; do
      if [ $((n % 2)) -eq 0 ]; then
        crane push --insecure "$image" "$first/clients/app:latest" >/dev/null 2>>clients.err
      else
        skopeo copy --dest-tls-verify=false "oci:$image" "docker://$second/clients/app:latest" >/dev/null 2>>clients.err
      fi && { echo "$image" >clients.last; echo ok >>clients.acked; } || echo refused >>clients.refused
      n=$((n + 1))
    done
  done) &
  local clients=$!
  python3 "$here/lib/gc_race.py" race 20 ledger.json "http://$first" "http://$second" | tee race.out
  local raced=${PIPESTATUS[0]}
  touch race.done; wait "$collector" "$clients"
  [ $raced -eq 0 ] || return 1
  # The tag holds the image of the last push acknowledged, whole, through both clients.
  local clients_said
  clients_said="crane and skopeo: $(wc -l <clients.acked) pushes acknowledged, $(cat clients.refused 2>/dev/null | wc -l) refused"
  echo "$clients_said"
  local last; last=$(cat clients.last) || return 1
  equal "$(manifest_digest "$second/v2/clients/app/manifests/latest")" \
    "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1] + "/index.json"))["manifests"][0]["digest"])' "$last")" &&
  crane validate --insecure --remote "$first/clients/app:latest" && pull "$second/clients/app:latest" || return 1
  echo "$(grep -c '^visited' collections.out) collections ran during the pushes:" \
    "$(awk '/untagged manifests/ {m += $2} /^visited/ {b += $5; l += $10}
      END {print m " untagged manifests, " b " blobs and " l " links deleted"}' collections.out)"
  python3 "$here/lib/gc_race.py" check "http://$first" ledger.json | tee race-check.out
  [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
  echo "berth, $(grep -c '^visited' collections.out) collections beside $(head -1 race.out): $(tail -1 race-check.out); $clients_said, the last whole" >race-verdict.out
  # With the pushes over, one more collection leaves exactly what the tags need.
  collect "$work/race" --gc-grace 0 --untagged >/dev/null &&
  python3 "$here/lib/gc_race.py" check "http://$second" ledger.json &&
  equal "$(stored_blobs "$work/race" | tr '\n' ' ')" \
    "$({ python3 "$here/lib/gc_race.py" needed ledger.json; layout_blobs "$(cat clients.last)"; } |
      sed 's/^sha256://' | sort -u | tr '\n' ' ')"
}
check "pushes moving tags on two instances racing the collector (untagged too, no grace period) lose nothing; what is left is what the tags need" race
[ -s race-verdict.out ] && log "$(cat race-verdict.out)"

# The same workload against registry:2, its own `garbage-collect --delete-untagged` run over and
# over beside it (what its docs warn against: distribution#3045): reported for comparison.
# Its check passes when the comparison ran; the broken images are registry:2's, not berth's.
registry2_race() {
  [ -z "${BERTH_S3_ENDPOINT:-}" ] || { echo "(on the filesystem only)"; return 0; }
  local port; port=$(free_port)
  registry_config "$work/r2race" "127.0.0.1:$port" >r2race.yml
  docker-registry serve r2race.yml >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  local registry=$!
  SERVER_PIDS+=("$registry")
  wait_http "http://127.0.0.1:$port/v2/" || return 1
  # About once a second, as often as berth's collector ran beside its pushes.
  (while [ ! -e r2race.done ]; do
    docker-registry garbage-collect --delete-untagged r2race.yml >>r2collections.out 2>&1
    sleep 1
  done) &
  local collector=$!
  python3 "$here/lib/gc_race.py" race 20 r2ledger.json "http://127.0.0.1:$port" | tee r2race.out
  touch r2race.done; wait "$collector"
  local verdict; verdict=$(python3 "$here/lib/gc_race.py" check "http://127.0.0.1:$port" r2ledger.json | tail -1)
  stop_server "$registry"
  echo "registry:2, $(grep -c 'blobs marked' r2collections.out) garbage-collect runs beside $(head -1 r2race.out): $verdict" |
    tee r2verdict.out
  grep -q 'tags, .* blobs verified' <<<"$verdict"
}
check "for comparison: registry:2 with its garbage-collect beside the same pushes (broken images reported)" registry2_race
[ -s r2verdict.out ] && log "$(cat r2verdict.out)"

stop_all_servers
summary gc
