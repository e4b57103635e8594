//! Login settings as one JSON document, so every host (the C ABI, Python, WebAssembly, an
//! edge worker's environment) turns them on the same way:
//!
//! ```json
//! {
//!   "htpasswd": "alice:$2y$05$...\n",
//!   "rules": {"repositories": {"team-a/**": {"policies": [
//!     {"users": ["alice"], "actions": ["pull", "push"]}]}}},
//!   "realm": "berth",
//!   "service": "registry.example",
//!   "token": {"key": "-----BEGIN PRIVATE KEY-----\n...", "realm": "https://{host}/token"},
//!   "issuers": [{"issuer": "https://idp.example", "keys": {"keys": [...]},
//!                "subject-claim": "email"},
//!               {"issuer": "https://ci.example", "keys-url": "https://ci.example/jwks"}],
//!   "key-refetch-interval": 10,
//!   "login-fail-delay": 1
//! }
//! ```
//!
//! Every member is optional. Without `rules`, every authenticated caller may pull, push,
//! overwrite and delete everywhere (registry:2's `auth.htpasswd`), and anonymous callers
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

#[cfg(feature = "tokens")]
use super::authenticate::ClaimMapping;
use super::authenticate::{Authenticator, TokenIssuer};
use super::htpasswd::Htpasswd;
use super::jwt::Jwks;
#[cfg(feature = "tokens")]
use super::jwt::Validation;
use super::policy::RulesPolicy;
use super::rules::Rules;
use crate::access::KeySetSource;

/// The rules when none are given: every authenticated caller may do everything.
pub const EVERY_USER_EVERYTHING: &str = r#"{"repositories": {"**": {
    "default": ["pull", "push", "overwrite", "delete"]}}}"#;

/// Who may log in, how, and what they may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// An htpasswd file's text (bcrypt hashes, `htpasswd -B`).
    #[serde(default)]
    pub htpasswd: Option<String>,
    /// The access rules ([`Rules`]).
    #[serde(default)]
    pub rules: Option<Rules>,
    /// The realm of the Basic challenge (default `berth`).
    #[serde(default)]
    pub realm: Option<String>,
    /// This registry's service name: the audience of tokens (default `berth`).
    #[serde(default)]
    pub service: Option<String>,
    /// The token service, when this registry issues tokens.
    #[serde(default)]
    pub token: Option<TokenSettings>,
    /// Token issuers whose tokens are accepted.
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
    /// Seconds between fetches of the key sets at `keys-url`s, at least (default 10).
    #[serde(default)]
    pub key_refetch_interval: Option<u64>,
    /// Seconds a 401 to a request that sent credentials is held back (default 0), where the
    /// host has a timer.
    #[serde(default)]
    pub login_fail_delay: Option<u64>,
}

/// berth's own token service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenSettings {
    /// The private key, PEM (Ed25519, or P-256 for ES256).
    pub key: String,
    /// The key's certificate chain, PEM, sent as `x5c` (for registry:2 2.8 verifiers).
    #[serde(default)]
    pub certificates: Option<String>,
    /// The token service's URL in challenges; `{host}` stands for the request's Host
    /// (default `https://{host}/token`).
    #[serde(default)]
    pub realm: Option<String>,
    /// The tokens' issuer name (default `berth`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Seconds an access token is good for (default 300).
    #[serde(default)]
    pub lifetime: Option<u64>,
}

/// An issuer whose tokens are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IssuerSettings {
    /// The tokens' `iss`.
    pub issuer: String,
    /// Its public keys (a JWKS document).
    #[serde(default)]
    pub keys: Jwks,
    /// Where its key set lives: fetched when a token names a key not in `keys` (at the
    /// first such token, then at most every `key-refetch-interval` seconds; a fetch that
    /// fails keeps the keys there were), through the host's HTTP client.
    #[serde(default)]
    pub keys_url: Option<String>,
    /// The audience its tokens must name (default: the service name).
    #[serde(default)]
    pub audience: Option<String>,
    /// For identity (OIDC) tokens, the claim naming the principal; without it, tokens carry
    /// distribution-format `access` grants.
    #[serde(default)]
    pub subject_claim: Option<String>,
    /// For identity tokens, the claim listing the principal's groups.
    #[serde(default)]
    pub groups_claim: Option<String>,
}

