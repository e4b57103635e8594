#!/usr/bin/env bash
# registry:2 compatibility: what berth writes, registry:2 (Debian's docker-registry) serves,
# and berth serves a root that registry:2 wrote.
#   tests/registry2.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
work=$(mktemp -d /tmp/berth-registry2.XXXXXX)
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"

# start_registry2 ROOT: Debian's registry:2 over ROOT on a free port; sets REGISTRY2_ADDR.
start_registry2() {
  local port; port=$(free_port)
  REGISTRY2_ADDR=127.0.0.1:$port
  registry_config "$1" "$REGISTRY2_ADDR" >"$work/registry2-$port.yml"
  docker-registry serve "$work/registry2-$port.yml" >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  REGISTRY2_PID=$!
  SERVER_PIDS+=("$REGISTRY2_PID")
  wait_http "http://$REGISTRY2_ADDR/v2/"
}

layout() { python3 "$here/lib/make_oci_layout.py" "$@"; }
digest_of_layout() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["digest"])' "$1"; }
raw_digest() { echo "sha256:$(skopeo inspect --tls-verify=false --raw "docker://$1" | sha256sum | cut -d' ' -f1)"; }
push() { skopeo copy --all --dest-tls-verify=false "oci:$1" "docker://$2"; }
pull() { skopeo copy --all --src-tls-verify=false "docker://$1" "oci:$2"; }

image_digest=$(layout image v1 --layers 2 --size 200000)
index_digest=$(layout multi v2 --platforms linux/amd64,linux/arm64)

log "registry:2 ($(docker-registry --version 2>&1 | head -1))"
berth_to_registry2() {
  start_berth "$binary" "$work/berth-root" || return 1
  push image:v1 "$BERTH_ADDR/compat/image:v1" && push multi:v2 "$BERTH_ADDR/compat/multi:v2" || return 1
  stop_server "$BERTH_PID"
  start_registry2 "$work/berth-root" || return 1
  equal "$(raw_digest "$REGISTRY2_ADDR/compat/image:v1")" "$image_digest" &&
  equal "$(raw_digest "$REGISTRY2_ADDR/compat/multi:v2")" "$index_digest" &&
  pull "$REGISTRY2_ADDR/compat/image:v1" from-registry2:v1 &&
  equal "$(digest_of_layout from-registry2)" "$image_digest" &&
  pull "$REGISTRY2_ADDR/compat/multi:v2" multi-from-registry2:v2 &&
  equal "$(digest_of_layout multi-from-registry2)" "$index_digest" &&
  contains "$(curl -s "http://$REGISTRY2_ADDR/v2/_catalog")" '"compat/image","compat/multi"' &&
  contains "$(curl -s "http://$REGISTRY2_ADDR/v2/compat/image/tags/list")" '"tags":["v1"]'
  local ok=$?
  stop_server "$REGISTRY2_PID"
  return $ok
}
check "push to berth, registry:2 serves the same root, skopeo pulls equal digests" berth_to_registry2

registry2_to_berth() {
  start_registry2 "$work/registry2-root" || return 1
  push image:v1 "$REGISTRY2_ADDR/compat/image:v1" && push multi:v2 "$REGISTRY2_ADDR/compat/multi:v2" || return 1
  stop_server "$REGISTRY2_PID"
  start_berth "$binary" "$work/registry2-root" || return 1
  equal "$(raw_digest "$BERTH_ADDR/compat/image:v1")" "$image_digest" &&
  equal "$(raw_digest "$BERTH_ADDR/compat/multi:v2")" "$index_digest" &&
  pull "$BERTH_ADDR/compat/image:v1" from-berth:v1 &&
  equal "$(digest_of_layout from-berth)" "$image_digest" &&
  pull "$BERTH_ADDR/compat/multi:v2" multi-from-berth:v2 &&
  equal "$(digest_of_layout multi-from-berth)" "$index_digest" &&
  contains "$(curl -s "http://$BERTH_ADDR/v2/_catalog")" '"compat/image","compat/multi"' &&
  contains "$(curl -s "http://$BERTH_ADDR/v2/compat/image/tags/list")" '"tags":["v1"]' &&
  # berth keeps writing into the root registry:2 made: a new tag, then registry:2 reads it.
  skopeo copy --src-tls-verify=false --dest-tls-verify=false \
    "docker://$BERTH_ADDR/compat/image:v1" "docker://$BERTH_ADDR/compat/image:v1-copy"
  local ok=$?
  stop_server "$BERTH_PID"
  [ $ok -eq 0 ] || return $ok
  start_registry2 "$work/registry2-root" || return 1
  equal "$(raw_digest "$REGISTRY2_ADDR/compat/image:v1-copy")" "$image_digest"
  ok=$?
  stop_server "$REGISTRY2_PID"
  return $ok
}
check "push to registry:2, berth serves the same root, skopeo pulls equal digests" registry2_to_berth

summary registry2
