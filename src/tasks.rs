//! Background tasks that cannot end unnoticed.
//!
//! Every long-lived task of a gateway (the controller, the rollout manager,
//! Docker discovery, each health probe, the admin server, file reload, metrics
//! upkeep) runs as its own tokio task, and a watcher awaits it through a
//! [`TaskWatch`]. A task that ends before it was told to stop — returned,
//! panicked or was aborted — is an error: logged at error level with its name and
//! how it ended, counted in `sluicegate_task_exits_total{task}`, and listed by
//! [`TaskWatch::ended`], which makes `/readyz` answer 503 naming it. A task that
//! ends after its stop signal (shutdown, a removed backend's probe) ended as
//! planned and is not reported.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::metrics::Registrar;

/// The names the gateway's tasks are watched under (the `task` label).
pub mod name {
    pub const CONTROLLER: &str = "controller";
    pub const ROLLOUTS: &str = "rollout_manager";
    pub const DISCOVERY: &str = "discovery";
    pub const PROBES: &str = "probes";
    pub const ADMIN: &str = "admin";
    pub const RELOAD: &str = "reload";
    pub const METRICS: &str = "metrics_upkeep";
}

/// Which watched tasks ended unplanned; cheap to clone (one per gateway).
#[derive(Clone, Debug, Default)]
pub struct TaskWatch {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Names of tasks that ended unplanned, in order, each once.
    ended: Mutex<Vec<&'static str>>,
    /// Live tasks, for [`TaskWatch::abort_one`].
    live: Mutex<HashMap<u64, (&'static str, AbortHandle)>>,
    next_id: AtomicU64,
    /// Where `task_exits_total` is counted: the gateway's own recorder.
    metrics: OnceLock<Registrar>,
}

/// How a watched task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Returned,
    Panicked,
    Aborted,
}

impl TaskWatch {
    /// A watch with no task yet.
    pub fn new() -> TaskWatch {
        TaskWatch::default()
    }

    /// Counts unplanned ends into `metrics` (the gateway's recorder) from now on;
    /// the first call wins.
    pub fn count_exits_into(&self, metrics: Registrar) {
        let _already_set = self.inner.metrics.set(metrics);
    }

    /// A future that waits for `task` (already spawned) to end and reports the end
    /// unless `planned` was cancelled by then. Spawn it on a task tracker, so
    /// shutdown waits for the task too.
    pub fn watched<T: Send + 'static>(
        &self,
        name: &'static str,
        task: JoinHandle<T>,
        planned: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.live).insert(id, (name, task.abort_handle()));
        let watch = self.clone();
        async move {
            let ending = match task.await {
                Ok(_) => Ending::Returned,
                Err(err) if err.is_panic() => Ending::Panicked,
                Err(_) => Ending::Aborted,
            };
            lock(&watch.inner.live).remove(&id);
            if !planned.is_cancelled() {
                watch.report(name, ending);
            }
        }
    }

    /// Spawns `task` on the current runtime and returns its watcher (see
    /// [`watched`](Self::watched)).
    pub fn spawn<F>(
        &self,
        name: &'static str,
        task: F,
        planned: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.watched(name, tokio::spawn(task), planned)
    }

    /// The tasks that ended unplanned so far (each name once).
    pub fn ended(&self) -> Vec<&'static str> {
        lock(&self.inner.ended).clone()
    }

    /// Fault injection for tests (through [`crate::testing::abort_task`]): aborts one
    /// live task named `name`; false when there is none.
    pub(crate) fn abort_one(&self, name: &str) -> bool {
        let live = lock(&self.inner.live);
        match live.values().find(|(n, _)| *n == name) {
            Some((_, handle)) => {
                handle.abort();
                true
            }
            None => false,
        }
    }

    fn report(&self, name: &'static str, ending: Ending) {
        let how = match ending {
            Ending::Returned => "returned",
            Ending::Panicked => "panicked",
            Ending::Aborted => "was aborted",
        };
        tracing::error!(
            task = name,
            "background task {name} {how} while the gateway runs; /readyz answers 503 until a restart"
        );
        if let Some(metrics) = self.inner.metrics.get() {
            metrics.count_task_exit(name);
        }
        let mut ended = lock(&self.inner.ended);
        if !ended.contains(&name) {
            ended.push(name);
        }
    }
}

/// A poisoned lock only means a panic while it was held; the data (a list of
/// names, a map of handles) is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_returns_or_is_aborted_is_reported_once() {
        let watch = TaskWatch::new();
        let running = CancellationToken::new();
        watch
            .spawn("a", async { panic!("on purpose") }, running.clone())
            .await;
        watch.spawn("b", async {}, running.clone()).await;
        let c = watch.spawn("c", std::future::pending::<()>(), running.clone());
        assert!(watch.abort_one("c"));
        c.await;
        watch.spawn("a", async {}, running.clone()).await;
        assert_eq!(watch.ended(), ["a", "b", "c"]);
        assert!(!watch.abort_one("c"), "c is gone");
    }

    /// Collects what a `fmt` subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_unplanned_end_is_logged_at_error_level_with_its_name() {
        let capture = Capture::default();
        let writer = {
            let capture = capture.clone();
            move || capture.clone()
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        let _log = tracing::subscriber::set_default(subscriber);
        // One thread: the task and its watcher log on this thread's subscriber.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let watch = TaskWatch::new();
            let running = CancellationToken::new();
            watch
                .spawn(name::ROLLOUTS, async { panic!("on purpose") }, running)
                .await;
        });
        let text = String::from_utf8_lossy(&lock(&capture.0)).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("background task rollout_manager panicked"))
            .unwrap_or_else(|| panic!("no line in {text}"));
        assert!(line.contains("ERROR"), "{line}");
    }

    #[tokio::test]
    async fn a_task_that_ends_after_its_stop_signal_is_not_reported() {
        let watch = TaskWatch::new();
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task = watch.spawn("x", async move { until.cancelled().await }, stop.clone());
        stop.cancel();
        task.await;
        assert!(watch.ended().is_empty());
    }
}
