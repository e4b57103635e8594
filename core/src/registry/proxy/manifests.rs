//! Cached manifests: by digest from the copy, by tag checked upstream at most every
//! `revalidate` seconds, the copy standing in while the upstream fails.

use bytes::Bytes;

use super::{MANIFEST_TYPES, UpstreamFailure};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, ErrorCode};
use crate::layout;
use crate::proxy::Routed;
use crate::reference::{Reference, RepositoryName, Tag};
use crate::registry::manifests::Source;
use crate::registry::{Registry, read_body};
use crate::request::{Method, RequestHead};
use crate::response::Response;
use crate::storage::{PutMode, Storage};

impl<S: Storage> Registry<S> {
    pub(super) async fn cached_manifest(
        &self,
        routed: &Routed,
        reference: &Reference,
    ) -> Result<Response, Error> {
        let name = &routed.local;
        let rule = self.options.upstreams.rule(routed.rule);
        let now = (self.options.clock)();
        let unknown = || {
            Error::new(
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in {name}"),
            )
        };
        let local = self.resolve(name, reference).await?;
        let tag = match reference {
            Reference::Digest(_) if local.is_some() => {
                return self.get_manifest(name, reference).await;
            }
            Reference::Digest(_) => None,
            Reference::Tag(tag) => Some(tag),
        };
        let checked = match tag {
            Some(tag) => self.checked_at(name, tag).await?,
            None => None,
        };
        if let (Some(tag), Some(_)) = (tag, &local)
            && (rule.is_immutable(tag.as_str())
                || checked.is_some_and(|at| now < at.saturating_add(rule.revalidate)))
        {
            return self.get_manifest(name, reference).await;
        }
        let missing = layout::proxy_missing(name, &reference.to_string());
        if local.is_none()
            && let Some(until) = self.proxy_record(&missing).await?
            && until.trim().parse::<u64>().is_ok_and(|until| until > now)
        {
            return Err(unknown());
        }
        let path = format!("/v2/{}/manifests/{reference}", routed.remote);
        let accept = || vec![("Accept".to_owned(), MANIFEST_TYPES.to_owned())];
        let cached = local.is_some();
        let stale = |failure: UpstreamFailure| async move {
            let fresh_until = checked.map_or(u64::MAX, |at| at.saturating_add(rule.stale_if_error));
            let serve = cached && now < fresh_until;
            self.notify(crate::Notice::UpstreamUnavailable {
                repository: name.to_string(),
                reason: failure.reason.clone(),
                stale: serve,
            });
            if !serve {
                return Err(failure.into_error());
            }
            let warning = format!("110 berth \"Response is Stale: {}\"", failure.reason);
            Ok(self
                .get_manifest(name, reference)
                .await?
                .with_header("Warning", warning.replace(['\r', '\n'], " ")))
        };
        let forget = |until: u64| async move {
            // Best effort: a "not found" not remembered is asked again.
            let _ = self
                .storage
                .put(
                    &missing,
                    Bytes::from(until.to_string()),
                    PutMode::Overwrite.volatile(),
                )
                .await;
        };

        // A cached tag is checked with a HEAD: Docker Hub counts only GETs as pulls.
        if let (Some(tag), Some(digest)) = (tag, &local) {
            match self.upstream(routed, Method::Head, &path, accept()).await {
                Ok(answer)
                    if answer.status == 200
                        && answer.header("Docker-Content-Digest") == Some(digest.as_str()) =>
                {
                    self.note_checked(name, tag, now).await;
                    return self.get_manifest(name, reference).await;
                }
                // Moved upstream: fetched below.
                Ok(answer) if answer.status == 200 => {}
                Ok(answer) if answer.status == 404 => {
                    forget(now + rule.missing_for).await;
                    return Err(unknown());
                }
                Ok(answer) => {
                    let url = self.options.upstreams.rule(routed.rule).urls.join(", ");
                    return stale(UpstreamFailure::answered(
                        &answer,
                        &url,
                        crate::proxy::DEFAULT_BACKOFF,
                    ))
                    .await;
                }
                Err(failure) => return stale(failure).await,
            }
        }
        let mut answer = match self.upstream(routed, Method::Get, &path, accept()).await {
            Ok(answer) if answer.status == 200 => answer,
            Ok(answer) if answer.status == 404 => {
                forget(now + rule.missing_for).await;
                return Err(unknown());
            }
            Ok(answer) => {
                let url = rule.urls.join(", ");
                return stale(UpstreamFailure::answered(
                    &answer,
                    &url,
                    crate::proxy::DEFAULT_BACKOFF,
                ))
                .await;
            }
            Err(failure) => return stale(failure).await,
        };
        let content_type = answer.header("Content-Type").map(str::to_owned);
        let announced = answer
            .header("Docker-Content-Digest")
            .and_then(|digest| digest.parse::<Digest>().ok());
        let bytes = match read_body(&mut answer.body, self.options.manifest_limit).await {
            Ok(bytes) => bytes,
            Err(error) => {
                return stale(UpstreamFailure::new(format!(
                    "reading manifest {reference} of {}: {}",
                    routed.remote,
                    error.message()
                )))
                .await;
            }
        };
        let expected = match reference {
            Reference::Digest(digest) => Some(digest.clone()),
            Reference::Tag(_) => announced,
        };
        if let Some(expected) = expected {
            let actual = expected.algorithm().digest(&bytes);
            if actual != expected {
                return stale(UpstreamFailure::new(format!(
                    "manifest {reference} of {} has digest {actual}, not {expected}",
                    routed.remote
                )))
                .await;
            }
        }
        let mut head = RequestHead::new(Method::Put, format!("/v2/{name}/manifests/{reference}"));
        if let Some(content_type) = content_type {
            head = head.with_header("Content-Type", content_type);
        }
        self.commit_manifest(&head, name, reference, bytes.clone(), Source::Cached)
            .await?;
        if let Some(tag) = tag {
            self.note_checked(name, tag, now).await;
        }
        let digest = match reference {
            Reference::Digest(digest) => digest.clone(),
            Reference::Tag(_) => Algorithm::Sha256.digest(&bytes),
        };
        self.get_manifest(name, &Reference::Digest(digest)).await
    }

