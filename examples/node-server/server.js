// A registry on Node's http server, over berth-wasm (built into wasm/pkg by wasm/build.sh).
//
//   node examples/node-server/server.js [--port 5000] [--root DIR | --memory]
//
// BERTH_AUTH, when set, holds the login settings as JSON (`htpasswd`, `rules`, `token`, ...:
// the Registry's `auth` option). BERTH_GC=1 records who references each blob and collects
// garbage every BERTH_GC_INTERVAL seconds (default 3600): blobs nothing references, older
// than BERTH_GC_GRACE seconds (default 86400), and with BERTH_GC_UNTAGGED=1 manifests
// untagged that long; BERTH_RETENTION holds retention rules as JSON, BERTH_QUOTAS quota rules,
// BERTH_UPSTREAMS pull-through cache rules (fetched with Node's fetch).
//
// Request bodies stream from the socket into the registry as a ReadableStream, and response
// bodies stream back with backpressure: no blob is held in memory whole.
import http from "node:http";
import { once } from "node:events";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";

import { MemoryBucket, NodeFsBucket, Registry } from "../../wasm/pkg/node.js";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "5000" },
    host: { type: "string", default: "127.0.0.1" },
    root: { type: "string", default: "berth-data" },
    memory: { type: "boolean", default: false },
    "part-size": { type: "string" },
  },
});

const storage = values.memory ? new MemoryBucket() : new NodeFsBucket(values.root);
const options = { storage, minPartSize: 0 };
if (values["part-size"]) options.partSize = Number(values["part-size"]);
if (process.env.BERTH_AUTH) options.auth = process.env.BERTH_AUTH;
const collecting = !["", "0", undefined].includes(process.env.BERTH_GC);
options.trackReferences = collecting;
if (process.env.BERTH_RETENTION) options.retention = process.env.BERTH_RETENTION;
if (process.env.BERTH_QUOTAS) options.quotas = process.env.BERTH_QUOTAS;
if (process.env.BERTH_UPSTREAMS) options.upstreams = process.env.BERTH_UPSTREAMS;
const registry = new Registry(options);

if (collecting) {
  const grace = Number(process.env.BERTH_GC_GRACE ?? 86400);
  const untagged = !["", "0", undefined].includes(process.env.BERTH_GC_UNTAGGED);
  const every = Number(process.env.BERTH_GC_INTERVAL ?? 3600) * 1000;
  const collect = async () => {
    try {
      for (;;) {
        const report = await registry.collectGarbage({ grace, untagged });
        if (report.tagsDeleted || report.manifestsDeleted || report.blobsDeleted || report.linksRemoved) console.error("berth node-server: collected", report);
        // Again while candidates are left (or the first marking has pages left).
        if (!report.left || (!report.visited && !report.marked)) break;
      }
    } catch (error) {
      console.error("berth node-server: collecting garbage failed:", error);
    }
    setTimeout(collect, every).unref();
  };
  setTimeout(collect, every).unref();
}

const server = http.createServer(async (req, res) => {
  try {
    const headers = new Headers();
    for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
    const hasBody = req.method !== "GET" && req.method !== "HEAD";
    const request = new Request(`http://${values.host}${req.url}`, {
      method: req.method,
      headers,
      body: hasBody ? Readable.toWeb(req) : undefined,
      duplex: "half",
    });
    const response = await registry.fetch(request);
    res.writeHead(response.status, [...response.headers].flat());
    if (response.body && req.method !== "HEAD") {
      for await (const chunk of response.body) {
        if (!res.write(chunk)) await once(res, "drain");
      }
    }
    res.end();
  } catch (error) {
    console.error("berth node-server:", error);
    if (!res.headersSent) {
      res.writeHead(500, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ errors: [{ code: "UNKNOWN", message: String(error) }] }));
    } else {
      res.destroy(error);
    }
  }
});
server.keepAliveTimeout = 65_000;
server.listen(Number(values.port), values.host, () => {
  const { port } = server.address();
  console.log(`listening on ${values.host}:${port} (${values.memory ? "memory" : values.root})`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => server.close(() => process.exit(0)));
