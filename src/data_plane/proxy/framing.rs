//! Request checks the HTTP parser leaves to the proxy: what the request is for
//! (Host and authority) and how its body is framed, before anything is forwarded.
//!
//! hyper's HTTP/1 parser already answers 400 for invalid field names and values,
//! obs-fold, differing duplicate `Content-Length`s, `Transfer-Encoding` whose last
//! coding is not `chunked` and `Transfer-Encoding` in HTTP/1.0; with both
//! `Content-Length` and `Transfer-Encoding: chunked` it drops the length, reads
//! chunked and closes the connection after the response (RFC 9112 §6.3 ¶3), so no
//! second request can hide in the body. The h2 codec rejects connection-specific
//! fields. Left to us:
//! - exactly one valid `Host` in HTTP/1.1 (RFC 9112 §3.2: 400 otherwise);
//! - an absolute-form target or HTTP/2 `:authority` that names another host than
//!   `Host` (RFC 9112 §3.2.2, RFC 9113 §8.3.1): routing and the backend would
//!   disagree on the host, so 400;
//! - a transfer coding other than plain `chunked` (`gzip, chunked`): hyper decodes
//!   only the chunking and the hop-by-hop field is not forwarded, so the backend
//!   would get a gzip body it was never told about: 501 (RFC 9112 §6.1);
//! - `CONNECT` (this is a reverse proxy, not a tunnel for arbitrary hosts): 405;
//! - a declared `Content-Length` above the route's `max_request_body`: 413 before
//!   any backend is contacted (a streamed body is cut at the limit in `body`).
//!
//! Whatever passes is re-framed by the gateway's own HTTP/1.1 client upstream:
//! hop-by-hop fields are stripped and the body length comes from hyper's decoder.

use http::uri::{Authority, Scheme};
use http::{header, HeaderMap, Method, Request, Version};

use super::error::ProxyError;
use crate::data_plane::http1::wire::list_items;

/// Why a request is refused before routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("an HTTP/1.1 request needs exactly one Host field")]
    MissingHost,
    #[error("more than one Host field")]
    DuplicateHost,
    #[error("the Host field is not a valid host[:port]")]
    InvalidHost,
    #[error("the request target or :authority names another host than the Host field")]
    HostMismatch,
    #[error("the absolute-form target is not http or https")]
    BadScheme,
    #[error("transfer codings other than plain chunked are not supported")]
    TransferCoding,
    #[error("CONNECT is not supported by a reverse proxy")]
    Connect,
}

impl Malformed {
    /// Stable token for the `sluicegate-error` header.
    pub fn cause(self) -> &'static str {
        match self {
            Malformed::MissingHost => "missing_host",
            Malformed::DuplicateHost => "duplicate_host",
            Malformed::InvalidHost => "invalid_host",
            Malformed::HostMismatch => "host_mismatch",
            Malformed::BadScheme => "bad_scheme",
            Malformed::TransferCoding => "unsupported_transfer_coding",
            Malformed::Connect => "connect_not_supported",
        }
    }
}

/// Checks the request's host and framing (see the module docs).
pub fn check<B>(req: &Request<B>) -> Result<(), Malformed> {
    if req.method() == Method::CONNECT {
        return Err(Malformed::Connect);
    }
    let headers = req.headers();
    let host = single_host(headers, req.version())?;
    if let Some(scheme) = req.uri().scheme() {
        if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
            return Err(Malformed::BadScheme);
        }
    }
    // Userinfo is deprecated in http URIs (RFC 9110 §4.2.4) and never a Host:
    // refused in an absolute-form target and an h2 `:authority` as in `Host`.
    if req
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        return Err(Malformed::InvalidHost);
    }
    if let (Some(target), Some(host)) = (req.uri().authority(), host) {
        if !same_authority(target, &host) {
            return Err(Malformed::HostMismatch);
        }
    }
    check_transfer_coding(headers)
}

/// The `Host` field split into its host and port (both checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HostPort<'a> {
    host: &'a str,
    port: Option<u16>,
}

