#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine:
# Debian packages (skopeo, registry:2, a C toolchain with libmicrohttpd, libcurl, OpenSSL and
# valgrind, Chromium and chromedriver, the docker CLI, podman, and rustc-web for a wasm32 std where
# rustup has no wasm32 target), Python virtualenvs (moto; pytest, gunicorn, uvicorn and pyjwt
# for the Python package and the token tests), wasm-bindgen-cli, cargo-fuzz, from npm workerd
# (the Workers runtime) and oauth2-mock-server, Go clients (crane, oras, regctl, helm),
# distribution v3 and the two official OCI conformance suites.
# Idempotent: a tool already in place is not fetched again.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools=${BERTH_TOOLS:-$root/.tools}
mkdir -p "$tools/bin"
export GOBIN="$tools/bin"
export GOFLAGS=-mod=mod

CRANE_VERSION=v0.22.1
ORAS_VERSION=v1.3.6
REGCTL_VERSION=v0.11.1
WASM_BINDGEN_VERSION=0.2.130 # must equal the wasm-bindgen pin in wasm/Cargo.toml
CARGO_FUZZ_VERSION=0.13.2
WORKERD_VERSION=1.20261117.1
OAUTH2_MOCK_SERVER_VERSION=7.2.1 # 8.x and later need Node >= 22
DISTRIBUTION_VERSION=v3.1.2
HELM_VERSION=v4.3.2
# The Go module proxy refuses the exact commits named in SPEC.md (a139cc4 = v1.1.1 and
# 967efdc, "403 This module version is not available"); these are the nearest versions
# it serves: the Ginkgo suite of the v1.1 line and a later commit of the redesigned suite.
CONFORMANCE_V1=v0.0.0-20231101194043-f2182352d4cc
CONFORMANCE_NEXT=v0.0.0-20260831232431-97274622c111

