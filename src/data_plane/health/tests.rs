//! Pick-level component tests of the health policy: backups, panic threshold, slow
//! start through every ramped balancer, the hold queue bound.

use std::time::Duration;

use tokio::time::advance;

use super::testing::{pool_with, pool_with_backups};
use super::*;
use crate::data_plane::snapshot::{Pool, Tried};

/// How many of `picks` picks land on each backend (primaries then backups).
fn spread(pool: &Pool, picks: usize) -> Vec<usize> {
    let addrs: Vec<SocketAddr> = pool.backends().map(|b| b.addr).collect();
    let mut counts = vec![0; addrs.len()];
    let tried = Tried::default();
    for _ in 0..picks {
        if let Some(b) = pool.pick(None, &tried) {
            let i = addrs.iter().position(|a| *a == b.addr).expect("known");
            counts[i] += 1;
        }
    }
    counts
}

fn set_healthy(pool: &Pool, healthy: &[bool]) {
    for (b, &h) in pool.backends().zip(healthy) {
        b.state.set_healthy(h);
    }
}

#[tokio::test(start_paused = true)]
async fn backups_serve_only_while_no_primary_is_eligible() {
    let (pool, _events) = pool_with_backups(3, 1, "");
    assert_eq!(spread(&pool, 100), [50, 50, 0]);
    set_healthy(&pool, &[false, true, true]);
    assert_eq!(spread(&pool, 100), [0, 100, 0]);
    set_healthy(&pool, &[false, false, true]);
    assert_eq!(spread(&pool, 100), [0, 0, 100], "backup takes over");
    set_healthy(&pool, &[true, false, true]);
    assert_eq!(spread(&pool, 100), [100, 0, 0], "and gives back");
    // A primary eligible but already tried: no spill onto the backup.
    let mut tried = Tried::default();
    let first = pool.pick(None, &tried).expect("primary");
    tried.add(first);
    assert!(pool.pick(None, &tried).is_none());
}

#[tokio::test(start_paused = true)]
async fn without_panic_threshold_no_eligible_backend_means_none() {
    let (pool, _events) = pool_with(3, "");
    set_healthy(&pool, &[false, false, false]);
    assert_eq!(spread(&pool, 10), [0, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn panic_threshold_spreads_over_all_primaries_below_it() {
    let (pool, _events) = pool_with(4, "panic_threshold = 50");
    // 2 of 4 eligible = 50 %: not below, healthy ones only.
    set_healthy(&pool, &[true, true, false, false]);
    assert!(!pool.in_panic(50));
    assert_eq!(spread(&pool, 100), [50, 50, 0, 0]);
    // 1 of 4 = 25 % < 50 %: panic, round robin over all four.
    set_healthy(&pool, &[true, false, false, false]);
    assert!(pool.in_panic(50));
    assert_eq!(spread(&pool, 100), [25, 25, 25, 25]);
    // None eligible: still routed.
    set_healthy(&pool, &[false; 4]);
    assert_eq!(spread(&pool, 100), [25, 25, 25, 25]);
    // Draining backends are left out of both the share and the panic pick.
    let draining = pool.backends().nth(3).expect("backend");
    draining.state.set_draining(true);
    assert_eq!(spread(&pool, 99), [33, 33, 33, 0]);
}

#[tokio::test(start_paused = true)]
async fn panic_lets_an_eligible_backup_stand_in_first() {
    let (pool, _events) = pool_with_backups(3, 1, "panic_threshold = 50");
    set_healthy(&pool, &[false, false, true]);
    assert_eq!(spread(&pool, 100), [0, 0, 100]);
    set_healthy(&pool, &[false, false, false]);
    assert_eq!(spread(&pool, 100), [50, 50, 0]);
}

/// Share of backend 0 (ramping) against backend 1 over `n` picks.
fn ramped_share(pool: &Pool, n: usize) -> f64 {
    spread(pool, n)[0] as f64 / n as f64
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_the_share_for_every_ramped_policy() {
    fastrand::seed(31);
    for balance in ["round_robin", "least_conn", "p2c"] {
        let extra = format!("balance = \"{balance}\"\nslow_start = \"10s\"");
        let (pool, _events) = pool_with(2, &extra);
        let ramping = pool.backends().next().expect("backend");
        ramping.state.health().start_ramp();
        let start = ramped_share(&pool, 10_000);
        advance(Duration::from_secs(5)).await;
        let middle = ramped_share(&pool, 10_000);
        advance(Duration::from_secs(5)).await;
        let end = ramped_share(&pool, 10_000);
        // round_robin / least_conn: 0.1 / 1.1 ≈ 0.09, then 0.55 / 1.55 ≈ 0.35, then 0.5.
        // Idle p2c compares costs, so the ramping backend loses every pair until done.
        assert!(start < 0.12, "{balance}: start {start}");
        assert!(
            middle >= start,
            "{balance}: middle {middle} < start {start}"
        );
        if balance != "p2c" {
            assert!((0.31..0.39).contains(&middle), "{balance}: middle {middle}");
        }
        assert!((0.45..0.55).contains(&end), "{balance}: end {end}");
    }
}

#[tokio::test(start_paused = true)]
async fn ramp_only_applies_in_pools_with_slow_start() {
    let (pool, _events) = pool_with(2, "");
    pool.backends()
        .next()
        .expect("backend")
        .state
        .health()
        .start_ramp();
    assert_eq!(spread(&pool, 100), [50, 50]);
}

#[tokio::test(start_paused = true)]
async fn hold_queue_is_bounded() {
    let (pool, _events) = pool_with(1, "");
    let shared = pool.health();
    let slots: Vec<_> = (0..3)
        .map(|_| shared.enter_hold(3).expect("room"))
        .collect();
    assert_eq!(shared.held(), 3);
    assert_eq!(shared.enter_hold(3).err(), Some(HoldError::QueueFull(3)));
    drop(slots);
    assert_eq!(shared.held(), 0);
}
