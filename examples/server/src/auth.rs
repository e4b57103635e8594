//! Logging in to `berth serve`: an htpasswd file, re-read when it changes, and access rules.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use berth::auth::{Authenticator, Htpasswd, LoginScheme, Rules, RulesPolicy};
use berth::{AccessPolicy, Action, Decision, RepositoryName, RequestHead};

use crate::config::AuthSettings;

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
        let (authenticator, modified) = authenticator(&settings)?;
        let policy = RulesPolicy {
            authenticator,
            rules,
            login: LoginScheme::Basic {
                realm: settings.realm.clone(),
            },
            clock: Arc::new(berth::system::unix_now),
        };
        Ok(Self {
            settings,
            read_only,
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
        match authenticator(&self.settings) {
            Ok((authenticator, modified)) => {
                tracing::info!("re-read {}", path.display());
                state.policy.authenticator = authenticator;
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
}

fn authenticator(settings: &AuthSettings) -> Result<(Authenticator, Option<SystemTime>), String> {
    let Some(path) = &settings.htpasswd else {
        return Ok((Authenticator::new(), None));
    };
    let modified = modified(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the htpasswd file {}: {e}", path.display()))?;
    let users = Htpasswd::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((Authenticator::new().with_users(Arc::new(users)), modified))
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
