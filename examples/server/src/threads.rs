//! Connection threads: every accepted connection is served, to its end, by one thread running
//! a single-threaded runtime of its own, one such thread per CPU.
//!
//! Why not tokio's work-stealing runtime: there a connection's task moves between worker
//! threads whenever another worker wakes first (a part written on the blocking pool, data on
//! the socket), and every move takes the request's buffers and hash state to another core's
//! cache (`perf`: one upload's task ran about half the time on each worker, and the two used
//! 1.12 cores between them). Every large and small workload gained (measured: docs/decisions/
//! 2026-12-07-measured-and-adopted.md).
//!
//! The cost is the tail of small requests under a saturating load: 32 connections sending
//! manifest GETs and blob HEADs as fast as they can, p50 0.80 → 0.53 ms but p99 1.5 → 4.5 ms.
//! A thread's connections wait while the CPU runs something else, where on the work-stealing
//! runtime another worker took them over.
//!
//! A new connection goes to the thread with the least work open, so threads share
//! connections evenly; what they cannot share is one HTTP/1 connection's work, which on the
//! work-stealing runtime also ran on one core at a time. HTTP/2 streams are spawned the same
//! way (the threads are hyper's executor), so the uploads one HTTP/2 connection carries at once
//! are hashed on every core.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::{Builder, Handle};

/// The threads, and how much work each has open. Clones share the threads.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionThreads {
    threads: Arc<[ConnectionThread]>,
}

#[derive(Debug)]
struct ConnectionThread {
    runtime: Handle,
    /// Connections and HTTP/2 streams running on this thread.
    open: Arc<AtomicUsize>,
}

/// Counts work as open on its thread until dropped, however the work ends.
struct OpenWork(Arc<AtomicUsize>);

impl Drop for OpenWork {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one). They run until the process exits.
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let threads = (0..count.max(1))
            .map(|index| {
                let runtime = Builder::new_current_thread().enable_all().build()?;
                let handle = runtime.handle().clone();
                std::thread::Builder::new()
                    .name(format!("berth-conn-{index}"))
                    .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
                Ok(ConnectionThread {
                    runtime: handle,
                    open: Arc::new(AtomicUsize::new(0)),
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { threads })
    }

    /// One thread per CPU the process may use.
    pub(crate) fn per_cpu() -> std::io::Result<Self> {
        Self::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Runs `work` (a connection, or an HTTP/2 stream) on the thread with the least work
    /// open. It is first polled there, so what it registers with a runtime (a connection's
    /// socket) belongs to that thread's.
    pub(crate) fn spawn<F>(&self, work: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(thread) = self
            .threads
            .iter()
            .min_by_key(|thread| thread.open.load(Ordering::Relaxed))
        else {
            return;
        };
        thread.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenWork(Arc::clone(&thread.open));
        thread.runtime.spawn(async move {
            let _open = open;
            work.await
        });
    }
}

/// hyper's executor: the tasks it spawns are HTTP/2 streams.
impl<F> hyper::rt::Executor<F> for ConnectionThreads
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.spawn(future);
    }
}
