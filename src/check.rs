//! `sluicegate check`: the resolved routing table of a valid config, as text.
//!
//! Routes are listed in the order the gateway tries them (most specific first), so an
//! operator sees which route wins before deploying; pools show their backends.

use std::fmt::Write;

use crate::config::spec::{Balance, HashKey, HostMatch, Spec, UpstreamVerify};
use crate::route::precedence_order;

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
        "listen  http://{}{redirect}  (header_read_timeout {}, max_connections {max})",
        l.http,
        humantime::format_duration(l.header_read_timeout)
    );
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
        if p.backends.is_empty() {
            let _ = writeln!(out, "     (no static backends)");
        }
        for b in &p.backends {
            let backup = if b.backup { "  backup" } else { "" };
            let _ = writeln!(out, "     {}  weight {}{backup}", b.addr, b.weight);
        }
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

    #[test]
    fn https_certificates_and_pool_tls_are_shown() {
        let spec = crate::config::parse(
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
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
