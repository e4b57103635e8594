//! Logging in to `berth serve`: an htpasswd file, re-read when it changes, access rules,
//! berth's token service, and the key sets of external token issuers (files, or URLs
//! fetched when a token names a key not seen yet).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use berth::auth::jwt::{Jwks, NativeCheck, Validation};
use berth::auth::{
    Authenticator, ClaimMapping, Credentials, Htpasswd, Issuing, Rules, RulesPolicy, SigningKey,
    TokenIssuer,
};
use berth::{AccessPolicy, Action, Decision, RepositoryName, RequestHead, Response};

use crate::config::{AuthSettings, ExternalIssuer};

/// How often, at most, key sets are fetched again for a token whose key is unknown.
const REFETCH: Duration = Duration::from_secs(10);

/// How often, at most, the htpasswd file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(5);

/// The rules when only an htpasswd file is given: every listed user may do everything, as
/// with registry:2's `auth.htpasswd`.
const EVERY_USER_EVERYTHING: &str = r#"{"repositories": {"**": {
    "default": ["pull", "push", "overwrite", "delete"]}}}"#;

/// The access hook of `berth serve --htpasswd/--access`.
pub(crate) struct FilePolicy {
    settings: AuthSettings,
    read_only: bool,
    state: RwLock<Loaded>,
    /// When key sets at URLs were last fetched.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

struct Loaded {
    policy: RulesPolicy,
    /// The htpasswd file's modification time when it was read.
    modified: Option<SystemTime>,
    checked: Instant,
}

impl FilePolicy {
    /// Reads the files; an unreadable or invalid one stops the server from starting.
    pub(crate) fn load(settings: AuthSettings, read_only: bool) -> Result<Self, String> {
        let rules = match &settings.access {
            Some(path) => read_rules(path)?,
            None => Rules::from_json(EVERY_USER_EVERYTHING).map_err(|e| e.to_string())?,
        };
        let (mut authenticator, modified) = authenticator(&settings)?;
        for external in &settings.external {
            authenticator = authenticator.with_issuer(trusted(external, &settings.service)?);
        }
        let mut policy = RulesPolicy::new(
            authenticator,
            rules,
            &settings.realm,
            Arc::new(berth::system::unix_now),
        );
        if let Some(own) = &settings.issuing {
            let pem = std::fs::read_to_string(&own.key)
                .map_err(|e| format!("cannot read the token key {}: {e}", own.key.display()))?;
            let key = SigningKey::from_pem(&pem)
                .map_err(|e| format!("token key {}: {e}", own.key.display()))?;
            let mut issuing = Issuing::new(Arc::new(key), &own.issuer, &settings.service);
            if let Some(path) = &own.certificates {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    format!("cannot read the token certificate {}: {e}", path.display())
                })?;
                issuing.certificates = berth::auth::x5c_from_pem(&pem);
                if issuing.certificates.is_empty() {
                    return Err(format!("{}: no PEM certificate", path.display()));
                }
            }
            policy = policy.with_token_service(issuing, &own.realm);
        }
        Ok(Self {
            settings,
            read_only,
            state: RwLock::new(Loaded {
                policy,
                modified,
                checked: Instant::now(),
            }),
            fetched: tokio::sync::Mutex::new(None),
        })
    }

    /// How long to hold back a 401 to a request that sent credentials.
    pub(crate) fn fail_delay(&self) -> Duration {
        Duration::from_secs(self.settings.fail_delay)
    }

    /// Whether `head` carries a token signed by a key no issuer is known to have, while
    /// some key set lives at a URL: the caller fetches key sets again before deciding.
    pub(crate) fn wants_keys(&self, head: &RequestHead) -> bool {
        if !self
            .settings
            .external
            .iter()
            .any(|issuer| is_url(&issuer.jwks))
        {
            return false;
        }
        let token = match Credentials::from_head(head) {
            Ok(Some(Credentials::Bearer(token))) => token,
            Ok(Some(Credentials::Basic { password, .. })) => password,
            _ => return false,
        };
        let Some(kid) = berth::auth::jwt::key_id(&token) else {
            return false;
        };
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        !state.policy.authenticator.knows_key(&kid)
    }

    /// Fetches the key sets at URLs again (at most once every few seconds, one fetch at a
    /// time); a set that cannot be fetched keeps the keys it had.
    pub(crate) async fn fetch_keys(&self) {
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < REFETCH) {
            return;
        }
        *fetched = Some(Instant::now());
        for external in &self.settings.external {
            if !is_url(&external.jwks) {
                continue;
            }
            match fetch_jwks(&external.jwks).await {
                Ok(keys) => {
                    tracing::info!(url = %external.jwks, keys = keys.keys.len(), "fetched a key set");
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    state
                        .policy
                        .authenticator
                        .set_issuer_keys(&external.issuer, &keys);
                }
                Err(e) => tracing::warn!(url = %external.jwks, "{e}; the keys fetched before stay"),
            }
        }
    }

    /// Reads the htpasswd file again if it changed since it was read (looked at once every
    /// few seconds, on a request: no thread). A file that no longer parses is logged and the
    /// users read before are kept.
    fn refresh(&self) {
        let Some(path) = &self.settings.htpasswd else {
            return;
        };
        {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if state.checked.elapsed() < RECHECK {
                return;
            }
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() < RECHECK {
            return;
        }
        state.checked = Instant::now();
        let modified = modified(path);
        if modified == state.modified {
            return;
        }
        match read_users(path) {
            Ok(users) => {
                tracing::info!("re-read {}", path.display());
                state.policy.authenticator.set_users(Arc::new(users));
                state.modified = modified;
            }
            Err(message) => tracing::warn!("{message}; the users read before stay"),
        }
    }
}

