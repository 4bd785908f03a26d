//! Checks of one `[[pools]]` entry: its name, balancing policy and static
//! backends. Name uniqueness is checked by the parent module.

use std::collections::HashMap;

use super::tls::check_upstream_tls;
use super::values::{check_hash_key, check_name, socket_addr};
use super::Report;
use crate::config::raw::{RawBalance, RawPool};
use crate::config::spec::{BackendSpec, Balance, PoolName, PoolSpec, MAX_WEIGHT};

/// Checks and converts pool `path` (`pools[i]`).
pub(super) fn check_pool(path: &str, raw: RawPool, report: &mut Report) -> Option<PoolSpec> {
    let name_ok = check_name(&raw.name, &format!("{path}.name"), "pool", report);
    let key_path = format!("{path}.hash_key");
    let balance = match (raw.balance, raw.hash_key) {
        (RawBalance::Hash, Some(key)) => check_hash_key(&key, &key_path, report).map(Balance::Hash),
        (RawBalance::Hash, None) => {
            report.add(
                key_path,
                r#"balance = "hash" needs hash_key: "header:NAME", "cookie:NAME" or "client_ip""#,
            );
            None
        }
        (other, Some(_)) => {
            report.add(
                key_path,
                format!(
                    r#"hash_key only applies to balance = "hash", but this pool uses "{}"; remove hash_key or set balance = "hash""#,
                    other.as_str()
                ),
            );
            None
        }
        (RawBalance::RoundRobin, None) => Some(Balance::RoundRobin),
        (RawBalance::LeastConn, None) => Some(Balance::LeastConn),
        (RawBalance::P2c, None) => Some(Balance::P2c),
    };

    let mut backends = Vec::with_capacity(raw.backends.len());
    let mut seen = HashMap::new();
    let mut backends_ok = true;
    for (j, backend) in raw.backends.iter().enumerate() {
        let at = format!("{path}.backends[{j}]");
        let hint = r#"sluicegate does not resolve names: write the backend's IP, e.g. "10.0.0.5:9001", or let Docker discovery add containers"#;
        let addr = socket_addr(
            &backend.addr,
            &format!("{at}.addr"),
            "10.0.0.5:9001",
            hint,
            report,
        );
        if let Some(addr) = addr {
            if let Some(first) = seen.insert(addr, j) {
                report.add(
                    format!("{at}.addr"),
                    format!(
                        "duplicate backend {addr} (first at {path}.backends[{first}]); remove one"
                    ),
                );
                backends_ok = false;
            }
        }
        let weight = backend.weight.unwrap_or(1);
        let weight = match u32::try_from(weight) {
            Ok(w) if (1..=MAX_WEIGHT).contains(&w) => Some(w),
            _ => {
                report.add(
                    format!("{at}.weight"),
                    format!(
                        "weight must be between 1 and {MAX_WEIGHT}, got {weight}; to keep a backend in reserve use backup = true"
                    ),
                );
                None
            }
        };
        match (addr, weight) {
            (Some(addr), Some(weight)) => backends.push(BackendSpec {
                addr,
                weight,
                backup: backend.backup,
            }),
            _ => backends_ok = false,
        }
    }

    let tls = match &raw.tls {
        None => Some(None),
        Some(tls) => check_upstream_tls(&format!("{path}.tls"), tls, report).map(Some),
    };

    let balance = balance?;
    let tls = tls?;
    (name_ok && backends_ok).then(|| PoolSpec {
        name: PoolName(raw.name.as_str().into()),
        balance,
        backends,
        tls,
    })
}
