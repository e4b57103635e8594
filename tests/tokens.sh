#!/usr/bin/env bash
# berth's token service and the tokens of others, with real clients and real verifiers:
# Bearer challenges; /token by GET and by form POST (password and refresh grants), anonymous
# tokens with filtered scopes; docker login (no daemon), skopeo, podman, crane, oras, regctl
# and helm logging in through it; a token as a Basic password; tokens minted by PyJWT (valid, and the
# forgeries and misfits a verifier must refuse); identity tokens of an OIDC provider
# (oauth2-mock-server) whose key set berth fetches when a token names a new key, keeping the
# old keys when the provider is down; registry:2 and distribution v3 accepting berth's tokens;
# and berth's own key rotated.
#   tests/tokens.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
tools=${BERTH_TOOLS:-$here/../.tools}
export PATH=$tools/bin:$PATH
python=$tools/py-venv/bin/python
work=$(mktemp -d /tmp/berth-tokens.XXXXXX)
export HOME=$work/home REGCTL_CONFIG=$work/home/regctl.json DOCKER_CONFIG=$work/home/docker
mkdir -p "$HOME" "$DOCKER_CONFIG"
trap 'stop_all_servers; rm -rf "$work"' EXIT
cd "$work"

missing=()
command -v htpasswd >/dev/null || missing+=(htpasswd)
command -v docker >/dev/null || missing+=(docker)
command -v podman >/dev/null || missing+=(podman)
command -v helm >/dev/null || missing+=(helm)
command -v docker-registry >/dev/null || missing+=(docker-registry)
[ -x "$tools/distribution/registry" ] || missing+=("distribution v3")
"$python" -c 'import jwt' 2>/dev/null || missing+=(pyjwt)
mock_server=$tools/npm/node_modules/oauth2-mock-server/dist/oauth2-mock-server.js
[ -f "$mock_server" ] || missing+=(oauth2-mock-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} (scripts/install-test-deps.sh installs them)" >&2
  echo "tokens: 0 passed, 1 failed"; exit 1
fi

htpasswd -Bbc users alice s3cret 2>/dev/null
htpasswd -Bb users bob hunter2 2>/dev/null
cat >access.toml <<'EOF'
[groups]
team-a = ["alice"]

[repositories."team-a/**"]
policies = [{ groups = ["team-a"], actions = ["pull", "push", "overwrite", "delete"] }]

[repositories."conformance/**"]
policies = [{ users = ["alice"], actions = ["pull", "push", "overwrite", "delete"] }]

[repositories."oidc/**"]
policies = [{ users = ["johndoe"], actions = ["pull", "push"] }]

[repositories."public/**"]
policies = [{ users = ["alice"], actions = ["pull", "push"] }]
default = ["pull"]
anonymous = ["pull"]

[admin]
users = []
EOF
# berth's signing key: P-256 with a certificate, which registry:2 2.8 needs (x5c).
openssl ecparam -name prime256v1 -genkey -noout -out berth.pem 2>/dev/null
openssl req -x509 -new -key berth.pem -subj /CN=berth-tokens -days 2 -out berth.crt 2>/dev/null
openssl genpkey -algorithm ed25519 -out rotated.pem 2>/dev/null
# An external token service (PyJWT) and an OIDC provider (oauth2-mock-server).
"$python" "$here/lib/tokens.py" key external.pem external.jwks ext-1
"$python" "$here/lib/tokens.py" oidc-key oidc-1.json oidc-1
"$python" "$here/lib/tokens.py" oidc-key oidc-2.json oidc-2
oidc_port=$(free_port)
OIDC=127.0.0.1:$oidc_port
start_oidc() { # JWK
  node "$mock_server" -a 127.0.0.1 -p "$oidc_port" --jwk "$1" >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  OIDC_PID=$!
  SERVER_PIDS+=("$OIDC_PID")
  wait_http "http://$OIDC/jwks"
}
start_oidc oidc-1.json
cat >berth.toml <<EOF
[[token-issuers]]
issuer = "pyjwt-issuer"
jwks = "external.jwks"

[[token-issuers]]
issuer = "http://localhost:$oidc_port"
jwks = "http://$OIDC/jwks"
audience = "berth-oidc"
subject-claim = "sub"
EOF

