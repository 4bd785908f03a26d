//! HTTP/1.1 to a backend on a connection the gateway drives itself, for the common
//! request: no body, no upgrade, plain TCP.
//!
//! hyper's client connection is a task of its own fed through channels, and it parses
//! each response into a fresh head (a large share of a proxied request's instructions:
//! benches/JOURNAL.md, third pass). For a bodiless request the whole
//! exchange is one write and one or two reads, so here the request's own task does it:
//! the head is written from the request as it stands (so it is still whole for a
//! retry), the response head is parsed in place (header values share the read buffer),
//! and the body is read by whoever polls it, straight off the socket, framed by
//! `Content-Length`, chunked coding or the end of the connection (RFC 9112 §6.3).
//! Requests with a body, upgrades and TLS backends go through hyper as before.
//!
//! A connection goes back to its pool only when its response ended exactly where its
//! framing said, the backend did not ask to close, and nothing followed; anything
//! else drops (closes) it.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Frame;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::wire::{reserve, write_line, READ_SIZE};

/// Largest response head accepted from a backend; a larger one is a 502, so a
/// broken or hostile backend cannot make the gateway buffer without bound.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a backend's response head (more is a 502). This is hyper's
/// own default, and it matters that it is: with any explicit limit hyper allocates
/// two arrays of that many slots (6 KiB each) for every response it parses, where
/// its default uses arrays on the stack (the difference, in instructions and two
/// large allocations per request: benches/JOURNAL.md, third pass).
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// Largest request-head buffer a pooled connection keeps between requests.
const MAX_KEPT_HEAD_BUFFER: usize = 4 * 1024;
/// Longest chunk-size line (size, extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// Most trailer bytes read (and dropped) after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Why an exchange on an [`H1Conn`] failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("writing the request failed: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response failed: {0}")]
    Read(#[source] io::Error),
    /// Closed (or reset) before a single byte of a response: on a pooled
    /// connection, most likely the backend closing it as idle just as it was used.
    #[error("the backend closed the connection without answering")]
    ClosedBeforeHead,
    #[error("the backend closed the connection in the middle of the response head")]
    ClosedMidHead,
    #[error("the backend closed the connection in the middle of the body")]
    ClosedMidBody,
    #[error("the response head is larger than {MAX_RESPONSE_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("malformed response head: {0}")]
    Parse(#[from] httparse::Error),
    #[error("invalid response framing: {0}")]
    Framing(&'static str),
    /// The request was not written, or the response head not read, within the
    /// route's `response_header` timeout.
    #[error("no response head within {0:?}")]
    TimedOut(Duration),
}

/// One keep-alive TCP connection to a backend.
///
/// Boxed: a connection moves on every exchange (out of its pool, through the
/// request's future, into the response body, back into the pool), and a box moves
/// in one word. It also keeps the pool's ring of slots small: the pool walks every
/// slot of its ring in turn, and slots the size of the whole connection went cold
/// between visits (benches/JOURNAL.md, eighth pass).
#[derive(Debug)]
pub struct H1Conn(Box<ConnParts>);

#[derive(Debug)]
struct ConnParts {
    io: TcpStream,
    /// Bytes read and not yet handed out. Empty between exchanges.
    buf: BytesMut,
    /// The request head being written (kept for its capacity).
    out: Vec<u8>,
    /// Bounds each exchange ([`super::deadline`]: each request's deadline is later
    /// than the last, so a request costs no timer registration). Made with the
    /// connection's first exchange.
    timer: Option<Pin<Box<Sleep>>>,
}

impl H1Conn {
    /// A connection on `io` (connected, `TCP_NODELAY` set).
    pub fn new(io: TcpStream) -> Self {
        H1Conn(Box::new(ConnParts {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            timer: None,
        }))
    }

    /// False when the backend closed this idle connection or sent something on it
    /// unasked. Costs a syscall only when the socket has become readable since the
    /// last read (tokio's readiness is consulted first).
    pub fn looks_alive(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.0.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.0.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes `req`'s head (the body must be empty), its fields written by
    /// `fields` (see [`write_fields`]), by `deadline` (`timeout` after the
    /// request began). On failure the request may have been partly written.
    pub async fn write_request<B>(
        &mut self,
        req: &Request<B>,
        fields: impl FnOnce(&HeaderMap, &mut Vec<u8>),
        deadline: (Instant, Duration),
    ) -> Result<(), H1Error> {
        encode_head(&mut self.0.out, req, fields);
        let ConnParts { io, out, timer, .. } = &mut *self.0;
        let mut written = 0;
        let result = std::future::poll_fn(|cx| loop {
            match Pin::new(&mut *io).poll_write(cx, &out[written..]) {
                Poll::Ready(Ok(0)) => {
                    let err = io::Error::from(io::ErrorKind::WriteZero);
                    return Poll::Ready(Err(H1Error::Write(err)));
                }
                Poll::Ready(Ok(n)) => {
                    written += n;
                    if written == out.len() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(H1Error::Write(err))),
                Poll::Pending => return poll_deadline(timer, cx, deadline),
            }
        })
        .await;
        keep_small(&mut self.0.out);
        result
    }

    /// Reads the response head (skipping interim 1xx answers other than 101) by
    /// `deadline` and returns the response with a body that reads the rest from
    /// this connection.
    pub async fn read_response(
        mut self,
        method: &Method,
        deadline: (Instant, Duration),
    ) -> Result<(Response<H1Body>, RawFields), H1Error> {
        loop {
            if let Some(head) = parse_head(&mut self.0.buf)? {
                let code = head.status.as_u16();
                if (100..200).contains(&code) && code != 101 {
                    continue;
                }
                let (framing, keep_alive) = framing(&head, method)?;
                let mut resp = Response::new(H1Body {
                    conn: Some(self),
                    framing,
                    reusable: keep_alive,
                    failed: None,
                });
                *resp.status_mut() = head.status;
                *resp.version_mut() = head.version;
                return Ok((resp, head.fields));
            }
            if self.0.buf.len() >= MAX_RESPONSE_HEAD_BYTES {
                return Err(H1Error::HeadTooLarge);
            }
            reserve(&mut self.0.buf);
            let nothing_yet = self.0.buf.is_empty();
            let ConnParts { io, buf, timer, .. } = &mut *self.0;
            let read = std::future::poll_fn(|cx| {
                match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
                    Poll::Ready(read) => Poll::Ready(read.map_err(H1Error::Read)),
                    Poll::Pending => poll_deadline(timer, cx, deadline),
                }
            });
            match read.await {
                Ok(0) if nothing_yet => return Err(H1Error::ClosedBeforeHead),
                Ok(0) => return Err(H1Error::ClosedMidHead),
                Ok(_) => {}
                Err(H1Error::Read(err))
                    if nothing_yet && err.kind() == io::ErrorKind::ConnectionReset =>
                {
                    return Err(H1Error::ClosedBeforeHead)
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// Ready with [`H1Error::TimedOut`] once `deadline` (an instant, and the timeout it
/// came from) has passed, on the connection's own timer (see [`H1Conn`]).
fn poll_deadline<T>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
    (deadline, timeout): (Instant, Duration),
) -> Poll<Result<T, H1Error>> {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    super::deadline::poll(timer.as_mut(), cx, deadline).map(|_| Err(H1Error::TimedOut(timeout)))
}

/// Lets go of a head buffer a large request grew: a pooled connection keeps its
/// buffer, and a backend's pool holds up to 256 of them.
fn keep_small(out: &mut Vec<u8>) {
    if out.capacity() > MAX_KEPT_HEAD_BUFFER {
        *out = Vec::new();
    }
}

/// `METHOD target HTTP/1.1`, the fields (by `fields`), the blank line.
fn encode_head<B>(
    out: &mut Vec<u8>,
    req: &Request<B>,
    fields: impl FnOnce(&HeaderMap, &mut Vec<u8>),
) {
    out.clear();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    fields(req.headers(), out);
    out.extend_from_slice(b"\r\n");
}

/// Writes every field of `headers` as a head line, as it is.
pub fn write_fields(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        write_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// A backend's response fields as they arrived: passed on to an HTTP/1 client
/// line by line, never parsed into a `HeaderMap` on the way (that was a large share
/// of a proxied request's instructions: benches/JOURNAL.md, fourth pass). What the
/// framing needed of them was read
/// once, when the head was parsed.
#[derive(Debug, Clone, Default)]
pub struct RawFields {
    /// The field lines, each ending in LF or CRLF; status line and blank line
    /// excluded. httparse checked them: one `name:value` per line, no folding.
    lines: Bytes,
    /// Where each field's name ends (its colon) and its line ends (after the LF),
    /// as offsets into `lines`, for the first [`INLINE_FIELDS`] fields: found while
    /// parsing, so writing does not scan the bytes again.
    ends: [(u16, u16); INLINE_FIELDS],
    /// How many `ends` hold; [`SCAN_LINES`] when the fields did not fit (they are
    /// found by scanning the lines then).
    count: u8,
    /// The response's `Content-Length`, when it has a valid one and no
    /// `Transfer-Encoding` (which overrides it, RFC 9112 §6.3).
    pub content_length: Option<u64>,
    /// Whether a `Date` field is among them.
    pub dated: bool,
    /// Whether `Connection` names fields other than `keep-alive` and `close`
    /// (those fields are hop-by-hop too).
    pub connection_names_fields: bool,
}

impl RawFields {
    /// Each field as `(name, value)`: the name as sent, the value trimmed.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let scan = (self.count == SCAN_LINES).then(|| {
            self.lines.split(|b| *b == b'\n').filter_map(|line| {
                let colon = line.iter().position(|b| *b == b':')?;
                Some((&line[..colon], line[colon + 1..].trim_ascii()))
            })
        });
        let count = if scan.is_some() {
            0
        } else {
            usize::from(self.count)
        };
        let mut start = 0;
        let inline = self.ends[..count].iter().map(move |&(colon, end)| {
            let (colon, end) = (usize::from(colon), usize::from(end));
            let name = &self.lines[start..colon];
            start = end;
            (name, self.lines[colon + 1..end].trim_ascii())
        });
        inline.chain(scan.into_iter().flatten())
    }

    /// Each field's whole line (its line end included) and the length of its name,
    /// when their positions were kept while parsing (`None`: scan with [`iter`]).
    ///
    /// [`iter`]: RawFields::iter
    pub fn lines(&self) -> Option<impl Iterator<Item = (&[u8], usize)>> {
        let count = (self.count != SCAN_LINES).then_some(usize::from(self.count))?;
        let mut start = 0;
        Some(self.ends[..count].iter().map(move |&(colon, end)| {
            let (colon, end) = (usize::from(colon), usize::from(end));
            let line = &self.lines[start..end];
            let name_len = colon - start;
            start = end;
            (line, name_len)
        }))
    }

    /// The values of the fields called `name` (any case).
    pub fn values<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The fields of a complete response head (tests elsewhere build them so).
    #[cfg(test)]
    pub(crate) fn of_head(raw: &[u8]) -> RawFields {
        let mut buf = BytesMut::from(raw);
        match parse_head(&mut buf) {
            Ok(Some(head)) => head.fields,
            other => panic!(
                "not a complete head: {:?}",
                other.map(|h| h.map(|h| h.status))
            ),
        }
    }

    /// A field's value as a `HeaderValue` sharing the head's bytes.
    pub fn value_of(&self, value: &[u8]) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.lines.slice_ref(value)).ok()
    }
}

/// Fields of a response head whose positions [`RawFields`] keeps.
const INLINE_FIELDS: usize = 16;
/// [`RawFields::count`] when the positions were not kept.
const SCAN_LINES: u8 = u8::MAX;

/// A parsed response head, with what the framing needs from its fields.
struct Head {
    status: StatusCode,
    version: Version,
    fields: RawFields,
    /// `Connection` has `close`.
    close_asked: bool,
    /// `Transfer-Encoding` is present: whether its last coding is `chunked`.
    transfer_coding: Option<bool>,
    /// `Content-Length` is present (valid or not).
    has_content_length: bool,
    /// Its value, or why it is unusable.
    content_length: Result<Option<u64>, &'static str>,
}

/// How a response's body is delimited, as [`parse_response_head`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (`HEAD`, 1xx, 204, 304, `Content-Length: 0`).
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked coding.
    Chunked,
    /// Everything until the backend closes.
    UntilClose,
}

/// A response head as the client reads it: what fuzz targets and property tests
/// compare against other parsers.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub fields: RawFields,
    pub body: BodyFraming,
    /// Whether the connection may carry another exchange after this body.
    pub reusable: bool,
}

