/*
 * Tests of berth's C ABI, as a C host meets it: handles and result codes, the exchange
 * state machine, blobs streamed through in bounded memory, bodies cut off, many threads on
 * one registry, and storage implemented by C callbacks (memstore) held to the storage
 * contract. Run under AddressSanitizer and valgrind too (tests/ffi.sh).
 *
 *   test_ffi [BLOB_MIB]    (default 256: the size of the streamed blob)
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "berth.h"
#include "memstore.h"

static int passed, failed;

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      char detail_[256] = "";                                                          \
      berth_last_error(detail_, sizeof detail_);                                      \
      fprintf(stderr, "  %s:%d: check failed: %s (last error: %s)\n", __FILE__, __LINE__, \
              #cond, detail_);                                                         \
      return 0;                                                                        \
    }                                                                                  \
  } while (0)

static void run(const char *name, int (*test)(void)) {
  if (test()) {
    passed++;
    printf("  ok    %s\n", name);
  } else {
    failed++;
    printf("  FAIL  %s\n", name);
  }
  fflush(stdout);
}

/* ---- helpers ---------------------------------------------------------------------- */

typedef struct response {
  uint16_t status;
  char *body;
  size_t len;
  char location[512];
  char content_length[32];
} response;

static void response_clear(response *r) {
  free(r->body);
  memset(r, 0, sizeof *r);
}

/* One whole exchange: headers as "Name", "Value" pairs ending in NULL. */
static berth_result exchange(berth_registry *registry, const char *method, const char *target,
                             const char *const *headers, const void *body, size_t len,
                             response *out) {
  memset(out, 0, sizeof *out);
  char path[1024];
  snprintf(path, sizeof path, "%s", target);
  char *query = strchr(path, '?');
  if (query) *query++ = '\0';
  berth_exchange *ex = NULL;
  berth_result result = berth_exchange_new(registry, method, path, query, &ex);
  for (size_t i = 0; result == BERTH_RESULT_OK && headers && headers[i]; i += 2)
    result = berth_exchange_add_header(ex, headers[i], headers[i + 1]);
  if (result == BERTH_RESULT_OK && len) result = berth_exchange_write(ex, body, len);
  if (result == BERTH_RESULT_OK) result = berth_exchange_finish(ex);
  if (result == BERTH_RESULT_OK) result = berth_exchange_status(ex, &out->status);
  size_t count = 0;
  if (result == BERTH_RESULT_OK) result = berth_exchange_header_count(ex, &count);
  for (size_t i = 0; result == BERTH_RESULT_OK && i < count; i++) {
    const char *name, *value;
    result = berth_exchange_header(ex, i, &name, &value);
    if (result != BERTH_RESULT_OK) break;
    if (strcasecmp(name, "Location") == 0) snprintf(out->location, sizeof out->location, "%s", value);
    if (strcasecmp(name, "Content-Length") == 0)
      snprintf(out->content_length, sizeof out->content_length, "%s", value);
  }
  uint8_t buffer[4096];
  size_t n = 1;
  while (result == BERTH_RESULT_OK && n) {
    result = berth_exchange_read(ex, buffer, sizeof buffer, &n);
    if (result == BERTH_RESULT_OK && n) {
      char *grown = realloc(out->body, out->len + n + 1);
      if (!grown) return BERTH_RESULT_STORAGE_FAILED;
      out->body = grown;
      memcpy(out->body + out->len, buffer, n);
      out->len += n;
      out->body[out->len] = '\0';
    }
  }
  berth_exchange_free(ex);
  return result;
}

static void sha256_hex(const void *data, size_t len, char hex[72]) {
  unsigned char digest[32];
  unsigned int n = 0;
  EVP_Digest(data, len, digest, &n, EVP_sha256(), NULL);
  strcpy(hex, "sha256:");
  for (int i = 0; i < 32; i++) sprintf(hex + 7 + 2 * i, "%02x", digest[i]);
}

static berth_registry *registry_over(const char *kind, const char *root) {
  berth_config *config = NULL;
  berth_registry *registry = NULL;
  if (berth_config_new(&config) != BERTH_RESULT_OK) return NULL;
  berth_result result = strcmp(kind, "fs") == 0        ? berth_config_set_fs(config, root)
                        : strcmp(kind, "memstore") == 0 ? memstore_install(config)
                                                        : berth_config_set_memory(config);
  if (result == BERTH_RESULT_OK) berth_registry_new(config, &registry);
  berth_config_free(config);
  return registry;
}

