//! HTTP/1.1 on a plain client connection for the common request, served without
//! hyper's server.
//!
//! hyper's server was a large share of a proxied request's instructions
//! (benches/JOURNAL.md, fourth pass), keeps two 8 KiB buffers for every connection, idle
//! ones included, and its head timer also bounds the wait between keep-alive requests
//! (so those closed at `header_read_timeout`, not `idle_timeout`). Most requests a
//! front door sees are one head and no body, answered by one head and a body streamed
//! back: `serve` reads such a head, calls the handler and writes the answer itself,
//! on the connection's own task. The first request it does not serve (a body, an
//! upgrade, `Expect`, HTTP/1.0, h2c, CONNECT, a head hyper would refuse or answer
//! with an error of its own) hands the connection, with every byte read so far, to
//! hyper for the rest of its life (`Outcome::HandOff`), so what hyper did for those
//! requests is unchanged.
//!
//! Like hyper: the answer is framed by `Content-Length` when its length is known,
//! else chunked; `Date` is added; `Connection: close` from the client (or a drain)
//! ends the connection after the answer and says so; the client closing its side
//! while a request is in flight cancels it; bytes that arrive meanwhile are kept as
//! the next request (pipelining). Trailers of a chunked body are not passed on.
//!
//! Timers: the first request must complete its head within `header_read_timeout` of
//! the accept; between requests a connection may wait `idle_timeout`, and once a head
//! has begun it must complete within `header_read_timeout`. One timer per connection
//! watches these (`super::deadline`), re-armed about once a period, not per
//! request; the drain's token is registered once per connection (polling it takes
//! the token's mutex).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
};
use http_body::Body;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::client::RawFields;
use super::fields;
use super::wire::{list_items, reserve, write_line, READ_SIZE};
use crate::data_plane::cold::cold;

/// Field positions kept on the stack while a head is parsed.
const INLINE_FIELDS: usize = 16;
/// Most fields read on the stack; a head with more is hyper's (which then applies
/// a `max_headers` above this).
const MAX_FIELDS: usize = 100;
/// hyper answers 414 to a longer request target.
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;
/// Body data up to this size is copied after the head (one write for both).
const COPY_MAX: usize = 16 * 1024;
/// Empty lines taken before a request line; one more is a 400.
const MAX_EMPTY_LINES: usize = 4;
/// Spare buffers a worker thread keeps for connections that wake up.
const MAX_SPARE: usize = 64;
/// Largest buffer kept as a spare.
const MAX_SPARE_CAPACITY: usize = 16 * 1024;

/// The listener's client limits this loop applies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// A head must be complete this long after its first byte (the first request:
    /// after the accept).
    pub(crate) header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub(crate) idle_timeout: Duration,
    /// A head that has not completed within this many bytes is hyper's (431).
    pub(crate) max_head_bytes: usize,
    /// A head with more fields is hyper's (431).
    pub(crate) max_headers: usize,
}

/// The listener's drain as this loop sees it: a flag read on every request (an
/// atomic load; the token's own check takes its mutex, shared by every connection)
/// and the token that wakes a waiting connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Drain<'a> {
    pub(crate) started: &'a AtomicBool,
    pub(crate) token: &'a CancellationToken,
}

impl Drain<'_> {
    fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}

/// How [`serve`] left the connection.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Finished: closed by either side, timed out, drained or failed.
    Done,
    /// A request this loop does not serve: hyper takes the connection from here,
    /// reading these bytes first.
    HandOff(TcpStream, BytesMut),
}

/// A request's head as `parse` found it.
// Built once per request and moved twice: boxing would allocate for each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// A bodiless request this loop serves, and whether the client lets the
    /// connection carry another one after it.
    Request(Request<()>, bool),
    /// Not complete yet.
    Partial,
    /// For hyper: see the module documentation.
    Other,
    /// Taken off the buffer, but not a valid request (hyper answers these 400 too).
    Bad,
}

/// What the connection waits for next.
// Built once per request and moved twice: boxing would allocate for each.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Request<()>, bool),
    HandOff,
    Bad,
    Close,
    /// Idle for [`BUSY_IDLE`]: the busy spell ends.
    Idle,
}

