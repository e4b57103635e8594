//! Work the driver may hand to another thread: hashing an upload's parts, so that the task
//! receiving a large body only receives while a second core hashes (measured: docs/decisions/
//! 2026-12-07-measured-and-adopted.md). The driver starts no threads: the host
//! supplies them (tokio's blocking pool, or `own_thread`), or the driver hashes inline.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::digest::Hasher;
use crate::storage::Chunks;

/// Runs a piece of blocking work somewhere else; the future finishes once it has run. A host
/// that drops the work instead makes the request that needed it fail, never hang.
pub type Offload = Arc<dyn Fn(Box<dyn FnOnce() + Send>) -> BoxFuture<'static, ()> + Send + Sync>;

/// Work on tokio's blocking pool (the one [`crate::FsStorage`] writes on), or on a thread of
/// its own when no tokio runtime is running.
#[cfg(feature = "fs")]
pub fn tokio_blocking_pool() -> Offload {
    Arc::new(|work| match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let task = runtime.spawn_blocking(work);
            Box::pin(async move {
                // A task that panicked or was cancelled left no result; the caller sees that.
                let _ = task.await;
            })
        }
        Err(_) => own_thread()(work),
    })
}

/// Each piece of work on a new thread of its own.
pub fn own_thread() -> Offload {
    Arc::new(|work| {
        let done = Arc::new(Mutex::new((false, None::<Waker>)));
        let signal = Arc::clone(&done);
        let spawned = std::thread::Builder::new()
            .name("berth-hash".into())
            .spawn(move || {
                // Set when the work returns or unwinds, so the waiting request never hangs.
                struct Signal(Arc<Mutex<(bool, Option<Waker>)>>);
                impl Drop for Signal {
                    fn drop(&mut self) {
                        let mut done = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                        done.0 = true;
                        if let Some(waker) = done.1.take() {
                            waker.wake();
                        }
                    }
                }
                let _signal = Signal(signal);
                work();
            });
        if spawned.is_err() {
            // No thread: the work is dropped, which the caller sees.
            done.lock().unwrap_or_else(PoisonError::into_inner).0 = true;
        }
        Box::pin(std::future::poll_fn(move |cx: &mut Context<'_>| {
            let mut done = done.lock().unwrap_or_else(PoisonError::into_inner);
            if done.0 {
                Poll::Ready(())
            } else {
                done.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }))
    })
}

/// What the hashing thread and the receiving task share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the hashing thread when a batch is queued or the queue is closed.
    queued: Condvar,
}

#[derive(Default)]
struct State {
    batches: VecDeque<Queued>,
    /// Bytes queued and not yet hashed (including the batch being hashed).
    pending: usize,
    closed: bool,
    /// Whether the thread lets go when nothing arrives for `PAUSED_FOR`: between requests.
    paused: bool,
    /// The hasher, once every batch is hashed and the queue closed (or let go while paused).
    finished: Option<Hasher>,
    /// The last mark the thread reached: the midstate after that many bytes of the upload.
    reached: Option<(u64, String)>,
    /// The receiving task, waiting for room in the queue or for the hasher.
    waiting: Option<Waker>,
}

enum Queued {
    Bytes(Chunks),
    /// Save the midstate, which is the one after this many bytes of the upload.
    Mark(u64),
}

/// How long a paused queue's thread waits for the next request before it lets go (that
/// request then starts a thread of its own with the hasher left behind). The next chunk of a
/// push follows within a millisecond; a client that pauses for longer holds no thread.
const PAUSED_FOR: Duration = Duration::from_millis(50);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An upload's hasher running on a thread of its own: batches of bytes are queued in order and
/// hashed there one after another. The thread stays busy while batches wait, instead of being
/// woken once per part (on two busy cores a woken thread waited 0.5 ms for a core, against
/// 1.1 ms to hash a 2 MiB part). Between the chunks of an upload the queue is paused rather
/// than finished, so the next chunk's bytes join the same queue while the last ones are still
/// being hashed; marks tell which midstate the thread has reached.
pub(crate) struct HashQueue {
    shared: Arc<Shared>,
    /// Finishes once the work ran, or was dropped by the host.
    work: Option<BoxFuture<'static, ()>>,
}

impl HashQueue {
    /// Starts hashing with `hasher` by way of `offload`.
    pub(crate) fn start(offload: &Offload, hasher: Hasher) -> Self {
        Self::start_reached(offload, hasher, None)
    }