log() { printf '[install-test-deps] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

debian_packages=()
command -v skopeo >/dev/null || debian_packages+=(skopeo)
command -v docker-registry >/dev/null || debian_packages+=(docker-registry)
command -v curl >/dev/null || debian_packages+=(curl)
# htpasswd, which writes the password files the login tests (tests/auth.sh) serve.
command -v htpasswd >/dev/null || debian_packages+=(apache2-utils)
# The benchmark counts the syncs of a small-image push with it.
command -v strace >/dev/null || debian_packages+=(strace)
command -v openssl >/dev/null || debian_packages+=(openssl)
# The docker CLI logs in without a daemon (tests/tokens.sh), and the daemon pulls through
# berth as its registry mirror (tests/proxy.sh); Debian ships both in docker.io.
command -v dockerd >/dev/null || debian_packages+=(docker.io)
# podman logs in, pushes and pulls through the token service (tests/tokens.sh).
command -v podman >/dev/null || debian_packages+=(podman)
command -v python3 >/dev/null || debian_packages+=(python3)
# The C host and the C tests of the C ABI.
for package in gcc make libc6-dev libmicrohttpd-dev libcurl4-openssl-dev libssl-dev valgrind python3-venv; do
  dpkg -s "$package" >/dev/null 2>&1 || debian_packages+=("$package")
done
# libFuzzer, which the fuzz targets link (fuzz/), is C++.
dpkg -s g++ >/dev/null 2>&1 || debian_packages+=(g++)
# The browser test of the WebAssembly build.
for package in chromium chromium-driver; do
  dpkg -s "$package" >/dev/null 2>&1 || debian_packages+=("$package")
done
# A wasm32 std: rustup cannot download targets here, Debian's rustc-web builds one.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  for package in rustc-web rust-web-src lld-22; do
    dpkg -s "$package" >/dev/null 2>&1 || debian_packages+=("$package")
  done
fi
if [ ${#debian_packages[@]} -gt 0 ]; then
  log "apt-get install ${debian_packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debian_packages[@]}" >/dev/null
  # The package starts a registry:2 service on port 5000; the tests start their own.
  as_root systemctl disable --now docker-registry >/dev/null 2>&1 || true
  # Nothing here needs the daemon docker.io may have started.
  as_root systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
fi

# moto: a real S3 API on loopback for the S3 tests.
if [ ! -x "$tools/moto-venv/bin/moto_server" ]; then
  log "pip install moto[s3] (into $tools/moto-venv)"
  python3 -m venv "$tools/moto-venv" 2>/dev/null || {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$tools/moto-venv"; }
  "$tools/moto-venv/bin/pip" install -q 'moto[s3]==5.2.5' flask flask-cors
fi

# The Python package's tests and the servers of its WSGI and ASGI hosts.
if [ ! -x "$tools/py-venv/bin/uvicorn" ]; then
  log "pip install pytest gunicorn uvicorn (into $tools/py-venv)"
  python3 -m venv "$tools/py-venv"
  "$tools/py-venv/bin/pip" install -q pytest==9.2.0 gunicorn==27.0.1 uvicorn==0.54.0 \
    wheel==0.48.0 'setuptools>=64'
fi
# An independent JWT library minting the tokens berth must accept or refuse (tests/tokens.sh).
if ! "$tools/py-venv/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
  log "pip install pyjwt cryptography (into $tools/py-venv)"
  "$tools/py-venv/bin/pip" install -q pyjwt==2.15.1 cryptography==51.0.1
fi

# wasm-bindgen's CLI, at the crate's version (not --locked: a crate it locks is not served).
if ! "$tools/bin/wasm-bindgen" --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION"; then
  log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  cargo install --quiet wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$tools"
fi

# cargo-fuzz, which builds and runs the fuzz targets (fuzz/run.sh; stable Rust with
# RUSTC_BOOTSTRAP=1 for the sanitizer flags).
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION"; then
  log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$tools"
fi

# workerd, the Workers runtime, from npm (Node >= 20 runs the Node host and tests).
command -v node >/dev/null || { log "Node.js >= 20 is required (https://nodejs.org)"; exit 1; }
if [ ! -x "$tools/npm/node_modules/@cloudflare/workerd-linux-64/bin/workerd" ]; then
  log "npm install workerd@$WORKERD_VERSION (into $tools/npm)"
  mkdir -p "$tools/npm"
  (cd "$tools/npm" && { [ -f package.json ] || echo '{"private": true}' >package.json; } &&
    npm install --silent --no-audit --no-fund "workerd@$WORKERD_VERSION")
fi
# An OIDC provider on loopback whose identity tokens berth accepts (tests/tokens.sh).
if [ ! -f "$tools/npm/node_modules/oauth2-mock-server/package.json" ]; then
  log "npm install oauth2-mock-server@$OAUTH2_MOCK_SERVER_VERSION (into $tools/npm)"
  (cd "$tools/npm" && npm install --silent --no-audit --no-fund \
    "oauth2-mock-server@$OAUTH2_MOCK_SERVER_VERSION")
fi

# s3s-fs: a disk-backed S3 server for the big blob test (past 5 GiB) (moto keeps objects in memory).
if [ ! -x "$tools/bin/s3s-fs" ]; then
  log "cargo install s3s-fs"
  cargo install --quiet --locked s3s-fs@0.14.1 --features binary --root "$tools"
fi

command -v go >/dev/null || { log "Go is required (https://go.dev/doc/install)"; exit 1; }

[ -x "$tools/bin/crane" ] || { log "go install crane"; go install "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"; }
[ -x "$tools/bin/oras" ] || { log "go install oras"; go install "oras.land/oras/cmd/oras@$ORAS_VERSION"; }
[ -x "$tools/bin/regctl" ] || { log "go install regctl"; go install "github.com/regclient/regclient/cmd/regctl@$REGCTL_VERSION"; }
[ -x "$tools/bin/helm" ] || { log "go install helm"; go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"; }

# distribution v3, which verifies berth's tokens in tests/tokens.sh (its binary is also
# called registry, so it lives apart).
[ -x "$tools/distribution/registry" ] || { log "go install distribution $DISTRIBUTION_VERSION";
  GOBIN="$tools/distribution" go install "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION"; }

build_conformance() { # <version> <output name> <test|build>
  local out="$tools/bin/$2"
  [ -x "$out" ] && return 0
  log "building conformance suite $2"
  local dir="$tools/src/$2"
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && go mod init local/conformance >/dev/null 2>&1 \
    && go get "github.com/opencontainers/distribution-spec/conformance@$1" \
    && if [ "$3" = test ]; then
         go test -c -o "$out" github.com/opencontainers/distribution-spec/conformance
       else # the redesigned suite is a main package
         go build -o "$out" github.com/opencontainers/distribution-spec/conformance
       fi)
}
build_conformance "$CONFORMANCE_V1" conformance-v1.test test
build_conformance "$CONFORMANCE_NEXT" conformance-next build

log "tools ready in $tools/bin"
