//! Leases that make manifest and tag changes linearizable: each change to a repository's
//! manifests and tags holds a lease on the manifest's digest and on each tag it touches, so
//! that any two concurrent changes to the same digest or tag take effect one after the other,
//! on one instance or many over one storage.
//!
//! A change to a manifest writes several keys (the revision link, each tag's links and index
//! entry, the referrer entry), and a DELETE by digest removes the tags that point at it.
//! Without leases, a DELETE by digest racing a PUT by tag of the same manifest could leave
//! the tag behind with its manifest gone. With them, the final state is always that of some
//! serial order of the changes (`core/tests/linearizable.rs` checks it against a model).
//!
//! A lease is a small object created with [`PutMode::Create`]; it holds the time it lapses, so
//! a request that died holding one (a killed process) delays the next change to that digest
//! or tag by [`LEASE_SECONDS`] at most. Leases are taken in one order (the digest, then tags
//! in order), so two changes never wait for each other. Pushes of different manifests and
//! tags take different leases and never wait at all.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use super::{Registry, internal};
use crate::digest::{Algorithm, Digest};
use crate::error::Error;
use crate::layout;
use crate::reference::{RepositoryName, Tag};
use crate::storage::{Durability, Key, PutMode, Storage, StorageError, StorageExt, Version};

/// How long a lease lasts. A change holds it for a few storage round trips; a lease left by a
/// request that died is taken over after this long.
pub const LEASE_SECONDS: u64 = 15;

/// The first and the longest wait between two tries for a lease that another request holds.
const FIRST_WAIT: Duration = Duration::from_millis(1);
const LONGEST_WAIT: Duration = Duration::from_millis(50);

