//! The access hook built from the parts: an [`Authenticator`] says who asks, [`Rules`] and
//! the token's grants say what they may do, and a refusal carries the challenge that tells a
//! client how to log in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::authenticate::{Authenticated, Authenticator, Refused};
use super::credentials::Challenge;
use super::credentials::Credentials;
use super::rules::{Identity, Rules};
use super::scope::Scope;
use super::token::Issuing;
use crate::access::{AccessPolicy, Action, Decision, KeySetSource};
use crate::reference::RepositoryName;
use crate::request::RequestHead;
use crate::response::Response;

/// How refused clients are told to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginScheme {
    /// With a user and a password (`WWW-Authenticate: Basic`).
    Basic {
        /// The realm named in the challenge.
        realm: String,
    },
    /// With a token from `realm` for `service`.
    Bearer {
        /// The token service's absolute URL. `{host}` in it stands for the request's `Host`
        /// (a registry reached by several names sends each client to the name it used).
        realm: String,
        /// This registry's service name.
        service: String,
    },
}

/// Access decided by rules over authenticated identities.
pub struct RulesPolicy {
    /// Who asks.
    pub authenticator: Authenticator,
    /// What they may do.
    pub rules: Rules,
    /// How a refused client is told to log in.
    pub login: LoginScheme,
    /// Seconds since the epoch, by the host's clock (token expiry, remembered passwords).
    pub clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// The token service, when this registry issues tokens itself.
    pub issuing: Option<Issuing>,
    /// Token issuers whose key sets live at URLs, fetched again when a token names a key
    /// none of them is known to have.
    pub key_sources: Vec<KeySetSource>,
    /// Seconds between such fetches, at least.
    pub key_refetch_interval: u64,
    /// How long a 401 to a request that sent credentials is held back.
    pub fail_delay: Duration,
    /// When key sets were last asked for (by the clock; 0: never).
    keys_asked: AtomicU64,
}

/// The default [`RulesPolicy::key_refetch_interval`]: a key set fetched at most every ten
/// seconds (a token naming a made-up key cannot make the registry fetch on every request).
pub const KEY_REFETCH_INTERVAL: u64 = 10;

impl std::fmt::Debug for RulesPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesPolicy")
            .field("rules", &self.rules)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

impl RulesPolicy {
    /// Rules over `authenticator`'s identities, refused clients asked for a password in
    /// `realm`.
    pub fn new(
        authenticator: Authenticator,
        rules: Rules,
        realm: &str,
        clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        Self {
            authenticator,
            rules,
            login: LoginScheme::Basic {
                realm: realm.to_owned(),
            },
            clock,
            issuing: None,
            key_sources: Vec::new(),
            key_refetch_interval: KEY_REFETCH_INTERVAL,
            fail_delay: Duration::ZERO,
            keys_asked: AtomicU64::new(0),
        }
    }

    /// Runs the token service with `issuing`, at the URL `realm` (see
    /// [`LoginScheme::Bearer`]): refused clients are sent there, and its tokens are accepted.
    pub fn with_token_service(mut self, issuing: Issuing, realm: &str) -> Self {
        self.authenticator =
            std::mem::take(&mut self.authenticator).with_issuer(issuing.verifier());
        self.login = LoginScheme::Bearer {
            realm: realm.to_owned(),
            service: issuing.service.clone(),
        };
        self.issuing = Some(issuing);
        self
    }
}

impl AccessPolicy for RulesPolicy {
    fn key_sets_wanted(&self, request: &RequestHead) -> Vec<KeySetSource> {
        if self.key_sources.is_empty() {
            return Vec::new();
        }
        let token = match Credentials::from_head(request) {
            Ok(Some(Credentials::Bearer(token))) => token,
            Ok(Some(Credentials::Basic { password, .. })) => password,
            _ => return Vec::new(),
        };
        let Some(kid) = super::jwt::key_id(&token) else {
            return Vec::new();
        };
        if self.authenticator.knows_key(&kid) {
            return Vec::new();
        }
        // One request in each interval fetches; the others decide with the keys they have.
        let now = (self.clock)();
        let asked = self.keys_asked.load(Ordering::Relaxed);
        let due = asked == 0 || now >= asked.saturating_add(self.key_refetch_interval);
        if due
            && self
                .keys_asked
                .compare_exchange(asked, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.key_sources.clone()
        } else {
            Vec::new()
        }
    }

    fn accept_key_set(&self, source: &KeySetSource, text: &str) -> Result<(), String> {
        let keys = super::jwt::Jwks::from_json(text)
            .map_err(|_| "not a key set (a JWKS document: a JSON object with `keys`)")?;
        self.authenticator.set_issuer_keys(&source.issuer, &keys);
        Ok(())
    }

    fn login_fail_delay(&self) -> Duration {
        self.fail_delay
    }

