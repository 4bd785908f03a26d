//! Checks of one `[[routes]]` entry: its match rule, split, sticky settings
//! (in `sticky`), retries and timeouts.
//!
//! Split pools are checked against the names of every `[[pools]]` table that had
//! one, including pools that failed their own checks, so a typo in a pool does
//! not also show up as "no pool named …" here. Name uniqueness is checked by the
//! parent module.

use std::net::Ipv6Addr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::limits::check_size;
use super::mirror::check_mirror;
use super::protect::{check_retry_on_status, check_route_limits};
use super::sticky::check_sticky;
use super::values::{check_duration, check_name, key_path};
use super::Report;
use crate::control_plane::config::raw::{RawMatch, RawMethods, RawRoute, RawSplit};
use crate::control_plane::config::spec::{
    HostMatch, MatchSpec, PoolName, RouteName, RouteSpec, SplitSpec, Timeouts, Upgrades, MAX_WEIGHT,
};

/// Largest `retries` accepted.
const MAX_RETRIES: i64 = 10;

/// Largest `max_request_body` accepted: 1 TiB (beyond that, write 0: no limit).
const MAX_REQUEST_BODY: u64 = 1 << 40;

/// `max_request_body` when the route does not say: 100 MiB. An unbounded default
/// lets one client stream without end into an agent (kamal-proxy#90); a route
/// that takes larger uploads says so, or writes 0 for no limit.
pub(super) const DEFAULT_MAX_REQUEST_BODY: u64 = 100 << 20;

/// Longest `timeouts.client_body` accepted.
const MAX_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(3600);

/// Most entries in `upgrades`.
const MAX_UPGRADES: usize = 16;

/// Checks and converts route `path` (`routes[i]`); `pools` are the defined pool
/// names; `clustered`: the file has `[cluster]` (defaults that depend on it).
pub(super) fn check_route(
    path: &str,
    raw: RawRoute,
    pools: &[&str],
    clustered: bool,
    report: &mut Report,
) -> Option<RouteSpec> {
    let name_ok = check_name(&raw.name, &format!("{path}.name"), "route", report);
    let matcher = check_match(&raw.matcher, &format!("{path}.match"), report);
    let split = check_split(path, &raw, pools, report);
    let sticky = check_sticky(
        raw.sticky.as_ref(),
        &format!("{path}.sticky"),
        clustered,
        report,
    );
    let retries = match raw.retries.unwrap_or(0) {
        n @ 0..=MAX_RETRIES => u32::try_from(n).ok(),
        n => {
            report.add(
                format!("{path}.retries"),
                format!("retries must be between 0 and {MAX_RETRIES}, got {n}"),
            );
            None
        }
    };
    let defaults = Timeouts::default();
    let mut timeout = |value: &Option<_>, key: &str, default| match value {
        None => Some(default),
        Some(d) => check_duration(d, &format!("{path}.timeouts.{key}"), report),
    };
    let connect = timeout(&raw.timeouts.connect, "connect", defaults.connect);
    let response_header = timeout(
        &raw.timeouts.response_header,
        "response_header",
        defaults.response_header,
    );
    let idle = timeout(&raw.timeouts.idle, "idle", defaults.idle);
    let client_body = timeout(
        &raw.timeouts.client_body,
        "client_body",
        defaults.client_body,
    )
    .and_then(|d| {
        if d <= MAX_CLIENT_BODY_TIMEOUT {
            return Some(d);
        }
        report.add(
            format!("{path}.timeouts.client_body"),
            format!(
                "{d:?} is longer than {}s; a stalled upload would hold its connection that long, use at most \"1h\"",
                MAX_CLIENT_BODY_TIMEOUT.as_secs()
            ),
        );
        None
    });
    let upgrades = check_upgrades(raw.upgrades.as_deref(), &format!("{path}.upgrades"), report);
    let retry_on_status = check_retry_on_status(path, raw.retry_on_status.as_deref(), report);
    let limits = check_route_limits(path, &raw, report);
    let mirror = match &raw.mirror {
        None => Some(None),
        Some(m) => check_mirror(m, &format!("{path}.mirror."), pools, report).map(Some),
    };
    // Absent: the default; 0: no limit.
    let max_request_body = match &raw.max_request_body {
        None => Some(Some(DEFAULT_MAX_REQUEST_BODY)),
        Some(size) => check_size(
            size,
            &format!("{path}.max_request_body"),
            0,
            MAX_REQUEST_BODY,
            report,
        )
        .map(|n| (n > 0).then_some(n)),
    };

    let spec = RouteSpec {
        name: RouteName(raw.name.as_str().into()),
        matcher: matcher?,
        split: split?,
        sticky: sticky?,
        retries: retries?,
        timeouts: Timeouts {
            connect: connect?,
            response_header: response_header?,
            idle: idle?,
            client_body: client_body?,
        },
        max_request_body: max_request_body?,
        upgrades: upgrades?,
        retry_on_status: retry_on_status?,
        limits: limits?,
        pause: None,
        maintenance: None,
        mirror: mirror?,
    };
    name_ok.then_some(spec)
}