    /// Notes that a cached manifest was pulled, for eviction: its last-pull key's
    /// modification time is the last pull, as coarse as the rule's `pull_note_interval`
    /// (within it, one read of the key the first time an instance serves the manifest, and
    /// nothing after). Best effort: a pull not noted leaves the manifest older than it is
    /// by at most that interval.
    pub(super) async fn note_pulled(&self, routed: &Routed, digest: &Digest) {
        let every = self
            .options
            .upstreams
            .rule(routed.rule)
            .pull_note_interval();
        let key = layout::proxy_pulled(&routed.local, digest);
        let now = (self.options.clock)();
        if !self
            .options
            .upstreams
            .pull_note_due(key.as_str(), now, every)
        {
            return;
        }
        // The key holds the writer's time (compared with this host's clock); the collector
        // goes by its modification time (the storage's clock).
        let written = self.proxy_record(&key).await.ok().flatten();
        if written
            .and_then(|at| at.trim().parse::<u64>().ok())
            .is_some_and(|at| now < at.saturating_add(every))
        {
            return;
        }
        let _ = self
            .storage
            .put(
                &key,
                Bytes::from(now.to_string()),
                PutMode::Overwrite.volatile(),
            )
            .await;
    }

    /// When a cached tag was last found current upstream.
    async fn checked_at(&self, name: &RepositoryName, tag: &Tag) -> Result<Option<u64>, Error> {
        let record = self.proxy_record(&layout::proxy_checked(name, tag)).await?;
        Ok(record.and_then(|record| record.trim().parse().ok()))
    }

    /// Notes that a cached tag was found current upstream (best effort: a tag whose note is
    /// lost is checked again next time).
    async fn note_checked(&self, name: &RepositoryName, tag: &Tag, now: u64) {
        let _ = self
            .storage
            .put(
                &layout::proxy_checked(name, tag),
                Bytes::from(now.to_string()),
                PutMode::Overwrite.volatile(),
            )
            .await;
    }
}
