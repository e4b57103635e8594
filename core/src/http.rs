//! The HTTP vocabulary the driver speaks, with no storage in it: reading a request's query,
//! length and digest parameters, and building the heads of the answers that say where
//! something is (a blob's `Location`, an upload's `Location` and `Range`, a page's `Link`).

use crate::digest::Digest;
use crate::error::{Error, ErrorCode};
use crate::reference::RepositoryName;
use crate::request::{RequestHead, percent_encode};
use crate::response::Response;
use crate::upload::UploadId;
use crate::upload::UploadSession;

/// A digest from a request (a path or a query parameter): `DIGEST_INVALID` when malformed.
pub(crate) fn parse_digest(text: &str) -> Result<Digest, Error> {
    text.parse().map_err(|e: crate::digest::DigestError| {
        Error::new(ErrorCode::DigestInvalid, format!("{text:?}: {e}"))
    })
}

/// The request's `Content-Length`, when it is a byte count.
pub(crate) fn content_length(head: &RequestHead) -> Option<u64> {
    head.header("Content-Length")
        .and_then(|v| v.trim().parse().ok())
}

/// The value of a query parameter.
pub(crate) fn query(head: &RequestHead, name: &str) -> Option<String> {
    head.query_pairs()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The page size `n` of a listing, if asked for.
pub(crate) fn page_size(head: &RequestHead) -> Result<Option<usize>, Error> {
    let Some(n) = query(head, "n") else {
        return Ok(None);
    };
    n.parse().map(Some).map_err(|_| {
        Error::new(
            ErrorCode::Unsupported,
            format!("n={n:?} is not a non-negative integer: ask for a page of n entries"),
        )
        .with_status(400)
    })
}

/// The `Link` header of a listing page that has more after it: the same listing from `last`.
pub(crate) fn next_page(path: &str, n: usize, last: &str) -> String {
    format!("<{path}?n={n}&last={}>; rel=\"next\"", percent_encode(last))
}

/// 201 for a blob now in `name`.
pub(crate) fn created(name: &RepositoryName, digest: &Digest) -> Response {
    Response::empty(201)
        .with_header("Location", format!("/v2/{name}/blobs/{digest}"))
        .with_header("Docker-Content-Digest", digest.as_str())
        .with_header("Content-Length", "0")
}

/// An empty answer with `status` that tells the client where its upload stands.
pub(crate) fn in_progress(
    status: u16,
    name: &RepositoryName,
    id: &UploadId,
    session: &UploadSession,
) -> Response {
    with_progress(Response::empty(status), name, id, session).with_header("Content-Length", "0")
}

/// The headers that tell a client where an upload stands.
pub(crate) fn with_progress(
    response: Response,
    name: &RepositoryName,
    id: &UploadId,
    session: &UploadSession,
) -> Response {
    response
        .with_header("Location", upload_location(name, id))
        .with_header("Range", session.range())
        .with_header("Docker-Upload-UUID", id.as_str())
}

fn upload_location(name: &RepositoryName, id: &UploadId) -> String {
    format!("/v2/{name}/blobs/uploads/{}", id.as_str())
}
