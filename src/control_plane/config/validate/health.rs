//! Checks of a pool's health keys: `[pools.health]`, `[pools.outlier]`,
//! `slow_start`, `panic_threshold` and `hold`.
//!
//! Each key absent takes its documented default; every bad value is reported at
//! its key path and checking goes on, so one run lists every problem.

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::HeaderValue;

use super::values::check_duration;
use super::Report;
use crate::control_plane::config::raw::{
    RawHealth, RawHold, RawInitial, RawOutlier, RawPool, RawStatusRange,
};
use crate::control_plane::config::spec::{
    GrpcCheck, HoldSpec, InitialHealth, OutlierSpec, PoolHealthSpec, ProbeSpec, StatusRange,
};

/// Largest `rise` / `fall` accepted.
const MAX_RISE_FALL: i64 = 100;
/// Largest `consecutive_failures` accepted.
const MAX_CONSECUTIVE_FAILURES: i64 = 1000;
/// Largest `hold.max_queued` accepted.
const MAX_QUEUED: i64 = 1_000_000;

/// Checks and converts the health keys of pool `path` (`pools[i]`).
pub(super) fn check_health(
    path: &str,
    raw: &RawPool,
    report: &mut Report,
) -> Option<PoolHealthSpec> {
    let probe = match &raw.health {
        None => Some(None),
        Some(h) => check_probe(&format!("{path}.health"), h, report).map(|p| Some(Arc::new(p))),
    };
    let outlier = match &raw.outlier {
        None => Some(None),
        Some(o) => check_outlier(&format!("{path}.outlier"), o, report).map(Some),
    };
    let slow_start = match &raw.slow_start {
        None => Some(None),
        Some(d) => check_duration(d, &format!("{path}.slow_start"), report).map(Some),
    };
    let panic_threshold = match raw.panic_threshold {
        None => Some(None),
        Some(p) => {
            percent(p, &format!("{path}.panic_threshold"), report).map(|p| (p > 0).then_some(p))
        }
    };
    let hold = match &raw.hold {
        None => Some(None),
        Some(h) => check_hold(&format!("{path}.hold"), h, report).map(Some),
    };
    Some(PoolHealthSpec {
        probe: probe?,
        outlier: outlier?,
        slow_start: slow_start?,
        panic_threshold: panic_threshold?,
        hold: hold?,
    })
}

