//! Upstream keep-alive on the gateway-driven connections (`http1::client`): bodiless
//! requests share one connection, a connection the backend closed while idle costs
//! no failed request, and every way a backend frames a body reaches the client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::support::{get, TestGateway, WAIT};

/// A keep-alive backend: answers every request head on a connection with `answer`,
/// counts connections, and closes all of them when `close_all` is notified.
struct KeepAliveBackend {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    close_all: Arc<Notify>,
    closed: watch::Receiver<usize>,
    answered: watch::Receiver<usize>,
}

impl KeepAliveBackend {
    async fn start(answer: &'static [u8]) -> Self {
        Self::start_with_limit(answer, usize::MAX).await
    }

    /// Like [`start`](Self::start), but a connection that already answered `limit`
    /// requests reads the next one and closes without a word: the race a keep-alive
    /// client loses when the backend's idle timeout fires as its request goes out.
    async fn start_with_limit(answer: &'static [u8], limit: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let close_all = Arc::new(Notify::new());
        let (closed_tx, closed) = watch::channel(0usize);
        let (answered_tx, answered) = watch::channel(0usize);
        let (acc, close) = (accepted.clone(), close_all.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let (close, closed_tx) = (close.clone(), closed_tx.clone());
                let answered_tx = answered_tx.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = serve(stream, answer, limit, answered_tx) => {}
                        () = close.notified() => {}
                    }
                    closed_tx.send_modify(|n| *n += 1);
                });
            }
        });
        KeepAliveBackend {
            addr,
            accepted,
            close_all,
            closed,
            answered,
        }
    }

    /// Waits (bounded) until `n` answers were written.
    async fn wait_answered(&mut self, n: usize) {
        let waited = tokio::time::timeout(WAIT, self.answered.wait_for(|c| *c >= n)).await;
        assert!(matches!(waited, Ok(Ok(_))), "backend did not answer");
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every open connection (as a backend's idle timeout does) and waits
    /// until `n` have ended.
    async fn close_connections(&mut self, n: usize) {
        self.close_all.notify_waiters();
        let waited = tokio::time::timeout(WAIT, self.closed.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "backend connections not closed"
        );
    }
}

async fn serve(
    mut stream: TcpStream,
    answer: &'static [u8],
    limit: usize,
    answered: watch::Sender<usize>,
) {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut count = 0;
    loop {
        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            seen.drain(..end + 4);
            if count == limit {
                return;
            }
            count += 1;
            if stream.write_all(answer).await.is_err() {
                return;
            }
            answered.send_modify(|n| *n += 1);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The gateway's config before `backend`; these tests are of the gateway's own
/// client, so they keep it on whatever the suite's switch says.
fn config(backend: &KeepAliveBackend) -> String {
    format!(
        r#"http1_fast_path = true
[[pools]]
name = "ka"
backends = [{{ addr = "{}" }}]
[[routes]]
name = "all"
split = [{{ pool = "ka", weight = 1 }}]
"#,
        backend.addr
    )
}

#[tokio::test]
async fn bodiless_requests_share_one_connection_and_survive_its_idle_close() {
    let mut backend =
        KeepAliveBackend::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let gw = TestGateway::start(&config(&backend)).await;
    for i in 0..20 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(
            (r.status.as_u16(), &r.body[..]),
            (200, &b"ok"[..]),
            "request {i}"
        );
    }
    assert_eq!(
        backend.accepted(),
        1,
        "one pooled connection carries them all"
    );

    // The backend drops its idle connection; the next request must not fail.
    backend.close_connections(1).await;
    for i in 0..3 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status.as_u16(), 200, "request {i} after the idle close");
    }
    assert_eq!(backend.accepted(), 2);
}

#[tokio::test]
async fn chunked_answers_are_decoded_and_the_connection_reused() {
    let backend = KeepAliveBackend::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\ntrailer-field: t\r\n\r\n",
    )
    .await;
    let gw = TestGateway::start(&config(&backend)).await;
    for i in 0..5 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status.as_u16(), 200, "request {i}");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "hello, world",
            "request {i}"
        );
    }
    assert_eq!(backend.accepted(), 1);
}

#[tokio::test]
async fn an_answer_asking_to_close_is_not_reused() {
    let backend = KeepAliveBackend::start(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    let gw = TestGateway::start(&config(&backend)).await;
    for i in 0..3 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(
            (r.status.as_u16(), &r.body[..]),
            (200, &b"ok"[..]),
            "request {i}"
        );
    }
    assert_eq!(backend.accepted(), 3);
}

#[tokio::test]
async fn a_body_ended_by_close_reaches_the_client_whole() {
    // No length, no chunking: the body is everything until the backend closes.
    let backend = KeepAliveBackend::start(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
    let gw = TestGateway::start(&config(&backend)).await;
    let r = tokio::spawn(async move {
        let r = get(gw.addr, "/", &[]).await;
        (r, gw)
    });
    // The backend keeps the connection open until told: once it answered, close it.
    let mut backend = backend;
    backend.wait_answered(1).await;
    backend.close_connections(1).await;
    let (r, _gw) = tokio::time::timeout(WAIT, r)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(
        (r.status.as_u16(), &r.body[..]),
        (200, &b"until the end"[..])
    );
}

#[tokio::test]
async fn a_pooled_connection_closed_as_the_request_went_out_costs_no_failure() {
    // Each connection answers once and closes on its second request: every reuse
    // loses the race. An idempotent request goes again on a fresh connection to the
    // same backend (the pool's only one), so the client sees no failure.
    let backend =
        KeepAliveBackend::start_with_limit(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 1)
            .await;
    let gw = TestGateway::start(&config(&backend)).await;
    for i in 0..5 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(
            (r.status.as_u16(), &r.body[..]),
            (200, &b"ok"[..]),
            "request {i}"
        );
    }
    // The first request opened one; each later one found the pooled one closed on
    // it (or already closed) and opened another.
    assert!(
        backend.accepted() >= 5,
        "{} connections",
        backend.accepted()
    );
}

#[tokio::test]
async fn with_the_fast_path_off_hypers_client_carries_the_request() {
    // The gateway's own client writes the standard reason phrase; hyper's passes
    // the backend's on: which one answered shows which path the request took.
    let backend =
        KeepAliveBackend::start(b"HTTP/1.1 200 Fine\r\ncontent-length: 2\r\n\r\nok").await;
    let pools = config(&backend);
    for (switch, status_line) in [("true", "HTTP/1.1 200 OK"), ("false", "HTTP/1.1 200 Fine")] {
        let toml = pools.replacen(
            "http1_fast_path = true",
            &format!("http1_fast_path = {switch}"),
            1,
        );
        let gw = TestGateway::start(&toml).await;
        let head = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        let r = crate::hardening::raw::first_answer(gw.addr, head, WAIT).await;
        assert!(
            r.text.starts_with(status_line),
            "http1_fast_path = {switch}: {:?}",
            r.text
        );
    }
}
