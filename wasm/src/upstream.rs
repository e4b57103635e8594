//! The pull-through cache's upstream client: the runtime's `fetch`, its response body
//! streamed through as it arrives.

use async_trait::async_trait;
use berth::BodyError;
use berth::proxy::{UpstreamClient, UpstreamRequest, UpstreamResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use js_sys::{Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_streams::ReadableStream;

/// Sends upstream requests with `fetch` (redirects followed, as registries that serve blobs
/// from a CDN need).
pub(crate) struct FetchUpstream;

#[async_trait(?Send)]
impl UpstreamClient for FetchUpstream {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, String> {
        let global = js_sys::global();
        let fetch = crate::keys::runtime_fetch().ok_or("this runtime has no fetch")?;
        let headers = Object::new();
        for (name, value) in &request.headers {
            Reflect::set(
                &headers,
                &JsValue::from_str(name),
                &JsValue::from_str(value),
            )
            .map_err(crate::keys::describe)?;
        }
        let init = Object::new();
        let set = |name: &str, value: &JsValue| {
            Reflect::set(&init, &JsValue::from_str(name), value).map_err(crate::keys::describe)
        };
        set("method", &JsValue::from_str(&request.method.to_string()))?;
        set("headers", &headers)?;
        set("redirect", &JsValue::from_str("follow"))?;
        let answer = fetch
            .call2(&global, &JsValue::from_str(&request.url), &init)
            .map_err(crate::keys::describe)?;
        let response: web_sys::Response = JsFuture::from(Promise::resolve(&answer))
            .await
            .map_err(crate::keys::describe)?
            .dyn_into()
            .map_err(|_| "fetch resolved to no Response".to_owned())?;
        let mut headers = Vec::new();
        let entries = js_sys::try_iter(&response.headers().entries())
            .map_err(crate::keys::describe)?
            .into_iter()
            .flatten()
            .flatten();
        for entry in entries {
            let pair: js_sys::Array = entry.unchecked_into();
            if let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                headers.push((name, value));
            }
        }
        let body: berth::RequestBody =
            match response.body() {
                Some(stream) => Box::pin(ReadableStream::from_raw(stream).into_stream().map(
                    |chunk| match chunk {
                        Ok(chunk) => Ok(Bytes::from(Uint8Array::new(&chunk).to_vec())),
                        Err(e) => Err(BodyError::from(format!(
                            "the upstream's body failed: {e:?}"
                        ))),
                    },
                )),
                None => berth::empty_body(),
            };
        Ok(UpstreamResponse {
            status: response.status(),
            headers,
            body,
        })
    }
}
