//! Keeping the code of the paths a plain request does not take out of the code it
//! does take.
//!
//! An `async fn` awaited inside another is compiled into its caller's `poll`: the
//! hyper client path (requests with a body, upgrades), a connect, a held request's
//! wait all ended up in `Proxy::forward`'s machine code, between the blocks every
//! bodiless request on a pooled connection runs. A request then fetches more
//! instruction-cache lines than the code it executes needs, and in a busy host's
//! shared cores those lines are fetched again for every request (benches/JOURNAL.md,
//! ninth pass: more simulated first-level misses per request than nginx's).
//! [`Cold`] polls its future through a function of its own, never inlined,
//! so that code stays in one place off the common path; the future's state still
//! lives inline (no allocation) and each poll costs one call. Synchronous rare paths
//! get the same with `#[cold] #[inline(never)]` where they are written.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// A future whose `poll` is a call, not inlined into its caller's.
    #[must_use = "futures do nothing unless awaited"]
    pub struct Cold<F> {
        #[pin]
        inner: F,
    }
}

/// Wraps the future of a path off the common one (see the module documentation).
pub(crate) fn cold<F: Future>(inner: F) -> Cold<F> {
    Cold { inner }
}

impl<F: Future> Future for Cold<F> {
    type Output = F::Output;

    #[cold]
    #[inline(never)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cold_future_gives_its_inner_output_once_it_is_ready() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiting = tokio::spawn(cold(async move { rx.await.map(|v: u32| v + 1) }));
        tx.send(41).expect("the receiver is waiting");
        let out = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the cold future finished")
            .expect("the task did not panic");
        assert_eq!(out, Ok(42));
    }
}
