//! Logging in to `berth serve`: an htpasswd file, re-read when it changes, access rules,
//! berth's token service, and the key sets of external token issuers (files, or URLs the
//! registry fetches through [`KeySetsOverHttp`] when a token names a key not seen yet).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use berth::auth::jwt::Jwks;
use berth::auth::{Htpasswd, IssuerSettings, Rules, RulesPolicy, Settings, TokenSettings};
use berth::{
    AccessPolicy, Action, Decision, KeySetFetcher, KeySetSource, RepositoryName, RequestHead,
    Response,
};

use crate::config::AuthSettings;

/// How often, at most, the htpasswd file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(5);

/// The access hook of `berth serve --htpasswd/--access`.
pub(crate) struct FilePolicy {
    settings: AuthSettings,
    state: RwLock<Loaded>,
}

struct Loaded {
    policy: RulesPolicy,
    /// The htpasswd file's modification time when it was read.
    modified: Option<SystemTime>,
    checked: Instant,
}

impl FilePolicy {
    /// Reads the files; an unreadable or invalid one stops the server from starting.
    /// `stored_key` is the token key kept in the storage, when the settings say so.
    pub(crate) fn load(settings: AuthSettings, stored_key: Option<String>) -> Result<Self, String> {
        let modified = settings.htpasswd.as_deref().and_then(modified);
        let mut login = Settings {
            htpasswd: settings.htpasswd.as_deref().map(read_text).transpose()?,
            rules: settings.access.as_deref().map(read_rules).transpose()?,
            realm: Some(settings.realm.clone()),
            service: Some(settings.service.clone()),
            token: None,
            issuers: Vec::new(),
            key_refetch_interval: None,
            login_fail_delay: Some(settings.fail_delay),
        };
        if let Some(own) = &settings.issuing {
            login.token = Some(TokenSettings {
                key: match stored_key {
                    Some(pem) => pem,
                    None => read_text(&own.key)?,
                },
                certificates: own.certificates.as_deref().map(read_text).transpose()?,
                realm: Some(own.realm.clone()),
                issuer: Some(own.issuer.clone()),
                lifetime: own.lifetime,
            });
        }
        for external in &settings.external {
            // Keys at a URL are fetched when the first token names one.
            let (keys, keys_url) = if is_url(&external.jwks) {
                (Jwks::default(), Some(external.jwks.clone()))
            } else {
                let text = read_text(Path::new(&external.jwks))?;
                let keys = Jwks::from_json(&text)
                    .map_err(|e| format!("key set {}: {e}", external.jwks))?;
                (keys, None)
            };
            login.issuers.push(IssuerSettings {
                issuer: external.issuer.clone(),
                keys,
                keys_url,
                audience: external.audience.clone(),
                subject_claim: external.subject_claim.clone(),
                groups_claim: external.groups_claim.clone(),
            });
        }
        let policy = login.policy(Arc::new(berth::system::unix_now))?;
        Ok(Self {
            settings,
            state: RwLock::new(Loaded {
                policy,
                modified,
                checked: Instant::now(),
            }),
        })
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
        state.policy.check(request, repository, action)
    }

    fn is_immutable(&self, repository: &RepositoryName, tag: &str) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.policy.is_immutable(repository, tag)
    }

    fn principal(&self, request: &RequestHead) -> Option<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.policy.subject(request)
    }

    fn check_mount(
        &self,
        request: &RequestHead,
        target: &RepositoryName,
        source: &RepositoryName,
    ) -> Decision {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.policy.check_mount(request, target, source)
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

    fn key_sets_wanted(&self, request: &RequestHead) -> Vec<KeySetSource> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.policy.key_sets_wanted(request)
    }

    fn accept_key_set(&self, source: &KeySetSource, text: &str) -> Result<(), String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.policy.accept_key_set(source, text)?;
        tracing::info!(url = %source.url, "fetched a key set");
        Ok(())
    }

    fn login_fail_delay(&self) -> Duration {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.policy.login_fail_delay()
    }
}

/// Fetches token issuers' key sets for the registry, with reqwest.
pub(crate) struct KeySetsOverHttp {
    client: reqwest::Client,
}

impl KeySetsOverHttp {
    pub(crate) fn new() -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self { client })
    }
}

#[async_trait::async_trait]
impl KeySetFetcher for KeySetsOverHttp {
    /// Fetches a key set, refusing one larger than a key set has reason to be.
    async fn fetch(&self, url: &str) -> Result<String, String> {
        const LIMIT: usize = 1 << 20;
        let response = self
            .client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?;
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > LIMIT {
            return Err(format!("more than {LIMIT} bytes"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_users(path: &Path) -> Result<Htpasswd, String> {
    Htpasswd::parse(&read_text(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_rules(path: &Path) -> Result<Rules, String> {
    let text = read_text(path)?;
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