/// Serves `io` until it closes or asks for hyper; `handle` answers each request.
pub(crate) async fn serve<H: Handle>(
    io: TcpStream,
    handle: H,
    settings: Settings,
    drain: Drain<'_>,
) -> Outcome {
    let accepted = Instant::now();
    let mut conn = Conn {
        io,
        buf: BytesMut::new(),
        out: Vec::new(),
    };
    let mut shutdown = pin!(drain.token.cancelled());
    // Registered once with this task's waker: the drain wakes the task whenever it
    // comes, and later waits only read the token's flag.
    if poll_fn(|cx| Poll::Ready(shutdown.as_mut().poll(cx)))
        .await
        .is_ready()
    {
        return Outcome::Done;
    }
    let mut timer = pin!(tokio::time::sleep_until(
        accepted + settings.header_read_timeout
    ));
    let mut idle_since = None;
    loop {
        // Cold: waiting outside a busy spell (see [`Busy`]).
        let next = conn
            .next_request(&settings, timer.as_mut(), drain, accepted, idle_since, None)
            .await;
        let first = match next {
            Next::Request(req, keep_alive) => (req, keep_alive),
            Next::Idle => continue,
            other => return cold(conn.end(other)).await,
        };
        let busy = Busy {
            handle: &handle,
            settings: &settings,
            drain,
            accepted,
        };
        // Boxed, once per busy spell rather than per request: see [`Busy`].
        match Box::pin(busy.serve(conn, first, timer.as_mut())).await {
            Spell::Idle(back, since) => {
                conn = back;
                idle_since = Some(since);
            }
            Spell::Ended(outcome) => return outcome,
        }
    }
}

/// How long a connection stays in a busy spell with no request in flight.
const BUSY_IDLE: Duration = Duration::from_secs(1);

/// A busy spell: requests served one after another until the connection has had
/// none for [`BUSY_IDLE`]. A request's futures are most of this loop's size (inline,
/// every idle connection would keep them), and a box per request cost a visible share
/// of a request's instructions (benches/JOURNAL.md, fourth pass); so a spell runs
/// boxed, and an idle connection holds only the small waiting state.
struct Busy<'a, H> {
    handle: &'a H,
    settings: &'a Settings,
    drain: Drain<'a>,
    accepted: Instant,
}

/// How a busy spell ended.
enum Spell {
    /// Idle for [`BUSY_IDLE`] since the instant given: the connection waits on.
    Idle(Conn, Instant),
    Ended(Outcome),
}

impl<H: Handle> Busy<'_, H> {
    async fn serve(
        self,
        mut conn: Conn,
        first: (Request<()>, bool),
        mut timer: Pin<&mut Sleep>,
    ) -> Spell {
        let (mut req, mut keep_alive) = first;
        loop {
            let served = conn
                .exchange(req, keep_alive, self.handle, self.settings, self.drain)
                .await;
            if !served {
                return Spell::Ended(Outcome::Done);
            }
            let idle_since = Instant::now();
            conn.spare_buffers();
            let next = conn
                .next_request(
                    self.settings,
                    timer.as_mut(),
                    self.drain,
                    self.accepted,
                    Some(idle_since),
                    Some(idle_since + BUSY_IDLE),
                )
                .await;
            (req, keep_alive) = match next {
                Next::Request(req, keep_alive) => (req, keep_alive),
                Next::Idle => return Spell::Idle(conn, idle_since),
                other => return Spell::Ended(cold(conn.end(other)).await),
            };
        }
    }
}

/// What answers the requests: the listener's handler (a closure over it), or a
/// test's.
pub(crate) trait Handle {
    /// The answers' body.
    type Body: AnswerBody<Error: std::fmt::Display>;
    /// The answer to come.
    type Answer: Future<Output = Response<Self::Body>>;
    /// Starts answering `req` (its body is `None`: this loop serves no bodies).
    fn call(&self, req: Request<Option<Incoming>>) -> Self::Answer;
}

impl<H, F, B> Handle for H
where
    H: Fn(Request<Option<Incoming>>) -> F,
    F: Future<Output = Response<B>>,
    B: AnswerBody<Error: std::fmt::Display>,
{
    type Body = B;
    type Answer = F;

    fn call(&self, req: Request<Option<Incoming>>) -> F {
        self(req)
    }
}

/// An answer's body, which may carry its head's fields raw (a backend's, from the
/// fast path): they are written before the fields of the answer's map.
pub(crate) trait AnswerBody: Body<Data = bytes::Bytes> {
    /// The raw fields, taken (only the head writer asks).
    fn take_raw_fields(&mut self) -> Option<RawFields> {
        None
    }
}

