//! Threads of their own for the node's steady background work: writing usage events and
//! detecting anomalies in them.
//!
//! **Architecture Invariant:** on a multi-threaded runtime, the usage writer and the
//! anomaly tail run on dedicated threads, never on the runtime's workers, which serve
//! requests, and they end each stretch of work with [`pause`]. Tested by
//! `tests::background_work_runs_on_a_thread_of_its_own`.
//!
//! Why: on a node short of cores the worker waited for these tasks' stretches (a batch
//! of events written to SQLite, a page of events read back and observed): the tail
//! observed on the worker itself, and each blocking job borrowed a worker's thread
//! (`block_in_place`) while the runtime moved the worker to another thread. On a thread
//! of its own, a stretch competes with requests in the kernel's scheduler, and the
//! kernel lets a thread it has picked run to the next tick (4 ms here) unless it leaves
//! the core: [`pause`] leaves it between stretches of at most ~1 ms, where a yield to the
//! runtime would go unseen by the kernel. On the worker, the writer also fell behind
//! under batch load and dropped events; here it keeps up (BENCHMARKS.md, "Background
//! work on threads of its own").
//!
//! They keep the same priority as the workers. At nice 5 or 10 their share of a core
//! that requests kept busy was too small: before batches waited for the writer, it fell
//! behind under batch load and dropped millions of events. With the wait it drops none
//! there, but single verifications never wait, and on two unpinned cores the writer
//! needs more of a core (~13%) than a nice-10 thread gets beside a busy worker (~10%);
//! the p99 gain was within this VM's noise (BENCHMARKS.md, "Nice 10 again, now that
//! batches wait"). A request-serving core shares itself fairly with the work those
//! requests cause, which is what keeps recording complete.
//!
//! Only work that wakes on a timer moves here: each wake of such a thread from a worker
//! would cost a futex call, so per-event hand-offs (the last-use queue) stay on the
//! runtime.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// The end of a background task: resolves to its output, or to an error if it panicked.
pub struct Background<T> {
    done: oneshot::Receiver<T>,
}

impl<T> Future for Background<T> {
    type Output = Result<T, BackgroundPanicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.done)
            .poll(cx)
            .map(|r| r.map_err(|_| BackgroundPanicked))
    }
}

/// A background task ended without its output (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("the background task panicked")]
pub struct BackgroundPanicked;

/// Runs `task` beside request serving: on a multi-threaded runtime, on a thread named
/// `name` of its own, driving the task with the runtime's timers and IO; on a
/// current-thread runtime (tests, tools), or if no thread can be started, as a task of
/// the runtime like any other.
pub fn spawn<F>(name: &str, task: F) -> Background<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, done) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        spawn_as_task(task, tx);
        return Background { done };
    }
    // The task and its sender go to the thread, or come back if it cannot start.
    let (start, started) = std::sync::mpsc::sync_channel::<(F, oneshot::Sender<F::Output>)>(1);
    let handle = runtime.clone();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let Ok((task, tx)) = started.recv() else {
                return;
            };
            BACKGROUND_THREAD.set(true);
            let _ = tx.send(handle.block_on(task));
        });
    match spawned {
        Ok(_) => {
            start
                .send((task, tx))
                .expect("the background thread waits for its task");
        }
        Err(e) => {
            tracing::warn!(error = %e, task = name, "no thread for background work; it runs on the runtime");
            spawn_as_task(task, tx);
        }
    }
    Background { done }
}

/// `task` as a task of the current runtime, its output sent to `tx`.
fn spawn_as_task<F>(task: F, tx: oneshot::Sender<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(async move {
        let _ = tx.send(task.await);
    });
}

thread_local! {
    /// Whether this thread is one of [`spawn`]'s.
    static BACKGROUND_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lets requests have the core between stretches of background work. On a background
/// thread the kernel must be told ([`keyward_store::slice::give_way`]): its scheduler
/// lets the running thread go on to the next tick (4 ms here), whoever else became
/// runnable. Elsewhere the task yields to the runtime, which runs whatever else is ready.
pub async fn pause() {
    if BACKGROUND_THREAD.get() {
        keyward_store::slice::give_way();
    } else {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn background_work_runs_on_a_thread_of_its_own() {
        let worker = tokio::spawn(async { std::thread::current().id() })
            .await
            .unwrap();
        let (thread, name, paused) = spawn("keyward-test-bg", async {
            // The runtime's timers work there.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            pause().await;
            let me = std::thread::current();
            (
                me.id(),
                me.name().map(str::to_owned),
                BACKGROUND_THREAD.get(),
            )
        })
        .await
        .unwrap();
        assert_ne!(thread, worker, "not on the runtime's worker");
        assert_eq!(name.as_deref(), Some("keyward-test-bg"));
        assert!(paused, "pauses there ask the kernel, not the runtime");
        assert!(!BACKGROUND_THREAD.get());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn on_a_current_thread_runtime_it_is_a_task() {
        let here = std::thread::current().id();
        let there = spawn("keyward-test-bg", async { std::thread::current().id() })
            .await
            .unwrap();
        assert_eq!(there, here);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_panic_is_an_error_for_whoever_waits() {
        let ended = spawn("keyward-test-bg", async {
            if std::thread::current().name() == Some("keyward-test-bg") {
                panic!("background task failed");
            }
        })
        .await;
        assert!(ended.is_err());
    }
}