    fn check(
        &self,
        request: &RequestHead,
        repository: Option<&RepositoryName>,
        action: Action,
    ) -> Decision {
        let needed = |repository: Option<&RepositoryName>| match repository {
            // Writes are asked for with `pull` as distribution asks: a push also reads (HEAD
            // before upload), and one token should serve the whole push.
            Some(name) if matches!(action, Action::Push | Action::Overwrite) => {
                vec![Scope::repository(name.as_str(), &[Action::Pull, action])]
            }
            Some(name) => vec![Scope::repository(name.as_str(), &[action])],
            None if action == Action::Catalog => vec![Scope::catalog()],
            None => Vec::new(),
        };
        let who = match self.authenticator.authenticate(request, (self.clock)()) {
            Ok(who) => who,
            Err(refused) => {
                let error = match refused {
                    Refused::Token(_) => Some("invalid_token"),
                    Refused::Malformed(_) | Refused::Password => None,
                };
                return self.unauthorized(request, needed(repository), error);
            }
        };
        if self.permits(&who, repository, action) {
            return Decision::Allow;
        }
        let token_error = who.grants.as_ref().map(|_| "insufficient_scope");
        match who.identity {
            Identity::Anonymous => self.unauthorized(request, needed(repository), token_error),
            // A token without the scope: the client fetches one that has it.
            Identity::Principal(_) if !token_covers(&who, repository, action) => {
                self.unauthorized(request, needed(repository), token_error)
            }
            // The rules refuse it (a tag move with a push token, say): no token would help.
            Identity::Principal(_) => Decision::Denied,
        }
    }

    fn principal(&self, request: &RequestHead) -> Option<String> {
        self.subject(request)
    }

    fn is_immutable(&self, repository: &RepositoryName, tag: &str) -> bool {
        self.rules.is_immutable(repository.as_str(), tag)
    }

    fn token_service(&self, request: &RequestHead, form: &[u8]) -> Option<Response> {
        self.token_response(request, form)
    }

    /// A mount needs `pull` and `push` on the target and `pull` on the source. When a new
    /// token would give the caller a scope it lacks, the challenge names all three (as
    /// distribution's does: clients fetch one token for everything the challenge lists, and
    /// ask once more); when the rules refuse the source, the mount becomes an upload.
    fn check_mount(
        &self,
        request: &RequestHead,
        target: &RepositoryName,
        source: &RepositoryName,
    ) -> Decision {
        let Ok(who) = self.authenticator.authenticate(request, (self.clock)()) else {
            return Decision::Denied;
        };
        let needs = [(target, Action::Push), (source, Action::Pull)];
        if needs
            .iter()
            .all(|(name, action)| self.permits(&who, Some(name), *action))
        {
            return Decision::Allow;
        }
        let scopes = || {
            vec![
                Scope::repository(target.as_str(), &[Action::Pull, Action::Push]),
                Scope::repository(source.as_str(), &[Action::Pull]),
            ]
        };
        match (&who.identity, &who.grants) {
            (Identity::Anonymous, _) => self.unauthorized(request, scopes(), None),
            (Identity::Principal(_), Some(_)) => {
                let token_would_help = needs.iter().any(|(name, action)| {
                    self.rules
                        .allows(&who.identity, Some(name.as_str()), *action)
                        && !token_covers(&who, Some(name), *action)
                });
                if token_would_help {
                    self.unauthorized(request, scopes(), Some("insufficient_scope"))
                } else {
                    Decision::Denied
                }
            }
            (Identity::Principal(_), None) => Decision::Denied,
        }
    }

    /// The caller is authenticated once for the page, and sees what the rules let it pull:
    /// the catalog's own scope (`registry:catalog:*`) is what its token needed, not a scope
    /// per name listed.
    fn listed(&self, request: &RequestHead, repositories: Vec<String>) -> Vec<String> {
        let Ok(who) = self.authenticator.authenticate(request, (self.clock)()) else {
            return Vec::new();
        };
        repositories
            .into_iter()
            .filter(|name| self.rules.allows(&who.identity, Some(name), Action::Pull))
            .collect()
    }
}

impl RulesPolicy {
    /// The subject of the request's credentials, when they prove one.
    pub fn subject(&self, request: &RequestHead) -> Option<String> {
        match self.authenticator.authenticate(request, (self.clock)()) {
            Ok(Authenticated {
                identity: Identity::Principal(principal),
                ..
            }) => Some(principal.subject),
            _ => None,
        }
    }

    /// Whether the rules, and a token's grants if it came with one, allow it. `/v2/` (no
    /// repository, `pull`) is open to every principal and challenges anonymous callers even
    /// where some repository lets them pull: clients learn from that answer whether to send
    /// the credentials they hold (skopeo, seeing 200, never sends them), and clients without
    /// credentials go on to pull anonymously all the same.
    pub(super) fn permits(
        &self,
        who: &Authenticated,
        repository: Option<&RepositoryName>,
        action: Action,
    ) -> bool {
        let by_rules = match (repository, action, &who.identity) {
            (None, Action::Pull, Identity::Principal(_)) => true,
            (None, Action::Pull, Identity::Anonymous) => false,
            (name, action, identity) => {
                self.rules
                    .allows(identity, name.map(RepositoryName::as_str), action)
            }
        };
        by_rules && token_covers(who, repository, action)
    }

