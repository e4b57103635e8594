#!/usr/bin/env bash
# The Python package: installed with pip over an already built libberth_ffi (as
# `pip install ./bindings/python` does after building it), then its pytest suite.
#   tests/python.sh LIBDIR      (BERTH_PYTHON_VENV, default $BERTH_TOOLS/py-venv)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
libdir=$(realpath "$1")
venv=${BERTH_PYTHON_VENV:-${BERTH_TOOLS:-$here/../.tools}/py-venv}
package=$here/../bindings/python

install() {
  BERTH_FFI_LIB=$libdir/libberth_ffi.so "$venv/bin/pip" install -q --no-build-isolation \
    --force-reinstall --no-deps "$package"
}
check "pip install ./bindings/python" install
typed() { [ -f "$("$venv/bin/python" -c 'import berth, os; print(os.path.dirname(berth.__file__))')/py.typed" ]; }
check "the installed package is typed (py.typed)" typed

# A real S3 API (moto) for the package's S3 tests.
moto=${BERTH_TOOLS:-$here/../.tools}/moto-venv/bin/moto_server
if [ -x "$moto" ]; then
  moto_port=$(free_port)
  "$moto" -H 127.0.0.1 -p "$moto_port" >>"${TEST_LOG:-/dev/null}" 2>&1 &
  SERVER_PIDS+=("$!")
  trap stop_all_servers EXIT
  wait_http "http://127.0.0.1:$moto_port/" 30
  export BERTH_TEST_S3_ENDPOINT=http://127.0.0.1:$moto_port
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
else
  echo "moto is not installed: the S3 tests are skipped (scripts/install-test-deps.sh installs it)"
fi

out=$(mktemp)
(cd "$package" && "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider) 2>&1 | tee "$out"
passed=$(grep -oE '[0-9]+ passed' "$out" | tail -1 | cut -d' ' -f1)
failed=$(grep -oE '[0-9]+ (failed|error)' "$out" | awk '{s+=$1} END {print s+0}')
# In this suite every test must run: a skip means something it needs is missing.
skipped=$(grep -oE '[0-9]+ skipped' "$out" | tail -1 | cut -d' ' -f1)
failed=$((failed + ${skipped:-0}))
[ -n "$passed" ] || failed=$((failed + 1))
TESTS_PASSED=$((TESTS_PASSED + ${passed:-0})); TESTS_FAILED=$((TESTS_FAILED + failed))
[ "$failed" -eq 0 ] || FAILED_NAMES+=("pytest")
rm -f "$out"
summary python
