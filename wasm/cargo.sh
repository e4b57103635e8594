#!/usr/bin/env bash
# Runs a cargo command (build, test, …) for wasm32-unknown-unknown with whichever toolchain
# this machine has: rustup's wasm32 target where it is installed (`rustup target add
# wasm32-unknown-unknown`), else Debian's rustc-web, which builds std for wasm32 from source
# (installed here if missing).
#   wasm/cargo.sh build --profile wasm-release -p berth-wasm
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=$root/target/wasm
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

command=$1; shift
if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  exec cargo "$command" --locked --target wasm32-unknown-unknown "$@"
fi
if ! /usr/bin/rustc --version 2>/dev/null | grep -q 'built from a source tarball' ||
   [ ! -d /usr/lib/rustlib/src/rust/library ]; then
  echo "[wasm] no wasm32 target in rustup: installing Debian's rustc-web to build one" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web rust-web-src lld-22 >/dev/null
fi
# The npm package's build (wasm/build.sh sets BERTH_WASM_PACKAGE=1): a panic aborts at once
# and names no source location. Its message would go nowhere on wasm32-unknown-unknown (a
# panic traps), so this only takes the formatting code and strings out: ~60 KB of the .wasm
# (7%; 6% gzipped). Tests keep both, for their failure messages. rustup's prebuilt std (the
# branch above) cannot do this: its .wasm is that much larger.
if [ "${BERTH_WASM_PACKAGE:-}" = 1 ]; then
  export RUSTFLAGS="${RUSTFLAGS:-} -Zlocation-detail=none -Zunstable-options -Cpanic=immediate-abort"
fi
RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 exec /usr/bin/cargo "$command" --locked \
  --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort "$@"
