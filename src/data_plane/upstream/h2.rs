//! HTTP/2 connections to one backend (`protocol = "h2c"` or `"h2"`).
//!
//! An [`H2Pool`] keeps a few multiplexed connections (driven with the `h2` crate
//! directly, which tells the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`): a stream
//! goes on the first connection with a free slot, a new connection opens only when
//! every open one is at the backend's limit, and at `h2.max_connections` the
//! least loaded connection takes the stream (h2 queues it until a slot frees),
//! as Envoy and linkerd2-proxy do.
//!
//! A connection that received GOAWAY (a failed stream open tells), whose PING went
//! unanswered, that reached `max_connection_age`, or whose backend was removed is
//! *draining*: it takes no new stream, its streams finish, and then it closes.
//! Streams the backend did not process (`REFUSED_STREAM`, or above a GOAWAY's last
//! stream id) fail with [`H2SendError::Unprocessed`]: the proxy sends them again on
//! another connection or backend. Request bodies go up through [`Pump`], which
//! honours the backend's flow control; response bodies come down through
//! [`H2Body`], trailers included, giving the window back as the client takes data.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::uri::PathAndQuery;
use http::{header, HeaderMap, Request, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::body::{BoxError, RequestBody};
use super::{ConnectError, NotH2};
use crate::control_plane::config::spec::H2Spec;
use crate::data_plane::tls::upstream::UpstreamTls;

/// Streams assumed per connection until the backend's SETTINGS say otherwise
/// (RFC 9113 recommends servers allow at least 100).
const INITIAL_MAX_STREAMS: usize = 100;
/// Largest response head (HPACK-decoded field list) accepted from a backend.
const MAX_HEADER_LIST: u32 = 64 << 10;
/// Bytes of request body h2 may buffer per stream beyond the backend's window.
const MAX_SEND_BUFFER: usize = 1 << 20;

/// One multiplexed connection to the backend.
pub(crate) struct H2Conn {
    send: SendRequest<Bytes>,
    /// Streams leased on it (open or queued by h2).
    active: AtomicUsize,
    /// Takes no new stream; closes when `active` reaches 0.
    draining: AtomicBool,
    /// Woken when the last stream of a draining connection ends.
    idle: Notify,
    born: Instant,
}

impl std::fmt::Debug for H2Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Conn")
            .field("active", &self.active.load(Ordering::Relaxed))
            .field("draining", &self.draining.load(Ordering::Relaxed))
            .finish()
    }
}