/// `upgrades = ["websocket", …]`: protocol names (RFC 9110 tokens, no version),
/// each once; empty means no upgrade becomes a tunnel. `path` is `….upgrades`.
fn check_upgrades(raw: Option<&[String]>, path: &str, report: &mut Report) -> Option<Upgrades> {
    let Some(raw) = raw else {
        return Some(Upgrades::default());
    };
    let mut ok = true;
    if raw.len() > MAX_UPGRADES {
        report.add(
            path,
            format!("{} protocols listed; use at most {MAX_UPGRADES}", raw.len()),
        );
        ok = false;
    }
    for (i, name) in raw.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let token = !name.is_empty() && name.len() <= 64 && name.bytes().all(is_tchar);
        if !token {
            report.add(
                &at,
                format!("{name:?} is not a protocol name; write a token like \"websocket\" (no version, no spaces)"),
            );
            ok = false;
        } else if let Some(first) = raw[..i].iter().position(|n| n.eq_ignore_ascii_case(name)) {
            report.add(
                &at,
                format!("{name:?} is listed twice (first at {path}[{first}]); remove one"),
            );
            ok = false;
        }
    }
    ok.then(|| Upgrades::new(raw.iter().map(String::as_str)))
}

/// RFC 9110 §5.6.2 `tchar`, less `/` (which separates a protocol's version).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_split(
    path: &str,
    raw: &RawRoute,
    pools: &[&str],
    report: &mut Report,
) -> Option<Vec<SplitSpec>> {
    let whole = format!("{path}.split");
    let at = |j: usize, field: &str| format!("{path}.split[{j}].{field}");
    check_split_entries(&whole, &at, &raw.split, pools, report)
}

/// The split rules, shared by the file and the admin API: every pool exists and
/// appears once, weights are 0 ..= `MAX_WEIGHT`, not all are 0, the split is not
/// empty. `whole` is the path of the split; `at(j, field)` names entry `j`'s field
/// (`pool` or `weight`).
pub(super) fn check_split_entries(
    whole: &str,
    at: &dyn Fn(usize, &str) -> String,
    entries: &[RawSplit],
    pools: &[&str],
    report: &mut Report,
) -> Option<Vec<SplitSpec>> {
    if entries.is_empty() {
        report.add(
            whole,
            r#"split is empty; add at least one entry like { pool = "NAME", weight = 100 }"#,
        );
        return None;
    }
    let mut ok = true;
    let mut split = Vec::with_capacity(entries.len());
    for (j, entry) in entries.iter().enumerate() {
        if !pools.contains(&entry.pool.as_str()) {
            let message = if pools.is_empty() {
                format!(
                    "no pool named {:?}; no pools are defined, add a [[pools]] entry",
                    entry.pool
                )
            } else {
                format!(
                    "no pool named {:?}; defined pools: {}",
                    entry.pool,
                    pools.join(", ")
                )
            };
            report.add(at(j, "pool"), message);
            ok = false;
        } else if let Some(first) = entries[..j].iter().position(|e| e.pool == entry.pool) {
            report.add(
                at(j, "pool"),
                format!(
                    "pool {:?} appears twice in this split (first at {}); merge the two entries",
                    entry.pool,
                    at(first, "pool")
                ),
            );
            ok = false;
        }
        match u32::try_from(entry.weight) {
            Ok(weight) if weight <= MAX_WEIGHT => split.push(SplitSpec {
                pool: PoolName(entry.pool.as_str().into()),
                weight,
            }),
            _ => {
                report.add(
                    at(j, "weight"),
                    format!(
                        "weight must be between 0 and {MAX_WEIGHT}, got {}",
                        entry.weight
                    ),
                );
                ok = false;
            }
        }
    }
    if split.len() == entries.len() && split.iter().all(|s| s.weight == 0) {
        report.add(
            whole,
            "all weights are 0: the route could never send traffic; give at least one pool a weight above 0",
        );
        ok = false;
    }
    ok.then_some(split)
}

