//! A bounded GET+POST load loop through the gateway, recording every response.
//!
//! `WORKERS` tasks each keep one HTTP/1.1 keep-alive connection to the gateway
//! (a new one after any error) and alternate `GET /load` and `POST /load` with a
//! small body. Every answer is recorded with when it was sent and answered,
//! which replica (`x-agent`, `x-agent-version`) served it, and whether it failed
//! (transport error, timeout, or a status that is not 2xx). Tests cut the records
//! into phases by time. The loop ends when stopped, after `MAX_RUN`, or after
//! `MAX_RECORDS` answers, whichever comes first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Concurrent request loops.
const WORKERS: usize = 4;
/// Hard bound on one load run.
const MAX_RUN: Duration = Duration::from_secs(180);
/// Hard bound on the answers kept.
const MAX_RECORDS: usize = 400_000;
/// Pause of a worker after a failed request.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);
/// Bound on one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One answer (or failure).
#[derive(Clone, Debug)]
pub struct Record {
    pub method: Method,
    pub sent: Instant,
    pub done: Instant,
    /// 2xx from a replica.
    pub ok: bool,
    /// `x-agent` of the replica, "" for gateway errors and transport failures.
    pub agent: String,
    /// `x-agent-version`.
    pub version: String,
    /// Status and `sluicegate-error`, or the transport error, when not ok.
    pub error: String,
}

/// A running load loop.
pub struct Load {
    /// The same moment on the monotonic and the wall clock (to compare answers
    /// with Docker's timestamps).
    origin: (Instant, SystemTime),
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    workers: JoinSet<()>,
}

impl Load {
    /// Starts the workers against `gateway`.
    pub fn start(gateway: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let mut workers = JoinSet::new();
        let until = Instant::now() + MAX_RUN;
        for w in 0..WORKERS {
            let (stop, records) = (Arc::clone(&stop), Arc::clone(&records));
            workers.spawn(worker(gateway, w, until, stop, records));
        }
        Load {
            origin: (Instant::now(), SystemTime::now()),
            stop,
            records,
            workers,
        }
    }

    /// `t` on the wall clock.
    pub fn wall(&self, t: Instant) -> SystemTime {
        let (mono, wall) = self.origin;
        if t >= mono {
            wall + (t - mono)
        } else {
            wall - (mono - t)
        }
    }

    /// A copy of every record so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().expect("records").clone()
    }

    /// Records sent at or after `from` (and answered by now).
    pub fn since(&self, from: Instant) -> Vec<Record> {
        let all = self.records.lock().expect("records");
        all.iter().filter(|r| r.sent >= from).cloned().collect()
    }

    /// Waits (at most `limit`) until `n` answers were sent at or after `from`.
    pub async fn wait_answers(&self, from: Instant, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let have = self
                .records
                .lock()
                .expect("records")
                .iter()
                .filter(|r| r.sent >= from)
                .count();
            if have >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {have} of {n} answers within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the workers (each finishes its current request) and returns every record.
    pub async fn stop(mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        let all = tokio::time::timeout(REQUEST_TIMEOUT * 2, async {
            while let Some(joined) = self.workers.join_next().await {
                joined.expect("load worker");
            }
        })
        .await;
        assert!(all.is_ok(), "load workers did not stop");
        self.records()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Failed GETs and POSTs in `records`.
pub fn failures(records: &[Record]) -> (usize, usize) {
    let failed = |m: Method| records.iter().filter(|r| !r.ok && r.method == m).count();
    (failed(Method::GET), failed(Method::POST))
}

/// Up to `n` failures, described.
pub fn describe_failures(records: &[Record], n: usize) -> Vec<String> {
    records
        .iter()
        .filter(|r| !r.ok)
        .take(n)
        .map(|r| format!("{} {}", r.method, r.error))
        .collect()
}

/// Answers per replica name.
pub fn by_agent(records: &[Record]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r.ok) {
        *out.entry(r.agent.clone()).or_insert(0) += 1;
    }
    out
}

/// When each replica first answered.
pub fn first_answer(records: &[Record]) -> BTreeMap<String, Instant> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r.ok) {
        out.entry(r.agent.clone())
            .and_modify(|t: &mut Instant| *t = (*t).min(r.done))
            .or_insert(r.done);
    }
    out
}

async fn worker(
    gateway: SocketAddr,
    w: usize,
    until: Instant,
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
) {
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        i += 1;
        let method = if i.is_multiple_of(2) {
            Method::POST
        } else {
            Method::GET
        };
        let sent = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, one(gateway, &mut conn, &method, w, i))
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
        let done = Instant::now();
        let record = match result {
            Ok((status, agent, version, error)) => Record {
                method,
                sent,
                done,
                ok: status.is_success() && !agent.is_empty(),
                agent,
                version,
                error: format!("{status} {error}"),
            },
            Err(error) => {
                conn = None;
                Record {
                    method,
                    sent,
                    done,
                    ok: false,
                    agent: String::new(),
                    version: String::new(),
                    error,
                }
            }
        };
        let failed = !record.ok;
        {
            let mut all = records.lock().expect("records");
            if all.len() >= MAX_RECORDS {
                return;
            }
            all.push(record);
        }
        if failed {
            // Expected failures (no backend yet) must not spin the CPU the
            // containers and the gateway need.
            tokio::time::sleep(FAILURE_PAUSE).await;
        }
    }
}

/// One request on the worker's connection (opened if needed).
async fn one(
    gateway: SocketAddr,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    method: &Method,
    w: usize,
    i: u64,
) -> Result<(http::StatusCode, String, String, String), String> {
    let open = conn.as_ref().is_some_and(|c| !c.is_closed());
    if !open {
        let stream = TcpStream::connect(gateway)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(driver);
        *conn = Some(sender);
    }
    let sender = conn.as_mut().ok_or("no connection")?;
    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let body = if *method == Method::POST {
        Bytes::from(format!("worker {w} request {i}"))
    } else {
        Bytes::new()
    };
    let req = Request::builder()
        .method(method.clone())
        .uri("/load")
        .header("host", "load.test")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (status, agent, version, error) = (
        resp.status(),
        header("x-agent"),
        header("x-agent-version"),
        header("sluicegate-error"),
    );
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok((status, agent, version, error))
}
