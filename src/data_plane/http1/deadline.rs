//! A deadline watched by one long-lived timer, for deadlines that move forward with
//! every request (a connection's idle or head deadline, a backend connection's
//! response deadline).
//!
//! Resetting a tokio timer re-registers it in the timer wheel, under the wheel's
//! lock; doing so for every request was a measurable share of a request's work
//! (`benches/proxy/callgrind.sh`). [`poll`] re-arms the timer only when it is armed
//! later than the deadline asked for, or when it fired before that deadline (the
//! usual case: the deadline moved on since the timer was armed). A deadline that
//! moves forward with every request then costs a registration about once per
//! timeout period, not once per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// Ready, with the time, once `at` has passed; registers `cx` to be woken then.
pub(crate) fn poll(mut timer: Pin<&mut Sleep>, cx: &mut Context<'_>, at: Instant) -> Poll<Instant> {
    if timer.deadline() > at {
        timer.as_mut().reset(at);
    }
    while timer.as_mut().poll(cx).is_ready() {
        let now = Instant::now();
        if now >= at {
            return Poll::Ready(now);
        }
        // Fired for an earlier deadline than this one.
        timer.as_mut().reset(at);
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use super::*;

    /// Waits on `at` and returns how long it took.
    async fn wait(timer: Pin<&mut Sleep>, at: Instant) -> Duration {
        let started = Instant::now();
        let mut timer = timer;
        poll_fn(|cx| poll(timer.as_mut(), cx, at)).await;
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn each_wait_ends_at_its_own_deadline_whatever_the_timer_was_armed_for() {
        let start = Instant::now();
        let mut timer = std::pin::pin!(tokio::time::sleep_until(start + Duration::from_secs(10)));
        // Armed later than asked: pulled in.
        let took = wait(timer.as_mut(), start + Duration::from_secs(1)).await;
        assert_eq!(took, Duration::from_secs(1));
        // Armed earlier than asked (it has fired): the wait goes on to its own.
        let now = Instant::now();
        let took = wait(timer.as_mut(), now + Duration::from_secs(5)).await;
        assert_eq!(took, Duration::from_secs(5));
        // A deadline already past is ready at once.
        let took = wait(timer.as_mut(), Instant::now() - Duration::from_secs(1)).await;
        assert_eq!(took, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_does_not_reset_an_armed_timer() {
        let start = Instant::now();
        let mut timer = std::pin::pin!(tokio::time::sleep_until(start + Duration::from_secs(1)));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(poll(timer.as_mut(), &mut cx, start + Duration::from_secs(3)).is_pending());
        assert_eq!(
            timer.deadline(),
            start + Duration::from_secs(1),
            "left armed"
        );
    }
}
