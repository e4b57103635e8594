// BrowserBucket: an R2-shaped store in the browser's IndexedDB, so a registry in a page or a
// service worker keeps its data across reloads. Objects are Blobs (read back as streams,
// range by range); a conditional write checks and writes in one IndexedDB transaction, so
// it is atomic even across tabs.
import { bytesOf, conditionHolds, listPage } from "./memory.js";

const OBJECTS = "objects";
const PARTS = "parts";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(transaction) {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error ?? new Error("transaction aborted"));
  });
}

function describe(key, entry) {
  return { key, size: entry.blob.size, etag: entry.etag, httpEtag: `"${entry.etag}"`, version: entry.etag, uploaded: entry.uploaded };
}

function newEtag() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class BrowserBucket {
  #name;
  #db = null;

  /** A bucket in the IndexedDB database `name`. */
  constructor(name = "berth") {
    this.#name = name;
  }

  async #open() {
    if (!this.#db) {
      const opening = indexedDB.open(this.#name, 1);
      opening.onupgradeneeded = () => {
        opening.result.createObjectStore(OBJECTS);
        opening.result.createObjectStore(PARTS);
      };
      this.#db = await request(opening);
    }
    return this.#db;
  }

  async #read(key) {
    const db = await this.#open();
    return request(db.transaction(OBJECTS).objectStore(OBJECTS).get(key));
  }

  /** Writes `entry` at `key` if `onlyIf` holds, atomically; the entry, or null. */
  async #write(key, entry, onlyIf, alsoDelete = []) {
    const db = await this.#open();
    const transaction = db.transaction([OBJECTS, PARTS], "readwrite");
    const objects = transaction.objectStore(OBJECTS);
    let written = null;
    const current = objects.get(key);
    current.onsuccess = () => {
      if (!conditionHolds(onlyIf, current.result)) return;
      objects.put(entry, key);
      for (const [store, k] of alsoDelete) transaction.objectStore(store).delete(k);
      written = entry;
    };
    await done(transaction);
    return written && describe(key, written);
  }

  async head(key) {
    const entry = await this.#read(key);
    return entry ? describe(key, entry) : null;
  }

  async get(key, options = {}) {
    const entry = await this.#read(key);
    if (!entry) return null;
    const size = entry.blob.size;
    const range = options.range ?? {};
    const offset = range.offset ?? (range.suffix !== undefined ? Math.max(0, size - range.suffix) : 0);
    const end = Math.min(size, offset + (range.length ?? size - offset));
    const blob = entry.blob.slice(offset, end);
    return { ...describe(key, entry), body: blob.stream(), arrayBuffer: () => blob.arrayBuffer(), text: () => blob.text() };
  }

  async put(key, value, options = {}) {
    const blob = value instanceof Blob ? value : new Blob([await bytesOf(value)]);
    return this.#write(key, { blob, etag: newEtag(), uploaded: new Date() }, options.onlyIf);
  }

  async delete(keys) {
    const db = await this.#open();
    const transaction = db.transaction(OBJECTS, "readwrite");
    for (const key of Array.isArray(keys) ? keys : [keys]) transaction.objectStore(OBJECTS).delete(key);
    await done(transaction);
  }

  async list(options = {}) {
    const db = await this.#open();
    const keys = (await request(db.transaction(OBJECTS).objectStore(OBJECTS).getAllKeys())).sort();
    const page = listPage(keys, (key) => ({ key }), options);
    // Only the page's objects are read, for what a listing tells of each (its upload time):
    // a blob's bytes stay where they are, as a Blob handle.
    const store = db.transaction(OBJECTS).objectStore(OBJECTS);
    const entries = await Promise.all(page.objects.map(({ key }) => request(store.get(key))));
    page.objects = page.objects.map((object, at) => (entries[at] ? describe(object.key, entries[at]) : object));
    return page;
  }

  async createMultipartUpload(key) {
    return this.resumeMultipartUpload(key, newEtag());
  }

  resumeMultipartUpload(key, uploadId) {
    const bucket = this;
    return {
      key,
      uploadId,
      async uploadPart(partNumber, value) {
        const db = await bucket.#open();
        const part = { blob: new Blob([await bytesOf(value)]), etag: newEtag() };
        const transaction = db.transaction(PARTS, "readwrite");
        transaction.objectStore(PARTS).put(part, [uploadId, partNumber]);
        await done(transaction);
        return { partNumber, etag: part.etag };
      },
      async abort() {
        const db = await bucket.#open();
        const transaction = db.transaction(PARTS, "readwrite");
        transaction.objectStore(PARTS).delete(IDBKeyRange.bound([uploadId, 0], [uploadId, Infinity]));
        await done(transaction);
      },
      async complete(parts) {
        const db = await bucket.#open();
        const store = db.transaction(PARTS).objectStore(PARTS);
        const blobs = [];
        for (const { partNumber, etag } of parts) {
          const part = await request(store.get([uploadId, partNumber]));
          if (!part || part.etag !== etag) throw new Error(`part ${partNumber} (${etag}) was not uploaded`);
          blobs.push(part.blob);
        }
        const stale = parts.map(({ partNumber }) => [PARTS, [uploadId, partNumber]]);
        return bucket.#write(key, { blob: new Blob(blobs), etag: newEtag(), uploaded: new Date() }, undefined, stale);
      },
    };
  }

  /** Not part of R2: moves a completed upload to its address without copying it. */
  async berthMove(from, to, options = {}) {
    const entry = await this.#read(from);
    if (!entry) return null;
    const moved = await this.#write(to, { ...entry, etag: newEtag(), uploaded: new Date() }, options.onlyIf, [[OBJECTS, from]]);
    return moved;
  }
}
