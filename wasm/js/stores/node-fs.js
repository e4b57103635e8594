// NodeFsBucket: an R2-shaped store on a local directory, for Node. Objects are files under
// the root (keys are paths); a write goes to a temporary file, is fsynced and renamed into
// place, so readers see whole objects only; conditional writes are checked and renamed
// under one lock per bucket. An object's etag is its file's inode and nanosecond mtime,
// which change on every write. Bodies are read and written in 64 KiB chunks.
import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";

import { conditionHolds, listPage } from "./memory.js";

const CHUNK = 64 * 1024;
const TMP = ".berth-tmp";
const MULTIPART = ".berth-multipart";

function describe(key, stats) {
  const etag = `${stats.ino.toString(16)}-${stats.mtimeNs.toString(16)}`;
  return { key, size: Number(stats.size), etag, httpEtag: `"${etag}"`, version: etag, uploaded: stats.mtime };
}

async function statOrNull(path) {
  try {
    return await stat(path, { bigint: true });
  } catch (error) {
    if (error.code === "ENOENT" || error.code === "ENOTDIR") return null;
    throw error;
  }
}

/** Chunks of everything a put may be given. */
async function* chunksOf(value) {
  if (value === null || value === undefined) return;
  if (typeof value === "string") yield new TextEncoder().encode(value);
  else if (value instanceof ArrayBuffer) yield new Uint8Array(value);
  else if (ArrayBuffer.isView(value)) yield new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  else if (typeof value.getReader === "function") {
    const reader = value.getReader();
    for (;;) {
      const { done, value: chunk } = await reader.read();
      if (done) return;
      yield chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk);
    }
  } else if (typeof value.arrayBuffer === "function") yield new Uint8Array(await value.arrayBuffer());
  else throw new TypeError("put() takes a string, ArrayBuffer, typed array, Blob or ReadableStream");
}

/** A ReadableStream over `length` bytes of an open file from `offset`; closes it at the end. */
function fileStream(handle, offset, length) {
  let position = offset;
  const end = offset + length;
  return new ReadableStream({
    async pull(controller) {
      if (position >= end) {
        await handle.close();
        controller.close();
        return;
      }
      const buffer = new Uint8Array(Math.min(CHUNK, end - position));
      const { bytesRead } = await handle.read(buffer, 0, buffer.byteLength, position);
      if (bytesRead === 0) {
        await handle.close();
        controller.error(new Error("the file ended early"));
        return;
      }
      position += bytesRead;
      controller.enqueue(buffer.subarray(0, bytesRead));
    },
    async cancel() {
      await handle.close();
    },
  });
}

export class NodeFsBucket {
  #root;
  #lock = Promise.resolve();

  constructor(root) {
    this.#root = root;
  }

  #path(key) {
    if (key.split("/").some((part) => part === "" || part === "." || part === "..") || key.startsWith(".berth"))
      throw new Error(`${JSON.stringify(key)} is not a storable key`);
    return join(this.#root, ...key.split("/"));
  }

