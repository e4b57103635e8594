//! The clock and randomness of an ordinary native host, for hosts that have no reason to
//! supply their own (feature `system`). The protocol layer itself never reads either.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::registry::Options;

/// A random 128-bit upload id in hex, from the operating system's randomness; without it,
/// from the time, which is still unique enough within one process.
pub fn random_upload_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new Ed25519 private key (PKCS #8 PEM) from the operating system's randomness, for a
/// token service without a key of its own ([`crate::auth::stored_key`]); `None` when the
/// system has no randomness to give (a key from the clock would be guessable).
#[cfg(feature = "tokens")]
pub fn new_token_key() -> Option<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).ok()?;
    Some(crate::auth::SigningKey::from_ed25519_seed(seed).to_pem())
}

/// Seconds since the Unix epoch by the system clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Options {
    /// Defaults, with random upload ids and the system clock.
    pub fn system() -> Self {
        Self::new(Arc::new(random_upload_id), Arc::new(unix_now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_are_distinct_hex() {
        let (a, b) = (random_upload_id(), random_upload_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
