//! Checks of one `[[pools]]` entry: its name, balancing policy and static
//! backends (the health keys are in `health`, `tls` in `tls`). Name uniqueness is checked by the
//! parent module; [`check_backend`] is also the rule for backends registered
//! through the admin API.

use std::collections::HashMap;

use super::health::check_health;
use super::protect::check_pool_limits;
use super::tls::check_upstream_tls;
use std::time::Duration;

use super::limits::check_size;
use super::values::{check_duration, check_hash_key, check_name, socket_addr};
use super::Report;
use crate::control_plane::config::raw::{
    RawBackend, RawBalance, RawDuration, RawH2, RawPool, RawSize,
};
use crate::control_plane::config::spec::{
    BackendSpec, Balance, H2Spec, PoolName, PoolSpec, Protocol, Source, MAX_WEIGHT,
};
use crate::control_plane::config::ConfigError;

/// Checks and converts pool `path` (`pools[i]`).
pub(super) fn check_pool(path: &str, raw: RawPool, report: &mut Report) -> Option<PoolSpec> {
    let name_ok = check_name(&raw.name, &format!("{path}.name"), "pool", report);
    let health = check_health(path, &raw, report);
    let limits = check_pool_limits(path, &raw, report);
    let key_path = format!("{path}.hash_key");
    let kind = match raw.balance.as_deref() {
        None => Some(RawBalance::RoundRobin),
        Some(s) => RawBalance::parse(s).or_else(|| {
            report.add(
                format!("{path}.balance"),
                format!("unknown value {s:?}; use one of: round_robin, least_conn, p2c, hash"),
            );
            None
        }),
    };
    let balance = match (kind, raw.hash_key) {
        // The policy itself is wrong (reported above): hash_key cannot be judged.
        (None, _) => None,
        (Some(RawBalance::Hash), Some(key)) => {
            check_hash_key(&key, &key_path, report).map(Balance::Hash)
        }
        (Some(RawBalance::Hash), None) => {
            report.add(
                key_path,
                r#"balance = "hash" needs hash_key: "header:NAME", "cookie:NAME" or "client_ip""#,
            );
            None
        }
        (Some(other), Some(_)) => {
            report.add(
                key_path,
                format!(
                    r#"hash_key only applies to balance = "hash", but this pool uses "{}"; remove hash_key or set balance = "hash""#,
                    other.as_str()
                ),
            );
            None
        }
        (Some(RawBalance::RoundRobin), None) => Some(Balance::RoundRobin),
        (Some(RawBalance::LeastConn), None) => Some(Balance::LeastConn),
        (Some(RawBalance::P2c), None) => Some(Balance::P2c),
    };

    let mut backends = Vec::with_capacity(raw.backends.len());
    let mut seen = HashMap::new();
    let mut backends_ok = true;
    for (j, backend) in raw.backends.iter().enumerate() {
        let at = format!("{path}.backends[{j}]");
        let addr_path = format!("{at}.addr");
        let checked = check_backend(backend, &addr_path, &format!("{at}.weight"), report);
        if let Some(spec) = &checked {
            if let Some(first) = seen.insert(spec.addr, j) {
                report.add(
                    addr_path,
                    format!(
                        "duplicate backend {} (first at {path}.backends[{first}]); remove one",
                        spec.addr
                    ),
                );
                backends_ok = false;
            }
        }
        match checked {
            Some(spec) => backends.push(spec),
            None => backends_ok = false,
        }
    }

    let tls = match &raw.tls {
        None => Some(None),
        Some(tls) => check_upstream_tls(&format!("{path}.tls"), tls, report).map(Some),
    };

    let protocol = check_protocol(
        &format!("{path}.protocol"),
        raw.protocol.as_deref(),
        raw.tls.is_some(),
        report,
    );
    let h2 = match &raw.h2 {
        None => Some(H2Spec::default()),
        Some(h2) => check_h2(&format!("{path}.h2"), h2, report),
    };

    if let (Some(health), Some(protocol)) = (&health, &protocol) {
        let grpc = health.probe.as_ref().is_some_and(|p| p.grpc.is_some());
        if grpc && !protocol.is_h2() {
            report.add(
                format!("{path}.health.grpc"),
                r#"a gRPC health check goes over the pool's HTTP/2 connections; set protocol = "h2c" (or "h2" with tls) on this pool, or remove grpc = true"#,
            );
        }
    }
    let (balance, health, tls, protocol, h2, limits) =
        (balance?, health?, tls?, protocol?, h2?, limits?);
    (name_ok && backends_ok).then(|| PoolSpec {
        name: PoolName(raw.name.as_str().into()),
        balance,
        backends,
        tls,
        protocol,
        h2,
        health,
        limits,
    })
}

