//! The hand-written HTTP/2 backend of `bad_upstreams`: frames written by
//! hand over a plain `TcpListener` (SETTINGS, PING answers, a literal-only
//! HPACK encoder), so it can break the rules on purpose. It answers a request
//! by its framing, not by its path (it does not decode HPACK): a bodiless
//! request (END_STREAM on its HEADERS) gets a slow, well-formed answer; a
//! request with a body gets the backend's misdeed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::grpc_frame;
use crate::support::WAIT;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const INTERNAL_ERROR: u32 = 0x2;
const NO_ERROR: u32 = 0x0;
/// The most the continuation flood writes before the test calls it unbounded.
const FLOOD_MAX: usize = 64 << 20;
/// The gateway must stop taking the flood well before this.
pub(super) const FLOOD_BOUND: usize = 16 << 20;

/// What the backend does to a request with a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Misdeed {
    /// Nothing: every request gets the slow, well-formed answer.
    None,
    /// A response head whose HPACK block is garbage (a connection error).
    BadHpack,
    /// RST_STREAM(INTERNAL_ERROR) before any head.
    ResetBeforeHead,
    /// A head and one message, then RST_STREAM(INTERNAL_ERROR).
    ResetMidResponse,
    /// A head with a 100 KiB field, over the gateway's 64 KiB header-list limit.
    HugeHead,
    /// HEADERS without END_HEADERS, then CONTINUATION frames without end.
    ContinuationFlood,
    /// A head and one message, GOAWAY(last stream = this one, NO_ERROR), then
    /// the rest of the answer: the stream must complete.
    GoawayGraceful,
    /// A head and one message, then GOAWAY(INTERNAL_ERROR) and the connection closed.
    GoawayAbrupt,
}

/// The hand-written HTTP/2 backend and what it saw.
pub(super) struct RawH2 {
    pub(super) addr: SocketAddr,
    pub(super) connections: Arc<AtomicUsize>,
    /// Requests with a body (those the misdeed was done to).
    pub(super) misdeeds: Arc<AtomicUsize>,
    /// Bytes of CONTINUATION flood the gateway took.
    pub(super) flood_written: Arc<AtomicUsize>,
    /// Whether the gateway cut the flood (its socket closed under the writer).
    pub(super) flood_cut: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), `first` holding
/// the bits above the prefix.
fn hpack_int(out: &mut Vec<u8>, n: u32, first: u8, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | u8::try_from(value).expect("below the prefix"));
        return;
    }
    out.push(first | u8::try_from(max).expect("prefix"));
    let mut rest = value - max;
    while rest >= 128 {
        out.push(u8::try_from(rest % 128).expect("7 bits") | 0x80);
        rest /= 128;
    }
    out.push(u8::try_from(rest).expect("7 bits"));
}

/// A literal field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
fn literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 7, 0, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 7, 0, value.len());
    out.extend_from_slice(value);
}

/// `:status: 200` (static index 8) and `content-type: application/grpc`.
fn ok_head() -> Vec<u8> {
    let mut block = vec![0x88];
    literal(&mut block, "content-type", b"application/grpc");
    block
}

fn trailers_ok() -> Vec<u8> {
    let mut block = Vec::new();
    literal(&mut block, "grpc-status", b"0");
    block
}

type Writer = Arc<Mutex<OwnedWriteHalf>>;

async fn write(w: &Writer, bytes: &[u8]) -> bool {
    w.lock().await.write_all(bytes).await.is_ok()
}

impl RawH2 {
    pub(super) async fn start(misdeed: Misdeed) -> RawH2 {
        RawH2::start_with(misdeed, false).await
    }

    /// `every_stream`: the misdeed is done to bodiless requests too.
    pub(super) async fn start_with(misdeed: Misdeed, every_stream: bool) -> RawH2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let raw = RawH2 {
            addr: listener.local_addr().expect("addr"),
            connections: Arc::default(),
            misdeeds: Arc::default(),
            flood_written: Arc::default(),
            flood_cut: Arc::default(),
            stop: CancellationToken::new(),
        };
        let shared = raw.shared();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    () = shared.stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(_) => return,
                    },
                };
                shared.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_conn(tcp, misdeed, every_stream, shared.clone()));
            }
        });
        raw
    }

    fn shared(&self) -> Shared {
        Shared {
            misdeeds: Arc::clone(&self.misdeeds),
            connections: Arc::clone(&self.connections),
            flood_written: Arc::clone(&self.flood_written),
            flood_cut: Arc::clone(&self.flood_cut),
            stop: self.stop.clone(),
        }
    }
}

#[derive(Clone)]
struct Shared {
    pub(super) misdeeds: Arc<AtomicUsize>,
    pub(super) connections: Arc<AtomicUsize>,
    pub(super) flood_written: Arc<AtomicUsize>,
    pub(super) flood_cut: Arc<AtomicBool>,
    stop: CancellationToken,
}