/// One client connection and its buffers (given back to the thread's spares while
/// it waits with nothing in them).
struct Conn {
    io: TcpStream,
    /// Bytes read and not yet parsed.
    buf: BytesMut,
    /// The answer being written.
    out: Vec<u8>,
}

impl Conn {
    /// Waits for the next head and parses it. `idle_since` is when the last answer
    /// ended (`None` before the first request).
    async fn next_request(
        &mut self,
        settings: &Settings,
        mut timer: Pin<&mut Sleep>,
        drain: Drain<'_>,
        accepted: Instant,
        idle_since: Option<Instant>,
        release_at: Option<Instant>,
    ) -> Next {
        let mut head_began = None;
        loop {
            if !self.buf.is_empty() {
                match parse(&mut self.buf, settings.max_headers) {
                    Parsed::Request(req, keep_alive) => return Next::Request(req, keep_alive),
                    Parsed::Other => return Next::HandOff,
                    Parsed::Bad => return Next::Bad,
                    Parsed::Partial if self.buf.len() >= settings.max_head_bytes => {
                        return Next::HandOff
                    }
                    Parsed::Partial => {}
                }
            }
            let deadline = match (idle_since, head_began) {
                (None, _) => accepted + settings.header_read_timeout,
                (Some(_), Some(began)) => began + settings.header_read_timeout,
                (Some(idle), None) => idle + settings.idle_timeout,
            };
            let was_empty = self.buf.is_empty();
            // Waiting with nothing read: the busy spell may end first.
            let release_at = release_at.filter(|_| was_empty);
            let wake_at = release_at.map_or(deadline, |at| at.min(deadline));
            let mut released = false;
            let read = poll_fn(|cx| {
                // A waiting connection holds no buffer: it takes one once there is
                // something to read.
                let ready = self.buf.capacity() > 0 || self.io.poll_read_ready(cx).is_ready();
                if ready {
                    if self.buf.capacity() == 0 {
                        self.buf = spare_read_buffer();
                    }
                    reserve(&mut self.buf);
                    let read =
                        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
                    if let Poll::Ready(read) = read {
                        return Poll::Ready(Some(read));
                    }
                }
                if was_empty && drain.started() {
                    return Poll::Ready(None);
                }
                // One timer for the connection, not one per request.
                let now = ready!(super::deadline::poll(timer.as_mut(), cx, wake_at));
                // Before the connection's deadline, the spell's end came first.
                released = now < deadline;
                Poll::Ready(None)
            })
            .await;
            if released {
                return Next::Idle;
            }
            match read {
                Some(Ok(0)) | None => return Next::Close,
                Some(Ok(_)) => {
                    if was_empty && idle_since.is_some() {
                        head_began = Some(Instant::now());
                    }
                }
                Some(Err(err)) => {
                    tracing::debug!(%err, "reading from the client failed");
                    return Next::Close;
                }
            }
        }
    }

    /// Answers `req`; true when the connection may carry another request.
    async fn exchange<H: Handle>(
        &mut self,
        req: Request<()>,
        keep_alive: bool,
        handle: &H,
        settings: &Settings,
        drain: Drain<'_>,
    ) -> bool {
        let head_only = req.method() == Method::HEAD;
        // In a block of its own, so the handler's future is over before the
        // answer's writing begins and the two share their room.
        let resp = {
            let answer = pin!(handle.call(req.map(|()| None)));
            self.unless_client_leaves(answer, settings.max_head_bytes)
                .await
        };
        let Some(resp) = resp else {
            return false;
        };
        let keep_alive = keep_alive && !drain.started();
        match self.respond(resp, head_only, keep_alive, settings).await {
            Ok(keep) => keep,
            Err(err) => {
                tracing::debug!(%err, "writing to the client failed");
                false
            }
        }
    }

    /// How the connection ends after `next`, which is neither a request nor idle.
    async fn end(mut self, next: Next) -> Outcome {
        match next {
            Next::HandOff => Outcome::HandOff(self.io, self.buf),
            Next::Bad => {
                self.refuse().await;
                Outcome::Done
            }
            Next::Close | Next::Idle | Next::Request(..) => Outcome::Done,
        }
    }

