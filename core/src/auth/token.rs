//! Tokens berth issues: signed JWTs in the distribution token format, which berth, registry:2
//! and distribution v3 verify alike. The signature is made by a [`TokenSigner`] the host
//! supplies ([`SigningKey`] in native hosts, feature `tokens`).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::authenticate::TokenIssuer;
use super::jwt::{Access, Algorithm, Jwk, Jwks, SignatureCheck, Validation};

/// Signs the tokens berth issues: the host's private key.
pub trait TokenSigner: Send + Sync {
    /// The public half, with its `kid` (the RFC 7638 thumbprint).
    fn public_key(&self) -> &Jwk;
    /// The signature of `message`: 64 bytes (`r || s` for ES256).
    fn sign(&self, message: &[u8]) -> Vec<u8>;
    /// Whether `signature` is this key's signature of `message` (refresh tokens come back).
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool;
}

/// A signer's own key checking its own signatures.
struct OwnSignatures(Arc<dyn TokenSigner>);

impl SignatureCheck for OwnSignatures {
    fn verify(&self, _: Algorithm, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
        key == self.0.public_key() && self.0.verify(message, signature)
    }
}

/// How berth issues tokens.
#[derive(Clone)]
pub struct Issuing {
    /// The private key.
    pub signer: Arc<dyn TokenSigner>,
    /// The tokens' `iss`, which verifiers are configured to expect.
    pub issuer: String,
    /// This registry's service name: the tokens' `aud`.
    pub service: String,
    /// How long an access token is good for, in seconds.
    pub lifetime: u64,
    /// How long a refresh token (what `docker login` keeps) is good for, in seconds.
    pub refresh_lifetime: u64,
    /// The certificate chain of the key, each certificate base64 DER, sent as `x5c` so
    /// registry:2 2.8 (which finds keys only through certificates) can verify the tokens.
    pub certificates: Vec<String>,
}

impl std::fmt::Debug for Issuing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuing")
            .field("kid", &self.signer.public_key().kid)
            .field("issuer", &self.issuer)
            .field("service", &self.service)
            .field("lifetime", &self.lifetime)
            .field("refresh_lifetime", &self.refresh_lifetime)
            .finish_non_exhaustive()
    }
}

/// Access tokens live five minutes, as Docker Hub's and distribution's token servers issue
/// them: clients fetch a new one when it runs out.
pub const ACCESS_TOKEN_LIFETIME: u64 = 300;

/// Refresh tokens live thirty days; removing the user from the password file ends them
/// sooner.
pub const REFRESH_TOKEN_LIFETIME: u64 = 30 * 24 * 3600;

#[derive(Serialize)]
struct Header<'a> {
    typ: &'static str,
    alg: &'static str,
    kid: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    x5c: &'a [String],
}

#[derive(Serialize)]
struct Payload<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    access: Option<&'a [Access]>,
}

impl Issuing {
    /// Issuing with `signer` for `service`, named `issuer`, with the default lifetimes.
    pub fn new(signer: Arc<dyn TokenSigner>, issuer: &str, service: &str) -> Self {
        Self {
            signer,
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            lifetime: ACCESS_TOKEN_LIFETIME,
            refresh_lifetime: REFRESH_TOKEN_LIFETIME,
            certificates: Vec::new(),
        }
    }

    /// An access token for `subject` (empty for an anonymous caller) granting `access`,
    /// issued at `now`.
    pub fn access_token(&self, subject: &str, access: &[Access], now: u64) -> String {
        self.mint(&self.service, subject, Some(access), now, self.lifetime)
    }

    /// A refresh token for `subject`: good only at the token service, for new access tokens.
    pub fn refresh_token(&self, subject: &str, now: u64) -> String {
        let audience = self.refresh_audience();
        self.mint(&audience, subject, None, now, self.refresh_lifetime)
    }

    /// A refresh token's audience: not the service, so no verifier takes it for an access
    /// token.
    pub(crate) fn refresh_audience(&self) -> String {
        format!("{}#refresh", self.service)
    }

    /// How berth's own tokens are verified: its public key, its issuer name and service.
    pub fn verifier(&self) -> TokenIssuer {
        TokenIssuer {
            keys: Jwks {
                keys: vec![self.signer.public_key().clone()],
            },
            validation: Validation {
                issuers: vec![self.issuer.clone()],
                audience: self.service.clone(),
                leeway: 60,
            },
            check: Arc::new(OwnSignatures(self.signer.clone())),
            claims: super::authenticate::ClaimMapping::Access,
        }
    }