impl H2Conn {
    fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.idle.notify_one();
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// A stream slot on one connection, held from the stream's open until its
/// response body ends (or is dropped).
#[derive(Debug)]
pub(crate) struct Lease {
    conn: Arc<H2Conn>,
}

impl Lease {
    /// A handle to open the stream with.
    fn sender(&self) -> SendRequest<Bytes> {
        self.conn.send.clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let before = self.conn.active.fetch_sub(1, Ordering::AcqRel);
        if before == 1 && self.conn.is_draining() {
            self.conn.idle.notify_one();
        }
    }
}

/// Why a stream could not be opened or answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H2SendError {
    /// The backend did not process the stream (`REFUSED_STREAM`, above a
    /// GOAWAY's last stream id, or the connection was already going away): it may
    /// go again anywhere, with its body if none of it was taken.
    #[error("the backend did not process the stream: {0}")]
    Unprocessed(#[source] h2::Error),
    /// The stream failed after the backend may have processed it.
    #[error(transparent)]
    Failed(#[from] h2::Error),
}

/// Whether `err` says the backend never processed the stream (RFC 9113 §8.7):
/// only the backend's own word (`REFUSED_STREAM`, a GOAWAY) says so; a reset
/// h2 made on the gateway's side is no proof that the backend left it alone.
pub(crate) fn unprocessed(err: &h2::Error) -> bool {
    err.is_remote() && (err.reason() == Some(Reason::REFUSED_STREAM) || err.is_go_away())
}

/// The multiplexed HTTP/2 connections to one backend.
pub(crate) struct H2Pool {
    addr: SocketAddr,
    tls: Option<Arc<UpstreamTls>>,
    spec: H2Spec,
    closed: CancellationToken,
    conns: ArcSwap<Vec<Arc<H2Conn>>>,
    /// Serialises list edits (a new or retired connection: rare).
    edit: Mutex<()>,
    /// One connect at a time: requests that find every connection full wait for
    /// it instead of each opening one.
    opening: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool")
            .field("addr", &self.addr)
            .field("conns", &self.conns.load().len())
            .finish()
    }
}

impl H2Pool {
    /// Connections to `addr` (over `tls`, ALPN h2, when given) with `spec`'s
    /// settings, ended when `closed` is cancelled.
    pub(crate) fn new(
        addr: SocketAddr,
        tls: Option<Arc<UpstreamTls>>,
        spec: H2Spec,
        closed: CancellationToken,
    ) -> Self {
        H2Pool {
            addr,
            tls,
            spec,
            closed,
            conns: ArcSwap::from_pointee(Vec::new()),
            edit: Mutex::new(()),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// The settings these connections were made with.
    pub(crate) fn spec(&self) -> &H2Spec {
        &self.spec
    }

    /// `https` over TLS, else `http` (the `:scheme` of the streams).
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// A slot on an open connection with one free, without waiting.
    fn try_lease(&self) -> Option<Lease> {
        let conns = self.conns.load();
        let now = Instant::now();
        for conn in conns.iter() {
            if conn.is_draining() {
                continue;
            }
            if self
                .spec
                .max_connection_age
                .is_some_and(|age| now.saturating_duration_since(conn.born) >= age)
            {
                conn.drain();
                continue;
            }
            let limit = conn.send.current_max_send_streams();
            let taken = conn
                .active
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                });
            if taken.is_ok() {
                return Some(Lease {
                    conn: Arc::clone(conn),
                });
            }
        }
        None
    }

    /// A stream slot: on an open connection with a free one, else on a new
    /// connection (within `connect_timeout`), else, at `max_connections`, on
    /// the least loaded connection (h2 queues the stream until a slot frees).
    pub(crate) async fn lease(&self, connect_timeout: Duration) -> Result<Lease, ConnectError> {
        if let Some(lease) = self.try_lease() {
            return Ok(lease);
        }
        // Boxed: rare, and the connect and handshake futures are large.
        Box::pin(self.lease_slow(connect_timeout)).await
    }

    async fn lease_slow(&self, connect_timeout: Duration) -> Result<Lease, ConnectError> {
        let deadline = Instant::now() + connect_timeout;
        let _opening = tokio::time::timeout_at(deadline, self.opening.lock())
            .await
            .map_err(|_| ConnectError::TimedOut)?;
        // Another request may have opened one while this one waited.
        if let Some(lease) = self.try_lease() {
            return Ok(lease);
        }
        let open: Vec<Arc<H2Conn>> = self
            .conns
            .load()
            .iter()
            .filter(|c| !c.is_draining())
            .cloned()
            .collect();
        let at_most = usize::try_from(self.spec.max_connections).unwrap_or(usize::MAX);
        if open.len() >= at_most {
            if let Some(least) = open.iter().min_by_key(|c| c.active.load(Ordering::Relaxed)) {
                least.active.fetch_add(1, Ordering::AcqRel);
                return Ok(Lease {
                    conn: Arc::clone(least),
                });
            }
        }
        let conn = self.connect(deadline).await?;
        conn.active.fetch_add(1, Ordering::AcqRel);
        {
            let _edit = self.edit.lock().unwrap_or_else(|e| e.into_inner());
            let mut next: Vec<Arc<H2Conn>> = self
                .conns
                .load()
                .iter()
                .filter(|c| !c.is_draining())
                .cloned()
                .collect();
            next.push(Arc::clone(&conn));
            self.conns.store(Arc::new(next));
        }
        Ok(Lease { conn })
    }

