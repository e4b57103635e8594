// An OCI registry as a Workers module. In production, bind an R2 bucket as REGISTRY
// (wrangler.toml: [[r2_buckets]] binding = "REGISTRY"); without one (workerd locally, see
// config.capnp) it keeps its data in memory for as long as the isolate lives.
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
      registry = new Registry({ storage, minPartSize: env.REGISTRY ? undefined : 0 });
    }
    return registry.fetch(request);
  },
};
