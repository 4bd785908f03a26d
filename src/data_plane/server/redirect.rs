//! `listen.redirect_https`: the HTTP listener answers every request with a
//! `308 Permanent Redirect` to the same host, path and query over HTTPS.
//!
//! 308 (RFC 9110 §15.4.9) keeps the method and body, unlike 301. The host comes
//! from the request (`:authority` or `Host`, port dropped) and must look like a
//! DNS name or IP literal; anything else gets a 400 rather than a `Location` built
//! from arbitrary bytes. The port is the HTTPS listener's (or
//! `listen.redirect_https_port`), left out when it is 443.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::data_plane::proxy::body::ResponseBody;
use crate::data_plane::route::host_without_port;

/// Builds the redirects of one HTTP listener.
#[derive(Debug, Clone)]
pub struct RedirectHttps {
    /// `:port` to append, empty for 443.
    port_suffix: String,
}

impl RedirectHttps {
    /// Redirects to HTTPS on `port`.
    pub fn new(port: u16) -> RedirectHttps {
        let port_suffix = if port == 443 {
            String::new()
        } else {
            format!(":{port}")
        };
        RedirectHttps { port_suffix }
    }

    /// The redirect for `req` (400 if it names no usable host).
    pub fn respond<B>(&self, req: &Request<B>) -> Response<ResponseBody> {
        match self.location(req) {
            Some(location) => {
                let mut resp = text(
                    StatusCode::PERMANENT_REDIRECT,
                    "Permanent Redirect: use HTTPS\n",
                );
                resp.headers_mut().insert(header::LOCATION, location);
                resp
            }
            None => text(
                StatusCode::BAD_REQUEST,
                "Bad Request: a Host is needed to redirect to HTTPS\n",
            ),
        }
    }

    fn location<B>(&self, req: &Request<B>) -> Option<HeaderValue> {
        let host = req.uri().host().map(str::to_owned).or_else(|| {
            let value = req.headers().get(header::HOST)?.to_str().ok()?;
            Some(host_without_port(value).to_owned())
        })?;
        if !host_is_plain(&host) {
            return None;
        }
        let path = match req.uri().path_and_query().map(|pq| pq.as_str()) {
            Some(pq) if pq.starts_with('/') => pq,
            _ => "/",
        };
        HeaderValue::from_str(&format!("https://{host}{}{path}", self.port_suffix)).ok()
    }
}

/// A DNS name, IPv4 literal or bracketed IPv6 literal: nothing that could change
/// where the `Location` points (no `/`, `@`, `?`, `#`, spaces).
fn host_is_plain(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(r: &RedirectHttps, req: Request<()>) -> Option<String> {
        let resp = r.respond(&req);
        resp.headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().expect("ascii").to_owned())
    }

    #[test]
    fn keeps_host_path_and_query_and_drops_the_http_port() {
        let r = RedirectHttps::new(8443);
        let req = Request::get("/a/b?x=1")
            .header("host", "agents.local:8080")
            .body(())
            .expect("request");
        assert_eq!(
            location(&r, req).as_deref(),
            Some("https://agents.local:8443/a/b?x=1")
        );
    }

    #[test]
    fn port_443_is_left_out_and_authority_wins() {
        let r = RedirectHttps::new(443);
        let req = Request::post("http://Agents.Local:80/x")
            .header("host", "other")
            .body(())
            .expect("request");
        let resp = r.respond(&req);
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(resp.headers()[header::LOCATION], "https://Agents.Local/x");
        let v6 = Request::get("/")
            .header("host", "[::1]:8080")
            .body(())
            .expect("request");
        assert_eq!(location(&r, v6).as_deref(), Some("https://[::1]/"));
    }

    #[test]
    fn a_host_that_could_redirect_elsewhere_is_refused() {
        let r = RedirectHttps::new(443);
        for host in ["evil.example/x", "a@b", "", "a b"] {
            let req = Request::get("/")
                .header("host", host)
                .body(())
                .expect("request");
            let resp = r.respond(&req);
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{host:?}");
        }
        let no_host = Request::get("/").body(()).expect("request");
        assert_eq!(r.respond(&no_host).status(), StatusCode::BAD_REQUEST);
    }
}
