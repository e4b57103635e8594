//! The adapter under Node, through wasm-bindgen-test: berth's storage contract suite against
//! the JavaScript MemoryBucket, and requests through `Registry::fetch` as JavaScript makes
//! them. (`node --test wasm/test` covers the package as published, NodeFsBucket included;
//! the browser test covers BrowserBucket.)
#![cfg(target_arch = "wasm32")]

use berth_wasm::{Registry, check_storage};
use js_sys::{Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen(module = "/js/stores/memory.js")]
extern "C" {
    type MemoryBucket;
    #[wasm_bindgen(constructor)]
    fn new() -> MemoryBucket;
}

fn registry() -> Registry {
    let options = Object::new();
    Reflect::set(&options, &"storage".into(), &MemoryBucket::new()).unwrap();
    Reflect::set(&options, &"minPartSize".into(), &JsValue::from_f64(0.0)).unwrap();
    Registry::new(&options).unwrap()
}

async fn fetch(
    registry: &Registry,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
) -> web_sys::Response {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    if let Some(body) = body {
        init.set_body(&Uint8Array::from(body));
    }
    let request = web_sys::Request::new_with_str_and_init(url, &init).unwrap();
    JsFuture::from(registry.fetch(request.into()))
        .await
        .unwrap()
        .into()
}

async fn text(response: &web_sys::Response) -> String {
    JsFuture::from(response.text().unwrap())
        .await
        .unwrap()
        .as_string()
        .unwrap()
}

#[wasm_bindgen_test]
async fn memory_bucket_meets_the_storage_contract() {
    let result = JsFuture::from(check_storage(MemoryBucket::new().into(), Some(0.0))).await;
    assert_eq!(result.unwrap(), JsValue::TRUE);
    // With R2's 5 MiB minimum part, as on Workers.
    let result = JsFuture::from(check_storage(MemoryBucket::new().into(), None)).await;
    assert_eq!(result.unwrap(), JsValue::TRUE);
}

#[wasm_bindgen_test]
async fn push_and_pull_a_blob() {
    let registry = registry();
    let digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    let response = fetch(&registry, "GET", "http://registry.test/v2/", None).await;
    assert_eq!(response.status(), 200);
    let url = format!("http://registry.test/v2/wasm/blob/blobs/uploads/?digest={digest}");
    let response = fetch(&registry, "POST", &url, Some(b"hello")).await;
    assert_eq!(response.status(), 201);
    let url = format!("http://registry.test/v2/wasm/blob/blobs/{digest}");
    let response = fetch(&registry, "GET", &url, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-length").unwrap().as_deref(),
        Some("5")
    );
    assert_eq!(text(&response).await, "hello");
}

#[wasm_bindgen_test]
async fn protocol_errors_are_responses() {
    let registry = registry();
    let response = fetch(
        &registry,
        "GET",
        "http://registry.test/v2/x/blobs/sha256:zz",
        None,
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(text(&response).await.contains("DIGEST_INVALID"));
    let response = fetch(
        &registry,
        "GET",
        "http://registry.test/v2/x/manifests/none",
        None,
    )
    .await;
    assert_eq!(response.status(), 404);
    assert!(text(&response).await.contains("MANIFEST_UNKNOWN"));
}

#[wasm_bindgen_test]
async fn bad_options_and_requests_throw_registry_errors() {
    let error = Registry::new(&JsValue::from_f64(3.0)).unwrap_err();
    assert_eq!(error.code(), "INVALID_OPTIONS");
    let options = Object::new();
    Reflect::set(&options, &"storage".into(), &Object::new()).unwrap();
    let error = Registry::new(&options).unwrap_err();
    assert!(error.message().contains("get()"), "{}", error.message());
    let rejected = JsFuture::from(registry().fetch(JsValue::from_str("not a request"))).await;
    let error = rejected.unwrap_err();
    let code = Reflect::get(&error, &"code".into()).unwrap();
    assert_eq!(code.as_string().as_deref(), Some("INVALID_REQUEST"));
}

#[wasm_bindgen_test]
async fn purge_uploads_keeps_fresh_sessions() {
    let registry = registry();
    let response = fetch(
        &registry,
        "POST",
        "http://registry.test/v2/wasm/p/blobs/uploads/",
        None,
    )
    .await;
    assert_eq!(response.status(), 202);
    let purged = JsFuture::from(registry.purge_uploads(3600.0))
        .await
        .unwrap();
    assert_eq!(purged.as_f64(), Some(0.0));
    let _: Promise = registry.purge_uploads(0.0);
}