/// The one `Host` field, checked; `None` when absent and allowed to be.
fn single_host(headers: &HeaderMap, version: Version) -> Result<Option<HostPort<'_>>, Malformed> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let Some(value) = hosts.next() else {
        // HTTP/2 and HTTP/1.0 may go without; HTTP/1.1 must not (absolute-form too).
        return if version == Version::HTTP_11 {
            Err(Malformed::MissingHost)
        } else {
            Ok(None)
        };
    };
    if hosts.next().is_some() {
        return Err(Malformed::DuplicateHost);
    }
    // Anything that is not visible ASCII is no authority either.
    let value = value.to_str().map_err(|_| Malformed::InvalidHost)?;
    match plain_host_port(value) {
        Some(parsed) => Ok(Some(parsed)),
        None => parse_host_port(value).map(Some),
    }
}

/// The common shape, `name[:port]` with a name of letters, digits, dots and hyphens,
/// checked without `http`'s parser (which copies the value into an allocation of its
/// own on every request). `None`: not that shape, let [`parse_host_port`] decide.
fn plain_host_port(value: &str) -> Option<HostPort<'_>> {
    let (host, port) = match value.split_once(':') {
        Some((host, port)) => {
            let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            (host, Some(port.parse::<u16>().ok().filter(|_| digits)?))
        }
        None => (value, None),
    };
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    (!host.is_empty() && host.bytes().all(name_char)).then_some(HostPort { host, port })
}

/// Any other `Host` value, through `http`'s authority parser (IPv6 literals, and
/// everything to refuse).
fn parse_host_port(value: &str) -> Result<HostPort<'_>, Malformed> {
    let authority = Authority::try_from(value).map_err(|_| Malformed::InvalidHost)?;
    // Host is host[:port]; userinfo ("a@b") is not allowed there.
    // Whatever follows the host must be ":" and a u16 (http's parser allows 99999).
    let host_len = authority.host().len();
    let rest = value.get(host_len..).unwrap_or("");
    let bad_port = !rest.is_empty()
        && rest
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .is_none();
    if value.contains('@') || host_len == 0 || bad_port {
        return Err(Malformed::InvalidHost);
    }
    Ok(HostPort {
        host: &value[..host_len],
        port: authority.port_u16(),
    })
}

/// Same host (case-insensitive) and same port, a missing port matching any.
fn same_authority(target: &Authority, host: &HostPort<'_>) -> bool {
    target.host().eq_ignore_ascii_case(host.host)
        && match (target.port_u16(), host.port) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

/// `Transfer-Encoding`, when present, is exactly one `chunked`.
fn check_transfer_coding(headers: &HeaderMap) -> Result<(), Malformed> {
    let mut codings = list_items(headers, header::TRANSFER_ENCODING);
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(Malformed::TransferCoding),
    }
}

/// How a backend's response body is delimited when it names a transfer coding
/// and/or a length: the one decision both upstream clients follow (the gateway's
/// own, `http1::client`, and hyper's, whose response is relayed by the proxy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseFraming {
    /// The `Content-Length` counts; else it is dropped before relaying.
    pub use_length: bool,
    /// The connection may carry another exchange after this body.
    pub reusable: bool,
}

/// RFC 9112 §6.3 ¶3: with `Transfer-Encoding` the coding wins over any
/// `Content-Length`, and a message with both is suspect (a smuggling attempt or a
/// broken server), so its connection is not used again.
pub fn response_framing(transfer_coding: bool, content_length: bool) -> ResponseFraming {
    ResponseFraming {
        use_length: !transfer_coding,
        reusable: !(transfer_coding && content_length),
    }
}

