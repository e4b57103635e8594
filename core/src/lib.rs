#![forbid(unsafe_code)]
mod digest;
mod error;
mod hex;
mod manifest;
mod range;
mod reference;
mod request;
mod routes;
pub use digest::{Algorithm, Digest, DigestError, Hasher, MidstateError};
pub mod storage;
