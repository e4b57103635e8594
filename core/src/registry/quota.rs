//! Quotas ([`crate::quota`]): what each repository holds, kept as one small key per distinct
//! blob or manifest it links, with the size in the key (`berth/usage/<repo>/!<digest>-<size>`).
//! A repository's usage is one listing of its charges, a namespace's one listing below its
//! prefix, with no counter that concurrent pushes would have to agree on.
//!
//! With quota rules set, a charge is written before each layer or revision link (and
//! refused, with `DENIED`, when it would pass a limit), and removed after the last link of
//! its digest in that repository goes. What a repository held before it had charges (pushed
//! with no rules set, or by registry:2) is counted the first time a limit on it is checked:
//! once for the repository, once for each namespace; a marker remembers it. Concurrent
//! pushes may together pass a limit by what they were each checked for: the checks are not
//! a lock.

use std::collections::BTreeMap;

use serde::Serialize;

use super::lifecycle::{StoredLink, stored_link};
use super::{Registry, internal};
use crate::digest::Digest;
use crate::error::{Error, ErrorCode};
use crate::layout;
use crate::quota::{QuotaLimit, QuotaScope, format_size};
use crate::reference::RepositoryName;
use crate::storage::{Key, Storage, StorageError, StorageExt};

/// What a repository holds, and the limits on it, as an admin's usage request reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// The repository (or namespace) asked about.
    pub repository: String,
    /// Bytes of the distinct blobs and manifests linked into the repository itself.
    pub bytes: u64,
    /// How many.
    pub objects: u64,
    /// The repository and every repository below its name, together.
    pub below: NamespaceUsage,
    /// The limits on the repository and what each counts now.
    pub quotas: Vec<QuotaUsage>,
}

/// What the repositories below a prefix hold together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceUsage {
    /// Their bytes (a blob in two repositories counts twice).
    pub bytes: u64,
    /// How many repositories hold something.
    pub repositories: u64,
}

/// One limit and its usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaUsage {
    /// `repository` or `namespace`.
    pub scope: &'static str,
    /// The rule's glob, or the namespace.
    pub rule: String,
    /// Bytes allowed.
    pub limit: u64,
    /// Bytes held.
    pub used: u64,
}

/// Charges found below a prefix.
#[derive(Debug, Default)]
struct Held {
    /// Bytes and objects per repository.
    repositories: BTreeMap<String, (u64, u64)>,
    /// Repositories whose earlier content has been counted.
    counted: Vec<String>,
    /// Whether the namespace as a whole has been counted.
    namespace_counted: bool,
    /// Whether the digest asked about is charged (in the one repository listed).
    holds: bool,
}

impl Held {
    fn bytes(&self) -> u64 {
        self.repositories.values().map(|(bytes, _)| bytes).sum()
    }
}

