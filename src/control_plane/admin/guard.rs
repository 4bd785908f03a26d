//! What keeps a web page from driving the admin API.
//!
//! With no token on loopback (the default), the admin port answers whoever can
//! reach it, and a browser is such a client: any page it shows can send requests
//! there. Three checks, on every admin route, close that:
//!
//! - **`Host`** must name this listener: an IP address equal to the listen
//!   address (any IP address when it listens on all interfaces), a loopback name
//!   (`localhost`, `127.0.0.1`, `[::1]`, …) or a name in `[admin].allowed_hosts`.
//!   A DNS-rebinding page reaches the port under *its own* name and is refused
//!   (403). The port is not compared: a port mapping (`-p 19901:9901`) changes
//!   it, and a rebinding page cannot change the name. A request without `Host`
//!   (HTTP/1.0 tools) passes: a browser always sends one. This covers `/metrics`,
//!   `/healthz` and `/readyz` too: Prometheus and health checks that address the
//!   gateway by a name need that name in `allowed_hosts` (an IP address or
//!   `localhost` always works).
//! - **`Origin`**, when present, must be the same origin as the request:
//!   `http://` or `https://` followed by the request's own `Host` (403 otherwise,
//!   `null` included). Browsers send `Origin` on every cross-origin write.
//! - **`Content-Type`** of every request other than `GET`/`HEAD`/`OPTIONS` must be
//!   `application/json` (`POST /api/v1/plan` also takes `application/toml`), or
//!   415: a page can send only `text/plain`, form and multipart bodies without a
//!   CORS preflight, and the admin API answers no preflight.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::api::error_response;

/// The names this admin listener answers to.
#[derive(Clone, Debug)]
pub(super) struct HostPolicy {
    listen: IpAddr,
    /// `[admin].allowed_hosts`, lower-case.
    names: Arc<[String]>,
}

impl HostPolicy {
    /// Answers to `listen` (the configured listen address) and `names`.
    pub(super) fn new(listen: IpAddr, names: &[String]) -> HostPolicy {
        HostPolicy {
            listen,
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a `Host` value names this listener.
    pub(super) fn allows(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || self.names.contains(&name) {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || ip == self.listen || self.listen.is_unspecified(),
            Err(_) => false,
        }
    }

    /// Why `headers` (of a request with `method` to `path`) are refused, if they are.
    fn refusal(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Refused> {
        let host = match headers.get(header::HOST) {
            None => None,
            Some(v) => match v.to_str() {
                Ok(host) if self.allows(host) => Some(host),
                _ => return Some(Refused::Host),
            },
        };
        if let Some(origin) = headers.get(header::ORIGIN) {
            let same = match (origin.to_str(), host) {
                (Ok(origin), Some(host)) => same_origin(origin, host),
                _ => false,
            };
            if !same {
                return Some(Refused::Origin);
            }
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return None;
        }
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        match media.as_deref() {
            Some("application/json") => None,
            Some("application/toml") if path == "/api/v1/plan" => None,
            _ => Some(Refused::ContentType),
        }
    }
}

/// Why a request was refused before it reached a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    Host,
    Origin,
    ContentType,
}

/// The middleware: 403 for a foreign `Host` or `Origin`, 415 for a write that is
/// not JSON.
pub(super) async fn check(State(policy): State<HostPolicy>, req: Request, next: Next) -> Response {
    let refused = policy.refusal(req.method(), req.uri().path(), req.headers());
    match refused {
        None => next.run(req).await,
        Some(Refused::Host) => error_response(
            StatusCode::FORBIDDEN,
            "the Host header names neither this admin listener's address, a loopback name nor a name in [admin].allowed_hosts",
            "Host",
        ),
        Some(Refused::Origin) => error_response(
            StatusCode::FORBIDDEN,
            "cross-origin requests are refused: Origin must be this admin listener's own origin",
            "Origin",
        ),
        Some(Refused::ContentType) => error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "admin writes need Content-Type: application/json",
            "Content-Type",
        ),
    }
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]`, `[v6]:port`);
/// `None` when it is malformed.
fn host_name(host: &str) -> Option<&str> {
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let fine = after.is_empty() || after.strip_prefix(':').is_some_and(port_ok);
        return fine.then_some(inside);
    }
    let name = match host.split_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return None,
        None => host,
    };
    let fine = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    fine.then_some(name)
}

/// Whether `origin` is `http://host` or `https://host` (case-insensitive).
fn same_origin(origin: &str, host: &str) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn loopback() -> HostPolicy {
        HostPolicy::new("127.0.0.1".parse().unwrap(), &["gw.internal".to_owned()])
    }

