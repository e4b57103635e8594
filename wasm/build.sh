#!/usr/bin/env bash
# Builds the npm package berth-wasm into wasm/pkg: the .wasm (size-optimised), wasm-bindgen's
# ES module and TypeScript types, the JavaScript stores, package.json and README.
#
# The toolchain is rustup's wasm32 target or Debian's rustc-web (see cargo.sh);
# wasm-bindgen-cli is installed into $BERTH_TOOLS/bin at the version the crate pins.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
tools=${BERTH_TOOLS:-$root/.tools}
out=$here/pkg
export CARGO_TARGET_DIR=$root/target/wasm
WASM_BINDGEN_VERSION=0.2.130
# binaryen's wasm-opt, from npm (Debian's binaryen is too old for what rustc emits).
BINARYEN_VERSION=132.0.0
log() { printf '[wasm/build] %s\n' "$*" >&2; }

BERTH_WASM_PACKAGE=1 "$here/cargo.sh" build --profile wasm-release -p berth-wasm
wasm=$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/berth_wasm.wasm

bindgen=$tools/bin/wasm-bindgen
if ! "$bindgen" --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION"; then
  log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  cargo install --quiet wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$tools"
fi

rm -rf "$out" && mkdir -p "$out/stores"
"$bindgen" --target web --remove-name-section --remove-producers-section --out-dir "$out" "$wasm"

# Size: -Os, without inlining functions into their only caller (which makes the async state
# machines larger). Measured on the package of 2f9fde8: 948,532 -> 879,335 bytes (-7%),
# gzipped 369,719 -> 358,704 (-3%); -Oz makes it smaller still but larger gzipped.
wasm_opt=$tools/npm/node_modules/binaryen/bin/wasm-opt
if [ ! -x "$wasm_opt" ] || ! grep -q "\"version\": \"$BINARYEN_VERSION\"" "$tools/npm/node_modules/binaryen/package.json" 2>/dev/null; then
  log "npm install binaryen@$BINARYEN_VERSION (into $tools/npm)"
  mkdir -p "$tools/npm"
  (cd "$tools/npm" && { [ -f package.json ] || echo '{"private": true}' >package.json; } &&
    npm install --silent --no-audit --no-fund "binaryen@$BINARYEN_VERSION")
fi
"$wasm_opt" -Os --one-caller-inline-max-function-size=0 --enable-bulk-memory \
  --enable-reference-types --enable-sign-ext --enable-mutable-globals \
  --enable-nontrapping-float-to-int --enable-multivalue \
  "$out/berth_wasm_bg.wasm" -o "$out/berth_wasm_bg.wasm"
cp "$here"/js/index.js "$here"/js/node.js "$here"/js/index.d.ts "$out/"
cp "$here"/js/stores/*.js "$out/stores/"
cp "$here/js/package.json" "$here/README.md" "$out/"

size=$(stat -c %s "$out/berth_wasm_bg.wasm")
gzipped=$(gzip -9 -c "$out/berth_wasm_bg.wasm" | wc -c)
log "berth_wasm_bg.wasm: $size bytes ($((size / 1024)) KiB), gzip -9: $gzipped bytes ($((gzipped / 1024)) KiB)"
echo "wasm size: $size bytes, gzip $gzipped bytes" >"$out/SIZE"
