/*
 * memstore: in-memory storage for berth through its C callbacks (see memstore.h).
 *
 * Objects live in an array sorted by key, so listing is a walk from the first key after
 * the prefix. Object data is immutable and reference-counted: a reader keeps the bytes it
 * opened even if the key is overwritten meanwhile, which is the snapshot berth expects.
 */
#include "memstore.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct data {
  atomic_int refs;
  size_t len;
  uint8_t bytes[];
} data;

typedef struct object {
  char *key;
  data *data;
  uint64_t version;
  uint64_t modified; /* when it was written: milliseconds since the Unix epoch */
} object;

typedef struct part {
  char *id;
  data *data;
} part;

typedef struct upload {
  char *id;
  part *parts;
  size_t count;
} upload;

typedef struct memstore {
  pthread_mutex_t lock;
  object *objects; /* sorted by key */
  size_t count, capacity;
  upload *uploads;
  size_t upload_count;
  uint64_t counter; /* versions and ids */
} memstore;

typedef struct reader {
  data *data;
  size_t position, end;
} reader;

static data *data_new(size_t len) {
  data *d = malloc(sizeof(data) + len);
  if (d) {
    atomic_init(&d->refs, 1);
    d->len = len;
  }
  return d;
}

static data *data_ref(data *d) {
  atomic_fetch_add(&d->refs, 1);
  return d;
}

static void data_unref(data *d) {
  if (d && atomic_fetch_sub(&d->refs, 1) == 1) free(d);
}

/* Index of `key`, or of where it would go; *found says which. */
static size_t find(const memstore *s, const char *key, int *found) {
  size_t low = 0, high = s->count;
  while (low < high) {
    size_t mid = low + (high - low) / 2;
    int order = strcmp(s->objects[mid].key, key);
    if (order == 0) {
      *found = 1;
      return mid;
    }
    if (order < 0) low = mid + 1;
    else high = mid;
  }
  *found = 0;
  return low;
}

static upload *find_upload(memstore *s, const char *id) {
  for (size_t i = 0; i < s->upload_count; i++)
    if (strcmp(s->uploads[i].id, id) == 0) return &s->uploads[i];
  return NULL;
}

static uint64_t now_millis(void) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

static uint32_t report_meta(berth_storage_out *out, size_t len, uint64_t version,
                            uint64_t modified) {
  char text[24];
  snprintf(text, sizeof text, "%" PRIu64, version);
  return berth_storage_out_set_meta(out, len, text) == BERTH_RESULT_OK &&
                 berth_storage_out_set_last_modified(out, modified) == BERTH_RESULT_OK
             ? BERTH_RESULT_OK
             : BERTH_RESULT_STORAGE_FAILED;
}

/* Stores `d` (taking its reference) under `key`; the caller holds the lock. */
static uint32_t store(memstore *s, const char *key, data *d, uint64_t *out_version,
                      uint64_t *out_modified) {
  int found;
  size_t at = find(s, key, &found);
  uint64_t version = ++s->counter;
  uint64_t modified = now_millis();
  if (found) {
    data_unref(s->objects[at].data);
    s->objects[at].data = d;
    s->objects[at].version = version;
    s->objects[at].modified = modified;
  } else {
    if (s->count == s->capacity) {
      size_t capacity = s->capacity ? s->capacity * 2 : 64;
      object *grown = realloc(s->objects, capacity * sizeof(object));
      if (!grown) return BERTH_RESULT_STORAGE_FAILED;
      s->objects = grown;
      s->capacity = capacity;
    }
    char *copy = strdup(key);
    if (!copy) return BERTH_RESULT_STORAGE_FAILED;
    memmove(&s->objects[at + 1], &s->objects[at], (s->count - at) * sizeof(object));
    s->objects[at] = (object){copy, d, version, modified};
    s->count++;
  }
  *out_version = version;
  *out_modified = modified;
  return BERTH_RESULT_OK;
}

