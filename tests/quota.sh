#!/usr/bin/env bash
# Quotas with real clients against `berth serve --quotas`: crane, skopeo, oras and regctl
# pushes past a repository's or a namespace's limit fail with the registry's message (the
# limit and the usage), leave no tag behind, and pushes within it pass; usage at
# /v2/_usage/<name> and from `berth usage` is the bytes the clients pushed; content stored
# before quotas were set counts. With BERTH_S3_ENDPOINT set (tests/s3.sh), the same over S3.
#   tests/quota.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
export PATH=${BERTH_TOOLS:-$here/../.tools}/bin:$PATH
work=$(mktemp -d /tmp/berth-quota.XXXXXX)
export HOME=$work/home
mkdir -p "$HOME"
trap 'stop_all_servers; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"

rules='[{"repositories": "small/*", "limit": "100KiB"}, {"namespace": "team", "limit": "150KiB"}]'
layout() { python3 "$here/lib/make_oci_layout.py" "$@" >/dev/null; }
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
# bytes_of LAYOUT: what pushing the layout's image stores: its config, layers and manifest.
bytes_of() {
  python3 - "$1" <<'PY'
import json, os, sys
layout = sys.argv[1]
blob = lambda digest: os.path.join(layout, "blobs", "sha256", digest.split(":")[1])
manifest = json.load(open(os.path.join(layout, "index.json")))["manifests"][0]
document = json.load(open(blob(manifest["digest"])))
print(manifest["size"] + document["config"]["size"] + sum(layer["size"] for layer in document["layers"]))
PY
}
usage_of() { curl -s "http://$BERTH_ADDR/v2/_usage/$1" | python3 -c "import json,sys; print(json.load(sys.stdin)$2)"; }

# Images: 2 x 30 KiB layers (fits 100 KiB), 2 x 60 KiB (does not), and 2 x 25 KiB.
layout fits v1 --layers 2 --size 30000
layout big v1 --layers 2 --size 60000
layout more v1 --layers 2 --size 25000
head -c 120000 /dev/urandom >artifact.bin

start_berth "$binary" "$work/root" --quotas "$rules" || exit 1
R=$BERTH_ADDR

# refused OUTPUT: a client's output carries the registry's refusal.
refused() { contains "$1" "quota exceeded" && contains "$1" "limit"; }

crane_refused() {
  crane push --insecure fits "$R/small/crane:v1" || return 1
  local out; out=$(crane push --insecure big "$R/small/crane:v2" 2>&1) && return 1
  echo "$out" | tail -2
  refused "$out" && contains "$out" "repository small/crane" &&
  equal "$(status "http://$R/v2/small/crane/manifests/v2")" 404 &&
  crane validate --insecure --remote "$R/small/crane:v1"
}
check "crane: an image within the quota is pushed; one past it fails with the limit and the usage, and no tag appears" crane_refused

# (skopeo sends layers at once: one may be stored before the other is refused. It stays
# linked, and counted, until deleted or collected, as layers of any push that fails do.)
skopeo_refused() {
  local out; out=$(skopeo copy --dest-tls-verify=false oci:big:v1 "docker://$R/small/skopeo:v1" 2>&1) && return 1
  echo "$out" | tail -1
  refused "$out" && equal "$(status "http://$R/v2/small/skopeo/manifests/v1")" 404 &&
  skopeo copy --dest-tls-verify=false oci:fits:v1 "docker://$R/small/skopeo-2:v1" >/dev/null
}
check "skopeo: a push past the quota fails with the registry's message; an image that fits passes" skopeo_refused

oras_refused() {
  local out; out=$(oras push --plain-http "$R/small/oras:v1" artifact.bin:application/octet-stream 2>&1) && return 1
  echo "$out" | tail -1
  refused "$out" && equal "$(status "http://$R/v2/small/oras/manifests/v1")" 404
}
check "oras: an artifact past the quota fails with the registry's message" oras_refused

