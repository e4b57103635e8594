//! JSON Web Tokens as registries use them: parsed, matched to a key, and checked against the
//! claims a registry requires. The signature itself is checked by a [`SignatureCheck`] the
//! host supplies (native code, or the runtime's WebCrypto at the edge), so the core carries
//! no elliptic-curve arithmetic.
//!
//! Only the asymmetric algorithms a registry token uses are accepted: `ES256` with a P-256
//! key and `EdDSA` with an Ed25519 key. `none`, every `HS*` (a public key taken as a shared
//! secret) and an algorithm that does not fit the key's type are refused before any
//! signature is checked.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::scope::Scope;

/// A public key, as a JWKS lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `EC` or `OKP`.
    pub kty: String,
    /// `P-256` or `Ed25519`.
    #[serde(default)]
    pub crv: String,
    /// The x coordinate (EC) or the public key (OKP), base64url.
    #[serde(default)]
    pub x: String,
    /// The y coordinate (EC), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The key's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// A key set (`{"keys": [...]}`); keys of other types are kept out, not refused, since
/// issuers publish RSA keys beside the ones berth can use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Reads a key set.
    pub fn from_json(text: &str) -> Result<Self, TokenError> {
        let jwks: Self = serde_json::from_str(text).map_err(|_| TokenError::Malformed)?;
        Ok(Self {
            keys: jwks
                .keys
                .into_iter()
                .filter(|key| key.algorithm().is_some())
                .collect(),
        })
    }

    /// The key a token names, by `kid` (its own, or its RFC 7638 thumbprint).
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys
            .iter()
            .find(|key| key.kid.as_deref() == Some(kid) || key.thumbprint() == kid)
    }
}

/// The signature algorithms berth accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA over P-256 with SHA-256; the signature is `r || s`, 64 bytes.
    Es256,
    /// Ed25519; the signature is 64 bytes.
    EdDsa,
}

impl Jwk {
    /// The algorithm this key verifies, if berth can use it.
    pub fn algorithm(&self) -> Option<Algorithm> {
        match (self.kty.as_str(), self.crv.as_str(), &self.y) {
            ("EC", "P-256", Some(_)) => Some(Algorithm::Es256),
            ("OKP", "Ed25519", None) => Some(Algorithm::EdDsa),
            _ => None,
        }
    }

    /// The RFC 7638 thumbprint: base64url(SHA-256) of the required members in lexical order,
    /// the `kid` distribution v3 expects.
    pub fn thumbprint(&self) -> String {
        let canonical = match &self.y {
            Some(y) => format!(
                r#"{{"crv":{},"kty":{},"x":{},"y":{}}}"#,
                json(&self.crv),
                json(&self.kty),
                json(&self.x),
                json(y)
            ),
            None => format!(
                r#"{{"crv":{},"kty":{},"x":{}}}"#,
                json(&self.crv),
                json(&self.kty),
                json(&self.x)
            ),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }
}

fn json(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// Checks a signature: the host's cryptography.
pub trait SignatureCheck: Send + Sync {
    /// Whether `signature` signs `message` under `key` with `algorithm` (the key's own).
    fn verify(&self, algorithm: Algorithm, key: &Jwk, message: &[u8], signature: &[u8]) -> bool;
}

/// Why a token was refused. Each is a 401 with `error="invalid_token"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    Malformed,
    /// An algorithm berth does not accept, or one that does not fit the key.
    Algorithm(String),
    /// No key with the token's `kid`.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// Past its `exp`.
    Expired,
    /// Before its `nbf`.
    NotYetValid,
    /// Issued by someone else.
    Issuer,
    /// Meant for another service.
    Audience,
    /// An identity token without the claim that names its principal.
    Subject,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("the token is not a JSON Web Token"),
            Self::Algorithm(alg) => write!(f, "the token's algorithm {alg:?} is not accepted"),
            Self::UnknownKey => f.write_str("the token is signed by an unknown key"),
            Self::Signature => f.write_str("the token's signature does not verify"),
            Self::Expired => f.write_str("the token has expired"),
            Self::NotYetValid => f.write_str("the token is not valid yet"),
            Self::Issuer => f.write_str("the token comes from another issuer"),
            Self::Audience => f.write_str("the token is for another service"),
            Self::Subject => f.write_str("the token names no principal"),
        }
    }
}

impl std::error::Error for TokenError {}

/// What a registry requires of a token besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// The issuers whose tokens are accepted (`iss`).
    pub issuers: Vec<String>,
    /// This registry's service name, which `aud` must contain.
    pub audience: String,
    /// Seconds of clock difference forgiven on `exp` and `nbf` (distribution allows 60).
    pub leeway: u64,
}