    /// Takes `lease`'s connection out of rotation: it went away (GOAWAY) or
    /// failed. Its streams finish; it closes after the last.
    pub(crate) fn retire(&self, lease: &Lease) {
        lease.conn.drain();
        let _edit = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        let next: Vec<Arc<H2Conn>> = self
            .conns
            .load()
            .iter()
            .filter(|c| !c.is_draining())
            .cloned()
            .collect();
        self.conns.store(Arc::new(next));
    }

    /// Drains every connection (the backend is gone, or its pool's settings changed).
    pub(crate) fn close(&self) {
        let _edit = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        for conn in self.conns.load().iter() {
            conn.drain();
        }
        self.conns.store(Arc::new(Vec::new()));
    }

    /// A new connection: TCP (and TLS with ALPN h2) by `deadline`, then the
    /// HTTP/2 preface; its task drives it, PINGs it and closes it when it drains.
    async fn connect(&self, deadline: Instant) -> Result<Arc<H2Conn>, ConnectError> {
        let tcp = match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(self.addr))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(ConnectError::Io(err)),
            Err(_) => return Err(ConnectError::TimedOut),
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(backend = %self.addr, %err, "set_nodelay failed");
        }
        match &self.tls {
            None => self.handshake(tcp, deadline).await,
            Some(tls) => {
                let stream =
                    match tokio::time::timeout_at(deadline, tls.connect_h2(self.addr, tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => return Err(ConnectError::Tls(err)),
                        Err(_) => return Err(ConnectError::TimedOut),
                    };
                self.handshake(stream, deadline).await
            }
        }
    }

    async fn handshake<I>(&self, io: I, deadline: Instant) -> Result<Arc<H2Conn>, ConnectError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = h2::client::Builder::new()
            .initial_window_size(self.spec.stream_window)
            .initial_connection_window_size(self.spec.connection_window)
            .initial_max_send_streams(INITIAL_MAX_STREAMS)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false)
            .handshake::<_, Bytes>(io);
        let (send, mut connection) = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(err)) => return Err(ConnectError::Io(std::io::Error::other(err))),
            Err(_) => return Err(ConnectError::TimedOut),
        };
        let pings = connection.ping_pong();
        // The connection takes streams once the backend's SETTINGS are in (its
        // stream limit above all): the answer to a first PING comes after them.
        let (settled_tx, settled) = tokio::sync::oneshot::channel::<bool>();
        let conn = Arc::new(H2Conn {
            send,
            active: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            idle: Notify::new(),
            born: Instant::now(),
        });
        let task_conn = Arc::clone(&conn);
        let addr = self.addr;
        let closed = self.closed.clone();
        let spec = self.spec.clone();
        tokio::spawn(async move {
            let keepalive = keepalive(
                pings,
                settled_tx,
                spec.keepalive_interval,
                spec.keepalive_timeout,
            );
            // Ends once the connection drains (GOAWAY, a retire, or its age) and
            // its last stream is over.
            let drained = async {
                let age = async {
                    match spec.max_connection_age {
                        Some(age) => tokio::time::sleep(age).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(age);
                let mut aged = false;
                loop {
                    tokio::select! {
                        () = &mut age, if !aged => {
                            aged = true;
                            task_conn.drain();
                        }
                        () = task_conn.idle.notified() => {}
                    }
                    if task_conn.is_draining() && task_conn.active.load(Ordering::Acquire) == 0 {
                        return;
                    }
                }
            };
            tokio::select! {
                ended = &mut connection => if let Err(err) = ended {
                    tracing::debug!(backend = %addr, %err, "h2 upstream connection ended with an error");
                },
                () = closed.cancelled() => {
                    tracing::debug!(backend = %addr, "h2 upstream connection closed: backend removed");
                }
                () = keepalive => {
                    tracing::debug!(backend = %addr, "h2 upstream connection closed: PING unanswered");
                }
                () = drained => {
                    tracing::debug!(backend = %addr, "h2 upstream connection closed: drained");
                }
            }
            task_conn.drain();
        });
        match tokio::time::timeout_at(deadline, settled).await {
            Ok(Ok(true)) => Ok(conn),
            Ok(_) => {
                conn.drain();
                // The connection's own error says why (it is over: at once).
                let why = tokio::time::timeout_at(deadline, conn.send.clone().ready())
                    .await
                    .ok()
                    .and_then(Result::err);
                Err(before_settings(why))
            }
            Err(_) => {
                conn.drain();
                Err(ConnectError::TimedOut)
            }
        }
    }
}

