# workerd configuration that runs the registry worker locally on the in-memory store:
#
#   wasm/build.sh          # builds wasm/pkg, which the modules below embed
#   workerd serve examples/edge-worker/config.capnp --socket-addr http=127.0.0.1:8080
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "registry", worker = .registryWorker),
    # The worker's own fetches (token issuers' key sets at a `keys-url`): the internet, and
    # this machine, where a test serves its key sets.
    (name = "outbound", network = (allow = ["public", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8080", http = (), service = "registry")],
);

const registryWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "berth-wasm/index.js", esModule = embed "../../wasm/pkg/index.js"),
    (name = "berth-wasm/berth_wasm.js", esModule = embed "../../wasm/pkg/berth_wasm.js"),
    (name = "berth-wasm/berth_wasm_bg.wasm", wasm = embed "../../wasm/pkg/berth_wasm_bg.wasm"),
    (name = "berth-wasm/stores/memory.js", esModule = embed "../../wasm/pkg/stores/memory.js"),
    (name = "berth-wasm/stores/browser.js", esModule = embed "../../wasm/pkg/stores/browser.js"),
  ],
  # Logins, when the environment workerd runs in sets them (see worker.js).
  bindings = [
    (name = "BERTH_AUTH", fromEnvironment = "BERTH_AUTH"),
    (name = "BERTH_USERS", fromEnvironment = "BERTH_USERS"),
    (name = "BERTH_GC", fromEnvironment = "BERTH_GC"),
    (name = "BERTH_GC_GRACE", fromEnvironment = "BERTH_GC_GRACE"),
    (name = "BERTH_GC_STEP", fromEnvironment = "BERTH_GC_STEP"),
    (name = "BERTH_GC_UNTAGGED", fromEnvironment = "BERTH_GC_UNTAGGED"),
    (name = "BERTH_RETENTION", fromEnvironment = "BERTH_RETENTION"),
    (name = "BERTH_QUOTAS", fromEnvironment = "BERTH_QUOTAS"),
    (name = "BERTH_UPSTREAMS", fromEnvironment = "BERTH_UPSTREAMS"),
    (name = "BERTH_GC_TOKEN", fromEnvironment = "BERTH_GC_TOKEN"),
  ],
  compatibilityDate = "2025-11-01",
  globalOutbound = "outbound",
);
