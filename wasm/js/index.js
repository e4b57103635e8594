// berth-wasm: an OCI registry in WebAssembly. This entry works wherever ES modules and the
// Fetch API do (workerd, browsers, Deno); in Node, import "berth-wasm" resolves to node.js,
// which also loads the .wasm. Elsewhere, initialise once before use:
//   await init();                       // browsers: fetches berth_wasm_bg.wasm beside this file
//   initSync({ module: wasmModule });   // Workers: import wasmModule from "./berth_wasm_bg.wasm"
export { default as init, initSync, Registry, RegistryError, checkStorage } from "./berth_wasm.js";
export { MemoryBucket } from "./stores/memory.js";
export { BrowserBucket } from "./stores/browser.js";