serve() { # KEY [CERT]
  start_berth "$binary" "$work/root" --config berth.toml --htpasswd users --access access.toml \
    --token-service berth-tests --login-fail-delay 1s --token-key "$1" ${2:+--token-cert "$2"}
}
serve berth.pem berth.crt
R=$BERTH_ADDR
layout() { python3 "$here/lib/make_oci_layout.py" "$@"; }
image_digest=$(layout image v1 --layers 2 --size 100000)
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"; }
token_for() { # USER:PASSWORD SCOPE...
  local credentials=$1 query="service=berth-tests"; shift
  for scope in "$@"; do query+="&scope=$scope"; done
  curl -s ${credentials:+-u "$credentials"} "http://$R/token?$query" | field token
}

challenges() {
  local ping repository bad
  ping=$(curl -s -D - -o /dev/null "http://$R/v2/" | tr -d '\r' | grep -i '^www-authenticate')
  repository=$(curl -s -D - -o /dev/null "http://$R/v2/team-a/app/tags/list" | tr -d '\r')
  bad=$(curl -s -D - -o /dev/null -H 'Authorization: Bearer a.b.c' "http://$R/v2/team-a/app/tags/list" | tr -d '\r')
  equal "$ping" "www-authenticate: Bearer realm=\"http://$R/token\",service=\"berth-tests\"" &&
  contains "$repository" 'scope="repository:team-a/app:pull"' &&
  contains "$bad" 'HTTP/1.1 401' && contains "$bad" 'error="invalid_token"'
}
check "Bearer challenges: the realm at the request's host, no scope on /v2/, every needed scope, invalid_token" challenges

fail_delay() {
  local wrong right
  wrong=$(curl -s -o /dev/null -w '%{time_total}' -u alice:wrong "http://$R/token?service=berth-tests")
  right=$(curl -s -o /dev/null -w '%{time_total}' -u alice:s3cret "http://$R/token?service=berth-tests")
  python3 -c 'import sys; wrong, right = map(float, sys.argv[1:]); sys.exit(not (wrong >= 1.0 > right))' "$wrong" "$right"
}
check "--login-fail-delay: a wrong password waits a second for its 401, a right one does not" fail_delay

token_service() {
  local answer token refresh renewed
  answer=$(curl -s -u alice:s3cret "http://$R/token?service=berth-tests&scope=repository:team-a/app:pull,push&scope=repository:team-b/x:pull&offline_token=true&client_id=docker&account=alice")
  token=$(field token <<<"$answer")
  refresh=$(field refresh_token <<<"$answer")
  equal "$(field access_token <<<"$answer")" "$token" && equal "$(field expires_in <<<"$answer")" 300 &&
  [[ "$(field issued_at <<<"$answer")" =~ ^20[0-9-]+T[0-9:]+Z$ ]] &&
  equal "$(field scope <<<"$answer")" "repository:team-a/app:pull,push" &&
  equal "$(code -H "Authorization: Bearer $token" -X POST "http://$R/v2/team-a/app/blobs/uploads/")" 202 &&
  # The token as a Basic password, for clients that keep only a user and a password.
  equal "$(code -u "alice:$token" -X POST "http://$R/v2/team-a/app/blobs/uploads/")" 202 &&
  # containerd posts a form first; a refresh token buys new tokens and is no access token.
  equal "$(curl -s -X POST -d grant_type=password -d username=alice -d password=s3cret -d client_id=containerd-client -d service=berth-tests -d scope=repository:team-a/app:pull "http://$R/token" | field scope)" "repository:team-a/app:pull" &&
  equal "$(code -X POST -d grant_type=password -d username=alice -d password=wrong "http://$R/token")" 401 &&
  renewed=$(curl -s -X POST -d grant_type=refresh_token -d "refresh_token=$refresh" -d service=berth-tests -d scope=repository:team-a/app:pull "http://$R/token" | field token) &&
  equal "$(code -H "Authorization: Bearer $renewed" "http://$R/v2/team-a/app/tags/list")" 404 &&
  equal "$(code -H "Authorization: Bearer $refresh" "http://$R/v2/team-a/app/tags/list")" 401 &&
  equal "$(code -u alice:wrong "http://$R/token?service=berth-tests")" 401
}
check "/token: GET with Basic, form POST (password, refresh), token and access_token, scopes the rules allow" token_service

filtered() {
  local anonymous bob
  anonymous=$(curl -s "http://$R/token?service=berth-tests&scope=repository:team-a/app:pull&scope=repository:public/app:pull,push" | field scope)
  bob=$(token_for bob:hunter2 repository:team-a/app:pull)
  equal "$anonymous" "repository:public/app:pull" &&
  contains "$(curl -s -D - -o /dev/null -H "Authorization: Bearer $bob" "http://$R/v2/team-a/app/tags/list" | tr -d '\r')" 'error="insufficient_scope"'
}
check "anonymous callers get tokens for what anyone may do; a token without the scope gets insufficient_scope" filtered

