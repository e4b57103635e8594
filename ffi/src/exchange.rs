//! `berth_exchange`: one HTTP request and its response, streamed in both directions.
//!
//! ```text
//!   new ──add_header*──▶ write* ──▶ finish ──▶ status / header* ──▶ read* (0 bytes = end)
//!       (Building)      (Sending)            (Responded)
//! ```
//!
//! The request runs on the registry's worker threads from the first `write` (or `finish`);
//! body chunks reach it through a small bounded channel, so a host that writes faster than
//! storage takes the data blocks in `write`, and memory stays bounded whatever the size of
//! the body. The response body is pulled from storage chunk by chunk as the host reads.

use std::ffi::{CString, c_char};
use std::sync::Arc;

use berth::storage::ByteStream;
use berth::{Body, BodyError, Method, RequestHead, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::registry::{Inner, berth_registry};
use crate::result::{
    Failure, berth_result, guard, guard_void, lossy_str_arg, optional_lossy_str_arg, write_out,
};

/// Request body chunks in flight between the host and the handler.
const BODY_CHANNEL_CHUNKS: usize = 4;

/// One request/response exchange with a registry: `new`, `add_header`*, `write`*,
/// `finish`, then `status`, `header`* and `read`* until it returns 0 bytes. A call out of
/// order returns `BERTH_RESULT_WRONG_STATE`.
#[derive(Debug)]
pub struct berth_exchange {
    inner: Arc<Inner>,
    state: State,
}

enum State {
    Building(RequestHead),
    Sending {
        body: mpsc::Sender<Result<Bytes, BodyError>>,
        response: oneshot::Receiver<Response>,
    },
    Responded(Responded),
    /// After a failure that leaves nothing to do but free the exchange.
    Broken,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Building(_) => "Building",
            Self::Sending { .. } => "Sending",
            Self::Responded(_) => "Responded",
            Self::Broken => "Broken",
        })
    }
}

struct Responded {
    status: u16,
    headers: Vec<(CString, CString)>,
    /// The rest of the body after `current`.
    stream: Option<ByteStream>,
    /// The chunk being read.
    current: Bytes,
    /// The chunk `berth_exchange_next_chunk` lent, kept alive until the next call.
    lent: Option<Bytes>,
}

impl Responded {
    fn new(response: Response) -> Self {
        let headers = response
            .headers
            .into_iter()
            .filter_map(|(name, value)| Some((CString::new(name).ok()?, CString::new(value).ok()?)))
            .collect();
        let (current, stream) = match response.body {
            Body::Empty => (Bytes::new(), None),
            Body::Full(bytes) => (bytes, None),
            Body::Stream(stream) => (Bytes::new(), Some(stream)),
        };
        Self {
            status: response.status,
            headers,
            stream,
            current,
            lent: None,
        }
    }

    /// Makes `current` the next non-empty chunk, unless the body has ended.
    fn refill(&mut self, inner: &Inner) -> Result<(), Failure> {
        while self.current.is_empty() {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(());
            };
            match inner.runtime.block_on(stream.next()) {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => {
                    self.stream = None;
                    return Err(Failure::new(berth_result::BodyFailed, e.to_string()));
                }
                None => self.stream = None,
            }
        }
        Ok(())
    }
}

impl berth_exchange {
    /// Starts the request on the worker threads, leaving the exchange in `Sending`; does
    /// nothing once it has started.
    fn start(&mut self) {
        if !matches!(self.state, State::Building(_)) {
            return;
        }
        let State::Building(head) = std::mem::replace(&mut self.state, State::Broken) else {
            return;
        };
        let (body_sender, body_receiver) = mpsc::channel(BODY_CHANNEL_CHUNKS);
        let (response_sender, response_receiver) = oneshot::channel();
        let body = futures_util::stream::unfold(body_receiver, |mut receiver| async move {
            receiver.recv().await.map(|chunk| (chunk, receiver))
        });
        let registry = Arc::clone(&self.inner.registry);
        self.inner.runtime.spawn(async move {
            let response = registry.handle(head, Box::pin(body)).await;
            let _ = response_sender.send(response);
        });
        self.state = State::Sending {
            body: body_sender,
            response: response_receiver,
        };
    }
}

impl Drop for berth_exchange {
    fn drop(&mut self) {
        // A body that stops without `finish` was cut off: say so, rather than let the
        // handler take what arrived for the whole body.
        if let State::Sending { body, .. } = &self.state {
            let _ = body.blocking_send(Err("the request body was cut off".into()));
        }
    }
}

/// The exchange behind a pointer the host passed.
///
/// # Safety
/// `exchange` is NULL or a live exchange.
unsafe fn exchange_mut<'a>(
    exchange: *mut berth_exchange,
) -> Result<&'a mut berth_exchange, Failure> {
    // SAFETY: forwarded from the caller.
    unsafe { exchange.as_mut() }.ok_or_else(|| Failure::null("exchange"))
}

