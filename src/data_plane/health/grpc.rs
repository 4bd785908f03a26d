//! The gRPC health check of a pool with `[pools.health] grpc = true`: one
//! `grpc.health.v1.Health/Check` call per probe, on the pool's own HTTP/2
//! connections (`upstream::h2`), so it also tells whether the connections the
//! traffic uses can take a stream.
//!
//! The two messages are small enough to write by hand (protobuf, proto3):
//! `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }` with `ServingStatus`
//! UNKNOWN 0, SERVING 1, NOT_SERVING 2, SERVICE_UNKNOWN 3. Only SERVING passes;
//! every other answer is a failure whose [`ProbeOutcome`] says what came:
//! another serving status, a `grpc-status` (12 UNIMPLEMENTED when the backend
//! has no health service, 5 NOT_FOUND when it does not know the service), an
//! HTTP status that is not 200, or an answer that does not decode.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version};

use super::state::ProbeOutcome;
use crate::data_plane::backend::BackendState;
use crate::data_plane::upstream::h2 as up_h2;
use crate::data_plane::upstream::ConnectError;

/// The method the check calls.
const PATH: &str = "/grpc.health.v1.Health/Check";
/// The largest answer message read (a `HealthCheckResponse` is 2 bytes).
const MAX_MESSAGE: usize = 4096;
/// gRPC's message prefix: a compressed flag and a 4-byte length.
const PREFIX: usize = 5;

/// Why a health answer's body did not decode.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The message is compressed (the check asked for no compression).
    #[error("the message is compressed")]
    Compressed,
    /// The body is not exactly one length-prefixed message.
    #[error("the body is not one length-prefixed message")]
    Framing,
    /// The message ends inside a field.
    #[error("the message ends inside a field")]
    Truncated,
    /// A wire type protobuf does not have (or groups, which proto3 has not).
    #[error("wire type {0} is not valid here")]
    WireType(u8),
}

/// The request body of a check of `service`: one uncompressed gRPC message
/// holding a `HealthCheckRequest` (an empty message for `""`, the default
/// proto3 leaves out).
pub(crate) fn request_frame(service: &str) -> Bytes {
    let mut message = BytesMut::with_capacity(service.len() + 6);
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited).
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(PREFIX + message.len());
    frame.put_u8(0);
    // A service name is bounded at validation (`GrpcCheck::MAX_SERVICE`).
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(&message);
    frame.freeze()
}

fn put_varint(out: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        out.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

/// The `ServingStatus` in an answer's body (one gRPC message holding a
/// `HealthCheckResponse`); unknown fields are skipped, the last `status` wins
/// (protobuf's rule), an absent one is UNKNOWN (0), a value above 255 is 255.
pub(crate) fn decode_response(body: &[u8]) -> Result<u8, DecodeError> {
    let (&flag, rest) = body.split_first().ok_or(DecodeError::Framing)?;
    if flag != 0 {
        return Err(if flag == 1 {
            DecodeError::Compressed
        } else {
            DecodeError::Framing
        });
    }
    let (len, message) = rest.split_at_checked(4).ok_or(DecodeError::Framing)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    if usize::try_from(len).ok() != Some(message.len()) {
        return Err(DecodeError::Framing);
    }
    let mut buf = message;
    let mut status = 0u64;
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let wire = (key & 7) as u8;
        match wire {
            0 => {
                let value = varint(&mut buf)?;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                buf = buf.get(n..).ok_or(DecodeError::Truncated)?;
            }
            2 => {
                let n = usize::try_from(varint(&mut buf)?).map_err(|_| DecodeError::Truncated)?;
                buf = buf.get(n..).ok_or(DecodeError::Truncated)?;
            }
            other => return Err(DecodeError::WireType(other)),
        }
    }
    Ok(u8::try_from(status).unwrap_or(u8::MAX))
}

/// A base-128 varint off the front of `buf` (at most 10 bytes).
fn varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first().ok_or(DecodeError::Truncated)?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Truncated)
}