docker_login() {
  echo s3cret | docker login "$R" -u alice --password-stdin 2>&1 | grep -q 'Login Succeeded' &&
  grep -q identitytoken "$DOCKER_CONFIG/config.json" &&
  ! echo wrong | docker login "$R" -u alice --password-stdin >/dev/null 2>&1 &&
  docker logout "$R" >/dev/null 2>&1
}
check "docker login (no daemon) gets a refresh token; a wrong password fails" docker_login

clients() {
  skopeo copy --dest-tls-verify=false --dest-creds alice:s3cret oci:image:v1 "docker://$R/team-a/app:v1" &&
  skopeo copy --src-tls-verify=false --src-creds alice:s3cret "docker://$R/team-a/app:v1" oci:pulled:v1 &&
  ! skopeo copy --dest-tls-verify=false --dest-creds bob:hunter2 oci:image:v1 "docker://$R/team-a/bob:v1" 2>/dev/null &&
  [ ! -e "$work/root/docker/registry/v2/repositories/team-a/bob" ] &&
  crane auth login "$R" -u alice -p s3cret --insecure 2>/dev/null &&
  crane push --insecure image "$R/public/app:v1" &&
  crane auth logout "$R" 2>/dev/null &&
  equal "$(crane digest --insecure "$R/public/app:v1")" "$image_digest" &&
  ! crane push --insecure image "$R/public/app:v2" 2>/dev/null &&
  oras login --plain-http -u alice -p s3cret "$R" >/dev/null 2>&1 &&
  echo artifact >note.txt &&
  oras push --plain-http "$R/team-a/notes:v1" note.txt >/dev/null &&
  regctl registry set --tls disabled "$R" >/dev/null &&
  regctl registry login "$R" -u bob -p hunter2 >/dev/null 2>&1 &&
  regctl tag ls "$R/public/app" | grep -qx v1 &&
  ! regctl tag ls "$R/team-a/notes" 2>/dev/null
}
check "skopeo, crane, oras and regctl log in through /token and push and pull where the rules allow" clients

# podman over its own storage in the work directory (vfs: no kernel features needed).
podman_here() { podman --storage-driver vfs --root "$work/podman" --runroot "$work/podman-run" "$@"; }
podman_helm() {
  podman_here login --tls-verify=false -u alice -p s3cret "$R" >/dev/null &&
  ! podman_here login --tls-verify=false -u alice -p wrong "$R" >/dev/null 2>&1 &&
  local id && id=$(podman_here pull -q oci:image:v1) &&
  podman_here push -q --tls-verify=false "$id" "$R/team-a/podman:v1" &&
  podman_here rmi -a -f >/dev/null &&
  podman_here pull -q --tls-verify=false "$R/team-a/podman:v1" >/dev/null &&
  podman_here logout "$R" >/dev/null &&
  ! podman_here push -q --tls-verify=false --creds bob:hunter2 "$R/team-a/podman:v1" "$R/team-a/podman:v2" 2>/dev/null &&
  helm registry login "$R" --insecure --plain-http -u alice -p s3cret >/dev/null 2>&1 &&
  helm create demo >/dev/null && helm package demo >/dev/null &&
  helm push demo-0.1.0.tgz "oci://$R/team-a/charts" --plain-http >/dev/null 2>&1 &&
  mkdir -p charts && helm pull "oci://$R/team-a/charts/demo" --version 0.1.0 --plain-http -d charts >/dev/null 2>&1 &&
  [ -f charts/demo-0.1.0.tgz ] &&
  helm registry logout "$R" >/dev/null 2>&1 &&
  ! helm push demo-0.1.0.tgz "oci://$R/team-a/charts2" --plain-http >/dev/null 2>&1
}
check "podman and helm log in through /token, push and pull; a wrong password or no login is refused" podman_helm

# The suites log in with a password; here it buys tokens, and a mount's challenge must name
# the source's scope too, or the suite's client (one token per challenge) never mounts.
suites() {
  OCI_USERNAME=alice OCI_PASSWORD=s3cret conformance_v1 "$R" 0 "$work/v1.out" &&
  OCI_USERNAME=alice OCI_PASSWORD=s3cret conformance_next "$R" "$work/next.out"
}
check "both conformance suites, logging in through /token" suites

