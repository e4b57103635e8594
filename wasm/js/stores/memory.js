// MemoryBucket: an in-memory store with the R2 bucket binding's interface (the subset berth
// uses): get with range, head, put with onlyIf, delete, list with prefix/delimiter/
// startAfter/cursor, and multipart uploads. For tests, local development and workerd's
// local run. Each object's etag is unique per write, so compare-and-swap never confuses
// two writes of equal content.

const CHUNK = 64 * 1024;

/** A stored object's description, as R2's R2Object. */
function describe(key, entry) {
  return {
    key,
    size: entry.data.byteLength,
    etag: entry.etag,
    httpEtag: `"${entry.etag}"`,
    version: entry.etag,
    uploaded: entry.uploaded,
  };
}

/** A ReadableStream over bytes, in CHUNK-sized views (no copies). */
export function streamOf(bytes) {
  let offset = 0;
  return new ReadableStream({
    type: "bytes",
    pull(controller) {
      if (offset >= bytes.byteLength) {
        controller.close();
        return;
      }
      const end = Math.min(offset + CHUNK, bytes.byteLength);
      controller.enqueue(bytes.slice(offset, end));
      offset = end;
    },
  });
}

/** Everything a put may be given, as one Uint8Array. */
export async function bytesOf(value) {
  if (value === null || value === undefined) return new Uint8Array(0);
  if (typeof value === "string") return new TextEncoder().encode(value);
  if (value instanceof Uint8Array) return value.slice();
  if (value instanceof ArrayBuffer) return new Uint8Array(value.slice(0));
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength));
  if (typeof value.getReader === "function") {
    const parts = [];
    let total = 0;
    const reader = value.getReader();
    for (;;) {
      const { done, value: chunk } = await reader.read();
      if (done) break;
      parts.push(chunk);
      total += chunk.byteLength;
    }
    const joined = new Uint8Array(total);
    let at = 0;
    for (const part of parts) {
      joined.set(part, at);
      at += part.byteLength;
    }
    return joined;
  }
  if (typeof value.arrayBuffer === "function") return new Uint8Array(await value.arrayBuffer());
  throw new TypeError("put() takes a string, ArrayBuffer, typed array, Blob or ReadableStream");
}

/** Whether an R2 `onlyIf` condition holds for the current entry (or its absence). */
export function conditionHolds(onlyIf, entry) {
  if (!onlyIf) return true;
  const { etagMatches, etagDoesNotMatch } = onlyIf;
  if (etagMatches !== undefined) {
    if (!entry) return false;
    if (etagMatches !== "*" && etagMatches !== entry.etag) return false;
  }
  if (etagDoesNotMatch !== undefined) {
    if (etagDoesNotMatch === "*" && entry) return false;
    if (entry && etagDoesNotMatch === entry.etag) return false;
  }
  return true;
}

/** Entries of a listing over sorted keys, R2-style (objects and delimited prefixes). */
export function listPage(sortedKeys, describeKey, options = {}) {
  const { prefix = "", delimiter, startAfter, cursor, limit = 1000 } = options;
  const after = cursor ?? startAfter;
  const objects = [];
  const delimitedPrefixes = [];
  let last = null;
  let truncated = false;
  for (const key of sortedKeys) {
    if (!key.startsWith(prefix)) continue;
    let entry = key;
    let folded = false;
    if (delimiter) {
      const at = key.indexOf(delimiter, prefix.length);
      if (at >= 0) {
        entry = key.slice(0, at + delimiter.length);
        folded = true;
      }
    }
    if (after !== undefined && entry <= after) continue;
    if (entry === last) continue;
    if (objects.length + delimitedPrefixes.length >= limit) {
      truncated = true;
      break;
    }
    last = entry;
    if (folded) delimitedPrefixes.push(entry);
    else objects.push(describeKey(key));
  }
  const result = { objects, delimitedPrefixes, truncated };
  if (truncated) result.cursor = last;
  return result;
}

export class MemoryBucket {
  #objects = new Map();
  #uploads = new Map();
  #counter = 0;

  #etag() {
    this.#counter += 1;
    return `${Date.now().toString(16)}-${this.#counter.toString(16)}`;
  }

  async head(key) {
    const entry = this.#objects.get(key);
    return entry ? describe(key, entry) : null;
  }

  async get(key, options = {}) {
    const entry = this.#objects.get(key);
    if (!entry) return null;
    let bytes = entry.data;
    const range = options.range;
    if (range) {
      const offset = range.offset ?? (range.suffix !== undefined ? Math.max(0, bytes.byteLength - range.suffix) : 0);
      const length = range.length ?? bytes.byteLength - offset;
      bytes = bytes.subarray(offset, Math.min(bytes.byteLength, offset + length));
    }
    const body = streamOf(bytes);
    return {
      ...describe(key, entry),
      body,
      bodyUsed: false,
      async arrayBuffer() {
        return bytes.slice().buffer;
      },
      async text() {
        return new TextDecoder().decode(bytes);
      },
    };
  }

  async put(key, value, options = {}) {
    const data = await bytesOf(value);
    const current = this.#objects.get(key);
    // Checked after the body is read: nothing else ran between the check and the write.
    if (!conditionHolds(options.onlyIf, current)) return null;
    const entry = { data, etag: this.#etag(), uploaded: new Date() };
    this.#objects.set(key, entry);
    return describe(key, entry);
  }

  async delete(keys) {
    for (const key of Array.isArray(keys) ? keys : [keys]) this.#objects.delete(key);
  }

  async list(options = {}) {
    const keys = [...this.#objects.keys()].sort();
    return listPage(keys, (key) => describe(key, this.#objects.get(key)), options);
  }

  async createMultipartUpload(key) {
    const uploadId = `upload-${this.#etag()}`;
    this.#uploads.set(uploadId, { key, parts: new Map() });
    return this.resumeMultipartUpload(key, uploadId);
  }

  resumeMultipartUpload(key, uploadId) {
    const uploads = this.#uploads;
    const objects = this.#objects;
    const bucket = this;
    const find = () => {
      const upload = uploads.get(uploadId);
      if (!upload || upload.key !== key) throw new Error(`no multipart upload ${uploadId} for ${key}`);
      return upload;
    };
    return {
      key,
      uploadId,
      async uploadPart(partNumber, value) {
        const data = await bytesOf(value);
        const etag = bucket.#etag();
        find().parts.set(partNumber, { data, etag });
        return { partNumber, etag };
      },
      async abort() {
        uploads.delete(uploadId);
      },
      async complete(parts) {
        const upload = find();
        const chosen = parts.map(({ partNumber, etag }) => {
          const part = upload.parts.get(partNumber);
          if (!part || part.etag !== etag) throw new Error(`part ${partNumber} (${etag}) was not uploaded`);
          return part.data;
        });
        const total = chosen.reduce((sum, data) => sum + data.byteLength, 0);
        const data = new Uint8Array(total);
        let at = 0;
        for (const part of chosen) {
          data.set(part, at);
          at += part.byteLength;
        }
        uploads.delete(uploadId);
        const entry = { data, etag: bucket.#etag(), uploaded: new Date() };
        objects.set(key, entry);
        return describe(key, entry);
      },
    };
  }

  /** Not part of R2: moves a completed upload to its address without copying it. */
  async berthMove(from, to, options = {}) {
    const source = this.#objects.get(from);
    if (!source) return null;
    if (!conditionHolds(options.onlyIf, this.#objects.get(to))) return null;
    this.#objects.delete(from);
    const entry = { data: source.data, etag: this.#etag(), uploaded: new Date() };
    this.#objects.set(to, entry);
    return describe(to, entry);
  }
}