/// The claims berth reads from a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Claims {
    /// The subject: who the token speaks for.
    #[serde(default)]
    pub sub: String,
    /// The issuer.
    #[serde(default)]
    pub iss: String,
    /// Expiry, seconds since the epoch.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Not before, seconds since the epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// The distribution-format grants: `[{"type", "name", "actions"}]`.
    #[serde(default)]
    pub access: Vec<Access>,
    /// Groups the subject belongs to, when the issuer says.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    aud: Audience,
    /// Every other claim, for identity tokens mapped by claim name.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// One grant of a distribution-format token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// The actions granted.
    #[serde(default)]
    pub actions: Vec<String>,
}

impl Claims {
    /// A claim by name: `sub`, `iss` and `groups` as read above, any other as sent.
    pub fn claim(&self, name: &str) -> Option<serde_json::Value> {
        match name {
            "sub" => Some(serde_json::Value::String(self.sub.clone())),
            "iss" => Some(serde_json::Value::String(self.iss.clone())),
            "groups" => Some(
                self.groups
                    .iter()
                    .cloned()
                    .map(serde_json::Value::String)
                    .collect(),
            ),
            other => self.other.get(other).cloned(),
        }
    }

    /// The token's grants as scopes.
    pub fn scopes(&self) -> Vec<Scope> {
        self.access
            .iter()
            .filter(|access| !access.actions.is_empty())
            .map(|access| Scope {
                kind: access.kind.clone(),
                name: access.name.clone(),
                actions: access.actions.iter().cloned().collect(),
            })
            .collect()
    }
}

/// `aud`: one string or several.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, service: &str) -> bool {
        match self {
            Self::None => false,
            Self::One(one) => one == service,
            Self::Many(many) => many.iter().any(|one| one == service),
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The `kid` a token's header names, if it is a token and names one.
pub fn key_id(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    header.kid
}

/// Verifies `token` against `keys`, then its claims against `validation` at `now` (seconds
/// since the epoch, by the host's clock).
pub fn verify(
    token: &str,
    keys: &Jwks,
    check: &dyn SignatureCheck,
    validation: &Validation,
    now: u64,
) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Malformed)
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
    let algorithm = match header.alg.as_str() {
        "ES256" => Algorithm::Es256,
        "EdDSA" => Algorithm::EdDsa,
        other => return Err(TokenError::Algorithm(other.to_owned())),
    };
    let key = match &header.kid {
        Some(kid) => keys.find(kid).ok_or(TokenError::UnknownKey)?,
        // Without a kid, the one key there is (an issuer with a single key).
        None => match keys.keys.as_slice() {
            [only] => only,
            _ => return Err(TokenError::UnknownKey),
        },
    };
    if key.algorithm() != Some(algorithm) {
        return Err(TokenError::Algorithm(header.alg));
    }
    let signature = decode(signature)?;
    let signed = &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
    if signature.len() != 64 || !check.verify(algorithm, key, signed.as_bytes(), &signature) {
        return Err(TokenError::Signature);
    }
    let claims: Claims =
        serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
    // A token without an expiry would be good forever: refused.
    let expires = claims.exp.ok_or(TokenError::Expired)?;
    if now > expires.saturating_add(validation.leeway) {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| now.saturating_add(validation.leeway) < nbf)
    {
        return Err(TokenError::NotYetValid);
    }
    if !validation.issuers.contains(&claims.iss) {
        return Err(TokenError::Issuer);
    }
    if !claims.aud.contains(&validation.audience) {
        return Err(TokenError::Audience);
    }
    Ok(claims)
}

/// ES256 and Ed25519 signatures checked in Rust (feature `tokens`): what native hosts use.
#[cfg(feature = "tokens")]
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeCheck;

#[cfg(feature = "tokens")]
impl SignatureCheck for NativeCheck {
    fn verify(&self, algorithm: Algorithm, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
        let coordinate = |text: &str| URL_SAFE_NO_PAD.decode(text).ok();
        match algorithm {
            Algorithm::Es256 => {
                use p256::ecdsa::signature::Verifier as _;
                let (Some(x), Some(y)) =
                    (coordinate(&key.x), key.y.as_deref().and_then(coordinate))
                else {
                    return false;
                };
                if x.len() != 32 || y.len() != 32 {
                    return false;
                }
                // An uncompressed SEC1 point: 0x04, x, y.
                let point = [&[4u8][..], &x, &y].concat();
                let (Ok(key), Ok(signature)) = (
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point),
                    p256::ecdsa::Signature::from_slice(signature),
                ) else {
                    return false;
                };
                key.verify(message, &signature).is_ok()
            }
            Algorithm::EdDsa => {
                let Some(Ok(public)) = coordinate(&key.x).map(<[u8; 32]>::try_from) else {
                    return false;
                };
                let (Ok(key), Ok(signature)) = (
                    ed25519_dalek::VerifyingKey::from_bytes(&public),
                    ed25519_dalek::Signature::from_slice(signature),
                ) else {
                    return false;
                };
                key.verify_strict(message, &signature).is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests;
