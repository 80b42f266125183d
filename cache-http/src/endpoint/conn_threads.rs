//! Threads that serve connections, each with a single-threaded tokio
//! runtime of its own ([`EndpointConfig::connection_threads`]). A leaf: it
//! depends on no other endpoint module.
//!
//! On tokio's multi-threaded runtime a request's wake-ups hop between
//! worker threads: the I/O driver on one worker readies a connection whose
//! task another worker then runs, and an idle worker is woken (a futex) to
//! steal work. Profiled under wrk (random 64 KiB ranges, BENCHMARKS.md
//! "Serving"), that cost the endpoint ~5 µs of CPU per request: 24.3 µs
//! with two workers against 19.5 µs with one (nginx, one process per core:
//! 18.5 µs). Here a connection lives on one thread from accept to close,
//! with its socket registered with that thread's own I/O driver, as nginx
//! keeps a connection in one worker process.
//!
//! The accept loop stays on the caller's runtime and hands each
//! connection to the next thread in turn, as a [`ConnJob`]: a closure run
//! on that thread's runtime that takes the socket up there (registering it
//! with that runtime's driver) and returns the connection's future.
//! Objects' supervisors and fills do not follow a request onto its thread
//! when the store names a runtime for them
//! (`cache_core::StoreOptions::runtime`).
//!
//! [`EndpointConfig::connection_threads`]: super::config::EndpointConfig::connection_threads

use std::future::Future;
use std::pin::Pin;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// A connection's future, run to its end on a connection thread.
pub(crate) type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Makes a connection's future on the runtime that will run it.
pub(crate) type ConnJob = Box<dyn FnOnce() -> ConnFuture + Send>;

/// The connection threads of one serving endpoint.
pub(crate) struct ConnThreads {
    senders: Vec<mpsc::UnboundedSender<ConnJob>>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
}

impl ConnThreads {
    /// Starts `n` threads; none for 0 (then [`ConnThreads::run`] gives
    /// every job back, to be run on the caller's runtime).
    pub(crate) fn start(n: usize) -> std::io::Result<ConnThreads> {
        let mut threads = ConnThreads {
            senders: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            next: 0,
        };
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = mpsc::unbounded_channel();
            let thread = std::thread::Builder::new()
                .name(format!("blockcache-conn-{i}"))
                .spawn(move || serve_jobs(runtime, rx))?;
            threads.senders.push(tx);
            threads.threads.push(thread);
        }
        Ok(threads)
    }

    /// Runs `job` on the next thread, round robin. Gives it back when
    /// there are no threads, or when that thread has ended (it panicked).
    pub(crate) fn run(&mut self, job: ConnJob) -> Result<(), ConnJob> {
        if self.senders.is_empty() {
            return Err(job);
        }
        let i = self.next % self.senders.len();
        self.next = self.next.wrapping_add(1);
        self.senders[i].send(job).map_err(|e| e.0)
    }

    /// Cuts the connections still running and waits for the threads to
    /// end (on a blocking thread: joining blocks).
    pub(crate) async fn shutdown(self) {
        let ConnThreads {
            senders, threads, ..
        } = self;
        drop(senders);
        if threads.is_empty() {
            return;
        }
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::warn!("a connection thread panicked");
                }
            }
        })
        .await;
        if let Err(e) = joined {
            tracing::warn!(error = %e, "waiting for the connection threads failed");
        }
    }
}

/// A connection thread: runs each job's connection until the sender is
/// dropped, then cuts the connections still running.
fn serve_jobs(runtime: tokio::runtime::Runtime, mut jobs: mpsc::UnboundedReceiver<ConnJob>) {
    runtime.block_on(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                job = jobs.recv() => match job {
                    // Made inside a task of this runtime: the socket is
                    // registered with this thread's driver.
                    Some(job) => {
                        conns.spawn(async move { job().await });
                    }
                    None => break,
                },
                // Reap ended connections so the set stays small.
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
    });
    // Blocking work a request started (a store look-up) gets a moment to
    // end; the process is usually exiting.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn jobs_run_on_their_threads_in_turn_and_end_with_shutdown() {
        let mut threads = ConnThreads::start(2).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..4 {
            let (tx, ran) = (tx.clone(), ran.clone());
            let job: ConnJob = Box::new(move || {
                // Made on the thread's runtime: a runtime is current.
                let on_runtime = tokio::runtime::Handle::try_current().is_ok();
                Box::pin(async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                    let name = std::thread::current().name().map(str::to_owned);
                    let _ = tx.send((name, on_runtime));
                })
            });
            assert!(threads.run(job).is_ok());
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            let (name, on_runtime) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(on_runtime);
            names.push(name.unwrap());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "blockcache-conn-0",
                "blockcache-conn-0",
                "blockcache-conn-1",
                "blockcache-conn-1"
            ]
        );
        // A connection still running when the threads shut down is cut.
        struct OnDrop(Arc<AtomicUsize>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let cut = Arc::new(AtomicUsize::new(0));
        let guard = OnDrop(cut.clone());
        let job: ConnJob = Box::new(move || {
            Box::pin(async move {
                let _guard = guard;
                let _ = started_tx.send(());
                let _ = held_rx.await;
            })
        });
        assert!(threads.run(job).is_ok());
        tokio::time::timeout(Duration::from_secs(10), started_rx)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), threads.shutdown())
            .await
            .unwrap();
        assert_eq!(cut.load(Ordering::SeqCst), 1, "the held connection was cut");
        drop(held_tx);
        assert_eq!(ran.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn without_threads_jobs_come_back() {
        let mut threads = ConnThreads::start(0).unwrap();
        let job: ConnJob = Box::new(|| Box::pin(async {}));
        assert!(threads.run(job).is_err());
    }
}
