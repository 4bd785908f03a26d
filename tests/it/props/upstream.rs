//! The gateway's upstream HTTP/1 client (`http1::client`) against hyper's client:
//! the same response bytes from a raw backend, mutated, must give the same outcome
//! through both (status, version, fields and body bytes, or the same class of
//! error), as `props::http` does for the client side.

use std::future::poll_fn;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proptest::strategy::{Strategy, ValueTree};
use sluicegate::testing::data_plane::http1::client::{
    parse_response_head, write_fields, BodyFraming, H1Conn, RawFields,
};
use sluicegate::testing::data_plane::upstream::MAX_RESPONSE_HEAD_BYTES;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::{edits, mutate, out_of_time, runner};

/// Longest either client may take over one response (the backend closes after
/// writing, so every framing ends well before).
const BOUND: Duration = Duration::from_secs(3);

/// Responses a backend may send: each framing, interim answers, fields to drop.
const SEEDS: &[&str] = &[
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Trailer: t\r\n\r\n",
    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
    "HTTP/1.1 204 No Content\r\nServer: s\r\n\r\n",
    "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
    "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\r\nbody",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nLocation: /x\r\n\r\nok",
    "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nbad",
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
];

/// Tokens the mutations insert.
const VOCABULARY: &[&str] = &[
    "\r\n",
    "\n",
    "\r",
    " ",
    ":",
    ";",
    "\t",
    "\0",
    "0\r\n\r\n",
    "ff\r\n",
    "Content-Length: 3\r\n",
    "Content-Length: 3, 3\r\n",
    "Content-Length: -1\r\n",
    "Content-Length: 99999999999999999999\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    "Connection: close\r\n",
    "Connection: x-a\r\n",
    "HTTP/1.0",
    "HTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/2",
    "200",
    "999",
    "\u{80}",
];

/// How one client's exchange ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// A complete response.
    Answer {
        status: StatusCode,
        version: Version,
        fields: HeaderMap,
        body: Bytes,
    },
    /// No usable response head.
    HeadError,
    /// A head, then a body that broke off or broke its framing.
    BodyError,
    /// Not over within [`BOUND`].
    Hang,
}

/// A backend that answers one request on one connection with `bytes`, then closes.
async fn raw_backend(bytes: Vec<u8>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(BOUND, s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        let _ = s.write_all(&bytes).await;
        let _ = s.shutdown().await;
    });
    addr
}

fn request() -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = "/diff".parse().expect("uri");
    req.headers_mut()
        .insert(header::HOST, "t".parse().expect("host"));
    req
}

/// Every field of a raw head, as hyper's client puts them in its map.
fn as_map(raw: &RawFields) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in raw.iter() {
        if let (Ok(name), Some(value)) = (HeaderName::from_bytes(name), raw.value_of(value)) {
            map.append(name, value);
        }
    }
    map
}

/// Whether `input` is a chunked response whose trailer section is not a valid
/// field block: ours reads trailers only to drop them (and does not check them),
/// hyper's client parses them and fails the body.
fn trailers_malformed(input: &[u8]) -> bool {
    let mut buf = bytes::BytesMut::from(input);
    let head = loop {
        match parse_response_head(&mut buf, &Method::GET) {
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(head)) => break head,
            _ => return false,
        }
    };
    if head.body != BodyFraming::Chunked {
        return false;
    }
    let mut rest = &buf[..];
    loop {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size_text = rest[..end].split(|b| *b == b';').next().unwrap_or_default();
        let Some(size) = std::str::from_utf8(size_text)
            .ok()
            .and_then(|t| usize::from_str_radix(t.trim(), 16).ok())
        else {
            return false;
        };
        rest = &rest[end + 2..];
        if size == 0 {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            return !matches!(
                httparse::parse_headers(rest, &mut fields),
                Ok(httparse::Status::Complete(_))
            );
        }
        let Some(after) = rest.get(size + 2..) else {
            return false;
        };
        rest = after;
    }
}

