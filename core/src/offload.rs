//! Work the driver may hand to another thread: hashing an upload's parts, so that the task
//! receiving a large body only receives while a second core hashes (a 1 GiB push in one PUT,
//! 2 cores: 1,185 → 1,425 MB/s; see docs/storage.md). The driver starts no threads: the host
//! supplies them (tokio's blocking pool, or `own_thread`), or the driver hashes inline.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

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
    batches: VecDeque<Chunks>,
    /// Bytes queued and not yet hashed (including the batch being hashed).
    pending: usize,
    closed: bool,
    /// The hasher, once every batch is hashed and the queue closed.
    finished: Option<Hasher>,
    /// The receiving task, waiting for room in the queue or for the hasher.
    waiting: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An upload's hasher running on a thread of its own for the length of one request body:
/// batches of bytes are queued in order and hashed there one after another. The thread stays
/// busy while batches wait, instead of being woken once per part (on two busy cores a woken
/// thread waited 0.5 ms for a core, against 1.1 ms to hash a 2 MiB part).
pub(crate) struct HashQueue {
    shared: Arc<Shared>,
    /// Finishes once the work ran, or was dropped by the host.
    work: Option<BoxFuture<'static, ()>>,
}

impl HashQueue {
    /// Starts hashing with `hasher` by way of `offload`.
    pub(crate) fn start(offload: &Offload, mut hasher: Hasher) -> Self {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let work = offload(Box::new(move || {
            let mut state = worker.lock();
            loop {
                if let Some(batch) = state.batches.pop_front() {
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
                } else if state.closed {
                    state.finished = Some(hasher);
                    if let Some(waker) = state.waiting.take() {
                        waker.wake();
                    }
                    return;
                } else {
                    state = worker
                        .queued
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }));
        Self {
            shared,
            work: Some(work),
        }
    }

    /// Queues `batch` once fewer than `most` bytes wait (so a batch larger than `most` is
    /// still queued, alone); `false` if the host dropped the work.
    pub(crate) async fn push(&mut self, batch: Chunks, most: usize) -> bool {
        let room = self.until(|state| state.pending < most).await && self.work.is_some();
        if room {
            let mut state = self.shared.lock();
            state.pending += batch.iter().map(Bytes::len).sum::<usize>();
            state.batches.push_back(batch);
            drop(state);
            self.shared.queued.notify_one();
        }
        room
    }

    /// Closes the queue: its thread ends once everything queued is hashed.
    pub(crate) fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.queued.notify_one();
    }

    /// Closes the queue; the hasher once everything queued is hashed, `None` if the host
    /// dropped the work.
    pub(crate) async fn finish(mut self) -> Option<Hasher> {
        self.close();
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
