#!/usr/bin/env bash
# The pull-through cache with real clients and real upstreams on loopback: Debian's
# registry:2 (its access log counts what berth asks of it), and a scripted upstream
# (tests/lib/proxy_upstream.py) that rate-limits, corrupts and dies mid-blob. Two berth
# instances over one root cache `docker-hub/` (and `ns=docker.io`) from the upstream.
#   tests/proxy.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
export PATH=${BERTH_TOOLS:-$here/../.tools}/bin:$PATH
work=$(mktemp -d /tmp/berth-proxy.XXXXXX)
export HOME=$work/home
mkdir -p "$HOME"
trap 'stop_all_servers; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"

layout() { python3 "$here/lib/make_oci_layout.py" "$@" >/dev/null; }
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

# The upstream: registry:2 with its access log on, seeded with skopeo.
up_port=$(free_port)
UP=127.0.0.1:$up_port
registry_config "$work/upstream" "$UP" | sed 's/disabled: true/disabled: false/; s/level: warn/level: error/' >upstream.yml
start_upstream() {
  docker-registry serve upstream.yml >>upstream.log 2>&1 &
  UP_PID=$!
  SERVER_PIDS+=("$UP_PID")
  wait_http "http://$UP/v2/"
}
start_upstream || exit 1
layout demo v1 --layers 2 --size 300000
layout multi v1 --platforms linux/amd64,linux/arm64 --layers 1 --size 200000
layout crowd v1 --layers 3 --size 2000000
for image in demo multi crowd; do
  skopeo copy -q --all --dest-tls-verify=false "oci:$image:v1" "docker://$UP/library/$image:v1" || exit 1
done

# upstream_count METHOD PATH-PATTERN: requests the upstream logged since the last mark.
mark_upstream() { UP_MARK=$(wc -l <upstream.log); }
upstream_count() {
  tail -n +"$((UP_MARK + 1))" upstream.log | grep -cE "\"$1 /v2/$2 HTTP" || true
}
blob_digests() {
  python3 - "$1" <<'PY'
import json, os, sys
layout = sys.argv[1]
read = lambda d: json.load(open(os.path.join(layout, "blobs", "sha256", d.split(":")[1])))
top = json.load(open(os.path.join(layout, "index.json")))["manifests"][0]
document = read(top["digest"])
for manifest in document.get("manifests", [document]):
    image = read(manifest["digest"]) if "manifests" in document else document
    print(image["config"]["digest"])
    for layer in image["layers"]:
        print(layer["digest"])
PY
}

rules="[{\"prefix\": \"docker-hub\", \"namespace\": \"docker.io\", \"urls\": [\"http://$UP\"], \"revalidate\": \"3s\", \"stale-if-error\": \"1h\"}]"
start_berth "$binary" "$work/root" --upstreams "$rules" || exit 1
A=$BERTH_ADDR
start_berth "$binary" "$work/root" --upstreams "$rules" || exit 1
B=$BERTH_ADDR

# Cold: one GET of the tag and one GET per blob upstream; warm within the window: nothing;
# after the window: one HEAD of the tag, nothing else.
crane_cold_warm() {
  mark_upstream
  crane pull --insecure --format oci "$A/docker-hub/demo:v1" cold || return 1
  crane validate --insecure --remote "$A/docker-hub/demo:v1" || return 1
  local digest
  for digest in $(blob_digests demo); do
    equal "$(upstream_count GET "library/demo/blobs/$digest")" 1 || return 1
  done
  equal "$(upstream_count GET 'library/demo/manifests/v1')" 1 &&
  mark_upstream &&
  crane pull --insecure --format oci "$B/docker-hub/demo:v1" warm &&
  diff -r cold warm &&
  equal "$(upstream_count '[A-Z]+' 'library/demo/.*')" 0 &&
  sleep 3.5 &&
  crane pull --insecure --format oci "$A/docker-hub/demo:v1" again &&
  equal "$(upstream_count HEAD 'library/demo/manifests/v1')" 1 &&
  equal "$(upstream_count GET 'library/demo/.*')" 0
}
check "crane through the prefix: a cold pull costs 1 upstream GET per blob and of the tag, a warm one (other instance) none, a pull after the revalidation window 1 HEAD" crane_cold_warm

