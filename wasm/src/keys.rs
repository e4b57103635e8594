//! What logins need from the JavaScript runtime: token issuers' key sets fetched with
//! `fetch` (or the host's own function), and a timer for the delay after a failed login.

use async_trait::async_trait;
use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The largest key set taken: a key set is a few kilobytes.
const KEY_SET_LIMIT: usize = 1 << 20;

/// How long a fetch of a key set may take, in milliseconds.
const FETCH_TIMEOUT_MS: f64 = 10_000.0;

/// Fetches key sets with the `fetchKeySet` option (`url => Promise<string>`), or else with
/// the runtime's `fetch`.
pub(crate) struct JsKeySets {
    fetch_key_set: Option<Function>,
}

impl JsKeySets {
    /// Reads the `fetchKeySet` option.
    pub(crate) fn from_options(options: &JsValue) -> Result<Self, crate::RegistryError> {
        let value =
            Reflect::get(options, &JsValue::from_str("fetchKeySet")).unwrap_or(JsValue::UNDEFINED);
        if value.is_undefined() || value.is_null() {
            return Ok(Self {
                fetch_key_set: None,
            });
        }
        let function = value
            .dyn_into::<Function>()
            .map_err(|_| crate::RegistryError::options("option fetchKeySet must be a function"))?;
        Ok(Self {
            fetch_key_set: Some(function),
        })
    }
}

#[async_trait(?Send)]
impl berth::KeySetFetcher for JsKeySets {
    async fn fetch(&self, url: &str) -> Result<String, String> {
        let text = match &self.fetch_key_set {
            Some(function) => {
                let answer = function
                    .call1(&JsValue::NULL, &JsValue::from_str(url))
                    .map_err(describe)?;
                let value = JsFuture::from(Promise::resolve(&answer))
                    .await
                    .map_err(describe)?;
                value
                    .as_string()
                    .ok_or("fetchKeySet resolved to something other than a string")?
            }
            None => fetch_text(url).await?,
        };
        if text.len() > KEY_SET_LIMIT {
            return Err(format!("more than {KEY_SET_LIMIT} bytes"));
        }
        Ok(text)
    }
}

/// A GET of `url` with the runtime's `fetch`, given up after a few seconds where the runtime
/// has `AbortSignal.timeout`.
async fn fetch_text(url: &str) -> Result<String, String> {
    let global = js_sys::global();
    let fetch = runtime_fetch().ok_or("this runtime has no fetch; give the fetchKeySet option")?;
    let init = Object::new();
    if let Some(timeout) = Reflect::get(&global, &JsValue::from_str("AbortSignal"))
        .ok()
        .and_then(|signal| {
            let timeout = Reflect::get(&signal, &JsValue::from_str("timeout")).ok()?;
            let timeout = timeout.dyn_into::<Function>().ok()?;
            timeout
                .call1(&signal, &JsValue::from_f64(FETCH_TIMEOUT_MS))
                .ok()
        })
    {
        let _ = Reflect::set(&init, &JsValue::from_str("signal"), &timeout);
    }
    let response = fetch
        .call2(&global, &JsValue::from_str(url), &init)
        .map_err(describe)?;
    let response: web_sys::Response = JsFuture::from(Promise::resolve(&response))
        .await
        .map_err(describe)?
        .dyn_into()
        .map_err(|_| "fetch resolved to no Response".to_owned())?;
    if !response.ok() {
        return Err(format!("answered {}", response.status()));
    }
    let text = JsFuture::from(response.text().map_err(describe)?)
        .await
        .map_err(describe)?;
    text.as_string()
        .ok_or_else(|| "the body is no text".to_owned())
}

/// The runtime's global `fetch`, if it has one.
pub(crate) fn runtime_fetch() -> Option<Function> {
    Reflect::get(&js_sys::global(), &JsValue::from_str("fetch"))
        .ok()
        .and_then(|fetch| fetch.dyn_into::<Function>().ok())
}

/// Waits `milliseconds` on the runtime's `setTimeout`.
pub(crate) async fn sleep(milliseconds: f64) {
    let global = js_sys::global();
    let Some(set_timeout) = Reflect::get(&global, &JsValue::from_str("setTimeout"))
        .ok()
        .and_then(|function| function.dyn_into::<Function>().ok())
    else {
        return;
    };
    let promise = Promise::new(&mut |resolve, _reject| {
        let _ = set_timeout.call2(&global, &resolve, &JsValue::from_f64(milliseconds));
    });
    let _ = JsFuture::from(promise).await;
}

pub(crate) fn describe(error: JsValue) -> String {
    error
        .as_string()
        .or_else(|| {
            error
                .dyn_ref::<js_sys::Error>()
                .map(|error| String::from(error.message()))
        })
        .unwrap_or_else(|| format!("{error:?}"))
}
