//! `sluicegate check`: the resolved routing table of a valid config, as text.
//!
//! Routes are listed in the order the gateway tries them (most specific first), so an
//! operator sees which route wins before deploying; the listeners (HTTP, HTTPS with
//! its certificates, admin API) come first, and pools show their backends, upstream
//! TLS and health settings (with defaults filled in).

use std::fmt::Write;

use crate::control_plane::config::spec::{
    Balance, ConcurrencySpec, HashKey, HostMatch, PoolHealthSpec, ProjectFilter, RateKey, Spec,
    UpstreamVerify,
};
use crate::data_plane::route::precedence_order;

/// Renders `spec` for humans.
pub fn render(spec: &Spec) -> String {
    let mut out = String::new();
    let l = &spec.listen;
    let max = l
        .max_connections
        .map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    let redirect = match (l.redirect_https, l.https) {
        (Some(r), Some(https)) => format!(
            "  -> 308 to https (port {})",
            r.port.unwrap_or(https.port())
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "listen  http://{}{redirect}  (header_read_timeout {}, max_connections {max}, stream_close_delay {})",
        l.http,
        humantime::format_duration(l.header_read_timeout),
        humantime::format_duration(l.stream_close_delay)
    );
    let c = &l.client;
    let _ = writeln!(
        out,
        "        client limits: head {} bytes / {} fields, idle {}, h2 streams {}, h2 resets {} pending / {} errors / {} cancelled per 10s",
        c.max_header_bytes,
        c.max_headers,
        humantime::format_duration(c.idle_timeout),
        c.http2_max_concurrent_streams,
        c.http2_max_pending_accept_reset_streams,
        c.http2_max_local_error_reset_streams,
        c.http2_max_client_resets,
    );
    if !l.http1_fast_path {
        let _ = writeln!(
            out,
            "        http1_fast_path off: hyper serves and forwards every request"
        );
    }
    if let (Some(https), Some(tls)) = (l.https, &spec.tls) {
        let _ = writeln!(
            out,
            "listen  https://{https}  (TLS 1.2/1.3, ALPN h2 + http/1.1, handshake_timeout {})",
            humantime::format_duration(tls.handshake_timeout)
        );
        for (i, c) in tls.certificates.iter().enumerate() {
            let names = if c.server_names.is_empty() {
                "names from the certificate".to_string()
            } else {
                let names: Vec<String> = c.server_names.iter().map(|n| n.to_string()).collect();
                names.join(", ")
            };
            let default = if i == 0 { "  (default)" } else { "" };
            let _ = writeln!(
                out,
                "     cert {}  key {}  for {names}{default}",
                c.cert.display(),
                c.key.display()
            );
        }
    }
    match &spec.admin {
        None => {
            let _ = writeln!(out, "admin   off (no [admin]: no admin API)");
        }
        Some(a) => {
            let token = a.token_env.as_deref().map_or_else(
                || "no token".to_string(),
                |env| format!("token from ${env}"),
            );
            let state = a.state_file.as_ref().map_or_else(
                || "overrides not persisted".to_string(),
                |p| format!("state_file {}", p.display()),
            );
            let _ = writeln!(out, "admin   http://{}  ({token}, {state})", a.listen);
        }
    }

    if let Some(d) = &spec.discovery.docker {
        let projects = match &d.projects {
            ProjectFilter::Own => "the gateway's own compose project".to_string(),
            ProjectFilter::Any => "all".to_string(),
            ProjectFilter::Only(list) => list.join(", "),
        };
        let _ = writeln!(
            out,
            "docker  labels {}.*  network {}  projects: {projects}",
            d.label_prefix,
            d.network
                .as_deref()
                .unwrap_or("(shared with the gateway, else the only one)")
        );
    }

    let _ = writeln!(out, "\nroutes, in the order they are tried:");
    let order = precedence_order(spec.routes.iter().map(|r| &r.matcher));
    for (rank, i) in order.into_iter().enumerate() {
        let r = &spec.routes[i];
        let m = &r.matcher;
        let host = match &m.host {
            HostMatch::Any => "*".to_string(),
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Wildcard(suffix) => format!("*{suffix}"),
        };
        let _ = write!(
            out,
            "  {}. {}  host={host} path={}",
            rank + 1,
            r.name,
            m.path_prefix
        );
        for (name, value) in &m.headers {
            let _ = write!(out, " {name}={}", value.to_str().unwrap_or("<binary>"));
        }
        if !m.methods.is_empty() {
            let methods: Vec<&str> = m.methods.iter().map(|x| x.as_str()).collect();
            let _ = write!(out, " methods={}", methods.join(","));
        }
        let total: u64 = r.split.iter().map(|s| u64::from(s.weight)).sum();
        let _ = write!(out, "\n     split:");
        for s in &r.split {
            let pct = if total == 0 {
                0.0
            } else {
                100.0 * f64::from(s.weight) / total as f64
            };
            let _ = write!(out, " {}={} ({pct:.1}%)", s.pool, s.weight);
        }
        let t = &r.timeouts;
        let _ = write!(
            out,
            "\n     retries {}, timeouts connect {} / response_header {} / idle {}",
            r.retries,
            humantime::format_duration(t.connect),
            humantime::format_duration(t.response_header),
            humantime::format_duration(t.idle),
        );
        if let Some(cookie) = r.sticky.as_ref().and_then(|s| s.cookie.as_ref()) {
            let _ = write!(out, ", sticky cookie {cookie}");
        }
        if let Some(learn) = r.sticky.as_ref().and_then(|s| s.learn.as_ref()) {
            let _ = write!(
                out,
                ", sessions by {} (idle {}, max {}{})",
                learn.header,
                humantime::format_duration(learn.idle),
                learn.max_sessions,
                if learn.prefix {
                    ", agent-named ids prefixed with their pool"
                } else {
                    ""
                }
            );
        }
        match r.max_request_body {
            Some(max) => {
                let _ = write!(out, ", max_request_body {max} bytes");
            }
            None => out.push_str(", max_request_body unlimited"),
        }
        if let Some(m) = &r.mirror {
            let _ = write!(
                out,
                "\n     mirror: {}% to {} (bodies up to {} bytes, {} per copy)",
                m.percent,
                m.pool,
                m.max_body,
                humantime::format_duration(m.timeout)
            );
        }
        if let Some(rate) = &r.limits.rate {
            let key = match &rate.key {
                RateKey::ClientIp { trusted } if trusted.is_empty() => "client_ip".to_owned(),
                RateKey::ClientIp { trusted } => {
                    format!("client_ip ({} trusted proxies)", trusted.len())
                }
                RateKey::Header(name) => format!("header:{name}"),
                RateKey::Route => "route".to_owned(),
            };
            let _ = write!(
                out,
                ", rate_limit {}/s burst {} by {key} (max_keys {})",
                rate.rate, rate.burst, rate.max_keys
            );
        }
        if let Some(c) = &r.limits.concurrency {
            let _ = write!(out, ", {}", concurrency_text(c));
        }
        out.push('\n');
    }

    let _ = writeln!(out, "\npools:");
    for p in &spec.pools {
        let balance = match &p.balance {
            Balance::RoundRobin => "round_robin".to_string(),
            Balance::LeastConn => "least_conn".to_string(),
            Balance::P2c => "p2c".to_string(),
            Balance::Hash(HashKey::Header(h)) => format!("hash on header:{h}"),
            Balance::Hash(HashKey::Cookie(c)) => format!("hash on cookie:{c}"),
            Balance::Hash(HashKey::ClientIp) => "hash on client_ip".to_string(),
        };
        let tls = match &p.tls {
            None => String::new(),
            Some(t) => {
                let verify = match &t.verify {
                    UpstreamVerify::Ca(ca) => format!("ca {}", ca.display()),
                    UpstreamVerify::PublicRoots => "public roots".to_string(),
                    UpstreamVerify::Insecure => "NOT VERIFIED".to_string(),
                };
                let name = t.server_name.as_deref().unwrap_or("<backend ip>");
                format!("  tls(server_name {name}, {verify})")
            }
        };
        let _ = writeln!(out, "  {}  balance={balance}{tls}", p.name);
        let implied = spec.discovery.implied_pools().contains(&p.name);
        if implied {
            let _ = writeln!(out, "     (not in the file: filled by Docker labels)");
        } else if p.backends.is_empty() {
            let _ = writeln!(out, "     (no static backends)");
        }
        for b in &p.backends {
            let backup = if b.backup { "  backup" } else { "" };
            let _ = writeln!(out, "     {}  weight {}{backup}", b.addr, b.weight);
        }
        render_health(&mut out, &p.health);
        let mut limits = Vec::new();
        if let Some(b) = &p.limits.retry_budget {
            limits.push(format!(
                "retry_budget {}% + {}/s",
                b.percent, b.min_per_second
            ));
        }
        if let Some(c) = &p.limits.concurrency {
            limits.push(concurrency_text(c));
        }
        if let Some(b) = &p.limits.breaker {
            limits.push(format!(
                "circuit_breaker max_connections {} per backend, max_pending {}",
                b.max_connections, b.max_pending
            ));
        }
        if !limits.is_empty() {
            let _ = writeln!(out, "     {}", limits.join("; "));
        }
    }
    out
}

/// `concurrency` as `check` shows it.
fn concurrency_text(c: &ConcurrencySpec) -> String {
    if c.queue == 0 {
        format!("max_in_flight {} (no queue)", c.max_in_flight)
    } else {
        format!(
            "max_in_flight {}, queue {} for up to {}",
            c.max_in_flight,
            c.queue,
            humantime::format_duration(c.queue_timeout)
        )
    }
}

/// Renders what Docker discovery found (`sluicegate discover`).
pub fn render_discovered(set: &crate::control_plane::discovery::DiscoveredSet) -> String {
    let mut out = String::new();
    if set.pools.is_empty() {
        let _ = writeln!(out, "no labelled containers are backends");
    }
    for (pool, backends) in &set.pools {
        let _ = writeln!(out, "pool {pool}");
        for b in backends {
            let state = match (b.draining, b.docker_healthy) {
                (true, _) => "draining",
                (false, true) => "eligible",
                (false, false) => match b.docker_health {
                    crate::control_plane::config::spec::DockerHealth::Starting => {
                        "docker health: starting"
                    }
                    _ => "docker health: unhealthy",
                },
            };
            let _ = writeln!(
                out,
                "  {}  weight {}  {}  (network {}, {state})",
                b.addr, b.weight, b.container_name, b.network
            );
        }
    }
    for s in &set.skipped {
        let _ = writeln!(out, "skipped {}: {}", s.container_name, s.reason);
    }
    out
}

/// Renders what Swarm discovery found (`sluicegate discover` with
/// `[discovery.swarm]`): where it was read, every service, its tasks (node,
/// address, state / desired state, role) and what was skipped and why.
pub fn render_swarm(
    report: &crate::control_plane::discovery::swarm::SwarmReport,
    status: &crate::control_plane::discovery::DiscoveryStatus,
) -> String {
    use crate::control_plane::discovery::swarm::TaskRole;
    let mut out = String::new();
    let source = status.source.as_deref().unwrap_or("nowhere yet");
    let confirmed = status.last_confirmed.map_or_else(
        || "never".to_owned(),
        crate::control_plane::discovery::swarm::rfc3339,
    );
    let _ = writeln!(out, "read from {source}, confirmed {confirmed}");
    if let Some(error) = &status.last_error {
        let _ = writeln!(out, "last error: {error}");
    }
    if report.services.is_empty() {
        let _ = writeln!(out, "no services");
    }
    for s in &report.services {
        match (&s.skipped, &s.pool, s.labelled) {
            (Some(reason), _, _) => {
                let _ = writeln!(out, "service {}  skipped: {reason}", s.name);
                continue;
            }
            (None, Some(pool), _) => {
                let _ = writeln!(out, "service {}  pool {pool}", s.name);
            }
            (None, None, _) => {
                let _ = writeln!(out, "service {}  not labelled (ignored)", s.name);
                continue;
            }
        }
        if s.tasks.is_empty() {
            let _ = writeln!(out, "  no running tasks");
        }
        for t in &s.tasks {
            let addr = t.addr.map_or_else(|| "-".to_owned(), |a| a.to_string());
            let role = match t.role {
                TaskRole::Backend => "backend",
                TaskRole::Draining => "draining",
                TaskRole::Waiting => "waiting",
                TaskRole::Skipped => "skipped",
            };
            let why = t
                .reason
                .as_deref()
                .map_or_else(String::new, |r| format!(" ({r})"));
            let _ = writeln!(
                out,
                "  {}  node {}  {addr}  state {}  desired {}  {role}{why}",
                t.name, t.node, t.state, t.desired_state
            );
        }
    }
    out
}

/// The health lines of one pool.
fn render_health(out: &mut String, h: &PoolHealthSpec) {
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    match &h.probe {
        None => {
            let _ = writeln!(out, "     health: no probe (backends are healthy)");
        }
        Some(p) => {
            let host = p
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .map_or_else(String::new, |h| format!(" host {h}"));
            let start = if p.start_period.is_zero() {
                String::new()
            } else {
                format!(", start_period {}", d(p.start_period))
            };
            let what = match &p.grpc {
                None => format!("GET {}{host}", p.path),
                Some(g) => format!(
                    "gRPC grpc.health.v1.Health/Check service {:?}{host}",
                    g.service
                ),
            };
            let expect = match &p.grpc {
                None => p.expect_status.to_string(),
                Some(_) => "SERVING".to_owned(),
            };
            let _ = writeln!(
                out,
                "     health: {what} every {}, timeout {}, expect {expect}, rise {}, fall {}{start}, initial {}",
                d(p.interval),
                d(p.timeout),
                p.rise,
                p.fall,
                p.initial.as_str(),
            );
        }
    }
    match &h.outlier {
        None => {
            let _ = writeln!(out, "     outlier: off");
        }
        Some(o) => {
            let what = if o.count_5xx {
                "connect errors, timeouts, 5xx"
            } else {
                "connect errors, timeouts"
            };
            let _ = writeln!(
                out,
                "     outlier: eject after {} failures in a row ({what}) for {}, doubling up to {}; at most {}% ejected",
                o.consecutive_failures,
                d(o.base_ejection),
                d(o.max_ejection),
                o.max_ejected_percent,
            );
        }
    }
    let slow_start = h.slow_start.map_or_else(|| "off".to_string(), d);
    let panic = h.panic_threshold.map_or_else(
        || "off (503 no_healthy_backend when none is eligible)".to_string(),
        |t| format!("{t}% (below it, route to all primaries)"),
    );
    let hold = h.hold.map_or_else(
        || "off".to_string(),
        |s| format!("up to {} for at most {} queued", d(s.timeout), s.max_queued),
    );
    let _ = writeln!(
        out,
        "     slow_start {slow_start}; panic_threshold {panic}; hold {hold}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_printed_most_specific_first() {
        let spec = crate::control_plane::config::parse(
            r#"
[listen]
http = "127.0.0.1:8080"
[[pools]]
name = "blue"
backends = [{ addr = "127.0.0.1:9001", weight = 3 }, { addr = "127.0.0.1:9009", backup = true }]
[[routes]]
name = "default"
split = [{ pool = "blue", weight = 1 }]
[[routes]]
name = "canary"
match = { headers = { "x-canary" = "always" } }
split = [{ pool = "blue", weight = 1 }]
mirror = { pool = "blue", percent = 5 }
"#,
        )
        .unwrap();
        let text = render(&spec);
        assert!(
            text.contains("mirror: 5% to blue (bodies up to 1048576 bytes, 10s per copy)"),
            "{text}"
        );
        let canary = text.find("1. canary").expect(&text);
        let default = text.find("2. default").expect(&text);
        assert!(canary < default);
        assert!(text.contains("127.0.0.1:9009  weight 1  backup"), "{text}");
        assert!(text.contains("blue=1 (100.0%)"), "{text}");
        assert!(text.contains("health: no probe"), "{text}");
        assert!(text.contains("panic_threshold off"), "{text}");
    }

    #[test]
    fn admin_and_stream_close_delay_are_shown() {
        let spec = crate::control_plane::config::parse(
            r#"
[listen]
http = "127.0.0.1:8080"
stream_close_delay = "1m"
[admin]
listen = "127.0.0.1:9901"
token_env = "SG_TOKEN"
state_file = "/var/lib/sluicegate/state.json"
"#,
        )
        .unwrap();
        let text = render(&spec);
        for line in [
            "max_connections unlimited, stream_close_delay 1m)",
            "admin   http://127.0.0.1:9901  (token from $SG_TOKEN, state_file /var/lib/sluicegate/state.json)",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }

    #[test]
    fn health_settings_are_printed_with_defaults() {
        let spec = crate::control_plane::config::parse(
            r#"
[listen]
http = "127.0.0.1:8080"
[[pools]]
name = "blue"
backends = [{ addr = "127.0.0.1:9001" }]
slow_start = "30s"
panic_threshold = 50
hold = { timeout = "2s" }
[pools.health]
interval = "500ms"
start_period = "10s"
[pools.outlier]
count_5xx = false
[[routes]]
name = "default"
split = [{ pool = "blue", weight = 1 }]
"#,
        )
        .unwrap();
        let text = render(&spec);
        for line in [
            "health: GET /health every 500ms, timeout 250ms, expect 200-399, rise 2, fall 3, start_period 10s, initial unknown",
            "outlier: eject after 5 failures in a row (connect errors, timeouts) for 10s, doubling up to 5m; at most 50% ejected",
            "slow_start 30s; panic_threshold 50% (below it, route to all primaries); hold up to 2s for at most 1000 queued",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn a_grpc_health_check_is_printed_with_its_service() {
        let spec = crate::control_plane::config::parse(
            r#"
[listen]
http = "127.0.0.1:8080"
[[pools]]
name = "models"
protocol = "h2c"
backends = [{ addr = "127.0.0.1:50051" }]
[pools.health]
grpc = true
grpc_service = "model.Generator"
[[routes]]
name = "default"
split = [{ pool = "models", weight = 1 }]
"#,
        )
        .unwrap();
        let text = render(&spec);
        let line = r#"health: gRPC grpc.health.v1.Health/Check service "model.Generator" every 2s, timeout 1s, expect SERVING, rise 2, fall 3, initial unknown"#;
        assert!(text.contains(line), "{line}\n{text}");
    }

    #[test]
    fn https_certificates_and_pool_tls_are_shown() {
        let spec = crate::control_plane::config::parse(
            r#"
[listen]
http = "127.0.0.1:8080"
https = "127.0.0.1:8443"
redirect_https = true
redirect_https_port = 443
[[tls.certificates]]
cert = "d.pem"
key = "d.key"
[[tls.certificates]]
cert = "b.pem"
key = "b.key"
server_names = ["b.example", "*.b.example"]
[[pools]]
name = "blue"
tls = { insecure_skip_verify = true }
"#,
        )
        .unwrap();
        let text = render(&spec);
        for line in [
            "listen  http://127.0.0.1:8080  -> 308 to https (port 443)",
            "listen  https://127.0.0.1:8443  (TLS 1.2/1.3, ALPN h2 + http/1.1, handshake_timeout 10s)",
            "cert d.pem  key d.key  for names from the certificate  (default)",
            "cert b.pem  key b.key  for b.example, *.b.example\n",
            "blue  balance=round_robin  tls(server_name <backend ip>, NOT VERIFIED)",
            "admin   off",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
