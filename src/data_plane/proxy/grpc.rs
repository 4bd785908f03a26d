//! gRPC at the gateway: telling a gRPC call, its deadline (`grpc-timeout`), and
//! answering one the gateway could not forward in gRPC's own terms.
//!
//! A gRPC client reads the call's outcome from `grpc-status`, not from the HTTP
//! status: an HTML or plain 502 is an opaque `UNKNOWN` or `INTERNAL` to it. So
//! the gateway's own answers to a gRPC call (content type `application/grpc` or
//! `application/grpc+…`; gRPC-Web is not gRPC here) are *trailers-only*
//! responses: HTTP 200, `content-type: application/grpc`, `grpc-status` (the
//! cause's code, after the gRPC HTTP mapping: unavailable backends 14
//! UNAVAILABLE, timeouts 4 DEADLINE_EXCEEDED, …) and a `grpc-message` that names
//! the cause with its `sluicegate-error` token, which is also sent as a field.
//! gRPC needs HTTP/2 on both sides: a call over HTTP/1.x, or to a pool that
//! speaks HTTP/1.1, is refused with [`ProxyError::GrpcNeedsH2`].

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode, Version};

use super::body::{ClientFault, ResponseBody};
use super::error::{ProxyError, ERROR_HEADER};

/// `grpc-status`.
pub const GRPC_STATUS: &str = "grpc-status";
/// `grpc-message`.
pub const GRPC_MESSAGE: &str = "grpc-message";
/// `grpc-timeout`.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// gRPC status codes the gateway answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// 1: the client went away.
    Cancelled = 1,
    /// 4: no answer in time.
    DeadlineExceeded = 4,
    /// 8: the request is larger than the route allows.
    ResourceExhausted = 8,
    /// 12: nothing serves this method here (no route).
    Unimplemented = 12,
    /// 13: a request or setup the call cannot go through with.
    Internal = 13,
    /// 14: no backend could take or finish the call.
    Unavailable = 14,
}

impl Code {
    fn value(self) -> &'static str {
        match self {
            Code::Cancelled => "1",
            Code::DeadlineExceeded => "4",
            Code::ResourceExhausted => "8",
            Code::Unimplemented => "12",
            Code::Internal => "13",
            Code::Unavailable => "14",
        }
    }
}

/// Whether the request is a gRPC call: `content-type: application/grpc` or
/// `application/grpc+<codec>` (or with parameters), not gRPC-Web.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(rest) = value
        .get(..16)
        .filter(|p| p.eq_ignore_ascii_case(b"application/grpc"))
    else {
        return false;
    };
    let _ = rest;
    matches!(value.get(16), None | Some(b'+' | b';'))
}

/// Refuses a gRPC call that cannot work: over HTTP/1.x (no trailers to carry
/// its status), or to a pool that speaks HTTP/1.1 (`h2_pool` false).
pub fn check_versions(version: Version, h2_pool: bool) -> Result<(), ProxyError> {
    if version < Version::HTTP_2 || !h2_pool {
        return Err(ProxyError::GrpcNeedsH2 {
            client_side: version < Version::HTTP_2,
        });
    }
    Ok(())
}

/// Whether the request's `TE` says `trailers`.
pub fn asks_for_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

/// The call's `grpc-timeout` (`1-8 digits` and a unit: H, M, S, m, u, n); `None`
/// when absent or malformed (a malformed one is ignored, as gRPC servers do).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What a backend's answer counts as for passive ejection and the pool's error
/// rate: `status`, unless it is a 200 whose head carries a `grpc-status` (a
/// trailers-only gRPC answer, a call that failed before any message): then the
/// HTTP status gRPC's own mapping gives that code (as Envoy's outlier
/// detection reads it): UNKNOWN, INTERNAL, DATA_LOSS 500; UNIMPLEMENTED 501;
/// UNAVAILABLE 503; DEADLINE_EXCEEDED 504; RESOURCE_EXHAUSTED 429; other codes
/// the client's doing (400) or OK (200).
pub fn trailers_only_status(status: StatusCode, headers: &HeaderMap) -> StatusCode {
    if status != StatusCode::OK {
        return status;
    }
    let Some(code) = headers.get(GRPC_STATUS) else {
        return status;
    };
    match code.as_bytes() {
        b"0" => StatusCode::OK,
        b"2" | b"13" | b"15" => StatusCode::INTERNAL_SERVER_ERROR,
        b"12" => StatusCode::NOT_IMPLEMENTED,
        b"14" => StatusCode::SERVICE_UNAVAILABLE,
        b"4" => StatusCode::GATEWAY_TIMEOUT,
        b"8" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The gRPC code for a failure of the gateway's (the gRPC HTTP mapping where
/// there is one).
pub fn code_of(err: &ProxyError) -> Code {
    match err {
        ProxyError::NoRoute => Code::Unimplemented,
        ProxyError::ResponseTimeout | ProxyError::ConnectTimeout => Code::DeadlineExceeded,
        ProxyError::BodyTooLarge { .. }
        | ProxyError::RateLimited { .. }
        | ProxyError::OverInFlight(_)
        | ProxyError::Breaker(_) => Code::ResourceExhausted,
        ProxyError::PausedTimeout => Code::DeadlineExceeded,
        ProxyError::ClientBody(ClientFault::Aborted, _) => Code::Cancelled,
        ProxyError::ClientBody(ClientFault::TimedOut, _) => Code::DeadlineExceeded,
        ProxyError::ClientBody(ClientFault::Malformed, _)
        | ProxyError::Malformed(_)
        | ProxyError::GrpcNeedsH2 { .. } => Code::Internal,
        ProxyError::NoHealthyBackend
        | ProxyError::PauseQueueFull(_)
        | ProxyError::Connect(_)
        | ProxyError::UpstreamTls(_)
        | ProxyError::NotSent(_)
        | ProxyError::Upstream(_)
        | ProxyError::BadUpgrade => Code::Unavailable,
    }
}

/// The trailers-only answer for a failed gRPC call: `code`, and a message naming
/// `cause` (and the HTTP status the gateway would have sent).
pub fn error_response(
    code: Code,
    cause: &'static str,
    status: StatusCode,
) -> Response<ResponseBody> {
    let mut message = String::with_capacity(96);
    message.push_str("sluicegate-error=");
    message.push_str(cause);
    message.push_str(": ");
    message.push_str(describe(cause));
    message.push_str(" (HTTP ");
    message.push_str(status.as_str());
    message.push(')');
    let mut resp = Response::new(ResponseBody::empty());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from_static(code.value()));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert(GRPC_MESSAGE, value);
    }
    headers.insert(ERROR_HEADER, HeaderValue::from_static(cause));
    resp
}

