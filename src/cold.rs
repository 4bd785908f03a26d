//! Keeping rare paths' code out of the request path's.
//!
//! An `async fn` awaited inside another is compiled into its caller's `poll`: the
//! hyper client path, a connect, a held request's wait all end up in
//! `Proxy::forward`'s machine code, between the blocks every request runs. A
//! request then fetches more instruction-cache lines than the code it executes
//! needs (callgrind's cache simulation: ~1 350 first-level misses per request, most
//! of them in `forward`). [`Cold`] polls its future through a function of its own,
//! never inlined, so that code stays in one place off the common path; the future's
//! state still lives inline (no allocation). Synchronous rare paths get the same with
//! `#[cold] #[inline(never)]` where they are written.

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

/// Wraps a rare path's future (see the module documentation).
pub fn cold<F: Future>(inner: F) -> Cold<F> {
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
