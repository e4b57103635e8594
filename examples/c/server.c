/*
 * berth-c-server: an OCI registry served by libmicrohttpd, with berth embedded through its
 * C ABI. Request bodies stream into berth as libmicrohttpd delivers them; response bodies
 * stream out of berth as libmicrohttpd asks for them, so blobs of any size pass through in
 * bounded memory.
 *
 *   berth-c-server [--port N] [--root DIR | --memstore] [--part-size BYTES]
 *
 * --root DIR  stores data in DIR (registry:2's layout; default ./berth-data)
 * --memstore  stores data in memory through the C storage callbacks of memstore.c
 * --port N    listens on 127.0.0.1:N (default 5000; 0 picks a free port)
 * --part-size BYTES  the most of one upload held in memory (default 8 MiB)
 *
 * BERTH_AUTH, when set, holds the login settings as JSON (users' htpasswd text, access
 * rules, a token key; see berth_config_set_auth in berth.h). Token issuers' key sets at
 * URLs (`keys-url`) are fetched with libcurl.
 *
 * BERTH_GC=1 records who references each blob and collects garbage every BERTH_GC_INTERVAL
 * seconds (default 3600): blobs nothing references, older than BERTH_GC_GRACE seconds
 * (default 86400); with BERTH_GC_UNTAGGED=1 also manifests untagged that long. BERTH_RETENTION
 * holds retention rules as JSON (see berth_config_set_retention), BERTH_QUOTAS quota rules
 * (see berth_config_set_quotas), BERTH_UPSTREAMS pull-through cache rules (see
 * berth_config_set_upstreams).
 *
 * It prints "listening on 127.0.0.1:PORT" once it accepts connections, and stops on
 * SIGINT or SIGTERM.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "berth.h"
#include "memstore.h"

/* One request: created when the request line arrives, freed once both libmicrohttpd's
 * connection and its response are done with it. */
typedef struct request {
  atomic_int refs;
  char *target; /* the raw request target, path and query, as the client sent it */
  berth_exchange *exchange;
  berth_result failure;
  /* A first chunk read to tell an empty body from a streamed one. */
  const uint8_t *pending;
  size_t pending_len;
} request;

static berth_registry *registry;

static void report(const char *what, berth_result result) {
  char detail[512];
  size_t len = berth_last_error(detail, sizeof detail);
  fprintf(stderr, "berth-c-server: %s: %s%s%s\n", what, berth_result_message(result),
          len ? ": " : "", len ? detail : "");
}

/* Notices (what a response could not carry, such as a catalog entry left out) go to the log. */
static void log_notice(void *env, const char *message) {
  (void)env;
  fprintf(stderr, "berth-c-server: notice: %s\n", message);
}

/* A key set being fetched: the body so far, refused past berth's limit. */
typedef struct fetched {
  char *data;
  size_t length;
} fetched;

enum { KEY_SET_LIMIT = 1 << 20 };

static size_t on_key_set_data(char *data, size_t size, size_t count, void *env) {
  fetched *body = env;
  size_t more = size * count;
  if (body->length + more > KEY_SET_LIMIT) return 0; /* curl stops: CURLE_WRITE_ERROR */
  char *grown = realloc(body->data, body->length + more);
  if (!grown) return 0;
  memcpy(grown + body->length, data, more);
  body->data = grown;
  body->length += more;
  return more;
}

/* berth's key set fetcher: a GET with libcurl, bounded in time and size, on a thread where
 * berth lets it block. */
static void fetch_key_set(void *env, const char *url, berth_key_set_out *out) {
  (void)env;
  CURL *curl = curl_easy_init();
  if (!curl) {
    berth_key_set_out_set_error(out, "curl_easy_init failed");
    return;
  }
  fetched body = {0};
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_key_set_data);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  CURLcode code = curl_easy_perform(curl);
  if (code == CURLE_OK)
    berth_key_set_out_set_body(out, (const uint8_t *)body.data, body.length);
  else
    berth_key_set_out_set_error(out, curl_easy_strerror(code));
  free(body.data);
  curl_easy_cleanup(curl);
}

static void request_unref(request *r) {
  if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
    berth_exchange_free(r->exchange);
    free(r->target);
    free(r);
  }
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *connection) {
  (void)cls;
  (void)connection;
  request *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  atomic_init(&r->refs, 1);
  r->target = strdup(uri);
  return r;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode code) {
  (void)cls;
  (void)connection;
  (void)code;
  request_unref(*con_cls);
  *con_cls = NULL;
}

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *name,
                                  const char *value) {
  (void)kind;
  request *r = cls;
  if (r->failure == BERTH_RESULT_OK && value)
    r->failure = berth_exchange_add_header(r->exchange, name, value);
  return MHD_YES;
}

