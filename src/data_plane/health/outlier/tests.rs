//! Component tests of passive ejection under a paused clock.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::time::{advance, Instant};

use super::*;
use crate::data_plane::health::testing::pool_with;
use crate::data_plane::health::{HealthEvent, HealthStatus};

const SEC: Duration = Duration::from_secs(1);

fn outlier_pool(n: usize, outlier: &str) -> (Arc<Pool>, broadcast::Receiver<HealthEvent>) {
    pool_with(n, &format!("[pools.outlier]\n{outlier}"))
}

fn spec(pool: &Pool) -> OutlierSpec {
    pool.policy().outlier.expect("outlier configured")
}

fn fail(pool: &Pool, i: usize) {
    let b = pool.backends().nth(i).expect("backend");
    pool.record(&spec(pool), b, Outcome::Failure);
}

fn succeed(pool: &Pool, i: usize) {
    let b = pool.backends().nth(i).expect("backend");
    pool.record(&spec(pool), b, Outcome::Success);
}

/// Time left in backend `i`'s running ejection.
fn ejected_for(pool: &Pool, i: usize) -> Option<Duration> {
    let b = pool.backends().nth(i).expect("backend");
    b.state.health().ejected_until().map(|t| t - Instant::now())
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_and_a_success_resets_the_streak() {
    let (pool, _events) = outlier_pool(2, "consecutive_failures = 3\nmax_ejected_percent = 100");
    let b = pool.backends().next().expect("backend");
    for _ in 0..2 {
        fail(&pool, 0);
    }
    succeed(&pool, 0);
    fail(&pool, 0);
    fail(&pool, 0);
    assert!(b.state.is_eligible());
    assert_eq!(b.state.health().consecutive_failures(), 2);
    fail(&pool, 0);
    assert!(!b.state.is_eligible(), "third failure in a row ejects");
    assert_eq!(
        ejected_for(&pool, 0),
        Some(10 * SEC),
        "default base_ejection"
    );
    assert_eq!(b.state.health().status(), HealthStatus::Healthy);
}

#[tokio::test(start_paused = true)]
async fn ejection_doubles_up_to_the_cap_and_probation_decides() {
    let (pool, mut events) = outlier_pool(
        2,
        "consecutive_failures = 1\nbase_ejection = \"1s\"\nmax_ejection = \"5s\"\nmax_ejected_percent = 100",
    );
    let state = &pool.backends().next().expect("backend").state;
    fail(&pool, 0);
    assert_eq!(ejected_for(&pool, 0), Some(SEC));
    // Outcomes of requests sent before the ejection change nothing while it runs.
    fail(&pool, 0);
    succeed(&pool, 0);
    assert_eq!(ejected_for(&pool, 0), Some(SEC));
    advance(SEC - Duration::from_millis(1)).await;
    assert!(!state.is_eligible());
    advance(Duration::from_millis(1)).await;
    assert!(state.is_eligible() && state.health().in_probation());

    // Each failed probation doubles the time: 2 s, 4 s, then the 5 s cap.
    for expected in [2, 4, 5, 5] {
        fail(&pool, 0);
        assert_eq!(ejected_for(&pool, 0), Some(expected * SEC));
        advance(expected * SEC).await;
        assert!(state.health().in_probation());
    }
    assert_eq!(state.health().ejections_total(), 5);

    // A successful probation clears the history: the next ejection is 1 s again.
    succeed(&pool, 0);
    assert!(!state.health().in_probation() && state.is_eligible());
    assert_eq!(state.health().ejection_level(), 0);
    fail(&pool, 0);
    assert_eq!(ejected_for(&pool, 0), Some(SEC));

    let mut changes = Vec::new();
    while let Ok(e) = events.try_recv() {
        changes.push(e.change);
    }
    let levels: Vec<u32> = changes
        .iter()
        .filter_map(|c| match c {
            HealthChange::Ejected { level, .. } => Some(*level),
            _ => None,
        })
        .collect();
    assert_eq!(levels, [1, 2, 3, 4, 5, 1]);
    assert_eq!(changes[5], HealthChange::Restored);
}

#[tokio::test(start_paused = true)]
async fn max_ejected_percent_is_never_exceeded() {
    let (pool, _events) = outlier_pool(
        5,
        "consecutive_failures = 1\nbase_ejection = \"1s\"\nmax_ejected_percent = 40",
    );
    for i in 0..5 {
        fail(&pool, i);
    }
    let ejected = |pool: &Pool| pool.backends().filter(|b| b.state.is_ejected()).count();
    assert_eq!(ejected(&pool), 2, "floor(5 × 40 %) = 2");
    // Backends left in keep trying, and fit once a running ejection ends.
    advance(SEC).await;
    assert_eq!(ejected(&pool), 0);
    for i in 2..5 {
        fail(&pool, i);
    }
    assert_eq!(ejected(&pool), 2);
    fail(&pool, 0);
    fail(&pool, 1);
    assert_eq!(ejected(&pool), 2, "probation failures respect the cap too");

    // 50 % of a single backend is 0: a lone backend is never ejected.
    let (single, _events) = outlier_pool(1, "consecutive_failures = 1");
    fail(&single, 0);
    assert_eq!(ejected(&single), 0);
    // 0 % turns ejection off.
    let (none, _events) = outlier_pool(4, "consecutive_failures = 1\nmax_ejected_percent = 0");
    fail(&none, 0);
    assert_eq!(ejected(&none), 0);
}

#[tokio::test(start_paused = true)]
async fn which_outcomes_count() {
    let (pool, _events) = outlier_pool(1, "count_5xx = false");
    let off = spec(&pool);
    assert_eq!(
        Outcome::of_status(&off, StatusCode::BAD_GATEWAY),
        Outcome::Success
    );
    let on = OutlierSpec {
        count_5xx: true,
        ..off
    };
    assert_eq!(
        Outcome::of_status(&on, StatusCode::BAD_GATEWAY),
        Outcome::Failure
    );
    assert_eq!(
        Outcome::of_status(&on, StatusCode::NOT_FOUND),
        Outcome::Success
    );
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(
        Outcome::of_error(&ProxyError::Connect(refused)),
        Some(Outcome::Failure)
    );
    assert_eq!(
        Outcome::of_error(&ProxyError::ResponseTimeout),
        Some(Outcome::Failure)
    );
    assert_eq!(
        Outcome::of_error(&ProxyError::UpstreamTls(std::io::Error::other(
            "unknown issuer"
        ))),
        Some(Outcome::Failure)
    );
    assert_eq!(Outcome::of_error(&ProxyError::NoHealthyBackend), None);
}

#[test]
fn ejection_time_doubles_and_saturates() {
    let spec = OutlierSpec {
        consecutive_failures: 1,
        count_5xx: true,
        base_ejection: Duration::from_secs(10),
        max_ejection: Duration::from_secs(300),
        max_ejected_percent: 50,
    };
    let secs: Vec<u64> = [0, 1, 2, 3, 4, 5, 40, u32::MAX]
        .iter()
        .map(|&l| ejection_time(&spec, l).as_secs())
        .collect();
    assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300, 300]);
}