static uint32_t ms_get(void *env, const char *key, bool has_range, uint64_t start, uint64_t end,
                       berth_storage_out *out) {
  memstore *s = env;
  pthread_mutex_lock(&s->lock);
  int found;
  size_t at = find(s, key, &found);
  if (!found) {
    pthread_mutex_unlock(&s->lock);
    return BERTH_RESULT_NOT_FOUND;
  }
  object *o = &s->objects[at];
  data *d = data_ref(o->data);
  uint64_t version = o->version, modified = o->modified;
  pthread_mutex_unlock(&s->lock);

  if (!has_range) {
    start = 0;
    end = d->len;
  }
  if (start > end || end > d->len) {
    data_unref(d);
    return BERTH_RESULT_STORAGE_FAILED;
  }
  reader *r = malloc(sizeof *r);
  if (!r) {
    data_unref(d);
    return BERTH_RESULT_STORAGE_FAILED;
  }
  *r = (reader){d, (size_t)start, (size_t)end};
  /* Once the reader is reported, berth closes it whatever happens next. */
  if (berth_storage_out_set_reader(out, r) != BERTH_RESULT_OK) {
    data_unref(d);
    free(r);
    return BERTH_RESULT_STORAGE_FAILED;
  }
  return report_meta(out, d->len, version, modified);
}

static uint32_t ms_read(void *env, void *handle, uint8_t *buffer, size_t capacity, size_t *out_len) {
  (void)env;
  reader *r = handle;
  size_t n = r->end - r->position;
  if (n > capacity) n = capacity;
  memcpy(buffer, r->data->bytes + r->position, n);
  r->position += n;
  *out_len = n;
  return BERTH_RESULT_OK;
}

static void ms_close(void *env, void *handle) {
  (void)env;
  reader *r = handle;
  data_unref(r->data);
  free(r);
}

static uint32_t ms_head(void *env, const char *key, berth_storage_out *out) {
  memstore *s = env;
  pthread_mutex_lock(&s->lock);
  int found;
  size_t at = find(s, key, &found);
  size_t len = found ? s->objects[at].data->len : 0;
  uint64_t version = found ? s->objects[at].version : 0;
  uint64_t modified = found ? s->objects[at].modified : 0;
  pthread_mutex_unlock(&s->lock);
  return found ? report_meta(out, len, version, modified) : BERTH_RESULT_NOT_FOUND;
}

static uint32_t ms_put(void *env, const char *key, const uint8_t *bytes, size_t len,
                       berth_put_mode mode, const char *expected_version, berth_storage_out *out) {
  memstore *s = env;
  data *d = data_new(len);
  if (!d) return BERTH_RESULT_STORAGE_FAILED;
  if (len) memcpy(d->bytes, bytes, len);
  pthread_mutex_lock(&s->lock);
  int found;
  size_t at = find(s, key, &found);
  uint32_t result = BERTH_RESULT_OK;
  if (mode == BERTH_PUT_MODE_CREATE && found) {
    result = BERTH_RESULT_ALREADY_EXISTS;
  } else if (mode == BERTH_PUT_MODE_UPDATE) {
    char current[24];
    if (found) snprintf(current, sizeof current, "%" PRIu64, s->objects[at].version);
    if (!found || !expected_version || strcmp(current, expected_version) != 0)
      result = BERTH_RESULT_PRECONDITION_FAILED;
  }
  uint64_t version = 0, modified = 0;
  if (result == BERTH_RESULT_OK) result = store(s, key, d, &version, &modified);
  pthread_mutex_unlock(&s->lock);
  if (result != BERTH_RESULT_OK) {
    data_unref(d);
    return result;
  }
  return report_meta(out, len, version, modified);
}

static uint32_t ms_delete(void *env, const char *key) {
  memstore *s = env;
  pthread_mutex_lock(&s->lock);
  int found;
  size_t at = find(s, key, &found);
  if (found) {
    free(s->objects[at].key);
    data_unref(s->objects[at].data);
    memmove(&s->objects[at], &s->objects[at + 1], (s->count - at - 1) * sizeof(object));
    s->count--;
  }
  pthread_mutex_unlock(&s->lock);
  return BERTH_RESULT_OK;
}