/// The exchange through the gateway's own client.
async fn ours(bytes: Vec<u8>) -> Outcome {
    let addr = raw_backend(bytes).await;
    let run = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut conn = H1Conn::new(stream);
        let deadline = (Instant::now() + BOUND, BOUND);
        let req = request();
        if conn
            .write_request(&req, write_fields, deadline)
            .await
            .is_err()
        {
            return Outcome::HeadError;
        }
        let Ok((resp, raw)) = conn.read_response(&Method::GET, deadline).await else {
            return Outcome::HeadError;
        };
        let (parts, mut body) = resp.into_parts();
        let mut data = Vec::new();
        while let Some(frame) = poll_fn(|cx| body.poll_frame(cx)).await {
            match frame {
                Ok(frame) => {
                    if let Ok(bytes) = frame.into_data() {
                        data.extend_from_slice(&bytes);
                    }
                }
                Err(_) => return Outcome::BodyError,
            }
        }
        Outcome::Answer {
            status: parts.status,
            version: parts.version,
            fields: as_map(&raw),
            body: Bytes::from(data),
        }
    };
    tokio::time::timeout(BOUND, run)
        .await
        .unwrap_or(Outcome::Hang)
}

/// The exchange through hyper's client, set up as the upstream pool sets it up.
async fn hypers(bytes: Vec<u8>) -> Outcome {
    let addr = raw_backend(bytes).await;
    let run = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let Ok((mut sender, conn)) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_RESPONSE_HEAD_BYTES)
            .handshake(TokioIo::new(stream))
            .await
        else {
            return Outcome::HeadError;
        };
        tokio::spawn(conn);
        let Ok(resp) = sender.send_request(request()).await else {
            return Outcome::HeadError;
        };
        let (mut parts, body) = resp.into_parts();
        let Ok(body) = body.collect().await else {
            return Outcome::BodyError;
        };
        Outcome::Answer {
            status: parts.status,
            version: parts.version,
            fields: std::mem::take(&mut parts.headers),
            body: body.to_bytes(),
        }
    };
    tokio::time::timeout(BOUND, run)
        .await
        .unwrap_or(Outcome::Hang)
}

/// Where the two clients are known to part, so the comparison leaves the input
/// out (besides malformed trailers, [`trailers_malformed`]): a 101 (never asked for here: the proxy answers it `BadUpgrade` before
/// reading on, hyper waits for an upgrade), and an HTTP/1.0 response with a
/// transfer coding (ours refuses it, RFC 9112 §6.1; hyper reads it).
fn known_to_differ(bytes: &[u8]) -> bool {
    let mut buf = bytes::BytesMut::from(bytes);
    loop {
        match parse_response_head(&mut buf, &Method::GET) {
            Ok(Some(head)) if head.status == StatusCode::SWITCHING_PROTOCOLS => return true,
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(head)) => {
                return head.version == Version::HTTP_10 && head.body != BodyFraming::Empty && {
                    head.fields.values(b"transfer-encoding").next().is_some()
                }
            }
            _ => return false,
        }
    }
}

#[tokio::test]
async fn the_upstream_client_reads_every_response_as_hypers_client_does() {
    let corpus: Vec<Vec<u8>> = SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
    let mut inputs = corpus.clone();
    let mut runner = runner(300);
    let strategy = (proptest::sample::select(corpus), edits(VOCABULARY));
    for _ in 0..runner.config().cases {
        let tree = strategy.new_tree(&mut runner).expect("value");
        let (seed, edits) = tree.current();
        inputs.push(mutate(seed, &edits));
    }
    let started = Instant::now();
    let (mut compared, mut answers) = (0, 0);
    for input in inputs {
        if out_of_time(started) {
            break;
        }
        if known_to_differ(&input) {
            continue;
        }
        let (a, b) = tokio::join!(ours(input.clone()), hypers(input.clone()));
        if matches!((&a, &b), (Outcome::Answer { .. }, Outcome::BodyError))
            && trailers_malformed(&input)
        {
            continue;
        }
        assert_eq!(
            a,
            b,
            "our client and hyper's differ on {:?}",
            String::from_utf8_lossy(&input)
        );
        compared += 1;
        answers += usize::from(matches!(a, Outcome::Answer { .. }));
    }
    assert!(compared > 20, "only {compared} responses compared");
    assert!(answers > 10, "only {answers} complete answers compared");
}
