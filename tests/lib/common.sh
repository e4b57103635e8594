# Shared helpers for the shell test suites: start/stop servers on free ports, count checks.
# Source it; each suite then calls `check NAME COMMAND...` and ends with `summary`.

TESTS_PASSED=${TESTS_PASSED:-0}
TESTS_FAILED=${TESTS_FAILED:-0}
FAILED_NAMES=()
SERVER_PIDS=()

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# A TCP port nothing listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL [SECONDS]: waits until URL answers at all.
wait_http() {
  local url=$1 deadline=$((SECONDS + ${2:-20}))
  until curl -s -o /dev/null "$url"; do
    [ $SECONDS -lt $deadline ] || { echo "no answer from $url" >&2; return 1; }
    sleep 0.1
  done
}

# storage_flags ROOT: the storage flags for a root. With BERTH_S3_ENDPOINT set, the root names
# a bucket on that S3 endpoint (created on first use), so a restart on the same root finds
# the same data.
storage_flags() {
  if [ -z "${BERTH_S3_ENDPOINT:-}" ]; then
    printf '%s\n' --root "$1"
    return
  fi
  local bucket="berth-$(printf '%s' "$1" | sha256sum | cut -c1-24)"
  curl -s -o /dev/null -X PUT "$BERTH_S3_ENDPOINT/$bucket"
  printf '%s\n' --storage s3 --s3-bucket "$bucket" --s3-endpoint "$BERTH_S3_ENDPOINT" \
    --s3-allow-http --s3-path-style
}

# start_berth BINARY ROOT [FLAGS...]: starts `berth serve` on a free port; sets BERTH_ADDR.
start_berth() {
  local binary=$1 root=$2; shift 2
  local port; port=$(free_port)
  local storage; mapfile -t storage < <(storage_flags "$root")
  BERTH_ADDR=127.0.0.1:$port
  "$binary" serve --addr "$BERTH_ADDR" "${storage[@]}" --log warn "$@" >>"${TEST_LOG:-/dev/stderr}" 2>&1 &
  BERTH_PID=$!
  SERVER_PIDS+=("$BERTH_PID")
  wait_http "http://$BERTH_ADDR/v2/"
}

# stop_server PID: graceful stop, then wait for the process to go.
stop_server() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

stop_all_servers() {
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  SERVER_PIDS=()
}

strip_colour() { sed 's/\x1b\[[0-9;]*m//g'; }

# conformance_v1 ADDR MODE OUT: the official Ginkgo conformance suite of the v1.1 line
# against the registry at ADDR, OCI_AUTOMATIC_CROSSMOUNT=MODE, its output kept in OUT.
# Prints the suite's summary and failures; succeeds on 75 passed, 0 failed.
conformance_v1() {
  local addr=$1 mode=$2 out=$3
  local report; report=$(mktemp -d)
  OCI_ROOT_URL=http://$addr OCI_NAMESPACE=conformance/one \
  OCI_CROSSMOUNT_NAMESPACE=conformance/two OCI_TEST_PULL=1 OCI_TEST_PUSH=1 \
  OCI_TEST_CONTENT_DISCOVERY=1 OCI_TEST_CONTENT_MANAGEMENT=1 OCI_AUTOMATIC_CROSSMOUNT=$mode \
  OCI_REPORT_DIR=$report "${BERTH_TOOLS:-$(dirname "${BASH_SOURCE[0]}")/../../.tools}/bin/conformance-v1.test" >"$out" 2>&1
  local rc=$?
  rm -rf "$report"
  local line; line=$(strip_colour <"$out" | grep -E 'Passed \| [0-9]+ Failed' | tail -1)
  echo "v1.1 suite, OCI_AUTOMATIC_CROSSMOUNT=$mode: $line"
  strip_colour <"$out" | grep -A3 '\[FAIL\]' | head -40
  [ $rc -eq 0 ] && contains "$line" "75 Passed | 0 Failed"
}

# conformance_next ADDR OUT: the redesigned conformance suite against the registry at ADDR,
# its output kept in OUT. Sparse manifests (image manifests whose layers were never pushed)
# stay disabled, as in the suite's defaults: berth refuses them with MANIFEST_BLOB_UNKNOWN,
# as registry:2 does. Prints the counts and failures; succeeds on no failure.
conformance_next() {
  local addr=$1 out=$2
  local results; results=$(mktemp -d)
  OCI_REGISTRY=$addr OCI_TLS=disabled OCI_REPO1=conformance/repo1 \
  OCI_REPO2=conformance/repo2 OCI_VERSION=dev OCI_RESULTS_DIR=$results \
  OCI_API_BLOBS_UPLOAD_CANCEL=true OCI_API_MANIFESTS_TAG_PARAM=true \
  OCI_API_BLOBS_DIGEST_HEADER=true OCI_API_MANIFESTS_DIGEST_HEADER=true OCI_DATA_SPARSE=false \
    "${BERTH_TOOLS:-$(dirname "${BASH_SOURCE[0]}")/../../.tools}/bin/conformance-next" >"$out" 2>&1
  local rc=$?
  rm -rf "$results"
  local counts; counts=$(grep -E '^\s+(Pass|Fail|Skip|Disabled)\.+:' "$out" | tr -s ' .' ' ' | paste -sd,)
  echo "redesigned suite: $counts"
  grep 'failed test' "$out" | head -20
  [ $rc -eq 0 ] && ! grep -qE '^\s+Fail\.+:\s+[1-9]' "$out"
}

# registry_config ROOT ADDR: a registry:2 (or distribution v3) configuration serving the
# directory ROOT at ADDR, with deletes enabled.
registry_config() {
  cat <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $1
  delete:
    enabled: true
http:
  addr: $2
YAML
}

# check NAME COMMAND...: runs COMMAND, counts and reports the outcome. Output goes to the log
# unless the check fails, when its last lines are shown.
check() {
  # Names a checked function cannot overwrite by assigning its own variables.
  local check_name=$1; shift
  local check_out; check_out=$(mktemp)
  local check_started=$SECONDS
  if "$@" >"$check_out" 2>&1; then
    TESTS_PASSED=$((TESTS_PASSED + 1))
    printf '  ok    %s (%d s)\n' "$check_name" "$((SECONDS - check_started))"
  else
    TESTS_FAILED=$((TESTS_FAILED + 1))
    FAILED_NAMES+=("$check_name")
    printf '  FAIL  %s (%d s)\n' "$check_name" "$((SECONDS - check_started))"
    tail -n 20 "$check_out" | sed 's/^/        /'
  fi
  [ -n "${TEST_LOG:-}" ] && { echo "--- $check_name"; cat "$check_out"; } >>"$TEST_LOG"
  rm -f "$check_out"
}

# equal A B: succeeds when the two strings are equal, else says how they differ.
equal() {
  [ "$1" = "$2" ] || { printf 'expected %q\n     got %q\n' "$2" "$1"; return 1; }
}

# contains HAYSTACK NEEDLE
contains() {
  case "$1" in *"$2"*) return 0 ;; esac
  printf 'expected to find %q in:\n%s\n' "$2" "$1"; return 1
}

summary() {
  local suite=$1
  if [ ${#FAILED_NAMES[@]} -gt 0 ]; then
    printf '%s: failed checks:\n' "$suite"
    printf '  - %s\n' "${FAILED_NAMES[@]}"
  fi
  printf '%s: %d passed, %d failed\n' "$suite" "$TESTS_PASSED" "$TESTS_FAILED"
  [ "$TESTS_FAILED" -eq 0 ]
}
