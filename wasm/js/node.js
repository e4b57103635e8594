// berth-wasm for Node (>= 20): loads the .wasm from beside this file, synchronously, so the
// package is ready as soon as it is imported.
import { readFileSync } from "node:fs";
import { initSync } from "./berth_wasm.js";

initSync({ module: readFileSync(new URL("./berth_wasm_bg.wasm", import.meta.url)) });

export * from "./index.js";
export { NodeFsBucket } from "./stores/node-fs.js";
