//! Fetch API glue: a JavaScript `Request` becomes a request head and a chunk stream; a
//! berth `Response` becomes a JavaScript `Response` whose body streams from storage.

use berth::{Body, BodyError, Method, RequestBody, RequestHead};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_streams::ReadableStream;
use web_sys::{Headers, ResponseInit};

use crate::error::RegistryError;

fn string_field(object: &JsValue, name: &str) -> Option<String> {
    Reflect::get(object, &JsValue::from_str(name))
        .ok()?
        .as_string()
}

/// Splits a request URL (`https://host/v2/x/tags/list?n=1`, or a bare path) into its path
/// and query, leaving both percent-encoded.
fn split_url(url: &str) -> (String, Option<String>) {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let target = if url.contains("://") {
        after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
    } else {
        url
    };
    let target = target.split('#').next().unwrap_or(target);
    match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    }
}

/// The head and body of a `Request` (or any object with `method`, `url`, `headers` and
/// `body`, as the Fetch API's own).
pub(crate) fn request_parts(request: &JsValue) -> Result<(RequestHead, RequestBody), JsValue> {
    let (Some(method), Some(url)) = (
        string_field(request, "method"),
        string_field(request, "url"),
    ) else {
        return Err(RegistryError::request("fetch(request) needs a Fetch API Request").into());
    };
    let (path, query) = split_url(&url);
    let mut head = RequestHead::new(Method::parse(&method.to_ascii_uppercase()), path);
    head.query = query;
    let headers = Reflect::get(request, &JsValue::from_str("headers"))?;
    if let Ok(headers) = headers.dyn_into::<Headers>() {
        let entries = js_sys::try_iter(&headers.entries())?.into_iter().flatten();
        for entry in entries {
            let pair: js_sys::Array = entry?.unchecked_into();
            if let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                head.headers.push((name, value));
            }
        }
    }
    let body = Reflect::get(request, &JsValue::from_str("body"))?;
    let body: RequestBody = match body.dyn_into::<web_sys::ReadableStream>() {
        Ok(stream) => {
            Box::pin(
                ReadableStream::from_raw(stream)
                    .into_stream()
                    .map(|chunk| match chunk {
                        Ok(chunk) => Ok(Bytes::from(Uint8Array::new(&chunk).to_vec())),
                        Err(e) => Err(BodyError::from(format!("the request body failed: {e:?}"))),
                    }),
            )
        }
        Err(_) => berth::empty_body(),
    };
    Ok((head, body))
}

/// A JavaScript `Response` for a berth response.
pub(crate) fn js_response(response: berth::Response) -> Result<JsValue, JsValue> {
    let headers = Headers::new()?;
    for (name, value) in &response.headers {
        headers.append(name, value)?;
    }
    let init = ResponseInit::new();
    init.set_status(response.status);
    init.set_headers(&headers);
    let response = match response.body {
        Body::Empty => web_sys::Response::new_with_opt_buffer_source_and_init(None, &init)?,
        Body::Full(bytes) => {
            let array = Uint8Array::from(&bytes[..]);
            web_sys::Response::new_with_opt_buffer_source_and_init(Some(&array), &init)?
        }
        Body::Stream(stream) => {
            let chunks = stream
                .map_ok(|chunk| JsValue::from(Uint8Array::from(&chunk[..])))
                .map_err(|e| JsValue::from_str(&e.to_string()));
            let mut stream = ReadableStream::from_stream(chunks).into_raw();
            if let Some(length) = response
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("Content-Length"))
                .and_then(|(_, value)| value.parse::<f64>().ok())
            {
                stream = with_known_length(stream, length)?;
            }
            web_sys::Response::new_with_opt_readable_stream_and_init(Some(&stream), &init)?
        }
    };
    Ok(response.into())
}

/// Where the runtime has Workers' `FixedLengthStream`, pipes the body through one, so that
/// the response carries its `Content-Length` instead of being chunked (workerd drops the
/// header from bodies of unknown length; clients want it on blobs and ranges).
fn with_known_length(
    stream: web_sys::ReadableStream,
    length: f64,
) -> Result<web_sys::ReadableStream, JsValue> {
    let constructor = Reflect::get(&js_sys::global(), &JsValue::from_str("FixedLengthStream"))?;
    let Ok(constructor) = constructor.dyn_into::<js_sys::Function>() else {
        return Ok(stream);
    };
    let fixed = Reflect::construct(
        &constructor,
        &js_sys::Array::of1(&JsValue::from_f64(length)),
    )?;
    let writable: web_sys::WritableStream =
        Reflect::get(&fixed, &JsValue::from_str("writable"))?.dyn_into()?;
    let readable: web_sys::ReadableStream =
        Reflect::get(&fixed, &JsValue::from_str("readable"))?.dyn_into()?;
    // The pipe runs as the client reads; a failure shows as an aborted body.
    let piping = wasm_bindgen_futures::JsFuture::from(stream.pipe_to(&writable));
    wasm_bindgen_futures::spawn_local(async move {
        let _ = piping.await;
    });
    Ok(readable)
}

#[cfg(test)]
mod tests {
    use super::split_url;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn urls_split_into_encoded_path_and_query() {
        assert_eq!(
            split_url("https://r.example/v2/a%2Fb/tags/list?n=1&last=x"),
            (
                "/v2/a%2Fb/tags/list".to_owned(),
                Some("n=1&last=x".to_owned())
            )
        );
        assert_eq!(split_url("http://127.0.0.1:5000"), ("/".to_owned(), None));
        assert_eq!(split_url("/v2/"), ("/v2/".to_owned(), None));
    }
}
