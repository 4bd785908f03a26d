//! The file's rules applied to admin API bodies.
//!
//! A split set through `PUT /api/v1/routes/{route}/split` and a backend registered
//! through `POST /api/v1/pools/{pool}/backends` are checked by the very functions that
//! check `[[routes]].split` and `[[pools]].backends`, so the API can never publish
//! something the file could not say. Paths name the JSON body's keys (`agent-green`,
//! `addr`, `ttl`); `""` is the body as a whole. Whether the route or pool in the URL
//! exists is the caller's business (it knows the running config).

use std::time::Duration;

use serde::Deserialize;

use super::pool::check_backend;
use super::route::check_split_entries;
use super::values::{check_duration, key_path};
use super::Report;
use crate::control_plane::config::raw::{RawBackend, RawDuration, RawSplit};
use crate::control_plane::config::spec::{
    BackendSpec, MaintenanceSpec, PauseSpec, Source, SplitSpec, MAINTENANCE_MESSAGE_LIMIT,
    MAINTENANCE_RETRY_AFTER_DEFAULT, PAUSE_MAX_DEFAULT, PAUSE_MAX_LIMIT, PAUSE_QUEUE_DEFAULT,
};
use crate::control_plane::config::ConfigErrors;

/// Body of a backend registration: `{"addr": "10.0.0.5:8080", "weight": 1, "ttl": "30s"}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiBackend {
    /// `ip:port`.
    pub addr: String,
    /// 1 when absent.
    pub weight: Option<i64>,
    /// Without a heartbeat (a repeated POST) within this time the backend is removed;
    /// absent means it stays until deregistered.
    pub ttl: Option<RawDuration>,
}

/// Body of `POST /api/v1/routes/{route}/pause`: `{"max": "30s", "max_queued": 1000}`,
/// both optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiPause {
    /// How long one request may wait (default 30 s, at most 1 h).
    pub max: Option<RawDuration>,
    /// How many requests may wait at once (default and largest: 10000).
    pub max_queued: Option<i64>,
}

/// Body of `PUT /api/v1/routes/{route}/maintenance`:
/// `{"message": "…", "retry_after": 120}`, both optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiMaintenance {
    pub message: Option<String>,
    /// `Retry-After` in seconds (default 120; 0 to 86400).
    pub retry_after: Option<i64>,
}

/// Checks a pause body.
pub fn validate_pause(body: &ApiPause) -> Result<PauseSpec, ConfigErrors> {
    let mut report = Report::default();
    let max = match &body.max {
        None => Some(PAUSE_MAX_DEFAULT),
        Some(d) => match check_duration(d, "max", &mut report) {
            Some(d) if d > PAUSE_MAX_LIMIT => {
                report.add(
                    "max",
                    format!("{:?} is longer than a pause may hold a request (1h)", d),
                );
                None
            }
            other => other,
        },
    };
    let max_queued = match body.max_queued {
        None => Some(PAUSE_QUEUE_DEFAULT),
        Some(n) => match usize::try_from(n) {
            Ok(n) if (1..=PAUSE_QUEUE_DEFAULT).contains(&n) => Some(n),
            _ => {
                report.add(
                    "max_queued",
                    format!("{n} is out of range; use 1 to {PAUSE_QUEUE_DEFAULT}"),
                );
                None
            }
        },
    };
    match (max, max_queued) {
        (Some(max), Some(max_queued)) if report.errors.is_empty() => {
            Ok(PauseSpec { max, max_queued })
        }
        _ => Err(ConfigErrors(report.errors)),
    }
}

/// Longest `Retry-After` maintenance accepts, in seconds (a day).
const RETRY_AFTER_LIMIT: i64 = 86_400;

/// Checks a maintenance body.
pub fn validate_maintenance(body: &ApiMaintenance) -> Result<MaintenanceSpec, ConfigErrors> {
    let mut report = Report::default();
    if let Some(m) = &body.message {
        if m.len() > MAINTENANCE_MESSAGE_LIMIT {
            report.add(
                "message",
                format!(
                    "the message is {} bytes; use at most {MAINTENANCE_MESSAGE_LIMIT}",
                    m.len()
                ),
            );
        }
    }
    let retry_after = match body.retry_after {
        None => Some(MAINTENANCE_RETRY_AFTER_DEFAULT),
        Some(n) if (0..=RETRY_AFTER_LIMIT).contains(&n) => u32::try_from(n).ok(),
        Some(n) => {
            report.add(
                "retry_after",
                format!("{n} is out of range; use 0 to {RETRY_AFTER_LIMIT} seconds"),
            );
            None
        }
    };
    match retry_after {
        Some(retry_after) if report.errors.is_empty() => Ok(MaintenanceSpec {
            message: body.message.clone(),
            retry_after,
        }),
        _ => Err(ConfigErrors(report.errors)),
    }
}

