//! The access hook: every operation passes a host-supplied check before it touches storage.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::reference::RepositoryName;
use crate::request::RequestHead;

/// What an operation does to a repository (or, for `Catalog` and `Admin`, to the registry).
/// Named in access rules in lower case (`pull`, `push`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Action {
    /// Read: GET and HEAD, and the source repository of a cross-mount.
    Pull,
    /// Write: uploads and manifest pushes.
    Push,
    /// Move a tag that already points at another manifest.
    Overwrite,
    /// Remove manifests, tags or blobs.
    Delete,
    /// List the repositories (each caller sees those it may pull).
    Catalog,
    /// Administer the registry: everything, everywhere.
    Admin,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Overwrite => "overwrite",
            Self::Delete => "delete",
            Self::Catalog => "catalog",
            Self::Admin => "admin",
        })
    }
}

/// The host's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 401 `UNAUTHORIZED`, with this `WWW-Authenticate` challenge.
    Unauthorized {
        /// The challenge, e.g. `Bearer realm="…",service="…",scope="…"`.
        challenge: String,
    },
    /// 403 `DENIED`.
    Denied,
    /// 405 `UNSUPPORTED`: the operation is switched off (a read-only registry, say).
    Unsupported,
}

/// Decides whether a request may act on a repository (`None` for the catalog and `/v2/`).
pub trait AccessPolicy: Send + Sync {
    /// The decision for one operation.
    fn check(
        &self,
        request: &RequestHead,
        repository: Option<&RepositoryName>,
        action: Action,
    ) -> Decision;

    /// Whether the hook may answer one caller otherwise than another (it authenticates).
    /// Then the registry asks it more: each catalog entry is shown only to callers who may
    /// pull it, moving a tag to another manifest asks for [`Action::Overwrite`], and a mount
    /// without `from` links a blob only from a repository holding it that the caller may
    /// pull (found with [`crate::Options::track_references`]; without it, nothing is
    /// linked and the client uploads: linking any blob would hand out a private layer to
    /// anyone who knows its digest). A hook that answers everyone alike says `false`, and
    /// spares those lookups.
    fn decides_per_caller(&self) -> bool {
        true
    }

    /// Whether `tag` of `repository` may not be moved to another manifest or deleted, by
    /// anyone (pushing the manifest it holds again is fine). Moves are checked only with a
    /// hook that decides per caller, which the registry asks where a tag points.
    fn is_immutable(&self, _repository: &RepositoryName, _tag: &str) -> bool {
        false
    }

    /// Who sends `request`, when the hook authenticates and the caller logged in: an
    /// upload session is bound to the principal that opened it, and no one else finds it.
    fn principal(&self, _request: &RequestHead) -> Option<String> {
        None
    }

    /// Whether a cross-repository mount into `target` may link a blob of `source`: `Allow`
    /// when the caller may pull `source`; `Unauthorized`, with a challenge naming every scope
    /// the mount needs, when a new token would let it (the client fetches one and asks
    /// again); anything else, and the mount becomes an upload session. By default `Allow` or
    /// `Denied`, by [`AccessPolicy::check`] of `pull` on `source`.
    fn check_mount(
        &self,
        request: &RequestHead,
        target: &RepositoryName,
        source: &RepositoryName,
    ) -> Decision {
        let _ = target;
        match self.check(request, Some(source), Action::Pull) {
            Decision::Allow => Decision::Allow,
            _ => Decision::Denied,
        }
    }

    /// Which of `repositories` (a catalog page) the caller of `request` sees: by default
    /// those it may pull, asked one by one. A policy may decide the page at once.
    fn listed(&self, request: &RequestHead, repositories: Vec<String>) -> Vec<String> {
        repositories
            .into_iter()
            .filter(|name| {
                name.parse::<RepositoryName>().is_ok_and(|name| {
                    self.check(request, Some(&name), Action::Pull) == Decision::Allow
                })
            })
            .collect()
    }

    /// The token service's answer to `request` at `/token` or `/token/keys` (`form`: a
    /// POST's body), when this policy runs one; `None` (the default) leaves them unknown.
    fn token_service(&self, _request: &RequestHead, _form: &[u8]) -> Option<crate::Response> {
        None
    }

    /// Key sets to fetch before deciding `request`: some token issuer's keys live at a URL,
    /// and the request's token names a key no issuer is known to have (a key rotated in
    /// since). The registry fetches them through [`crate::Options::key_sets`] and hands each
    /// to [`AccessPolicy::accept_key_set`]. A policy asks seldom (at most every few
    /// seconds), so that tokens naming made-up keys cannot make it fetch on every request.
    /// By default: none.
    fn key_sets_wanted(&self, _request: &RequestHead) -> Vec<KeySetSource> {
        Vec::new()
    }