regctl_namespace() {
  regctl registry set --tls disabled "$R" >/dev/null || return 1
  local image
  for image in fits more big; do tar -C "$image" -cf "$image.tar" . || return 1; done
  regctl image import "$R/team/a:v1" fits.tar >/dev/null &&
  regctl image import "$R/team/b:v1" more.tar >/dev/null || return 1
  # 60 + 50 KiB held in team/*, so 120 KiB more passes the namespace's 150 KiB.
  local out; out=$(regctl image import "$R/team/c:v1" big.tar 2>&1) && return 1
  echo "$out" | tail -1
  refused "$out" && contains "$out" "namespace team"
}
check "regctl: repositories of a namespace count together: a third image past the namespace's limit fails" regctl_namespace

usage_reported() {
  local fits more
  fits=$(bytes_of fits) more=$(bytes_of more)
  equal "$(usage_of small/skopeo-2 '["bytes"]')" "$fits" &&
  equal "$(usage_of small/skopeo-2 '["quotas"][0]["limit"]')" 102400 &&
  equal "$(usage_of team/b '["bytes"]')" "$more" || return 1
  # team/c holds what regctl pushed of its image before the refusal (its config, say).
  local partial; partial=$(usage_of team/c '["bytes"]')
  equal "$(usage_of team '["below"]["bytes"]')" "$((fits + more + partial))" || return 1
  # The command line says the same (servers may run meanwhile).
  local storage; mapfile -t storage < <(storage_flags "$work/root")
  "$binary" usage team/a "${storage[@]}" --quotas "$rules" --log warn >usage.json &&
  equal "$(python3 -c 'import json; u = json.load(open("usage.json")); print(u["bytes"], u["quotas"][0]["used"])')" \
    "$fits $((fits + more + partial))"
}
check "usage: /v2/_usage and berth usage report the bytes the clients pushed, per repository and per namespace" usage_reported

# blobs_of LAYOUT: the digests of its image's config and layers.
blobs_of() {
  python3 -c 'import json,sys; d = "%s/blobs/sha256/" % sys.argv[1]; m = json.load(open(d + json.load(open(sys.argv[1] + "/index.json"))["manifests"][0]["digest"][7:])); print(" ".join(b["digest"] for b in [m["config"]] + m["layers"]))' "$1"
}

deletes_give_back() {
  local digest; digest=$(crane digest --insecure "$R/small/crane:v1") || return 1
  equal "$(status -X DELETE "http://$R/v2/small/crane/manifests/$digest")" 202 || return 1
  for blob in $(blobs_of fits); do
    equal "$(status -X DELETE "http://$R/v2/small/crane/blobs/$blob")" 202 || return 1
  done
  # What crane stored of the refused image before the refusal goes too.
  for blob in $(blobs_of big); do
    contains "202 404" "$(status -X DELETE "http://$R/v2/small/crane/blobs/$blob")" || return 1
  done
  equal "$(usage_of small/crane '["bytes"]')" 0 &&
  # With the room back, the big image passes where it failed.
  layout bigger v1 --layers 1 --size 90000 && crane push --insecure bigger "$R/small/crane:v3"
}
check "deleting an image gives its bytes back: a push refused before now passes" deletes_give_back

host_checks() { python3 "$here/lib/quota_host.py" "http://$R"; }
stop_server "$BERTH_PID"
start_berth "$binary" "$work/root" \
  --quotas '[{"repositories": "quota/*", "limit": 4096}, {"namespace": "quota", "limit": 6144}]' || exit 1
R=$BERTH_ADDR
check "over HTTP: announced and chunked uploads past a limit refused with nothing left behind, the same blob twice costs nothing, deletes give back" host_checks
stop_server "$BERTH_PID"

counted_before() {
  start_berth "$binary" "$work/before" || return 1
  skopeo copy --dest-tls-verify=false oci:big:v1 "docker://$BERTH_ADDR/small/old:v1" >/dev/null || return 1
  stop_server "$BERTH_PID"
  start_berth "$binary" "$work/before" --quotas "$rules" || return 1
  local out; out=$(crane push --insecure more "$BERTH_ADDR/small/old:v2" 2>&1) && return 1
  refused "$out" && equal "$(usage_of small/old '["bytes"]')" "$(bytes_of big)"
}
check "content pushed before quotas were set is counted the first time a limit is checked" counted_before

summary quota