/// The response of an exchange that has one.
///
/// # Safety
/// `exchange` is NULL or a live exchange.
unsafe fn responded<'a>(exchange: *const berth_exchange) -> Result<&'a Responded, Failure> {
    // SAFETY: forwarded from the caller.
    let exchange = unsafe { exchange.as_ref() }.ok_or_else(|| Failure::null("exchange"))?;
    match &exchange.state {
        State::Responded(responded) => Ok(responded),
        _ => Err(Failure::wrong_state(
            "the exchange has no response yet: call berth_exchange_finish first",
        )),
    }
}

/// Begins a request: `method` as on the request line (`GET`), `path` still
/// percent-encoded (`/v2/library/alpine/manifests/latest`), `query` the text after `?` or
/// NULL. Bytes that are not UTF-8 are decoded lossily, so that the registry answers such a
/// request as it answers any malformed one (a 4xx with a JSON body), whatever HTTP server
/// the host uses lets through.
///
/// # Safety
/// `registry` is a live registry; the strings are NUL-terminated (`query` may be NULL);
/// `out` is valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_exchange_new(
    registry: *const berth_registry,
    method: *const c_char,
    path: *const c_char,
    query: *const c_char,
    out: *mut *mut berth_exchange,
) -> berth_result {
    guard(|| {
        // SAFETY: the caller's promises cover every pointer.
        let (registry, method, path, query) = unsafe {
            (
                berth_registry::from_ptr(registry)?,
                lossy_str_arg(method, "method")?,
                lossy_str_arg(path, "path")?,
                optional_lossy_str_arg(query, "query")?,
            )
        };
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let mut head = RequestHead::new(Method::parse(&method), path);
        head.query = query;
        let exchange = Box::new(berth_exchange {
            inner: Arc::clone(&registry.inner),
            state: State::Building(head),
        });
        // SAFETY: the caller promises `out` is valid.
        unsafe { write_out(out, Box::into_raw(exchange), "out") }
    })
}

/// Adds a request header (before the first `write` or `finish`). A name or value that is
/// not UTF-8 is decoded lossily, so that the registry refuses a malformed header (a
/// `Content-Range` of other bytes, say) as it refuses any other malformed value.
///
/// # Safety
/// `exchange` is a live exchange; `name` and `value` are NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_exchange_add_header(
    exchange: *mut berth_exchange,
    name: *const c_char,
    value: *const c_char,
) -> berth_result {
    guard(|| {
        // SAFETY: the caller's promises cover every pointer.
        let (exchange, name, value) = unsafe {
            (
                exchange_mut(exchange)?,
                lossy_str_arg(name, "name")?,
                lossy_str_arg(value, "value")?,
            )
        };
        match &mut exchange.state {
            State::Building(head) => {
                head.headers.push((name, value));
                Ok(())
            }
            _ => Err(Failure::wrong_state(
                "headers must be added before the body is written",
            )),
        }
    })
}

/// Passes the next `len` bytes of the request body (copied; the call may block while the
/// registry catches up). Bytes the registry no longer wants (it has answered already) are
/// discarded.
///
/// # Safety
/// `exchange` is a live exchange; `data` holds `len` readable bytes (NULL if `len` is 0).
/// Not to be called from a thread of an async runtime.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_exchange_write(
    exchange: *mut berth_exchange,
    data: *const u8,
    len: usize,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let exchange = unsafe { exchange_mut(exchange) }?;
        if len > 0 && data.is_null() {
            return Err(Failure::null("data"));
        }
        exchange.start();
        let State::Sending { body, .. } = &exchange.state else {
            return Err(Failure::wrong_state(
                "the request body is finished: no more writes",
            ));
        };
        if len > 0 {
            // SAFETY: the caller promises `data` holds `len` readable bytes.
            let chunk = Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(data, len) });
            // An error means the handler has answered and dropped the body: discard.
            let _ = body.blocking_send(Ok(chunk));
        }
        Ok(())
    })
}

/// Ends the request body and waits for the response head (status and headers).
///
/// # Safety
/// `exchange` is a live exchange. Not to be called from a thread of an async runtime.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_exchange_finish(exchange: *mut berth_exchange) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let exchange = unsafe { exchange_mut(exchange) }?;
        exchange.start();
        if !matches!(exchange.state, State::Sending { .. }) {
            return Err(Failure::wrong_state("the exchange is finished already"));
        }
        let State::Sending { body, response } =
            std::mem::replace(&mut exchange.state, State::Broken)
        else {
            return Err(Failure::wrong_state("the exchange is finished already"));
        };
        drop(body);
        let response = response.blocking_recv().map_err(|_| {
            Failure::new(
                berth_result::Panic,
                "the request handler stopped without a response",
            )
        })?;
        exchange.state = State::Responded(Responded::new(response));
        Ok(())
    })
}