    #[test]
    fn hosts_are_the_listen_address_loopback_names_or_configured_names() {
        let p = loopback();
        for ok in [
            "127.0.0.1:9901",
            "127.0.0.1",
            "localhost:9901",
            "LOCALHOST.",
            "[::1]:9901",
            "127.0.0.2:1",
            "gw.internal:9901",
            "GW.internal",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example:9901",
            "10.0.0.5:9901",
            "localhost.evil.example",
            "gw.internal.evil.example",
            "",
            "127.0.0.1:99999999",
            "[::1",
            "a b",
            "127.0.0.1:x",
        ] {
            assert!(!p.allows(refused), "{refused:?}");
        }
        let any = HostPolicy::new("0.0.0.0".parse().unwrap(), &[]);
        assert!(any.allows("10.0.0.5:9901"));
        assert!(any.allows("[fd00::5]:9901"));
        assert!(!any.allows("rebound.example:9901"));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// A request: method, path, headers, and the refusal expected.
    type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], Option<Refused>);

    #[test]
    fn foreign_origins_and_non_json_writes_are_refused() {
        let p = loopback();
        let json = ("content-type", "application/json; charset=utf-8");
        let host = ("host", "127.0.0.1:9901");
        let cases: &[Case] = &[
            (Method::GET, "/api/v1/state", &[host], None),
            (Method::GET, "/api/v1/state", &[], None),
            (
                Method::GET,
                "/metrics",
                &[("host", "evil.example")],
                Some(Refused::Host),
            ),
            (
                Method::POST,
                "/api/v1/pools/p/backends",
                &[host, json],
                None,
            ),
            (
                Method::POST,
                "/api/v1/pools/p/backends",
                &[host, ("content-type", "text/plain")],
                Some(Refused::ContentType),
            ),
            (
                Method::POST,
                "/api/v1/pools/p/backends/a/drain",
                &[host],
                Some(Refused::ContentType),
            ),
            (
                Method::PUT,
                "/api/v1/routes/r/split",
                &[host, ("content-type", "application/x-www-form-urlencoded")],
                Some(Refused::ContentType),
            ),
            (
                Method::POST,
                "/api/v1/plan",
                &[host, ("content-type", "application/toml")],
                None,
            ),
            (
                Method::POST,
                "/api/v1/rollouts",
                &[host, ("content-type", "application/toml")],
                Some(Refused::ContentType),
            ),
            (
                Method::POST,
                "/api/v1/rollouts",
                &[host, json, ("origin", "http://127.0.0.1:9901")],
                None,
            ),
            (
                Method::POST,
                "/api/v1/rollouts",
                &[host, json, ("origin", "http://evil.example")],
                Some(Refused::Origin),
            ),
            (
                Method::POST,
                "/api/v1/rollouts",
                &[host, json, ("origin", "http://127.0.0.1:3000")],
                Some(Refused::Origin),
            ),
            (
                Method::POST,
                "/api/v1/rollouts",
                &[host, json, ("origin", "null")],
                Some(Refused::Origin),
            ),
            (
                Method::GET,
                "/api/v1/state",
                &[("origin", "http://127.0.0.1:9901")],
                Some(Refused::Origin),
            ),
        ];
        for (method, path, h, want) in cases {
            assert_eq!(
                p.refusal(method, path, &headers(h)),
                *want,
                "{method} {path} {h:?}"
            );
        }
    }
}