static char fs_root[] = "/tmp/berth-test-ffi-XXXXXX";

/* ---- handles and results ---------------------------------------------------------- */

static int test_result_messages(void) {
  CHECK(strcmp(berth_result_message(BERTH_RESULT_OK), "ok") == 0);
  CHECK(strstr(berth_result_message(BERTH_RESULT_NOT_FOUND), "not found") != NULL);
  CHECK(strcmp(berth_result_message(9999), "unknown result code") == 0);
  CHECK(strlen(berth_version()) > 0);
  return 1;
}

static int test_null_arguments(void) {
  CHECK(berth_config_new(NULL) == BERTH_RESULT_NULL_PARAMETER);
  berth_registry *untouched = (berth_registry *)0x1;
  CHECK(berth_registry_new(NULL, &untouched) == BERTH_RESULT_NULL_PARAMETER);
  CHECK(untouched == (berth_registry *)0x1); /* out-parameters are written only on success */
  char detail[128];
  CHECK(berth_last_error(detail, sizeof detail) > 0 && strstr(detail, "NULL") != NULL);
  CHECK(berth_last_error(NULL, 0) > 0);
  CHECK(berth_config_set_fs(NULL, "x") == BERTH_RESULT_NULL_PARAMETER);
  berth_config_free(NULL);
  berth_registry_free(NULL);
  berth_exchange_free(NULL);
  return 1;
}

static int test_configuration_errors(void) {
  berth_config *config = NULL;
  CHECK(berth_config_new(&config) == BERTH_RESULT_OK);
  berth_registry *registry = NULL;
  CHECK(berth_registry_new(config, &registry) == BERTH_RESULT_INVALID_ARGUMENT);
  CHECK(registry == NULL);
  CHECK(berth_config_set_part_size(config, 0) == BERTH_RESULT_INVALID_ARGUMENT);
  CHECK(berth_config_set_fs(config, "/proc/berth-cannot-be-here") == BERTH_RESULT_OK);
  CHECK(berth_registry_new(config, &registry) == BERTH_RESULT_STORAGE_UNAVAILABLE);
  char bad_utf8[] = {'/', 't', 'm', 'p', '/', (char)0xff, 0};
  CHECK(berth_config_set_fs(config, bad_utf8) == BERTH_RESULT_INVALID_ARGUMENT);
  berth_config_free(config);
  return 1;
}

static int test_exchange_state_machine(void) {
  berth_registry *registry = registry_over("memory", NULL);
  CHECK(registry);
  berth_exchange *ex = NULL;
  CHECK(berth_exchange_new(registry, "GET", "/v2/", NULL, &ex) == BERTH_RESULT_OK);
  uint16_t status = 0;
  CHECK(berth_exchange_status(ex, &status) == BERTH_RESULT_WRONG_STATE);
  CHECK(berth_exchange_write(ex, (const uint8_t *)"", 0) == BERTH_RESULT_OK);
  CHECK(berth_exchange_add_header(ex, "Accept", "*/*") == BERTH_RESULT_WRONG_STATE);
  CHECK(berth_exchange_finish(ex) == BERTH_RESULT_OK);
  CHECK(berth_exchange_finish(ex) == BERTH_RESULT_WRONG_STATE);
  CHECK(berth_exchange_write(ex, (const uint8_t *)"x", 1) == BERTH_RESULT_WRONG_STATE);
  CHECK(berth_exchange_status(ex, &status) == BERTH_RESULT_OK && status == 200);
  const char *name, *value;
  CHECK(berth_exchange_header(ex, 1000, &name, &value) == BERTH_RESULT_INVALID_ARGUMENT);
  berth_exchange_free(ex);
  /* Freed before it was finished: the registry hears the body was cut off. */
  CHECK(berth_exchange_new(registry, "GET", "/v2/", NULL, &ex) == BERTH_RESULT_OK);
  berth_exchange_free(ex);
  berth_registry_free(registry);
  return 1;
}

/* ---- the protocol through the ABI ------------------------------------------------- */

