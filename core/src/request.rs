//! The request head a host hands to the registry: method, path, query and headers.

use std::fmt;

/// The HTTP methods the registry distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// Any other method; every route answers it with 405.
    Other,
}

impl Method {
    /// Parses a method name as it appears on the request line.
    pub fn parse(name: &str) -> Self {
        match name {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Other => "OTHER",
        })
    }
}

/// A request without its body.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The path, still percent-encoded, without the query (`/v2/library/alpine/tags/list`).
    pub path: String,
    /// The raw query string after `?`, if any.
    pub query: Option<String>,
    /// Header names and values as received.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// A head with no query and no headers.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: None,
            headers: Vec::new(),
        }
    }

    /// Splits a request target (`/v2/x/tags/list?n=1`) into path and query.
    pub fn from_target(method: Method, target: &str) -> Self {
        match target.split_once('?') {
            Some((path, query)) => Self::new(method, path).with_query(query),
            None => Self::new(method, target),
        }
    }

    /// Sets the query string.
    pub fn with_query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every `(name, decoded value)` pair of the query, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let Some(query) = &self.query else {
            return Vec::new();
        };
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            })
            .collect()
    }
}

/// Decodes `%XX` escapes. `+` stays `+`: media types such as `application/vnd.x+json` appear
/// unescaped in `artifactType` filters. Invalid escapes are kept literally.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes what may not stand in a query value (for `Link` headers and `Location`s).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/' | b':') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Why a host could not deliver the request body (a dropped connection, say).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request body, as a stream of chunks.
#[cfg(not(target_arch = "wasm32"))]
pub type RequestBody =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<bytes::Bytes, BodyError>> + Send>>;
/// A request body, as a stream of chunks.
#[cfg(target_arch = "wasm32")]
pub type RequestBody =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<bytes::Bytes, BodyError>>>>;

/// A body with no bytes.
pub fn empty_body() -> RequestBody {
    Box::pin(futures_util::stream::empty())
}

/// A body of one chunk.
pub fn full_body(bytes: impl Into<bytes::Bytes>) -> RequestBody {
    let bytes = bytes.into();
    Box::pin(futures_util::stream::iter([Ok(bytes)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode() {
        let head = RequestHead::from_target(
            Method::Get,
            "/v2/x/referrers/d?artifactType=a%2Fb+json&n=&x",
        );
        assert_eq!(
            head.query_pairs(),
            vec![
                ("artifactType".into(), "a/b+json".into()),
                ("n".into(), "".into()),
                ("x".into(), "".into())
            ]
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("sha256%3Aab"), "sha256:ab");
    }

    #[test]
    fn headers_are_case_insensitive() {
        let head = RequestHead::new(Method::Get, "/v2/").with_header("Content-Type", "a");
        assert_eq!(head.header("content-type"), Some("a"));
    }
}
