//! Work too long for a runtime worker, run on tokio's blocking pool and awaited.
//!
//! A worker that parses a 10 000-backend config or builds its snapshot serves no
//! request meanwhile (with `--workers 1`, none at all). The caller still waits, so
//! work it orders stays in order.

/// Runs `f` on the blocking pool and waits for its result.
///
/// A panic in `f` resumes in the caller, as if `f` had run there. `None` only when
/// the runtime is shutting down and cancelled the job (`what` names it in the log).
pub(crate) async fn run<T, F>(what: &'static str, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(done) => Some(done),
        Err(err) => match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => {
                tracing::warn!(%err, "{what} cancelled: the runtime is shutting down");
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_job_runs_off_the_runtime_thread_and_its_panic_reaches_the_caller() {
        let here = std::thread::current().id();
        let there = run("test job", || std::thread::current().id()).await;
        assert_ne!(there, Some(here));
        let panicked = tokio::spawn(run("test job", || panic!("in the job"))).await;
        assert!(panicked.unwrap_err().is_panic());
    }
}