catalog() {
  local alice bob
  alice=$(curl -s -H "Authorization: Bearer $(token_for alice:s3cret registry:catalog:*)" "http://$R/v2/_catalog")
  bob=$(curl -s -H "Authorization: Bearer $(token_for bob:hunter2 registry:catalog:*)" "http://$R/v2/_catalog")
  contains "$alice" team-a/app && contains "$alice" public/app &&
  contains "$bob" public/app && ! contains "$bob" team-a
}
check "the catalog, with a registry:catalog:* token, lists only what the caller may pull" catalog

external() {
  local mint="$python $here/lib/tokens.py mint external.pem ext-1"
  local pull='access=[{"type":"repository","name":"team-a/app","actions":["pull"]}]'
  local url="http://$R/v2/team-a/app/tags/list"
  bearer() { code -H "Authorization: Bearer $1" "$url"; }
  equal "$(bearer "$($mint "$pull")")" 200 &&
  equal "$(code -u "alice:$($mint "$pull")" "$url")" 200 &&
  # Granted pull only: a push needs another token.
  equal "$(code -H "Authorization: Bearer $($mint "$pull")" -X POST "http://$R/v2/team-a/app/blobs/uploads/")" 401 &&
  # The token's grant stays within the rules: bob may not pull team-a, whatever it says
  # (403: another token would not help).
  equal "$(bearer "$($mint "$pull" sub=bob)")" 403 &&
  equal "$(bearer "$($mint "$pull" exp=-120)")" 401 &&
  equal "$(bearer "$($mint "$pull" nbf=600)")" 401 &&
  equal "$(bearer "$($mint "$pull" aud=elsewhere)")" 401 &&
  equal "$(bearer "$($mint "$pull" iss=someone-else)")" 401 &&
  equal "$(bearer "$($python "$here/lib/tokens.py" mint external.pem no-such-kid "$pull")")" 401 &&
  equal "$(bearer "$($mint "$pull" alg=none)")" 401 &&
  equal "$(bearer "$($mint "$pull" alg=HS256)")" 401
}
check "PyJWT tokens: a valid one pulls (also as a password); expired, early, wrong audience or issuer, unknown key, none and HS256 are refused" external

oidc_token() { # an identity token of the provider: sub johndoe, aud berth-oidc
  curl -s -X POST -d grant_type=password -d username=johndoe -d client_id=berth-oidc "http://$OIDC/token" | field id_token
}

oidc() {
  local first second
  first=$(oidc_token)
  # The provider's key set is fetched when its first token arrives.
  equal "$(code -H "Authorization: Bearer $first" "http://$R/v2/oidc/app/tags/list")" 404 &&
  equal "$(code -H "Authorization: Bearer $first" "http://$R/v2/team-a/app/tags/list")" 403 &&
  crane auth login "$R" -u johndoe -p "$first" --insecure 2>/dev/null &&
  crane push --insecure image "$R/oidc/app:v1" &&
  crane auth logout "$R" 2>/dev/null &&
  # The provider rotates its key: a token with the new key makes berth fetch the set again
  # (at most every 10 s), and tokens of the retired key stop working.
  stop_server "$OIDC_PID" && start_oidc oidc-2.json &&
  second=$(oidc_token) && sleep 11 &&
  equal "$(code -H "Authorization: Bearer $second" "http://$R/v2/oidc/app/tags/list")" 200 &&
  equal "$(code -H "Authorization: Bearer $first" "http://$R/v2/oidc/app/tags/list")" 401 &&
  # The provider is down when a token names an unknown key: the keys fetched before stay.
  stop_server "$OIDC_PID" && sleep 11 &&
  equal "$(code -H "Authorization: Bearer $first" "http://$R/v2/oidc/app/tags/list")" 401 &&
  equal "$(code -H "Authorization: Bearer $second" "http://$R/v2/oidc/app/tags/list")" 200
}
check "OIDC identity tokens (oauth2-mock-server): fetched key sets, the token as a crane password, rotation, provider down" oidc

