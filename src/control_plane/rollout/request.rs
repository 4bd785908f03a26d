//! `POST /api/v1/rollouts`: the body, its defaults and its checks.
//!
//! Shape errors (unknown keys, wrong types) are the admin API's JSON parser's; here
//! every value is checked and *all* problems are reported, each with its key path,
//! like the file's validation. Then the request is checked against the running
//! config (the state view): the route and pools exist, the target has a backend that
//! can take traffic, and the pools it comes from carry weight.
//!
//! Defaults: `max_error_rate` 0.01, no `max_p99`, `min_requests` 20, `max_wait`
//! three step intervals (or bakes), `on_low_traffic = "fail"`, `on_restart =
//! "resume"`, no `bake` (the final 100 % step is not judged).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{LowTraffic, OnRestart, RolloutSpec, Weight};
use crate::control_plane::config::spec::{Source, MAX_DURATION, MAX_WEIGHT};
use crate::control_plane::config::validate::too_long;
use crate::control_plane::config::{ConfigError, ConfigErrors};
use crate::control_plane::controller::state_view::StateView;
use crate::control_plane::controller::Refusal;

/// Default `max_error_rate`.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;
/// Default `min_requests`.
pub const DEFAULT_MIN_REQUESTS: u64 = 20;
/// Default `max_wait`, in step intervals (or bakes, if longer).
pub const DEFAULT_MAX_WAIT_FACTOR: u32 = 3;
/// Most steps a rollout may have.
const MAX_STEPS: usize = 100;

/// The request body, as sent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    pub route: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<String>>,
    pub steps: Vec<i64>,
    pub step_interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_low_traffic: Option<LowTraffic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate_delta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_restart: Option<OnRestart>,
}

/// A checked request: the spec, and the route's split now.
#[derive(Debug)]
pub struct Checked {
    pub spec: RolloutSpec,
    pub start_split: Vec<Weight>,
    pub start_from_file: bool,
}

/// Checks `req` against the running `state`.
pub fn check(req: &RolloutRequest, state: &StateView) -> Result<Checked, Refusal> {
    let mut errs = Errs::default();
    let route = state.route(&req.route);
    let pool_known = |name: &str| state.pools.iter().any(|p| p.name == name);
    let pool_list = || {
        let names: Vec<&str> = state.pools.iter().map(|p| p.name.as_str()).collect();
        names.join(", ")
    };
    if !pool_known(&req.to) {
        errs.add(
            "to",
            format!("no pool named {:?}; pools: {}", req.to, pool_list()),
        );
    }

    if req.steps.is_empty() || req.steps.len() > MAX_STEPS {
        errs.add("steps", format!("give 1 to {MAX_STEPS} steps of percent on the target, ending at 100, e.g. [5, 25, 50, 100] (or [100] with bake for blue-green)"));
    }
    let mut steps = Vec::with_capacity(req.steps.len());
    for (i, &w) in req.steps.iter().enumerate() {
        let path = format!("steps[{i}]");
        match u32::try_from(w) {
            Ok(w @ 1..=100) if steps.last().is_some_and(|&prev| w <= prev) => errs.add(
                &path,
                format!(
                    "steps must increase; {w} does not follow {}",
                    steps.last().copied().unwrap_or(0)
                ),
            ),
            Ok(w @ 1..=100) => steps.push(w),
            _ => errs.add(
                &path,
                format!("a step is a percent between 1 and 100, got {w}"),
            ),
        }
    }
    if steps.len() == req.steps.len() && steps.last().is_some_and(|&w| w != 100) {
        errs.add(
            &format!("steps[{}]", steps.len() - 1),
            "the last step must be 100 (the rollout ends with all traffic on the target)".into(),
        );
    }

    // A bad interval is reported; the placeholder only keeps the other checks going.
    let step_interval =
        duration(&req.step_interval, "step_interval", &mut errs).unwrap_or(Duration::from_secs(1));
    let max_p99 = req
        .max_p99
        .as_ref()
        .and_then(|d| duration(d, "max_p99", &mut errs));
    let bake = req
        .bake
        .as_ref()
        .and_then(|d| duration(d, "bake", &mut errs));
    let max_error_rate = rate(req.max_error_rate, "max_error_rate", &mut errs);
    let delta = req
        .max_error_rate_delta
        .map(|d| rate(Some(d), "max_error_rate_delta", &mut errs));
    let min_requests = match req.min_requests {
        None => DEFAULT_MIN_REQUESTS,
        Some(n) => u64::try_from(n).unwrap_or_else(|_| {
            errs.add(
                "min_requests",
                format!("min_requests must be 0 or more, got {n}"),
            );
            0
        }),
    };
    let longest = step_interval.max(bake.unwrap_or_default());
    let max_wait = match &req.max_wait {
        None => crate::clock::times(longest, DEFAULT_MAX_WAIT_FACTOR),
        Some(text) => match duration(text, "max_wait", &mut errs) {
            Some(d) if d < longest => {
                errs.add(
                    "max_wait",
                    format!(
                        "max_wait ({text}) must be at least step_interval and bake ({})",
                        humantime::format_duration(longest)
                    ),
                );
                d
            }
            Some(d) => d,
            None => longest,
        },
    };

    let Some(route) = route else {
        return Err(if errs.0.is_empty() {
            let known: Vec<&str> = state.routes.iter().map(|r| r.name.as_str()).collect();
            Refusal::not_found(
                "route",
                format!(
                    "no route named {:?}; routes: {}",
                    req.route,
                    known.join(", ")
                ),
            )
        } else {
            Refusal::Invalid(ConfigErrors(std::mem::take(&mut errs.0)))
        });
    };
    let start_split: Vec<Weight> = route
        .split
        .iter()
        .map(|s| Weight {
            pool: s.pool.clone(),
            weight: s.weight,
        })
        .collect();
    let from: Vec<String> = match &req.from {
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                if !pool_known(p) {
                    errs.add(
                        &format!("from[{i}]"),
                        format!("no pool named {p:?}; pools: {}", pool_list()),
                    );
                } else if *p == req.to {
                    errs.add(
                        &format!("from[{i}]"),
                        format!("{p} is the target (`to`); list the pools traffic moves away from"),
                    );
                } else if list[..i].contains(p) {
                    errs.add(&format!("from[{i}]"), format!("{p} is listed twice"));
                }
            }
            list.clone()
        }
        None => start_split
            .iter()
            .filter(|w| w.weight > 0 && w.pool != req.to)
            .map(|w| w.pool.clone())
            .collect(),
    };
    if !errs.0.is_empty() {
        return Err(Refusal::Invalid(ConfigErrors(std::mem::take(&mut errs.0))));
    }
    let moved: u64 = start_split
        .iter()
        .filter(|w| from.contains(&w.pool))
        .map(|w| u64::from(w.weight))
        .sum();
    if moved == 0 {
        return Err(Refusal::conflict(
            "from",
            format!(
                "no pool but {} carries weight on route {}: there is nothing to move",
                req.to, req.route
            ),
        ));
    }
    let target = state.pools.iter().find(|p| p.name == req.to);
    let usable = target.is_some_and(|p| {
        p.backends
            .iter()
            .any(|b| b.healthy && !b.ejected && !b.draining)
    });
    if !usable {
        return Err(Refusal::conflict(
            "to",
            format!(
                "pool {} has no healthy backend; its share of the traffic would fail",
                req.to
            ),
        ));
    }
    Ok(Checked {
        spec: RolloutSpec {
            route: req.route.clone(),
            to: req.to.clone(),
            from,
            steps,
            step_interval,
            max_error_rate: max_error_rate.unwrap_or(DEFAULT_MAX_ERROR_RATE),
            max_p99,
            min_requests,
            max_wait,
            on_low_traffic: req.on_low_traffic.unwrap_or_default(),
            max_error_rate_delta: delta.flatten(),
            bake,
            on_restart: req.on_restart.unwrap_or_default(),
        },
        start_split,
        start_from_file: route.split_source == Source::File,
    })
}

