//! Authentication: a request's credentials turned into an [`Identity`], by the credential
//! sources the host configured (an htpasswd file, token issuers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sha2::{Digest as _, Sha256};

use super::credentials::{Credentials, MalformedCredentials};
use super::htpasswd::Htpasswd;
use super::jwt::{self, Jwks, SignatureCheck, TokenError, Validation};
use super::rules::{Identity, Principal};
use super::scope::Scope;
use crate::request::RequestHead;

/// How long a verified password is remembered, in seconds: clients send Basic credentials
/// with every request, and bcrypt costs milliseconds, so it runs about once a minute per user.
pub const VERIFIED_FOR: u64 = 60;

/// At most this many verified passwords (and as many tokens) are remembered; past it, expired
/// ones go first, then all (the next requests verify again).
const VERIFIED_KEPT: usize = 4096;

/// An issuer whose tokens are accepted: its keys, what its tokens must say, and the host's
/// signature check.
#[derive(Clone)]
pub struct TokenIssuer {
    /// Its public keys.
    pub keys: Jwks,
    /// Issuer names, this registry's service, the leeway.
    pub validation: Validation,
    /// The host's cryptography.
    pub check: Arc<dyn SignatureCheck>,
    /// What its tokens' claims mean.
    pub claims: ClaimMapping,
}

/// How a token's claims become an identity and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimMapping {
    /// The distribution token format: `sub` is the principal (empty for an anonymous
    /// caller), `access` lists what the token grants, and a request may do no more than
    /// that, within the rules.
    Access,
    /// An identity token (OIDC): the principal is the claim named `subject`, its groups the
    /// strings in the claim named `groups`, and the rules alone decide what it may do.
    Identity {
        /// The claim that names the principal (`sub`, `email`, `preferred_username`, ...).
        subject: String,
        /// The claim that lists the principal's groups, if any.
        groups: Option<String>,
    },
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("keys", &self.keys.keys.len())
            .field("validation", &self.validation)
            .field("claims", &self.claims)
            .finish()
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Anonymous, or the principal its credentials prove.
    pub identity: Identity,
    /// What a token grants, when the identity came from one: the request may do no more
    /// than this, whatever the rules allow.
    pub grants: Option<Vec<Scope>>,
}

/// Credentials that were sent and prove nothing: 401, and nothing is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The `Authorization` header cannot be read.
    Malformed(MalformedCredentials),
    /// A user and password that do not match (or no password file to match them).
    Password,
    /// A token that does not verify.
    Token(TokenError),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(malformed) => malformed.fmt(f),
            Self::Password => f.write_str("the user name or password is wrong"),
            Self::Token(token) => token.fmt(f),
        }
    }
}

/// The credential sources, and the passwords and tokens verified lately.
#[derive(Default)]
pub struct Authenticator {
    users: Option<Arc<Htpasswd>>,
    /// Replaced whole when a key set is fetched again, so that a verification holds no lock.
    issuers: RwLock<Arc<Vec<TokenIssuer>>>,
    verified: Mutex<HashMap<[u8; 32], u64>>,
    /// Tokens whose signature checked out, by digest: until when, and whom they prove.
    /// Clients send one token with many requests, and a signature check costs more than
    /// the rest of a manifest GET.
    tokens: Mutex<HashMap<[u8; 32], (u64, Authenticated)>>,
}

impl std::fmt::Debug for Authenticator {
    /// Counts what it remembers: the digests of verified passwords never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users)
            .field("issuers", &self.current_issuers())
            .field("verified", &self.lock().len())
            .field("tokens", &lock(&self.tokens).len())
            .finish()
    }
}

impl Authenticator {
    /// No credential sources: every request is anonymous, and credentials are refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Passwords are checked against `users` (replace it to re-read a changed file).
    pub fn with_users(mut self, users: Arc<Htpasswd>) -> Self {
        self.users = Some(users);
        self
    }

    /// Tokens from `issuer` are accepted, as Bearer tokens or as Basic passwords.
    pub fn with_issuer(mut self, issuer: TokenIssuer) -> Self {
        let issuers = self.issuers.get_mut().unwrap_or_else(|e| e.into_inner());
        Arc::make_mut(issuers).push(issuer);
        self
    }