fn check_probe(path: &str, raw: &RawHealth, report: &mut Report) -> Option<ProbeSpec> {
    let probe_path = probe_path(raw.path.as_deref(), &format!("{path}.path"), report);
    let host = match &raw.host {
        None => Some(None),
        Some(h) => match HeaderValue::from_str(h) {
            Ok(v) if !h.is_empty() && !h.contains(char::is_whitespace) => Some(Some(v)),
            _ => {
                report.add(
                    format!("{path}.host"),
                    format!("{h:?} is not a valid Host header; write e.g. \"agents.local\""),
                );
                None
            }
        },
    };
    let interval = match &raw.interval {
        None => Some(ProbeSpec::DEFAULT_INTERVAL),
        Some(d) => check_duration(d, &format!("{path}.interval"), report),
    };
    let timeout = match &raw.timeout {
        None => Some(interval.map_or(ProbeSpec::DEFAULT_TIMEOUT, |i| {
            ProbeSpec::DEFAULT_TIMEOUT.min(i / 2)
        })),
        Some(d) => check_duration(d, &format!("{path}.timeout"), report),
    };
    if let (Some(i), Some(t)) = (interval, timeout) {
        if t >= i {
            report.add(
                format!("{path}.timeout"),
                format!(
                    "timeout ({}) must be shorter than interval ({}), or probes would overlap",
                    humantime::format_duration(t),
                    humantime::format_duration(i)
                ),
            );
        }
    }
    let count = |v: Option<i64>, default: u32, key: &str, what: &str, report: &mut Report| {
        let v = v.unwrap_or(i64::from(default));
        match u32::try_from(v) {
            Ok(n) if (1..=MAX_RISE_FALL).contains(&v) => Some(n),
            _ => {
                report.add(
                    format!("{path}.{key}"),
                    format!(
                        "{key} must be between 1 and {MAX_RISE_FALL}, got {v}; it counts {what}"
                    ),
                );
                None
            }
        }
    };
    let rise = count(
        raw.rise,
        ProbeSpec::DEFAULT_RISE,
        "rise",
        "consecutive passes to become healthy",
        report,
    );
    let fall = count(
        raw.fall,
        ProbeSpec::DEFAULT_FALL,
        "fall",
        "consecutive failures to become unhealthy",
        report,
    );
    let start_period = match &raw.start_period {
        None => Some(Duration::ZERO),
        Some(d) => check_duration(d, &format!("{path}.start_period"), report),
    };
    let expect_status = match &raw.expect_status {
        None => Some(StatusRange::DEFAULT),
        Some(r) => status_range(r, &format!("{path}.expect_status"), report),
    };
    let grpc = check_grpc(path, raw, report);
    let initial = match raw.initial {
        None | Some(RawInitial::Unknown) => InitialHealth::Unknown,
        Some(RawInitial::Healthy) => InitialHealth::Healthy,
        Some(RawInitial::Unhealthy) => InitialHealth::Unhealthy,
    };
    let (interval, timeout) = (interval?, timeout?);
    (timeout < interval).then_some(())?;
    Some(ProbeSpec {
        path: probe_path?,
        host: host?,
        interval,
        timeout,
        rise: rise?,
        fall: fall?,
        start_period: start_period?,
        expect_status: expect_status?,
        initial,
        grpc: grpc?,
    })
}

/// `grpc` and `grpc_service` of `[pools.health]`: a gRPC check has no use for
/// `path` or `expect_status`, and a service name needs `grpc = true`. (That the
/// pool speaks HTTP/2 is checked with its `protocol`.)
fn check_grpc(path: &str, raw: &RawHealth, report: &mut Report) -> Option<Option<GrpcCheck>> {
    let on = raw.grpc.unwrap_or(false);
    if !on {
        if raw.grpc_service.is_some() {
            report.add(
                format!("{path}.grpc_service"),
                "grpc_service names the service a gRPC health check asks about; add grpc = true (on an h2c or h2 pool), or remove grpc_service",
            );
            return None;
        }
        return Some(None);
    }
    let mut ok = true;
    for (key, set) in [
        ("path", raw.path.is_some()),
        ("expect_status", raw.expect_status.is_some()),
    ] {
        if set {
            report.add(
                format!("{path}.{key}"),
                format!("{key} is not used by a gRPC health check (grpc = true calls grpc.health.v1.Health/Check); remove it, or grpc = true for an HTTP probe"),
            );
            ok = false;
        }
    }
    let service = raw.grpc_service.clone().unwrap_or_default();
    if service.len() > GrpcCheck::MAX_SERVICE || service.chars().any(char::is_control) {
        report.add(
            format!("{path}.grpc_service"),
            format!(
                "{service:?} is not a service name; write one of at most {} bytes without control characters, e.g. \"model.Generator\" (or \"\" for the whole server)",
                GrpcCheck::MAX_SERVICE
            ),
        );
        ok = false;
    }
    ok.then_some(Some(GrpcCheck { service }))
}

fn probe_path(raw: Option<&str>, path: &str, report: &mut Report) -> Option<PathAndQuery> {
    let text = raw.unwrap_or(ProbeSpec::DEFAULT_PATH);
    match text.parse::<PathAndQuery>() {
        Ok(pq) if text.starts_with('/') => Some(pq),
        _ => {
            report.add(
                path,
                format!(
                    "{text:?} is not a request path; write one starting with '/', e.g. \"/health\""
                ),
            );
            None
        }
    }
}