/// Why a new connection failed before the backend's SETTINGS, which an
/// HTTP/2 server sends first (RFC 9113 §3.4): an answer the gateway could not
/// read as HTTP/2 (an HTTP/1.1 server's `400` reads as an oversized frame), or
/// the connection closed after the preface (hyper's HTTP/1 server does that).
fn before_settings(why: Option<h2::Error>) -> ConnectError {
    match why {
        Some(err) if err.is_library() && err.is_go_away() => {
            ConnectError::NotH2(NotH2::Garbled(err))
        }
        _ => ConnectError::NotH2(NotH2::Closed),
    }
}

/// Sends a first PING and says on `settled` whether its answer came (the
/// backend's SETTINGS are in by then); then ends when a keep-alive PING goes
/// unanswered for `timeout` (or the connection can no longer PING), never
/// without an `interval`.
async fn keepalive(
    pings: Option<h2::PingPong>,
    settled: tokio::sync::oneshot::Sender<bool>,
    interval: Option<Duration>,
    timeout: Duration,
) {
    let Some(mut pings) = pings else {
        let _ = settled.send(false);
        return std::future::pending().await;
    };
    let first = pings.ping(h2::Ping::opaque()).await.is_ok();
    let _ = settled.send(first);
    if !first {
        return std::future::pending().await;
    }
    let Some(interval) = interval else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            // Closed: the connection's own future ends the task.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

/// Opens a stream for `head` on `lease`'s connection; `end` when the request
/// has no body. The error says whether the backend can have seen it.
pub(crate) async fn open(
    lease: &Lease,
    head: http::Request<()>,
    end: bool,
) -> Result<(ResponseFuture, SendStream<Bytes>), H2SendError> {
    let send = lease.sender();
    let mut send = send.ready().await.map_err(H2SendError::Unprocessed)?;
    // A failed open never reached the backend: the connection was going away (its
    // error is the GOAWAY's) or is closed.
    send.send_request(head, end)
        .map_err(H2SendError::Unprocessed)
}

/// The request body going up one stream, by the backend's flow control. Its
/// state is all here, so polling it can stop and resume (the attempt races it
/// against the answer, then hands what is left to a task of its own).
pub(crate) struct Pump {
    body: RequestBody,
    stream: SendStream<Bytes>,
    /// Data waiting for window.
    pending: Option<Bytes>,
    /// A frame was taken from the body: it can no longer be sent again.
    touched: bool,
    done: bool,
}

impl Pump {
    /// Sends `body` on `stream`.
    pub(crate) fn new(body: RequestBody, stream: SendStream<Bytes>) -> Self {
        Pump {
            body,
            stream,
            pending: None,
            touched: false,
            done: false,
        }
    }

    /// Whether the whole body went up.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The body, if none of it was taken (to send again elsewhere).
    pub(crate) fn into_untouched(self) -> Option<RequestBody> {
        (!self.touched).then_some(self.body)
    }

    /// Sends until the body ended (`Ok`) or failed: the body's error (the
    /// client's doing), or the stream's.
    pub(crate) fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PumpError>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(data) = &mut self.pending {
                if data.is_empty() {
                    self.pending = None;
                    continue;
                }
                self.stream.reserve_capacity(data.len());
                let granted = match ready!(self.stream.poll_capacity(cx)) {
                    Some(Ok(n)) => n,
                    Some(Err(err)) => return Poll::Ready(Err(PumpError::Stream(err))),
                    None => {
                        return Poll::Ready(Err(PumpError::Stream(h2::Error::from(
                            Reason::STREAM_CLOSED,
                        ))))
                    }
                };
                if granted == 0 {
                    continue;
                }
                let part = data.split_to(granted.min(data.len()));
                self.stream
                    .send_data(part, false)
                    .map_err(PumpError::Stream)?;
                continue;
            }
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    self.stream
                        .send_data(Bytes::new(), true)
                        .map_err(PumpError::Stream)?;
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
                Some(Err(err)) => {
                    self.stream.send_reset(Reason::CANCEL);
                    self.done = true;
                    return Poll::Ready(Err(PumpError::Body(err)));
                }
                Some(Ok(frame)) => frame,
            };
            self.touched = true;
            match frame.into_data() {
                Ok(data) => self.pending = Some(data),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.stream
                            .send_trailers(trailers)
                            .map_err(PumpError::Stream)?;
                        self.done = true;
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }

    /// Sends the rest on a task of its own (the answer came before the body
    /// ended: streaming calls). A failure resets the stream, so the backend
    /// and the response body both learn it.
    pub(crate) fn spawn_rest(mut self) {
        if self.done {
            return;
        }
        tokio::spawn(async move {
            if let Err(err) = std::future::poll_fn(|cx| self.poll_send(cx)).await {
                tracing::debug!(%err, "h2 request body cut short");
                self.stream.send_reset(Reason::CANCEL);
            }
        });
    }
}