static ssize_t read_body(void *cls, uint64_t position, char *buffer, size_t capacity) {
  (void)position;
  request *r = cls;
  if (r->pending_len) {
    size_t n = r->pending_len < capacity ? r->pending_len : capacity;
    memcpy(buffer, r->pending, n);
    r->pending += n;
    r->pending_len -= n;
    return (ssize_t)n;
  }
  size_t n = 0;
  berth_result result = berth_exchange_read(r->exchange, (uint8_t *)buffer, capacity, &n);
  if (result != BERTH_RESULT_OK) {
    report("response body", result);
    return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  return n ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

static void release_body(void *cls) { request_unref(cls); }

static enum MHD_Result fail(struct MHD_Connection *connection) {
  static const char body[] =
      "{\"errors\":[{\"code\":\"UNKNOWN\",\"message\":\"the registry host failed\"}]}";
  struct MHD_Response *response =
      MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
  if (!response) return MHD_NO;
  MHD_add_response_header(response, "Content-Type", "application/json");
  enum MHD_Result queued = MHD_queue_response(connection, 500, response);
  MHD_destroy_response(response);
  return queued;
}

/* A request whose body length cannot be known: a transfer coding other than chunked, which
 * libmicrohttpd would read until the client closes (RFC 9112 section 6.3 asks for a 400). */
static enum MHD_Result refuse_framing(struct MHD_Connection *connection) {
  static const char body[] =
      "{\"errors\":[{\"code\":\"SIZE_INVALID\",\"message\":"
      "\"a transfer coding other than chunked: the body's length cannot be known\"}]}";
  struct MHD_Response *response =
      MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
  if (!response) return MHD_NO;
  MHD_add_response_header(response, "Content-Type", "application/json");
  MHD_add_response_header(response, "Docker-Distribution-API-Version", "registry/2.0");
  enum MHD_Result queued = MHD_queue_response(connection, 400, response);
  MHD_destroy_response(response);
  return queued;
}

/* Hands berth's response to libmicrohttpd. */
static enum MHD_Result respond(struct MHD_Connection *connection, request *r) {
  uint16_t status = 500;
  size_t count = 0;
  if (berth_exchange_status(r->exchange, &status) != BERTH_RESULT_OK ||
      berth_exchange_header_count(r->exchange, &count) != BERTH_RESULT_OK)
    return fail(connection);

  uint64_t size = MHD_SIZE_UNKNOWN;
  for (size_t i = 0; i < count; i++) {
    const char *name, *value;
    if (berth_exchange_header(r->exchange, i, &name, &value) == BERTH_RESULT_OK &&
        strcasecmp(name, "Content-Length") == 0)
      size = strtoull(value, NULL, 10);
  }
  if (size == MHD_SIZE_UNKNOWN) {
    /* No length: peek, so that an empty body is sent as one (a 202 or 204 must not be
     * chunked), and a streamed one as chunks. */
    berth_result result = berth_exchange_next_chunk(r->exchange, &r->pending, &r->pending_len);
    if (result != BERTH_RESULT_OK) {
      report("response body", result);
      return fail(connection);
    }
    if (r->pending_len == 0) size = 0;
  }

  atomic_fetch_add(&r->refs, 1); /* the response's reference, dropped by release_body */
  struct MHD_Response *response =
      MHD_create_response_from_callback(size, 64 * 1024, read_body, r, release_body);
  if (!response) {
    request_unref(r);
    return fail(connection);
  }
  for (size_t i = 0; i < count; i++) {
    const char *name, *value;
    if (berth_exchange_header(r->exchange, i, &name, &value) != BERTH_RESULT_OK) continue;
    /* libmicrohttpd writes the framing headers itself, from the size given above. */
    if (strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Transfer-Encoding") == 0)
      continue;
    MHD_add_response_header(response, name, value);
  }
  enum MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  (void)cls;
  (void)url; /* decoded; berth wants the raw target kept by on_uri */
  (void)version;
  request *r = *con_cls;
  if (!r || !r->target) return MHD_NO;

  if (!r->exchange) {
    const char *coding =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (coding && strcasecmp(coding, "chunked") != 0) return refuse_framing(connection);
    char *query = strchr(r->target, '?');
    if (query) *query++ = '\0';
    r->failure = berth_exchange_new(registry, method, r->target, query, &r->exchange);
    if (r->failure == BERTH_RESULT_OK)
      MHD_get_connection_values(connection, MHD_HEADER_KIND, add_header, r);
    if (r->failure != BERTH_RESULT_OK) report("request", r->failure);
    return MHD_YES; /* the body, if any, comes in the next calls */
  }
  if (*upload_data_size) {
    if (r->failure == BERTH_RESULT_OK)
      r->failure = berth_exchange_write(r->exchange, (const uint8_t *)upload_data,
                                        *upload_data_size);
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (r->failure == BERTH_RESULT_OK) r->failure = berth_exchange_finish(r->exchange);
  if (r->failure != BERTH_RESULT_OK) {
    report("request", r->failure);
    return fail(connection);
  }
  return respond(connection, r);
}

static volatile sig_atomic_t stopping;
static void on_signal(int signal) { (void)signal; stopping = 1; }

/* How the collector thread runs (BERTH_GC_INTERVAL, BERTH_GC_GRACE, BERTH_GC_UNTAGGED). */
static uint64_t gc_interval = 3600, gc_grace = 86400;
static uint32_t gc_flags = 0;

/* Collects garbage every gc_interval seconds, in steps, until the process stops. */
static void *collect_garbage(void *unused) {
  (void)unused;
  for (;;) {
    for (uint64_t waited = 0; waited < gc_interval; waited++) sleep(1);
    berth_collection_report step;
    do {
      berth_result result = berth_registry_collect_garbage(registry, gc_grace, 1000, gc_flags, &step);
      if (result != BERTH_RESULT_OK) {
        report("collecting garbage", result);
        break;
      }
      if (step.tags_deleted || step.manifests_deleted || step.blobs_deleted || step.links_removed)
        fprintf(stderr,
                "berth-c-server: collected %llu expired tags, %llu untagged manifests, %llu blobs "
                "(%llu bytes), %llu links\n",
                (unsigned long long)step.tags_deleted, (unsigned long long)step.manifests_deleted,
                (unsigned long long)step.blobs_deleted, (unsigned long long)step.bytes_deleted,
                (unsigned long long)step.links_removed);
      /* Again while candidates are left (or the first marking has pages left). */
    } while (step.left && (step.visited || step.marked));
  }
  return NULL;
}

static uint64_t env_number(const char *name, uint64_t fallback) {
  const char *value = getenv(name);
  return value && *value ? strtoull(value, NULL, 10) : fallback;
}

int main(int argc, char **argv) {
  unsigned port = 5000;
  const char *root = "berth-data";
  int use_memstore = 0;
  size_t part_size = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) port = (unsigned)atoi(argv[++i]);
    else if (strcmp(argv[i], "--root") == 0 && i + 1 < argc) root = argv[++i];
    else if (strcmp(argv[i], "--memstore") == 0) use_memstore = 1;
    else if (strcmp(argv[i], "--part-size") == 0 && i + 1 < argc)
      part_size = (size_t)strtoull(argv[++i], NULL, 10);
    else {
      fprintf(stderr, "usage: %s [--port N] [--root DIR | --memstore] [--part-size BYTES]\n",
              argv[0]);
      return 2;
    }
  }

  curl_global_init(CURL_GLOBAL_DEFAULT);
  berth_config *config = NULL;
  berth_result result = berth_config_new(&config);
  if (result == BERTH_RESULT_OK)
    result = use_memstore ? memstore_install(config) : berth_config_set_fs(config, root);
  if (result == BERTH_RESULT_OK && part_size) result = berth_config_set_part_size(config, part_size);
  if (result == BERTH_RESULT_OK) result = berth_config_set_notice_callback(config, log_notice, NULL);
  const char *auth = getenv("BERTH_AUTH");
  if (result == BERTH_RESULT_OK && auth && *auth) result = berth_config_set_auth(config, auth);
  if (result == BERTH_RESULT_OK) result = berth_config_set_key_set_fetcher(config, fetch_key_set, NULL);
  const char *gc = getenv("BERTH_GC");
  bool collecting = gc && *gc && strcmp(gc, "0") != 0;
  if (result == BERTH_RESULT_OK && collecting) result = berth_config_set_track_references(config, true);
  const char *retention = getenv("BERTH_RETENTION");
  if (result == BERTH_RESULT_OK && retention && *retention)
    result = berth_config_set_retention(config, retention);
  const char *quotas = getenv("BERTH_QUOTAS");
  if (result == BERTH_RESULT_OK && quotas && *quotas) result = berth_config_set_quotas(config, quotas);
  const char *upstreams = getenv("BERTH_UPSTREAMS");
  if (result == BERTH_RESULT_OK && upstreams && *upstreams)
    result = berth_config_set_upstreams(config, upstreams);
  if (result == BERTH_RESULT_OK) result = berth_registry_new(config, &registry);
  berth_config_free(config);
  if (result != BERTH_RESULT_OK) {
    report("starting the registry", result);
    return 1;
  }

  struct sockaddr_in address = {0};
  address.sin_family = AF_INET;
  address.sin_port = htons((uint16_t)port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* A thread per connection: berth's calls may wait (for storage, or for a slow body),
   * and each connection waits on its own. */
  struct MHD_Daemon *daemon = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
      (uint16_t)port, NULL, NULL, on_request, NULL,
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
      MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
      MHD_OPTION_END);
  if (!daemon) {
    fprintf(stderr, "berth-c-server: cannot listen on 127.0.0.1:%u\n", port);
    berth_registry_free(registry);
    return 1;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
  printf("listening on 127.0.0.1:%u (%s)\n", info ? info->port : port,
         use_memstore ? "memstore" : root);
  fflush(stdout);

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  if (collecting) {
    gc_interval = env_number("BERTH_GC_INTERVAL", 3600);
    gc_grace = env_number("BERTH_GC_GRACE", 86400);
    if (env_number("BERTH_GC_UNTAGGED", 0)) gc_flags |= BERTH_COLLECTION_FLAG_UNTAGGED;
    pthread_t collector;
    if (pthread_create(&collector, NULL, collect_garbage, NULL) == 0) pthread_detach(collector);
  }
  while (!stopping) pause();

  MHD_stop_daemon(daemon);
  berth_registry_free(registry);
  return 0;
}