/// `protocol` of a pool (`path`): one of the three values, h2 only with `tls`
/// and h2c only without.
pub(super) fn check_protocol(
    path: &str,
    raw: Option<&str>,
    has_tls: bool,
    report: &mut Report,
) -> Option<Protocol> {
    let Some(text) = raw else {
        return Some(Protocol::Http1);
    };
    match (protocol_value(text, path), has_tls) {
        (Err(err), _) => {
            report.add(err.path, err.message);
            None
        }
        (Ok(Protocol::H2), false) => {
            report.add(
                path,
                r#""h2" is HTTP/2 over TLS and needs tls = { … } on this pool; for HTTP/2 without TLS use protocol = "h2c""#,
            );
            None
        }
        (Ok(Protocol::H2c), true) => {
            report.add(
                path,
                r#""h2c" is HTTP/2 without TLS, but this pool has tls = { … }; use protocol = "h2" (ALPN h2) or remove tls"#,
            );
            None
        }
        (Ok(protocol), _) => Some(protocol),
    }
}

/// A `protocol` value (the file's or a label's), with `path` named in the error.
pub fn protocol_value(text: &str, path: &str) -> Result<Protocol, ConfigError> {
    Protocol::parse(text).ok_or_else(|| ConfigError {
        path: path.to_owned(),
        message: format!(r#"unknown protocol {text:?}; use one of: "http1", "h2c" (HTTP/2 without TLS), "h2" (HTTP/2 over TLS, needs tls)"#),
    })
}

/// Smallest window HTTP/2 allows (RFC 9113 §6.9.2's initial value).
const MIN_WINDOW: u64 = 65_535;
/// Largest window HTTP/2 allows (2^31 - 1).
const MAX_WINDOW: u64 = (1 << 31) - 1;
/// Most `h2.max_connections`.
const MAX_H2_CONNECTIONS: i64 = 1024;

/// `[pools.h2]` at `path`.
fn check_h2(path: &str, raw: &RawH2, report: &mut Report) -> Option<H2Spec> {
    let defaults = H2Spec::default();
    let max_connections = match raw.max_connections {
        None => Some(defaults.max_connections),
        Some(n) if (1..=MAX_H2_CONNECTIONS).contains(&n) => u32::try_from(n).ok(),
        Some(n) => {
            report.add(
                format!("{path}.max_connections"),
                format!("must be between 1 and {MAX_H2_CONNECTIONS}, got {n}"),
            );
            None
        }
    };
    let keepalive_interval = optional_duration(
        raw.keepalive_interval.as_ref(),
        &format!("{path}.keepalive_interval"),
        defaults.keepalive_interval,
        report,
    );
    let keepalive_timeout = match &raw.keepalive_timeout {
        None => Some(defaults.keepalive_timeout),
        Some(d) => check_duration(d, &format!("{path}.keepalive_timeout"), report),
    };
    let max_connection_age = optional_duration(
        raw.max_connection_age.as_ref(),
        &format!("{path}.max_connection_age"),
        defaults.max_connection_age,
        report,
    );
    let window = |raw: Option<&RawSize>, key: &str, default: u32, report: &mut Report| match raw {
        None => Some(default),
        Some(size) => check_size(
            size,
            &format!("{path}.{key}"),
            MIN_WINDOW,
            MAX_WINDOW,
            report,
        )
        .and_then(|n| u32::try_from(n).ok()),
    };
    let stream_window = window(
        raw.stream_window.as_ref(),
        "stream_window",
        defaults.stream_window,
        report,
    );
    let connection_window = window(
        raw.connection_window.as_ref(),
        "connection_window",
        defaults.connection_window,
        report,
    );
    Some(H2Spec {
        max_connections: max_connections?,
        keepalive_interval: keepalive_interval?,
        keepalive_timeout: keepalive_timeout?,
        max_connection_age: max_connection_age?,
        stream_window: stream_window?,
        connection_window: connection_window?,
    })
}

/// A duration where `"0s"` means off (`Some(None)`); `None` when it is wrong.
fn optional_duration(
    raw: Option<&RawDuration>,
    path: &str,
    default: Option<Duration>,
    report: &mut Report,
) -> Option<Option<Duration>> {
    match raw {
        None => Some(default),
        Some(d) if humantime::parse_duration(&d.0).is_ok_and(|d| d.is_zero()) => Some(None),
        Some(d) => check_duration(d, path, report).map(Some),
    }
}

/// One backend's address and weight, with the file's rules (shared with the
/// admin API's backend registration).
pub(super) fn check_backend(
    backend: &RawBackend,
    addr_path: &str,
    weight_path: &str,
    report: &mut Report,
) -> Option<BackendSpec> {
    let hint = r#"sluicegate does not resolve names: write the backend's IP, e.g. "10.0.0.5:9001", or let Docker discovery add containers"#;
    let addr = socket_addr(&backend.addr, addr_path, "10.0.0.5:9001", hint, report);
    let weight = backend.weight.unwrap_or(1);
    let weight = match u32::try_from(weight) {
        Ok(w) if (1..=MAX_WEIGHT).contains(&w) => Some(w),
        _ => {
            report.add(
                weight_path,
                format!(
                    "weight must be between 1 and {MAX_WEIGHT}, got {weight}; to keep a backend in reserve use backup = true"
                ),
            );
            None
        }
    };
    Some(BackendSpec {
        addr: addr?,
        weight: weight?,
        backup: backend.backup,
        draining: false,
        source: Source::File,
        container: None,
    })
}