    fn unauthorized(
        &self,
        request: &RequestHead,
        scopes: Vec<Scope>,
        error: Option<&'static str>,
    ) -> Decision {
        let challenge = match &self.login {
            LoginScheme::Basic { realm } => Challenge::Basic {
                realm: realm.clone(),
            },
            LoginScheme::Bearer { realm, service } => Challenge::Bearer {
                realm: realm.replace("{host}", request_host(request)),
                service: service.clone(),
                scopes,
                error,
            },
        };
        Decision::Unauthorized {
            challenge: challenge.to_string(),
        }
    }
}

/// Whether the token the caller came with (if any) grants `action`: `/v2/` needs no scope,
/// the catalog `registry:catalog:*`.
fn token_covers(who: &Authenticated, repository: Option<&RepositoryName>, action: Action) -> bool {
    let Some(grants) = &who.grants else {
        return true;
    };
    match (repository, action) {
        (Some(name), action) => grants
            .iter()
            .any(|scope| scope.grants(name.as_str(), action)),
        (None, Action::Catalog) => grants.contains(&Scope::catalog()),
        (None, _) => true,
    }
}

/// The request's `Host`, if it is one (letters, digits, `.-:[]`, as a name, an address or
/// a bracketed IPv6 address with a port); else `localhost`. Hostile text never reaches the
/// challenge.
fn request_host(request: &RequestHead) -> &str {
    request
        .header("host")
        .filter(|host| {
            !host.is_empty()
                && host.len() <= 255
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .unwrap_or("localhost")
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::auth::htpasswd::Htpasswd;
    use crate::request::Method;

    fn policy(login: LoginScheme) -> RulesPolicy {
        let users = "alice:$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK\n";
        let mut policy = RulesPolicy::new(
            Authenticator::new().with_users(Arc::new(Htpasswd::parse(users).unwrap())),
            Rules::from_json(
                r#"{"repositories": {
                    "team-a/**": {"policies": [{"users": ["alice"], "actions": ["pull"]}]},
                    "public/**": {"anonymous": ["pull"]}
                }}"#,
            )
            .unwrap(),
            "berth",
            Arc::new(|| 0),
        );
        policy.login = login;
        policy
    }

    fn head(credentials: Option<&str>) -> RequestHead {
        let head = RequestHead::from_target(Method::Get, "/v2/");
        match credentials {
            Some(pair) => {
                head.with_header("Authorization", format!("Basic {}", STANDARD.encode(pair)))
            }
            None => head,
        }
    }

    fn name(text: &str) -> RepositoryName {
        text.parse().unwrap()
    }

    #[test]
    fn decisions_and_challenges() {
        let bearer = policy(LoginScheme::Bearer {
            realm: "https://r.example/token".into(),
            service: "r.example".into(),
        });
        let alice = head(Some("alice:s3cret"));
        let anonymous = head(None);
        let team_a = name("team-a/app");
        assert_eq!(
            bearer.check(&alice, Some(&team_a), Action::Pull),
            Decision::Allow
        );
        assert_eq!(
            bearer.check(&alice, Some(&team_a), Action::Push),
            Decision::Denied
        );
        assert_eq!(bearer.check(&alice, None, Action::Pull), Decision::Allow);
        assert_eq!(
            bearer.check(&anonymous, Some(&name("public/x")), Action::Pull),
            Decision::Allow
        );
        // Anonymous callers are challenged at /v2/ even though a public tree exists.
        assert!(matches!(
            bearer.check(&anonymous, None, Action::Pull),
            Decision::Unauthorized { .. }
        ));
        assert_eq!(
            bearer.check(&anonymous, Some(&team_a), Action::Pull),
            Decision::Unauthorized {
                challenge: "Bearer realm=\"https://r.example/token\",service=\"r.example\",\
                            scope=\"repository:team-a/app:pull\""
                    .into()
            }
        );
        assert_eq!(
            bearer.check(&head(Some("alice:wrong")), Some(&team_a), Action::Pull),
            Decision::Unauthorized {
                challenge: "Bearer realm=\"https://r.example/token\",service=\"r.example\",\
                            scope=\"repository:team-a/app:pull\""
                    .into()
            }
        );
        // A write is challenged for `pull` too: one token serves the whole push.
        assert!(matches!(
            bearer.check(&anonymous, Some(&team_a), Action::Push),
            Decision::Unauthorized { challenge }
                if challenge.ends_with("scope=\"repository:team-a/app:pull,push\"")
        ));
        let basic = policy(LoginScheme::Basic {
            realm: "berth".into(),
        });
        assert_eq!(
            basic.check(&anonymous, None, Action::Catalog),
            Decision::Allow
        );
        assert_eq!(
            basic.check(&anonymous, Some(&team_a), Action::Delete),
            Decision::Unauthorized {
                challenge: "Basic realm=\"berth\"".into()
            }
        );
    }
}
