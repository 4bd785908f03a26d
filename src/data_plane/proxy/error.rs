//! The one error type of the data path and its one mapping to an HTTP response.
//!
//! Every failure a client can see from the gateway itself is a [`ProxyError`]; its
//! status code, its stable `sluicegate-error` token and whether a retry may follow are
//! methods here, so the proxy loop never decides them ad hoc.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::body::{ClientFault, ResponseBody};
use super::framing::Malformed;
use crate::data_plane::limits::concurrency::Refused;
use crate::data_plane::upstream::{ConnectError, NotH2, WireError};

/// Name of the response header that carries [`ProxyError::cause`].
pub(crate) const ERROR_HEADER: &str = "sluicegate-error";

/// Why the gateway answered instead of a backend.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Refused before routing: ambiguous host or framing (see `framing`).
    #[error("malformed request: {0}")]
    Malformed(Malformed),
    /// The request body is (or was declared) larger than the route allows.
    #[error("the request body is larger than the route's max_request_body ({limit} bytes)")]
    BodyTooLarge { limit: u64 },
    #[error("no route matches this request")]
    NoRoute,
    /// The request's key is over the route's `rate_limit`; it may send again
    /// after `retry_after` seconds.
    #[error("over the route's rate limit; retry after {retry_after}s")]
    RateLimited { retry_after: u32 },
    #[error("no backend of pool is available")]
    NoHealthyBackend,
    /// Over the route's or the pool's `concurrency.max_in_flight`: refused at
    /// once, or after its wait in the queue.
    #[error("over the concurrency limit: {0}")]
    OverInFlight(crate::data_plane::limits::concurrency::Refused),
    /// Refused by the pool's circuit breaker: the backend is at
    /// `max_connections` and no request may wait, or `max_pending` already
    /// wait, or the wait for a connection passed the connect timeout.
    #[error("the pool's circuit breaker refused a connection: {0}")]
    Breaker(crate::data_plane::limits::concurrency::Refused),
    /// The route is paused (`ctl pause`) and the request waited its `max`.
    #[error("the route is paused and stayed paused for the pause's max wait")]
    PausedTimeout,
    /// The route is paused and its waiting room is full.
    #[error("the route is paused and {0} requests already wait")]
    PauseQueueFull(usize),
    #[error("connecting to the backend failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connecting to the backend timed out")]
    ConnectTimeout,
    /// The TLS handshake with a `tls` pool's backend failed (certificate not trusted
    /// or not for the name, no common protocol): the request was not sent.
    #[error("TLS handshake with the backend failed: {0}")]
    UpstreamTls(#[source] std::io::Error),
    /// An `h2c`/`h2` pool's backend does not speak HTTP/2 (it answered the
    /// preface with something else): the request was not sent.
    #[error("the backend does not speak HTTP/2: {0}")]
    UpstreamNotH2(#[source] NotH2),
    /// The backend connection failed before the request was written (a pooled
    /// keep-alive connection the backend had just closed, or a new one whose
    /// request head could not be written): safe to retry.
    #[error("the backend connection closed before the request was sent: {0}")]
    NotSent(#[source] WireError),
    /// The request was sent and the backend failed while answering.
    #[error("the backend failed while answering: {0}")]
    Upstream(#[source] WireError),
    #[error("the backend sent no response head in time")]
    ResponseTimeout,
    #[error("the backend answered an upgrade request without switching protocols, or the reverse")]
    BadUpgrade,
    /// The client's request body failed on its way up: bad framing, the client
    /// gone, or too slow. Never the backend's fault (see [`is_client_fault`](Self::is_client_fault)).
    #[error("the client's request body failed ({0:?}): {1:?}")]
    ClientBody(ClientFault, #[source] Option<hyper::Error>),
    /// A gRPC call that cannot work: it came over HTTP/1.x (`client_side`), or
    /// its pool speaks HTTP/1.1.
    #[error("gRPC needs HTTP/2 on both sides (client side: {client_side})")]
    GrpcNeedsH2 { client_side: bool },
}

/// The status nginx logs for a client that closed before its answer: no answer
/// reaches it, the access log and metrics record it.
pub(crate) const CLIENT_CLOSED: u16 = 499;

impl ProxyError {
    /// The status the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Malformed(Malformed::TransferCoding) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Malformed(Malformed::Connect) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Malformed(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NoHealthyBackend
            | ProxyError::PauseQueueFull(_)
            | ProxyError::OverInFlight(_)
            | ProxyError::Breaker(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::PausedTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Connect(_)
            | ProxyError::UpstreamTls(_)
            | ProxyError::UpstreamNotH2(_)
            | ProxyError::NotSent(_)
            | ProxyError::Upstream(_)
            | ProxyError::BadUpgrade => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientBody(ClientFault::Malformed, _) => StatusCode::BAD_REQUEST,
            ProxyError::ClientBody(ClientFault::TimedOut, _) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientBody(ClientFault::Aborted, _) => {
                StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ProxyError::GrpcNeedsH2 { client_side: true } => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ProxyError::GrpcNeedsH2 { client_side: false } => StatusCode::BAD_GATEWAY,
        }
    }

    /// Stable machine-readable token for the `sluicegate-error` header.
    pub fn cause(&self) -> &'static str {
        match self {
            ProxyError::Malformed(m) => m.cause(),
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::NoRoute => "no_route",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::NoHealthyBackend => "no_healthy_backend",
            ProxyError::OverInFlight(refused) => refused.cause(),
            ProxyError::Breaker(Refused::Full) => "backend_connections_full",
            ProxyError::Breaker(Refused::QueueFull) => "pool_pending_full",
            ProxyError::Breaker(Refused::QueueTimeout) => "pool_pending_timeout",
            ProxyError::PausedTimeout => "paused_timeout",
            ProxyError::PauseQueueFull(_) => "pause_queue_full",
            ProxyError::Connect(_) => "connect_failed",
            ProxyError::ConnectTimeout => "connect_timeout",
            ProxyError::UpstreamTls(_) => "upstream_tls_failed",
            ProxyError::UpstreamNotH2(_) => "upstream_not_h2",
            ProxyError::NotSent(_) => "connection_closed",
            ProxyError::Upstream(_) => "backend_failed",
            ProxyError::ResponseTimeout => "response_timeout",
            ProxyError::BadUpgrade => "bad_upgrade",
            ProxyError::ClientBody(ClientFault::Malformed, _) => "malformed_body",
            ProxyError::ClientBody(ClientFault::Aborted, _) => "client_aborted",
            ProxyError::ClientBody(ClientFault::TimedOut, _) => "client_body_timeout",
            ProxyError::GrpcNeedsH2 { client_side: true } => "grpc_needs_http2",
            ProxyError::GrpcNeedsH2 { client_side: false } => "grpc_needs_h2_pool",
        }
    }

    /// True when the request never reached the backend, so any method may be retried
    /// elsewhere with the same (untouched) body.
    pub fn request_unsent(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect(_)
                | ProxyError::ConnectTimeout
                | ProxyError::UpstreamTls(_)
                | ProxyError::UpstreamNotH2(_)
                | ProxyError::NotSent(_)
        )
    }

    /// True when no connection to the backend could be made (refused, unreachable,
    /// timed out): `upstream_connect_errors_total` counts these.
    pub fn is_connect_failure(&self) -> bool {
        matches!(self, ProxyError::Connect(_) | ProxyError::ConnectTimeout)
    }

    /// True when a request that was sent may go to another backend, if the request
    /// can be replayed (idempotent, bodiless: the caller's rule): the backend failed
    /// while answering, or sent no response head in time. A timeout is retried like
    /// nginx's `proxy_next_upstream error timeout`: a backend that stops answering
    /// (its host lost, its link cut) would otherwise fail every request already sent
    /// to it; the next attempt gets its own `response_header` time, within the
    /// route's `retries`.
    pub fn retryable_after_send(&self) -> bool {
        matches!(self, ProxyError::Upstream(_) | ProxyError::ResponseTimeout)
    }

    /// The request was sent: the backend failed while answering.
    pub fn sent(err: impl Into<WireError>) -> Self {
        ProxyError::Upstream(err.into())
    }

    /// The request was not sent: the connection failed before it was written.
    pub fn not_sent(err: impl Into<WireError>) -> Self {
        ProxyError::NotSent(err.into())
    }

    /// True when the client, not the backend, broke the exchange (its body was
    /// malformed, slow or cut off, or too large): it never counts toward passive
    /// ejection, a pool's error rate (rollout gates) or a backend's failures.
    pub fn is_client_fault(&self) -> bool {
        matches!(
            self,
            ProxyError::ClientBody(..)
                | ProxyError::BodyTooLarge { .. }
                | ProxyError::Malformed(_)
                | ProxyError::RateLimited { .. }
        )
    }

    /// True when what follows on an HTTP/1 connection may be the rest of a request
    /// the gateway could not frame: the connection must close after the answer.
    pub fn breaks_framing(&self) -> bool {
        matches!(
            self,
            ProxyError::Malformed(_) | ProxyError::BodyTooLarge { .. } | ProxyError::ClientBody(..)
        )
    }

    /// The gateway's own short answer.
    pub fn into_response(self) -> Response<ResponseBody> {
        let cause = self.cause();
        let retry_after = match &self {
            ProxyError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        };
        let mut body = String::with_capacity(64);
        body.push_str(self.status().canonical_reason().unwrap_or("error"));
        body.push_str(": ");
        body.push_str(cause);
        body.push('\n');
        let mut resp = Response::new(ResponseBody::full(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(cause));
        if let Some(secs) = retry_after {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

impl From<ConnectError> for ProxyError {
    fn from(err: ConnectError) -> Self {
        match err {
            ConnectError::Io(err) => ProxyError::Connect(err),
            ConnectError::TimedOut => ProxyError::ConnectTimeout,
            ConnectError::Tls(err) => ProxyError::UpstreamTls(err),
            ConnectError::NotH2(err) => ProxyError::UpstreamNotH2(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_plane::http1::client::H1Error;

    #[test]
    fn every_cause_maps_to_the_documented_status() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = [
            (ProxyError::NoRoute, 404, "no_route"),
            (ProxyError::NoHealthyBackend, 503, "no_healthy_backend"),
            (
                ProxyError::OverInFlight(Refused::Full),
                503,
                "in_flight_limit",
            ),
            (
                ProxyError::OverInFlight(Refused::QueueFull),
                503,
                "in_flight_queue_full",
            ),
            (
                ProxyError::OverInFlight(Refused::QueueTimeout),
                503,
                "in_flight_queue_timeout",
            ),
            (
                ProxyError::Breaker(Refused::Full),
                503,
                "backend_connections_full",
            ),
            (
                ProxyError::Breaker(Refused::QueueFull),
                503,
                "pool_pending_full",
            ),
            (
                ProxyError::Breaker(Refused::QueueTimeout),
                503,
                "pool_pending_timeout",
            ),
            (ProxyError::Connect(io()), 502, "connect_failed"),
            (ProxyError::ConnectTimeout, 504, "connect_timeout"),
            (ProxyError::UpstreamTls(io()), 502, "upstream_tls_failed"),
            (ProxyError::ResponseTimeout, 504, "response_timeout"),
            (ProxyError::BadUpgrade, 502, "bad_upgrade"),
            (
                ProxyError::sent(H1Error::ClosedBeforeHead),
                502,
                "backend_failed",
            ),
            (
                ProxyError::not_sent(H1Error::ClosedBeforeHead),
                502,
                "connection_closed",
            ),
            (
                ProxyError::from(ConnectError::TimedOut),
                504,
                "connect_timeout",
            ),
            (
                ProxyError::from(ConnectError::Tls(io())),
                502,
                "upstream_tls_failed",
            ),
            (
                ProxyError::from(ConnectError::NotH2(NotH2::Closed)),
                502,
                "upstream_not_h2",
            ),
            (ProxyError::BodyTooLarge { limit: 1 }, 413, "body_too_large"),
            (
                ProxyError::RateLimited { retry_after: 1 },
                429,
                "rate_limited",
            ),
            (
                ProxyError::ClientBody(ClientFault::TimedOut, None),
                408,
                "client_body_timeout",
            ),
            (
                ProxyError::ClientBody(ClientFault::Malformed, None),
                400,
                "malformed_body",
            ),
            (
                ProxyError::ClientBody(ClientFault::Aborted, None),
                499,
                "client_aborted",
            ),
            (
                ProxyError::Malformed(Malformed::HostMismatch),
                400,
                "host_mismatch",
            ),
            (
                ProxyError::Malformed(Malformed::TransferCoding),
                501,
                "unsupported_transfer_coding",
            ),
            (
                ProxyError::Malformed(Malformed::Connect),
                405,
                "connect_not_supported",
            ),
        ];
        // docs/errors.md lists each cause with its status in both of its tables
        // (what it means, and whose fault it records).
        let docs = include_str!("../../../docs/errors.md");
        let (meaning, fault) = docs
            .split_once("## Whose fault each one records")
            .expect("errors.md has its fault table");
        for (err, status, cause) in cases {
            let row = |table: &str, status_first: bool| {
                table.lines().any(|line| {
                    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                    let (s, c) = if status_first { (1, 2) } else { (2, 1) };
                    cells.len() > 2
                        && cells[s].starts_with(&status.to_string())
                        && cells[c].contains(&format!("`{cause}`"))
                })
            };
            assert!(row(meaning, true), "{cause} {status} in the status table");
            assert!(row(fault, false), "{cause} {status} in the fault table");
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(resp.headers()[ERROR_HEADER], cause);
        }
    }

    #[test]
    fn client_faults_are_never_the_backends() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let timed_out = ProxyError::ClientBody(ClientFault::TimedOut, None);
        assert!(timed_out.is_client_fault() && timed_out.breaks_framing());
        assert!(!timed_out.request_unsent() && !timed_out.retryable_after_send());
        assert!(ProxyError::BodyTooLarge { limit: 1 }.is_client_fault());
        for backend in [
            ProxyError::Connect(io()),
            ProxyError::ResponseTimeout,
            ProxyError::sent(H1Error::ClosedBeforeHead),
            ProxyError::BadUpgrade,
        ] {
            assert!(!backend.is_client_fault(), "{backend}");
        }
    }

    #[test]
    fn only_unsent_requests_are_always_retryable() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(ProxyError::Connect(io).request_unsent());
        assert!(ProxyError::ConnectTimeout.request_unsent());
        let tls = std::io::Error::other("unknown issuer");
        assert!(ProxyError::UpstreamTls(tls).request_unsent());
        assert!(!ProxyError::ResponseTimeout.request_unsent());
        assert!(ProxyError::not_sent(H1Error::ClosedBeforeHead).request_unsent());
        let sent = ProxyError::sent(H1Error::ClosedBeforeHead);
        assert!(!sent.request_unsent() && sent.retryable_after_send());
    }

    /// What may follow each backend-side failure: another backend for any request
    /// (`request_unsent`), another backend for a replayable one only
    /// (`retryable_after_send`), or neither.
    #[test]
    fn retry_rules_by_cause() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = [
            (ProxyError::Connect(io()), true, false),
            (ProxyError::ConnectTimeout, true, false),
            (ProxyError::UpstreamTls(io()), true, false),
            (ProxyError::not_sent(H1Error::ClosedBeforeHead), true, false),
            (ProxyError::sent(H1Error::ClosedBeforeHead), false, true),
            (ProxyError::ResponseTimeout, false, true),
            (ProxyError::BadUpgrade, false, false),
            (ProxyError::NoHealthyBackend, false, false),
            (ProxyError::BodyTooLarge { limit: 1 }, false, false),
            (
                ProxyError::ClientBody(ClientFault::TimedOut, None),
                false,
                false,
            ),
        ];
        for (err, unsent, after_send) in cases {
            assert_eq!(
                (err.request_unsent(), err.retryable_after_send()),
                (unsent, after_send),
                "{err}"
            );
        }
    }
}