# registry:2 (2.8: x5c against rootcertbundle) and distribution v3 (kid thumbprint against a
# JWKS file; it takes a token with x5c only with a rootcertbundle) with auth.token pointing
# at berth's /token.
verifier_config() { # ROOT ADDR KEYS-LINE
  registry_config "$1" "$2"
  cat <<YAML
auth:
  token:
    realm: http://$R/token
    service: berth-tests
    issuer: berth
    $3
YAML
}
verified_push() { # VERIFIER-ADDRESS
  skopeo copy --dest-tls-verify=false --dest-creds alice:s3cret oci:image:v1 "docker://$1/team-a/app:v1" &&
  equal "$(skopeo inspect --tls-verify=false --creds alice:s3cret "docker://$1/team-a/app:v1" --format '{{.Digest}}')" "$image_digest" &&
  ! skopeo copy --dest-tls-verify=false --dest-creds bob:hunter2 oci:image:v1 "docker://$1/team-a/bob:v1" 2>/dev/null
}
registry2() {
  local port; port=$(free_port)
  verifier_config "$work/r2" "127.0.0.1:$port" "rootcertbundle: $work/berth.crt" >r2.yml
  docker-registry serve r2.yml >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  SERVER_PIDS+=("$!")
  wait_http "http://127.0.0.1:$port/v2/" && verified_push "127.0.0.1:$port"
}
check "registry:2 verifies berth's ES256 tokens (x5c): alice pushes through it, bob may not" registry2

rotation() {
  local old; old=$(token_for alice:s3cret repository:team-a/app:pull)
  stop_server "$BERTH_PID"
  serve rotated.pem
  R=$BERTH_ADDR
  equal "$(code -H "Authorization: Bearer $old" "http://$R/v2/team-a/app/tags/list")" 401 &&
  equal "$(code -H "Authorization: Bearer $(token_for alice:s3cret repository:team-a/app:pull)" "http://$R/v2/team-a/app/tags/list")" 200
}
check "berth's key rotated (an Ed25519 key now): its old tokens are refused, new ones work" rotation

shared_key() {
  local first second token
  start_berth "$binary" "$work/shared" --htpasswd users --token-key storage --token-service berth-tests || return 1
  first=$BERTH_ADDR
  start_berth "$binary" "$work/shared" --htpasswd users --token-key storage --token-service berth-tests || return 1
  second=$BERTH_ADDR
  token=$(curl -s -u alice:s3cret "http://$first/token?service=berth-tests&scope=repository:team-a/app:pull,push" | field token)
  [ -s "$work/shared/berth/keys/token.pem" ] &&
  equal "$(code -H "Authorization: Bearer $token" -X POST "http://$second/v2/team-a/app/blobs/uploads/")" 202
}
check "--token-key storage: two instances over one root sign with the key the first kept there" shared_key

distribution3() {
  local port; port=$(free_port)
  curl -s "http://$R/token/keys" >berth.jwks
  verifier_config "$work/v3" "127.0.0.1:$port" "jwks: $work/berth.jwks" >v3.yml
  "$tools/distribution/registry" serve v3.yml >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  SERVER_PIDS+=("$!")
  wait_http "http://127.0.0.1:$port/v2/" && verified_push "127.0.0.1:$port"
}
check "distribution v3 verifies berth's Ed25519 tokens (kid thumbprint, /token/keys): alice pushes, bob may not" distribution3

# The access matrix of the hosts (tests/hosts.sh), here through berth serve's files.
matrix() {
  "$python" "$here/lib/auth_matrix.py" setup "$work/matrix" || return 1
  local m=$work/matrix
  start_berth "$binary" "$work/matrix-root" --config "$m/berth.toml" --htpasswd "$m/users" \
    --access "$m/access.toml" --token-key "$m/token.pem" --token-service matrix || return 1
  "$python" "$here/lib/auth_matrix.py" run "http://$BERTH_ADDR" "$m"
}
check "the access matrix (21 principals x operations x 3 repositories): 0 unauthorized successes, 0 wrongful refusals" matrix

# The same with references tracked (--gc): a mount without `from` links the blob from a
# repository the caller may pull, and from no other.
tracked_matrix() {
  "$python" "$here/lib/auth_matrix.py" setup "$work/tracked" || return 1
  local m=$work/tracked
  start_berth "$binary" "$work/tracked-root" --config "$m/berth.toml" --htpasswd "$m/users" \
    --access "$m/access.toml" --token-key "$m/token.pem" --token-service matrix --gc || return 1
  BERTH_MATRIX_TRACKED=1 "$python" "$here/lib/auth_matrix.py" run "http://$BERTH_ADDR" "$m"
}
check "the access matrix with references tracked: automatic mounts link only from what the caller may pull" tracked_matrix

stop_all_servers
summary tokens
