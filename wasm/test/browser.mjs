// berth-wasm in a browser page: the storage contract against BrowserBucket (IndexedDB), then
// a small image pushed and pulled by direct registry.fetch calls. The page writes PASS or
// FAIL into #result (tests/browser.sh reads it through chromedriver).
import { BrowserBucket, checkStorage, init, Registry } from "../pkg/index.js";

const log = (line) => (document.getElementById("log").textContent += line + "\n");
const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
const digestOf = async (bytes) => "sha256:" + hex(await crypto.subtle.digest("SHA-256", bytes));
const expect = (condition, what) => {
  if (!condition) throw new Error(what);
};

async function pushAndPull(registry) {
  const send = (method, path, body, headers = {}) =>
    registry.fetch(new Request(location.origin + path, { method, body, headers }));
  const config = new TextEncoder().encode('{"architecture":"wasm","os":"browser"}');
  const layer = crypto.getRandomValues(new Uint8Array(60_000));
  for (const blob of [config, layer]) {
    const response = await send("POST", `/v2/browser/image/blobs/uploads/?digest=${await digestOf(blob)}`, blob);
    expect(response.status === 201, `blob push answered ${response.status}: ${await response.text()}`);
  }
  const manifest = new TextEncoder().encode(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await digestOf(config), size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: await digestOf(layer), size: layer.length }],
    }),
  );
  let response = await send("PUT", "/v2/browser/image/manifests/v1", manifest, {
    "Content-Type": "application/vnd.oci.image.manifest.v1+json",
  });
  expect(response.status === 201, `manifest push answered ${response.status}: ${await response.text()}`);
  log("pushed browser/image:v1");

  response = await send("GET", "/v2/browser/image/tags/list");
  expect(JSON.stringify((await response.json()).tags) === '["v1"]', "the tag list is [v1]");
  response = await send("GET", "/v2/browser/image/manifests/v1", undefined, {
    Accept: "application/vnd.oci.image.manifest.v1+json",
  });
  const pulled = new Uint8Array(await response.arrayBuffer());
  expect((await digestOf(pulled)) === (await digestOf(manifest)), "the manifest comes back as pushed");
  for (const descriptor of JSON.parse(new TextDecoder().decode(pulled)).layers.concat([JSON.parse(new TextDecoder().decode(pulled)).config])) {
    response = await send("GET", `/v2/browser/image/blobs/${descriptor.digest}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    expect((await digestOf(bytes)) === descriptor.digest, `blob ${descriptor.digest} comes back as pushed`);
  }
  log("pulled browser/image:v1 and verified every digest");
}

async function main() {
  await init();
  const run = Date.now();
  await checkStorage(new BrowserBucket(`berth-check-${run}`), 0);
  log("BrowserBucket meets the storage contract");
  await pushAndPull(new Registry({ storage: new BrowserBucket(`berth-image-${run}`), minPartSize: 0 }));
  // Another Registry over the same database sees the image: the data lives in IndexedDB.
  const again = new Registry({ storage: new BrowserBucket(`berth-image-${run}`) });
  const response = await again.fetch(new Request(location.origin + "/v2/browser/image/tags/list"));
  expect((await response.json()).tags[0] === "v1", "a second registry sees the tag");
  log("a second Registry over the same IndexedDB sees the image");
}

main().then(
  () => (document.getElementById("result").textContent = "PASS"),
  (error) => (document.getElementById("result").textContent = `FAIL: ${error && error.stack ? error.stack : error}`),
);
