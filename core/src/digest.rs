//! Content digests and the incremental hasher behind every upload.
//!
//! The grammar, from the OCI image spec (`descriptor.md#digests`):
//!
//! ```text
//! digest                ::= algorithm ":" encoded
//! algorithm             ::= algorithm-component (algorithm-separator algorithm-component)*
//! algorithm-component   ::= [a-z0-9]+
//! algorithm-separator   ::= [+._-]
//! encoded               ::= [a-zA-Z0-9=_-]+
//! ```
//!
//! berth verifies `sha256` (64 lower-case hex) and `sha512` (128 lower-case hex); a digest that
//! is grammatical but uses another algorithm is [`DigestError::UnsupportedAlgorithm`].

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm berth can compute and verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the default of every OCI client.
    Sha256,
    /// SHA-512, selectable with `?digest-algorithm=sha512`.
    Sha512,
}

impl Algorithm {
    /// The name as it appears before the `:` of a digest.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded value.
    pub fn encoded_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }

    /// Parses an algorithm name (`sha256`, `sha512`).
    pub fn parse(name: &str) -> Result<Self, DigestError> {
        match name {
            "sha256" => Ok(Self::Sha256),
            "sha512" => Ok(Self::Sha512),
            other if is_algorithm_grammar(other) => Err(DigestError::UnsupportedAlgorithm),
            _ => Err(DigestError::Malformed),
        }
    }

    /// The digest of `bytes` in one call.
    pub fn digest(self, bytes: &[u8]) -> Digest {
        let mut hasher = Hasher::new(self);
        hasher.update(bytes);
        hasher.finish()
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a string is not a digest berth accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestError {
    /// Not `algorithm:encoded`, or the encoded part does not fit the algorithm.
    Malformed,
    /// Grammatical, but an algorithm berth does not implement.
    UnsupportedAlgorithm,
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str(
                "a digest is `sha256:` followed by 64 lower-case hex digits (or `sha512:` and 128)",
            ),
            Self::UnsupportedAlgorithm => {
                f.write_str("unsupported digest algorithm: use sha256 or sha512")
            }
        }
    }
}

impl std::error::Error for DigestError {}

/// A parsed, validated digest such as `sha256:e3b0…b855`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// The whole `algorithm:hex` text, kept so it can be borrowed as `&str`.
    text: String,
}

