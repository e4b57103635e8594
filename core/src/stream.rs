//! Bytes on their way between storage and a client: the stream a storage reads and a response
//! carries, and the storage failure that can end it. A leaf: the pure modules (responses,
//! the upload state machine) name these types without depending on the storage contract.

use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;

/// An object's body, as a stream of chunks.
#[cfg(not(target_arch = "wasm32"))]
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;
/// An object's body, as a stream of chunks.
#[cfg(target_arch = "wasm32")]
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>>>>;

/// A storage failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum StorageError {
    /// No object at the key (or no parts upload with that id).
    NotFound,
    /// [`PutMode::Create`](crate::storage::PutMode::Create) found the key taken.
    AlreadyExists,
    /// [`PutMode::Update`](crate::storage::PutMode::Update) found another version.
    PreconditionFailed,
    /// The backend cannot do this operation.
    Unsupported(&'static str),
    /// The object is larger than the caller would read (`StorageExt::read_small`): not the
    /// small document it expected.
    TooLarge {
        /// The object's size, when known before reading it.
        size: Option<u64>,
        /// The most the caller would read.
        limit: u64,
    },
    /// Anything else the backend reports: IO, network, service errors.
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// Wraps a backend's own error.
    pub fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend(error.into())
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("object not found"),
            Self::AlreadyExists => f.write_str("object already exists"),
            Self::PreconditionFailed => f.write_str("object changed since it was read"),
            Self::Unsupported(what) => write!(f, "storage backend does not support {what}"),
            Self::TooLarge {
                size: Some(size),
                limit,
            } => write!(f, "object is {size} bytes, more than the {limit} expected"),
            Self::TooLarge { size: None, limit } => {
                write!(f, "object grew past the {limit} bytes expected")
            }
            Self::Backend(e) => write!(f, "storage backend error: {e}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Backend(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}