    /// Takes a key set fetched from `source.url` (a JWKS document): its keys replace that
    /// issuer's. Text that is no key set changes nothing (the keys fetched before stay) and
    /// is reported.
    fn accept_key_set(&self, _source: &KeySetSource, _text: &str) -> Result<(), String> {
        Ok(())
    }

    /// How long to hold back a 401 answered to a request that sent credentials (zero, the
    /// default, for none): password guessing gets slow while callers with the right
    /// credentials wait for nothing. The registry waits on [`crate::Options::pause`].
    fn login_fail_delay(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Where an issuer's key set lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetSource {
    /// The issuer (a token's `iss`).
    pub issuer: String,
    /// The URL of its JWKS document.
    pub url: String,
}

/// The host's HTTP client, for the key sets an access policy wants fetched
/// ([`AccessPolicy::key_sets_wanted`]): `berth serve` uses reqwest, the C library a callback
/// of the host's, WebAssembly the runtime's `fetch`.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait KeySetFetcher: crate::storage::MaybeSend + crate::storage::MaybeSync {
    /// The body of a successful GET of `url`, or why there is none. Implementations bound
    /// the time (a few seconds) and the size (a key set is a few kilobytes).
    async fn fetch(&self, url: &str) -> Result<String, String>;
}

/// Allows everything: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl AccessPolicy for AllowAll {
    fn check(&self, _: &RequestHead, _: Option<&RepositoryName>, _: Action) -> Decision {
        Decision::Allow
    }

    fn decides_per_caller(&self) -> bool {
        false
    }
}

/// Allows pulls and refuses every push and delete with 405, like registry:2's read-only mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOnly;

impl AccessPolicy for ReadOnly {
    fn check(&self, _: &RequestHead, _: Option<&RepositoryName>, action: Action) -> Decision {
        match action {
            Action::Pull | Action::Catalog => Decision::Allow,
            Action::Push | Action::Overwrite | Action::Delete | Action::Admin => {
                Decision::Unsupported
            }
        }
    }

    fn decides_per_caller(&self) -> bool {
        false
    }
}

/// Another policy's decisions, except that what it allows of pushes and deletes is refused
/// with 405: read-only mode for a registry that also logs callers in.
#[derive(Clone)]
pub struct ReadOnlyOver(pub std::sync::Arc<dyn AccessPolicy>);

impl fmt::Debug for ReadOnlyOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReadOnlyOver(..)")
    }
}

impl AccessPolicy for ReadOnlyOver {
    fn check(
        &self,
        request: &RequestHead,
        repository: Option<&RepositoryName>,
        action: Action,
    ) -> Decision {
        match (self.0.check(request, repository, action), action) {
            (Decision::Allow, Action::Pull | Action::Catalog) => Decision::Allow,
            (Decision::Allow, _) => Decision::Unsupported,
            (refused, _) => refused,
        }
    }

    fn decides_per_caller(&self) -> bool {
        self.0.decides_per_caller()
    }

    fn is_immutable(&self, repository: &RepositoryName, tag: &str) -> bool {
        self.0.is_immutable(repository, tag)
    }

    fn principal(&self, request: &RequestHead) -> Option<String> {
        self.0.principal(request)
    }

    fn listed(&self, request: &RequestHead, repositories: Vec<String>) -> Vec<String> {
        self.0.listed(request, repositories)
    }

    fn check_mount(
        &self,
        request: &RequestHead,
        target: &RepositoryName,
        source: &RepositoryName,
    ) -> Decision {
        self.0.check_mount(request, target, source)
    }

    fn token_service(&self, request: &RequestHead, form: &[u8]) -> Option<crate::Response> {
        self.0.token_service(request, form)
    }

    fn key_sets_wanted(&self, request: &RequestHead) -> Vec<KeySetSource> {
        self.0.key_sets_wanted(request)
    }

    fn accept_key_set(&self, source: &KeySetSource, text: &str) -> Result<(), String> {
        self.0.accept_key_set(source, text)
    }

    fn login_fail_delay(&self) -> std::time::Duration {
        self.0.login_fail_delay()
    }
}

impl<F> AccessPolicy for F
where
    F: Fn(&RequestHead, Option<&RepositoryName>, Action) -> Decision + Send + Sync,
{
    fn check(
        &self,
        request: &RequestHead,
        repository: Option<&RepositoryName>,
        action: Action,
    ) -> Decision {
        self(request, repository, action)
    }
}
