// The npm package as Node users meet it: `node --test wasm/test` after wasm/build.sh.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

import { checkStorage, MemoryBucket, NodeFsBucket, Registry, RegistryError } from "../pkg/node.js";

const roots = [];
function tempRoot() {
  const root = mkdtempSync(join(tmpdir(), "berth-wasm-"));
  roots.push(root);
  return root;
}
after(() => roots.forEach((root) => rmSync(root, { recursive: true, force: true })));

const digestOf = (bytes) => "sha256:" + createHash("sha256").update(bytes).digest("hex");
const base = "http://registry.test";

function send(registry, method, path, body, headers = {}) {
  return registry.fetch(new Request(base + path, { method, body, headers, duplex: "half" }));
}

/** A ReadableStream of `count` chunks of `size` bytes, made as it is read. */
function generated(count, size, seed) {
  let made = 0;
  return new ReadableStream({
    pull(controller) {
      if (made === count) return controller.close();
      const chunk = new Uint8Array(size);
      for (let i = 0; i < size; i += 4096) chunk[i] = (seed + made + i) & 255;
      made += 1;
      controller.enqueue(chunk);
    },
  });
}

test("NodeFsBucket meets berth's storage contract (any part size, and R2's 5 MiB)", async () => {
  assert.equal(await checkStorage(new NodeFsBucket(tempRoot()), 0), true);
  assert.equal(await checkStorage(new NodeFsBucket(tempRoot())), true);
});

test("MemoryBucket meets berth's storage contract", async () => {
  assert.equal(await checkStorage(new MemoryBucket(), 0), true);
});

