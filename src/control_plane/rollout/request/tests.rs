//! The weights of each step: exact shares, percentages when exact, bounded.

use super::*;

fn spec(to: &str, from: &[&str]) -> RolloutSpec {
    RolloutSpec {
        route: "r".into(),
        to: to.into(),
        from: from.iter().map(|p| (*p).to_owned()).collect(),
        steps: vec![5, 100],
        step_interval: Duration::from_secs(30),
        max_error_rate: DEFAULT_MAX_ERROR_RATE,
        max_p99: None,
        min_requests: DEFAULT_MIN_REQUESTS,
        max_wait: Duration::from_secs(90),
        on_low_traffic: LowTraffic::Fail,
        max_error_rate_delta: None,
        bake: None,
        on_restart: OnRestart::Resume,
    }
}

fn start(pairs: &[(&str, u32)]) -> Vec<Weight> {
    pairs
        .iter()
        .map(|(pool, weight)| Weight {
            pool: (*pool).to_owned(),
            weight: *weight,
        })
        .collect()
}

fn pairs(split: &[(String, i64)]) -> Vec<(&str, i64)> {
    split.iter().map(|(p, w)| (p.as_str(), *w)).collect()
}

#[test]
fn one_pool_to_another_is_shown_in_percent() {
    let s = spec("green", &["blue"]);
    let from = start(&[("blue", 1), ("green", 0)]);
    assert_eq!(pairs(&split_at(&s, &from, 5)), [("blue", 95), ("green", 5)]);
    assert_eq!(
        pairs(&split_at(&s, &from, 100)),
        [("blue", 0), ("green", 100)]
    );
    // A target the route did not list yet comes last.
    let from = start(&[("blue", 7)]);
    assert_eq!(
        pairs(&split_at(&s, &from, 25)),
        [("blue", 75), ("green", 25)]
    );
}

#[test]
fn several_from_pools_keep_their_ratio_and_others_their_weight() {
    let s = spec("c", &["a", "b"]);
    let from = start(&[("a", 1), ("b", 3), ("c", 0)]);
    let split = split_at(&s, &from, 25);
    // a : b : c = 0.75 × 1 : 0.75 × 3 : 0.25 × 4.
    assert_eq!(pairs(&split), [("a", 75), ("b", 225), ("c", 100)]);
    let s = spec("c", &["a"]);
    let from = start(&[("a", 50), ("b", 50), ("c", 0)]);
    // c takes 40 % of a's half: 20 % of the route; b keeps its half.
    assert_eq!(
        pairs(&split_at(&s, &from, 40)),
        [("a", 30), ("b", 50), ("c", 20)]
    );
}

#[test]
fn large_weights_are_scaled_under_the_limit() {
    let s = spec("green", &["blue"]);
    let from = start(&[("blue", MAX_WEIGHT), ("green", 0)]);
    let split = split_at(&s, &from, 5);
    assert!(split.iter().all(|(_, w)| *w <= i64::from(MAX_WEIGHT)));
    let total: i64 = split.iter().map(|(_, w)| w).sum();
    assert_eq!(split[1].1 * 100 / total, 5);
}