/// What a lease protects.
#[derive(Debug, Clone, Copy)]
pub(super) enum Leased<'a> {
    /// A manifest: its revision link, its referrer entry, and which tags point at it.
    Digest(&'a Digest),
    /// A tag: its links and its index entry.
    Tag(&'a Tag),
    /// A blob's link into the repository, while it is deleted (so that of two deletes at
    /// once, one answers 404).
    Layer(&'a Digest),
}

/// A lease this request holds; give it back with [`Registry::give_back`].
#[derive(Debug)]
#[must_use = "a lease is held until it is released"]
pub(super) struct Lease {
    key: Key,
    version: Version,
}

impl<S: Storage> Registry<S> {
    /// Takes the leases for a change to the manifest `digest` (if any) and to `tags`, in the
    /// one order every request takes them.
    pub(super) async fn lease_all(
        &self,
        name: &RepositoryName,
        digest: Option<&Digest>,
        tags: &[Tag],
    ) -> Result<Vec<Lease>, Error> {
        let mut tags: Vec<&Tag> = tags.iter().collect();
        tags.sort();
        tags.dedup();
        let subjects = digest
            .map(Leased::Digest)
            .into_iter()
            .chain(tags.into_iter().map(Leased::Tag));
        let mut leases = Vec::new();
        for subject in subjects {
            match self.lease(name, subject).await {
                Ok(lease) => leases.push(lease),
                Err(error) => {
                    self.release_all(leases).await;
                    return Err(error);
                }
            }
        }
        Ok(leases)
    }

    /// Takes the lease on `subject`, waiting while another request holds it.
    pub(super) async fn lease(
        &self,
        name: &RepositoryName,
        subject: Leased<'_>,
    ) -> Result<Lease, Error> {
        let key = layout::lease(&lease_id(name, subject));
        // The nonce tells this request's record from another's, should a write fail in a
        // way that leaves it unclear whether it happened.
        let nonce = (self.options.ids)();
        let mut wait = FIRST_WAIT;
        let mut failures = 0;
        loop {
            let now = (self.options.clock)();
            let record = Bytes::from(format!("{} {nonce}", now + LEASE_SECONDS));
            match self
                .storage
                .put(&key, record.clone(), PutMode::Create.volatile())
                .await
            {
                Ok(meta) => {
                    return Ok(Lease {
                        key,
                        version: meta.version,
                    });
                }
                // Held; or the write failed, perhaps after it landed: the read tells.
                Err(StorageError::AlreadyExists) => {}
                Err(e @ StorageError::Backend(_)) => failures = count(failures, e)?,
                Err(e) => return Err(internal(e)),
            }
            match self.storage.read_small(&key, 64).await {
                // An earlier try of this request took it after all.
                Ok((meta, held)) if holder(&held) == Some(nonce.as_str()) => {
                    return Ok(Lease {
                        key,
                        version: meta.version,
                    });
                }
                Ok((meta, held)) if lapsed(&held, now) => {
                    // Its holder died: take it over, unless another request just did.
                    match self
                        .storage
                        .put(
                            &key,
                            record.clone(),
                            PutMode::Update(meta.version).volatile(),
                        )
                        .await
                    {
                        Ok(meta) => {
                            return Ok(Lease {
                                key,
                                version: meta.version,
                            });
                        }
                        Err(StorageError::PreconditionFailed | StorageError::NotFound) => {}
                        Err(e @ StorageError::Backend(_)) => failures = count(failures, e)?,
                        Err(e) => return Err(internal(e)),
                    }
                }
                // Held, or given back since the put: try again.
                Ok(_) | Err(StorageError::NotFound) => {}
                Err(e @ StorageError::Backend(_)) => failures = count(failures, e)?,
                Err(e) => return Err(internal(e)),
            }
            match &self.options.pause {
                Some(pause) => {
                    pause(wait).await;
                    wait = (wait * 2).min(LONGEST_WAIT);
                }
                // Without a timer, the next try waits its turn behind every other task: a
                // storage that answers on the calling thread would otherwise never let the
                // holder run.
                None => YieldNow(false).await,
            }
        }
    }

    /// Gives leases back (best effort: one that cannot be removed lapses).
    pub(super) async fn release_all(&self, leases: Vec<Lease>) {
        for lease in leases.into_iter().rev() {
            self.give_back(lease).await;
        }
    }

    /// Gives a lease back, unless it lapsed and another request took it over meanwhile.
    pub(super) async fn give_back(&self, lease: Lease) {
        // A few tries: a lease that is left behind delays the next change by a whole lease.
        for _ in 0..3 {
            match self.storage.head(&lease.key).await {
                Ok(meta) if meta.version == lease.version => {
                    if self
                        .storage
                        .delete(&lease.key, Durability::Volatile)
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
                Err(StorageError::Backend(_)) => {}
                // Gone, or lapsed and taken over by another request.
                Ok(_) | Err(_) => return,
            }
        }
    }
}

/// Lets every other task of the executor run once before this one goes on.
pub(in crate::registry) async fn yield_now() {
    YieldNow(false).await
}

/// A future that is pending once, asking to be polled again: the task goes to the back of
/// its executor's queue.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// How many storage failures a request rides out while it waits for a lease: a failing
/// storage fails the request after this many.
const FAILURES_TOLERATED: u32 = 10;

/// Counts one more storage failure, or gives up with it.
fn count(failures: u32, error: StorageError) -> Result<u32, Error> {
    if failures + 1 >= FAILURES_TOLERATED {
        Err(internal(error))
    } else {
        Ok(failures + 1)
    }
}

/// The nonce of the request that wrote a lease record (`<until> <nonce>`).
fn holder(record: &[u8]) -> Option<&str> {
    std::str::from_utf8(record).ok()?.split_whitespace().nth(1)
}

/// Whether a lease record (`<until> <nonce>`) says it lapsed before `now` (an unreadable
/// record has).
fn lapsed(record: &[u8], now: u64) -> bool {
    std::str::from_utf8(record)
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .is_none_or(|until| until <= now)
}

/// A fixed-length name for a lease, whatever the lengths of the repository name and tag (a
/// file name must stay under 255 bytes): the sha256 of what it protects.
fn lease_id(name: &RepositoryName, subject: Leased<'_>) -> String {
    let what = match subject {
        Leased::Digest(digest) => format!("{name}\0digest\0{digest}"),
        Leased::Tag(tag) => format!("{name}\0tag\0{tag}"),
        Leased::Layer(digest) => format!("{name}\0layer\0{digest}"),
    };
    Algorithm::Sha256.digest(what.as_bytes()).hex().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapsed_records() {
        assert!(!lapsed(b"100 n1", 99));
        assert!(lapsed(b"100 n1", 100));
        assert_eq!(holder(b"100 n1"), Some("n1"));
        assert_eq!(holder(b"100"), None);
        assert!(lapsed(b"garbage", 0));
    }

    #[test]
    fn ids_differ_by_kind_and_fit_a_file_name() {
        let name: RepositoryName = "a".parse().unwrap();
        let tag: Tag = "sha256".parse().unwrap();
        let digest: Digest =
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse()
                .unwrap();
        let by_tag = lease_id(&name, Leased::Tag(&tag));
        assert_ne!(by_tag, lease_id(&name, Leased::Digest(&digest)));
        assert_eq!(by_tag.len(), 64);
    }
}