    fn mint(
        &self,
        audience: &str,
        subject: &str,
        access: Option<&[Access]>,
        now: u64,
        lifetime: u64,
    ) -> String {
        let key = self.signer.public_key();
        let alg = match key.algorithm() {
            Some(Algorithm::Es256) => "ES256",
            _ => "EdDSA",
        };
        let header = Header {
            typ: "JWT",
            alg,
            kid: key.kid.as_deref().unwrap_or_default(),
            x5c: &self.certificates,
        };
        let payload = Payload {
            iss: &self.issuer,
            sub: subject,
            aud: audience,
            exp: now + lifetime,
            // A verifier whose clock runs a little behind still takes the token at once.
            nbf: now.saturating_sub(10),
            iat: now,
            jti: token_id(subject, audience, now),
            access,
        };
        let signed = format!("{}.{}", encode(&header), encode(&payload));
        let signature = self.signer.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// A token's `jti`: distinct per token without a random source (the core has none), from a
/// process-wide counter and what the token says.
fn token_id(subject: &str, audience: &str, now: u64) -> String {
    use sha2::{Digest as _, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static ISSUED: AtomicU64 = AtomicU64::new(0);
    let count = ISSUED.fetch_add(1, Ordering::Relaxed);
    let digest = Sha256::digest(format!("{subject}\0{audience}\0{now}\0{count}").as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// A JWT part: JSON, base64url without padding.
fn encode(value: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// `seconds` since the epoch as RFC 3339 UTC (`2026-12-07T06:28:20Z`), for `issued_at`.
pub fn rfc3339(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm, shifted to start the year in March).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A private key berth signs with, read from PEM (feature `tokens`): Ed25519 (PKCS #8, as
/// `openssl genpkey -algorithm ed25519` writes it) or P-256 (PKCS #8, or SEC1 as
/// `openssl ecparam -name prime256v1 -genkey` writes it).
#[cfg(feature = "tokens")]
pub struct SigningKey {
    secret: Secret,
    public: Jwk,
}

#[cfg(feature = "tokens")]
enum Secret {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

#[cfg(feature = "tokens")]
impl std::fmt::Debug for SigningKey {
    /// The public key only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tokens")]
impl SigningKey {
    /// Reads a PEM private key.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        use p256::pkcs8::DecodePrivateKey as _;
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
            return Ok(Self::ed25519(key));
        }
        let p256 = p256::SecretKey::from_pkcs8_pem(text)
            .or_else(|_| p256::SecretKey::from_sec1_pem(text))
            .map_err(|_| {
                "not an Ed25519 or P-256 private key in PEM (PKCS #8, or SEC1 for P-256)".to_owned()
            })?;
        Ok(Self::p256(p256::ecdsa::SigningKey::from(p256)))
    }

    /// An Ed25519 key from its 32-byte seed (a host's random bytes).
    pub fn from_ed25519_seed(seed: [u8; 32]) -> Self {
        Self::ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The key as PKCS #8 PEM, for keeping it (in storage, say).
    pub fn to_pem(&self) -> String {
        use p256::pkcs8::EncodePrivateKey as _;
        let pem = match &self.secret {
            Secret::Ed25519(key) => key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF),
            Secret::P256(key) => key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF),
        };
        pem.map(|pem| pem.to_string()).unwrap_or_default()
    }

    fn ed25519(key: ed25519_dalek::SigningKey) -> Self {
        let public = key_with_thumbprint(Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
            y: None,
            kid: None,
        });
        Self {
            secret: Secret::Ed25519(key),
            public,
        }
    }

    fn p256(key: p256::ecdsa::SigningKey) -> Self {
        let point = key.verifying_key().to_sec1_point(false);
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        let bytes = point.as_bytes();
        let public = key_with_thumbprint(Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: URL_SAFE_NO_PAD.encode(&bytes[1..33]),
            y: Some(URL_SAFE_NO_PAD.encode(&bytes[33..65])),
            kid: None,
        });
        Self {
            secret: Secret::P256(key),
            public,
        }
    }
}

#[cfg(feature = "tokens")]
fn key_with_thumbprint(mut key: Jwk) -> Jwk {
    key.kid = Some(key.thumbprint());
    key
}

#[cfg(feature = "tokens")]
impl TokenSigner for SigningKey {
    fn public_key(&self) -> &Jwk {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        match &self.secret {
            Secret::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
            Secret::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let algorithm = self.public.algorithm().unwrap_or(Algorithm::EdDsa);
        super::jwt::NativeCheck.verify(algorithm, &self.public, message, signature)
    }
}

/// Where [`stored_key`] keeps the token service's private key.
pub const STORED_KEY: &str = "berth/keys/token.pem";

/// The token service's private key (PEM) kept in `storage`, so that every instance over one
/// bucket signs with the same key: read when there, else `fresh` (a new key) written once —
/// of instances starting together, the first write wins and the others read it.
pub async fn stored_key<S: crate::storage::Storage + ?Sized>(
    storage: &S,
    fresh: impl FnOnce() -> String,
) -> Result<String, crate::StorageError> {
    use crate::StorageError;
    use crate::storage::PutMode;
    use crate::storage::StorageExt as _;
    let key = crate::storage::Key::new(STORED_KEY);
    let read = |bytes: bytes::Bytes| {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| StorageError::backend(format!("{STORED_KEY} is not text")))
    };
    match storage.read_small(&key, 64 * 1024).await {
        Ok((_, bytes)) => return read(bytes),
        Err(StorageError::NotFound) => {}
        Err(other) => return Err(other),
    }
    let pem = fresh();
    match storage
        .put(
            &key,
            bytes::Bytes::from(pem.clone()),
            PutMode::Create.into(),
        )
        .await
    {
        Ok(_) => Ok(pem),
        Err(StorageError::AlreadyExists | StorageError::PreconditionFailed) => {
            read(storage.read_small(&key, 64 * 1024).await?.1)
        }
        Err(other) => Err(other),
    }
}

/// Reads the certificates of a PEM bundle as `x5c` wants them (base64 DER, in file order).
pub fn x5c_from_pem(text: &str) -> Vec<String> {
    let mut chain = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            chain.extend(current.take());
        } else if let Some(body) = &mut current {
            body.push_str(line);
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stored_key_is_written_once_and_read_after() {
        let storage = crate::MemoryStorage::new();
        let first = stored_key(&storage, || "first".into()).await.unwrap();
        let second = stored_key(&storage, || "second".into()).await.unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("first", "first"));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_538_500), "2026-12-06T06:28:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn x5c_keeps_each_certificate_body() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nQUJD\nREVG\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nR0hJ\n-----END CERTIFICATE-----\n";
        assert_eq!(x5c_from_pem(pem), ["QUJDREVG", "R0hJ"]);
    }

    #[cfg(feature = "tokens")]
    #[test]
    fn issued_tokens_verify_with_their_own_key() {
        use crate::auth::jwt::{NativeCheck, TokenError, verify};
        let signer = Arc::new(SigningKey::from_ed25519_seed([7; 32]));
        let issuing = Issuing::new(signer, "berth", "registry.test");
        let access = [Access {
            kind: "repository".into(),
            name: "team-a/app".into(),
            actions: vec!["pull".into()],
        }];
        let token = issuing.access_token("alice", &access, 1000);
        let verifier = issuing.verifier();
        let claims = verify(
            &token,
            &verifier.keys,
            &NativeCheck,
            &verifier.validation,
            1100,
        )
        .unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.access, access);
        assert_eq!(
            verify(
                &token,
                &verifier.keys,
                &NativeCheck,
                &verifier.validation,
                1000 + ACCESS_TOKEN_LIFETIME + 61
            ),
            Err(TokenError::Expired)
        );
        // A refresh token is no access token.
        let refresh = issuing.refresh_token("alice", 1000);
        assert_eq!(
            verify(
                &refresh,
                &verifier.keys,
                &NativeCheck,
                &verifier.validation,
                1100
            ),
            Err(TokenError::Audience)
        );
    }

    #[cfg(feature = "tokens")]
    #[test]
    fn p256_keys_from_pem_sign_es256() {
        use crate::auth::jwt::{NativeCheck, verify};
        // `openssl ecparam -name prime256v1 -genkey -noout` (SEC1).
        let pem = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEII2z9p07lYv2aF5OwAnPuKEJHT2+Ah690Iea7MdLlEGyoAoGCCqGSM49
AwEHoUQDQgAEd83S1ePpxE8S0Kus1NVkAW9gsR8b3iil1/jVrbN4nLqsQg6YoeFd
aD+6UGXunXPrjMujAT8VePTkePqUrfZ+dg==
-----END EC PRIVATE KEY-----
";
        let key = SigningKey::from_pem(pem).unwrap();
        assert_eq!(key.public_key().algorithm(), Some(Algorithm::Es256));
        let again = SigningKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let issuing = Issuing::new(Arc::new(key), "berth", "svc");
        let token = issuing.access_token("bob", &[], 50);
        let verifier = issuing.verifier();
        let claims = verify(
            &token,
            &verifier.keys,
            &NativeCheck,
            &verifier.validation,
            60,
        );
        assert_eq!(claims.unwrap().sub, "bob");
        assert!(SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n").is_err());
    }
}