    fn current_issuers(&self) -> Arc<Vec<TokenIssuer>> {
        Arc::clone(&self.issuers.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the password file (a host that noticed it changed), forgetting what was
    /// verified against the old one.
    pub fn set_users(&mut self, users: Arc<Htpasswd>) {
        self.users = Some(users);
        self.lock().clear();
    }

    /// Who sent `head`, at `now` (seconds since the epoch, by the host's clock).
    pub fn authenticate(&self, head: &RequestHead, now: u64) -> Result<Authenticated, Refused> {
        let credentials = Credentials::from_head(head).map_err(Refused::Malformed)?;
        match credentials {
            None => Ok(Authenticated {
                identity: Identity::Anonymous,
                grants: None,
            }),
            Some(Credentials::Bearer(token)) => self.token(&token, now),
            Some(Credentials::Basic { user, password }) => {
                // A token given as a password (clients that store only a user and a
                // password); a password that is no token at all is checked as a password.
                if !self.current_issuers().is_empty() {
                    match self.token(&password, now) {
                        Err(Refused::Token(TokenError::Malformed)) => {}
                        decided => return decided,
                    }
                }
                self.password(user, &password, now)
            }
        }
    }

    /// The user `user`, if `password` is theirs (the token service's password grant).
    pub fn password(
        &self,
        user: String,
        password: &str,
        now: u64,
    ) -> Result<Authenticated, Refused> {
        if self.password_matches(&user, password, now) {
            Ok(Authenticated {
                identity: Identity::Principal(Principal {
                    subject: user,
                    groups: Vec::new(),
                }),
                grants: None,
            })
        } else {
            Err(Refused::Password)
        }
    }

    /// Whether the password file lists `user` (a refresh token outlives no user).
    pub fn knows_user(&self, user: &str) -> bool {
        self.users
            .as_ref()
            .is_some_and(|users| users.contains(user))
    }

    fn token(&self, token: &str, now: u64) -> Result<Authenticated, Refused> {
        let remembered: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((until, who)) = lock(&self.tokens).get(&remembered)
            && *until > now
        {
            return Ok(who.clone());
        }
        let mut refusal = TokenError::UnknownKey;
        for issuer in self.current_issuers().iter() {
            match jwt::verify(token, &issuer.keys, &*issuer.check, &issuer.validation, now) {
                Ok(claims) => {
                    // Remembered for a minute at most, and never past the token's expiry.
                    let expires = claims.exp.unwrap_or(now);
                    let until =
                        (now + VERIFIED_FOR).min(expires.saturating_add(issuer.validation.leeway));
                    let who = identify(claims, &issuer.claims).map_err(Refused::Token)?;
                    remember(
                        &mut lock(&self.tokens),
                        remembered,
                        (until, who.clone()),
                        now,
                    );
                    return Ok(who);
                }
                // Another issuer's key: try the next; anything else is this token's fault.
                Err(TokenError::UnknownKey | TokenError::Issuer) => {}
                Err(other) => refusal = other,
            }
        }
        Err(Refused::Token(refusal))
    }

    /// Replaces the keys of the issuers named `issuer` (a key set fetched again); tokens
    /// verified with the old keys are verified again.
    pub fn set_issuer_keys(&self, issuer: &str, keys: &Jwks) {
        let mut issuers = self.issuers.write().unwrap_or_else(|e| e.into_inner());
        let mut replaced = issuers.as_ref().clone();
        for known in &mut replaced {
            if known.validation.issuers.iter().any(|name| name == issuer) {
                known.keys = keys.clone();
            }
        }
        *issuers = Arc::new(replaced);
        lock(&self.tokens).clear();
    }

    /// Whether some issuer has the key `kid` (else a host may fetch key sets again).
    pub fn knows_key(&self, kid: &str) -> bool {
        self.current_issuers()
            .iter()
            .any(|issuer| issuer.keys.find(kid).is_some())
    }

    fn password_matches(&self, user: &str, password: &str, now: u64) -> bool {
        let Some(users) = &self.users else {
            return false;
        };
        let mut hasher = Sha256::new();
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        let remembered: [u8; 32] = hasher.finalize().into();
        if self
            .lock()
            .get(&remembered)
            .is_some_and(|until| *until > now)
        {
            return true;
        }
        // Verified outside the lock: bcrypt takes milliseconds.
        if !users.verify(user, password) {
            return false;
        }
        remember(&mut self.lock(), remembered, now + VERIFIED_FOR, now);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], u64>> {
        lock(&self.verified)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Something verified, until a time: `value` is `until` itself or carries it first.
trait Until {
    fn until(&self) -> u64;
}

impl Until for u64 {
    fn until(&self) -> u64 {
        *self
    }
}

impl Until for (u64, Authenticated) {
    fn until(&self) -> u64 {
        self.0
    }
}

/// Remembers `value` under `key`; a full map drops what expired, then everything (the next
/// requests verify again).
fn remember<V: Until>(map: &mut HashMap<[u8; 32], V>, key: [u8; 32], value: V, now: u64) {
    if map.len() >= VERIFIED_KEPT {
        map.retain(|_, kept| kept.until() > now);
        if map.len() >= VERIFIED_KEPT {
            map.clear();
        }
    }
    map.insert(key, value);
}

/// The identity and grants a verified token's claims make.
fn identify(claims: jwt::Claims, mapping: &ClaimMapping) -> Result<Authenticated, TokenError> {
    match mapping {
        ClaimMapping::Access => {
            let grants = Some(claims.scopes());
            let identity = if claims.sub.is_empty() {
                Identity::Anonymous
            } else {
                Identity::Principal(Principal {
                    subject: claims.sub,
                    groups: claims.groups,
                })
            };
            Ok(Authenticated { identity, grants })
        }
        ClaimMapping::Identity { subject, groups } => {
            let subject = match claims.claim(subject) {
                Some(serde_json::Value::String(value)) if !value.is_empty() => value,
                // An identity token that names no one proves nothing.
                _ => return Err(TokenError::Subject),
            };
            let groups = match groups.as_deref().and_then(|name| claims.claim(name)) {
                Some(serde_json::Value::Array(values)) => values
                    .iter()
                    .filter_map(|value| value.as_str().map(str::to_owned))
                    .collect(),
                Some(serde_json::Value::String(one)) => vec![one],
                _ => Vec::new(),
            };
            Ok(Authenticated {
                identity: Identity::Principal(Principal { subject, groups }),
                grants: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::*;
    use crate::auth::jwt::{Algorithm, Jwk};
    use crate::request::Method;

    const USERS: &str = "alice:$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK
dots:$2y$04$UIkF7AEo0MtQmAmC.eBXeuD.yJVLDxKrTEDc7rf0D9Y4mFvq/PGfi
";

    fn basic(user: &str, password: &str) -> RequestHead {
        let encoded = STANDARD.encode(format!("{user}:{password}"));
        RequestHead::from_target(Method::Get, "/v2/")
            .with_header("Authorization", format!("Basic {encoded}"))
    }

    /// A stand-in signature check (the real ones are tested in `jwt`): the signature is the
    /// message's SHA-256 twice. It counts the signatures it checked.
    #[derive(Default)]
    struct Digests(std::sync::atomic::AtomicUsize);

    impl SignatureCheck for Digests {
        fn verify(&self, _: Algorithm, _: &Jwk, message: &[u8], signature: &[u8]) -> bool {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let digest = Sha256::digest(message);
            signature == [&digest[..], &digest[..]].concat()
        }
    }

    fn issuer() -> TokenIssuer {
        TokenIssuer {
            keys: Jwks {
                keys: vec![Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
                    y: None,
                    kid: Some("k".into()),
                }],
            },
            validation: Validation {
                issuers: vec!["berth".into()],
                audience: "reg".into(),
                leeway: 0,
            },
            check: Arc::new(Digests::default()),
            claims: ClaimMapping::Access,
        }
    }

    fn token(exp: u64) -> String {
        let claims = format!(
            r#"{{"iss":"berth","sub":"bot","aud":"reg","exp":{exp},"groups":["ci"],"access":[{{"type":"repository","name":"a","actions":["pull"]}}]}}"#
        );
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let digest = Sha256::digest(signed.as_bytes());
        format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode([&digest[..], &digest[..]].concat())
        )
    }

    fn authenticator() -> Authenticator {
        Authenticator::new()
            .with_users(Arc::new(Htpasswd::parse(USERS).unwrap()))
            .with_issuer(issuer())
    }

    #[test]
    fn a_token_is_checked_once_a_minute_and_never_past_its_expiry() {
        let check = Arc::new(Digests::default());
        let auth = Authenticator::new().with_issuer(TokenIssuer {
            check: check.clone(),
            ..issuer()
        });
        let bearer = |token: &str| {
            RequestHead::from_target(Method::Get, "/v2/")
                .with_header("Authorization", format!("Bearer {token}"))
        };
        let checked = || check.0.load(std::sync::atomic::Ordering::Relaxed);
        let long = bearer(&token(1000));
        for now in [100, 120, 159] {
            assert!(auth.authenticate(&long, now).is_ok());
        }
        assert_eq!(checked(), 1);
        assert!(auth.authenticate(&long, 160).is_ok());
        assert_eq!(checked(), 2);
        // Remembered until its expiry only: then refused, as if never seen.
        let short = bearer(&token(110));
        assert!(auth.authenticate(&short, 100).is_ok());
        assert_eq!(
            auth.authenticate(&short, 111),
            Err(Refused::Token(TokenError::Expired))
        );
        assert_eq!(checked(), 4);
    }

    #[test]
    fn anonymous_passwords_and_tokens() {
        let auth = authenticator();
        let anonymous = auth
            .authenticate(&RequestHead::from_target(Method::Get, "/v2/"), 0)
            .unwrap();
        assert_eq!(anonymous.identity, Identity::Anonymous);
        let alice = auth.authenticate(&basic("alice", "s3cret"), 0).unwrap();
        assert_eq!(
            alice.identity,
            Identity::Principal(Principal {
                subject: "alice".into(),
                groups: vec![]
            })
        );
        assert_eq!(alice.grants, None);
        assert_eq!(
            auth.authenticate(&basic("alice", "wrong"), 0),
            Err(Refused::Password)
        );
        assert_eq!(
            auth.authenticate(&basic("mallory", "s3cret"), 0),
            Err(Refused::Password)
        );
        let bearer = RequestHead::from_target(Method::Get, "/v2/")
            .with_header("Authorization", format!("Bearer {}", token(100)));
        let bot = auth.authenticate(&bearer, 50).unwrap();
        assert_eq!(
            bot.identity,
            Identity::Principal(Principal {
                subject: "bot".into(),
                groups: vec!["ci".into()]
            })
        );
        assert_eq!(bot.grants.unwrap()[0].to_string(), "repository:a:pull");
        // The same token as a Basic password, whatever the user; a password shaped like a
        // token but none is checked as a password.
        assert!(
            auth.authenticate(&basic("anything", &token(100)), 50)
                .is_ok()
        );
        assert!(auth.authenticate(&basic("dots", "a.b.c"), 0).is_ok());
        assert!(auth.authenticate(&basic("dots", "a.b.d"), 0).is_err());
        assert_eq!(
            auth.authenticate(&bearer, 101),
            Err(Refused::Token(TokenError::Expired))
        );
        let malformed =
            RequestHead::from_target(Method::Get, "/v2/").with_header("Authorization", "Basic !!");
        assert!(matches!(
            auth.authenticate(&malformed, 0),
            Err(Refused::Malformed(_))
        ));
        // Without a password file, every password is wrong.
        assert_eq!(
            Authenticator::new().authenticate(&basic("alice", "s3cret"), 0),
            Err(Refused::Password)
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let auth = authenticator();
        assert!(auth.authenticate(&basic("alice", "s3cret"), 0).is_ok());
        let printed = format!("{auth:?}");
        assert!(printed.contains("verified: 1"), "{printed}");
        assert!(!printed.contains("$2y$"), "{printed}");
    }

    #[test]
    fn verified_passwords_are_remembered_for_a_minute() {
        let mut auth = authenticator();
        assert!(auth.authenticate(&basic("alice", "s3cret"), 1000).is_ok());
        assert_eq!(auth.lock().len(), 1);
        // A wrong password is never remembered, nor served from what was.
        assert!(auth.authenticate(&basic("alice", "s3cret!"), 1001).is_err());
        assert_eq!(auth.lock().len(), 1);
        assert!(
            auth.authenticate(&basic("alice", "s3cret"), 1000 + VERIFIED_FOR - 1)
                .is_ok()
        );
        // A changed file forgets: alice's old password no longer works once she is gone.
        auth.set_users(Arc::new(Htpasswd::parse("").unwrap()));
        assert_eq!(
            auth.authenticate(&basic("alice", "s3cret"), 1002),
            Err(Refused::Password)
        );
    }
}
