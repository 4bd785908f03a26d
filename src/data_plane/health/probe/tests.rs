//! Component tests of the probe state machine and loop, under a paused clock.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{broadcast, mpsc};

use super::*;
use crate::control_plane::config::spec::{InitialHealth, PoolName, StatusRange};
use crate::data_plane::health::HealthEvent;

const PASS: ProbeOutcome = ProbeOutcome::Status(200);
const FAIL: ProbeOutcome = ProbeOutcome::Status(503);

fn spec(rise: u32, fall: u32, start_period: Duration) -> ProbeSpec {
    ProbeSpec {
        path: http::uri::PathAndQuery::from_static("/health"),
        host: None,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(50),
        rise,
        fall,
        start_period,
        expect_status: StatusRange::DEFAULT,
        initial: InitialHealth::Unknown,
        grpc: None,
    }
}

fn health(status: HealthStatus) -> BackendHealth {
    let h = BackendHealth::new();
    h.set_status(status);
    h
}

/// Records `outcomes` in order; returns the status after each.
fn feed(h: &BackendHealth, spec: &ProbeSpec, outcomes: &[ProbeOutcome]) -> Vec<HealthStatus> {
    outcomes
        .iter()
        .map(|&o| {
            record(h, spec, o);
            h.status()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn unknown_turns_healthy_on_the_first_pass() {
    let s = spec(3, 3, Duration::ZERO);
    let h = health(HealthStatus::Unknown);
    let r = record(&h, &s, PASS);
    assert_eq!(
        r.change,
        Some((HealthStatus::Unknown, HealthStatus::Healthy)),
        "one pass is enough from unknown, whatever rise is"
    );
}

#[tokio::test(start_paused = true)]
async fn rise_and_fall_are_counted_in_a_row() {
    use HealthStatus::{Healthy as H, Unhealthy as U};
    let s = spec(2, 3, Duration::ZERO);
    let h = health(H);
    // Two failures, a pass resets the streak, then three in a row turn it unhealthy.
    assert_eq!(
        feed(&h, &s, &[FAIL, FAIL, PASS, FAIL, FAIL]),
        [H, H, H, H, H]
    );
    assert_eq!(h.probe_failures(), 2);
    let r = record(&h, &s, ProbeOutcome::ConnectFailed);
    assert_eq!(r.change, Some((H, U)));
    // Further failures change nothing; a pass, a failure, then rise = 2 passes.
    assert_eq!(record(&h, &s, ProbeOutcome::TimedOut).change, None);
    assert_eq!(feed(&h, &s, &[PASS, FAIL, PASS]), [U, U, U]);
    assert_eq!(h.probe_passes(), 1);
    assert_eq!(feed(&h, &s, &[PASS]), [H]);
    // Outside expect_status is a failure even though the backend answered.
    let h = health(H);
    let s = spec(1, 1, Duration::ZERO);
    assert_eq!(feed(&h, &s, &[ProbeOutcome::Status(404)]), [U]);
    let last = h.last_probe().expect("recorded");
    assert_eq!(
        (last.outcome, last.passed),
        (ProbeOutcome::Status(404), false)
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_becomes_unhealthy_after_fall_failures() {
    use HealthStatus::{Unhealthy as U, Unknown as K};
    let s = spec(2, 2, Duration::ZERO);
    let h = health(K);
    assert_eq!(feed(&h, &s, &[FAIL, FAIL]), [K, U]);
    // From unhealthy it now takes `rise` passes.
    assert_eq!(feed(&h, &s, &[PASS]), [U]);
}

#[tokio::test(start_paused = true)]
async fn start_period_failures_do_not_count_until_the_first_pass() {
    use HealthStatus::{Healthy as H, Unhealthy as U, Unknown as K};
    let s = spec(1, 1, Duration::from_secs(10));
    let h = health(K);
    assert_eq!(feed(&h, &s, &[FAIL]), [K]);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(feed(&h, &s, &[FAIL, FAIL]), [K, K]);
    assert_eq!(h.probe_failures(), 0, "not counted while booting");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        feed(&h, &s, &[FAIL]),
        [U],
        "counted once start_period is over"
    );

    // A pass ends the start period early: later failures count at once.
    let h = health(K);
    assert_eq!(feed(&h, &s, &[PASS, FAIL]), [H, U]);
}

fn target(spec: ProbeSpec) -> (ProbeTarget, broadcast::Receiver<HealthEvent>) {
    let (tx, rx) = broadcast::channel(16);
    let target = ProbeTarget {
        pool: Arc::new(PoolHealth::new(PoolName("p".into()), tx)),
        state: Arc::new(BackendState::new("127.0.0.1:1".parse().expect("addr"))),
        spec: Arc::new(spec),
    };
    target.state.health().set_status(HealthStatus::Unknown);
    (target, rx)
}

#[tokio::test(start_paused = true)]
async fn the_loop_jitters_the_first_probe_then_keeps_the_interval() {
    let (target, _events) = target(spec(1, 1, Duration::ZERO));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(target, FirstProbe::Spread, cancel.clone(), move || {
        // A receiver dropped at the end of the test is fine.
        let _ = tx.send(Instant::now());
        async { PASS }
    }));
    let mut at = Vec::new();
    for _ in 0..5 {
        at.push(rx.recv().await.expect("probe"));
    }
    // The jitter is drawn below the interval, but tokio's timer rounds a
    // deadline up to its next millisecond: a draw above 99 ms fires at 100.
    assert!(
        at[0] - start <= Duration::from_millis(100),
        "{:?}",
        at[0] - start
    );
    for pair in at.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_millis(100));
    }
    cancel.cancel();
    task.await.expect("the loop ends on cancel");
}

#[tokio::test(start_paused = true)]
async fn first_probes_of_many_backends_are_spread() {
    let delays: Vec<Duration> = (0..100)
        .map(|_| FirstProbe::Spread.delay(Duration::from_secs(2)))
        .collect();
    assert!(delays.iter().all(|d| *d < Duration::from_secs(1)));
    let mut ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
    ms.sort_unstable();
    ms.dedup();
    assert!(
        ms.len() > 80,
        "first probes bunch up: {} distinct ms",
        ms.len()
    );
}

/// The instants of the first `n` probes of a loop started now with `first`, probing
/// every `interval`.
async fn probe_times(first: FirstProbe, interval: Duration, n: usize) -> Vec<Duration> {
    let mut s = spec(1, 1, Duration::ZERO);
    s.interval = interval;
    let (target, _events) = target(s);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(target, first, cancel.clone(), move || {
        let _ = tx.send(Instant::now());
        async { PASS }
    }));
    let mut at = Vec::new();
    for _ in 0..n {
        at.push(rx.recv().await.expect("probe") - start);
    }
    cancel.cancel();
    task.await.expect("the loop ends on cancel");
    at
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_appears_later_is_probed_at_once_then_every_interval() {
    // The default interval: a start-up backend may wait up to a second.
    let interval = ProbeSpec::DEFAULT_INTERVAL;
    let at = probe_times(FirstProbe::Newcomer { batch: 1 }, interval, 3).await;
    // Below a millisecond, which tokio's timer rounds up to its next one.
    assert!(
        at[0] <= Duration::from_millis(1),
        "first probe after {:?}",
        at[0]
    );
    assert_eq!(at[1] - at[0], interval);
    assert_eq!(at[2] - at[1], interval);
}

#[tokio::test(start_paused = true)]
async fn newcomers_are_spread_briefly_and_never_longer_than_at_start_up() {
    fastrand::seed(7);
    let interval = ProbeSpec::DEFAULT_INTERVAL;
    let delays: Vec<Duration> = (0..200)
        .map(|_| FirstProbe::Newcomer { batch: 200 }.delay(interval))
        .collect();
    assert!(delays.iter().all(|d| *d < Duration::from_millis(200)));
    let mut ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
    ms.sort_unstable();
    ms.dedup();
    assert!(
        ms.len() > 80,
        "a batch bunches up: {} distinct ms",
        ms.len()
    );
    // A huge batch is capped like the start-up spread.
    let huge = FirstProbe::Newcomer { batch: usize::MAX };
    assert!((0..100).all(|_| huge.delay(interval) < Duration::from_secs(1)));
    // And never beyond a short interval.
    let short = Duration::from_millis(50);
    assert!((0..100).all(|_| huge.delay(short) < short));
}

#[tokio::test(start_paused = true)]
async fn start_up_backends_keep_their_random_first_delay() {
    fastrand::seed(11);
    let interval = ProbeSpec::DEFAULT_INTERVAL;
    let firsts: Vec<Duration> = (0..20)
        .map(|_| FirstProbe::Spread.delay(interval))
        .collect();
    assert!(firsts.iter().all(|d| *d < Duration::from_secs(1)));
    assert!(
        firsts.iter().any(|d| *d > Duration::from_millis(100)),
        "start-up probes are spread over the second: {firsts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn hanging_probes_time_out_and_transitions_are_published() {
    let (target, mut events) = target(spec(1, 2, Duration::ZERO));
    let state = Arc::clone(&target.state);
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(target, FirstProbe::Spread, cancel.clone(), move || {
        counted.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<ProbeOutcome>()
    }));
    let event = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .expect("within fall × interval + timeout")
        .expect("event");
    assert_eq!(
        event.change,
        HealthChange::Status {
            from: HealthStatus::Unknown,
            to: HealthStatus::Unhealthy
        }
    );
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    assert_eq!(
        state.health().last_probe().map(|p| p.outcome),
        Some(ProbeOutcome::TimedOut)
    );
    cancel.cancel();
    task.await
        .expect("a probe in progress is abandoned on cancel");
}

/// Probes with the default 2 s interval of a backend that listens only from
/// `ready` on (fails before): the instants of the probes until `n`, and the
/// backend's status changes.
async fn starting_backend(
    ready: Duration,
    fall: u32,
    n: usize,
) -> (Vec<Duration>, Vec<HealthChange>) {
    let mut s = spec(1, fall, Duration::ZERO);
    s.interval = ProbeSpec::DEFAULT_INTERVAL;
    s.timeout = Duration::from_millis(100);
    let (target, mut events) = target(s);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        target,
        FirstProbe::Newcomer { batch: 1 },
        cancel.clone(),
        move || {
            let at = Instant::now() - start;
            let _ = tx.send(at);
            async move {
                if at >= ready {
                    PASS
                } else {
                    FAIL
                }
            }
        },
    ));
    let mut at = Vec::new();
    for _ in 0..n {
        at.push(rx.recv().await.expect("probe"));
    }
    cancel.cancel();
    task.await.expect("the loop ends on cancel");
    let mut changes = Vec::new();
    while let Ok(e) = events.try_recv() {
        changes.push(e.change);
    }
    (at, changes)
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_never_passed_is_retried_quickly_and_passes_within_a_retry() {
    // Listening 300 ms after it was discovered: the first probe fails, the
    // retries at 250 and 500 ms find it, not the next regular probe at 2 s.
    let (at, changes) = starting_backend(Duration::from_millis(300), 3, 4).await;
    assert!(at[0] <= Duration::from_millis(1), "{at:?}");
    assert_eq!(at[1] - at[0], STARTING_RETRY);
    assert_eq!(at[2] - at[1], STARTING_RETRY);
    assert_eq!(
        changes,
        [HealthChange::Status {
            from: HealthStatus::Unknown,
            to: HealthStatus::Healthy
        }],
        "healthy at the retry that passed"
    );
    // Healthy: back to the regular interval from the first tick.
    assert_eq!(at[3] - at[0], ProbeSpec::DEFAULT_INTERVAL);
}

