//! Threads of their own, at a lower priority, for the node's steady background work:
//! writing usage events and detecting anomalies in them.
//!
//! **Architecture Invariant:** on a multi-threaded runtime, the usage writer and the
//! anomaly tail run on dedicated threads at nice [`BACKGROUND_NICE`] (on Linux), never on
//! the runtime's workers, which serve requests. Tested by
//! `tests::background_work_runs_on_a_lower_priority_thread_of_its_own`.
//!
//! Why: on a node short of cores the worker waited for these tasks' blocking stretches
//! (a batch of events written to SQLite, a page of events read back and observed), and
//! the kernel's fair scheduler let each run its due share in stretches of 2-4 ms
//! (`perf sched timehist`): stalls in the p99 of verify, which yields inside the jobs
//! could not shorten, as the scheduler judged the time owed. At a lower priority their
//! time counts several times over, so the worker gets the core back sooner
//! (BENCHMARKS.md, "Background work at a lower priority"). They still get a share of a
//! busy core (nice 10: about a tenth against one worker that never idles) and all of
//! an idle one; the queue in front of the writer absorbs bursts, and any event dropped
//! or skipped is counted (`keyward_usage_events_dropped_total`,
//! `keyward_anomaly_events_skipped_total`).
//!
//! Only work that wakes on a timer moves here: each wake of such a thread from a worker
//! would cost a futex call, so per-event hand-offs (the last-use queue) stay on the
//! runtime.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// How much lower than the rest of the process background threads run.
pub const BACKGROUND_NICE: i32 = 10;

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

/// Runs `task` behind request serving: on a multi-threaded runtime, on a thread named
/// `name` of its own, at [`BACKGROUND_NICE`], driving the task with the runtime's timers
/// and IO; on a current-thread runtime (tests, tools), or if no thread can be started,
/// as a task of the runtime like any other.
pub fn spawn<F>(name: &str, task: F) -> Background<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, done) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        tokio::spawn(async move {
            let _ = tx.send(task.await);
        });
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
            lower_priority();
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
            tokio::spawn(async move {
                let _ = tx.send(task.await);
            });
        }
    }
    Background { done }
}

thread_local! {
    /// Whether this thread is one of [`spawn`]'s.
    static BACKGROUND_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lets requests have the core between stretches of background work. On a background
/// thread the kernel must be asked (`sched_yield`): its scheduler lets a thread that
/// became runnable run on until the next tick (4 ms here) unless the running one gives
/// way. Elsewhere the task yields to the runtime, which runs whatever else is ready.
pub async fn pause() {
    if BACKGROUND_THREAD.get() {
        std::thread::yield_now();
    } else {
        tokio::task::yield_now().await;
    }
}

/// Lowers the calling thread's priority; best effort (the work runs either way).
#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux the nice value is per thread: PRIO_PROCESS with a thread id names that
    // thread alone.
    let tid = rustix::thread::gettid();
    let now = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(Some(tid), now + BACKGROUND_NICE) {
        tracing::debug!(error = %e, "background thread kept its priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn own_nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn background_work_runs_on_a_lower_priority_thread_of_its_own() {
        let worker_nice = tokio::spawn(async { own_nice() }).await.unwrap();
        let (thread, nice, slept) = spawn("keyward-test-bg", async {
            // The runtime's timers work there.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            (
                std::thread::current().name().map(str::to_owned),
                own_nice(),
                true,
            )
        })
        .await
        .unwrap();
        assert!(slept);
        assert_eq!(thread.as_deref(), Some("keyward-test-bg"));
        assert_eq!(nice, (worker_nice + BACKGROUND_NICE).min(19));
        let after = tokio::spawn(async { own_nice() }).await.unwrap();
        assert_eq!(
            after, worker_nice,
            "the runtime's worker keeps its priority"
        );
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
