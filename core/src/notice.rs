//! What a registry has to tell its operator that no response carries. A host passes notices
//! to its log ([`Options::notices`](crate::Options::notices)): `berth serve` logs them as
//! warnings, the C library hands them to a callback, the WebAssembly package to the console.

use std::fmt;
use std::sync::Arc;

/// Something an operator should know about: the registry answered, but not with everything.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// Rebuilding an index (the catalog, or a repository's tag list, from a root an older
    /// berth or registry:2 wrote) left out an entry it could not index. The listing answered
    /// without it; the index stays incomplete, and the next listing tries the entry again.
    Unindexed {
        /// The repository whose tag index it is; `None` for the catalog.
        repository: Option<String>,
        /// The entry left out: a repository folder or a tag.
        entry: String,
        /// Why.
        reason: String,
    },
    /// A token issuer's key set could not be fetched, or was no key set: tokens signed by
    /// keys it may have rotated in are refused until a later fetch succeeds; the keys
    /// fetched before stay.
    KeySetUnavailable {
        /// Where the key set lives.
        url: String,
        /// Why.
        reason: String,
    },
    /// A pull-through cache's upstream failed a request: the cached copy was served with a
    /// warning (`stale`), or the client got an error.
    UpstreamUnavailable {
        /// The cached repository (its local name).
        repository: String,
        /// Why.
        reason: String,
        /// Whether the cached copy stood in.
        stale: bool,
    },
    /// A readiness probe (`/readyz`) found the storage failing or silent: the registry
    /// answered 503, so that load balancers send its traffic elsewhere.
    StorageUnready {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unindexed {
                repository: None,
                entry,
                reason,
            } => write!(
                f,
                "the catalog left out the repository folder {entry:?}, which it cannot index: \
                 {reason}"
            ),
            Self::Unindexed {
                repository: Some(repository),
                entry,
                reason,
            } => write!(
                f,
                "the tag list of {repository} left out the tag {entry:?}, which it cannot \
                 index: {reason}"
            ),
            Self::KeySetUnavailable { url, reason } => write!(
                f,
                "the key set at {url} could not be fetched ({reason}); the keys fetched \
                 before stay"
            ),
            Self::UpstreamUnavailable {
                repository,
                reason,
                stale,
            } => write!(
                f,
                "the upstream of {repository} failed ({reason}); {}",
                if *stale {
                    "its cached copy was served"
                } else {
                    "the request failed"
                }
            ),
            Self::StorageUnready { reason } => {
                write!(f, "readiness probe: {reason}; answered 503")
            }
        }
    }
}

/// Where a registry sends its notices.
#[cfg(not(target_arch = "wasm32"))]
pub type NoticeSink = Arc<dyn Fn(&Notice) + Send + Sync>;
/// Where a registry sends its notices (in WebAssembly, a JavaScript function will do).
#[cfg(target_arch = "wasm32")]
pub type NoticeSink = Arc<dyn Fn(&Notice)>;