#[tokio::test(start_paused = true)]
async fn retries_of_a_backend_that_never_passed_do_not_count_towards_fall() {
    // Never listening, fall 2: the retries between regular probes fail too, but
    // it turns unhealthy at the second regular probe (2 s), as without them.
    let (at, changes) = starting_backend(Duration::from_secs(3600), 2, 20).await;
    let regular: Vec<&Duration> = at.iter().filter(|d| d.as_millis() % 2000 <= 1).collect();
    assert!(regular.len() >= 2, "{at:?}");
    assert_eq!(
        changes,
        [HealthChange::Status {
            from: HealthStatus::Unknown,
            to: HealthStatus::Unhealthy
        }]
    );
    // Retries stop once it is unhealthy (from 2 s on: one probe per interval),
    // and they stay clear of the next regular probe before that.
    let before: Vec<&Duration> = at.iter().filter(|d| **d < Duration::from_secs(2)).collect();
    assert!(before.len() > 2 && before.len() <= 8, "{at:?}");
    let after: Vec<Duration> = at
        .iter()
        .copied()
        .filter(|d| *d >= Duration::from_secs(2))
        .collect();
    for pair in after.windows(2) {
        assert_eq!(pair[1] - pair[0], ProbeSpec::DEFAULT_INTERVAL, "{at:?}");
    }
}
