//! The gate: a verdict on one step's figures, and the target pool's health.
//!
//! [`judge`] looks at the target pool's traffic during the step (a `pool_stats`
//! window) and, for `max_error_rate_delta`, at the `from` pools' traffic in the same
//! window. The bounds are checked in a fixed order — enough requests, error rate,
//! error rate against the baseline, p99 — and the first one broken is the reason,
//! with its value and bound. [`target_health`] says whether most of the target's
//! backends are ejected or unhealthy (which aborts a rollout at once, without
//! waiting for the step to end). Pure functions: no clock, no I/O.

use std::time::Duration;

use super::{LowTraffic, Reason, RolloutSpec};
use crate::data_plane::health::HealthStatus;
use crate::data_plane::pool_stats::Window;
use crate::data_plane::snapshot::Snapshot;

/// What the gate says about a step.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Judgement {
    /// Move on; the note says why if it is not a plain pass.
    Pass { note: Option<String> },
    /// Roll back.
    Fail(Reason),
    /// Too few requests yet: keep measuring (the note says how far).
    Wait(String),
}

/// Judges the target's `target` window (and the `from` pools' `baseline`) after
/// `elapsed`; `waited_out` once the step has run `max_wait`.
pub(crate) fn judge(
    spec: &RolloutSpec,
    target: &Window,
    baseline: &Window,
    elapsed: Duration,
    waited_out: bool,
) -> Judgement {
    let mut note = None;
    let n = target.requests;
    if n < spec.min_requests {
        let took = humantime::format_duration(round_ms(elapsed));
        if !waited_out {
            return Judgement::Wait(format!(
                "waiting for traffic: {n} of min_requests {} after {took}",
                spec.min_requests
            ));
        }
        match spec.on_low_traffic {
            LowTraffic::Fail => {
                return Judgement::Fail(Reason {
                    metric: "requests".into(),
                    value: Some(n as f64),
                    bound: Some(spec.min_requests as f64),
                    message: format!(
                        "too little traffic: {n} requests to {} in {took}, min_requests {} (on_low_traffic = fail)",
                        spec.to, spec.min_requests
                    ),
                })
            }
            LowTraffic::Pass => {
                note = Some(format!(
                    "passed on too little traffic: {n} of min_requests {} (on_low_traffic = pass)",
                    spec.min_requests
                ));
            }
        }
    }
    let rate = target.error_rate();
    if rate > spec.max_error_rate {
        return Judgement::Fail(Reason {
            metric: "error_rate".into(),
            value: Some(rate),
            bound: Some(spec.max_error_rate),
            message: format!(
                "error rate {} ({} of {n} requests to {}) > max_error_rate {}",
                percent(rate),
                target.errors,
                spec.to,
                percent(spec.max_error_rate)
            ),
        });
    }
    if let Some(max) = spec.max_error_rate_delta {
        if baseline.requests > 0 {
            let base = baseline.error_rate();
            let delta = rate - base;
            if delta > max {
                return Judgement::Fail(Reason {
                    metric: "error_rate_delta".into(),
                    value: Some(delta),
                    bound: Some(max),
                    message: format!(
                        "error rate {} on {} vs {} on {} (+{}) > max_error_rate_delta {}",
                        percent(rate),
                        spec.to,
                        percent(base),
                        spec.from.join("+"),
                        percent(delta),
                        percent(max)
                    ),
                });
            }
        }
    }
    if let (Some(max), Some(p99)) = (spec.max_p99, target.p99()) {
        if p99 > max {
            return Judgement::Fail(Reason {
                metric: "p99".into(),
                value: Some(millis(p99)),
                bound: Some(millis(max)),
                message: format!(
                    "p99 {:.1}ms on {} > max_p99 {:.1}ms",
                    millis(p99),
                    spec.to,
                    millis(max)
                ),
            });
        }
    }
    Judgement::Pass { note }
}

/// Why the target pool can no longer be trusted with traffic: it left the config,
/// or most (more than half) of its non-draining primaries are ejected or unhealthy.
/// Backends whose first probe is still pending (`unknown`) do not count against it.
pub(crate) fn target_health(snapshot: &Snapshot, pool: &str) -> Option<Reason> {
    let Some(p) = snapshot.pool(pool) else {
        return Some(Reason::plain(
            "health",
            format!("pool {pool} is no longer in the config"),
        ));
    };
    let (mut total, mut bad) = (0u32, 0u32);
    for b in p.backends().filter(|b| !b.backup && !b.state.is_draining()) {
        total += 1;
        let unhealthy = b.state.health().status() == HealthStatus::Unhealthy;
        bad += u32::from(unhealthy || b.state.is_ejected());
    }
    (total > 0 && bad * 2 > total).then(|| Reason {
        metric: "health".into(),
        value: Some(f64::from(bad)),
        bound: Some(f64::from(total) / 2.0),
        message: format!("{bad} of {total} backends of {pool} are ejected or unhealthy"),
    })
}

