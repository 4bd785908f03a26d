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
use crate::control_plane::config::spec::{BackendSpec, Source, SplitSpec};
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
