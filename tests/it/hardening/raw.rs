//! Raw-socket tools for the hardening tests: send exact bytes to the gateway and
//! read its answer, fake backends that misbehave in one precise way, and a
//! well-behaved bystander client that must keep being served during an attack.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::{get, WAIT};

/// What the gateway answered on a raw connection.
#[derive(Debug)]
pub struct RawReply {
    /// Status code of the first response, 0 when none came.
    pub status: u16,
    /// Everything read until the connection closed or the wait ran out.
    pub text: String,
    /// Whether the gateway closed the connection (EOF) within the wait.
    pub closed: bool,
}

impl RawReply {
    /// Value of header `name` in the first response head, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Writes `bytes` on a new connection and reads until the peer closes or `wait`
/// passes (a keep-alive answer is complete by then).
pub async fn exchange_for(addr: SocketAddr, bytes: &[u8], wait: Duration) -> RawReply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The peer may close before everything is written (it refused early).
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let closed = read_until_close(&mut s, &mut buf, wait).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = status_of(&text);
    RawReply {
        status,
        text,
        closed,
    }
}

/// The status code of an `HTTP/1.x` status line at the start of `text`, else 0.
fn status_of(text: &str) -> u16 {
    ["HTTP/1.1 ", "HTTP/1.0 "]
        .iter()
        .find_map(|v| text.strip_prefix(v))
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Writes `bytes` and returns as soon as a status line arrived or the peer closed
/// (`closed` is then only true for a close without an answer).
pub async fn first_answer(addr: SocketAddr, bytes: &[u8], wait: Duration) -> RawReply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        if buf.windows(2).any(|w| w == b"\r\n") {
            break false;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = status_of(&text);
    RawReply {
        status,
        text,
        closed,
    }
}

/// [`exchange_for`] with a one-second wait.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawReply {
    exchange_for(addr, bytes, Duration::from_secs(1)).await
}

/// Reads into `buf` until EOF (true) or until `wait` passes (false). A reset counts
/// as closed.
pub async fn read_until_close(s: &mut TcpStream, buf: &mut Vec<u8>, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A fake backend: records every request head it reads and answers with `answer`.
pub struct FakeBackend {
    pub addr: SocketAddr,
    /// Raw bytes received per connection, in accept order.
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Connections that ended so far (the gateway closed them, or we did).
    pub closed: watch::Sender<usize>,
    task: JoinHandle<()>,
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a [`FakeBackend`] answers once it has read a request head.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// These exact bytes, then keep the connection open until the gateway closes it.
    Bytes(&'static [u8]),
    /// These exact bytes, then close the connection.
    BytesThenClose(&'static [u8]),
    /// Nothing at all: hold the connection open until the gateway closes it.
    Silence,
    /// A response head of `n` header fields of 100 bytes each.
    HugeHead(usize),
}

impl FakeBackend {
    pub async fn start(answer: Answer) -> FakeBackend {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = watch::channel(0usize).0;
        let (rec, acc, clo) = (received.clone(), accepted.clone(), closed.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let slot = {
                    let mut all = rec.lock().expect("lock");
                    all.push(Vec::new());
                    all.len() - 1
                };
                tokio::spawn(serve_fake(s, answer, rec.clone(), slot, clo.clone()));
            }
        });
        FakeBackend {
            addr,
            received,
            accepted,
            closed,
            task,
        }
    }

    /// Waits (bounded) until `n` connections have ended.
    pub async fn wait_closed(&self, n: usize) {
        let mut rx = self.closed.subscribe();
        let waited = tokio::time::timeout(WAIT, rx.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "{} of {n} backend connections closed",
            *self.closed.borrow()
        );
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every byte received on all connections, concatenated.
    pub fn all_received(&self) -> String {
        let all = self.received.lock().expect("lock");
        all.iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }
}

async fn serve_fake(
    mut s: TcpStream,
    answer: Answer,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    slot: usize,
    closed: watch::Sender<usize>,
) {
    let mut chunk = [0u8; 16 * 1024];
    let mut answered = false;
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let complete = {
            let mut all = received.lock().expect("lock");
            all[slot].extend_from_slice(&chunk[..n]);
            request_complete(&all[slot])
        };
        if complete && !answered {
            answered = true;
            let written = match answer {
                Answer::Bytes(bytes) => s.write_all(bytes).await,
                Answer::BytesThenClose(bytes) => {
                    // Written, then dropped: the gateway sees EOF right after.
                    let _ = s.write_all(bytes).await;
                    break;
                }
                Answer::Silence => Ok(()),
                Answer::HugeHead(n) => {
                    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
                    for i in 0..n {
                        let field = format!("x-filler-{i:06}: {}\r\n", "a".repeat(80));
                        head.extend_from_slice(field.as_bytes());
                    }
                    head.extend_from_slice(b"content-length: 0\r\n\r\n");
                    s.write_all(&head).await
                }
            };
            if written.is_err() {
                break;
            }
        }
    }
    drop(s);
    closed.send_modify(|n| *n += 1);
}

/// Whether `buf` holds one whole request as the gateway frames it (a length, or
/// chunked ending in the last chunk).
fn request_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= len
}

/// A client sending GETs through the gateway in a loop until stopped: the
/// "everyone else" that an attack must not disturb.
pub struct Bystander {
    stop: watch::Sender<bool>,
    task: JoinHandle<(usize, Vec<String>)>,
}

impl Bystander {
    pub fn start(gateway: SocketAddr) -> Bystander {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut ok, mut failures) = (0usize, Vec::new());
            // Bounded: at most 100 000 requests, and the caller stops it within WAIT.
            for _ in 0..100_000 {
                if *stopped.borrow() {
                    break;
                }
                let r = get(gateway, "/bystander", &[]).await;
                if r.status == 200 {
                    ok += 1;
                } else {
                    failures.push(format!("{} {}", r.status, r.error()));
                }
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
            (ok, failures)
        });
        Bystander { stop, task }
    }

    /// Stops the loop and asserts every request it sent was served.
    pub async fn assert_served(self) {
        let _ = self.stop.send(true);
        let (ok, failures) = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("bystander stops")
            .expect("bystander task");
        assert!(failures.is_empty(), "bystander saw failures: {failures:?}");
        assert!(ok > 0, "bystander was never served");
    }
}