    /// Drives `answer` while watching the client: `None` when the client closed
    /// its side or the connection broke first (hyper cancels the request then too).
    /// Bytes that arrive meanwhile are kept, up to `max_buffered`, as what follows.
    async fn unless_client_leaves<F: Future>(
        &mut self,
        mut answer: Pin<&mut F>,
        max_buffered: usize,
    ) -> Option<F::Output> {
        poll_fn(|cx| {
            if let Poll::Ready(out) = answer.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if self.client_left(cx, max_buffered) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Reads what the client sent while a request is in flight; true when it closed
    /// or the connection failed. Costs no syscall while the socket has nothing new
    /// (tokio consults its readiness first).
    fn client_left(&mut self, cx: &mut Context<'_>, max_buffered: usize) -> bool {
        loop {
            if self.buf.len() >= max_buffered {
                // Enough of the next request: read on once this one is answered.
                return false;
            }
            reserve(&mut self.buf);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return false,
            }
        }
    }

    /// Writes `resp`; `Ok(true)` when the connection may carry another request.
    async fn respond<B>(
        &mut self,
        mut resp: Response<B>,
        head_only: bool,
        keep_alive: bool,
        settings: &Settings,
    ) -> io::Result<bool>
    where
        B: AnswerBody,
        B::Error: std::fmt::Display,
    {
        if self.out.capacity() == 0 {
            self.out = spare_write_buffer();
        }
        let raw = resp.body_mut().take_raw_fields();
        let hint = resp.body().size_hint().exact();
        let status = resp.status();
        let bodiless = head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let answer = Answer {
            status,
            headers: resp.headers(),
            raw: raw.as_ref(),
            hint,
            bodiless,
        };
        let head = encode_head(&mut self.out, &answer, keep_alive);
        // Written: a long body (a stream) need not keep the head, nor the backend's
        // read buffer its raw fields share.
        drop(raw);
        let mut body = pin!(resp.into_body());
        let mut left = match head.framing {
            Framing::Length(n) => n,
            Framing::None | Framing::Chunked => 0,
        };
        loop {
            // What the body has ready goes out with the head, in one write.
            let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.flush().await?;
                    let next = poll_fn(|cx| body.as_mut().poll_frame(cx));
                    match self
                        .unless_client_leaves(pin!(next), settings.max_head_bytes)
                        .await
                    {
                        Some(frame) => frame,
                        None => return Ok(false),
                    }
                }
            };
            match frame {
                None => break,
                Some(Err(err)) => {
                    // Cut: what was sent stays short (or unterminated), and the
                    // connection closes so the client sees it.
                    tracing::debug!(%err, "the response body failed");
                    self.flush().await?;
                    return Ok(false);
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: not passed on
                    };
                    if data.is_empty() {
                        continue;
                    }
                    match head.framing {
                        // HEAD, 204, 304: the head said what the body would be.
                        Framing::None => continue,
                        Framing::Length(_) => {
                            let len = data.len() as u64;
                            if len > left {
                                // More than the head announced: send what fits, close.
                                let fits = usize::try_from(left).unwrap_or(usize::MAX);
                                self.out.extend_from_slice(&data[..fits]);
                                self.flush().await?;
                                return Ok(false);
                            }
                            left -= len;
                            self.put(&data).await?;
                        }
                        Framing::Chunked => {
                            write_chunk_size(&mut self.out, data.len());
                            self.put(&data).await?;
                            self.out.extend_from_slice(b"\r\n");
                        }
                    }
                }
            }
        }
        if head.framing == Framing::Chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush().await?;
        Ok(head.keep_alive && left == 0)
    }

    /// Queues `data` after what is buffered, or writes both when it is large.
    async fn put(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() <= COPY_MAX {
            self.out.extend_from_slice(data);
            return Ok(());
        }
        self.flush().await?;
        self.io.write_all(data).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self.io.write_all(&self.out).await;
        self.out.clear();
        written
    }

    /// hyper's answer to a head it cannot read: 400, then close.
    async fn refuse(&mut self) {
        self.out.clear();
        self.out.extend_from_slice(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n",
        );
        write_date(&mut self.out);
        self.out.extend_from_slice(b"\r\n");
        if let Err(err) = self.flush().await {
            tracing::debug!(%err, "answering a bad request failed");
        }
    }

    /// Gives empty buffers to the thread's spares: an idle connection holds none.
    fn spare_buffers(&mut self) {
        if self.buf.is_empty() {
            give_spare(
                |s| &mut s.reads,
                std::mem::take(&mut self.buf),
                BytesMut::capacity,
            );
        }
        self.out.clear();
        give_spare(
            |s| &mut s.writes,
            std::mem::take(&mut self.out),
            Vec::capacity,
        );
    }
}