/// What one check needs besides the backend: the request body, the
/// `:authority` and the time the probe allows (sent as `grpc-timeout`, and the
/// bound of a connection the check has to open).
#[derive(Clone, Debug)]
pub(crate) struct Check {
    /// [`request_frame`] of the service.
    pub frame: Bytes,
    pub authority: Authority,
    pub timeout: Duration,
}

impl Check {
    /// The check of `service`, naming `authority` (`[pools.health] host`, else
    /// the backend's address), within `timeout`.
    pub(crate) fn new(service: &str, authority: Authority, timeout: Duration) -> Self {
        Check {
            frame: request_frame(service),
            authority,
            timeout,
        }
    }

    fn head(&self, scheme: &'static str) -> Request<()> {
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static(PATH))
            .build()
            .unwrap_or_else(|_| Uri::from_static(PATH));
        let mut head = Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = uri;
        *head.version_mut() = Version::HTTP_2;
        let h = head.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(USER_AGENT, HeaderValue::from_static("sluicegate-health"));
        let millis = self.timeout.as_millis().clamp(1, 99_999_999);
        if let Ok(v) = HeaderValue::try_from(format!("{millis}m")) {
            h.insert("grpc-timeout", v);
        }
        head
    }
}

/// Opens a stream for `head` (`end` when it has no body) on `pool`, leasing a
/// connection within `timeout`; a stream the backend did not process (its
/// connection going away) goes once more, on another connection. A backend
/// that does not answer the HTTP/2 preface with HTTP/2 is
/// [`ProbeOutcome::NotH2`]. HTTP probes of HTTP/2 pools use it too.
pub(super) async fn open(
    pool: &up_h2::H2Pool,
    head: impl Fn() -> Request<()>,
    end: bool,
    timeout: Duration,
) -> Result<
    (
        up_h2::Lease,
        h2::client::ResponseFuture,
        h2::SendStream<Bytes>,
    ),
    ProbeOutcome,
> {
    for _ in 0..2 {
        let lease = pool.lease(timeout).await.map_err(|err| match err {
            ConnectError::NotH2(_) => ProbeOutcome::NotH2,
            _ => ProbeOutcome::ConnectFailed,
        })?;
        match up_h2::open(&lease, head(), end).await {
            Ok((answer, stream)) => return Ok((lease, answer, stream)),
            Err(_) => pool.retire(&lease),
        }
    }
    Err(ProbeOutcome::Broken)
}

/// One check of `state`'s backend (the caller bounds its time).
pub(crate) async fn check(state: Arc<BackendState>, check: Check) -> ProbeOutcome {
    let Some(pool) = state.conns().h2() else {
        // Validation asks for an HTTP/2 pool; a backend without one cannot answer.
        return ProbeOutcome::ConnectFailed;
    };
    let head = || check.head(pool.scheme());
    let (lease, answer, mut stream) = match open(pool, head, false, check.timeout).await {
        Ok(opened) => opened,
        Err(outcome) => return outcome,
    };
    if stream.send_data(check.frame.clone(), true).is_err() {
        return ProbeOutcome::Broken;
    }
    let resp = match answer.await {
        Ok(resp) => resp,
        Err(_) => return ProbeOutcome::Broken,
    };
    let (parts, mut recv) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return ProbeOutcome::Status(parts.status.as_u16());
    }
    if let Some(code) = status_of(&parts.headers) {
        // Trailers-only: the call failed before any message.
        return match code {
            0 => ProbeOutcome::GrpcMalformed,
            code => ProbeOutcome::GrpcStatus(code),
        };
    }
    let grpc = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        return ProbeOutcome::GrpcMalformed;
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let Ok(chunk) = chunk else {
            return ProbeOutcome::Broken;
        };
        let _ = recv.flow_control().release_capacity(chunk.len());
        if body.len() + chunk.len() > PREFIX + MAX_MESSAGE {
            return ProbeOutcome::GrpcMalformed;
        }
        body.extend_from_slice(&chunk);
    }
    let trailers = match recv.trailers().await {
        Ok(Some(trailers)) => trailers,
        Ok(None) => return ProbeOutcome::GrpcMalformed,
        Err(_) => return ProbeOutcome::Broken,
    };
    drop(lease);
    match status_of(&trailers) {
        None => ProbeOutcome::GrpcMalformed,
        Some(0) => match decode_response(&body) {
            Ok(status) => ProbeOutcome::GrpcServing(status),
            Err(err) => {
                tracing::debug!(backend = %state.addr(), %err, "gRPC health answer");
                ProbeOutcome::GrpcMalformed
            }
        },
        Some(code) => ProbeOutcome::GrpcStatus(code),
    }
}