    fn start_reached(
        offload: &Offload,
        mut hasher: Hasher,
        reached: Option<(u64, String)>,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        shared.lock().reached = reached;
        let worker = Arc::clone(&shared);
        let work = offload(Box::new(move || {
            let mut state = worker.lock();
            loop {
                match state.batches.pop_front() {
                    Some(Queued::Bytes(batch)) => {
                        drop(state);
                        let mut hashed = 0;
                        for chunk in &batch {
                            hasher.update(chunk);
                            hashed += chunk.len();
                        }
                        drop(batch);
                        state = worker.lock();
                        state.pending -= hashed;
                        if let Some(waker) = state.waiting.take() {
                            waker.wake();
                        }
                    }
                    Some(Queued::Mark(offset)) => state.reached = Some((offset, hasher.save())),
                    None if state.closed => break,
                    None if state.paused => {
                        let (next, waited) = worker
                            .queued
                            .wait_timeout(state, PAUSED_FOR)
                            .unwrap_or_else(PoisonError::into_inner);
                        state = next;
                        if waited.timed_out() && state.paused && state.batches.is_empty() {
                            state.closed = true;
                        }
                    }
                    None => {
                        state = worker
                            .queued
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                }
            }
            state.finished = Some(hasher);
            if let Some(waker) = state.waiting.take() {
                waker.wake();
            }
        }));
        Self {
            shared,
            work: Some(work),
        }
    }

    /// Queues a mark: once the bytes queued before it are hashed, [`HashQueue::reached`]
    /// gives the midstate, which is the one after `offset` bytes of the upload.
    pub(crate) fn mark(&self, offset: u64) {
        self.shared.lock().batches.push_back(Queued::Mark(offset));
        self.shared.queued.notify_one();
    }

    /// The last mark hashed up to: its offset and the midstate there.
    pub(crate) fn reached(&self) -> Option<(u64, String)> {
        self.shared.lock().reached.clone()
    }

    /// Pauses the queue between requests: its thread hashes what is queued, then waits a
    /// little for [`HashQueue::resume`] before it lets go.
    pub(crate) fn pause(&self) {
        self.shared.lock().paused = true;
        self.shared.queued.notify_one();
    }

    /// Takes up a paused queue for another request: the same thread if it still waits, else
    /// a new one with the hasher it left; `None` if the host dropped the work.
    pub(crate) async fn resume(mut self, offload: &Offload) -> Option<Self> {
        {
            let mut state = self.shared.lock();
            if !state.closed {
                state.paused = false;
                drop(state);
                return Some(self);
            }
        }
        let reached = self.reached();
        // Closed: the thread has let go, or is about to.
        let hasher = self.finish_closed().await?;
        Some(Self::start_reached(offload, hasher, reached))
    }

    /// Queues `batch` once fewer than `most` bytes wait (so a batch larger than `most` is
    /// still queued, alone); `false` if the host dropped the work.
    pub(crate) async fn push(&mut self, batch: Chunks, most: usize) -> bool {
        let room = self.until(|state| state.pending < most).await && self.work.is_some();
        if room {
            let mut state = self.shared.lock();
            state.pending += batch.iter().map(Bytes::len).sum::<usize>();
            state.batches.push_back(Queued::Bytes(batch));
            drop(state);
            self.shared.queued.notify_one();
        }
        room
    }

    /// Closes the queue: its thread ends once everything queued is hashed.
    fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.queued.notify_one();
    }

    /// Closes the queue; the hasher once everything queued is hashed, `None` if the host
    /// dropped the work.
    pub(crate) async fn finish(mut self) -> Option<Hasher> {
        self.close();
        self.finish_closed().await
    }

    async fn finish_closed(&mut self) -> Option<Hasher> {
        if !self.until(|state| state.finished.is_some()).await {
            return None;
        }
        self.shared.lock().finished.take()
    }

    /// Waits until `ready` holds; `false` if the work ended (ran or was dropped) first.
    async fn until(&mut self, ready: impl Fn(&State) -> bool) -> bool {
        std::future::poll_fn(|cx: &mut Context<'_>| {
            if let Some(work) = self.work.as_mut()
                && Pin::new(work).poll(cx).is_ready()
            {
                self.work = None;
            }
            let mut state = self.shared.lock();
            if ready(&state) || self.work.is_none() {
                return Poll::Ready(ready(&state));
            }
            // Set under the lock the thread changes the state under: no wake is lost.
            state.waiting = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for HashQueue {
    fn drop(&mut self) {
        // A request that ends early (an error, a dropped body) lets the thread go at once.
        let mut state = self.shared.lock();
        state.batches.clear();
        state.closed = true;
        drop(state);
        self.shared.queued.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn hashes_batches_in_order() {
        let mut queue = HashQueue::start(&own_thread(), Hasher::new(Algorithm::Sha256));
        let mut direct = Hasher::new(Algorithm::Sha256);
        for i in 0..50u8 {
            let batch = vec![Bytes::from(vec![i; 1000]), Bytes::from(vec![i ^ 0x55; 7])];
            direct.update(&batch.concat());
            assert!(queue.push(batch, 4000).await);
        }
        let hashed = queue.finish().await.expect("hasher");
        assert_eq!(hashed.finish(), direct.finish());
    }

    #[test]
    fn dropped_work_yields_nothing() {
        let dropping: Offload = Arc::new(|_work| Box::pin(std::future::ready(())));
        let mut queue = HashQueue::start(&dropping, Hasher::new(Algorithm::Sha256));
        let pushed = queue.push(vec![Bytes::from_static(b"x")], 2).now_or_never();
        assert_eq!(pushed, Some(false));
        assert!(queue.finish().now_or_never().flatten().is_none());
    }
}
