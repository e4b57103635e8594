// An OCI registry as a Workers module. In production, bind an R2 bucket as REGISTRY
// (wrangler.toml: [[r2_buckets]] binding = "REGISTRY"); without one (workerd locally, see
// config.capnp) it keeps its data in memory for as long as the isolate lives.
//
// Logins come from the environment (secrets, in production: `wrangler secret put`):
// BERTH_AUTH holds the login settings as JSON (htpasswd text, rules, a token key; the
// Registry's `auth` option), or BERTH_USERS just an htpasswd file's text (every user listed
// may do everything).
//
// Every request may land on another isolate: upload sessions and their hash midstate live
// in the bucket, so a push can continue wherever its next request arrives.
//
// Garbage collection (BERTH_GC=1): the registry records who references each blob, and the
// scheduled() handler (a Cron Trigger: wrangler.toml [triggers] crons = ["*/10 * * * *"])
// deletes blobs nothing references, older than BERTH_GC_GRACE seconds (default 86400), a
// bounded step per run (BERTH_GC_STEP candidates, default 100: each costs a few subrequests);
// with BERTH_GC_UNTAGGED=1 also manifests untagged that long; BERTH_RETENTION holds retention
// rules as JSON. BERTH_QUOTAS holds quota rules as JSON (usage at GET /v2/_usage/<name>).
// BERTH_UPSTREAMS holds pull-through cache rules as JSON: cached repositories are filled
// from their upstream registries with fetch().
// POST /_berth/gc with `Authorization: Bearer <BERTH_GC_TOKEN>` runs the same step on demand
// (when BERTH_GC_TOKEN is set).
import { initSync, MemoryBucket, Registry } from "./berth-wasm/index.js";
import wasm from "./berth-wasm/berth_wasm_bg.wasm";

initSync({ module: wasm });

let registry;
let memory;

function open(env) {
  if (!registry) {
    const storage = env.REGISTRY ?? (memory ??= new MemoryBucket());
    // R2 takes parts of at least 5 MiB (the default); the memory store takes any size.
    const auth = env.BERTH_AUTH || (env.BERTH_USERS ? { htpasswd: env.BERTH_USERS } : undefined);
    const trackReferences = Boolean(env.BERTH_GC) && env.BERTH_GC !== "0";
    const retention = env.BERTH_RETENTION || undefined;
    const quotas = env.BERTH_QUOTAS || undefined;
    const upstreams = env.BERTH_UPSTREAMS || undefined;
    registry = new Registry({
      storage, minPartSize: env.REGISTRY ? undefined : 0, auth, trackReferences, retention, quotas,
      upstreams,
    });
  }
  return registry;
}

/** Whether two strings are equal, in a time that does not tell where they differ. */
function sameText(a, b) {
  let differ = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) differ |= (a.charCodeAt(i) | 0) ^ b.charCodeAt(i);
  return differ === 0;
}

/** One bounded step of garbage collection, with the environment's grace and step size. */
function collectStep(env) {
  return open(env).collectGarbage({
    grace: Number(env.BERTH_GC_GRACE ?? 86400),
    maxCandidates: Number(env.BERTH_GC_STEP ?? 100),
    untagged: Boolean(env.BERTH_GC_UNTAGGED) && env.BERTH_GC_UNTAGGED !== "0",
  });
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/_berth/gc" && env.BERTH_GC_TOKEN) {
      const allowed = request.method === "POST" &&
        sameText(request.headers.get("Authorization") ?? "", `Bearer ${env.BERTH_GC_TOKEN}`);
      if (!allowed) return new Response("not found\n", { status: 404 });
      return Response.json(await collectStep(env));
    }
    return open(env).fetch(request);
  },

  async scheduled(controller, env, ctx) {
    ctx.waitUntil(collectStep(env));
  },
};