/// Checks a split given as (pool, weight) pairs against the defined `pools`.
pub fn validate_split(
    entries: &[(String, i64)],
    pools: &[&str],
) -> Result<Vec<SplitSpec>, ConfigErrors> {
    let raw: Vec<RawSplit> = entries
        .iter()
        .map(|(pool, weight)| RawSplit {
            pool: pool.clone(),
            weight: *weight,
        })
        .collect();
    let at = |j: usize, _field: &str| key_path("", &raw[j].pool);
    let mut report = Report::default();
    match check_split_entries("", &at, &raw, pools, &mut report) {
        Some(split) if report.errors.is_empty() => Ok(split),
        _ => Err(ConfigErrors(report.errors)),
    }
}

/// Checks a registration body; the backend comes back with `source = api`.
pub fn validate_backend(
    body: &ApiBackend,
) -> Result<(BackendSpec, Option<Duration>), ConfigErrors> {
    let mut report = Report::default();
    let raw = RawBackend {
        addr: body.addr.clone(),
        weight: body.weight,
        backup: false,
    };
    let backend = check_backend(&raw, "addr", "weight", &mut report);
    let ttl = match &body.ttl {
        None => Some(None),
        Some(d) => check_duration(d, "ttl", &mut report).map(Some),
    };
    match (backend, ttl) {
        (Some(backend), Some(ttl)) if report.errors.is_empty() => Ok((
            BackendSpec {
                source: Source::Api,
                ..backend
            },
            ttl,
        )),
        _ => Err(ConfigErrors(report.errors)),
    }
}

/// Checks the body of `PUT /api/v1/routes/{route}/rate_limit` (the keys of a
/// route's `rate_limit` in `routes.toml`, reported under `rate_limit.…`).
pub fn validate_rate_limit(
    body: &crate::control_plane::config::raw::RawRateLimit,
) -> Result<crate::control_plane::config::spec::RateLimitSpec, ConfigErrors> {
    let mut report = Report::default();
    match super::protect::check_rate_limit("rate_limit", body, &mut report) {
        Some(spec) if report.errors.is_empty() => Ok(spec),
        _ => Err(ConfigErrors(report.errors)),
    }
}

/// A rate limit back in the form the API and the state file take.
pub fn rate_limit_body(
    spec: &crate::control_plane::config::spec::RateLimitSpec,
) -> crate::control_plane::config::raw::RawRateLimit {
    use crate::control_plane::config::spec::RateKey;
    let (key, trusted) = match &spec.key {
        RateKey::ClientIp { trusted } => (
            "client_ip".to_owned(),
            (!trusted.is_empty()).then(|| trusted.iter().map(ToString::to_string).collect()),
        ),
        RateKey::Header(name) => (format!("header:{name}"), None),
        RateKey::Route => ("route".to_owned(), None),
    };
    crate::control_plane::config::raw::RawRateLimit {
        rate: Some(spec.rate),
        burst: Some(i64::from(spec.burst)),
        key: Some(key),
        trusted_proxies: trusted,
        max_keys: i64::try_from(spec.max_keys).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pairs: &[(&str, i64)]) -> Result<Vec<SplitSpec>, ConfigErrors> {
        let pairs: Vec<(String, i64)> = pairs.iter().map(|(p, w)| (p.to_string(), *w)).collect();
        validate_split(&pairs, &["blue", "green"])
    }

    fn paths(err: ConfigErrors) -> Vec<String> {
        err.0.into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn api_split_uses_the_file_rules_with_body_paths() {
        assert_eq!(split(&[("blue", 90), ("green", 10)]).unwrap().len(), 2);
        assert_eq!(paths(split(&[("blu", 1)]).unwrap_err()), ["blu"]);
        assert_eq!(paths(split(&[("green", -1)]).unwrap_err()), ["green"]);
        assert_eq!(
            paths(split(&[("green", 1_000_001)]).unwrap_err()),
            ["green"]
        );
        assert_eq!(
            paths(split(&[("blue", 0), ("green", 0)]).unwrap_err()),
            [""]
        );
        assert_eq!(paths(split(&[]).unwrap_err()), [""]);
    }

    #[test]
    fn api_backend_checks_addr_weight_ttl() {
        let body = |addr: &str, weight, ttl: Option<&str>| ApiBackend {
            addr: addr.into(),
            weight,
            ttl: ttl.map(|t| RawDuration(t.into())),
        };
        let (b, ttl) = validate_backend(&body("10.0.0.5:80", None, Some("30s"))).unwrap();
        assert_eq!(
            (b.weight, b.source, ttl),
            (1, Source::Api, Some(Duration::from_secs(30)))
        );
        let err = validate_backend(&body("host:80", Some(0), Some("soon"))).unwrap_err();
        assert_eq!(paths(err), ["addr", "weight", "ttl"]);
    }
}