/// `0.0123` → `1.23%`.
pub(crate) fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

/// A duration in milliseconds, fractional.
pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::rollout::OnRestart;
    use crate::data_plane::pool_stats::PoolStats;
    use http::StatusCode;

    fn spec() -> RolloutSpec {
        RolloutSpec {
            route: "r".into(),
            to: "green".into(),
            from: vec!["blue".into()],
            steps: vec![5, 100],
            step_interval: Duration::from_secs(30),
            max_error_rate: 0.01,
            max_p99: Some(Duration::from_millis(500)),
            min_requests: 100,
            max_wait: Duration::from_secs(90),
            on_low_traffic: LowTraffic::Fail,
            max_error_rate_delta: None,
            bake: None,
            on_restart: OnRestart::Resume,
        }
    }

    /// `n` responses, `errors` of them 500, all with `latency_ms`.
    fn window(n: u64, errors: u64, latency_ms: u64) -> Window {
        let stats = PoolStats::new();
        let start = stats.sample();
        for i in 0..n {
            let status = if i < errors {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            stats.record_response(status, Duration::from_millis(latency_ms));
        }
        stats.sample().since(&start)
    }

    fn fail_metric(j: Judgement) -> (String, f64, f64) {
        match j {
            Judgement::Fail(r) => (r.metric, r.value.unwrap(), r.bound.unwrap()),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn bounds_are_checked_in_order_with_value_and_bound() {
        let s = spec();
        let none = Window::default();
        let pass = Judgement::Pass { note: None };
        assert_eq!(judge(&s, &window(200, 2, 20), &none, T, false), pass);
        let (m, v, b) = fail_metric(judge(&s, &window(200, 3, 20), &none, T, false));
        assert_eq!((m.as_str(), v, b), ("error_rate", 0.015, 0.01));
        let (m, v, b) = fail_metric(judge(&s, &window(200, 0, 600), &none, T, false));
        assert_eq!((m.as_str(), b), ("p99", 500.0));
        assert!((600.0..=675.0).contains(&v), "{v}");
        // Error rate goes first when both break.
        let (m, ..) = fail_metric(judge(&s, &window(200, 50, 600), &none, T, false));
        assert_eq!(m, "error_rate");
    }

    #[test]
    fn delta_compares_with_the_from_pools() {
        let s = RolloutSpec {
            max_error_rate: 0.2,
            max_error_rate_delta: Some(0.02),
            ..spec()
        };
        let base = window(1000, 50, 10);
        assert!(matches!(
            judge(&s, &window(200, 12, 20), &base, T, false),
            Judgement::Pass { .. }
        ));
        let (m, v, b) = fail_metric(judge(&s, &window(200, 16, 20), &base, T, false));
        assert_eq!((m.as_str(), b), ("error_rate_delta", 0.02));
        assert!((v - 0.03).abs() < 1e-9);
    }

    #[test]
    fn too_little_traffic_waits_then_follows_the_policy() {
        let s = spec();
        let none = Window::default();
        let few = window(40, 0, 10);
        assert!(matches!(
            judge(&s, &few, &none, T, false),
            Judgement::Wait(note) if note.contains("40 of min_requests 100")
        ));
        let (m, v, b) = fail_metric(judge(&s, &few, &none, T * 3, true));
        assert_eq!((m.as_str(), v, b), ("requests", 40.0, 100.0));
        let lenient = RolloutSpec {
            on_low_traffic: LowTraffic::Pass,
            ..spec()
        };
        assert!(matches!(
            judge(&lenient, &few, &none, T * 3, true),
            Judgement::Pass { note: Some(n) } if n.contains("on_low_traffic = pass")
        ));
        // Passing on low traffic still applies the other bounds.
        let (m, ..) = fail_metric(judge(&lenient, &window(40, 2, 10), &none, T * 3, true));
        assert_eq!(m, "error_rate");
    }
}
