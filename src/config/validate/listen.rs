//! Checks of the two listener tables: `[listen]` (traffic) and `[admin]`.
//!
//! Besides single values, `[admin]` is checked against `[listen]`: the admin API
//! never shares the traffic port, and an admin address reachable from other hosts
//! needs a token. Whether the token variable is actually set is checked when the
//! gateway starts (the environment is not part of the file).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::values::{check_duration, socket_addr};
use super::Report;
use crate::config::raw::{RawAdmin, RawListen};
use crate::config::spec::{
    AdminSpec, ListenSpec, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_STREAM_CLOSE_DELAY,
};

pub(super) fn check_listen(raw: RawListen, report: &mut Report) -> Option<ListenSpec> {
    let http = socket_addr(
        &raw.http,
        "listen.http",
        "0.0.0.0:8080",
        r#"listen needs an IP address, e.g. "0.0.0.0:8080" (all interfaces) or "127.0.0.1:8080""#,
        report,
    );
    let max_connections = match raw.max_connections {
        None => Some(None),
        Some(n) => match usize::try_from(n) {
            Ok(n) if n >= 1 => Some(Some(n)),
            _ => {
                report.add(
                    "listen.max_connections",
                    format!("must be at least 1, got {n}; remove it for no limit"),
                );
                None
            }
        },
    };
    let header_read_timeout = match &raw.header_read_timeout {
        None => Some(DEFAULT_HEADER_READ_TIMEOUT),
        Some(d) => check_duration(d, "listen.header_read_timeout", report),
    };
    let stream_close_delay = match &raw.stream_close_delay {
        None => Some(DEFAULT_STREAM_CLOSE_DELAY),
        Some(d) => check_duration(d, "listen.stream_close_delay", report),
    };
    Some(ListenSpec {
        http: http?,
        max_connections: max_connections?,
        header_read_timeout: header_read_timeout?,
        stream_close_delay: stream_close_delay?,
    })
}

/// `[admin]`; `listen` is the checked `[listen]` (absent when it had errors).
pub(super) fn check_admin(
    raw: RawAdmin,
    listen: Option<&ListenSpec>,
    report: &mut Report,
) -> Option<AdminSpec> {
    let addr = socket_addr(
        &raw.listen,
        "admin.listen",
        "127.0.0.1:9901",
        r#"admin.listen needs an IP address, e.g. "127.0.0.1:9901""#,
        report,
    );
    if let (Some(addr), Some(listen)) = (addr, listen) {
        if same_port(addr, listen.http) {
            report.add(
                "admin.listen",
                format!(
                    "{addr} clashes with listen.http {}; the admin API needs its own port, e.g. \"127.0.0.1:9901\"",
                    listen.http
                ),
            );
        }
    }
    let token_env = match raw.token_env.as_deref() {
        None => Some(None),
        Some(name) if env_name_ok(name) => Some(Some(name.to_owned())),
        Some(name) => {
            report.add(
                "admin.token_env",
                format!(
                    "{name:?} is not an environment variable name; use letters, digits and '_', e.g. \"SLUICEGATE_ADMIN_TOKEN\""
                ),
            );
            None
        }
    };
    if let (Some(addr), Some(None)) = (addr, &token_env) {
        if !addr.ip().is_loopback() {
            report.add(
                "admin.token_env",
                format!(
                    "required because admin.listen {addr} is not a loopback address: anyone who can reach it could change routing; set token_env = \"SLUICEGATE_ADMIN_TOKEN\" (and that variable), or listen on 127.0.0.1"
                ),
            );
        }
    }
    let state_file = match raw.state_file.as_deref() {
        None => Some(None),
        Some("") => {
            report.add(
                "admin.state_file",
                "state_file is empty; give a path like \"/var/lib/sluicegate/state.json\" or remove it",
            );
            None
        }
        Some(path) => Some(Some(PathBuf::from(path))),
    };
    // A clash or a missing token was reported above, which fails the whole file.
    Some(AdminSpec {
        listen: addr?,
        token_env: token_env?,
        state_file: state_file?,
    })
}

/// Whether two listen addresses would fight over one port (port 0 = any free port).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// POSIX-style environment variable name.
fn env_name_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