/// The split with `percent` of the `from` pools' share on the target: the target
/// gets `percent × S`, each `from` pool `(100 − percent) × w`, other pools `100 × w`
/// (S = the `from` pools' starting weights, w a pool's starting weight), so shares
/// are exact. Weights are first scaled down if that would pass `MAX_WEIGHT`.
pub fn split_at(spec: &RolloutSpec, start: &[Weight], percent: u32) -> Vec<(String, i64)> {
    let largest = start.iter().map(|w| w.weight).max().unwrap_or(0);
    let limit = MAX_WEIGHT / 100 / (start.len() as u32 + 1).max(1);
    let scale = |w: u32| -> u64 {
        if largest <= limit {
            u64::from(w)
        } else {
            (u64::from(w) * u64::from(limit) / u64::from(largest)).max(u64::from(w > 0))
        }
    };
    let moved: u64 = start
        .iter()
        .filter(|w| spec.from.contains(&w.pool))
        .map(|w| scale(w.weight))
        .sum();
    let p = u64::from(percent);
    let mut out: Vec<(String, i64)> = start
        .iter()
        .filter(|w| w.pool != spec.to)
        .map(|w| {
            let weight = if spec.from.contains(&w.pool) {
                (100 - p) * scale(w.weight)
            } else {
                100 * scale(w.weight)
            };
            (w.pool.clone(), i64::try_from(weight).unwrap_or(i64::MAX))
        })
        .collect();
    let target = i64::try_from(p * moved).unwrap_or(i64::MAX);
    match start.iter().position(|w| w.pool == spec.to) {
        Some(i) => out.insert(i, (spec.to.clone(), target)),
        None => out.push((spec.to.clone(), target)),
    }
    // Shown as percentages when that is exact (the usual case: 95/5, not 9500/500).
    let total: i64 = out.iter().map(|(_, w)| w).sum();
    let per_cent = total / 100;
    if per_cent > 1 && out.iter().all(|(_, w)| w % per_cent == 0) {
        for (_, w) in &mut out {
            *w /= per_cent;
        }
    }
    out
}

/// Problems found so far.
#[derive(Default)]
struct Errs(Vec<ConfigError>);

impl Errs {
    fn add(&mut self, path: &str, message: String) {
        self.0.push(ConfigError {
            path: path.to_owned(),
            message,
        });
    }
}

fn duration(text: &str, path: &str, errs: &mut Errs) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if d > MAX_DURATION => {
            errs.add(path, too_long(text));
            None
        }
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            errs.add(path, format!("{text:?} is zero; give a duration above 0"));
            None
        }
        Err(e) => {
            errs.add(
                path,
                format!("{text:?} is not a duration ({e}); write e.g. \"30s\" or \"500ms\""),
            );
            None
        }
    }
}

fn rate(value: Option<f64>, path: &str, errs: &mut Errs) -> Option<f64> {
    match value {
        Some(r) if (0.0..=1.0).contains(&r) => Some(r),
        Some(r) => {
            errs.add(
                path,
                format!("{path} is a fraction between 0 and 1 (0.01 = 1 %), got {r}"),
            );
            None
        }
        None => None,
    }
}

#[cfg(test)]
mod tests;
