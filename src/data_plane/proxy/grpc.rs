//! gRPC at the gateway: telling a gRPC call, its deadline (`grpc-timeout`),
//! judging a backend's `grpc-status`, and answering a call the gateway could not
//! forward in gRPC's own terms.
//!
//! A backend's status is judged where it shows: in the head of a trailers-only
//! answer ([`trailers_only_status`], when the head arrives), else in the trailers
//! after the messages, by a `Watch` that rides in the response body and reads
//! them as they pass. Both map the code to HTTP with Envoy's table
//! ([`http_equivalent`]): the 5xx ones are the backend's failures, for passive
//! ejection and the pool's error rate; `grpc_requests_total` counts every call by
//! its code ([`code_index`], bounded to 18 label values).
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
//! speaks HTTP/1.1, is refused with `ProxyError::GrpcNeedsH2`.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode, Version};

use super::body::{ClientFault, ResponseBody};
use super::error::{ProxyError, ERROR_HEADER};
use crate::data_plane::backend::Backend;
use crate::data_plane::snapshot::Pool;
use crate::metrics::ClassCounters;

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
    /// Its `grpc_code` label index (the code's number).
    pub fn index(self) -> usize {
        usize::from(self as u8)
    }

    /// The code as `grpc-status` writes it.
    pub fn value(self) -> &'static str {
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
/// HTTP status that code maps to ([`http_equivalent`]).
pub fn trailers_only_status(status: StatusCode, headers: &HeaderMap) -> StatusCode {
    if status != StatusCode::OK {
        return status;
    }
    match headers.get(GRPC_STATUS) {
        Some(code) => http_equivalent(code.as_bytes()),
        None => status,
    }
}