/// Why a request body stopped going up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PumpError {
    /// The client's body failed (too large, malformed, gone, too slow).
    #[error("{0}")]
    Body(BoxError),
    /// The stream failed (reset, connection gone).
    #[error("{0}")]
    Stream(h2::Error),
}

/// A backend's response body on one stream: data, then trailers, handing the
/// window back as it goes; holds the stream's slot until it ends.
pub(crate) struct H2Body {
    recv: RecvStream,
    data_done: bool,
    lease: Option<Lease>,
}

impl std::fmt::Debug for H2Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Body")
            .field("data_done", &self.data_done)
            .finish()
    }
}

impl H2Body {
    /// The body of a response on `lease`'s stream.
    pub(crate) fn new(recv: RecvStream, lease: Lease) -> Self {
        let mut body = H2Body {
            recv,
            data_done: false,
            lease: Some(lease),
        };
        if body.recv.is_end_stream() {
            body.lease = None;
        }
        body
    }

    /// Frees the stream's slot early (the body was abandoned).
    pub(crate) fn discard(&mut self) {
        self.lease = None;
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The client took it: the backend may send as much again.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(err)) => {
                    this.lease = None;
                    return Poll::Ready(Some(Err(err)));
                }
                None => this.data_done = true,
            }
        }
        let trailers: Option<HeaderMap> = match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => trailers,
            Err(err) => {
                this.lease = None;
                return Poll::Ready(Some(Err(err)));
            }
        };
        this.lease = None;
        Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The head of an HTTP/2 request to a backend: the absolute target (`:scheme`,
/// `:authority` from Host, else the backend's address), the fields without Host
/// and any transfer coding (HTTP/2 frames bodies itself).
pub(crate) fn head(
    parts: &http::request::Parts,
    scheme: &'static str,
    addr: SocketAddr,
) -> Request<()> {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let from_host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    let build = |authority: http::uri::Authority| {
        Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path.clone())
            .build()
    };
    let uri = from_host
        .and_then(|a| build(a).ok())
        .or_else(|| {
            http::uri::Authority::try_from(addr.to_string())
                .ok()
                .and_then(|a| build(a).ok())
        })
        .unwrap_or_else(|| Uri::from(path.clone()));
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = uri;
    *head.version_mut() = Version::HTTP_2;
    let mut fields = parts.headers.clone();
    fields.remove(header::HOST);
    fields.remove(header::TRANSFER_ENCODING);
    *head.headers_mut() = fields;
    head
}