static uint32_t ms_list(void *env, const char *prefix, bool delimiter, const char *start_after,
                        size_t limit, berth_storage_out *out) {
  memstore *s = env;
  size_t prefix_len = strlen(prefix);
  uint32_t result = BERTH_RESULT_OK;
  char *last = NULL; /* the last folded prefix reported */
  size_t taken = 0;
  pthread_mutex_lock(&s->lock);
  int found;
  for (size_t i = find(s, prefix, &found); i < s->count && result == BERTH_RESULT_OK; i++) {
    const char *key = s->objects[i].key;
    if (strncmp(key, prefix, prefix_len) != 0) break;
    /* With a delimiter, keys below the next '/' fold into one prefix; folding keeps the
     * order of sorted keys, so equal prefixes are neighbours. */
    const char *slash = delimiter ? strchr(key + prefix_len, '/') : NULL;
    size_t entry_len = slash ? (size_t)(slash - key) + 1 : strlen(key);
    if (slash && last && strlen(last) == entry_len && strncmp(last, key, entry_len) == 0) continue;
    char *entry = strndup(key, entry_len);
    if (!entry) {
      result = BERTH_RESULT_STORAGE_FAILED;
      break;
    }
    if (start_after && strcmp(entry, start_after) <= 0) {
      free(last);
      last = entry;
      continue;
    }
    if (taken == limit) {
      free(entry);
      if (berth_storage_out_set_truncated(out, true) != BERTH_RESULT_OK)
        result = BERTH_RESULT_STORAGE_FAILED;
      break;
    }
    taken++;
    berth_result added = slash ? berth_storage_out_add_prefix(out, entry)
                               : berth_storage_out_add_object(out, entry);
    /* An object's time follows it: the listing tells ages without a head per object. */
    if (added == BERTH_RESULT_OK && !slash)
      added = berth_storage_out_set_last_modified(out, s->objects[i].modified);
    if (added != BERTH_RESULT_OK) result = BERTH_RESULT_STORAGE_FAILED;
    free(last);
    last = entry;
  }
  pthread_mutex_unlock(&s->lock);
  free(last);
  return result;
}

static uint32_t ms_create_parts(void *env, const char *staging_key, berth_storage_out *out) {
  (void)staging_key;
  memstore *s = env;
  char id[32];
  pthread_mutex_lock(&s->lock);
  snprintf(id, sizeof id, "upload-%" PRIu64, ++s->counter);
  upload *grown = realloc(s->uploads, (s->upload_count + 1) * sizeof(upload));
  char *copy = strdup(id);
  uint32_t result = BERTH_RESULT_STORAGE_FAILED;
  if (grown) s->uploads = grown;
  if (grown && copy) {
    s->uploads[s->upload_count++] = (upload){copy, NULL, 0};
    copy = NULL;
    result = BERTH_RESULT_OK;
  }
  pthread_mutex_unlock(&s->lock);
  free(copy);
  if (result != BERTH_RESULT_OK) return result;
  return berth_storage_out_set_id(out, id) == BERTH_RESULT_OK ? BERTH_RESULT_OK
                                                              : BERTH_RESULT_STORAGE_FAILED;
}

static uint32_t ms_put_part(void *env, const char *upload_id, uint32_t number,
                            const berth_slice *chunks, size_t count, berth_storage_out *out) {
  memstore *s = env;
  size_t len = 0;
  for (size_t i = 0; i < count; i++) len += chunks[i].len;
  data *d = data_new(len);
  if (!d) return BERTH_RESULT_STORAGE_FAILED;
  for (size_t i = 0, at = 0; i < count; at += chunks[i].len, i++)
    if (chunks[i].len) memcpy(d->bytes + at, chunks[i].data, chunks[i].len);

  char id[48];
  uint32_t result = BERTH_RESULT_OK;
  pthread_mutex_lock(&s->lock);
  upload *u = find_upload(s, upload_id);
  /* Unique even when two writers send the same number: a losing writer harms no one. */
  snprintf(id, sizeof id, "%" PRIu32 "-%" PRIu64, number, ++s->counter);
  part *grown = u ? realloc(u->parts, (u->count + 1) * sizeof(part)) : NULL;
  char *copy = grown ? strdup(id) : NULL;
  if (!u) {
    result = BERTH_RESULT_NOT_FOUND;
  } else if (!grown || !copy) {
    if (grown) u->parts = grown;
    result = BERTH_RESULT_STORAGE_FAILED;
  } else {
    u->parts = grown;
    u->parts[u->count++] = (part){copy, d};
    d = NULL;
  }
  pthread_mutex_unlock(&s->lock);
  data_unref(d);
  if (result != BERTH_RESULT_OK) return result;
  return berth_storage_out_set_id(out, id) == BERTH_RESULT_OK ? BERTH_RESULT_OK
                                                              : BERTH_RESULT_STORAGE_FAILED;
}

