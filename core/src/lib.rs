//! berth: an embeddable OCI Distribution registry.
//!
//! The crate is a sans-IO implementation of the server side of the OCI Distribution Spec
//! (manifests, tags, referrers, blob uploads) over an abstract async [`Storage`] trait.
//!
//! - The **pure layer** — [`Digest`], [`RepositoryName`], [`Reference`], [`Manifest`],
//!   [`UploadSession`], [`Route`], [`Error`] — parses and decides, with no IO, clock or
//!   randomness.
//! - The **driver**, [`Registry`], is the only code that awaits storage: a host hands it a
//!   [`RequestHead`] and a body stream and gets a [`Response`] back.
//! - **Storage**: the [`Storage`] contract, [`MemoryStorage`], [`FsStorage`] (feature `fs`),
//!   and the [`storage::conformance`] suite every backend runs.
//!
//! ```
//! # async fn demo() {
//! use std::sync::Arc;
//! use berth::{MemoryStorage, Method, Options, Registry, RequestHead, empty_body};
//!
//! let ids = Arc::new(|| "session-1".to_owned());
//! let clock = Arc::new(|| 0);
//! let registry = Registry::new(MemoryStorage::new(), Options::new(ids, clock));
//! let response = registry.handle(RequestHead::new(Method::Get, "/v2/"), empty_body()).await;
//! assert_eq!(response.status, 200);
//! # }
//! ```
#![forbid(unsafe_code)]

mod access;
pub mod auth;
mod digest;
mod error;
mod hex;
mod http;
mod ids;
mod layout;
mod manifest;
mod notice;
pub mod offload;
pub mod proxy;
pub mod quota;
mod range;
mod reference;
mod registry;
mod request;
mod response;
pub mod retention;
mod routes;
pub mod storage;
mod stream;
#[cfg(feature = "system")]
pub mod system;
#[cfg(feature = "testing")]
pub mod testing;
mod upload;

pub use access::{
    AccessPolicy, Action, AllowAll, Decision, KeySetFetcher, KeySetSource, ReadOnly, ReadOnlyOver,
};
pub use digest::{Algorithm, Digest, DigestError, Hasher, MidstateError};
pub use error::{Error, ErrorCode};
pub use manifest::{
    DEFAULT_MANIFEST_LIMIT, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, Manifest,
    ManifestKind, OCI_INDEX, OCI_MANIFEST,
};
pub use notice::{Notice, NoticeSink};
pub use offload::Offload;
pub use range::{
    ByteRange, ContentRange, MAX_RANGES, Multipart, RangeError, RangePlan, plan_ranges,
};
pub use reference::{
    MAX_NAME_COMPONENT_LEN, MAX_NAME_LEN, NameError, Reference, ReferenceError, RepositoryName,
    Tag, TagError,
};
#[cfg(feature = "fs")]
pub use registry::tokio_timer;
pub use registry::{
    CLAIM_SECONDS, Clock, Collection, CollectionReport, DEBUG_HEALTH_PATH, DEFAULT_GRACE_SECONDS,
    DEFAULT_PART_SIZE, HEALTH_PATH, IdSource, LEASE_SECONDS, MirrorReport, NamespaceUsage, Options,
    Pause, QuotaUsage, READY_PATH, Registry, Scrub, ScrubReport, TOKEN_KEYS_PATH, TOKEN_PATH,
    Usage,
};
pub use request::{BodyError, Method, RequestBody, RequestHead, empty_body, full_body};
pub use response::{API_VERSION_HEADER, Body, Response};
pub use routes::Route;
#[cfg(feature = "fs")]
pub use storage::FsStorage;
pub use storage::{MemoryStorage, Storage, StorageError};
pub use upload::{
    ChunkPlan, ChunkRequest, IllegalTransition, Midstate, PartWriter, StagedTail, UploadId,
    UploadSession, WriterClaim,
};
