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
import { initSync, MemoryBucket, Registry } from "./berth-wasm/index.js";
import wasm from "./berth-wasm/berth_wasm_bg.wasm";

initSync({ module: wasm });

let registry;
let memory;

export default {
  async fetch(request, env) {
    if (!registry) {
      const storage = env.REGISTRY ?? (memory ??= new MemoryBucket());
      // R2 takes parts of at least 5 MiB (the default); the memory store takes any size.
      const auth = env.BERTH_AUTH || (env.BERTH_USERS ? { htpasswd: env.BERTH_USERS } : undefined);
      registry = new Registry({ storage, minPartSize: env.REGISTRY ? undefined : 0, auth });
    }
    return registry.fetch(request);
  },
};