/// Parses the response head at the front of `buf` (taken off it) to a request
/// with `method`, and decides its body's framing, as an exchange does. `None`: not
/// complete yet. Interim 1xx heads are returned like any other.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, H1Error> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let (framing, reusable) = framing(&head, method)?;
    let body = match framing {
        Framing::Length(n) => BodyFraming::Length(n),
        Framing::Chunked(_) => BodyFraming::Chunked,
        Framing::Close => BodyFraming::UntilClose,
        Framing::Done => BodyFraming::Empty,
    };
    Ok(Some(ResponseHead {
        status: head.status,
        version: head.version,
        fields: head.fields,
        body,
        reusable,
    }))
}

/// Decodes a chunked body at the front of `buf` as a response body does: its data
/// (what follows the trailers stays in `buf`); an error for a broken coding,
/// `Ok(None)` when `buf` ends before the body does.
pub fn decode_chunked(buf: &mut BytesMut) -> Result<Option<Vec<u8>>, H1Error> {
    let mut framing = Framing::Chunked(Chunk::Size);
    let mut data = Vec::new();
    while framing != Framing::Done {
        match step(&mut framing, buf)? {
            Step::Data(bytes) => data.extend_from_slice(&bytes),
            Step::Again => {}
            Step::NeedMore => return Ok(None),
        }
    }
    Ok(Some(data))
}

