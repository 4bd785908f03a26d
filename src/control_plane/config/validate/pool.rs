//! Checks of one `[[pools]]` entry: its name, balancing policy and static
//! backends (the health keys are in `health`, `tls` in `tls`). Name uniqueness is checked by the
//! parent module; [`check_backend`] is also the rule for backends registered
//! through the admin API.

use std::collections::HashMap;

use super::health::check_health;
use super::tls::check_upstream_tls;
use super::values::{check_hash_key, check_name, socket_addr};
use super::Report;
use crate::control_plane::config::raw::{RawBackend, RawBalance, RawPool};
use crate::control_plane::config::spec::{
    BackendSpec, Balance, PoolName, PoolSpec, Source, MAX_WEIGHT,
};

/// Checks and converts pool `path` (`pools[i]`).
pub(super) fn check_pool(path: &str, raw: RawPool, report: &mut Report) -> Option<PoolSpec> {
    let name_ok = check_name(&raw.name, &format!("{path}.name"), "pool", report);
    let health = check_health(path, &raw, report);
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

    let (balance, health, tls) = (balance?, health?, tls?);
    (name_ok && backends_ok).then(|| PoolSpec {
        name: PoolName(raw.name.as_str().into()),
        balance,
        backends,
        tls,
        health,
    })
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
