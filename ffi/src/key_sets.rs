//! Token issuers' key sets at URLs, fetched by the host: berth has no HTTP client of its
//! own, so a host whose login settings name a `keys-url` gives it a fetch callback.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use crate::config::{berth_config, configure};
use crate::result::{Failure, berth_result, guard, str_arg};

/// The largest key set a fetch callback may report: a key set is a few kilobytes.
const KEY_SET_LIMIT: usize = 1 << 20;

/// Where a fetch callback reports the body it fetched, or why there is none.
#[derive(Debug, Default)]
pub struct berth_key_set_out {
    body: Option<String>,
    error: Option<String>,
}

/// The host's fetch callback and its `env`.
#[derive(Clone, Copy)]
struct FetchCallback {
    fetch: unsafe extern "C" fn(env: *mut c_void, url: *const c_char, out: *mut berth_key_set_out),
    env: *mut c_void,
}

// SAFETY: the host promises (berth_config_set_key_set_fetcher) that its callback may be
// called from any thread, concurrently, with `env`; berth never touches `env` itself.
unsafe impl Send for FetchCallback {}
// SAFETY: as above.
unsafe impl Sync for FetchCallback {}

impl FetchCallback {
    fn call(self, url: &str) -> Result<String, String> {
        let url = std::ffi::CString::new(url).map_err(|_| "a URL with a NUL in it".to_owned())?;
        let mut out = berth_key_set_out::default();
        // SAFETY: the host promised the callback may be called with `env`, from any thread;
        // `url` and `out` outlive the call.
        unsafe { (self.fetch)(self.env, url.as_ptr(), &mut out) };
        match (out.body, out.error) {
            (Some(body), _) => Ok(body),
            (None, Some(error)) => Err(error),
            (None, None) => Err("the host's fetch callback reported nothing".into()),
        }
    }
}

#[async_trait::async_trait]
impl berth::KeySetFetcher for FetchCallback {
    async fn fetch(&self, url: &str) -> Result<String, String> {
        // The callback blocks (it waits on the network): off the registry's worker threads.
        let (callback, url) = (*self, url.to_owned());
        tokio::task::spawn_blocking(move || callback.call(&url))
            .await
            .map_err(|e| format!("the fetch callback did not finish: {e}"))?
    }
}

/// Has registries made from this configuration fetch token issuers' key sets (the
/// `keys-url` of `berth_config_set_auth`'s issuers) through `fetch(env, url, out)`: a GET of
/// `url` that reports the body with `berth_key_set_out_set_body`, or the reason it has
/// none with `berth_key_set_out_set_error`, bounding its own time (a few seconds). berth
/// calls it when a token names a key it does not know, at most once every
/// `key-refetch-interval` seconds, on a thread where blocking is fine; a failed fetch keeps
/// the keys fetched before. NULL `fetch` fetches nothing (the default).
///
/// # Safety
/// `config` is a live configuration. `fetch` may be called from any thread, concurrently,
/// with `env`, for as long as a registry made from this configuration lives.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_config_set_key_set_fetcher(
    config: *mut berth_config,
    fetch: Option<
        unsafe extern "C" fn(env: *mut c_void, url: *const c_char, out: *mut berth_key_set_out),
    >,
    env: *mut c_void,
) -> berth_result {
    // SAFETY: the caller's promise covers `config`.
    unsafe {
        configure(config, |config| {
            config.options.key_sets = fetch.map(|fetch| {
                Arc::new(FetchCallback { fetch, env }) as Arc<dyn berth::KeySetFetcher>
            });
            Ok(())
        })
    }
}

/// Reports the body the fetch callback fetched (`length` bytes at `data`, a JWKS document;
/// at most 1 MiB), copied.
///
/// # Safety
/// `out` is the one the running callback was given; `data` is valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_key_set_out_set_body(
    out: *mut berth_key_set_out,
    data: *const u8,
    length: usize,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::null("out"))?;
        if length > KEY_SET_LIMIT {
            return Err(Failure::new(
                berth_result::InvalidArgument,
                format!("a key set of {length} bytes (at most {KEY_SET_LIMIT})"),
            ));
        }
        let body = if length == 0 {
            &[][..]
        } else if data.is_null() {
            return Err(Failure::null("data"));
        } else {
            // SAFETY: the caller promised `length` readable bytes at `data`.
            unsafe { std::slice::from_raw_parts(data, length) }
        };
        out.body = Some(String::from_utf8_lossy(body).into_owned());
        Ok(())
    })
}

/// Reports why the fetch callback has no key set (the URL did not answer, or answered an
/// error status), for the notice berth sends the host.
///
/// # Safety
/// `out` is the one the running callback was given; `reason` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_key_set_out_set_error(
    out: *mut berth_key_set_out,
    reason: *const c_char,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::null("out"))?;
        // SAFETY: the caller promised a NUL-terminated string.
        let reason = unsafe { str_arg(reason, "reason") }?;
        out.error = Some(reason.to_owned());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    unsafe extern "C" fn answers(
        env: *mut c_void,
        url: *const c_char,
        out: *mut berth_key_set_out,
    ) {
        // SAFETY: the test passes a NUL-terminated URL and a live out.
        let url = unsafe { CStr::from_ptr(url) }.to_string_lossy();
        let body = format!(
            "{{\"keys\": [], \"url\": \"{url}\", \"env\": {}}}",
            env as usize
        );
        // SAFETY: as above.
        unsafe { berth_key_set_out_set_body(out, body.as_ptr(), body.len()) };
    }

    unsafe extern "C" fn fails(_: *mut c_void, _: *const c_char, out: *mut berth_key_set_out) {
        // SAFETY: a live out and a NUL-terminated reason.
        unsafe { berth_key_set_out_set_error(out, c"connection refused".as_ptr()) };
    }

    unsafe extern "C" fn silent(_: *mut c_void, _: *const c_char, _: *mut berth_key_set_out) {}

    #[test]
    fn the_callback_reports_a_body_or_a_reason() {
        let callback = |fetch| FetchCallback {
            fetch,
            env: 7 as *mut c_void,
        };
        assert_eq!(
            callback(answers).call("http://idp/jwks").unwrap(),
            r#"{"keys": [], "url": "http://idp/jwks", "env": 7}"#
        );
        assert_eq!(
            callback(fails).call("http://idp/jwks").unwrap_err(),
            "connection refused"
        );
        assert!(callback(silent).call("http://idp/jwks").is_err());
        let mut out = berth_key_set_out::default();
        let big = vec![b'x'; KEY_SET_LIMIT + 1];
        // SAFETY: a live out and a buffer of that length.
        let refused = unsafe { berth_key_set_out_set_body(&mut out, big.as_ptr(), big.len()) };
        assert_eq!(refused, berth_result::InvalidArgument);
        assert!(out.body.is_none());
    }
}