/// `match = { … }`; `path` is the route's `….match`.
fn check_match(raw: &RawMatch, path: &str, report: &mut Report) -> Option<MatchSpec> {
    let host = check_host(raw.host.as_deref(), &format!("{path}.host"), report);
    let path_prefix = check_path_prefix(
        raw.path_prefix.as_deref(),
        &format!("{path}.path_prefix"),
        report,
    );

    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    let mut headers_ok = true;
    for (name, value) in &raw.headers {
        let at = key_path(&format!("{path}.headers"), name);
        let parsed_name = HeaderName::from_bytes(name.as_bytes());
        let parsed_value = HeaderValue::from_str(value);
        if parsed_name.is_err() {
            report.add(
                &at,
                format!("{name:?} is not a valid header name; write e.g. \"x-canary\""),
            );
        }
        if parsed_value.is_err() {
            report.add(
                &at,
                format!("header value {value:?} contains control characters; remove them"),
            );
        }
        match (parsed_name, parsed_value) {
            (Ok(n), Ok(_)) if headers.iter().any(|(seen, _)| *seen == n) => {
                report.add(
                    &at,
                    format!("header {n} is listed twice (header names ignore case); keep one"),
                );
                headers_ok = false;
            }
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => headers_ok = false,
        }
    }

    let methods = check_methods(raw.method.as_ref(), &format!("{path}.method"), report);
    Some(MatchSpec {
        host: host?,
        path_prefix: path_prefix?,
        headers: headers_ok.then_some(headers)?,
        methods: methods?,
    })
}

/// `agents.local`, `*.agents.local` or `*` (any), lower-cased, without a port.
fn check_host(host: Option<&str>, path: &str, report: &mut Report) -> Option<HostMatch> {
    let Some(host) = host else {
        return Some(HostMatch::Any);
    };
    let lower = host.to_ascii_lowercase();
    if lower == "*" {
        return Some(HostMatch::Any);
    }
    if let Some(inner) = lower.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if inner.parse::<Ipv6Addr>().is_ok() {
            return Some(HostMatch::Exact(lower));
        }
    }
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let message = if host.is_empty() {
        r#"host is empty; remove it (or write "*") to match any host"#.to_owned()
    } else if name.contains(':') {
        r#"host must not include a port; write only the name, e.g. "agents.local" (any port matches)"#
            .to_owned()
    } else if name.contains('*') {
        r#"'*' is only allowed as the whole first label, as in "*.agents.local""#.to_owned()
    } else if !labels_ok {
        format!("{host:?} is not a valid host name; use letters, digits, '-' and '.', e.g. \"agents.local\"")
    } else if wildcard {
        return Some(HostMatch::Wildcard(format!(".{name}")));
    } else {
        return Some(HostMatch::Exact(name.to_owned()));
    };
    report.add(path, message);
    None
}

fn check_path_prefix(prefix: Option<&str>, path: &str, report: &mut Report) -> Option<String> {
    let prefix = prefix.unwrap_or("/");
    let message = if !prefix.starts_with('/') {
        format!("path_prefix must start with '/'; write \"/{prefix}\"")
    } else if prefix.contains(['?', '#']) {
        "path_prefix must not contain '?' or '#'; only the path is matched".to_owned()
    } else if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "path_prefix must not contain spaces or control characters; percent-encode them (%20)"
            .to_owned()
    } else {
        return Some(prefix.to_owned());
    };
    report.add(path, message);
    None
}

/// `method = "GET"` or `["GET", "HEAD"]`, upper-cased; absent means any method.
fn check_methods(raw: Option<&RawMethods>, path: &str, report: &mut Report) -> Option<Vec<Method>> {
    let written: Vec<(String, &str)> = match raw {
        None => return Some(Vec::new()),
        Some(RawMethods::One(m)) => vec![(path.to_owned(), m.as_str())],
        Some(RawMethods::Many(ms)) if ms.is_empty() => {
            report.add(
                path,
                r#"method list is empty, so nothing would match; remove `method` to match any method"#,
            );
            return None;
        }
        Some(RawMethods::Many(ms)) => ms
            .iter()
            .enumerate()
            .map(|(k, m)| (format!("{path}[{k}]"), m.as_str()))
            .collect(),
    };
    let mut methods = Vec::with_capacity(written.len());
    let mut ok = true;
    for (at, text) in written {
        match Method::from_bytes(text.to_ascii_uppercase().as_bytes()) {
            Ok(m) if methods.contains(&m) => {
                report.add(at, format!("method {m} is listed twice; keep one"));
                ok = false;
            }
            Ok(m) => methods.push(m),
            Err(_) => {
                report.add(
                    at,
                    format!("{text:?} is not an HTTP method; write e.g. \"GET\" or \"POST\""),
                );
                ok = false;
            }
        }
    }
    ok.then_some(methods)
}

#[cfg(test)]
mod tests;
