//! Checks of the listener tables: `[listen]` (traffic: `http`, `https`, the
//! redirect) and `[admin]`.
//!
//! Besides single values, `[admin]` is checked against `[listen]`: the admin API
//! never shares a traffic port (`http` or `https`), and an admin address reachable
//! from other hosts needs a token. `listen.https` and `[tls]` come together. Whether the token variable is actually set is checked when the
//! gateway starts (the environment is not part of the file).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::limits::check_client_limits;
use super::values::{check_duration, socket_addr};
use super::Report;
use crate::control_plane::config::raw::{RawAdmin, RawListen};
use crate::control_plane::config::spec::{
    AdminSpec, ListenSpec, RedirectHttps, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_STREAM_CLOSE_DELAY,
    MAX_ALLOWED_HOSTS,
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
    let client = check_client_limits(&raw, report);
    let https = match &raw.https {
        None => Some(None),
        Some(text) => socket_addr(
            text,
            "listen.https",
            "0.0.0.0:8443",
            r#"listen needs an IP address, e.g. "0.0.0.0:8443" (all interfaces) or "127.0.0.1:8443""#,
            report,
        )
        .map(Some),
    };
    if let (Some(http), Some(Some(https))) = (http, https) {
        if http == https && http.port() != 0 {
            report.add(
                "listen.https",
                format!("{https} is also listen.http; use another port, e.g. 8443"),
            );
        }
    }
    let redirect_https = check_redirect(&raw, report);
    Some(ListenSpec {
        http: http?,
        max_connections: max_connections?,
        header_read_timeout: header_read_timeout?,
        https: https?,
        redirect_https: redirect_https?,
        stream_close_delay: stream_close_delay?,
        client: client?,
        http1_fast_path: raw.http1_fast_path.unwrap_or(true),
    })
}

/// `redirect_https` and `redirect_https_port`.
fn check_redirect(raw: &RawListen, report: &mut Report) -> Option<Option<RedirectHttps>> {
    if raw.redirect_https && raw.https.is_none() {
        report.add(
            "listen.redirect_https",
            "redirects go to the HTTPS listener, but listen.https is not set; add it or remove redirect_https",
        );
        return None;
    }
    let port = match raw.redirect_https_port {
        None => None,
        Some(_) if !raw.redirect_https => {
            report.add(
                "listen.redirect_https_port",
                "only used with redirect_https = true; add that or remove redirect_https_port",
            );
            return None;
        }
        Some(n) => match u16::try_from(n) {
            Ok(port) if port >= 1 => Some(port),
            _ => {
                report.add(
                    "listen.redirect_https_port",
                    format!("{n} is not a port number (1-65535)"),
                );
                return None;
            }
        },
    };
    Some(raw.redirect_https.then_some(RedirectHttps { port }))
}

/// `listen.https` and `[tls]` come together.
pub(super) fn check_https_needs_tls(listen: &ListenSpec, tls_given: bool, report: &mut Report) {
    match (listen.https, tls_given) {
        (Some(_), false) => report.add(
            "listen.https",
            r#"HTTPS needs a certificate; add [[tls.certificates]] with cert = "…pem" and key = "…pem""#,
        ),
        (None, true) => report.add(
            "tls",
            r#"[tls] is only used by the HTTPS listener; add listen.https = "0.0.0.0:8443" or remove [tls]"#,
        ),
        _ => {}
    }
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
        let traffic = [
            ("listen.http", Some(listen.http)),
            ("listen.https", listen.https),
        ];
        for (key, port) in traffic {
            if let Some(port) = port.filter(|&port| same_port(addr, port)) {
                report.add(
                    "admin.listen",
                    format!(
                        "{addr} clashes with {key} {port}; the admin API needs its own port, e.g. \"127.0.0.1:9901\""
                    ),
                );
            }
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
    let allowed_hosts = check_allowed_hosts(raw.allowed_hosts.unwrap_or_default(), report);
    // A clash or a missing token was reported above, which fails the whole file.
    Some(AdminSpec {
        listen: addr?,
        token_env: token_env?,
        state_file: state_file?,
        allowed_hosts: allowed_hosts?,
    })
}

/// `[admin].allowed_hosts`: DNS names or IP addresses, without a port, at most
/// [`MAX_ALLOWED_HOSTS`]; stored lower-case without a trailing dot.
fn check_allowed_hosts(raw: Vec<String>, report: &mut Report) -> Option<Vec<String>> {
    if raw.len() > MAX_ALLOWED_HOSTS {
        report.add(
            "admin.allowed_hosts",
            format!("{} names; give at most {MAX_ALLOWED_HOSTS}", raw.len()),
        );
        return None;
    }
    let mut names = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, name) in raw.iter().enumerate() {
        let clean = name.trim_end_matches('.').to_ascii_lowercase();
        let is_ip = clean.parse::<std::net::IpAddr>().is_ok();
        let is_dns = !clean.is_empty()
            && clean.len() <= 253
            && clean.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if is_ip || is_dns {
            names.push(clean);
        } else {
            ok = false;
            report.add(
                format!("admin.allowed_hosts[{i}]"),
                format!(
                    "{name:?} is not a host name or IP address; write the name clients use, without a port, e.g. \"sluicegate.internal\""
                ),
            );
        }
    }
    ok.then_some(names)
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
