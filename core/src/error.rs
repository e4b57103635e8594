//! Protocol errors: each maps one to one onto an OCI error code and carries its HTTP status.
//!
//! The codes are exactly those of the distribution spec (`spec.md#error-codes`), which says
//! a body's code MUST be one of them; [`ErrorCode::Unknown`] is sent only with a 500. An
//! out-of-order or malformed chunk range is `BLOB_UPLOAD_INVALID` with 416, an unsatisfiable
//! blob range `SIZE_INVALID` with 416, a malformed `n` `UNSUPPORTED` with 400
//! (docs/decisions/2026-12-06-error-codes.md says why).

use std::fmt;

use serde::Serialize;

/// An OCI error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The blob is not known to the repository.
    BlobUnknown,
    /// The upload failed or was sent out of order.
    BlobUploadInvalid,
    /// The upload session is not known.
    BlobUploadUnknown,
    /// The content did not match its digest, or the digest is malformed.
    DigestInvalid,
    /// A manifest references a blob the repository lacks.
    ManifestBlobUnknown,
    /// The manifest is malformed.
    ManifestInvalid,
    /// The manifest is not known to the repository.
    ManifestUnknown,
    /// The repository name is invalid.
    NameInvalid,
    /// The repository is not known.
    NameUnknown,
    /// Content length or size does not match, or is too large.
    SizeInvalid,
    /// Authentication is required.
    Unauthorized,
    /// Access to the resource is denied.
    Denied,
    /// The operation is not supported.
    Unsupported,
    /// Too many requests.
    TooManyRequests,
    /// The registry failed (its storage did); not the client's fault. Sent with 500.
    Unknown,
}

impl ErrorCode {
    /// The code as it appears in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The status the code is usually sent with; an [`Error`] may override it.
    pub fn default_status(self) -> u16 {
        match self {
            Self::BlobUnknown
            | Self::BlobUploadUnknown
            | Self::ManifestUnknown
            | Self::NameUnknown => 404,
            Self::Unauthorized => 401,
            Self::Denied => 403,
            Self::Unsupported => 405,
            Self::TooManyRequests => 429,
            Self::Unknown => 500,
            Self::BlobUploadInvalid
            | Self::DigestInvalid
            | Self::ManifestBlobUnknown
            | Self::ManifestInvalid
            | Self::NameInvalid
            | Self::SizeInvalid => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error: a code, the status to send, and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    status: u16,
    message: String,
    detail: Option<serde_json::Value>,
}

impl Error {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            status: code.default_status(),
            message: message.into(),
            detail: None,
        }
    }

    /// The same error sent with another status (413 for an oversized manifest, say).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Attaches the spec's free-form `detail`.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The OCI code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The free-form detail, if any.
    pub fn detail(&self) -> Option<&serde_json::Value> {
        self.detail.as_ref()
    }

    /// The JSON body: `{"errors":[{"code":…,"message":…,"detail":…}]}`.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            errors: [Entry<'a>; 1],
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'static str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            detail: Option<&'a serde_json::Value>,
        }
        let body = Body {
            errors: [Entry {
                code: self.code.as_str(),
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_has_the_spec_shape() {
        let error = Error::new(ErrorCode::BlobUnknown, "blob unknown to registry");
        let json: serde_json::Value = serde_json::from_slice(&error.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]})
        );
        assert_eq!(error.status(), 404);
    }

    #[test]
    fn status_override() {
        let error = Error::new(ErrorCode::SizeInvalid, "too big").with_status(413);
        assert_eq!(error.status(), 413);
        assert_eq!(error.code(), ErrorCode::SizeInvalid);
    }
}
