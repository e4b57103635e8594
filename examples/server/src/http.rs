//! hyper glue: an HTTP request becomes a `RequestHead` and a chunk stream; a berth `Response`
//! becomes an HTTP response whose body streams from storage.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use berth::{Body, Method, Registry, RequestHead, Storage};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};

pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, berth::StorageError>;

/// Serves one request.
pub(crate) async fn serve<S: Storage>(
    registry: Arc<Registry<S>>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let head = RequestHead {
        method: Method::parse(parts.method.as_str()),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        // A value that is not visible ASCII is passed on (decoded lossily) rather than
        // dropped: a malformed `Content-Range` must be refused, not taken for an absent one.
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
    };
    // Only data frames carry the body; trailers are of no interest to a registry.
    let chunks = BodyStream::new(body)
        .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) })
        .map_err(|e| Box::new(e) as berth::BodyError);
    // The registry fetches key sets its issuers rotated, and holds back failed logins.
    let response = registry.handle(head, Box::pin(chunks)).await;

    tracing::info!(
        method = %parts.method,
        path = %parts.uri,
        status = response.status,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    let mut builder = hyper::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(*name, value);
    }
    let body = match response.body {
        Body::Empty => Empty::new().map_err(|never| match never {}).boxed_unsync(),
        Body::Full(bytes) => Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
        Body::Stream(stream) => BodyExt::boxed_unsync(StreamBody::new(stream.map_ok(Frame::data))),
    };
    Ok(builder.body(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "response headers were not valid HTTP");
        let mut fallback =
            hyper::Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
        *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    }))
}