/// 413 when the declared length is above `limit`.
pub fn check_declared_length(headers: &HeaderMap, limit: Option<u64>) -> Result<(), ProxyError> {
    let Some(limit) = limit else { return Ok(()) };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit => Err(ProxyError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_rules_follow_rfc_9112() {
        let h11 = Version::HTTP_11;
        assert_eq!(check(&req(h11, "/", &[("host", "a.local")])), Ok(()));
        assert_eq!(check(&req(h11, "/", &[])), Err(Malformed::MissingHost));
        assert_eq!(check(&req(Version::HTTP_10, "/", &[])), Ok(()));
        let two = [("host", "a.local"), ("host", "b.local")];
        assert_eq!(check(&req(h11, "/", &two)), Err(Malformed::DuplicateHost));
        for bad in [
            "a b",
            "user@a.local",
            ":80",
            "a.local:99999",
            "a.local:",
            "a.local:8a",
            "",
        ] {
            let r = req(h11, "/", &[("host", bad)]);
            assert_eq!(check(&r), Err(Malformed::InvalidHost), "{bad}");
        }
    }

    #[test]
    fn the_plain_shape_agrees_with_the_authority_parser() {
        // Every value the fast path accepts, the full parse accepts the same way;
        // values it leaves alone go to the full parse anyway.
        let cases = [
            "a.local",
            "A.Local",
            "a.local:80",
            "a.local:0080",
            "a-b.c:65535",
            "x:1",
            "1.2.3.4",
            "1.2.3.4:8080",
            "a..b",
            "-",
            ".",
            "a.local:",
            "a.local:65536",
            "a.local:8a",
            ":80",
            "",
            "a:b:c",
            "a_b",
            "a b",
            "[::1]",
            "[::1]:443",
            "user@a",
            "a.local:+80",
            "é",
        ];
        let mut fast_taken = 0;
        for value in cases {
            if let Some(fast) = plain_host_port(value) {
                assert_eq!(Ok(fast), parse_host_port(value), "{value:?}");
                fast_taken += 1;
            }
        }
        // "a.local" .. "a..b", "-", ".": the common shapes never reach the full parse.
        assert_eq!(fast_taken, 11);
        assert_eq!(
            parse_host_port("[::1]:443"),
            Ok(HostPort {
                host: "[::1]",
                port: Some(443)
            })
        );
    }

    #[test]
    fn target_authority_must_name_the_host() {
        let h11 = Version::HTTP_11;
        let ok = req(h11, "http://A.local:80/x", &[("host", "a.local:80")]);
        assert_eq!(check(&ok), Ok(()));
        let evil = req(h11, "http://evil.local/x", &[("host", "a.local")]);
        assert_eq!(check(&evil), Err(Malformed::HostMismatch));
        let port = req(h11, "http://a.local:81/", &[("host", "a.local:80")]);
        assert_eq!(check(&port), Err(Malformed::HostMismatch));
        let ftp = req(h11, "ftp://a.local/", &[("host", "a.local")]);
        assert_eq!(check(&ftp), Err(Malformed::BadScheme));
        let h2 = req(Version::HTTP_2, "http://a.local/", &[("host", "b.local")]);
        assert_eq!(check(&h2), Err(Malformed::HostMismatch));
        assert_eq!(check(&req(Version::HTTP_2, "http://a.local/", &[])), Ok(()));
        let userinfo = req(Version::HTTP_2, "http://user@a.local/", &[]);
        assert_eq!(check(&userinfo), Err(Malformed::InvalidHost));
        let userinfo = req(h11, "http://u:p@a.local/", &[("host", "a.local")]);
        assert_eq!(check(&userinfo), Err(Malformed::InvalidHost));
    }

    #[test]
    fn only_plain_chunked_is_a_transfer_coding() {
        let with = |te: &[&str]| {
            let mut h: Vec<(&str, &str)> = vec![("host", "a")];
            h.extend(te.iter().map(|v| ("transfer-encoding", *v)));
            check(&req(Version::HTTP_11, "/", &h))
        };
        assert_eq!(with(&["chunked"]), Ok(()));
        assert_eq!(with(&[" Chunked "]), Ok(()));
        assert_eq!(with(&["gzip, chunked"]), Err(Malformed::TransferCoding));
        assert_eq!(
            with(&["chunked", "chunked"]),
            Err(Malformed::TransferCoding)
        );
    }

    #[test]
    fn a_transfer_coding_wins_over_a_length_and_both_end_the_connection() {
        let f = response_framing;
        assert_eq!(
            f(false, true),
            ResponseFraming {
                use_length: true,
                reusable: true
            }
        );
        assert_eq!(
            f(true, false),
            ResponseFraming {
                use_length: false,
                reusable: true
            }
        );
        assert_eq!(
            f(true, true),
            ResponseFraming {
                use_length: false,
                reusable: false
            }
        );
        assert_eq!(
            f(false, false),
            ResponseFraming {
                use_length: true,
                reusable: true
            }
        );
    }

    #[test]
    fn declared_length_above_the_limit_is_413() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "11".parse().unwrap());
        assert!(check_declared_length(&h, None).is_ok());
        assert!(check_declared_length(&h, Some(11)).is_ok());
        let err = check_declared_length(&h, Some(10)).unwrap_err();
        assert_eq!(err.status(), 413);
    }
}