static int blob_round_trip(const char *kind) {
  berth_registry *registry = registry_over(kind, fs_root);
  CHECK(registry);
  response r;
  CHECK(exchange(registry, "GET", "/v2/", NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 200 && r.len == 2 && memcmp(r.body, "{}", 2) == 0);
  response_clear(&r);

  const char *content = "hello from C";
  char digest[72], target[256];
  sha256_hex(content, strlen(content), digest);
  snprintf(target, sizeof target, "/v2/c/%s/blobs/uploads/?digest=%s", kind, digest);
  const char *const headers[] = {"Content-Type", "application/octet-stream", NULL};
  CHECK(exchange(registry, "POST", target, headers, content, strlen(content), &r) == BERTH_RESULT_OK);
  CHECK(r.status == 201);
  response_clear(&r);

  snprintf(target, sizeof target, "/v2/c/%s/blobs/%s", kind, digest);
  CHECK(exchange(registry, "GET", target, NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 200 && r.len == strlen(content) && memcmp(r.body, content, r.len) == 0);
  response_clear(&r);
  CHECK(exchange(registry, "HEAD", target, NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 200 && r.len == 0 && strcmp(r.content_length, "12") == 0);
  response_clear(&r);

  /* Bad input gets the spec's error, not a failure of the call. */
  CHECK(exchange(registry, "GET", "/v2/c/blobs/sha256:nothex", NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 400 && strstr(r.body, "DIGEST_INVALID") != NULL);
  response_clear(&r);
  berth_registry_free(registry);
  return 1;
}
static int test_blob_memory(void) { return blob_round_trip("memory"); }
static int test_blob_fs(void) { return blob_round_trip("fs"); }
static int test_blob_memstore(void) { return blob_round_trip("memstore"); }

static size_t blob_mib = 256;

/* Pushes a blob of blob_mib MiB in 16 MiB PATCH chunks, written 1 MiB at a time, and pulls
 * it back, verifying its digest; the process's peak RSS stays far below the blob. */
static int test_streamed_blob(void) {
  berth_registry *registry = registry_over("fs", fs_root);
  CHECK(registry);
  const size_t write_size = 1 << 20, chunk_size = 16 << 20, total = blob_mib << 20;
  uint8_t *buffer = malloc(write_size);
  CHECK(buffer);
  EVP_MD_CTX *hash = EVP_MD_CTX_new();
  EVP_DigestInit_ex(hash, EVP_sha256(), NULL);

  response r;
  CHECK(exchange(registry, "POST", "/v2/c/big/blobs/uploads/", NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 202);
  char location[512];
  snprintf(location, sizeof location, "%s", r.location);
  response_clear(&r);

  uint64_t state = 0x9e3779b97f4a7c15ULL;
  for (size_t offset = 0; offset < total; offset += chunk_size) {
    size_t this_chunk = total - offset < chunk_size ? total - offset : chunk_size;
    char range[64], length[32];
    snprintf(range, sizeof range, "%zu-%zu", offset, offset + this_chunk - 1);
    snprintf(length, sizeof length, "%zu", this_chunk);
    berth_exchange *ex = NULL;
    CHECK(berth_exchange_new(registry, "PATCH", location, NULL, &ex) == BERTH_RESULT_OK);
    CHECK(berth_exchange_add_header(ex, "Content-Range", range) == BERTH_RESULT_OK);
    CHECK(berth_exchange_add_header(ex, "Content-Length", length) == BERTH_RESULT_OK);
    for (size_t done = 0; done < this_chunk; done += write_size) {
      for (size_t i = 0; i < write_size; i += 8) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        memcpy(buffer + i, &state, 8);
      }
      EVP_DigestUpdate(hash, buffer, write_size);
      CHECK(berth_exchange_write(ex, buffer, write_size) == BERTH_RESULT_OK);
    }
    CHECK(berth_exchange_finish(ex) == BERTH_RESULT_OK);
    uint16_t status = 0;
    CHECK(berth_exchange_status(ex, &status) == BERTH_RESULT_OK && status == 202);
    size_t count = 0;
    CHECK(berth_exchange_header_count(ex, &count) == BERTH_RESULT_OK);
    for (size_t i = 0; i < count; i++) {
      const char *name, *value;
      CHECK(berth_exchange_header(ex, i, &name, &value) == BERTH_RESULT_OK);
      if (strcasecmp(name, "Location") == 0) snprintf(location, sizeof location, "%s", value);
    }
    berth_exchange_free(ex);
  }
  unsigned char raw[32];
  unsigned int n = 0;
  EVP_DigestFinal_ex(hash, raw, &n);
  EVP_MD_CTX_free(hash);
  char digest[72] = "sha256:";
  for (int i = 0; i < 32; i++) sprintf(digest + 7 + 2 * i, "%02x", raw[i]);

  char target[700];
  snprintf(target, sizeof target, "%s%sdigest=%s", location, strchr(location, '?') ? "&" : "?", digest);
  CHECK(exchange(registry, "PUT", target, NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 201);
  response_clear(&r);

  /* Pull it back through berth_exchange_next_chunk (no copies) and hash it again. */
  snprintf(target, sizeof target, "/v2/c/big/blobs/%s", digest);
  berth_exchange *ex = NULL;
  CHECK(berth_exchange_new(registry, "GET", target, NULL, &ex) == BERTH_RESULT_OK);
  CHECK(berth_exchange_finish(ex) == BERTH_RESULT_OK);
  hash = EVP_MD_CTX_new();
  EVP_DigestInit_ex(hash, EVP_sha256(), NULL);
  size_t pulled = 0;
  for (;;) {
    const uint8_t *data = NULL;
    size_t len = 0;
    CHECK(berth_exchange_next_chunk(ex, &data, &len) == BERTH_RESULT_OK);
    if (!len) break;
    EVP_DigestUpdate(hash, data, len);
    pulled += len;
  }
  berth_exchange_free(ex);
  EVP_DigestFinal_ex(hash, raw, &n);
  EVP_MD_CTX_free(hash);
  char pulled_digest[72] = "sha256:";
  for (int i = 0; i < 32; i++) sprintf(pulled_digest + 7 + 2 * i, "%02x", raw[i]);
  free(buffer);
  berth_registry_free(registry);
  CHECK(pulled == total);
  CHECK(strcmp(pulled_digest, digest) == 0);

  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  printf("        %zu MiB pushed in 16 MiB chunks and pulled back; peak RSS %ld MiB\n", blob_mib,
         usage.ru_maxrss / 1024);
  /* Sanitizers and valgrind inflate RSS; the bound is checked on the plain build only. */
  if (!getenv("BERTH_TEST_NO_RSS_LIMIT")) CHECK(usage.ru_maxrss < 96 * 1024);
  return 1;
}

/* A body cut off before `finish` publishes nothing. */
static int test_cut_off_body(void) {
  berth_registry *registry = registry_over("memory", NULL);
  CHECK(registry);
  const char *content = "a body that will not arrive whole";
  char digest[72], target[256];
  sha256_hex(content, strlen(content), digest);
  snprintf(target, sizeof target, "/v2/c/cut/blobs/uploads/?digest=%s", digest);
  berth_exchange *ex = NULL;
  CHECK(berth_exchange_new(registry, "POST", "/v2/c/cut/blobs/uploads/", strchr(target, '?') + 1, &ex) == BERTH_RESULT_OK);
  char length[16];
  snprintf(length, sizeof length, "%zu", strlen(content));
  CHECK(berth_exchange_add_header(ex, "Content-Length", length) == BERTH_RESULT_OK);
  CHECK(berth_exchange_write(ex, (const uint8_t *)content, 10) == BERTH_RESULT_OK);
  berth_exchange_free(ex);

  response r;
  snprintf(target, sizeof target, "/v2/c/cut/blobs/%s", digest);
  CHECK(exchange(registry, "HEAD", target, NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 404);
  response_clear(&r);
  berth_registry_free(registry);
  return 1;
}

/* Many threads, one registry: each pushes its own blobs and pulls them back. */
typedef struct worker {
  berth_registry *registry;
  int index, ok;
} worker;

static void *work(void *arg) {
  worker *w = arg;
  w->ok = 1;
  for (int i = 0; i < 20 && w->ok; i++) {
    char content[64], digest[72], target[256];
    snprintf(content, sizeof content, "thread %d blob %d", w->index, i);
    sha256_hex(content, strlen(content), digest);
    snprintf(target, sizeof target, "/v2/threads/t%d/blobs/uploads/?digest=%s", w->index, digest);
    response r;
    if (exchange(w->registry, "POST", target, NULL, content, strlen(content), &r) != BERTH_RESULT_OK ||
        r.status != 201)
      w->ok = 0;
    response_clear(&r);
    snprintf(target, sizeof target, "/v2/threads/t%d/blobs/%s", w->index, digest);
    if (exchange(w->registry, "GET", target, NULL, NULL, 0, &r) != BERTH_RESULT_OK || r.status != 200 ||
        r.len != strlen(content) || memcmp(r.body, content, r.len) != 0)
      w->ok = 0;
    response_clear(&r);
  }
  return NULL;
}

static int threads_on(const char *kind) {
  berth_registry *registry = registry_over(kind, fs_root);
  CHECK(registry);
  enum { THREADS = 8 };
  pthread_t threads[THREADS];
  worker workers[THREADS];
  for (int i = 0; i < THREADS; i++) {
    workers[i] = (worker){registry, i, 0};
    CHECK(pthread_create(&threads[i], NULL, work, &workers[i]) == 0);
  }
  int ok = 1;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(threads[i], NULL);
    ok &= workers[i].ok;
  }
  berth_registry_free(registry);
  CHECK(ok);
  return 1;
}
static int test_threads_memstore(void) { return threads_on("memstore"); }
static int test_threads_fs(void) { return threads_on("fs"); }

/* ---- storage callbacks ------------------------------------------------------------ */

static int test_memstore_meets_the_contract(void) {
  berth_config *config = NULL;
  CHECK(berth_config_new(&config) == BERTH_RESULT_OK);
  CHECK(memstore_install(config) == BERTH_RESULT_OK);
  berth_result result = berth_check_storage(config);
  berth_config_free(config);
  CHECK(result == BERTH_RESULT_OK);
  return 1;
}

static int finalized;
static void count_finalizer(void *env) {
  (void)env;
  finalized++;
}
static uint32_t always_fails(void) { return BERTH_RESULT_STORAGE_FAILED; }
static uint32_t fail_get(void *e, const char *k, bool h, uint64_t s, uint64_t n, berth_storage_out *o) {
  (void)e, (void)k, (void)h, (void)s, (void)n, (void)o;
  return always_fails();
}
static uint32_t fail_read(void *e, void *r, uint8_t *b, size_t c, size_t *n) {
  (void)e, (void)r, (void)b, (void)c, (void)n;
  return always_fails();
}
static void noop_close(void *e, void *r) { (void)e, (void)r; }
static uint32_t fail_head(void *e, const char *k, berth_storage_out *o) {
  (void)e, (void)k, (void)o;
  return always_fails();
}
/* Claims success without reporting what it wrote: a contract violation berth must catch. */
static uint32_t lying_put(void *e, const char *k, const uint8_t *d, size_t l, berth_put_mode m,
                          const char *v, berth_storage_out *o) {
  (void)e, (void)k, (void)d, (void)l, (void)m, (void)v, (void)o;
  return BERTH_RESULT_OK;
}
static uint32_t fail_key(void *e, const char *k) {
  (void)e, (void)k;
  return always_fails();
}
static uint32_t fail_list(void *e, const char *p, bool d, const char *s, size_t l, berth_storage_out *o) {
  (void)e, (void)p, (void)d, (void)s, (void)l, (void)o;
  return always_fails();
}
static uint32_t fail_create(void *e, const char *k, berth_storage_out *o) {
  (void)e, (void)k, (void)o;
  return always_fails();
}
static uint32_t fail_part(void *e, const char *u, uint32_t n, const berth_slice *c, size_t k, berth_storage_out *o) {
  (void)e, (void)u, (void)n, (void)c, (void)k, (void)o;
  return always_fails();
}
static uint32_t fail_complete(void *e, const char *u, const char *const *p, size_t n, const char *t) {
  (void)e, (void)u, (void)p, (void)n, (void)t;
  return always_fails();
}

static int test_broken_storage(void) {
  berth_storage_vtable vtable = {
      fail_get, fail_read, noop_close, fail_head, lying_put, fail_key, fail_list,
      fail_create, fail_part, fail_complete, fail_key, 0, 0, false,
  };
  finalized = 0;
  berth_config *config = NULL;
  CHECK(berth_config_new(&config) == BERTH_RESULT_OK);
  CHECK(berth_config_set_storage(config, &vtable, NULL, count_finalizer) == BERTH_RESULT_OK);
  CHECK(berth_check_storage(config) == BERTH_RESULT_CHECK_FAILED);
  char detail[512];
  CHECK(berth_last_error(detail, sizeof detail) > 0 && strstr(detail, "storage contract") != NULL);

  /* A registry over it answers with the spec's error JSON, never a crash. */
  berth_registry *registry = NULL;
  CHECK(berth_registry_new(config, &registry) == BERTH_RESULT_OK);
  response r;
  CHECK(exchange(registry, "GET", "/v2/x/tags/list", NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 500 && strstr(r.body, "\"errors\"") != NULL);
  response_clear(&r);
  CHECK(exchange(registry, "POST", "/v2/x/blobs/uploads/", NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 500);
  response_clear(&r);
  berth_config_free(config);
  CHECK(finalized == 0); /* the registry still uses it */
  berth_registry_free(registry);
  CHECK(finalized == 1);

  /* A vtable with a callback missing is refused, and env is finalized all the same. */
  vtable.list = NULL;
  CHECK(berth_config_new(&config) == BERTH_RESULT_OK);
  CHECK(berth_config_set_storage(config, &vtable, NULL, count_finalizer) == BERTH_RESULT_INVALID_ARGUMENT);
  CHECK(berth_last_error(detail, sizeof detail) > 0 && strstr(detail, "list") != NULL);
  CHECK(finalized == 2);
  berth_config_free(config);
  return 1;
}

static int test_purge_uploads(void) {
  berth_registry *registry = registry_over("memory", NULL);
  CHECK(registry);
  response r;
  CHECK(exchange(registry, "POST", "/v2/c/purge/blobs/uploads/", NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 202);
  response_clear(&r);
  uint64_t purged = 99;
  CHECK(berth_registry_purge_uploads(registry, 7 * 24 * 3600, &purged) == BERTH_RESULT_OK);
  CHECK(purged == 0); /* a fresh session is kept */
  CHECK(berth_registry_purge_uploads(registry, 7 * 24 * 3600, NULL) == BERTH_RESULT_NULL_PARAMETER);
  berth_registry_free(registry);
  return 1;
}

static int test_quotas_and_scrub(void) {
  berth_config *config = NULL;
  berth_registry *registry = NULL;
  CHECK(berth_config_new(&config) == BERTH_RESULT_OK);
  CHECK(berth_config_set_memory(config) == BERTH_RESULT_OK);
  CHECK(berth_config_set_track_references(config, true) == BERTH_RESULT_OK);
  CHECK(berth_config_set_quotas(config, "[{\"limit\": 1}]") == BERTH_RESULT_INVALID_ARGUMENT);
  CHECK(berth_config_set_quotas(config, "[{\"repositories\": \"c/*\", \"limit\": 20}]") ==
        BERTH_RESULT_OK);
  CHECK(berth_registry_new(config, &registry) == BERTH_RESULT_OK);
  berth_config_free(config);

  const char *fits = "fifteen bytes..", *more = "ten bytes!";
  char digest[72], target[256];
  response r;
  sha256_hex(fits, strlen(fits), digest);
  snprintf(target, sizeof target, "/v2/c/q/blobs/uploads/?digest=%s", digest);
  CHECK(exchange(registry, "POST", target, NULL, fits, strlen(fits), &r) == BERTH_RESULT_OK);
  CHECK(r.status == 201);
  response_clear(&r);
  sha256_hex(more, strlen(more), digest);
  snprintf(target, sizeof target, "/v2/c/q/blobs/uploads/?digest=%s", digest);
  const char *const headers[] = {"Content-Length", "10", NULL};
  CHECK(exchange(registry, "POST", target, headers, more, strlen(more), &r) == BERTH_RESULT_OK);
  CHECK(r.status == 403 && strstr(r.body, "DENIED") && strstr(r.body, "15 B of its 20 B limit"));
  response_clear(&r);

  berth_scrub_report report;
  memset(&report, 0xff, sizeof report);
  CHECK(berth_registry_scrub(registry, 0, 3600, BERTH_COLLECTION_FLAG_DRY_RUN, &report) ==
        BERTH_RESULT_OK);
  CHECK(report.blobs == 1 && report.stray_blobs == 0 && report.marked == 0 &&
        report.usage_recounted == 0);
  CHECK(berth_registry_scrub(registry, 0, 3600, 0, &report) == BERTH_RESULT_OK);
  CHECK(report.marked > 0 && report.usage_recounted == 1);
  CHECK(berth_registry_scrub(registry, 0, 3600, 8, &report) == BERTH_RESULT_INVALID_ARGUMENT);
  CHECK(berth_registry_scrub(registry, 0, 3600, 0, NULL) == BERTH_RESULT_NULL_PARAMETER);
  berth_registry_free(registry);
  return 1;
}

static int test_path_not_utf8(void) {
  berth_registry *registry = registry_over("memory", NULL);
  CHECK(registry);
  response r;
  /* A path that is not UTF-8 is refused like any malformed name. */
  CHECK(exchange(registry, "GET", "/v2/\xff\xfe/tags/list", NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 400 && strstr(r.body, "NAME_INVALID"));
  response_clear(&r);
  berth_registry_free(registry);
  return 1;
}

static int notices_heard;
static char last_notice[512];

static void hear_notice(void *env, const char *message) {
  (*(int *)env)++;
  snprintf(last_notice, sizeof last_notice, "%s", message);
}

static int write_file(const char *path, const char *text) {
  char command[1024];
  snprintf(command, sizeof command, "mkdir -p \"$(dirname '%s')\"", path);
  if (system(command) != 0) return 0;
  FILE *f = fopen(path, "w");
  if (!f) return 0;
  fputs(text, f);
  return fclose(f) == 0;
}

static int test_notices(void) {
  char root[600], link[800];
  snprintf(root, sizeof root, "%s/notices", fs_root);
  const char *names[] = {"good", "Bad..Name"};
  for (int i = 0; i < 2; i++) {
    snprintf(link, sizeof link, "%s/docker/registry/v2/repositories/%s/_layers/sha256/00/link", root,
             names[i]);
    CHECK(write_file(link, "sha256:00"));
  }
  berth_config *config = NULL;
  berth_registry *registry = NULL;
  CHECK(berth_config_new(&config) == BERTH_RESULT_OK);
  CHECK(berth_config_set_fs(config, root) == BERTH_RESULT_OK);
  CHECK(berth_config_set_notice_callback(config, hear_notice, &notices_heard) == BERTH_RESULT_OK);
  CHECK(berth_registry_new(config, &registry) == BERTH_RESULT_OK);
  berth_config_free(config);
  response r;
  CHECK(exchange(registry, "GET", "/v2/_catalog", NULL, NULL, 0, &r) == BERTH_RESULT_OK);
  CHECK(r.status == 200 && strcmp(r.body, "{\"repositories\":[\"good\"]}") == 0);
  response_clear(&r);
  CHECK(notices_heard == 1 && strstr(last_notice, "\"Bad..Name\""));
  berth_registry_free(registry);
  return 1;
}

int main(int argc, char **argv) {
  if (argc > 1) blob_mib = (size_t)atoi(argv[1]);
  if (!mkdtemp(fs_root)) {
    perror("mkdtemp");
    return 2;
  }
  printf("berth %s C ABI tests\n", berth_version());
  run("result codes have messages", test_result_messages);
  run("NULL arguments are refused; out-parameters untouched", test_null_arguments);
  run("configuration errors are reported with detail", test_configuration_errors);
  run("calls out of order get WRONG_STATE", test_exchange_state_machine);
  run("blob push and pull over memory storage", test_blob_memory);
  run("blob push and pull over filesystem storage", test_blob_fs);
  run("blob push and pull over C callback storage (memstore)", test_blob_memstore);
  run("a large blob streams through in bounded memory", test_streamed_blob);
  run("a body cut off before finish publishes nothing", test_cut_off_body);
  run("8 threads share one registry (memstore)", test_threads_memstore);
  run("8 threads share one registry (filesystem)", test_threads_fs);
  run("memstore passes the storage contract suite", test_memstore_meets_the_contract);
  run("a broken storage fails the check, serves errors, is finalized once", test_broken_storage);
  run("purging uploads keeps fresh sessions", test_purge_uploads);
  run("quotas refuse a push past the limit; a scrub reports what it finds", test_quotas_and_scrub);
  run("a path that is not UTF-8 gets 400", test_path_not_utf8);
  run("notices reach the host's callback", test_notices);
  char command[128];
  snprintf(command, sizeof command, "rm -rf %s", fs_root);
  if (system(command) != 0) fprintf(stderr, "could not remove %s\n", fs_root);
  printf("c-abi: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