static void upload_free(upload *u) {
  for (size_t i = 0; i < u->count; i++) {
    free(u->parts[i].id);
    data_unref(u->parts[i].data);
  }
  free(u->parts);
  free(u->id);
}

/* Removes the upload at `u`; the caller holds the lock. */
static void remove_upload(memstore *s, upload *u) {
  upload_free(u);
  size_t at = (size_t)(u - s->uploads);
  memmove(&s->uploads[at], &s->uploads[at + 1], (s->upload_count - at - 1) * sizeof(upload));
  s->upload_count--;
}

static uint32_t ms_complete_parts(void *env, const char *upload_id, const char *const *parts,
                                  size_t count, const char *target) {
  memstore *s = env;
  uint32_t result = BERTH_RESULT_OK;
  pthread_mutex_lock(&s->lock);
  int found;
  find(s, target, &found);
  upload *u = find_upload(s, upload_id);
  data **chosen = calloc(count ? count : 1, sizeof(data *));
  size_t len = 0;
  if (found) result = BERTH_RESULT_ALREADY_EXISTS;
  else if (!u) result = BERTH_RESULT_NOT_FOUND;
  else if (!chosen) result = BERTH_RESULT_STORAGE_FAILED;
  for (size_t i = 0; result == BERTH_RESULT_OK && i < count; i++) {
    for (size_t j = 0; j < u->count; j++)
      if (strcmp(u->parts[j].id, parts[i]) == 0) chosen[i] = u->parts[j].data;
    if (!chosen[i]) result = BERTH_RESULT_NOT_FOUND;
    else len += chosen[i]->len;
  }
  data *joined = result == BERTH_RESULT_OK ? data_new(len) : NULL;
  if (result == BERTH_RESULT_OK && !joined) result = BERTH_RESULT_STORAGE_FAILED;
  if (result == BERTH_RESULT_OK) {
    for (size_t i = 0, at = 0; i < count; at += chosen[i]->len, i++)
      memcpy(joined->bytes + at, chosen[i]->bytes, chosen[i]->len);
    uint64_t version, modified;
    result = store(s, target, joined, &version, &modified);
    if (result == BERTH_RESULT_OK) remove_upload(s, u);
    else data_unref(joined);
  }
  pthread_mutex_unlock(&s->lock);
  free(chosen);
  return result;
}

static uint32_t ms_abort_parts(void *env, const char *upload_id) {
  memstore *s = env;
  pthread_mutex_lock(&s->lock);
  upload *u = find_upload(s, upload_id);
  if (u) remove_upload(s, u);
  pthread_mutex_unlock(&s->lock);
  return BERTH_RESULT_OK;
}

static void ms_free(void *env) {
  memstore *s = env;
  for (size_t i = 0; i < s->count; i++) {
    free(s->objects[i].key);
    data_unref(s->objects[i].data);
  }
  for (size_t i = 0; i < s->upload_count; i++) upload_free(&s->uploads[i]);
  free(s->objects);
  free(s->uploads);
  pthread_mutex_destroy(&s->lock);
  free(s);
}

berth_result memstore_install(berth_config *config) {
  static const berth_storage_vtable vtable = {
      .get = ms_get,
      .read = ms_read,
      .close = ms_close,
      .head = ms_head,
      .put = ms_put,
      .remove = ms_delete,
      .list = ms_list,
      .create_parts = ms_create_parts,
      .put_part = ms_put_part,
      .complete_parts = ms_complete_parts,
      .abort_parts = ms_abort_parts,
      .min_part_size = 0,
      .max_parts = 0,
      .positional_parts = false,
  };
  memstore *s = calloc(1, sizeof *s);
  if (!s) return BERTH_RESULT_STORAGE_FAILED;
  pthread_mutex_init(&s->lock, NULL);
  /* berth owns `s` from here: it calls ms_free when done, even if this call fails. */
  return berth_config_set_storage(config, &vtable, s, ms_free);
}
