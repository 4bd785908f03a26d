//! Traffic from the host to the gateway's published port: the integration tests'
//! bounded GET+POST loop (`tests/it/support/load.rs`), plus one SSE client that keeps
//! one stream open at a time, each a bounded number of events, and records whether
//! every event arrived. Helpers read the records by node and version.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

// Shared with the integration tests, which use other parts of it.
#[path = "../it/support/load.rs"]
#[allow(dead_code)]
pub mod load;

pub use load::{describe_failures, failures, Load, Record};

/// One replica's clients: the bounded GET+POST loop and one SSE client.
pub struct Clients {
    pub load: Load,
    sse: Sse,
}

impl Clients {
    /// Starts both against the gateway's published port `gateway`, and waits
    /// (bounded) until the loop has 50 answers.
    pub async fn start(gateway: SocketAddr) -> Clients {
        let clients = Clients {
            load: Load::start(gateway),
            sse: Sse::start(gateway),
        };
        clients
            .load
            .wait_answers(Instant::now(), 50, Duration::from_secs(30))
            .await;
        clients
    }

    /// Stops both: the loop's records and the SSE streams.
    pub async fn stop(self) -> (Vec<Record>, Vec<Stream>) {
        (self.load.stop().await, self.sse.stop().await)
    }
}

/// What the clients of several replicas sent and how much of it failed.
#[derive(Debug, Default)]
pub struct Tally {
    /// GET and POST requests.
    pub requests: usize,
    /// SSE streams (each a bounded number of events).
    pub streams: usize,
    /// Per replica with any failure, what failed.
    pub failed: Vec<String>,
}

impl Tally {
    /// Adds replica `n`'s records and streams.
    pub fn add(&mut self, n: usize, records: &[Record], streams: &[Stream]) {
        self.requests += records.len();
        self.streams += streams.len();
        let (g, p) = failures(records);
        let cut: Vec<&Stream> = streams.iter().filter(|s| !s.ok).collect();
        if g + p + cut.len() > 0 {
            self.failed.push(format!(
                "replica {n}: {:?}; streams: {:?}",
                describe_failures(records, 5),
                cut.iter().take(5).map(|s| &s.error).collect::<Vec<_>>()
            ));
        }
    }

    /// Stops the clients of every replica (replica `i + 1` at index `i`; `None`:
    /// stopped before, tallied by the caller) and adds what they sent.
    pub async fn stop_all(&mut self, clients: Vec<Option<Clients>>) {
        for (i, c) in clients.into_iter().enumerate() {
            if let Some(c) = c {
                let (records, streams) = c.stop().await;
                self.add(i + 1, &records, &streams);
            }
        }
    }
}

/// Events per stream and the pause between them: a stream lasts about half a second.
const SSE_EVENTS: u64 = 10;
const SSE_INTERVAL_MS: u64 = 50;
/// Bound on the SSE client's run and on one stream.
const SSE_MAX_RUN: Duration = Duration::from_secs(180);
const SSE_STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// One SSE stream.
#[derive(Clone, Debug)]
pub struct Stream {
    pub sent: Instant,
    pub ok: bool,
    pub agent: String,
    pub error: String,
}

/// The SSE client: one stream at a time until stopped.
pub struct Sse {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Stream>>,
}

impl Sse {
    pub fn start(gateway: SocketAddr) -> Sse {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(sse_loop(gateway, Arc::clone(&stop)));
        Sse { stop, task }
    }

    /// Stops after the current stream; every stream's record.
    pub async fn stop(self) -> Vec<Stream> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(SSE_STREAM_TIMEOUT * 2, self.task)
            .await
            .expect("SSE client stops")
            .expect("SSE client")
    }
}

async fn sse_loop(gateway: SocketAddr, stop: Arc<AtomicBool>) -> Vec<Stream> {
    let until = Instant::now() + SSE_MAX_RUN;
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        let sent = Instant::now();
        let result = tokio::time::timeout(SSE_STREAM_TIMEOUT, one_stream(gateway))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        let failed = result.is_err();
        out.push(match result {
            Ok(agent) => Stream {
                sent,
                ok: true,
                agent,
                error: String::new(),
            },
            Err(error) => Stream {
                sent,
                ok: false,
                agent: String::new(),
                error,
            },
        });
        if failed {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    out
}

/// One stream: 200, `text/event-stream`, every event; the agent that sent it.
async fn one_stream(gateway: SocketAddr) -> Result<String, String> {
    let stream = TcpStream::connect(gateway)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(format!(
        "/sse?events={SSE_EVENTS}&interval_ms={SSE_INTERVAL_MS}"
    ))
    .header("host", "load.test")
    .body(Empty::<Bytes>::new())
    .map_err(|e| e.to_string())?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let agent = res
        .headers()
        .get("x-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !res.status().is_success() {
        return Err(format!("status {}", res.status()));
    }
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let events = String::from_utf8_lossy(&body).matches("data: ").count();
    if events as u64 == SSE_EVENTS {
        Ok(agent)
    } else {
        Err(format!("{events} of {SSE_EVENTS} events"))
    }
}

/// The node that served a record: agents call themselves `<hostname>/<task id>`.
pub fn node_of(agent: &str) -> &str {
    agent.split('/').next().unwrap_or("")
}

/// The task that served a record.
pub fn task_of(agent: &str) -> &str {
    agent.split('/').nth(1).unwrap_or("")
}

/// Up to `n` failed streams, described (when they started, relative to `from`).
pub fn describe_streams(streams: &[Stream], from: Instant, n: usize) -> Vec<String> {
    streams
        .iter()
        .filter(|s| !s.ok)
        .take(n)
        .map(|s| {
            format!(
                "stream at +{:.2?} from {:?}: {}",
                s.sent.saturating_duration_since(from),
                s.agent,
                s.error
            )
        })
        .collect()
}

/// `(GETs, POSTs)` in `records`.
pub fn counts(records: &[Record]) -> (usize, usize) {
    let gets = records
        .iter()
        .filter(|r| r.method == http::Method::GET)
        .count();
    (gets, records.len() - gets)
}
