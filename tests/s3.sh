#!/usr/bin/env bash
# berth on a real S3 API: moto's S3 server on loopback, reached through object_store's S3
# client. The conformance suites, the real clients and the crash tests run against it.
#   tests/s3.sh BERTH_BINARY
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib/common.sh"
binary=$(realpath "$1")
tools=${BERTH_TOOLS:-$here/../.tools}
work=$(mktemp -d /tmp/berth-s3.XXXXXX)
port=$(free_port)
"$tools/moto-venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
trap 'stop_all_servers; kill $moto 2>/dev/null; wait $moto 2>/dev/null; rm -rf "$work"' EXIT
wait_http "http://127.0.0.1:$port/" 30 || { echo "moto did not start"; cat "$work/moto.log"; exit 1; }

export BERTH_S3_ENDPOINT=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=berth-test AWS_SECRET_ACCESS_KEY=berth-test AWS_REGION=us-east-1
# A request killed while it writes to S3 holds its upload for this long (see scaleout.sh).
export BERTH_UPLOAD_LEASE=3s
status=0
storage_suite() {
  local storage; mapfile -t storage < <(storage_flags "$work/check")
  "$binary" check-storage "${storage[@]}"
}
log "storage conformance suite on S3 (moto)"
check "the storage conformance suite, through object_store's S3 client (native multipart)" storage_suite

for suite in transcripts conformance faults clients durability scaleout linearizable gc quota memory; do
  log "$suite on S3 (moto)"
  "$here/$suite.sh" "$binary" 2>&1 | sed -u "s/^\\(\\S*\\): \\([0-9]* passed, [0-9]* failed\\)$/\\1-s3: \\2/" | tee "$work/$suite.out"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$work/$suite.out" | tail -1)
  TESTS_PASSED=$((TESTS_PASSED + $(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line")))
  TESTS_FAILED=$((TESTS_FAILED + $(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")))
done
blob_redirect() {
  start_berth "$binary" "$work/redirect" --blob-redirect 10m || return 1
  local addr=$BERTH_ADDR digest
  digest=sha256:$(printf 'redirected' | sha256sum | cut -d' ' -f1)
  equal "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary redirected "http://$addr/v2/r/blobs/uploads/?digest=$digest")" 201 &&
  equal "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/r/blobs/$digest")" 307 &&
  contains "$(curl -s -D - -o /dev/null "http://$addr/v2/r/blobs/$digest" | tr -d '\r' | sed -n 's/^location: //Ip')" "X-Amz-Signature=" &&
  equal "$(curl -sL "http://$addr/v2/r/blobs/$digest")" redirected &&
  equal "$(curl -s -o /dev/null -w '%{http_code}' -I "http://$addr/v2/r/blobs/$digest")" 200 &&
  equal "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/r/blobs/sha256:$(printf x | sha256sum | cut -d' ' -f1)")" 404 || return 1
  cd "$work" && python3 "$here/lib/make_oci_layout.py" image v1 >/dev/null &&
  skopeo copy --dest-tls-verify=false oci:image:v1 "docker://$addr/redirect/image:v1" &&
  skopeo copy --src-tls-verify=false "docker://$addr/redirect/image:v1" oci:pulled:v1 &&
  equal "$(python3 -c 'import json; print(json.load(open("pulled/index.json"))["manifests"][0]["digest"])')" \
        "$(python3 -c 'import json; print(json.load(open("image/index.json"))["manifests"][0]["digest"])')"
}
part_copy() {
  # With the single-copy limit lowered to 8 MiB, a 40 MiB blob reaches its content address by
  # server-side part copies (UploadPartCopy), as a blob over 5 GiB does on S3.
  start_berth "$binary" "$work/part-copy" --s3-max-single-copy 8388608 || return 1
  head -c $((40 * 1024 * 1024 + 12345)) /dev/urandom >"$work/forty.bin"
  python3 "$here/lib/push_chunked.py" "http://$BERTH_ADDR" copy/blob "$work/forty.bin" $((16 * 1024 * 1024)) || return 1
  local copies
  copies=$(grep -c 'PUT /berth-[0-9a-f]*/docker/registry/v2/blobs/.*partNumber=.*x-amz-copy-source' "$work/moto.log")
  echo "server-side part copies: $copies"
  [ "$copies" -ge 5 ]
}
log "server-side part copies on S3 (moto)"
check "past the single-copy limit, a blob is assembled by server-side part copies" part_copy

log "presigned redirects on S3 (moto)"
check "--blob-redirect: blob GETs answer 307 to a presigned URL; skopeo pulls through it" blob_redirect
stop_all_servers

summary s3
