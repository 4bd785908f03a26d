//! Checks of a route's `sticky` table: the pool cookie and/or a learned session
//! header (`learn_header`, with `idle`, `max_sessions` and `prefix`).

use http::HeaderName;

use super::values::{check_duration, cookie_name_ok};
use super::Report;
use crate::control_plane::config::raw::RawSticky;
use crate::control_plane::config::spec::{LearnSpec, StickySpec};
use crate::data_plane::sessions::{DEFAULT_IDLE, DEFAULT_MAX_SESSIONS};

/// Largest `max_sessions` accepted (roughly 500 MB of table at the limit).
const MAX_SESSIONS: i64 = 10_000_000;

/// Headers that never name a session (hop-by-hop, cookies, routing).
const NOT_A_SESSION: &[&str] = &[
    "connection",
    "cookie",
    "set-cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
];

/// Checks `sticky`; `path` is the route's `routes[i].sticky`; `clustered`: the
/// file has `[cluster]`, which turns `prefix` on unless it is written. `Some(None)`
/// when the route has no `sticky`, `None` after an error.
pub(super) fn check_sticky(
    raw: Option<&RawSticky>,
    path: &str,
    clustered: bool,
    report: &mut Report,
) -> Option<Option<StickySpec>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let mut ok = true;
    let cookie = match &raw.cookie {
        Some(name) if !cookie_name_ok(name) => {
            report.add(
                format!("{path}.cookie"),
                format!("{name:?} is not a valid cookie name; use letters, digits, '-', '_' and '.', e.g. \"sg_pool\""),
            );
            ok = false;
            None
        }
        other => other.as_deref().map(Into::into),
    };
    let learn = match &raw.learn_header {
        Some(name) => check_learn(raw, name, path, clustered, report),
        None => {
            for (key, given) in [
                ("idle", raw.idle.is_some()),
                ("max_sessions", raw.max_sessions.is_some()),
                ("prefix", raw.prefix.is_some()),
            ] {
                if given {
                    report.add(
                        format!("{path}.{key}"),
                        format!("{key} applies to learned sessions; add learn_header = \"NAME\" (e.g. \"mcp-session-id\") or remove {key}"),
                    );
                    ok = false;
                }
            }
            Some(None)
        }
    };
    let learn = learn?;
    if raw.cookie.is_none() && raw.learn_header.is_none() {
        report.add(
            path,
            r#"sticky needs cookie = "NAME" (pin by a cookie the gateway sets) or learn_header = "NAME" (pin sessions the agent names, e.g. "mcp-session-id")"#,
        );
        return None;
    }
    ok.then_some(Some(StickySpec { cookie, learn }))
}

/// `learn_header` with its `idle`, `max_sessions` and `prefix`.
fn check_learn(
    raw: &RawSticky,
    name: &str,
    path: &str,
    clustered: bool,
    report: &mut Report,
) -> Option<Option<LearnSpec>> {
    let header = match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) if NOT_A_SESSION.contains(&h.as_str()) => {
            report.add(
                format!("{path}.learn_header"),
                format!("{name:?} cannot name a session; use the header the agent sets, e.g. \"mcp-session-id\""),
            );
            None
        }
        Ok(h) => Some(h),
        Err(_) => {
            report.add(
                format!("{path}.learn_header"),
                format!("{name:?} is not a valid header name; write e.g. \"mcp-session-id\""),
            );
            None
        }
    };
    let idle = match &raw.idle {
        None => Some(DEFAULT_IDLE),
        Some(d) => check_duration(d, &format!("{path}.idle"), report),
    };
    let max_sessions = match raw.max_sessions {
        None => Some(DEFAULT_MAX_SESSIONS),
        Some(n @ 1..=MAX_SESSIONS) => usize::try_from(n).ok(),
        Some(n) => {
            report.add(
                format!("{path}.max_sessions"),
                format!("max_sessions must be between 1 and {MAX_SESSIONS}, got {n}"),
            );
            None
        }
    };
    Some(Some(LearnSpec {
        header: header?,
        idle: idle?,
        max_sessions: max_sessions?,
        // Without it, only the replica that saw the agent name a session knows
        // where it was created: with several replicas the prefix is the default.
        prefix: raw.prefix.unwrap_or(clustered),
    }))
}