# skopeo and podman take berth as docker.io's mirror (the primary on a dead loopback port,
# so nothing reaches a public host); the mirror's location carries the prefix.
dead=$(free_port)
mkdir -p "$HOME/.config/containers"
cat >"$HOME/.config/containers/registries.conf" <<CONF
[[registry]]
prefix = "docker.io"
location = "127.0.0.1:$dead"
insecure = true
[[registry.mirror]]
location = "$A/docker-hub"
insecure = true
CONF
export CONTAINERS_REGISTRIES_CONF=$HOME/.config/containers/registries.conf
podman_here() { podman --storage-driver vfs --root "$work/podman" --runroot "$work/podman-run" "$@"; }
mirror_clients() {
  mark_upstream
  skopeo --registries-conf "$CONTAINERS_REGISTRIES_CONF" copy -q --all \
    docker://docker.io/library/multi:v1 oci:multi-out:v1 || return 1
  skopeo --registries-conf "$CONTAINERS_REGISTRIES_CONF" inspect --raw \
    docker://docker.io/library/multi:v1 | grep -q '"manifests"' || return 1
  local digest
  for digest in $(blob_digests multi); do
    equal "$(upstream_count GET "library/multi/blobs/$digest")" 1 || return 1
  done
  podman_here pull -q docker.io/library/demo:v1 >/dev/null &&
  podman_here image exists docker.io/library/demo:v1
}
check "skopeo (a two-platform index, --all) and podman pull docker.io images through berth as a registries.conf mirror; each blob fetched once" mirror_clients

# The Docker daemon's registry-mirrors: it asks the mirror's root for library/demo, with no
# ns; a berth whose rule has the empty prefix mirrors the upstream at its root. (Were the
# mirror to fail, dockerd would try Docker Hub, which this machine cannot reach.)
docker_mirror() {
  start_berth "$binary" "$work/mirror-root" --upstream "=http://$UP" || return 1
  local mirror=$BERTH_ADDR dk=$work/dk
  mkdir -p "$dk"
  dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver vfs \
    --data-root "$dk/data" --exec-root "$dk/exec" --pidfile "$dk/docker.pid" \
    -H "unix://$dk/docker.sock" --registry-mirror "http://$mirror" \
    --insecure-registry "$mirror" >"$dk/dockerd.log" 2>&1 &
  SERVER_PIDS+=($!)
  local deadline=$((SECONDS + 30))
  until DOCKER_HOST=unix://$dk/docker.sock docker version >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { tail -5 "$dk/dockerd.log"; return 1; }
    sleep 0.5
  done
  mark_upstream
  DOCKER_HOST=unix://$dk/docker.sock docker pull -q demo:v1 || return 1
  local digest
  for digest in $(blob_digests demo); do
    equal "$(upstream_count GET "library/demo/blobs/$digest")" 1 || return 1
  done
  DOCKER_HOST=unix://$dk/docker.sock docker image inspect demo:v1 >/dev/null
}
check "the Docker daemon pulls docker.io images through berth as its registry-mirrors target (a mirror at the root); each blob fetched once" docker_mirror