  /** Runs `work` alone among this bucket's publishing steps. */
  async #exclusively(work) {
    const previous = this.#lock;
    let release;
    this.#lock = new Promise((resolve) => (release = resolve));
    await previous;
    try {
      return await work();
    } finally {
      release();
    }
  }

  /** Writes chunks to a new temporary file, fsynced; returns its path. */
  async #stage(chunks) {
    const dir = join(this.#root, TMP);
    await mkdir(dir, { recursive: true });
    const path = join(dir, randomBytes(12).toString("hex"));
    const handle = await open(path, "wx");
    try {
      for await (const chunk of chunks) await handle.write(chunk);
      await handle.sync();
    } catch (error) {
      await handle.close();
      await rm(path, { force: true });
      throw error;
    }
    await handle.close();
    return path;
  }

  /** Renames a staged file to `key` if `onlyIf` holds; null (and no change) if not. */
  async #publish(staged, key, onlyIf) {
    const path = this.#path(key);
    return this.#exclusively(async () => {
      const current = await statOrNull(path);
      if (!conditionHolds(onlyIf, current && describe(key, current))) {
        await rm(staged, { force: true });
        return null;
      }
      await mkdir(dirname(path), { recursive: true });
      await rename(staged, path);
      return describe(key, await stat(path, { bigint: true }));
    });
  }

  async head(key) {
    const stats = await statOrNull(this.#path(key));
    return stats && describe(key, stats);
  }

  async get(key, options = {}) {
    let handle;
    try {
      handle = await open(this.#path(key), "r");
    } catch (error) {
      if (error.code === "ENOENT" || error.code === "ENOTDIR" || error.code === "EISDIR") return null;
      throw error;
    }
    const stats = await handle.stat({ bigint: true });
    const size = Number(stats.size);
    const range = options.range ?? {};
    const offset = range.offset ?? (range.suffix !== undefined ? Math.max(0, size - range.suffix) : 0);
    const length = Math.min(range.length ?? size - offset, size - offset);
    return { ...describe(key, stats), body: fileStream(handle, offset, length) };
  }

  async put(key, value, options = {}) {
    this.#path(key);
    return this.#publish(await this.#stage(chunksOf(value)), key, options.onlyIf);
  }

  async delete(keys) {
    for (const key of Array.isArray(keys) ? keys : [keys]) await rm(this.#path(key), { force: true });
  }

  async list(options = {}) {
    const keys = [];
    const walk = async (dir, prefix) => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (error) {
        if (error.code === "ENOENT") return;
        throw error;
      }
      for (const entry of entries) {
        if (!prefix && entry.name.startsWith(".berth")) continue;
        const key = prefix + entry.name;
        if (entry.isDirectory()) await walk(join(dir, entry.name), key + "/");
        else keys.push(key);
      }
    };
    await walk(this.#root, "");
    keys.sort();
    const stats = new Map();
    const page = listPage(keys, (key) => ({ key }), options);
    for (const object of page.objects) {
      const found = await statOrNull(this.#path(object.key));
      if (found) stats.set(object.key, describe(object.key, found));
    }
    page.objects = page.objects.map((object) => stats.get(object.key) ?? object);
    return page;
  }

  async createMultipartUpload(key) {
    this.#path(key);
    const uploadId = randomBytes(12).toString("hex");
    await mkdir(join(this.#root, MULTIPART, uploadId), { recursive: true });
    return this.resumeMultipartUpload(key, uploadId);
  }

  resumeMultipartUpload(key, uploadId) {
    if (!/^[0-9a-f]+$/.test(uploadId)) throw new Error(`${uploadId} is not an upload id`);
    const dir = join(this.#root, MULTIPART, uploadId);
    const bucket = this;
    const partPath = (n) => join(dir, String(n));
    return {
      key,
      uploadId,
      async uploadPart(partNumber, value) {
        if ((await statOrNull(dir)) === null) throw new Error(`no multipart upload ${uploadId}`);
        const staged = await bucket.#stage(chunksOf(value));
        // A part sent again under its number replaces the earlier one, as on R2.
        await rename(staged, partPath(partNumber));
        const stats = await stat(partPath(partNumber), { bigint: true });
        return { partNumber, etag: describe(key, stats).etag };
      },
      async abort() {
        await rm(dir, { recursive: true, force: true });
      },
      async complete(parts) {
        const sources = [];
        for (const { partNumber, etag } of parts) {
          const stats = await statOrNull(partPath(partNumber));
          if (!stats || describe(key, stats).etag !== etag) throw new Error(`part ${partNumber} (${etag}) was not uploaded`);
          sources.push(partPath(partNumber));
        }
        async function* joined() {
          for (const source of sources) {
            const handle = await open(source, "r");
            try {
              const buffer = new Uint8Array(CHUNK);
              for (;;) {
                const { bytesRead } = await handle.read(buffer, 0, CHUNK, null);
                if (!bytesRead) break;
                yield buffer.slice(0, bytesRead);
              }
            } finally {
              await handle.close();
            }
          }
        }
        const object = await bucket.#publish(await bucket.#stage(joined()), key, undefined);
        await rm(dir, { recursive: true, force: true });
        return object;
      },
    };
  }

  /** Not part of R2: moves a completed upload to its address by a rename, copying nothing. */
  async berthMove(from, to, options = {}) {
    const source = this.#path(from);
    if ((await statOrNull(source)) === null) return null;
    const staged = join(this.#root, TMP, randomBytes(12).toString("hex"));
    await mkdir(dirname(staged), { recursive: true });
    await rename(source, staged);
    return this.#publish(staged, to, options.onlyIf);
  }
}