impl<S: Storage> Registry<S> {
    /// Checks that `name` may hold `digest` (`size` bytes; looked up when `None`) before it
    /// is linked there: refused with `DENIED` when the repository or a namespace over it
    /// would pass its limit. Returns the charge to [`Registry::record`] once the link is
    /// written (none when the repository holds the digest already). Recorded after the link,
    /// so that a request dropped in between (a client gone) leaves usage counted short,
    /// never a charge for nothing that would refuse pushes until a recount.
    pub(super) async fn check_quota(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Option<Key>, Error> {
        if self.options.quotas.is_empty() {
            return Ok(None);
        }
        let size = match size {
            Some(size) => size,
            None => match self.storage.head(&layout::blob_data(digest)).await {
                Ok(meta) => meta.size,
                // The link that follows finds it gone too and says so.
                Err(StorageError::NotFound) => return Ok(None),
                Err(e) => return Err(internal(e)),
            },
        };
        let limits = self.options.quotas.limits_for(name.as_str());
        if !limits.is_empty() {
            let own = self.held_by(name, Some(digest)).await?;
            if own.holds {
                return Ok(None);
            }
            self.check_limits(name, &limits, own.bytes(), size).await?;
        }
        Ok(Some(layout::charge(name, digest, size)))
    }

    /// Records a charge [`Registry::check_quota`] returned, once its link is written.
    pub(super) async fn record(&self, charge: Option<Key>) -> Result<(), Error> {
        match charge {
            Some(charge) => self.put_marker(&charge).await,
            None => Ok(()),
        }
    }

    /// Refuses to start an upload to `name` when it (or a namespace over it) has no room for
    /// the `announced` bytes of `digest` (nothing, when it holds `digest` already), or, with
    /// no length announced, no room at all.
    pub(super) async fn check_room(
        &self,
        name: &RepositoryName,
        announced: Option<(u64, Digest)>,
    ) -> Result<(), Error> {
        let limits = self.options.quotas.limits_for(name.as_str());
        if limits.is_empty() {
            return Ok(());
        }
        let own = self
            .held_by(name, announced.as_ref().map(|(_, digest)| digest))
            .await?;
        if own.holds {
            return Ok(());
        }
        let needed = announced.map_or(0, |(length, _)| length);
        self.check_limits(name, &limits, own.bytes(), needed).await
    }

    /// Refuses `needed` more bytes in `name` when a limit would be passed (or, for 0 bytes,
    /// when one is reached already). `own` is what the repository holds.
    async fn check_limits(
        &self,
        name: &RepositoryName,
        limits: &[QuotaLimit],
        own: u64,
        needed: u64,
    ) -> Result<(), Error> {
        for limit in limits {
            let (used, what) = match &limit.scope {
                QuotaScope::Repository { pattern } => {
                    (own, format!("repository {name} (quota rule {pattern:?})"))
                }
                QuotaScope::Namespace { namespace } => (
                    self.held_below(namespace).await?.bytes(),
                    format!("namespace {namespace}"),
                ),
            };
            let over = if needed == 0 {
                used >= limit.limit
            } else {
                used.saturating_add(needed) > limit.limit
            };
            if over {
                let needs = if needed == 0 {
                    String::new()
                } else {
                    format!("; this push needs {} more", format_size(needed))
                };
                return Err(Error::new(
                    ErrorCode::Denied,
                    format!(
                        "quota exceeded: {what} holds {} of its {} limit{needs}",
                        format_size(used),
                        format_size(limit.limit),
                    ),
                )
                .with_detail(serde_json::json!({
                    "scope": match limit.scope {
                        QuotaScope::Repository { .. } => "repository",
                        QuotaScope::Namespace { .. } => "namespace",
                    },
                    "limit": limit.limit,
                    "used": used,
                    "needed": needed,
                })));
            }
        }
        Ok(())
    }

    /// Removes `digest`'s charge from `name` once neither a layer link nor a revision link
    /// of it is left there.
    pub(super) async fn uncharge(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), Error> {
        if self.options.quotas.is_empty() || self.links(name, digest).await? {
            return Ok(());
        }
        self.storage
            .delete_all(&layout::charges_of(name, digest))
            .await
            .map_err(internal)
    }

    /// Removes every charge of a repository deleted whole.
    pub(super) async fn uncharge_repository(&self, name: &RepositoryName) -> Result<(), Error> {
        self.storage
            .delete_all(&layout::charges(name))
            .await
            .map_err(internal)
    }

    /// What `name` holds, its limits and what each counts: the answer to an admin's
    /// `GET /v2/_usage/<name>`. With no quota rules set, charges are not kept, so what is
    /// stored is counted afresh (a walk of the repositories below `name`).
    pub async fn usage(&self, name: &RepositoryName) -> Result<Usage, Error> {
        let below = if self.options.quotas.is_empty() {
            let mut held = Held::default();
            for (repository, digests) in self.count_links(name.as_str(), None).await? {
                let sizes = self.sizes(&digests).await?;
                held.repositories.insert(
                    repository.to_string(),
                    (sizes.iter().map(|(_, size)| size).sum(), sizes.len() as u64),
                );
            }
            held
        } else {
            self.held_below(name.as_str()).await?
        };
        let (bytes, objects) = if self.options.quotas.is_empty() {
            below
                .repositories
                .get(name.as_str())
                .copied()
                .unwrap_or_default()
        } else {
            let own = self.held_by(name, None).await?;
            (own.bytes(), own.repositories.values().map(|(_, n)| n).sum())
        };
        let mut quotas = Vec::new();
        for limit in self.options.quotas.limits_for(name.as_str()) {
            quotas.push(match limit.scope {
                QuotaScope::Repository { pattern } => QuotaUsage {
                    scope: "repository",
                    rule: pattern,
                    limit: limit.limit,
                    used: bytes,
                },
                QuotaScope::Namespace { namespace } => QuotaUsage {
                    scope: "namespace",
                    used: self.held_below(&namespace).await?.bytes(),
                    rule: namespace,
                    limit: limit.limit,
                },
            });
        }
        Ok(Usage {
            repository: name.to_string(),
            bytes,
            objects,
            below: NamespaceUsage {
                bytes: below.bytes(),
                repositories: below
                    .repositories
                    .values()
                    .filter(|(_, objects)| *objects > 0)
                    .count() as u64,
            },
            quotas,
        })
    }

    /// The charges of `name` (counting its earlier content first, once), and whether
    /// `digest` is among them.
    async fn held_by(&self, name: &RepositoryName, digest: Option<&Digest>) -> Result<Held, Error> {
        let held = self
            .list_charges(&layout::charges(name), name.as_str(), digest)
            .await?;
        if held.counted.iter().any(|counted| counted == name.as_str()) {
            return Ok(held);
        }
        let found = self.count_links(name.as_str(), Some(name)).await?;
        self.charge_counted(found).await?;
        self.put_marker(&layout::charges_counted(name)).await?;
        self.list_charges(&layout::charges(name), name.as_str(), digest)
            .await
    }

    /// The charges of every repository below `namespace` (counting what they held before,
    /// once for the namespace).
    async fn held_below(&self, namespace: &str) -> Result<Held, Error> {
        let prefix = layout::charges_below(namespace);
        let held = self.list_charges(&prefix, namespace, None).await?;
        if held.namespace_counted {
            return Ok(held);
        }
        let found = self.count_links(namespace, None).await?;
        let names: Vec<RepositoryName> = found.keys().cloned().collect();
        self.charge_counted(found).await?;
        for name in &names {
            self.put_marker(&layout::charges_counted(name)).await?;
        }
        self.put_marker(&layout::namespace_counted(namespace))
            .await?;
        self.list_charges(&prefix, namespace, None).await
    }

    /// Reads the charges below `prefix` (`berth/usage/<namespace>/`, or one repository's
    /// `.../!`).
    async fn list_charges(
        &self,
        prefix: &str,
        namespace: &str,
        digest: Option<&Digest>,
    ) -> Result<Held, Error> {
        let base = layout::charges_below(namespace);
        let asked = digest.map(|digest| format!("{}-{}-", digest.algorithm(), digest.hex()));
        let mut held = Held::default();
        for key in self.storage.list_all(prefix).await.map_err(internal)? {
            let Some((below, entry)) = key[base.len().min(key.len())..].split_once('!') else {
                continue;
            };
            let repository = match below.strip_suffix('/') {
                Some(sub) => format!("{namespace}/{sub}"),
                None => namespace.to_owned(),
            };
            match entry {
                layout::COUNTED => held.counted.push(repository),
                // Only the namespace's own marker: those of namespaces below it list after it.
                layout::NAMESPACE_COUNTED if below.is_empty() => held.namespace_counted = true,
                layout::NAMESPACE_COUNTED => {}
                charge => {
                    let Some(size) = charge
                        .rsplit_once('-')
                        .and_then(|(_, size)| size.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    if asked
                        .as_deref()
                        .is_some_and(|asked| charge.starts_with(asked))
                    {
                        held.holds = true;
                    }
                    let totals = held.repositories.entry(repository).or_default();
                    totals.0 += size;
                    totals.1 += 1;
                }
            }
        }
        Ok(held)
    }

    /// The digests linked (as layers or revisions) into the repositories named `prefix` and
    /// below it; with `only`, into that one repository.
    async fn count_links(
        &self,
        prefix: &str,
        only: Option<&RepositoryName>,
    ) -> Result<BTreeMap<RepositoryName, Vec<Digest>>, Error> {
        let repositories = layout::repositories();
        let folders = match only {
            Some(name) => vec![
                format!("{}_layers/", layout::repository(name)),
                format!("{}_manifests/revisions/", layout::repository(name)),
            ],
            None => vec![format!("{repositories}{prefix}/")],
        };
        let mut found: BTreeMap<RepositoryName, Vec<Digest>> = BTreeMap::new();
        for folder in folders {
            for key in self.storage.list_all(&folder).await.map_err(internal)? {
                let Some((name, link)) = stored_link(&key[repositories.len()..]) else {
                    continue;
                };
                if let StoredLink::Layer(digest) | StoredLink::Revision(digest) = link {
                    found.entry(name).or_default().push(digest);
                }
            }
        }
        for digests in found.values_mut() {
            digests.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            digests.dedup();
        }
        Ok(found)
    }

    /// The sizes of stored digests (those gone are left out).
    async fn sizes(&self, digests: &[Digest]) -> Result<Vec<(Digest, u64)>, Error> {
        let mut sizes = Vec::with_capacity(digests.len());
        for digest in digests {
            match self.storage.head(&layout::blob_data(digest)).await {
                Ok(meta) => sizes.push((digest.clone(), meta.size)),
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(internal(e)),
            }
        }
        Ok(sizes)
    }

    /// Writes the charges of what a count found.
    async fn charge_counted(
        &self,
        found: BTreeMap<RepositoryName, Vec<Digest>>,
    ) -> Result<(), Error> {
        for (name, digests) in found {
            for (digest, size) in self.sizes(&digests).await? {
                self.put_marker(&layout::charge(&name, &digest, size))
                    .await?;
            }
        }
        Ok(())
    }
}