/// The head at the front of `buf`, taken off it; `None` when it is not complete yet.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, H1Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    )? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = StatusCode::from_u16(resp.code.unwrap_or(0))
        .map_err(|_| H1Error::Framing("invalid status code"))?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut head = Head {
        status,
        version,
        fields: RawFields::default(),
        close_asked: false,
        transfer_coding: None,
        has_content_length: false,
        content_length: Ok(None),
    };
    let base = buf.as_ptr() as usize;
    let mut lines = 0..0;
    let fits = resp.headers.len() <= INLINE_FIELDS;
    head.fields.count = if fits {
        resp.headers.len() as u8
    } else {
        SCAN_LINES
    };
    for (i, field) in resp.headers.iter().enumerate() {
        let (name, value) = (field.name.as_bytes(), field.value);
        let name_at = field.name.as_ptr() as usize - base;
        if i == 0 {
            lines.start = name_at;
        }
        let value_end = value.as_ptr() as usize - base + value.len();
        // The line ends at the next LF (httparse allows a bare one).
        lines.end = buf[value_end..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(len, |at| value_end + at + 1);
        if fits {
            let colon = u16::try_from(name_at + name.len() - lines.start);
            let end = u16::try_from(lines.end - lines.start);
            match (colon, end) {
                (Ok(colon), Ok(end)) => head.fields.ends[i] = (colon, end),
                _ => head.fields.count = SCAN_LINES,
            }
        }
        let is =
            |known: &str| name.len() == known.len() && name.eq_ignore_ascii_case(known.as_bytes());
        let items = || {
            value
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|t| !t.is_empty())
        };
        if is("connection") {
            for token in items() {
                if token.eq_ignore_ascii_case(b"close") {
                    head.close_asked = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    head.fields.connection_names_fields = true;
                }
            }
        } else if is("transfer-encoding") {
            let last = items().next_back();
            head.transfer_coding = match (last, head.transfer_coding) {
                (Some(coding), _) => Some(coding.eq_ignore_ascii_case(b"chunked")),
                (None, before) => Some(before.unwrap_or(false)),
            };
        } else if is("content-length") {
            head.has_content_length = true;
            head.content_length = head.content_length.and_then(|before| {
                let mut length = before;
                for part in value.split(|b| *b == b',') {
                    let part = part.trim_ascii();
                    let n = std::str::from_utf8(part)
                        .ok()
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or("invalid content-length")?;
                    if length.is_some_and(|l| l != n) {
                        return Err("conflicting content-length values");
                    }
                    length = Some(n);
                }
                Ok(length)
            });
        } else if is("date") {
            head.fields.dated = true;
        }
    }
    let frozen = buf.split_to(len).freeze();
    head.fields.lines = frozen.slice(lines);
    if head.transfer_coding.is_none() {
        head.fields.content_length = head.content_length.ok().flatten();
    }
    Ok(Some(head))
}