/// The response status.
///
/// # Safety
/// `exchange` is a live exchange; `out_status` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_exchange_status(
    exchange: *const berth_exchange,
    out_status: *mut u16,
) -> berth_result {
    guard(|| {
        // SAFETY: the caller's promises cover both pointers.
        unsafe { write_out(out_status, responded(exchange)?.status, "out_status") }
    })
}

/// How many response headers there are.
///
/// # Safety
/// `exchange` is a live exchange; `out_count` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_exchange_header_count(
    exchange: *const berth_exchange,
    out_count: *mut usize,
) -> berth_result {
    guard(|| {
        // SAFETY: the caller's promises cover both pointers.
        unsafe { write_out(out_count, responded(exchange)?.headers.len(), "out_count") }
    })
}

/// Response header `index` (from 0): name and value, NUL-terminated, valid until the
/// exchange is freed. A `Content-Length` header is present whenever the body's length is
/// known (for HEAD, the length of the body a GET would return).
///
/// # Safety
/// `exchange` is a live exchange; the out-parameters are valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_exchange_header(
    exchange: *const berth_exchange,
    index: usize,
    out_name: *mut *const c_char,
    out_value: *mut *const c_char,
) -> berth_result {
    guard(|| {
        // SAFETY: the caller's promises cover every pointer.
        unsafe {
            let (name, value) = responded(exchange)?.headers.get(index).ok_or_else(|| {
                Failure::new(berth_result::InvalidArgument, format!("no header {index}"))
            })?;
            if out_name.is_null() || out_value.is_null() {
                return Err(Failure::null("out_name or out_value"));
            }
            write_out(out_name, name.as_ptr(), "out_name")?;
            write_out(out_value, value.as_ptr(), "out_value")
        }
    })
}

/// Copies up to `capacity` bytes of the response body into `buffer` and sets `*out_len`;
/// 0 bytes means the body has ended. Blocks while storage produces the next chunk.
///
/// # Safety
/// `exchange` is a live exchange; `buffer` is valid for `capacity` bytes of writes;
/// `out_len` is valid for a write. Not to be called from a thread of an async runtime.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_exchange_read(
    exchange: *mut berth_exchange,
    buffer: *mut u8,
    capacity: usize,
    out_len: *mut usize,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let exchange = unsafe { exchange_mut(exchange) }?;
        if buffer.is_null() || out_len.is_null() {
            return Err(Failure::null("buffer or out_len"));
        }
        let inner = Arc::clone(&exchange.inner);
        let State::Responded(responded) = &mut exchange.state else {
            return Err(Failure::wrong_state(
                "the exchange has no response yet: call berth_exchange_finish first",
            ));
        };
        responded.refill(&inner)?;
        let n = responded.current.len().min(capacity);
        // SAFETY: `buffer` holds `capacity >= n` writable bytes; `current` holds `n`.
        unsafe { std::ptr::copy_nonoverlapping(responded.current.as_ptr(), buffer, n) };
        let _ = responded.current.split_to(n);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_len, n, "out_len") }
    })
}

/// Lends the next chunk of the response body without copying: `*out_data` and `*out_len`
/// stay valid until the next call on this exchange; 0 bytes means the body has ended.
///
/// # Safety
/// As for `berth_exchange_read`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_exchange_next_chunk(
    exchange: *mut berth_exchange,
    out_data: *mut *const u8,
    out_len: *mut usize,
) -> berth_result {
    guard(|| {
        // SAFETY: forwarded from the caller.
        let exchange = unsafe { exchange_mut(exchange) }?;
        if out_data.is_null() || out_len.is_null() {
            return Err(Failure::null("out_data or out_len"));
        }
        let inner = Arc::clone(&exchange.inner);
        let State::Responded(responded) = &mut exchange.state else {
            return Err(Failure::wrong_state(
                "the exchange has no response yet: call berth_exchange_finish first",
            ));
        };
        // The chunk lent last time is done with.
        responded.lent = None;
        responded.refill(&inner)?;
        let chunk = std::mem::take(&mut responded.current);
        // SAFETY: both out-parameters were checked non-NULL.
        unsafe {
            write_out(out_data, chunk.as_ptr(), "out_data")?;
            write_out(out_len, chunk.len(), "out_len")?;
        }
        responded.lent = Some(chunk);
        Ok(())
    })
}

/// Releases an exchange (NULL is fine). Freeing one whose body was not finished tells the
/// registry the body was cut off, so nothing half-sent is kept.
///
/// # Safety
/// `exchange` is NULL or from `berth_exchange_new`, and not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn berth_exchange_free(exchange: *mut berth_exchange) {
    guard_void(|| {
        if !exchange.is_null() {
            // SAFETY: the caller hands back ownership of a pointer from `berth_exchange_new`.
            drop(unsafe { Box::from_raw(exchange) });
        }
    });
}