impl Settings {
    /// Reads settings from JSON.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("login settings: {e}"))
    }

    /// The service name tokens are for.
    pub fn service(&self) -> &str {
        self.service.as_deref().unwrap_or("berth")
    }

    /// The access hook these settings describe, on the host's `clock` (seconds since the
    /// epoch).
    pub fn policy(&self, clock: Arc<dyn Fn() -> u64 + Send + Sync>) -> Result<RulesPolicy, String> {
        let rules = match &self.rules {
            Some(rules) => {
                rules.check().map_err(|e| e.to_string())?;
                rules.clone()
            }
            None => Rules::from_json(EVERY_USER_EVERYTHING).map_err(|e| e.to_string())?,
        };
        let mut authenticator = Authenticator::new();
        if let Some(text) = &self.htpasswd {
            let users = Htpasswd::parse(text).map_err(|e| format!("htpasswd: {e}"))?;
            authenticator = authenticator.with_users(Arc::new(users));
        }
        let mut key_sources = Vec::new();
        for issuer in &self.issuers {
            authenticator = authenticator.with_issuer(self.trusted(issuer)?);
            match &issuer.keys_url {
                Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                    key_sources.push(KeySetSource {
                        issuer: issuer.issuer.clone(),
                        url: url.clone(),
                    });
                }
                Some(url) => {
                    return Err(format!(
                        "issuer {}: keys-url {url:?} is no http(s) URL",
                        issuer.issuer
                    ));
                }
                None if issuer.keys.keys.is_empty() => {
                    return Err(format!(
                        "issuer {}: no keys (give `keys`, or `keys-url`)",
                        issuer.issuer
                    ));
                }
                None => {}
            }
        }
        let realm = self.realm.as_deref().unwrap_or("berth");
        let mut policy = RulesPolicy::new(authenticator, rules, realm, clock);
        policy.key_sources = key_sources;
        if let Some(interval) = self.key_refetch_interval {
            policy.key_refetch_interval = interval;
        }
        policy.fail_delay = Duration::from_secs(self.login_fail_delay.unwrap_or(0));
        match &self.token {
            None => Ok(policy),
            Some(token) => {
                let issuing = self.issuing(token)?;
                let realm = token.realm.as_deref().unwrap_or("https://{host}/token");
                Ok(policy.with_token_service(issuing, realm))
            }
        }
    }

    #[cfg(feature = "tokens")]
    fn trusted(&self, issuer: &IssuerSettings) -> Result<TokenIssuer, String> {
        let claims = match &issuer.subject_claim {
            Some(subject) => ClaimMapping::Identity {
                subject: subject.clone(),
                groups: issuer.groups_claim.clone(),
            },
            None => ClaimMapping::Access,
        };
        Ok(TokenIssuer {
            keys: Jwks {
                // Keys berth cannot use (RSA, say) are left out, as from a fetched set.
                keys: issuer
                    .keys
                    .keys
                    .iter()
                    .filter(|key| key.algorithm().is_some())
                    .cloned()
                    .collect(),
            },
            validation: Validation {
                issuers: vec![issuer.issuer.clone()],
                audience: issuer
                    .audience
                    .clone()
                    .unwrap_or_else(|| self.service().to_owned()),
                leeway: 60,
            },
            check: Arc::new(super::jwt::NativeCheck),
            claims,
        })
    }

    #[cfg(not(feature = "tokens"))]
    fn trusted(&self, _: &IssuerSettings) -> Result<TokenIssuer, String> {
        Err(without_tokens())
    }

    #[cfg(feature = "tokens")]
    fn issuing(&self, token: &TokenSettings) -> Result<super::token::Issuing, String> {
        let key = super::token::SigningKey::from_pem(&token.key)
            .map_err(|e| format!("token key: {e}"))?;
        let issuer = token.issuer.as_deref().unwrap_or("berth");
        let mut issuing = super::token::Issuing::new(Arc::new(key), issuer, self.service());
        if let Some(lifetime) = token.lifetime {
            issuing.lifetime = lifetime.max(60);
        }
        if let Some(pem) = &token.certificates {
            issuing.certificates = super::token::x5c_from_pem(pem);
            if issuing.certificates.is_empty() {
                return Err("token certificates: no PEM certificate".into());
            }
        }
        Ok(issuing)
    }

    #[cfg(not(feature = "tokens"))]
    fn issuing(&self, _: &TokenSettings) -> Result<super::token::Issuing, String> {
        Err(without_tokens())
    }
}

#[cfg(not(feature = "tokens"))]
fn without_tokens() -> String {
    "tokens need berth built with the `tokens` feature".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AccessPolicy, Action, Decision};
    use crate::request::{Method, RequestHead};

    #[test]
    fn settings_make_a_policy() {
        let settings = Settings::from_json(
            r#"{"htpasswd": "alice:$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK\n",
                "realm": "edge"}"#,
        )
        .unwrap();
        let policy = settings.policy(Arc::new(|| 0)).unwrap();
        let anonymous = RequestHead::from_target(Method::Get, "/v2/x/tags/list");
        let name = "x".parse().unwrap();
        assert_eq!(
            policy.check(&anonymous, Some(&name), Action::Pull),
            Decision::Unauthorized {
                challenge: "Basic realm=\"edge\"".into()
            }
        );
        let alice = anonymous.with_header("Authorization", "Basic YWxpY2U6czNjcmV0");
        assert_eq!(
            policy.check(&alice, Some(&name), Action::Delete),
            Decision::Allow
        );
        assert!(Settings::from_json(r#"{"htpasswd": "x", "unknown": 1}"#).is_err());
        let broken = Settings::from_json(r#"{"htpasswd": "alice:plain"}"#).unwrap();
        assert!(broken.policy(Arc::new(|| 0)).is_err());
    }

    #[cfg(feature = "tokens")]
    #[test]
    fn an_issuer_needs_keys_or_a_url_to_fetch_them_from() {
        let refusal = |issuer: &str| {
            let text = format!(r#"{{"issuers": [{issuer}]}}"#);
            Settings::from_json(&text)
                .unwrap()
                .policy(Arc::new(|| 0))
                .err()
        };
        assert_eq!(
            refusal(r#"{"issuer": "idp"}"#).as_deref(),
            Some("issuer idp: no keys (give `keys`, or `keys-url`)")
        );
        assert_eq!(
            refusal(r#"{"issuer": "idp", "keys-url": "file:///etc/jwks"}"#).as_deref(),
            Some("issuer idp: keys-url \"file:///etc/jwks\" is no http(s) URL")
        );
        assert_eq!(
            refusal(r#"{"issuer": "idp", "keys-url": "https://idp/jwks"}"#),
            None
        );
    }
}