# The ns form and the prefix form are one cache; an unknown ns is an ordinary repository.
ns_routing() {
  mark_upstream
  local headers; headers=$(curl -s -D - -o /dev/null \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$B/v2/library/demo/manifests/v1?ns=docker.io")
  contains "$headers" "200" && contains "${headers,,}" "oci-namespace: docker.io" &&
  equal "$(upstream_count GET 'library/demo/.*')" 0 &&
  equal "$(status "http://$B/v2/library/demo/manifests/v1?ns=quay.io")" 404 &&
  oras manifest fetch --plain-http "$A/docker-hub/library/demo:v1" >/dev/null &&
  regctl --host "reg=$A,tls=disabled" image digest "$A/docker-hub/demo:v1" >/dev/null
}
check "curl with ns=docker.io, oras and regctl with the prefix read the same cache (no upstream call); an unknown ns is ignored" ns_routing

# `berth mirror` pre-fills: of a two-platform index, only the platform asked for is fetched
# (each blob once); a pull afterwards costs no blob GET; mirroring again fetches nothing.
mirrored() {
  layout pre v1 --platforms linux/amd64,linux/arm64 --layers 1 --size 120000 &&
  skopeo copy -q --all --dest-tls-verify=false oci:pre:v1 "docker://$UP/library/pre:v1" || return 1
  local storage; mapfile -t storage < <(storage_flags "$work/root")
  local blobs; mapfile -t blobs < <(blob_digests pre)
  mark_upstream
  "$binary" mirror "${storage[@]}" --upstreams "$rules" --log warn --platform linux/arm64 \
    docker-hub/pre:v1 | tee mirror.out || return 1
  contains "$(cat mirror.out)" "docker-hub/pre:v1: 2 manifests; fetched 2 blobs" &&
  equal "$(upstream_count GET "library/pre/blobs/${blobs[0]}")" 0 &&
  equal "$(upstream_count GET "library/pre/blobs/${blobs[1]}")" 0 &&
  equal "$(upstream_count GET "library/pre/blobs/${blobs[2]}")" 1 &&
  equal "$(upstream_count GET "library/pre/blobs/${blobs[3]}")" 1 || return 1
  mark_upstream
  crane pull --insecure --platform linux/arm64 --format oci "$B/docker-hub/pre:v1" pre-arm64 &&
  equal "$(upstream_count GET 'library/pre/blobs/.*')" 0 &&
  "$binary" mirror "${storage[@]}" --upstreams "$rules" --log warn --platform linux/arm64 \
    docker-hub/pre:v1 | tee mirror-again.out &&
  contains "$(cat mirror-again.out)" "fetched 0 blobs (0 bytes), 2 already cached" &&
  ! "$binary" mirror "${storage[@]}" --upstreams "$rules" --log warn team/app:v1 2>/dev/null
}
check "berth mirror pre-fills one platform of an index (each of its blobs fetched once, the other platform's not at all); a pull afterwards fetches no blob; mirroring again fetches nothing" mirrored

# Eviction by the collector: an image not pulled for `evict-after` goes (its tag, then its
# manifest and blobs); one pulled meanwhile stays and is served with no upstream call.
evicted() {
  layout gone v1 --layers 1 --size 150000 &&
  skopeo copy -q --dest-tls-verify=false oci:gone:v1 "docker://$UP/library/gone:v1" || return 1
  local ev_rules="[{\"prefix\": \"ev\", \"urls\": [\"http://$UP\"], \"evict-after\": \"6s\"}]"
  local storage; mapfile -t storage < <(storage_flags "$work/evict-root")
  start_berth "$binary" "$work/evict-root" --gc --gc-grace 0 --upstreams "$ev_rules" || return 1
  local ev=$BERTH_ADDR
  crane pull --insecure --format oci "$ev/ev/library/demo:v1" ev-demo &&
  crane pull --insecure --format oci "$ev/ev/library/gone:v1" ev-gone &&
  sleep 3 &&
  crane pull --insecure --format oci "$ev/ev/library/demo:v1" ev-demo-again &&
  sleep 3.5 || return 1
  "$binary" gc "${storage[@]}" --upstreams "$ev_rules" --gc-grace 0 --untagged --log warn >evict.out || return 1
  cat evict.out
  contains "$(cat evict.out)" "deleted 1 tags by the retention rules and cache eviction" &&
  contains "$(cat evict.out)" "ev/library/gone: v1" &&
  contains "$(cat evict.out)" "deleted 1 untagged manifests" || return 1
  local layer; layer=$(blob_digests gone | tail -1)
  [ ! -e "$work/evict-root/docker/registry/v2/blobs/sha256/$(echo "$layer" | cut -c8-9)/${layer#sha256:}/data" ] || return 1
  mark_upstream
  crane pull --insecure --format oci "$ev/ev/library/demo:v1" ev-demo-warm &&
  equal "$(upstream_count '[A-Z]+' 'library/demo/.*')" 0 &&
  crane pull --insecure --format oci "$ev/ev/library/gone:v1" ev-gone-again &&
  equal "$(upstream_count GET "library/gone/blobs/$layer")" 1
}
check "eviction: an image not pulled for evict-after (6 s) is removed by berth gc (tag, manifest, blobs) and fetched again when asked for; one pulled meanwhile stays warm" evicted

# An upstream that wants a login the way Docker Hub does: registry:2 with auth.token pointing
# at a second berth's token service (htpasswd users, access rules). The cache answers the
# Bearer challenge at the token service with the rule's credentials, or anonymously, and
# keeps the token in storage for every instance; a wrong password, or a repository anonymous
# callers may not pull, fails the pull with the upstream's 401.
token_upstream() {
  htpasswd -Bbc users alice s3cret 2>/dev/null
  cat >access.toml <<'RULES'
[repositories."team/**"]
policies = [{ users = ["alice"], actions = ["pull", "push"] }]

[repositories."public/**"]
policies = [{ users = ["alice"], actions = ["pull", "push"] }]
anonymous = ["pull"]

[admin]
users = []
RULES
  openssl ecparam -name prime256v1 -genkey -noout -out tokens.pem 2>/dev/null
  openssl req -x509 -new -key tokens.pem -subj /CN=berth-tokens -days 2 -out tokens.crt 2>/dev/null
  start_berth "$binary" "$work/token-service" --htpasswd users --access access.toml \
    --token-key tokens.pem --token-cert tokens.crt --token-service upstream-tests || return 1
  local tokens=$BERTH_ADDR port; port=$(free_port)
  { registry_config "$work/private-upstream" "127.0.0.1:$port"
    printf 'auth:\n  token:\n    realm: http://%s/token\n    service: upstream-tests\n' "$tokens"
    printf '    issuer: berth\n    rootcertbundle: %s\n' "$work/tokens.crt"; } >private.yml
  docker-registry serve private.yml >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  SERVER_PIDS+=($!)
  local private=127.0.0.1:$port
  wait_http "http://$private/v2/" || return 1
  local repository
  for repository in team/app public/app; do
    skopeo copy -q --dest-tls-verify=false --dest-creds alice:s3cret oci:demo:v1 \
      "docker://$private/$repository:v1" || return 1
  done
  equal "$(status "http://$private/v2/team/app/manifests/v1")" 401 || return 1
  local upstream="\"urls\": [\"http://$private\"]"
  start_berth "$binary" "$work/private-cache" --upstreams "[
    {\"prefix\": \"login\", $upstream, \"username\": \"alice\", \"password\": \"s3cret\"},
    {\"prefix\": \"wrong\", $upstream, \"username\": \"alice\", \"password\": \"wrong\"},
    {\"prefix\": \"anon\", $upstream}]" || return 1
  crane pull --insecure --format oci "$BERTH_ADDR/login/team/app:v1" login || return 1
  crane validate --insecure --remote "$BERTH_ADDR/login/team/app:v1" || return 1
  crane pull --insecure --format oci "$BERTH_ADDR/anon/public/app:v1" anon || return 1
  equal "$(ls "$work/private-cache/berth/proxy/tokens/" | wc -l)" 2 || return 1
  local refused
  refused=$(crane pull --insecure --format oci "$BERTH_ADDR/wrong/team/app:v1" wrong 2>&1) && return 1
  contains "$refused" "401" || return 1
  refused=$(crane pull --insecure --format oci "$BERTH_ADDR/anon/team/app:v1" anon-team 2>&1) && return 1
  contains "$refused" "401"
}
check "registry:2 with token auth at a berth token service as the upstream: the cache answers the Bearer challenge with the rule's credentials or anonymously and keeps both tokens in storage; a wrong password, or a repository anonymous callers may not pull, fails with the upstream's 401" token_upstream

# Pushes into the cache are refused; the rest of the registry takes pushes as usual.
pushes() {
  local out; out=$(crane push --insecure demo "$A/docker-hub/mine:v1" 2>&1) && return 1
  contains "$out" "pull-through cache" &&
  equal "$(status -X POST "http://$A/v2/docker-hub/mine/blobs/uploads/")" 405 &&
  crane push --insecure demo "$A/team/mine:v1" >/dev/null &&
  crane validate --insecure --remote "$A/team/mine:v1"
}
check "pushes to the cached prefix get 405 with a message; other repositories of the same registry take pushes" pushes

# 100 concurrent cold pulls of one image's blobs, spread over both instances.
crowd() {
  mark_upstream
  python3 - "$A" "$B" crowd $(blob_digests crowd) <<'PY' || return 1
import hashlib, sys, threading, urllib.request
a, b, image, digests = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
failures = []
def pull(i):
    digest = digests[i % len(digests)]
    host = (a, b)[i % 2]
    try:
        data = urllib.request.urlopen(f"http://{host}/v2/docker-hub/{image}/blobs/{digest}", timeout=120).read()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            failures.append(f"{digest}: wrong bytes from {host}")
    except Exception as error:
        failures.append(f"{digest} from {host}: {error}")
threads = [threading.Thread(target=pull, args=(i,)) for i in range(100)]
for t in threads: t.start()
for t in threads: t.join()
print("\n".join(failures[:5]))
sys.exit(1 if failures else 0)
PY
  local digest
  for digest in $(blob_digests crowd); do
    equal "$(upstream_count GET "library/crowd/blobs/$digest")" 1 || return 1
  done
}
check "100 concurrent cold pulls of 4 blobs over two instances on one root: every body verifies, 1 upstream GET per blob" crowd

# The upstream goes away: cached tags still pull (stale, with a Warning once the window has
# passed), uncached ones fail with an error; berth starts with its upstream down.
upstream_down() {
  stop_server "$UP_PID"
  sleep 3.5
  crane pull --insecure --format oci "$A/docker-hub/demo:v1" down || return 1
  diff -r cold down || return 1
  local headers; headers=$(curl -s -D - -o /dev/null \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$B/v2/docker-hub/demo/manifests/v1")
  contains "${headers,,}" "warning: 110" || return 1
  local out; out=$(curl -s "http://$A/v2/docker-hub/never/manifests/v1")
  contains "$out" "upstream is unavailable" || return 1
  stop_server "$BERTH_PID"
  start_berth "$binary" "$work/root" --upstreams "$rules" || return 1
  crane pull --insecure --format oci "$BERTH_ADDR/docker-hub/demo:v1" restarted &&
  diff -r cold restarted
}
check "registry:2 killed: the cached tag still pulls (Warning: 110), an uncached one fails with a message; berth starts with the upstream down and serves the cache" upstream_down

# The scripted upstream: rate limits, corrupt bytes, a blob cut off mid-way.
stub_port=$(free_port)
mkdir -p stub
layout stub/app v1 --layers 1 --size 100000
layout stub/big v1 --layers 1 --size 40000000
layout stub/slow v1 --layers 1 --size 30000000
layout stub/many v1 --layers 6 --size 300000
python3 "$here/lib/proxy_upstream.py" "$stub_port" "$work/stub" "$work/stub.log" &
SERVER_PIDS+=($!)
wait_http "http://127.0.0.1:$stub_port/v2/" || exit 1
stub_rules="[{\"prefix\": \"stub\", \"urls\": [\"http://127.0.0.1:$stub_port\"], \"revalidate\": 0}]"
start_berth "$binary" "$work/stub-root" --upstreams "$stub_rules" --upstream-timeout 2s || exit 1
S=$BERTH_ADDR
mode() { curl -s -o /dev/null "http://127.0.0.1:$stub_port/_mode/$1"; }
stub_blob() { blob_digests "stub/$1" | tail -1; }
stored() { [ -e "$work/stub-root/docker/registry/v2/blobs/sha256/$(echo "$1" | cut -c8-9)/${1#sha256:}/data" ]; }

rate_limited() {
  mode normal
  crane pull --insecure "$S/stub/app:v1" app.tar || return 1
  mode 429
  local headers; headers=$(curl -s -D - -o /dev/null \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$S/v2/stub/app/manifests/v1")
  contains "$headers" "200" && contains "${headers,,}" "warning: 110" || return 1
  # While the upstream rests, readiness says so and stays ready: stale copies are served.
  equal "$(curl -s -w ' %{http_code}' "http://$S/readyz")" \
    '{"status":"degraded","checks":{"storage":"ok","upstreams":"degraded: 1 of 1 resting"}} 200' || return 1
  sleep 2.5
  local answer; answer=$(curl -s -w ' %{http_code}' "http://$S/v2/stub/other/manifests/v1")
  contains "$answer" "TOOMANYREQUESTS" && contains "$answer" " 429" || return 1
  # The upstream rests for what it asked before the next checks use it.
  mode normal
  sleep 2.5
}
check "the upstream answers 429 with Retry-After: the cached tag is served stale with a Warning (/readyz: degraded); an uncached one gets TOOMANYREQUESTS" rate_limited

# Retry-After as an HTTP date: the client is told how long, and the upstream is left alone
# until then (the next request does not reach it).
retry_date() {
  mode 429-date
  : >"$work/stub.log"
  local answer; answer=$(curl -s -w ' %{http_code}' "http://$S/v2/stub/dated/manifests/v1")
  echo "$answer"
  contains "$answer" " 429" && [[ $answer =~ \"retry_after\":[23][,}] ]] || return 1
  answer=$(curl -s -w ' %{http_code}' "http://$S/v2/stub/dated/manifests/v1")
  contains "$answer" "failed a moment ago" && contains "$answer" " 502" &&
  equal "$(grep -c 'dated' "$work/stub.log")" 1 || return 1
  mode normal
  sleep 3.2
  answer=$(curl -s -w ' %{http_code}' "http://$S/v2/stub/dated/manifests/v1")
  contains "$answer" "MANIFEST_UNKNOWN" && equal "$(grep -c 'dated' "$work/stub.log")" 2
}
check "the upstream answers 429 with Retry-After as an HTTP date: the client gets TOOMANYREQUESTS with the seconds left, and berth leaves the upstream alone until then" retry_date

# max-concurrent: six clients fetching six cold blobs at once (the upstream slow to answer)
# reach it six at a time through a cache without a limit, two at a time through one with
# max-concurrent = 2; every body verifies.
polite() {
  local limited="[{\"prefix\": \"stub\", \"urls\": [\"http://127.0.0.1:$stub_port\"], \"max-concurrent\": 2}]"
  start_berth "$binary" "$work/polite-root" --upstreams "$limited" || return 1
  local polite=$BERTH_ADDR
  mode slow:300
  local addr most
  for addr in "$S" "$polite"; do
    : >"$work/stub.log"
    blob_digests stub/many | tail -6 | xargs -P 6 -I{} sh -c \
      "curl -sf http://$addr/v2/stub/many/blobs/{} | sha256sum | grep -q \$(echo {} | cut -c8-)" || return 1
    most=$(grep -o '"open": [0-9]*' "$work/stub.log" | cut -d' ' -f2 | sort -n | tail -1)
    echo "$addr: at most $most blob GETs open upstream"
    if [ "$addr" = "$S" ]; then [ "$most" -gt 2 ] || return 1; else [ "$most" -le 2 ] || return 1; fi
  done
  mode normal
}
check "max-concurrent = 2: six concurrent cold pulls reach a slow upstream at most two at a time (six at once without the limit); every body verifies" polite

corrupt() {
  mode corrupt
  local digest; digest=$(stub_blob big)
  local got; got=$(curl -s "http://$S/v2/stub/big/blobs/$digest" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" != "$digest" ] || return 1
  ! stored "$digest" &&
  equal "$(status -I "http://$S/v2/stub/big/blobs/$digest")" 200 &&
  ! stored "$digest"
}
check "the upstream sends corrupt bytes: the client's body does not verify and the blob is never published" corrupt

# fill_resumes MODE IMAGE: the stub cuts off the fill of IMAGE's layer after 20 MB (MODE); the
# fill keeps its session (nothing published), and the next request resumes it with a Range
# request from the offset it saved, and the blob verifies.
fill_resumes() {
  local digest; digest=$(stub_blob "$2")
  mode "$1"
  : >"$work/stub.log"
  local started=$SECONDS
  curl -s -m 30 -o cut.part "http://$S/v2/stub/$2/blobs/$digest"
  # A stall is cut off by --upstream-timeout (2 s), long before it ends (60 s).
  (( SECONDS - started < 20 )) && ! stored "$digest" || return 1
  mode normal
  local got; got=$(curl -s "http://$S/v2/stub/$2/blobs/$digest" | sha256sum | cut -d' ' -f1)
  equal "sha256:$got" "$digest" && stored "$digest" &&
  grep -q '"range": "bytes=16777216-"' "$work/stub.log" &&
  equal "$(grep -c "blobs/$digest" "$work/stub.log")" 2
}
check "a fill cut off mid-blob (the upstream dies after 20 MB) resumes from its saved offset with a Range request, and the blob verifies" fill_resumes die:20000000 big
check "an upstream that stalls mid-blob (silent after 20 MB) is given up after --upstream-timeout; the fill resumes from its saved offset with a Range request, and the blob verifies" fill_resumes stall:20000000 slow

summary "proxy"
