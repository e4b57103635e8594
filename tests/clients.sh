#!/usr/bin/env bash
# Real clients against `berth serve`: skopeo, crane, oras and regctl push and pull OCI layouts,
# multi-arch indexes and artifacts with referrers, list tags, and delete.
#   tests/clients.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
export PATH=${BERTH_TOOLS:-$here/../.tools}/bin:$PATH
work=$(mktemp -d /tmp/berth-clients.XXXXXX)
export HOME=$work/home REGCTL_CONFIG=$work/home/regctl.json
mkdir -p "$HOME"
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"

start_berth "$binary" "$work/root"
R=$BERTH_ADDR
layout() { python3 "$here/lib/make_oci_layout.py" "$@"; }
digest_of_layout() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["digest"])' "$1"; }
raw_digest() { echo "sha256:$(skopeo inspect --tls-verify=false --raw "docker://$1" | sha256sum | cut -d' ' -f1)"; }

image_digest=$(layout image v1 --layers 3 --size 300000)
index_digest=$(layout multi v2 --platforms linux/amd64,linux/arm64,linux/s390x)

log "skopeo $(skopeo --version | cut -d' ' -f3)"
skopeo_round_trip() {
  skopeo copy --dest-tls-verify=false oci:image:v1 "docker://$R/skopeo/image:v1" &&
  equal "$(raw_digest "$R/skopeo/image:v1")" "$image_digest" &&
  skopeo copy --src-tls-verify=false "docker://$R/skopeo/image:v1" oci:pulled:v1 &&
  equal "$(digest_of_layout pulled)" "$image_digest"
}
check "skopeo: push an OCI layout, pull it back with the same digest" skopeo_round_trip
skopeo_multi() {
  skopeo copy --all --dest-tls-verify=false oci:multi:v2 "docker://$R/skopeo/multi:v2" &&
  equal "$(raw_digest "$R/skopeo/multi:v2")" "$index_digest" &&
  skopeo copy --all --src-tls-verify=false "docker://$R/skopeo/multi:v2" oci:multi-pulled:v2 &&
  equal "$(digest_of_layout multi-pulled)" "$index_digest" &&
  equal "$(ls multi-pulled/blobs/sha256 | wc -l)" "$(ls multi/blobs/sha256 | wc -l)"
}
check "skopeo: multi-arch index round trip (--all)" skopeo_multi
check "skopeo: tag list" bash -c "skopeo list-tags --tls-verify=false docker://$R/skopeo/image | grep -q '\"v1\"'"
skopeo_delete() {
  skopeo delete --tls-verify=false "docker://$R/skopeo/image:v1" &&
  ! skopeo inspect --tls-verify=false --raw "docker://$R/skopeo/image:v1"
}
check "skopeo: delete" skopeo_delete

log "crane $(crane version)"
crane_round_trip() {
  crane push --insecure image "$R/crane/image:v1" &&
  equal "$(crane digest --insecure "$R/crane/image:v1")" "$image_digest" &&
  crane pull --insecure --format oci "$R/crane/image:v1" crane-pulled &&
  equal "$(crane digest --insecure "$R/crane/image@$image_digest")" "$image_digest" &&
  crane validate --insecure --remote "$R/crane/image:v1"
}
check "crane: push an OCI layout, pull and validate it" crane_round_trip
crane_multi() {
  crane push --insecure multi "$R/crane/multi:v2" &&
  equal "$(crane digest --insecure "$R/crane/multi:v2")" "$index_digest" &&
  crane validate --insecure --remote "$R/crane/multi:v2" &&
  equal "$(crane digest --insecure --platform linux/arm64 "$R/crane/multi:v2")" \
        "$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["manifests"]; print([d["digest"] for d in m if d["platform"]["architecture"]=="arm64"][0])' "multi/blobs/sha256/${index_digest#sha256:}")"
}
check "crane: multi-arch index, platform selection" crane_multi
crane_tags() {
  crane tag --insecure "$R/crane/image:v1" v1.1 && crane tag --insecure "$R/crane/image:v1" latest &&
  equal "$(crane ls --insecure "$R/crane/image" | paste -sd,)" "latest,v1,v1.1" &&
  contains "$(crane catalog --insecure "$R")" "crane/multi"
}
check "crane: tag, tag list in order, catalog" crane_tags
crane_delete() {
  crane delete --insecure "$R/crane/image@$image_digest" &&
  ! crane digest --insecure "$R/crane/image:v1" &&
  equal "$(crane ls --insecure "$R/crane/image" | wc -l)" "0"
}
check "crane: delete by digest removes its tags" crane_delete

log "oras $(oras version | head -1)"
echo "hello artifact" >artifact.txt
oras_artifact() {
  oras push --plain-http --artifact-type application/vnd.berth.test "$R/oras/artifact:v1" artifact.txt:text/plain &&
  oras pull --plain-http -o oras-pulled "$R/oras/artifact:v1" &&
  cmp artifact.txt oras-pulled/artifact.txt
}
check "oras: push and pull an artifact" oras_artifact
oras_referrers() {
  local i pids=()
  # Eight referrers of one subject pushed at the same time: none may be lost.
  for i in 1 2 3 4 5 6 7 8; do
    echo "signature $i" >"sig$i.txt"
    oras attach --plain-http --artifact-type "application/vnd.berth.sig$((i % 2))" \
      "$R/oras/artifact:v1" "sig$i.txt:text/plain" >/dev/null &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || return 1; done
  local all odd
  all=$(oras discover --plain-http --format json "$R/oras/artifact:v1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["referrers"]))')
  odd=$(oras discover --plain-http --format json --artifact-type application/vnd.berth.sig1 "$R/oras/artifact:v1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["referrers"]))')
  equal "$all" 8 && equal "$odd" 4
}
check "oras: 8 concurrent referrers of one subject, all listed, artifactType filter" oras_referrers
oras_tags_delete() {
  oras tag --plain-http "$R/oras/artifact:v1" v2 &&
  equal "$(oras repo tags --plain-http "$R/oras/artifact" | paste -sd,)" "v1,v2" &&
  equal "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://$R/v2/oras/artifact/manifests/v2")" 202 &&
  equal "$(oras repo tags --plain-http "$R/oras/artifact" | paste -sd,)" "v1" &&
  oras manifest delete --plain-http --force "$R/oras/artifact:v1" &&
  equal "$(oras repo tags --plain-http "$R/oras/artifact" | wc -l)" 0 &&
  ! oras manifest fetch --plain-http "$R/oras/artifact:v1"
}
check "oras: tag, delete a tag, delete the manifest" oras_tags_delete

log "regctl $(regctl version --format '{{.VCSTag}}' 2>/dev/null)"
regctl registry set --tls disabled "$R" >/dev/null
regctl_round_trip() {
  regctl image copy ocidir://multi:v2 "$R/regctl/multi:v2" &&
  equal "$(regctl image digest "$R/regctl/multi:v2")" "$index_digest" &&
  regctl image copy "$R/regctl/multi:v2" ocidir://regctl-pulled:v2 &&
  equal "$(digest_of_layout regctl-pulled)" "$index_digest" &&
  regctl image check-base "$R/regctl/multi:v2" >/dev/null 2>&1; true
}
check "regctl: multi-arch index round trip through ocidir" regctl_round_trip
regctl_artifact() {
  echo sbom | regctl artifact put --artifact-type application/vnd.berth.sbom --subject "$R/regctl/multi:v2" &&
  equal "$(regctl artifact list "$R/regctl/multi:v2" --format '{{len .Descriptors}}')" 1 &&
  equal "$(regctl artifact list --filter-artifact-type application/vnd.berth.sbom "$R/regctl/multi:v2" --format '{{len .Descriptors}}')" 1
}
check "regctl: artifact with a subject, listed as a referrer" regctl_artifact
regctl_delete() {
  regctl tag ls "$R/regctl/multi" | grep -qx v2 &&
  regctl tag delete "$R/regctl/multi:v2" &&
  equal "$(regctl tag ls "$R/regctl/multi" | wc -l)" 0 &&
  regctl manifest head "$R/regctl/multi@$index_digest" >/dev/null
}
check "regctl: tag list, delete a tag (the manifest stays)" regctl_delete

summary clients