/// Spare buffers of one worker thread.
#[derive(Default)]
struct Spares {
    reads: Vec<BytesMut>,
    writes: Vec<Vec<u8>>,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

fn spare_read_buffer() -> BytesMut {
    SPARES
        .with(|s| s.borrow_mut().reads.pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_SIZE))
}

fn spare_write_buffer() -> Vec<u8> {
    SPARES
        .with(|s| s.borrow_mut().writes.pop())
        .unwrap_or_else(|| Vec::with_capacity(READ_SIZE))
}

/// Keeps `buffer` in the list `kind` picks, unless it is empty, grown large, or
/// the list is full.
fn give_spare<T>(kind: fn(&mut Spares) -> &mut Vec<T>, buffer: T, capacity: fn(&T) -> usize) {
    let cap = capacity(&buffer);
    if cap == 0 || cap > MAX_SPARE_CAPACITY {
        return;
    }
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        let list = kind(&mut s);
        if list.len() < MAX_SPARE {
            list.push(buffer);
        }
    });
}

/// The request head at the front of `buf`, as the loop reads it with at most
/// `max_headers` fields: taken off it when the loop serves it, left there for
/// hyper otherwise. For fuzz targets and property tests.
pub fn parse_request_head(buf: &mut BytesMut, max_headers: usize) -> Parsed {
    parse(buf, max_headers)
}

/// The request head at the front of `buf`: taken off it when this loop serves it,
/// left there for hyper otherwise.
fn parse(buf: &mut BytesMut, max_headers: usize) -> Parsed {
    // Where each field sits, so the values can share the frozen head: on the stack
    // for the usual handful of fields (zeroing room for all 100 costs more than
    // the parse), else in a vector.
    let mut inline = [(0u32, 0u32, 0u32, 0u32); INLINE_FIELDS];
    let mut heap = Vec::new();
    // RFC 9112 §2.2: empty lines before the request line are ignored (httparse
    // skips them too), a few of them: a stream of them is no request.
    let mut empty = 0;
    let mut at_line = 0;
    loop {
        let rest = &buf[at_line..];
        let eol = match rest {
            [b'\r', b'\n', ..] => 2,
            [b'\n', ..] => 1,
            [] | [b'\r'] => return Parsed::Partial,
            _ => break,
        };
        empty += 1;
        at_line += eol;
        if empty > MAX_EMPTY_LINES {
            let _ = buf.split_to(at_line);
            return Parsed::Bad;
        }
    }
    let (len, method_span, target, keep_alive, spans) = {
        let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let fields = &mut fields[..max_headers.min(MAX_FIELDS)];
        let len = match httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, buf, fields)
        {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Other,
        };
        let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
            return Parsed::Other;
        };
        if method == "CONNECT" || path.len() > MAX_URI_LEN {
            return Parsed::Other;
        }
        let base = buf.as_ptr() as usize;
        // Offsets fit u32: a head is at most `max_header_bytes`, far below 4 GiB.
        let at = |p: *const u8| (p as usize - base) as u32;
        let count = req.headers.len();
        let spans: &mut [(u32, u32, u32, u32)] = if count <= INLINE_FIELDS {
            &mut inline[..count]
        } else {
            heap.resize(count, (0, 0, 0, 0));
            &mut heap
        };
        let mut keep_alive = true;
        for (span, field) in spans.iter_mut().zip(req.headers.iter()) {
            let name = field.name.as_bytes();
            let framing_or_upgrade = [
                &b"content-length"[..],
                b"transfer-encoding",
                b"upgrade",
                b"expect",
            ]
            .iter()
            .any(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name));
            if framing_or_upgrade {
                return Parsed::Other;
            }
            if name.eq_ignore_ascii_case(b"connection")
                && field
                    .value
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                keep_alive = false;
            }
            let (n, v) = (at(field.name.as_ptr()), at(field.value.as_ptr()));
            *span = (
                n,
                n + field.name.len() as u32,
                v,
                v + field.value.len() as u32,
            );
        }
        let target = at(path.as_ptr()) as usize;
        let method_at = at(method.as_ptr()) as usize;
        (
            len,
            method_at..method_at + method.len(),
            target..target + path.len(),
            keep_alive,
            &*spans,
        )
    };
    let head = buf.split_to(len).freeze();
    let Ok(method) = Method::from_bytes(&head[method_span]) else {
        return Parsed::Bad;
    };
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target)) else {
        return Parsed::Bad;
    };
    // Filled in place: a map made apart and moved in would drop the request's own.
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.reserve(spans.len());
    for &(n0, n1, v0, v1) in spans {
        let (n0, n1, v0, v1) = (n0 as usize, n1 as usize, v0 as usize, v1 as usize);
        // httparse admits exactly the bytes these admit: neither fails in practice.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[n0..n1]),
            HeaderValue::from_maybe_shared(head.slice(v0..v1)),
        ) else {
            return Parsed::Bad;
        };
        headers.append(name, value);
    }
    Parsed::Request(req, keep_alive)
}

