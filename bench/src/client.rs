//! A minimal HTTP/1.1 client over hyper: one keep-alive connection per worker, bodies
//! streamed from shared `Bytes` so the generator copies nothing it sends.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub(crate) type Body = BoxBody<Bytes, Infallible>;
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn empty() -> Body {
    Empty::new().boxed()
}

pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed()
}

/// A body streamed from the given chunks.
pub(crate) fn chunks(chunks: Vec<Bytes>) -> Body {
    let stream =
        futures_util::stream::iter(chunks).map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    BodyExt::boxed(StreamBody::new(stream))
}

/// One connection to a server.
pub(crate) struct Conn {
    sender: SendRequest<Body>,
    host: String,
    /// The `Authorization` header every request to this address carries.
    authorization: Option<String>,
}

/// Credentials by target address (`--target NAME=ADDR,authorization=VALUE`), set once at start:
/// every connection to that address sends them, whichever scenario opened it.
static CREDENTIALS: std::sync::OnceLock<std::collections::HashMap<String, String>> =
    std::sync::OnceLock::new();

/// Sets the `Authorization` header sent to each address.
pub(crate) fn set_credentials(by_address: std::collections::HashMap<String, String>) {
    let _ = CREDENTIALS.set(by_address);
}

/// How a connection reads what the server sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reads {
    /// hyper's default: reads that grow with the data waiting, up to about 400 KiB.
    Adaptive,
    /// Reads of exactly this many bytes, as a client copying a body through a fixed buffer
    /// does (Go's `io.Copy`: 32 KiB).
    Exact(usize),
    /// Reads that grow up to this many bytes.
    UpTo(usize),
}

impl Conn {
    pub(crate) async fn open(addr: &str) -> Result<Self, Error> {
        Self::open_reading(addr, Reads::Adaptive).await
    }

    pub(crate) async fn open_reading(addr: &str, reads: Reads) -> Result<Self, Error> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut builder = hyper::client::conn::http1::Builder::new();
        match reads {
            Reads::Adaptive => {}
            Reads::Exact(size) => {
                builder.read_buf_exact_size(Some(size));
            }
            Reads::UpTo(size) => {
                builder.max_buf_size(size);
            }
        }
        let (sender, connection) = builder.handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            host: addr.to_owned(),
            authorization: CREDENTIALS.get().and_then(|all| all.get(addr)).cloned(),
        })
    }

    /// Sends a request; the caller reads (or drops) the response body.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        target: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<hyper::Response<Incoming>, Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header("Host", &self.host);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let request = request.body(body)?;
        self.sender.ready().await?;
        Ok(
            tokio::time::timeout(Duration::from_secs(600), self.sender.send_request(request))
                .await??,
        )
    }

    /// Sends a request and reads the whole (small) response body.
    pub(crate) async fn call(
        &mut self,
        method: Method,
        target: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Error> {
        let response = self.send(method, target, headers, body).await?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }
}

/// The path and query of a `Location` header, which may be absolute (registry:2) or not.
pub(crate) fn location(headers: &HeaderMap) -> Result<String, Error> {
    let value = headers
        .get("location")
        .ok_or("no Location header")?
        .to_str()?;
    Ok(match value.find("://") {
        Some(scheme) => {
            let rest = &value[scheme + 3..];
            rest.find('/')
                .map_or("/".to_owned(), |i| rest[i..].to_owned())
        }
        None => value.to_owned(),
    })
}

/// `target` with `name=value` appended to its query.
pub(crate) fn with_param(target: &str, name: &str, value: &str) -> String {
    let separator = if target.contains('?') { '&' } else { '?' };
    format!("{target}{separator}{name}={value}")
}
