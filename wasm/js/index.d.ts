// Types of berth-wasm. The Registry class and init functions are wasm-bindgen's
// (berth_wasm.d.ts); the storage interface is the subset of the R2 bucket binding berth uses.
export { default as init, initSync, Registry, RegistryError, checkStorage } from "./berth_wasm.js";

export interface StoredObject {
  key: string;
  size: number;
  etag: string;
  version?: string;
}

export interface StoredObjectBody extends StoredObject {
  body: ReadableStream<Uint8Array>;
}

export interface Conditional {
  etagMatches?: string;
  etagDoesNotMatch?: string;
}

export interface UploadedPart {
  partNumber: number;
  etag: string;
}

export interface MultipartUpload {
  readonly key: string;
  readonly uploadId: string;
  uploadPart(partNumber: number, value: Uint8Array | ArrayBuffer | ReadableStream | string): Promise<UploadedPart>;
  complete(parts: UploadedPart[]): Promise<StoredObject>;
  abort(): Promise<void>;
}

/** What `new Registry({ storage })` accepts: an R2 bucket binding, or one of the stores below. */
export interface Bucket {
  get(key: string, options?: { range?: { offset?: number; length?: number; suffix?: number } }): Promise<StoredObjectBody | null>;
  head(key: string): Promise<StoredObject | null>;
  put(key: string, value: Uint8Array | ArrayBuffer | ReadableStream | string | null, options?: { onlyIf?: Conditional }): Promise<StoredObject | null>;
  delete(keys: string | string[]): Promise<void>;
  list(options?: { prefix?: string; delimiter?: string; startAfter?: string; cursor?: string; limit?: number }): Promise<{
    objects: StoredObject[];
    delimitedPrefixes: string[];
    truncated: boolean;
    cursor?: string;
  }>;
  createMultipartUpload(key: string): Promise<MultipartUpload>;
  resumeMultipartUpload(key: string, uploadId: string): MultipartUpload;
}

/** Objects in memory (tests, local runs, workerd without R2). */
export declare class MemoryBucket implements Bucket {
  constructor();
  get: Bucket["get"]; head: Bucket["head"]; put: Bucket["put"]; delete: Bucket["delete"]; list: Bucket["list"];
  createMultipartUpload: Bucket["createMultipartUpload"]; resumeMultipartUpload: Bucket["resumeMultipartUpload"];
}

/** Objects in the browser's IndexedDB database `name`. */
export declare class BrowserBucket implements Bucket {
  constructor(name?: string);
  get: Bucket["get"]; head: Bucket["head"]; put: Bucket["put"]; delete: Bucket["delete"]; list: Bucket["list"];
  createMultipartUpload: Bucket["createMultipartUpload"]; resumeMultipartUpload: Bucket["resumeMultipartUpload"];
}

/** Objects as files under a directory (Node only: import from "berth-wasm" in Node). */
export declare class NodeFsBucket implements Bucket {
  constructor(root: string);
  get: Bucket["get"]; head: Bucket["head"]; put: Bucket["put"]; delete: Bucket["delete"]; list: Bucket["list"];
  createMultipartUpload: Bucket["createMultipartUpload"]; resumeMultipartUpload: Bucket["resumeMultipartUpload"];
}

/** Options of `new Registry({ storage, ...options })`. */
export interface RegistryOptions {
  storage: Bucket;
  partSize?: number;
  minPartSize?: number;
  readOnly?: boolean;
  deleteEnabled?: boolean;
  automaticMount?: boolean;
  manifestLimit?: number;
  chunkMaxLength?: number;
  /** Logins: `{htpasswd, rules, realm, service, token: {key}, issuers, ...}` (or its JSON
   * text), as berth's `auth::Settings` reads them. */
  auth?: object | string;
  /** Record who references each blob, so that `collectGarbage` can delete what nothing
   * needs while pushes go on (every registry over one storage must have it on). */
  trackReferences?: boolean;
  /** Retention rules `collectGarbage` applies (`[{ repositories, "keep-last", "keep-tags",
   * "remove-older-than" }]`), or their JSON text. */
  retention?: object[] | string;
  /** Quota rules: `[{ repositories, limit }, { namespace, limit }]` (limits in bytes or as
   * `"10GiB"`), or their JSON text. Usage at `GET /v2/_usage/<name>`. */
  quotas?: object[] | string;
  /** Pull-through cache rules (`[{ prefix, urls, namespace, revalidate, "stale-if-error",
   * "missing-for", "immutable-tags", "evict-after", username, password }]`), or their JSON
   * text: the repositories below each prefix are filled from the upstream with the runtime's
   * `fetch`; `mirror()` pre-fills them. */
  upstreams?: object[] | string;
  /** Fetches a token issuer's key set at its `keys-url` (when a token names a key berth does
   * not know). Default: the runtime's `fetch`. */
  fetchKeySet?: (url: string) => Promise<string>;
  /** Called with each notice: what a response could not carry, for the operator's log (a
   * listing that left out an entry it cannot index, and why). Default: `console.warn`. */
  onNotice?: (message: string) => void;
}