test("a blob pushed in one request is pulled back as a stream", async () => {
  const registry = new Registry({ storage: new NodeFsBucket(tempRoot()), minPartSize: 0 });
  const data = new Uint8Array(300_000).map((_, i) => (i * 7) & 255);
  const digest = digestOf(data);
  let response = await send(registry, "POST", `/v2/node/one/blobs/uploads/?digest=${digest}`, data);
  assert.equal(response.status, 201);
  response = await send(registry, "GET", `/v2/node/one/blobs/${digest}`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-length"), String(data.length));
  let chunks = 0;
  const hash = createHash("sha256");
  for await (const chunk of response.body) {
    chunks += 1;
    hash.update(chunk);
  }
  assert.ok(chunks > 1, "the body arrives in chunks");
  assert.equal("sha256:" + hash.digest("hex"), digest);
  response = await send(registry, "HEAD", `/v2/node/one/blobs/${digest}`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-length"), String(data.length));
});

test("an upload continues on another Registry over the same bucket (stateless sessions)", async () => {
  const storage = new NodeFsBucket(tempRoot());
  // Each request on a fresh instance, as each request of a Worker may land on a new isolate.
  const next = () => new Registry({ storage, partSize: 5 << 20, minPartSize: 5 << 20 });
  let response = await send(next(), "POST", "/v2/node/many/blobs/uploads/");
  assert.equal(response.status, 202);
  let location = response.headers.get("location");
  const hash = createHash("sha256");
  const chunk = 6 << 20;
  for (let i = 0; i < 3; i += 1) {
    const body = new Uint8Array(chunk).fill(i + 1);
    hash.update(body);
    response = await send(next(), "PATCH", location, generatedFrom(body), {
      "Content-Range": `${i * chunk}-${(i + 1) * chunk - 1}`,
    });
    assert.equal(response.status, 202, await response.text());
    location = response.headers.get("location");
  }
  const digest = "sha256:" + hash.digest("hex");
  response = await send(next(), "PUT", `${location}${location.includes("?") ? "&" : "?"}digest=${digest}`);
  assert.equal(response.status, 201, await response.text());
  response = await send(next(), "GET", `/v2/node/many/blobs/${digest}`);
  assert.equal(digestOf(new Uint8Array(await response.arrayBuffer())), digest);
});

function generatedFrom(bytes) {
  let sent = false;
  return new ReadableStream({
    pull(controller) {
      if (sent) return controller.close();
      sent = true;
      for (let at = 0; at < bytes.length; at += 1 << 20) controller.enqueue(bytes.subarray(at, at + (1 << 20)));
    },
  });
}

test("a streamed 64 MiB chunk is hashed and stored without buffering the request", async () => {
  const registry = new Registry({ storage: new NodeFsBucket(tempRoot()), minPartSize: 0 });
  const reference = createHash("sha256");
  for await (const chunk of generated(64, 1 << 20, 3)) reference.update(chunk);
  const digest = "sha256:" + reference.digest("hex");
  const response = await send(registry, "POST", `/v2/node/stream/blobs/uploads/?digest=${digest}`, generated(64, 1 << 20, 3));
  assert.equal(response.status, 201, await response.text());
});

test("protocol errors are OCI responses; misuse throws RegistryError", async () => {
  const registry = new Registry({ storage: new MemoryBucket() });
  const response = await send(registry, "GET", "/v2/node/x/manifests/nope");
  assert.equal(response.status, 404);
  assert.equal((await response.json()).errors[0].code, "MANIFEST_UNKNOWN");
  assert.throws(() => new Registry({ storage: {} }), (error) => error instanceof RegistryError && error.code === "INVALID_OPTIONS");
  assert.throws(() => new Registry({ storage: new MemoryBucket(), partSize: -1 }), RegistryError);
  await assert.rejects(registry.fetch("not a request"), (error) => error.code === "INVALID_REQUEST" && error.status === 400);
});

test("notices reach onNotice: a catalog entry that cannot be indexed, and why", async () => {
  const storage = new MemoryBucket();
  for (const name of ["good", "Bad..Name"]) {
    await storage.put(`docker/registry/v2/repositories/${name}/_layers/sha256/00/link`, "sha256:00");
  }
  const heard = [];
  const registry = new Registry({ storage, onNotice: (message) => heard.push(message) });
  const response = await send(registry, "GET", "/v2/_catalog");
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { repositories: ["good"] });
  assert.equal(heard.length, 1);
  assert.match(heard[0], /"Bad\.\.Name"/);
  assert.throws(() => new Registry({ storage, onNotice: "loud" }), (error) => error.code === "INVALID_OPTIONS");
});

test("read-only registries refuse pushes", async () => {
  const registry = new Registry({ storage: new MemoryBucket(), readOnly: true });
  assert.equal((await send(registry, "POST", "/v2/node/ro/blobs/uploads/")).status, 405);
  assert.equal((await send(registry, "GET", "/v2/")).status, 200);
});

test("quotas refuse a push past the limit; a scrub finds a blob nothing links and collection takes it", async () => {
  const bucket = new MemoryBucket();
  const registry = new Registry({
    storage: bucket, trackReferences: true, quotas: [{ repositories: "node/*", limit: "1KiB" }],
  });
  const fits = new Uint8Array(600).fill(1);
  const tooMuch = new Uint8Array(600).fill(2);
  const push = (data) => send(registry, "POST", `/v2/node/q/blobs/uploads/?digest=${digestOf(data)}`, data,
    { "Content-Length": String(data.length) });
  assert.equal((await push(fits)).status, 201);
  const refused = await push(tooMuch);
  assert.equal(refused.status, 403);
  const error = (await refused.json()).errors[0];
  assert.equal(error.code, "DENIED");
  assert.match(error.message, /600 B of its 1\.0 KiB limit/);
  assert.equal((await (await send(registry, "GET", "/v2/_usage/node/q")).json()).bytes, 600);

  const stray = new Uint8Array(300).fill(3);
  const hex = digestOf(stray).slice(7);
  await bucket.put(`docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`, stray);
  const dry = await registry.scrub({ dryRun: true });
  assert.deepEqual([dry.blobs, dry.strayBlobs, dry.strayBytes], [2, 1, 300]);
  const report = await registry.scrub({});
  assert.equal(report.strayBlobs, 1);
  assert.ok(report.marked > 0);
  const collected = await registry.collectGarbage({ grace: 0 });
  // The stray blob, and the loose one no manifest uses (no grace period).
  assert.equal(collected.blobsDeleted, 2);
  assert.equal(await bucket.head(`docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`), null);
  await assert.rejects(() => new Registry({ storage: new MemoryBucket() }).scrub({}), /tracking/);
});

test("mirror() pre-fills a cached image from an upstream through fetch, each blob once", async () => {
  // The scripted upstream of the repository's tests, serving an image layout.
  const lib = new URL("../../tests/lib/", import.meta.url).pathname;
  const dir = tempRoot();
  execFileSync("python3", [lib + "make_oci_layout.py", join(dir, "app"), "v1", "--layers", "2", "--size", "40000"]);
  const port = await new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
  const log = join(dir, "upstream.log");
  const upstream = spawn("python3", [lib + "proxy_upstream.py", String(port), dir, log], { stdio: "ignore" });
  try {
    for (let tries = 0; ; tries += 1) {
      try {
        await fetch(`http://127.0.0.1:${port}/v2/`);
        break;
      } catch (error) {
        if (tries > 100) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    const registry = new Registry({
      storage: new MemoryBucket(),
      upstreams: [{ prefix: "hub", urls: [`http://127.0.0.1:${port}`] }],
    });
    const report = await registry.mirror("hub/app", "v1");
    assert.deepEqual([report.manifests, report.blobsFetched, report.blobsCached], [1, 3, 0]);
    assert.ok(report.bytesFetched > 80000);
    const again = await registry.mirror("hub/app", "v1", []);
    assert.deepEqual([again.blobsFetched, again.blobsCached], [0, 3]);
    const blobGets = readFileSync(log, "utf8").split("\n").filter((line) => line.includes('"GET"') && line.includes("/blobs/"));
    assert.equal(blobGets.length, 3);
    await assert.rejects(() => registry.mirror("team/app", "v1"), (error) => error.code === "NAME_INVALID");
    await assert.rejects(() => registry.mirror("hub/app", "v9"), (error) => error.code === "MANIFEST_UNKNOWN");
  } finally {
    upstream.kill();
  }
});

test("the package ships its types and stores", () => {
  for (const file of ["index.d.ts", "berth_wasm.d.ts", "berth_wasm_bg.wasm", "stores/memory.js", "stores/node-fs.js", "stores/browser.js", "README.md"]) {
    assert.ok(existsSync(new URL(`../pkg/${file}`, import.meta.url)), file);
  }
});
