//! The response the registry hands back to its host: status, headers, and a body that is
//! empty, a few bytes, or a stream of chunks.

use std::fmt;

use bytes::Bytes;

use crate::error::Error;
use crate::stream::ByteStream;

/// A response body.
pub enum Body {
    /// No body (and, for HEAD, a `Content-Length` that describes the GET body).
    Empty,
    /// A small body held in memory (JSON documents, manifests).
    Full(Bytes),
    /// A blob, streamed from storage.
    Stream(ByteStream),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("Empty"),
            Self::Full(bytes) => write!(f, "Full({} bytes)", bytes.len()),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A response: the host writes the status and headers as they are, then the body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers, in order. `Content-Length` is present whenever the length is known.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Body,
}

/// Every response carries this header (`spec.md#determining-support`).
pub const API_VERSION_HEADER: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");

impl Response {
    /// A response with no body and no headers but the API version.
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: vec![(API_VERSION_HEADER.0, API_VERSION_HEADER.1.to_owned())],
            body: Body::Empty,
        }
    }

    /// A JSON document.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self::empty(status).with_full_body("application/json", body.into())
    }

    /// The error's JSON body with its status.
    pub fn error(error: &Error) -> Self {
        Self::json(error.status(), error.to_json())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets a body held in memory, with its type and length.
    pub fn with_full_body(self, content_type: &str, body: Bytes) -> Self {
        let mut response = self
            .with_header("Content-Type", content_type)
            .with_header("Content-Length", body.len().to_string());
        response.body = Body::Full(body);
        response
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Drops the body but keeps the headers that describe it, for HEAD.
    pub fn without_body(mut self) -> Self {
        self.body = Body::Empty;
        self
    }
}