/// How an answer's body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// `Content-Length`: exactly this many bytes.
    Length(u64),
    Chunked,
}

/// What [`encode_head`] decided.
#[derive(Debug)]
struct Head {
    framing: Framing,
    /// Neither side asked to close.
    keep_alive: bool,
}

/// What [`encode_head`] writes a head from.
struct Answer<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
    /// A backend's fields, written before those of the map.
    raw: Option<&'a RawFields>,
    /// The body's exact length, when it knows it.
    hint: Option<u64>,
    /// No body goes on the wire (HEAD, 1xx, 204, 304).
    bodiless: bool,
}

/// Writes the status line and fields of an answer, framed as hyper frames it: a
/// `Content-Length` of the handler's (or the backend's) own is kept, a known length
/// is written, an unknown one is chunked; `Transfer-Encoding` is the gateway's.
fn encode_head(out: &mut Vec<u8>, answer: &Answer<'_>, keep_alive: bool) -> Head {
    let Answer {
        status,
        headers,
        raw,
        hint,
        bodiless,
    } = *answer;
    out.clear();
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        // An unknown code has an empty reason (RFC 9112 §4 allows it), as hyper writes.
        let reason = status.canonical_reason().unwrap_or("");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut length = None;
    let mut dated = false;
    // 204 and 304 (and 1xx) carry no Content-Length here (RFC 9110 §8.6, §15.4.5):
    // a backend's is not relayed, as hyper does not relay it.
    let lengthless = status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational();
    if let Some(raw) = raw {
        fields::write_end_to_end(raw, out);
        dated = raw.dated;
        if let Some(n) = raw.content_length.filter(|_| !lengthless) {
            write_length(out, n);
            length = Some(n);
        }
    }
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING {
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            if length.is_some() || lengthless {
                continue;
            }
            length = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            if length.is_none() && !bodiless {
                continue; // not a length: framed below from the body instead
            }
        } else if *name == header::DATE {
            dated = true;
        }
        write_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let close_asked =
        list_items(headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"close"));
    let framing = if bodiless {
        Framing::None
    } else if let Some(n) = hint.filter(|_| length.is_none()) {
        write_length(out, n);
        Framing::Length(n)
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if !keep_alive && !close_asked {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !dated {
        write_date(out);
    }
    out.extend_from_slice(b"\r\n");
    Head {
        framing,
        keep_alive: keep_alive && !close_asked,
    }
}

/// A `content-length` line.
fn write_length(out: &mut Vec<u8>, n: u64) {
    write_line(
        out,
        b"content-length",
        itoa::Buffer::new().format(n).as_bytes(),
    );
}

/// A chunk-size line: the size in hex, CRLF.
fn write_chunk_size(out: &mut Vec<u8>, len: usize) {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(len >> (shift * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// `date: <IMF-fixdate>` for now, formatted once a second per thread (as hyper does).
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [b' '; 29])) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                date.1.copy_from_slice(text.as_bytes());
            }
            date.0 = secs;
        }
        write_line(out, b"date", &date.1);
    });
}

/// Fuzzing entry point (`fuzz/fuzz_targets/request_head.rs`): parses `data` as the
/// request heads at the front of a connection's buffer, the way [`serve`] does.
/// Panics only on a bug: a partial head stays in the buffer, a taken one shrinks it.
pub(crate) fn fuzz_request_head(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while !buf.is_empty() {
        let before = buf.len();
        match parse(&mut buf, MAX_FIELDS) {
            Parsed::Request(req, _) => {
                assert!(buf.len() < before, "a served head stayed in the buffer");
                let _ = crate::data_plane::proxy::framing::check(&req);
            }
            Parsed::Bad => assert!(buf.len() < before, "a bad head stayed in the buffer"),
            Parsed::Partial | Parsed::Other => {
                assert_eq!(buf.len(), before, "a head left for hyper was consumed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