fn status_range(raw: &RawStatusRange, path: &str, report: &mut Report) -> Option<StatusRange> {
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let range = match raw.0.split_once('-') {
        None => code(&raw.0).map(|c| StatusRange { lo: c, hi: c }),
        Some((lo, hi)) => match (code(lo), code(hi)) {
            (Some(lo), Some(hi)) if lo <= hi => Some(StatusRange { lo, hi }),
            _ => None,
        },
    };
    if range.is_none() {
        report.add(
            path,
            format!(
                "{:?} is not a status range; write a code or an ascending range within 100-599, e.g. \"200-399\" or 204",
                raw.0
            ),
        );
    }
    range
}

fn check_outlier(path: &str, raw: &RawOutlier, report: &mut Report) -> Option<OutlierSpec> {
    let n = raw
        .consecutive_failures
        .unwrap_or(i64::from(OutlierSpec::DEFAULT_CONSECUTIVE_FAILURES));
    let consecutive_failures = match u32::try_from(n) {
        Ok(v) if (1..=MAX_CONSECUTIVE_FAILURES).contains(&n) => Some(v),
        _ => {
            report.add(
                format!("{path}.consecutive_failures"),
                format!("consecutive_failures must be between 1 and {MAX_CONSECUTIVE_FAILURES}, got {n}"),
            );
            None
        }
    };
    let base = match &raw.base_ejection {
        None => Some(OutlierSpec::DEFAULT_BASE_EJECTION),
        Some(d) => check_duration(d, &format!("{path}.base_ejection"), report),
    };
    let max = match &raw.max_ejection {
        None => base.map(|b| b.max(OutlierSpec::DEFAULT_MAX_EJECTION)),
        Some(d) => check_duration(d, &format!("{path}.max_ejection"), report),
    };
    if let (Some(b), Some(m)) = (base, max) {
        if m < b {
            report.add(
                format!("{path}.max_ejection"),
                format!(
                    "max_ejection ({}) must be at least base_ejection ({})",
                    humantime::format_duration(m),
                    humantime::format_duration(b)
                ),
            );
        }
    }
    let max_ejected_percent = match raw.max_ejected_percent {
        None => Some(OutlierSpec::DEFAULT_MAX_EJECTED_PERCENT),
        Some(p) => percent(p, &format!("{path}.max_ejected_percent"), report),
    };
    let (base_ejection, max_ejection) = (base?, max?);
    (max_ejection >= base_ejection).then_some(())?;
    Some(OutlierSpec {
        consecutive_failures: consecutive_failures?,
        count_5xx: raw.count_5xx.unwrap_or(true),
        base_ejection,
        max_ejection,
        max_ejected_percent: max_ejected_percent?,
    })
}

fn check_hold(path: &str, raw: &RawHold, report: &mut Report) -> Option<HoldSpec> {
    let timeout = match &raw.timeout {
        None => Some(HoldSpec::DEFAULT_TIMEOUT),
        Some(d) => check_duration(d, &format!("{path}.timeout"), report),
    };
    let n = raw
        .max_queued
        .unwrap_or(HoldSpec::DEFAULT_MAX_QUEUED as i64);
    let max_queued = match usize::try_from(n) {
        Ok(v) if (1..=MAX_QUEUED).contains(&n) => Some(v),
        _ => {
            report.add(
                format!("{path}.max_queued"),
                format!("max_queued must be between 1 and {MAX_QUEUED}, got {n}; remove hold to answer 503 at once"),
            );
            None
        }
    };
    Some(HoldSpec {
        timeout: timeout?,
        max_queued: max_queued?,
    })
}

/// A percentage 0..=100.
fn percent(value: i64, path: &str, report: &mut Report) -> Option<u8> {
    match u8::try_from(value) {
        Ok(p) if p <= 100 => Some(p),
        _ => {
            report.add(
                path,
                format!("must be a percentage between 0 and 100, got {value}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