/// `grpc-status` as a number (255 for one that is not a small number).
fn status_of(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get(crate::data_plane::proxy::grpc::GRPC_STATUS)?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u8>().ok())
            .unwrap_or(u8::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One uncompressed gRPC message holding `message`.
    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn requests_encode_the_service_as_field_one() {
        assert_eq!(
            &request_frame("")[..],
            &[0, 0, 0, 0, 0][..],
            "the default is left out"
        );
        assert_eq!(
            &request_frame("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B'][..]
        );
        // A name of 200 bytes: its length is a two-byte varint (200 = 0xc8 0x01).
        let long = "s".repeat(200);
        let frame = request_frame(&long);
        assert_eq!(&frame[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01][..]);
        assert_eq!(frame.len(), PREFIX + 3 + 200);
    }

    #[test]
    fn responses_decode_the_serving_status() {
        assert_eq!(decode_response(&framed(&[0x08, 1])), Ok(1), "SERVING");
        assert_eq!(decode_response(&framed(&[0x08, 2])), Ok(2), "NOT_SERVING");
        assert_eq!(decode_response(&framed(&[])), Ok(0), "absent is UNKNOWN");
        // Unknown fields of every wire type are skipped; the last status wins.
        let message = [
            0x08, 2, // status NOT_SERVING
            0x10, 0x96, 0x01, // field 2, varint 150
            0x19, 1, 2, 3, 4, 5, 6, 7, 8, // field 3, fixed64
            0x22, 2, b'h', b'i', // field 4, bytes
            0x2d, 1, 2, 3, 4, // field 5, fixed32
            0x08, 1, // status SERVING
        ];
        assert_eq!(decode_response(&framed(&message)), Ok(1));
        assert_eq!(
            decode_response(&framed(&[0x08, 0xac, 0x02])),
            Ok(255),
            "300"
        );
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        assert_eq!(decode_response(&[]), Err(DecodeError::Framing));
        assert_eq!(decode_response(&[0, 0, 0]), Err(DecodeError::Framing));
        let mut compressed = framed(&[0x08, 1]);
        compressed[0] = 1;
        assert_eq!(decode_response(&compressed), Err(DecodeError::Compressed));
        let mut long = framed(&[0x08, 1]);
        long[4] = 3;
        assert_eq!(
            decode_response(&long),
            Err(DecodeError::Framing),
            "length says 3"
        );
        let two = [framed(&[0x08, 1]), framed(&[0x08, 1])].concat();
        assert_eq!(
            decode_response(&two),
            Err(DecodeError::Framing),
            "two messages"
        );
        assert_eq!(
            decode_response(&framed(&[0x08])),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_response(&framed(&[0x08, 0x80])),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_response(&framed(&[0x22, 5, 1])),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_response(&framed(&[0x0b])),
            Err(DecodeError::WireType(3))
        );
        let endless = [0xffu8; 11];
        assert_eq!(
            decode_response(&framed(&[&[0x10][..], &endless].concat())),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn the_check_is_a_grpc_post_with_a_deadline() {
        let check = Check::new(
            "x",
            Authority::from_static("10.0.0.5:50051"),
            Duration::from_millis(1500),
        );
        let head = check.head("http");
        assert_eq!(head.method(), Method::POST);
        assert_eq!(
            head.uri().to_string(),
            "http://10.0.0.5:50051/grpc.health.v1.Health/Check"
        );
        assert_eq!(head.headers()["content-type"], "application/grpc");
        assert_eq!(head.headers()["te"], "trailers");
        assert_eq!(head.headers()["grpc-timeout"], "1500m");
    }
}