/// The HTTP status a `grpc-status` value counts as, Envoy's table (the one its
/// outlier detection and stats use): OK 200; CANCELLED 499; INVALID_ARGUMENT,
/// FAILED_PRECONDITION, OUT_OF_RANGE 400; NOT_FOUND 404; ALREADY_EXISTS, ABORTED
/// 409; PERMISSION_DENIED 403; UNAUTHENTICATED 401; RESOURCE_EXHAUSTED 429;
/// DEADLINE_EXCEEDED 504; UNIMPLEMENTED 501; UNAVAILABLE 503; UNKNOWN,
/// INTERNAL, DATA_LOSS and anything else 500. So the 5xx ones (2, 4, 12, 13, 14,
/// 15, unknown codes) are the backend's failures; the rest are the caller's.
pub fn http_equivalent(code: &[u8]) -> StatusCode {
    match code {
        b"0" => StatusCode::OK,
        b"1" => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        b"3" | b"9" | b"11" => StatusCode::BAD_REQUEST,
        b"5" => StatusCode::NOT_FOUND,
        b"6" | b"10" => StatusCode::CONFLICT,
        b"7" => StatusCode::FORBIDDEN,
        b"16" => StatusCode::UNAUTHORIZED,
        b"8" => StatusCode::TOO_MANY_REQUESTS,
        b"4" => StatusCode::GATEWAY_TIMEOUT,
        b"12" => StatusCode::NOT_IMPLEMENTED,
        b"14" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Index of `GRPC_CODES` (the `grpc_code` label) for a `grpc-status` value:
/// the code itself for 0-16, else the last index (`other`).
pub fn code_index(code: &[u8]) -> usize {
    let n = match code {
        [d] if d.is_ascii_digit() => usize::from(d - b'0'),
        [b'1', d] if d.is_ascii_digit() => 10 + usize::from(d - b'0'),
        _ => OTHER,
    };
    n.min(OTHER)
}

/// The `grpc_code` index of `other`.
pub const OTHER: usize = 17;

/// The `grpc_code` index of CANCELLED.
const CANCELLED: usize = 1;

/// The gRPC code a client makes of an answer without `grpc-status` whose HTTP
/// status is not 200 (gRPC's HTTP-to-gRPC mapping): 400 INTERNAL, 401
/// UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429 / 502 / 503 /
/// 504 UNAVAILABLE, anything else UNKNOWN.
pub fn code_of_http(status: StatusCode) -> usize {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// The `grpc_code` index of a gRPC call's answer as its head shows it: the head's
/// `grpc-status` (trailers-only), or the mapping of a non-200 HTTP status;
/// `None` when the status is still to come, in the trailers.
pub fn head_code_index(status: StatusCode, headers: &HeaderMap) -> Option<usize> {
    match headers.get(GRPC_STATUS) {
        Some(code) => Some(code_index(code.as_bytes())),
        None if status != StatusCode::OK => Some(code_of_http(status)),
        None => None,
    }
}

/// The judge of a gRPC call whose status comes after its messages: it rides in
/// the response body ([`super::body::UpstreamBody`]) and, when the trailers pass
/// through, counts the call's `grpc_code` and gives the backend's outcome to
/// passive ejection and the pool's error rate (which the rollout gate reads),
/// as a trailers-only answer's is given when its head arrives. Nothing is held
/// back: the trailers are looked at on their way to the client.
///
/// A call whose body ends without a `grpc-status` (no trailers, or trailers
/// without one) or breaks (reset, connection lost, idle timeout) is the
/// backend's failure, counted as `other`. A body dropped before its end (the
/// client cancelled) counts as CANCELLED and says nothing about the backend.
#[derive(Debug)]
pub(crate) struct Watch {
    /// The pool as the call's snapshot had it (a long stream may outlive that
    /// snapshot: its outlier settings still judge it; the counters it feeds,
    /// `PoolHealth` and `BackendState`, are the ones every snapshot shares).
    pool: Arc<Pool>,
    backend: Backend,
    counters: Option<Arc<ClassCounters>>,
    judged: bool,
}

impl Watch {
    /// Watches a call answered by `backend` of `pool`, counted in `counters`.
    pub(crate) fn new(
        pool: Arc<Pool>,
        backend: Backend,
        counters: Option<Arc<ClassCounters>>,
    ) -> Box<Watch> {
        Box::new(Watch {
            pool,
            backend,
            counters,
            judged: false,
        })
    }

    /// The trailers arrived.
    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        match trailers.get(GRPC_STATUS) {
            Some(code) => self.judge(
                code_index(code.as_bytes()),
                http_equivalent(code.as_bytes()),
            ),
            None => self.judge(OTHER, StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The body ended; without trailers seen, the call had no status.
    pub(crate) fn ended(&mut self) {
        self.judge(OTHER, StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// The body broke (reset, connection lost, idle timeout, backend removed).
    /// `told` is true when the client is told so with `grpc-status` 14 in
    /// trailers (the body's `end_grpc_with_status`): the call then counts as the
    /// UNAVAILABLE the client sees, else as no status.
    pub(crate) fn broken(&mut self, told: bool) {
        if self.judged {
            return;
        }
        self.judged = true;
        self.count(if told {
            Code::Unavailable.index()
        } else {
            OTHER
        });
        if let Some(spec) = &self.pool.policy().outlier {
            self.pool.record(
                spec,
                &self.backend,
                crate::data_plane::health::Outcome::Failure,
            );
        }
        self.late_error();
    }

    fn judge(&mut self, index: usize, status: StatusCode) {
        if self.judged {
            return;
        }
        self.judged = true;
        self.count(index);
        self.pool.report_response(&self.backend, status);
        if status.is_server_error() {
            self.late_error();
        }
    }

    fn count(&self, index: usize) {
        if let Some(counters) = &self.counters {
            counters.count_grpc(index);
        }
    }

    /// The attempt was counted when its head arrived; it failed after all.
    fn late_error(&self) {
        self.pool.health().traffic().record_late_error();
        self.backend.state.traffic().record_late_error();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.judged {
            self.count(CANCELLED);
        }
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
        | ProxyError::UpstreamNotH2(_)
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
    let mut resp = Response::new(ResponseBody::empty());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    set_status(headers, code, cause, describe(cause), status);
    resp
}

/// The trailers that end a gRPC call whose response the backend broke after
/// its head (reset, connection lost, silent past the route's `idle`):
/// `grpc-status` 14 and a message naming `backend_failed` and what happened.
/// A reset would reach the client as an opaque INTERNAL or CANCELLED.
pub(crate) fn cut_short_trailers(err: &(dyn std::error::Error + 'static)) -> HeaderMap {
    let mut what = String::with_capacity(96);
    what.push_str("the backend's response was cut short: ");
    what.push_str(&err.to_string());
    let mut trailers = HeaderMap::with_capacity(3);
    let cause = "backend_failed";
    set_status(
        &mut trailers,
        Code::Unavailable,
        cause,
        &what,
        StatusCode::BAD_GATEWAY,
    );
    trailers
}

/// `grpc-status`, `grpc-message` (`sluicegate-error=<cause>: <what> (HTTP
/// <status>)`) and the `sluicegate-error` field.
fn set_status(
    headers: &mut HeaderMap,
    code: Code,
    cause: &'static str,
    what: &str,
    status: StatusCode,
) {
    let mut message = String::with_capacity(64 + what.len());
    message.push_str("sluicegate-error=");
    message.push_str(cause);
    message.push_str(": ");
    message.push_str(what);
    message.push_str(" (HTTP ");
    message.push_str(status.as_str());
    message.push(')');
    headers.insert(GRPC_STATUS, HeaderValue::from_static(code.value()));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert(GRPC_MESSAGE, value);
    }
    headers.insert(ERROR_HEADER, HeaderValue::from_static(cause));
}

/// A few words on a cause, for people reading `grpc-message`.
fn describe(cause: &str) -> &'static str {
    match cause {
        "no_route" => "no route matches this call",
        "no_healthy_backend" => "no backend of the pool is available",
        "connect_failed" => "connecting to the backend failed",
        "connect_timeout" => "connecting to the backend timed out",
        "upstream_tls_failed" => "the TLS handshake with the backend failed",
        "upstream_not_h2" => {
            "the backend does not speak HTTP/2 (its pool says protocol = \"h2c\" or \"h2\")"
        }
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
        "maintenance" => "the route is down for maintenance",
        _ => "the gateway could not forward the call",
    }
}

/// gRPC's percent-encoding of `grpc-message`: bytes outside printable ASCII,
/// and `%`, as `%XX`.
pub fn percent_encode(text: &str) -> String {
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
        assert_eq!(at("5"), StatusCode::NOT_FOUND);
        assert_eq!(at("8"), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(at("17"), StatusCode::INTERNAL_SERVER_ERROR, "unknown codes");
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

    #[test]
    fn grpc_codes_index_a_bounded_label() {
        use crate::metrics::names::GRPC_CODES;
        for n in 0..=16u8 {
            let text = n.to_string();
            assert_eq!(GRPC_CODES[code_index(text.as_bytes())], text);
        }
        for odd in [&b"17"[..], b"99", b"-1", b"", b"014", b"1a", b"abc", b"255"] {
            assert_eq!(GRPC_CODES[code_index(odd)], "other", "{odd:?}");
        }
        assert_eq!(code_index(b"13"), 13);
    }

    #[test]
    fn a_heads_code_is_its_grpc_status_or_the_http_mapping() {
        let ok = StatusCode::OK;
        assert_eq!(head_code_index(ok, &with("grpc-status", "14")), Some(14));
        assert_eq!(
            head_code_index(ok, &HeaderMap::new()),
            None,
            "in the trailers"
        );
        let none = HeaderMap::new();
        assert_eq!(head_code_index(StatusCode::BAD_GATEWAY, &none), Some(14));
        assert_eq!(head_code_index(StatusCode::NOT_FOUND, &none), Some(12));
        assert_eq!(head_code_index(StatusCode::BAD_REQUEST, &none), Some(13));
        assert_eq!(head_code_index(StatusCode::IM_A_TEAPOT, &none), Some(2));
    }

    #[test]
    fn the_5xx_codes_are_the_backends_failures() {
        let failures: Vec<u8> = (0..=16u8)
            .filter(|n| http_equivalent(n.to_string().as_bytes()).is_server_error())
            .collect();
        assert_eq!(failures, [2, 4, 12, 13, 14, 15]);
        assert!(http_equivalent(b"42").is_server_error());
        assert_eq!(http_equivalent(b"1").as_u16(), 499);
    }

    fn watched(pool: &Arc<Pool>) -> Box<Watch> {
        let backend = pool.backends().next().expect("backend").clone();
        Watch::new(Arc::clone(pool), backend, None)
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_status_in_trailers_feeds_ejection_and_the_error_rate() {
        use crate::data_plane::health::testing::pool_with;
        let (pool, _events) = pool_with(
            2,
            "[pools.outlier]\nconsecutive_failures = 3\nmax_ejected_percent = 100",
        );
        let backend = pool.backends().next().expect("backend").clone();
        // What the head counted: three attempts, no error yet.
        for _ in 0..3 {
            pool.health()
                .traffic()
                .record_response(StatusCode::OK, Duration::from_millis(1));
        }
        // A caller's code is no failure; an OK clears nothing it should not.
        watched(&pool).trailers(&with("grpc-status", "5"));
        assert_eq!(backend.state.health().consecutive_failures(), 0);
        for _ in 0..2 {
            watched(&pool).trailers(&with("grpc-status", "14"));
        }
        assert_eq!(backend.state.health().consecutive_failures(), 2);
        assert!(backend.state.is_eligible());
        // Dropped unjudged (the client cancelled): says nothing.
        drop(watched(&pool));
        assert_eq!(backend.state.health().consecutive_failures(), 2);
        // Trailers without grpc-status are a broken call.
        let mut w = watched(&pool);
        w.trailers(&HeaderMap::new());
        // Judged once: the end of the body after its trailers adds nothing.
        w.ended();
        w.broken(true);
        assert!(
            !backend.state.is_eligible(),
            "third failure in a row ejects"
        );
        let sample = pool.health().traffic().sample();
        assert_eq!((sample.requests(), sample.errors()), (3, 3));
        assert_eq!(backend.state.traffic().sample().errors(), 3);
    }
}
