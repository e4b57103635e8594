#!/usr/bin/env bash
# Logging in to `berth serve --htpasswd --access`, with real clients: skopeo, crane, oras and
# regctl log in (or pass credentials) and push and pull where the rules allow, are refused
# where they do not (and nothing is stored), a tag moves only with `overwrite` and an
# immutable one not at all, anonymous callers reach only the public tree,
# the catalog shows each caller what it may pull, a changed htpasswd file is re-read, and
# both conformance suites pass with credentials.
#   tests/auth.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
export PATH=${BERTH_TOOLS:-$here/../.tools}/bin:$PATH
work=$(mktemp -d /tmp/berth-auth.XXXXXX)
export HOME=$work/home REGCTL_CONFIG=$work/home/regctl.json DOCKER_CONFIG=$work/home/docker
mkdir -p "$HOME" "$DOCKER_CONFIG"
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"

command -v htpasswd >/dev/null || { echo "htpasswd is missing: scripts/install-test-deps.sh installs apache2-utils" >&2; echo "auth: 0 passed, 1 failed"; exit 1; }
htpasswd -Bbc users alice s3cret 2>/dev/null
htpasswd -Bb users bob hunter2 2>/dev/null
cat >access.toml <<'EOF'
[groups]
team-a = ["alice"]

[repositories."team-a/**"]
policies = [{ groups = ["team-a"], actions = ["pull", "push", "overwrite", "delete"] }]
immutable-tags = ["release-*"]

[repositories."conformance/**"]
policies = [{ users = ["alice"], actions = ["pull", "push", "overwrite", "delete"] }]

[repositories."public/**"]
policies = [{ users = ["alice"], actions = ["pull", "push"] }]
default = ["pull"]
anonymous = ["pull"]
EOF

start_berth "$binary" "$work/root" --htpasswd users --access access.toml
R=$BERTH_ADDR
layout() { python3 "$here/lib/make_oci_layout.py" "$@"; }
image_digest=$(layout image v1 --layers 2 --size 100000)
other_digest=$(layout other v1 --layers 1 --size 1000)
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

challenges() {
  local head; head=$(curl -s -D - -o /dev/null "http://$R/v2/team-a/app/tags/list" | tr -d '\r')
  contains "$head" "HTTP/1.1 401" && contains "$head" 'www-authenticate: Basic realm="berth"' &&
  equal "$(code -u alice:wrong "http://$R/v2/team-a/app/tags/list")" 401 &&
  equal "$(code -H 'Authorization: Basic !!' "http://$R/v2/team-a/app/tags/list")" 401 &&
  equal "$(code -u bob:hunter2 "http://$R/v2/team-a/app/tags/list")" 403 &&
  contains "$(curl -s -u bob:hunter2 "http://$R/v2/team-a/app/tags/list")" '"code":"DENIED"'
}
check "no, wrong or malformed credentials get 401 and a Basic challenge; a user without the right 403" challenges

skopeo_rules() {
  skopeo copy --dest-tls-verify=false --dest-creds alice:s3cret oci:image:v1 "docker://$R/team-a/app:v1" &&
  skopeo copy --src-tls-verify=false --src-creds alice:s3cret "docker://$R/team-a/app:v1" oci:pulled:v1 &&
  ! skopeo copy --dest-tls-verify=false --dest-creds bob:hunter2 oci:image:v1 "docker://$R/team-a/bob:v1" 2>/dev/null &&
  ! skopeo copy --src-tls-verify=false "docker://$R/team-a/app:v1" oci:anonymous:v1 2>/dev/null &&
  [ ! -e "$work/root/docker/registry/v2/repositories/team-a/bob" ]
}
check "skopeo --creds: alice pushes and pulls team-a; bob and anonymous are refused, nothing stored" skopeo_rules

crane_login() {
  crane auth login "$R" -u alice -p s3cret --insecure 2>/dev/null &&
  crane push --insecure image "$R/public/app:v1" &&
  crane auth logout "$R" 2>/dev/null &&
  equal "$(crane digest --insecure "$R/public/app:v1")" "$image_digest" &&
  ! crane push --insecure image "$R/public/app:v2" 2>/dev/null
}
check "crane auth login: alice pushes to public; anonymous pulls it and may not push" crane_login