/// A few words on a cause, for people reading `grpc-message`.
fn describe(cause: &str) -> &'static str {
    match cause {
        "no_route" => "no route matches this call",
        "no_healthy_backend" => "no backend of the pool is available",
        "connect_failed" => "connecting to the backend failed",
        "connect_timeout" => "connecting to the backend timed out",
        "upstream_tls_failed" => "the TLS handshake with the backend failed",
        "connection_closed" => "the backend connection closed before the call was sent",
        "backend_failed" => "the backend failed while answering",
        "response_timeout" => {
            "the backend sent no response head in time (or the call's deadline passed)"
        }
        "in_flight_limit" | "in_flight_queue_full" | "in_flight_queue_timeout" => {
            "the route or pool is at its concurrency limit"
        }
        "backend_connections_full" | "pool_pending_full" | "pool_pending_timeout" => {
            "the pool's circuit breaker refused a connection"
        }
        "body_too_large" => "the request is larger than the route's max_request_body",
        "grpc_needs_http2" => "gRPC needs HTTP/2 from the client to the gateway",
        "grpc_needs_h2_pool" => "the pool speaks HTTP/1.1; gRPC needs protocol = \"h2c\" or \"h2\"",
        "client_aborted" => "the client went away",
        "client_body_timeout" => "the client sent no request data in time",
        _ => "the gateway could not forward the call",
    }
}

/// gRPC's percent-encoding of `grpc-message`: bytes outside printable ASCII,
/// and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn grpc_content_types_and_not_grpc_web() {
        assert!(is_grpc(&with("content-type", "application/grpc")));
        assert!(is_grpc(&with("content-type", "application/grpc+proto")));
        assert!(is_grpc(&with(
            "content-type",
            "Application/GRPC;charset=utf-8"
        )));
        assert!(!is_grpc(&with("content-type", "application/grpc-web")));
        assert!(!is_grpc(&with("content-type", "application/json")));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeout_units_and_bad_values() {
        let t = |v: &'static str| timeout(&with("grpc-timeout", v));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5M"), Some(Duration::from_secs(300)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(t("123456789S"), None, "more than 8 digits");
        assert_eq!(t("S"), None);
        assert_eq!(t("10x"), None);
        assert_eq!(t("-1S"), None);
    }

    #[test]
    fn trailers_only_grpc_failures_count_as_their_http_mapping() {
        let ok = StatusCode::OK;
        let at = |v: &'static str| trailers_only_status(ok, &with("grpc-status", v));
        assert_eq!(at("14"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(at("13"), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(at("4"), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(at("5"), StatusCode::BAD_REQUEST);
        assert_eq!(at("0"), ok);
        assert_eq!(trailers_only_status(ok, &HeaderMap::new()), ok);
        let not_found = StatusCode::NOT_FOUND;
        assert_eq!(
            trailers_only_status(not_found, &with("grpc-status", "14")),
            not_found
        );
    }

    #[test]
    fn te_trailers_among_other_values() {
        assert!(asks_for_trailers(&with("te", "trailers")));
        assert!(asks_for_trailers(&with("te", "gzip, Trailers")));
        assert!(!asks_for_trailers(&with("te", "gzip")));
    }

    #[test]
    fn gateway_errors_become_trailers_only_grpc_answers() {
        let err = ProxyError::NoHealthyBackend;
        let code = code_of(&err);
        assert_eq!(code, Code::Unavailable);
        let resp = error_response(code, err.cause(), err.status());
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h[ERROR_HEADER], "no_healthy_backend");
        let msg = h["grpc-message"].to_str().unwrap();
        assert!(
            msg.starts_with("sluicegate-error=no_healthy_backend: "),
            "{msg}"
        );
        assert!(http_body::Body::is_end_stream(resp.body()));
        assert_eq!(
            code_of(&ProxyError::ResponseTimeout),
            Code::DeadlineExceeded
        );
        assert_eq!(code_of(&ProxyError::NoRoute), Code::Unimplemented);
        assert_eq!(percent_encode("a%b\u{e9}"), "a%25b%C3%A9");
    }
}