/// One connection: SETTINGS, PING answers, and an answer per request. A
/// misdeed that closes the connection cancels `conn_stop`.
async fn serve_conn(tcp: TcpStream, misdeed: Misdeed, every_stream: bool, shared: Shared) {
    let (mut rd, wr) = tcp.into_split();
    let wr: Writer = Arc::new(Mutex::new(wr));
    let conn_stop = shared.stop.child_token();
    if !write(&wr, &frame(SETTINGS, 0, 0, &[])).await {
        return;
    }
    let read = async {
        let mut preface = [0u8; 24];
        rd.read_exact(&mut preface).await.ok()?;
        loop {
            let mut head = [0u8; 9];
            rd.read_exact(&mut head).await.ok()?;
            let len = usize::try_from(u32::from_be_bytes([0, head[0], head[1], head[2]]))
                .expect("24 bits");
            if len > 1 << 20 {
                return None::<()>;
            }
            let mut payload = vec![0u8; len];
            rd.read_exact(&mut payload).await.ok()?;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    write(&wr, &frame(SETTINGS, ACK, 0, &[])).await;
                }
                PING if flags & ACK == 0 => {
                    write(&wr, &frame(PING, ACK, 0, &payload)).await;
                }
                HEADERS => {
                    let wr = Arc::clone(&wr);
                    let bodiless = flags & END_STREAM != 0 && !every_stream;
                    if bodiless || misdeed == Misdeed::None {
                        tokio::spawn(answer_slowly(wr, stream));
                    } else {
                        shared.misdeeds.fetch_add(1, Ordering::Relaxed);
                        let (shared, stop) = (shared.clone(), conn_stop.clone());
                        tokio::spawn(misbehave(wr, stream, misdeed, shared, stop));
                    }
                }
                GOAWAY => return None,
                _ => {}
            }
        }
    };
    tokio::select! {
        _ = read => {}
        () = conn_stop.cancelled() => {}
    }
    // Both halves go: the connection closes.
}

/// The well-formed answer: a head, three messages 100 ms apart, `grpc-status: 0`.
async fn answer_slowly(wr: Writer, stream: u32) {
    if !write(&wr, &frame(HEADERS, END_HEADERS, stream, &ok_head())).await {
        return;
    }
    for i in 0..3u8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let msg = grpc_frame(&[b'o', b'k', b'0' + i]);
        if !write(&wr, &frame(DATA, 0, stream, &msg)).await {
            return;
        }
    }
    write(
        &wr,
        &frame(HEADERS, END_HEADERS | END_STREAM, stream, &trailers_ok()),
    )
    .await;
}

async fn misbehave(
    wr: Writer,
    stream: u32,
    misdeed: Misdeed,
    shared: Shared,
    stop: CancellationToken,
) {
    let head = frame(HEADERS, END_HEADERS, stream, &ok_head());
    let first = frame(DATA, 0, stream, &grpc_frame(b"first"));
    match misdeed {
        Misdeed::None => {}
        Misdeed::BadHpack => {
            // An indexed field far beyond any table: COMPRESSION_ERROR.
            let block = [0xff, 0xff, 0xff, 0xff, 0x0f];
            write(&wr, &frame(HEADERS, END_HEADERS, stream, &block)).await;
        }
        Misdeed::ResetBeforeHead => {
            write(
                &wr,
                &frame(RST_STREAM, 0, stream, &INTERNAL_ERROR.to_be_bytes()),
            )
            .await;
        }
        Misdeed::ResetMidResponse => {
            write(&wr, &head).await;
            write(&wr, &first).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            write(
                &wr,
                &frame(RST_STREAM, 0, stream, &INTERNAL_ERROR.to_be_bytes()),
            )
            .await;
        }
        Misdeed::HugeHead => {
            let mut block = vec![0x88];
            literal(&mut block, "x-big", &vec![b'b'; 100 << 10]);
            let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
            let mut bytes = Vec::new();
            for (i, chunk) in chunks.iter().enumerate() {
                let kind = if i == 0 { HEADERS } else { CONTINUATION };
                let flags = if i + 1 == chunks.len() {
                    END_HEADERS
                } else {
                    0
                };
                bytes.extend(frame(kind, flags, stream, chunk));
            }
            write(&wr, &bytes).await;
        }
        Misdeed::ContinuationFlood => {
            let mut piece = Vec::new();
            while piece.len() < 16_000 {
                literal(&mut piece, "x-flood", &[b'f'; 100]);
            }
            let mut w = wr.lock().await;
            let mut written = 0usize;
            let started = tokio::time::Instant::now();
            let mut kind = HEADERS;
            while written < FLOOD_MAX && started.elapsed() < WAIT {
                let bytes = frame(kind, 0, stream, &piece);
                kind = CONTINUATION;
                match tokio::time::timeout(Duration::from_secs(2), w.write_all(&bytes)).await {
                    Ok(Ok(())) => written += bytes.len(),
                    Ok(Err(_)) => {
                        shared.flood_cut.store(true, Ordering::Relaxed);
                        break;
                    }
                    // The gateway stopped reading without closing: bounded too,
                    // but not cut.
                    Err(_) => break,
                }
            }
            shared.flood_written.store(written, Ordering::Relaxed);
        }
        Misdeed::GoawayGraceful => {
            write(&wr, &head).await;
            write(&wr, &first).await;
            let mut goaway = stream.to_be_bytes().to_vec();
            goaway.extend_from_slice(&NO_ERROR.to_be_bytes());
            write(&wr, &frame(GOAWAY, 0, 0, &goaway)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            write(&wr, &frame(DATA, 0, stream, &grpc_frame(b"second"))).await;
            write(
                &wr,
                &frame(HEADERS, END_HEADERS | END_STREAM, stream, &trailers_ok()),
            )
            .await;
        }
        Misdeed::GoawayAbrupt => {
            write(&wr, &head).await;
            write(&wr, &first).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut goaway = stream.to_be_bytes().to_vec();
            goaway.extend_from_slice(&INTERNAL_ERROR.to_be_bytes());
            write(&wr, &frame(GOAWAY, 0, 0, &goaway)).await;
            let _ = wr.lock().await.shutdown().await;
            stop.cancel();
        }
    }
}