overwrite() {
  crane auth login "$R" -u alice -p s3cret --insecure 2>/dev/null &&
  crane push --insecure image "$R/public/app:v1" &&
  ! crane push --insecure other "$R/public/app:v1" 2>/dev/null &&
  equal "$(crane digest --insecure "$R/public/app:v1")" "$image_digest" &&
  crane push --insecure other "$R/team-a/app:v1" &&
  equal "$(crane digest --insecure "$R/team-a/app:v1")" "$other_digest" &&
  crane auth logout "$R" 2>/dev/null
}
check "overwrite: alice may push public tags but not move them; in team-a she may" overwrite

immutable() {
  crane auth login "$R" -u alice -p s3cret --insecure 2>/dev/null &&
  crane push --insecure image "$R/team-a/app:release-1" &&
  crane push --insecure image "$R/team-a/app:release-1" &&
  ! crane push --insecure other "$R/team-a/app:release-1" 2>/dev/null &&
  ! crane delete --insecure "$R/team-a/app:release-1" 2>/dev/null &&
  contains "$(curl -s -u alice:s3cret -X DELETE "http://$R/v2/team-a/app/manifests/release-1")" immutable &&
  equal "$(crane digest --insecure "$R/team-a/app:release-1")" "$image_digest" &&
  crane auth logout "$R" 2>/dev/null
}
check "immutable tags: release-* is pushed once, then neither moved nor deleted, even by alice" immutable

oras_regctl() {
  oras login --plain-http -u alice -p s3cret "$R" >/dev/null 2>&1 &&
  echo artifact >note.txt &&
  oras push --plain-http "$R/team-a/notes:v1" note.txt >/dev/null &&
  regctl registry set --tls disabled "$R" >/dev/null &&
  regctl registry login "$R" -u bob -p hunter2 >/dev/null 2>&1 &&
  regctl tag ls "$R/public/app" | grep -qx v1 &&
  ! regctl tag ls "$R/team-a/notes" 2>/dev/null
}
check "oras login pushes an artifact to team-a; regctl as bob lists public tags, not team-a's" oras_regctl

catalog() {
  local alice bob anonymous
  alice=$(curl -s -u alice:s3cret "http://$R/v2/_catalog")
  bob=$(curl -s -u bob:hunter2 "http://$R/v2/_catalog")
  anonymous=$(curl -s "http://$R/v2/_catalog")
  contains "$alice" team-a/app && contains "$alice" public/app &&
  contains "$bob" public/app && ! contains "$bob" team-a &&
  contains "$anonymous" public/app && ! contains "$anonymous" team-a
}
check "the catalog lists, for each caller, only what it may pull" catalog

mounts() {
  # A layer of the image pushed to team-a/app (not its manifest or index: those are not
  # mountable blobs).
  local layer; layer=$(python3 -c '
import json
index = json.load(open("image/index.json"))
manifest = index["manifests"][0]["digest"].split(":")[1]
print(json.load(open("image/blobs/sha256/" + manifest))["layers"][0]["digest"].split(":")[1])')
  # bob cannot pull team-a, so neither mount form links its blob into public/.
  equal "$(code -u bob:hunter2 -X POST "http://$R/v2/public/bob/blobs/uploads/?mount=sha256:$layer&from=team-a/app")" 403 &&
  equal "$(code -u alice:s3cret -X POST "http://$R/v2/public/alice/blobs/uploads/?mount=sha256:$layer")" 202 &&
  equal "$(code -u alice:s3cret -X POST "http://$R/v2/public/alice/blobs/uploads/?mount=sha256:$layer&from=team-a/app")" 201
}
check "mounts: only from a repository the caller may pull, never automatic" mounts

reread() {
  equal "$(code -u carol:pw "http://$R/v2/_catalog")" 401 &&
  htpasswd -Bb users carol pw 2>/dev/null &&
  touch -d '+1 second' users &&
  sleep 6 &&
  equal "$(code -u carol:pw "http://$R/v2/_catalog")" 200
}
check "a user added to the htpasswd file logs in without a restart" reread

suites() {
  OCI_USERNAME=alice OCI_PASSWORD=s3cret conformance_v1 "$R" 0 "$work/v1.out" &&
  OCI_USERNAME=alice OCI_PASSWORD=s3cret conformance_next "$R" "$work/next.out"
}
check "both conformance suites, logged in as alice" suites

stop_all_servers
summary auth
