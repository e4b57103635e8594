//! berth-wasm: berth compiled to WebAssembly for edge isolates (Cloudflare Workers /
//! workerd), browsers and Node.
//!
//! JavaScript passes a storage shaped like the Workers R2 bucket binding (so an R2 binding
//! works as it is) and calls `registry.fetch(request)` with standard Fetch API `Request`s;
//! bodies stream through `ReadableStream`s both ways. Upload sessions, with their hash
//! midstate, live in that storage, so consecutive requests may land on different isolates.
//!
//! Everything here is for `wasm32`; on other targets the crate is empty.
#![cfg(target_arch = "wasm32")]

mod error;
mod http;
mod keys;
mod storage;
mod upstream;

use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

pub use error::RegistryError;
use storage::JsStorage;

/// An OCI registry over a JavaScript storage.
#[wasm_bindgen]
pub struct Registry {
    inner: Rc<berth::Registry<JsStorage>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Reads an optional number option.
fn number_option(options: &JsValue, name: &str) -> Result<Option<f64>, RegistryError> {
    let value = Reflect::get(options, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    match value.as_f64() {
        Some(n) if n >= 0.0 && n.fract() == 0.0 => Ok(Some(n)),
        _ => Err(RegistryError::options(format!(
            "option {name} must be a non-negative integer"
        ))),
    }
}

/// Reads an optional boolean option.
fn bool_option(options: &JsValue, name: &str) -> Result<Option<bool>, RegistryError> {
    let value = Reflect::get(options, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .as_bool()
        .map(Some)
        .ok_or_else(|| RegistryError::options(format!("option {name} must be a boolean")))
}

/// The `auth` option: the login settings (an object, or its JSON text) as the core reads
/// them (`berth::auth::Settings`): `htpasswd`, `rules`, `realm`, `service`, `token`,
/// `issuers`.
fn auth_option(options: &JsValue) -> Result<Option<Arc<dyn berth::AccessPolicy>>, RegistryError> {
    let Some(text) = json_option(options, "auth")? else {
        return Ok(None);
    };
    let policy = berth::auth::Settings::from_json(&text)
        .and_then(|settings| settings.policy(Arc::new(unix_now)))
        .map_err(RegistryError::options)?;
    Ok(Some(Arc::new(policy)))
}

/// An option given as an object or its JSON text, as JSON text.
fn json_option(options: &JsValue, name: &str) -> Result<Option<String>, RegistryError> {
    let value = Reflect::get(options, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    match value.as_string() {
        Some(text) => Ok(Some(text)),
        None => js_sys::JSON::stringify(&value)
            .ok()
            .and_then(|text| text.as_string())
            .map(Some)
            .ok_or_else(|| {
                RegistryError::options(format!("option {name} must be an object or JSON text"))
            }),
    }
}

/// The `onNotice` option: a function called with each notice's message (what a response could
/// not carry, for the operator); by default `console.warn`, which a worker's logs show.
fn notice_sink(options: &JsValue) -> Result<berth::NoticeSink, RegistryError> {
    let value = Reflect::get(options, &JsValue::from_str("onNotice")).unwrap_or(JsValue::UNDEFINED);
    if value.is_undefined() || value.is_null() {
        return Ok(Arc::new(|notice: &berth::Notice| {
            web_sys::console::warn_1(&JsValue::from_str(&format!("berth: {notice}")));
        }));
    }
    let Some(function) = value.dyn_ref::<js_sys::Function>().cloned() else {
        return Err(RegistryError::options("option onNotice must be a function"));
    };
    Ok(Arc::new(move |notice: &berth::Notice| {
        // A notice is advice: a function that throws changes no answer.
        let _ = function.call1(&JsValue::NULL, &JsValue::from_str(&notice.to_string()));
    }))
}

fn random_upload_id() -> String {
    let mut bytes = [0u8; 16];
    // crypto.getRandomValues exists in workerd, browsers, Deno and Node >= 19.
    let filled = Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))
        .ok()
        .filter(|crypto| !crypto.is_undefined())
        .and_then(|crypto| {
            let array = js_sys::Uint8Array::new_with_length(16);
            let get = Reflect::get(&crypto, &JsValue::from_str("getRandomValues")).ok()?;
            let get: js_sys::Function = get.dyn_into().ok()?;
            get.call1(&crypto, &array).ok()?;
            array.copy_to(&mut bytes);
            Some(())
        });
    if filled.is_none() {
        for byte in &mut bytes {
            *byte = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    (js_sys::Date::now() / 1000.0) as u64
}

#[wasm_bindgen]
impl Registry {
    /// `new Registry({ storage, ...options })`. `storage` is an R2-shaped bucket (an R2
    /// binding, or one of the package's stores). Options: `partSize` (upload part size, at
    /// most two held per upload request; default 2 MiB, raised to `minPartSize`), `minPartSize` (the storage's smallest multipart part, default
    /// 5 MiB as on R2), `readOnly`, `deleteEnabled`, `automaticMount`, `manifestLimit`,
    /// `auth` (logins: `{htpasswd, rules, realm, service, token: {key}, issuers}`, as
    /// `berth::auth::Settings` reads them), `fetchKeySet` (`url => Promise<string>`: fetches
    /// an issuer's key set at its `keys-url`; default the runtime's `fetch`),
    /// `chunkMaxLength` (advertised and enforced, for platforms that limit request bodies),
    /// `trackReferences` (record who references each blob, for `collectGarbage`),
    /// `retention` (rules `collectGarbage` applies: `[{ repositories, "keep-last",
    /// "keep-tags", "remove-older-than" }]`, or their JSON text), `quotas` (bytes repositories
    /// may hold: `[{ repositories, limit }, { namespace, limit }]` with limits as numbers or
    /// `"10GiB"`, or their JSON text; usage at `GET /v2/_usage/<name>`),
    /// `upstreams` (pull-through cache rules: `[{ prefix, urls, namespace, revalidate,
    /// "stale-if-error", ... }]`, or their JSON text; filled with the runtime's `fetch`),
    /// `onNotice` (a function given each notice for the operator; default `console.warn`).
    #[wasm_bindgen(constructor)]
    pub fn new(options: &JsValue) -> Result<Registry, RegistryError> {
        if !options.is_object() {
            return Err(RegistryError::options(
                "new Registry({ storage, ...options }) needs an options object",
            ));
        }
        let bucket = Reflect::get(options, &JsValue::from_str("storage")).unwrap_or_default();
        let min_part_size = number_option(options, "minPartSize")?.map(|n| n as u64);
        let storage = JsStorage::new(bucket, min_part_size)?;
        let mut settings = berth::Options::new(Arc::new(random_upload_id), Arc::new(unix_now));
        if let Some(n) = number_option(options, "partSize")? {
            if n < 1.0 {
                return Err(RegistryError::options("option partSize must be at least 1"));
            }
            settings.part_size = n as usize;
        }
        if let Some(n) = number_option(options, "manifestLimit")? {
            settings.manifest_limit = n as usize;
        }
        if let Some(n) = number_option(options, "chunkMaxLength")? {
            settings.chunk_max_length = Some(n as u64);
        }
        let read_only = bool_option(options, "readOnly")?.unwrap_or(false);
        settings.access = match auth_option(options)? {
            Some(login) if read_only => Arc::new(berth::ReadOnlyOver(login)),
            Some(login) => login,
            None if read_only => Arc::new(berth::ReadOnly),
            None => settings.access,
        };
        if let Some(enabled) = bool_option(options, "deleteEnabled")? {
            settings.delete_enabled = enabled;
        }
        if let Some(enabled) = bool_option(options, "automaticMount")? {
            settings.automatic_mount = enabled;
        }
        if let Some(track) = bool_option(options, "trackReferences")? {
            settings.track_references = track;
        }
        if let Some(rules) = json_option(options, "retention")? {
            settings.retention = Arc::new(
                berth::retention::Retention::from_json(&rules).map_err(RegistryError::options)?,
            );
        }
        if let Some(rules) = json_option(options, "quotas")? {
            settings.quotas =
                Arc::new(berth::quota::Quotas::from_json(&rules).map_err(RegistryError::options)?);
        }
        if let Some(rules) = json_option(options, "upstreams")? {
            settings.upstreams = Arc::new(
                berth::proxy::Upstreams::from_json(&rules).map_err(RegistryError::options)?,
            );
            settings.upstream_client = Some(Arc::new(upstream::FetchUpstream));
        }
        settings.notices = Some(notice_sink(options)?);
        settings.key_sets = Some(Arc::new(keys::JsKeySets::from_options(options)?));
        Ok(Registry {
            inner: Rc::new(berth::Registry::new(storage, settings)),
        })
    }

    /// Answers a Fetch API `Request` with a `Response`. Protocol errors are responses with
    /// the OCI status and JSON error body; the promise rejects only when `request` is not a
    /// request.
    pub fn fetch(&self, request: JsValue) -> Promise {
        let registry = Rc::clone(&self.inner);
        future_to_promise(async move {
            let (head, body) = http::request_parts(&request)?;
            let sent_credentials = head.header("authorization").is_some();
            let response = registry.handle(head, body).await;
            // Credentials that proved nothing: the answer waits, so guessing is slow.
            if let Some(delay) = registry.login_fail_delay(sent_credentials, response.status) {
                keys::sleep(delay.as_secs_f64() * 1000.0).await;
            }
            http::js_response(response)
        })
    }

    /// One step of garbage collection (with `trackReferences` on): `{ grace, maxCandidates,
    /// dryRun, untagged, orphanedReferrers }` (grace in seconds, default 86400; at most
    /// `maxCandidates` visits, default 1000: each costs a few storage requests, so a Worker
    /// keeps within its subrequest budget; `untagged` also deletes manifests untagged that
    /// long). Resolves to `{ visited, tagsDeleted, manifestsDeleted, blobsDeleted,
    /// bytesDeleted, linksRemoved, left, marked }`; call again while `left` is not 0.
    #[wasm_bindgen(js_name = collectGarbage)]
    pub fn collect_garbage(&self, options: JsValue) -> Promise {
        let registry = Rc::clone(&self.inner);
        future_to_promise(async move {
            let mut settings = berth::Collection::default();
            if options.is_object() {
                if let Some(grace) = number_option(&options, "grace")? {
                    settings.grace = grace as u64;
                }
                if let Some(max) = number_option(&options, "maxCandidates")? {
                    settings.max_candidates = max as usize;
                }
                settings.dry_run = bool_option(&options, "dryRun")?.unwrap_or(false);
                settings.untagged = bool_option(&options, "untagged")?.unwrap_or(false);
                settings.orphaned_referrers =
                    bool_option(&options, "orphanedReferrers")?.unwrap_or(false);
            }
            let report = registry
                .collect_garbage(&settings)
                .await
                .map_err(|e| RegistryError::storage(e.to_string()))?;
            counts(&[
                ("visited", report.visited),
                ("manifestsDeleted", report.manifests_deleted),
                ("tagsDeleted", report.tags_deleted),
                ("blobsDeleted", report.blobs_deleted),
                ("bytesDeleted", report.bytes_deleted),
                ("linksRemoved", report.links_removed),
                ("left", report.left),
                ("marked", report.marked),
            ])
        })
    }

    /// Pre-fills the pull-through cache (`upstreams`) with the image `name:reference`
    /// (`name` as clients pull it, e.g. `docker-hub/nginx`; `reference` a tag or digest),
    /// fetching what a pull would: the manifest, an index's children for `platforms`
    /// (`["linux/amd64"]`; all of them when empty or absent), their configs and layers, each
    /// blob once and verified; nothing already cached. Resolves to `{ manifests,
    /// blobsFetched, bytesFetched, blobsCached }`; rejects with the registry's error code
    /// (`NAME_INVALID`: not in a cache; `MANIFEST_UNKNOWN`: not upstream).
    #[wasm_bindgen]
    pub fn mirror(
        &self,
        name: String,
        reference: String,
        platforms: Option<Vec<String>>,
    ) -> Promise {
        let registry = Rc::clone(&self.inner);
        future_to_promise(async move {
            let platforms = platforms.unwrap_or_default();
            let report = registry
                .mirror(&name, &reference, &platforms)
                .await
                .map_err(|e| RegistryError::registry(&e))?;
            counts(&[
                ("manifests", report.manifests),
                ("blobsFetched", report.blobs_fetched),
                ("bytesFetched", report.bytes_fetched),
                ("blobsCached", report.blobs_cached),
            ])
        })
    }

    /// Scrubs the whole storage (with `trackReferences` on): `{ dryRun, uploadExpiry }`
    /// (seconds, default 7 days; 0 keeps uploads). Writes every back-link again, makes each
    /// blob nothing references or links a candidate for `collectGarbage`, purges expired
    /// uploads and has quota usage counted afresh. Resolves to `{ marked, blobs, strayBlobs,
    /// strayBytes, uploadsPurged }`. A walk of everything: for a Node host, or a Worker over
    /// a small registry, not a scheduled step.
    #[wasm_bindgen]
    pub fn scrub(&self, options: JsValue) -> Promise {
        let registry = Rc::clone(&self.inner);
        future_to_promise(async move {
            let mut settings = berth::Scrub::default();
            if options.is_object() {
                settings.dry_run = bool_option(&options, "dryRun")?.unwrap_or(false);
                if let Some(expiry) = number_option(&options, "uploadExpiry")? {
                    settings.upload_expiry = (expiry >= 1.0).then_some(expiry as u64);
                }
            }
            let report = registry
                .scrub(&settings)
                .await
                .map_err(|e| RegistryError::storage(e.to_string()))?;
            counts(&[
                ("marked", report.marked),
                ("blobs", report.blobs),
                ("strayBlobs", report.stray_blobs),
                ("strayBytes", report.stray_bytes),
                ("uploadsPurged", report.uploads_purged),
            ])
        })
    }

    /// Removes upload sessions started more than `olderThan` seconds ago; resolves to how
    /// many there were.
    #[wasm_bindgen(js_name = purgeUploads)]
    pub fn purge_uploads(&self, older_than: f64) -> Promise {
        let registry = Rc::clone(&self.inner);
        future_to_promise(async move {
            let purged = registry
                .purge_uploads(older_than.max(0.0) as u64)
                .await
                .map_err(|e| RegistryError::storage(e.to_string()))?;
            Ok(JsValue::from_f64(purged as f64))
        })
    }
}

/// Runs berth's storage contract suite against a JavaScript storage (it writes, then
/// removes, keys under `conformance/`). Resolves to `true` when every check passes; rejects
/// with a `RegistryError` (`STORAGE`) whose message is the report, a line per check.
#[wasm_bindgen(js_name = checkStorage)]
pub fn check_storage(storage: JsValue, min_part_size: Option<f64>) -> Promise {
    future_to_promise(async move {
        let storage = JsStorage::new(storage, min_part_size.map(|n| n as u64))?;
        let report = berth::storage::conformance::run(&storage).await;
        if report.passed() {
            Ok(JsValue::TRUE)
        } else {
            Err(
                RegistryError::storage(format!("the storage contract is not met:\n{report}"))
                    .into(),
            )
        }
    })
}

/// A report as a plain object of numbers.
fn counts(fields: &[(&str, u64)]) -> Result<JsValue, JsValue> {
    let out = js_sys::Object::new();
    for (name, value) in fields {
        Reflect::set(
            &out,
            &JsValue::from_str(name),
            &JsValue::from_f64(*value as f64),
        )?;
    }
    Ok(out.into())
}
