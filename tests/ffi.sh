#!/usr/bin/env bash
# The C ABI as C programs meet it: the example host and the C tests built with gcc
# -Wall -Wextra -Werror against ffi/include/berth.h and libberth_ffi; the tests run plainly
# (with a 512 MiB blob streamed through in bounded memory), under AddressSanitizer and
# UndefinedBehaviorSanitizer, and under valgrind — with no errors and no leaks.
#   tests/ffi.sh LIBDIR      (the directory holding libberth_ffi.so, e.g. target/release)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
libdir=$(realpath "$1")
export RUST_BACKTRACE=0

# `clean` rather than -B for the host: -B would also remake LIBDIR's library through cargo,
# alone and so with other features (most crates rebuilt, minutes in CI), not test the one given.
build() {
  make -C "$here/../examples/c" clean && make -C "$here/../examples/c" LIBDIR="$libdir" &&
    make -C "$here/c" LIBDIR="$libdir" -B
}
check "the C host and C tests build with -Wall -Wextra -Werror" build

plain() {
  "$here/c/test_ffi" 512 | tee "$1"
}
out=$(mktemp)
plain "$out"
line=$(grep -E '^c-abi: [0-9]+ passed, [0-9]+ failed' "$out")
TESTS_PASSED=$((TESTS_PASSED + $(sed -E 's/c-abi: ([0-9]+) passed.*/\1/' <<<"$line")))
TESTS_FAILED=$((TESTS_FAILED + $(sed -E 's/.* ([0-9]+) failed/\1/' <<<"$line")))
[ -n "$line" ] || { TESTS_FAILED=$((TESTS_FAILED + 1)); FAILED_NAMES+=("test_ffi did not finish"); }
rm -f "$out"

static_link() { "$here/c/test_ffi_static" 8 >/dev/null; }
check "C tests linked to the static library (libberth_ffi.a)" static_link
asan() { BERTH_TEST_NO_RSS_LIMIT=1 ASAN_OPTIONS=detect_leaks=1 "$here/c/test_ffi_asan" 32; }
check "C tests under AddressSanitizer + UBSan: no errors, no leaks" asan
under_valgrind() {
  BERTH_TEST_NO_RSS_LIMIT=1 valgrind -q --error-exitcode=3 --leak-check=full \
    --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
    "$here/c/test_ffi" 16
}
check "C tests under valgrind: no errors, no definite or indirect leaks" under_valgrind
summary ffi
