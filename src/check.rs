//! `sluicegate check`: the resolved routing table of a valid config, as text.
//!
//! Routes are listed in the order the gateway tries them (most specific first), so an
//! operator sees which route wins before deploying; pools show their backends.

use std::fmt::Write;

use crate::config::spec::{Balance, HashKey, HostMatch, ProjectFilter, Spec};
use crate::route::precedence_order;

/// Renders `spec` for humans.
pub fn render(spec: &Spec) -> String {
    let mut out = String::new();
    let l = &spec.listen;
    let max = l
        .max_connections
        .map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    let _ = writeln!(
        out,
        "listen  http://{}  (header_read_timeout {}, max_connections {max})",
        l.http,
        humantime::format_duration(l.header_read_timeout)
    );

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
        if let Some(sticky) = &r.sticky {
            let _ = write!(out, ", sticky cookie {}", sticky.cookie);
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
        let _ = writeln!(out, "  {}  balance={balance}", p.name);
        let implied = spec
            .discovery
            .docker
            .as_ref()
            .is_some_and(|d| d.implied_pools.contains(&p.name));
        if implied {
            let _ = writeln!(out, "     (not in the file: filled by Docker labels)");
        } else if p.backends.is_empty() {
            let _ = writeln!(out, "     (no static backends)");
        }
        for b in &p.backends {
            let backup = if b.backup { "  backup" } else { "" };
            let _ = writeln!(out, "     {}  weight {}{backup}", b.addr, b.weight);
        }
    }
    out
}

/// Renders what Docker discovery found (`sluicegate discover`).
pub fn render_discovered(set: &crate::discovery::DiscoveredSet) -> String {
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
                (false, false) => "docker health: not healthy",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_printed_most_specific_first() {
        let spec = crate::config::parse(
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
"#,
        )
        .unwrap();
        let text = render(&spec);
        let canary = text.find("1. canary").expect(&text);
        let default = text.find("2. default").expect(&text);
        assert!(canary < default);
        assert!(text.contains("127.0.0.1:9009  weight 1  backup"), "{text}");
        assert!(text.contains("blue=1 (100.0%)"), "{text}");
    }
}