/// How the body is delimited, and whether the connection may carry another
/// exchange afterwards (RFC 9112 §6.3 and §9.3).
fn framing(head: &Head, method: &Method) -> Result<(Framing, bool), H1Error> {
    let keep_alive = head.version == Version::HTTP_11 && !head.close_asked;
    let code = head.status.as_u16();
    if code == 101 {
        // Only ever a protocol error here (no upgrade was asked): never reused.
        return Ok((Framing::Done, false));
    }
    if code == 204 || code == 304 || *method == Method::HEAD {
        return Ok((Framing::Done, keep_alive));
    }
    if let Some(chunked) = head.transfer_coding {
        if head.version == Version::HTTP_10 {
            return Err(H1Error::Framing(
                "transfer-encoding in an HTTP/1.0 response",
            ));
        }
        // With Content-Length as well the message is suspect (RFC 9112 §6.3.3):
        // read it by its transfer coding, then close.
        let shared =
            crate::data_plane::proxy::framing::response_framing(true, head.has_content_length);
        let reuse = keep_alive && chunked && shared.reusable;
        return Ok(match chunked {
            true => (Framing::Chunked(Chunk::Size), reuse),
            false => (Framing::Close, false),
        });
    }
    Ok(match head.content_length.map_err(H1Error::Framing)? {
        Some(0) => (Framing::Done, keep_alive),
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

/// Where a body is in its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` bytes still to come.
    Length(u64),
    /// Chunked coding.
    Chunked(Chunk),
    /// Everything until the backend closes.
    Close,
    /// Complete.
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until a blank one (this many read).
    Trailers(usize),
}

/// A response body read straight off its backend connection.
#[derive(Debug)]
pub struct H1Body {
    conn: Option<H1Conn>,
    framing: Framing,
    reusable: bool,
    /// A failure found right after data was handed out, reported on the next poll.
    failed: Option<H1Error>,
}

impl H1Body {
    /// True once the body ended exactly at its framing's end.
    pub fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The connection, when it may carry another exchange: the body is done, the
    /// backend did not ask to close and sent nothing beyond the response.
    pub fn take_reusable(&mut self) -> Option<H1Conn> {
        let mut conn = self.conn.take()?;
        if !(self.is_done() && self.reusable && conn.0.buf.is_empty()) {
            return None;
        }
        // A large head or body may have grown the buffer: a pooled connection
        // starts again from the usual size.
        if conn.0.buf.capacity() > 2 * READ_SIZE {
            conn.0.buf = BytesMut::new();
        }
        Some(conn)
    }

    /// Closes the connection: the body broke or was given up.
    pub fn discard(&mut self) {
        self.conn = None;
    }

    /// Bytes of the body still expected, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// The next data frame; `None` at the end of the body.
    ///
    /// A failure (the backend closed or broke the framing) is reported one poll
    /// late, after a wake-up: the poller (hyper's server) first gets to send what
    /// it has, so the client sees the head and the bytes that did arrive before its
    /// stream is cut, as with a backend that fails later.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        if let Some(err) = self.failed.take() {
            self.discard();
            return Poll::Ready(Some(Err(err)));
        }
        match self.poll_next(cx) {
            Poll::Ready(Some(Err(err))) => {
                self.failed = Some(err);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        loop {
            if self.framing == Framing::Done {
                return Poll::Ready(None);
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match step(&mut self.framing, &mut conn.0.buf)? {
                Step::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Step::Again => continue,
                Step::NeedMore => {}
            }
            let ConnParts { io, buf, .. } = &mut *conn.0;
            reserve(buf);
            let read = tokio_util::io::poll_read_buf(Pin::new(io), cx, buf);
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(H1Error::Read(err)))),
                Poll::Ready(Ok(0)) if self.framing == Framing::Close => {
                    self.framing = Framing::Done;
                    self.reusable = false;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Some(Err(H1Error::ClosedMidBody))),
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

/// What one look at the buffer gave.
enum Step {
    /// Body bytes to pass on.
    Data(Bytes),
    /// The framing moved on: look again.
    Again,
    /// Nothing more without reading.
    NeedMore,
}

/// Advances `framing` over what `buf` holds.
fn step(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, H1Error> {
    match framing {
        Framing::Done => Ok(Step::Again),
        Framing::Length(left) => Ok(match take(buf, left) {
            Some(data) => {
                if *left == 0 {
                    *framing = Framing::Done;
                }
                Step::Data(data)
            }
            None => Step::NeedMore,
        }),
        Framing::Close => Ok(match buf.is_empty() {
            true => Step::NeedMore,
            false => Step::Data(buf.split().freeze()),
        }),
        Framing::Chunked(chunk) => match chunk {
            Chunk::Size => {
                let Some(end) = line_end(buf, MAX_CHUNK_LINE)? else {
                    return Ok(Step::NeedMore);
                };
                let size = chunk_size(&buf[..end])?;
                buf.advance(end + 2);
                *chunk = match size {
                    0 => Chunk::Trailers(0),
                    n => Chunk::Data(n),
                };
                Ok(Step::Again)
            }
            Chunk::Data(left) => Ok(match take(buf, left) {
                Some(data) => {
                    if *left == 0 {
                        *chunk = Chunk::DataEnd;
                    }
                    Step::Data(data)
                }
                None => Step::NeedMore,
            }),
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(H1Error::Framing("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *chunk = Chunk::Size;
                Ok(Step::Again)
            }
            Chunk::Trailers(read) => {
                let Some(end) = line_end(buf, MAX_TRAILERS.saturating_sub(*read))? else {
                    return Ok(Step::NeedMore);
                };
                buf.advance(end + 2);
                // Trailer fields are dropped: a blank line ends the body.
                *chunk = Chunk::Trailers(*read + end + 2);
                if end == 0 {
                    *framing = Framing::Done;
                }
                Ok(Step::Again)
            }
        },
    }
}

/// Up to `*left` bytes off the front of `buf` (`None` when it is empty).
fn take(buf: &mut BytesMut, left: &mut u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
    *left -= n as u64;
    Some(buf.split_to(n).freeze())
}

/// Where the CRLF ending the first line of `buf` is; an error past `max` bytes.
fn line_end(buf: &[u8], max: usize) -> Result<Option<usize>, H1Error> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= max => Ok(Some(end)),
        Some(_) => Err(H1Error::Framing("chunk line or trailers too long")),
        None if buf.len() > max => Err(H1Error::Framing("chunk line or trailers too long")),
        None => Ok(None),
    }
}

/// The hex size of a chunk-size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let bad = || H1Error::Framing("invalid chunk size");
    // A bare CR or LF inside the line (its extensions included) is a line end to
    // some readers and not to others, which is how bodies get smuggled: refused,
    // as hyper's client refuses it. So is anything but hex digits before the
    // optional spaces and tabs that may precede the extensions.
    if line.iter().any(|b| *b == b'\r' || *b == b'\n') {
        return Err(bad());
    }
    let size = line.split(|b| *b == b';').next().unwrap_or_default();
    let digits = match size.iter().rposition(|b| *b != b' ' && *b != b'\t') {
        Some(last) => &size[..=last],
        None => return Err(bad()),
    };
    if digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let text = std::str::from_utf8(digits).map_err(|_| bad())?;
    u64::from_str_radix(text, 16).map_err(|_| bad())
}

/// Fuzzing entry point (`fuzz/fuzz_targets/response_head.rs`): parses `data` as a
/// response head to a GET or (odd first byte) a HEAD, then frames what follows it.
/// Panics only on a bug: a head must parse the same whole and split in two.
pub(crate) fn fuzz_response(data: &[u8]) {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let method = if pick & 1 == 1 {
        Method::HEAD
    } else {
        Method::GET
    };
    let data = &data[..data.len().min(MAX_RESPONSE_HEAD_BYTES)];
    let mut whole = BytesMut::from(data);
    let parsed = parse_head(&mut whole);
    // The same bytes in two reads: a partial head must not be taken off the buffer.
    let cut = usize::from(pick >> 1).min(data.len());
    let mut split = BytesMut::from(&data[..cut]);
    let first = parse_head(&mut split);
    let again = match first {
        Ok(Some(_)) | Err(_) => first,
        Ok(None) => {
            assert_eq!(&split[..], &data[..cut], "a partial head was consumed");
            split.extend_from_slice(&data[cut..]);
            parse_head(&mut split)
        }
    };
    let (Ok(Some(head)), Ok(Some(_))) = (parsed, again) else {
        return;
    };
    let _ = head.fields.iter().count();
    if let Ok((mut framing, _)) = framing(&head, &method) {
        drain(&mut framing, &mut whole);
    }
}

/// Fuzzing entry point (`fuzz/fuzz_targets/chunked.rs`): decodes `data` as a chunked
/// body in one read and again in reads cut where the first byte says. Panics only on
/// a bug: both must give the same bytes and the same outcome.
pub(crate) fn fuzz_chunked(data: &[u8]) {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let mut framing = Framing::Chunked(Chunk::Size);
    let mut whole = BytesMut::from(data);
    let (one, one_ok) = drain(&mut framing, &mut whole);
    let one_done = framing == Framing::Done;
    let mut framing = Framing::Chunked(Chunk::Size);
    let mut buf = BytesMut::new();
    let (mut pieces, mut ok) = (Vec::new(), true);
    let step_len = usize::from(pick).max(1);
    for piece in data.chunks(step_len) {
        buf.extend_from_slice(piece);
        let (out, fine) = drain(&mut framing, &mut buf);
        pieces.extend_from_slice(&out);
        if !fine {
            ok = false;
            break;
        }
    }
    assert_eq!(one_ok, ok, "one read and many disagree on failing");
    if ok {
        assert_eq!(one, pieces, "one read and many give different bytes");
        assert_eq!(one_done, framing == Framing::Done);
    }
}

/// Steps `framing` over `buf` until it needs more bytes or ends: the body bytes,
/// and false on a framing error.
fn drain(framing: &mut Framing, buf: &mut BytesMut) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        if matches!(framing, Framing::Done | Framing::Close) {
            return (out, true);
        }
        match step(framing, buf) {
            Ok(Step::Data(data)) => out.extend_from_slice(&data),
            Ok(Step::Again) => {}
            Ok(Step::NeedMore) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let head = parse_head(&mut buf).unwrap().expect("complete head");
        (head, buf)
    }

    /// Runs the framing over the body of `raw`, fed `feed` bytes at a time: the bytes
    /// passed on, where the framing ended, and what was left in the buffer.
    fn body(raw: &[u8], feed: usize) -> Result<(Vec<u8>, Framing, BytesMut), H1Error> {
        let mut all = BytesMut::from(raw);
        let head = parse_head(&mut all)?.expect("complete head");
        let (mut framing, _) = framing(&head, &Method::GET)?;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in all.chunks(feed.max(1)) {
            buf.extend_from_slice(piece);
            while framing != Framing::Done {
                match step(&mut framing, &mut buf)? {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::Again => {}
                    Step::NeedMore => break,
                }
            }
        }
        Ok((out, framing, buf))
    }

    #[test]
    fn heads_are_parsed_and_partial_heads_wait() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-len"[..]);
        assert!(parse_head(&mut buf).unwrap().is_none());
        let (h, rest) =
            head(b"HTTP/1.1 404 Nope\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(h.status, 404);
        assert_eq!(h.version, Version::HTTP_11);
        let a: Vec<_> = h.fields.values(b"x-a").collect();
        assert_eq!(a, [b"1", b"2"]);
        assert_eq!(&rest[..], b"abc");
    }

    #[test]
    fn heads_with_more_fields_than_the_stack_holds_parse_the_same() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..MAX_RESPONSE_HEADERS {
            raw.extend_from_slice(format!("x-{i}: value-{i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let (h, rest) = head(&raw);
        assert_eq!(h.fields.iter().count(), MAX_RESPONSE_HEADERS);
        assert_eq!(h.fields.values(b"x-0").next(), Some(&b"value-0"[..]));
        assert_eq!(h.fields.values(b"X-99").next(), Some(&b"value-99"[..]));
        assert!(rest.is_empty());
    }

    #[test]
    fn too_many_fields_is_an_error() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_RESPONSE_HEADERS {
            raw.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&raw[..]);
        assert!(matches!(parse_head(&mut buf), Err(H1Error::Parse(_))));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |raw: &[u8], m: Method| framing(&head(raw).0, &m);
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::GET).unwrap(),
            (Framing::Length(5), true)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Method::HEAD
            )
            .unwrap(),
            (Framing::Done, true)
        );
        assert_eq!(
            f(b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET).unwrap(),
            (Framing::Done, true)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                Method::GET
            )
            .unwrap(),
            (Framing::Length(1), false)
        );
        assert_eq!(
            f(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::GET).unwrap(),
            (Framing::Length(1), false)
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\n\r\n", Method::GET).unwrap(),
            (Framing::Close, false)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                Method::GET
            )
            .unwrap(),
            (Framing::Chunked(Chunk::Size), true)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                Method::GET
            )
            .unwrap(),
            (Framing::Chunked(Chunk::Size), false)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                Method::GET
            )
            .unwrap(),
            (Framing::Close, false)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n",
                Method::GET
            )
            .unwrap(),
            (Framing::Length(3), true)
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(f(bad, Method::GET), Err(H1Error::Framing(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn length_bodies_end_at_their_length_whatever_the_read_sizes() {
        for feed in [1, 2, 3, 100] {
            let (out, framing, rest) =
                body(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", feed).unwrap();
            assert_eq!(
                (&out[..], framing),
                (&b"hello"[..], Framing::Done),
                "feed {feed}"
            );
            assert!(rest.is_empty());
        }
        // Bytes after the body stay in the buffer (so the connection is not reused).
        let (_, _, rest) =
            body(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiEXTRA", 100).unwrap();
        assert_eq!(&rest[..], b"EXTRA");
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nx-trailer: t\r\n\r\n";
        for feed in [1, 2, 7, 1000] {
            let (out, framing, rest) = body(raw, feed).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out),
                "hello, world!!!",
                "feed {feed}"
            );
            assert_eq!(framing, Framing::Done, "feed {feed}");
            assert!(rest.is_empty(), "feed {feed}");
        }
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"3;ex\nt=1\r\nabc\r\n0\r\n\r\n",
            b"3\n\r\nabc\r\n0\r\n\r\n",
            b"\r3\r\nabc\r\n0\r\n\r\n",
            b" 3\r\nabc\r\n0\r\n\r\n",
            b"+3\r\nabc\r\n0\r\n\r\n",
        ] {
            let mut raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            raw.extend_from_slice(bad);
            assert!(
                matches!(body(&raw, 1000), Err(H1Error::Framing(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5".to_vec();
        long.extend(std::iter::repeat_n(b' ', MAX_CHUNK_LINE + 10));
        assert!(matches!(body(&long, 1000), Err(H1Error::Framing(_))));
    }

    #[tokio::test]
    async fn only_a_clean_end_pools_the_connection_and_a_grown_buffer_is_dropped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = |reusable, framing, buf: BytesMut| async move {
            let mut conn = H1Conn::new(TcpStream::connect(addr).await.unwrap());
            conn.0.buf = buf;
            H1Body {
                conn: Some(conn),
                framing,
                reusable,
                failed: None,
            }
        };
        let grown = BytesMut::with_capacity(64 * 1024);
        let conn = body(true, Framing::Done, grown).await.take_reusable();
        assert_eq!(conn.expect("pooled").0.buf.capacity(), 0);
        let small = BytesMut::with_capacity(READ_SIZE);
        let conn = body(true, Framing::Done, small).await.take_reusable();
        assert_eq!(conn.expect("pooled").0.buf.capacity(), READ_SIZE);
        assert!(body(false, Framing::Done, BytesMut::new())
            .await
            .take_reusable()
            .is_none());
        assert!(body(true, Framing::Length(1), BytesMut::new())
            .await
            .take_reusable()
            .is_none());
        let extra = BytesMut::from(&b"x"[..]);
        assert!(body(true, Framing::Done, extra)
            .await
            .take_reusable()
            .is_none());
    }

    #[tokio::test]
    async fn each_exchange_times_out_at_its_own_deadline_on_a_reused_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Answers the requests whose path starts with /fast, never the others.
        let backend = tokio::spawn(async move {
            let (mut io, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                let Ok(n) = io.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head: Vec<u8> = buf.drain(..end + 4).collect();
                    if head.starts_with(b"GET /fast") {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        io.write_all(ok).await.unwrap();
                    }
                }
            }
        });
        let req = |path: &str| Request::get(path).body(()).unwrap();
        let within = |timeout: Duration| (Instant::now() + timeout, timeout);
        let mut conn = H1Conn::new(TcpStream::connect(addr).await.unwrap());
        let exchange = |conn: H1Conn, path: &'static str, timeout: Duration| async move {
            let mut conn = conn;
            let deadline = within(timeout);
            conn.write_request(&req(path), write_fields, deadline)
                .await?;
            let (mut resp, _) = conn.read_response(&Method::GET, deadline).await?;
            Ok::<_, H1Error>(resp.body_mut().take_reusable().expect("reusable"))
        };

        // Armed for 10 s by the first exchange: a later, shorter one still ends at
        // its own deadline.
        conn = exchange(conn, "/fast", Duration::from_secs(10))
            .await
            .unwrap();
        let started = Instant::now();
        let silent = exchange(conn, "/silent", Duration::from_millis(200)).await;
        assert!(matches!(silent, Err(H1Error::TimedOut(_))), "{silent:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(3),
            "{took:?}"
        );

        // Armed for 100 ms, fired while the connection sat in the pool: the next
        // exchange is not cut by it, and its own deadline still holds.
        backend.abort();
        let backend_two = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr_two = backend_two.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut io, _) = backend_two.accept().await.unwrap();
            let mut chunk = [0u8; 1024];
            let mut answered = 0;
            while let Ok(n) = io.read(&mut chunk).await {
                if n == 0 {
                    return;
                }
                answered += 1;
                if answered == 1 {
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    io.write_all(ok).await.unwrap();
                } else {
                    // Late, but within the second exchange's deadline.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    io.write_all(ok).await.unwrap();
                }
            }
        });
        let conn = H1Conn::new(TcpStream::connect(addr_two).await.unwrap());
        let conn = exchange(conn, "/one", Duration::from_millis(100))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let late = exchange(conn, "/two", Duration::from_secs(5)).await;
        assert!(late.is_ok(), "cut by the first exchange's timer: {late:?}");
    }

    #[test]
    fn raw_fields_keep_what_the_writer_needs_and_nothing_of_the_status_line() {
        let f = RawFields::of_head(
            b"HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length:  3 \r\nX-A:\tv \r\n\r\nabc",
        );
        assert_eq!(f.content_length, Some(3));
        assert!(f.dated);
        assert!(!f.connection_names_fields);
        let all: Vec<_> = f.iter().collect();
        assert_eq!(
            all,
            [
                (&b"Date"[..], &b"x"[..]),
                (b"Content-Length", b"3"),
                (b"X-A", b"v")
            ]
        );

        // Bare LF line ends, Transfer-Encoding overriding Content-Length, a
        // Connection that names a field.
        let f = RawFields::of_head(
            b"HTTP/1.1 200 OK\nContent-Length: 5\nTransfer-Encoding: chunked\nConnection: keep-alive, x-hop\n\n",
        );
        assert_eq!(
            f.content_length, None,
            "the transfer coding frames the body"
        );
        assert!(!f.dated);
        assert!(f.connection_names_fields);
        assert_eq!(f.iter().count(), 3);
        assert_eq!(
            f.values(b"connection").next(),
            Some(&b"keep-alive, x-hop"[..])
        );

        let none = RawFields::of_head(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(none.iter().count(), 0);
    }

    #[test]
    fn a_large_head_buffer_is_not_kept() {
        let mut out = Vec::with_capacity(100);
        keep_small(&mut out);
        assert_eq!(out.capacity(), 100);
        let mut out = vec![0u8; MAX_KEPT_HEAD_BUFFER + 1];
        keep_small(&mut out);
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn request_heads_are_written_as_they_stand() {
        let req = Request::post("http://ignored.example/a/b?c=d")
            .header("host", "svc")
            .header("x-forwarded-for", "1.2.3.4")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        encode_head(&mut out, &req, write_fields);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a/b?c=d HTTP/1.1\r\nhost: svc\r\nx-forwarded-for: 1.2.3.4\r\n\r\n"
        );
    }
}