impl Digest {
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lower-case hex value after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.name().len() + 1..]
    }

    /// The digest as `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Self, DigestError> {
        let (algorithm, encoded) = text.split_once(':').ok_or(DigestError::Malformed)?;
        if encoded.is_empty()
            || !encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
        {
            return Err(DigestError::Malformed);
        }
        let algorithm = Algorithm::parse(algorithm)?;
        let is_lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if encoded.len() != algorithm.encoded_len() || !encoded.bytes().all(is_lower_hex) {
            return Err(DigestError::Malformed);
        }
        Ok(Self {
            algorithm,
            text: text.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn is_algorithm_grammar(name: &str) -> bool {
    !name.is_empty()
        && name.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// An incremental hasher whose midstate can be saved and restored, so that a different process
/// (or isolate) can continue an upload where another stopped, without re-reading any byte.
#[derive(Clone)]
pub struct Hasher {
    state: HasherState,
}

#[derive(Clone)]
enum HasherState {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// The format tag of a saved midstate. sha2 only promises the serialized layout within one
/// minor version, so a state saved by another layout is refused instead of misread.
const MIDSTATE_FORMAT: &str = "sha2-0.11";

impl Hasher {
    /// A hasher for `algorithm` with nothing hashed yet.
    pub fn new(algorithm: Algorithm) -> Self {
        let state = match algorithm {
            Algorithm::Sha256 => HasherState::Sha256(Sha256::new()),
            Algorithm::Sha512 => HasherState::Sha512(Sha512::new()),
        };
        Self { state }
    }

    /// The algorithm being computed.
    pub fn algorithm(&self) -> Algorithm {
        match self.state {
            HasherState::Sha256(_) => Algorithm::Sha256,
            HasherState::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            HasherState::Sha256(h) => h.update(bytes),
            HasherState::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far (the hasher itself is left as it was).
    pub fn finish(&self) -> Digest {
        let algorithm = self.algorithm();
        let bytes = match &self.state {
            HasherState::Sha256(h) => h.clone().finalize().to_vec(),
            HasherState::Sha512(h) => h.clone().finalize().to_vec(),
        };
        let mut text = String::with_capacity(algorithm.name().len() + 1 + bytes.len() * 2);
        text.push_str(algorithm.name());
        text.push(':');
        crate::hex::encode_into(&bytes, &mut text);
        Digest { algorithm, text }
    }

    /// The midstate as text: `sha2-0.11:<algorithm>:<hex>`.
    pub fn save(&self) -> String {
        let raw = match &self.state {
            HasherState::Sha256(h) => h.serialize().to_vec(),
            HasherState::Sha512(h) => h.serialize().to_vec(),
        };
        let mut text = format!("{MIDSTATE_FORMAT}:{}:", self.algorithm());
        crate::hex::encode_into(&raw, &mut text);
        text
    }

    /// Restores a midstate written by [`Hasher::save`].
    pub fn restore(saved: &str) -> Result<Self, MidstateError> {
        let mut fields = saved.splitn(3, ':');
        let (Some(format), Some(algorithm), Some(hex)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(MidstateError);
        };
        if format != MIDSTATE_FORMAT {
            return Err(MidstateError);
        }
        let raw = crate::hex::decode(hex).ok_or(MidstateError)?;
        let state = match Algorithm::parse(algorithm).map_err(|_| MidstateError)? {
            Algorithm::Sha256 => HasherState::Sha256(
                Sha256::deserialize(raw.as_slice().try_into().map_err(|_| MidstateError)?)
                    .map_err(|_| MidstateError)?,
            ),
            Algorithm::Sha512 => HasherState::Sha512(
                Sha512::deserialize(raw.as_slice().try_into().map_err(|_| MidstateError)?)
                    .map_err(|_| MidstateError)?,
            ),
        };
        Ok(Self { state })
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("algorithm", &self.algorithm())
            .finish()
    }
}

/// A saved hash midstate that this build cannot continue (corrupt, or another format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MidstateError;

impl fmt::Display for MidstateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the saved hash state is corrupt or from an incompatible berth version")
    }
}

impl std::error::Error for MidstateError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_sha256() {
        let digest: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(digest.algorithm(), Algorithm::Sha256);
        assert_eq!(digest.hex().len(), 64);
        assert_eq!(digest.to_string(), EMPTY_SHA256);
        assert_eq!(Algorithm::Sha256.digest(b""), digest);
    }

    #[test]
    fn sha512_of_empty() {
        let digest = Algorithm::Sha512.digest(b"");
        assert!(digest.as_str().starts_with("sha512:cf83e1357eefb8bd"));
        assert_eq!(digest.as_str().parse::<Digest>().unwrap(), digest);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:abc",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
        ] {
            assert_eq!(
                bad.parse::<Digest>(),
                Err(DigestError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn midstate_round_trip_continues_the_hash() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut first = Hasher::new(algorithm);
            first.update(b"hello, ");
            let saved = first.save();
            let mut resumed = Hasher::restore(&saved).unwrap();
            resumed.update(b"world");
            assert_eq!(resumed.finish(), algorithm.digest(b"hello, world"));
        }
    }

    #[test]
    fn refuses_foreign_midstate() {
        assert_eq!(
            Hasher::restore("sha2-0.10:sha256:00").unwrap_err(),
            MidstateError
        );
        assert_eq!(
            Hasher::restore("sha2-0.11:sha256:zz").unwrap_err(),
            MidstateError
        );
        assert_eq!(
            Hasher::restore("sha2-0.11:sha256:00").unwrap_err(),
            MidstateError
        );
    }

    proptest! {
        #[test]
        fn any_string_parses_or_errs(text in ".{0,200}") {
            let _ = text.parse::<Digest>();
        }

        #[test]
        fn valid_digests_round_trip(hex in "[a-f0-9]{64}") {
            let text = format!("sha256:{hex}");
            let digest: Digest = text.parse().unwrap();
            prop_assert_eq!(digest.as_str(), text.as_str());
            prop_assert_eq!(digest.hex(), hex.as_str());
        }

        #[test]
        fn split_hashing_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..600) {
            let cut = cut.min(data.len());
            let mut hasher = Hasher::new(Algorithm::Sha256);
            hasher.update(&data[..cut]);
            let mut hasher = Hasher::restore(&hasher.save()).unwrap();
            hasher.update(&data[cut..]);
            prop_assert_eq!(hasher.finish(), Algorithm::Sha256.digest(&data));
        }
    }
}