impl AccessPolicy for FilePolicy {
    fn check(
        &self,
        request: &RequestHead,
        repository: Option<&RepositoryName>,
        action: Action,
    ) -> Decision {
        self.refresh();
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let decision = state.policy.check(request, repository, action);
        let writes = !matches!(action, Action::Pull | Action::Catalog);
        if self.read_only && writes && decision == Decision::Allow {
            return Decision::Unsupported;
        }
        decision
    }

    fn is_immutable(&self, repository: &RepositoryName, tag: &str) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.policy.is_immutable(repository, tag)
    }

    fn principal(&self, request: &RequestHead) -> Option<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.policy.subject(request)
    }

    fn listed(&self, request: &RequestHead, repositories: Vec<String>) -> Vec<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.policy.listed(request, repositories)
    }

    fn token_service(&self, request: &RequestHead, form: &[u8]) -> Option<Response> {
        self.refresh();
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.policy.token_response(request, form)
    }
}

/// How an external issuer's tokens are verified; keys from a file are read now, keys at a
/// URL when the first token names one.
fn trusted(external: &ExternalIssuer, service: &str) -> Result<TokenIssuer, String> {
    let keys = if is_url(&external.jwks) {
        Jwks::default()
    } else {
        let text = std::fs::read_to_string(&external.jwks)
            .map_err(|e| format!("cannot read the key set {}: {e}", external.jwks))?;
        Jwks::from_json(&text).map_err(|e| format!("key set {}: {e}", external.jwks))?
    };
    let claims = match &external.subject_claim {
        Some(subject) => ClaimMapping::Identity {
            subject: subject.clone(),
            groups: external.groups_claim.clone(),
        },
        None => ClaimMapping::Access,
    };
    Ok(TokenIssuer {
        keys,
        validation: Validation {
            issuers: vec![external.issuer.clone()],
            audience: external
                .audience
                .clone()
                .unwrap_or_else(|| service.to_owned()),
            leeway: 60,
        },
        check: Arc::new(NativeCheck),
        claims,
    })
}

fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// Fetches a key set, refusing one larger than a key set has reason to be.
async fn fetch_jwks(url: &str) -> Result<Jwks, String> {
    const LIMIT: usize = 1 << 20;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    if body.len() > LIMIT {
        return Err(format!("{url} answered more than {LIMIT} bytes"));
    }
    let text = String::from_utf8_lossy(&body);
    Jwks::from_json(&text).map_err(|e| format!("{url}: {e}"))
}

fn authenticator(settings: &AuthSettings) -> Result<(Authenticator, Option<SystemTime>), String> {
    let Some(path) = &settings.htpasswd else {
        return Ok((Authenticator::new(), None));
    };
    let modified = modified(path);
    let users = read_users(path)?;
    Ok((Authenticator::new().with_users(Arc::new(users)), modified))
}

fn read_users(path: &Path) -> Result<Htpasswd, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the htpasswd file {}: {e}", path.display()))?;
    Htpasswd::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_rules(path: &Path) -> Result<Rules, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the access rules {}: {e}", path.display()))?;
    let rules: Rules =
        toml::from_str(&text).map_err(|e| format!("access rules {}: {e}", path.display()))?;
    rules
        .check()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(rules)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}
