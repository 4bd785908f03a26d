//! Checks of a route's `mirror = { pool, percent, max_body, timeout }`, the same
//! for the file, the admin API's body and a container's `mirror.*` labels.

use super::limits::check_size;
use super::values::check_duration;
use super::Report;
use crate::control_plane::config::raw::RawMirror;
use crate::control_plane::config::spec::{
    MirrorSpec, PoolName, MIRROR_MAX_BODY_DEFAULT, MIRROR_MAX_BODY_LIMIT, MIRROR_TIMEOUT_DEFAULT,
    MIRROR_TIMEOUT_LIMIT,
};
use crate::control_plane::config::ConfigErrors;

/// Checks `raw` against the defined `pools`; `prefix` is prepended to each key
/// (`"routes[0].mirror."` in the file, `""` for an API body).
pub(super) fn check_mirror(
    raw: &RawMirror,
    prefix: &str,
    pools: &[&str],
    report: &mut Report,
) -> Option<MirrorSpec> {
    let at = |key: &str| format!("{prefix}{key}");
    let pool = match raw.pool.as_deref() {
        None => {
            report.add(
                at("pool"),
                r#"the pool the copies go to is missing; write mirror = { pool = "NAME", percent = 10 }"#,
            );
            None
        }
        Some(name) if !pools.contains(&name) => {
            let defined = if pools.is_empty() {
                "no pools are defined".to_owned()
            } else {
                format!("defined pools: {}", pools.join(", "))
            };
            report.add(at("pool"), format!("no pool named {name:?}; {defined}"));
            None
        }
        Some(name) => Some(PoolName(name.into())),
    };
    let percent = match raw.percent {
        None => {
            report.add(
                at("percent"),
                "the share of requests to copy is missing; write percent = 0 to 100",
            );
            None
        }
        Some(n) => match mirror_percent(n) {
            Some(p) => Some(p),
            None => {
                report.add(
                    at("percent"),
                    format!("percent must be between 0 and 100, got {n}"),
                );
                None
            }
        },
    };
    let max_body = match &raw.max_body {
        None => Some(MIRROR_MAX_BODY_DEFAULT),
        Some(size) => check_size(size, &at("max_body"), 0, MIRROR_MAX_BODY_LIMIT, report),
    };
    let timeout = match &raw.timeout {
        None => Some(MIRROR_TIMEOUT_DEFAULT),
        Some(d) => match check_duration(d, &at("timeout"), report) {
            Some(d) if d > MIRROR_TIMEOUT_LIMIT => {
                report.add(
                    at("timeout"),
                    format!(
                        "{:?} is longer than a copy may live ({}s); a hanging mirror would hold its slot that long",
                        d,
                        MIRROR_TIMEOUT_LIMIT.as_secs()
                    ),
                );
                None
            }
            other => other,
        },
    };
    Some(MirrorSpec {
        pool: pool?,
        percent: percent?,
        max_body: max_body?,
        timeout: timeout?,
    })
}

/// A mirror's `percent` (also a label's): 0 ..= 100.
pub fn mirror_percent(n: i64) -> Option<u8> {
    u8::try_from(n).ok().filter(|p| *p <= 100)
}

/// Checks an admin API body (`PUT /api/v1/routes/{route}/mirror`) or a persisted
/// mirror against the defined `pools`; error paths are the body's keys.
pub fn validate_mirror(raw: &RawMirror, pools: &[&str]) -> Result<MirrorSpec, ConfigErrors> {
    let mut report = Report::default();
    match check_mirror(raw, "", pools, &mut report) {
        Some(spec) if report.errors.is_empty() => Ok(spec),
        _ => Err(ConfigErrors(report.errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::config::raw::{RawDuration, RawSize};

    fn paths(raw: &RawMirror) -> Vec<String> {
        match validate_mirror(raw, &["blue", "green"]) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| e.path).collect(),
        }
    }

    #[test]
    fn a_file_mirror_is_checked_at_its_key_paths() {
        let text = r#"
[listen]
http = "127.0.0.1:0"
[[pools]]
name = "blue"
backends = [{ addr = "127.0.0.1:9001" }]
[[routes]]
name = "agents"
split = [{ pool = "blue", weight = 1 }]
mirror = { pool = "green", percent = 120, timeout = "0s" }
"#;
        let err = crate::control_plane::config::parse(text).expect_err("invalid");
        let paths: Vec<String> = err.0.into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "routes[0].mirror.pool",
                "routes[0].mirror.percent",
                "routes[0].mirror.timeout"
            ]
        );
        let ok = text.replace(
            "\"green\", percent = 120, timeout = \"0s\"",
            "\"blue\", percent = 5",
        );
        let spec = crate::control_plane::config::parse(&ok).expect("valid");
        assert_eq!(spec.routes[0].mirror.as_ref().map(|m| m.percent), Some(5));
    }

    #[test]
    fn mirror_checks_pool_percent_size_and_timeout_with_key_paths() {
        let ok = RawMirror {
            pool: Some("green".into()),
            percent: Some(10),
            ..RawMirror::default()
        };
        let spec = validate_mirror(&ok, &["blue", "green"]).expect("valid");
        assert_eq!(
            (spec.percent, spec.max_body, spec.timeout),
            (10, MIRROR_MAX_BODY_DEFAULT, MIRROR_TIMEOUT_DEFAULT)
        );
        assert_eq!(paths(&RawMirror::default()), ["pool", "percent"]);
        let bad = RawMirror {
            pool: Some("gren".into()),
            percent: Some(101),
            max_body: Some(RawSize::Text("lots".into())),
            timeout: Some(RawDuration("1h".into())),
        };
        assert_eq!(paths(&bad), ["pool", "percent", "max_body", "timeout"]);
        let edge = RawMirror {
            percent: Some(-1),
            ..ok.clone()
        };
        assert_eq!(paths(&edge), ["percent"]);
        for n in [0, 100] {
            let edge = RawMirror {
                percent: Some(n),
                ..ok.clone()
            };
            assert!(paths(&edge).is_empty(), "{n}");
        }
    }
}
