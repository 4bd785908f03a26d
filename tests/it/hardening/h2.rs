//! HTTP/2 abuse, spoken with the `h2` codec directly so the client can break the
//! rules a polite client follows: more streams than allowed, rapid reset.

use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use http::Request;
use tokio::net::TcpStream;

use super::raw::Bystander;
use crate::support::{agents, backends, TestGateway, WAIT};

fn config(listen: &str, backends: &str) -> String {
    format!(
        r#"{listen}
[[pools]]
name = "p"
backends = {backends}
[[routes]]
name = "all"
split = [{{ pool = "p", weight = 1 }}]
"#
    )
}

async fn h2_client(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(stream).await.expect("h2 handshake");
    (send, tokio::spawn(conn))
}

fn get(path: &str) -> Request<()> {
    Request::get(format!("http://t{path}"))
        .body(())
        .expect("request")
}

#[tokio::test]
async fn streams_beyond_max_concurrent_streams_wait_their_turn() {
    let a = agents("a", "v1", 1).await;
    let listen = "http2_max_concurrent_streams = 2";
    let gw = TestGateway::start(&config(listen, &backends(&a))).await;
    let (send, conn) = h2_client(gw.addr).await;
    let mut send = tokio::time::timeout(WAIT, send.ready())
        .await
        .expect("bounded")
        .expect("ready");
    // The server's SETTINGS arrive with the first exchange.
    let (first, _) = send.send_request(get("/"), true).expect("send");
    let first = tokio::time::timeout(WAIT, first).await.expect("bounded");
    assert_eq!(first.expect("answer").status(), 200);
    assert_eq!(send.current_max_send_streams(), 2);
    // Three 300 ms requests through two streams take at least two rounds.
    let started = tokio::time::Instant::now();
    let mut pending = Vec::new();
    for _ in 0..3 {
        send = tokio::time::timeout(WAIT, send.ready())
            .await
            .expect("bounded")
            .expect("ready");
        let (resp, _) = send.send_request(get("/slow?ms=300"), true).expect("send");
        pending.push(resp);
    }
    for resp in pending {
        let resp = tokio::time::timeout(WAIT, resp).await.expect("bounded");
        assert_eq!(resp.expect("answer").status(), 200);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    drop(send);
    conn.abort();
}

#[tokio::test]
async fn rapid_reset_flood_closes_the_connection_and_others_are_served() {
    let a = agents("a", "v1", 1).await;
    let gw = TestGateway::start(&config("http2_max_client_resets = 100", &backends(&a))).await;
    let bystander = Bystander::start(gw.addr);
    let (mut send, conn) = h2_client(gw.addr).await;
    let mut sent = 0usize;
    // CVE-2023-44487: open a stream and cancel it at once, over and over.
    let flood = async {
        for _ in 0..2_000 {
            send = match send.ready().await {
                Ok(send) => send,
                Err(_) => break,
            };
            let Ok((_, mut stream)) = send.send_request(get("/slow?ms=50"), false) else {
                break;
            };
            // Reset once the gateway has accepted the stream and started on it
            // (hyper's pending-accept limit only sees resets before that).
            tokio::time::sleep(Duration::from_millis(2)).await;
            stream.send_reset(Reason::CANCEL);
            sent += 1;
            // Let the connection task put both frames on the wire.
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WAIT, flood)
        .await
        .expect("flood bounded");
    let ended = tokio::time::timeout(WAIT, conn)
        .await
        .expect("connection closed");
    assert!(ended.expect("conn task").is_err(), "dropped by the gateway");
    assert!(sent < 1_000, "the gateway let {sent} resets through");
    bystander.assert_served().await;
}

/// One rapid-reset connection: cancels streams until the gateway drops it.
async fn reset_until_dropped(addr: std::net::SocketAddr) {
    let (mut send, conn) = h2_client(addr).await;
    // The handle is dropped on every way out, so a surviving connection ends too.
    for _ in 0..50 {
        send = match send.ready().await {
            Ok(send) => send,
            Err(_) => break,
        };
        let Ok((_, mut stream)) = send.send_request(get("/slow?ms=50"), false) else {
            break;
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        stream.send_reset(Reason::CANCEL);
        tokio::task::yield_now().await;
    }
    let ended = tokio::time::timeout(WAIT, conn).await;
    assert!(
        ended.is_ok(),
        "the gateway kept a rapid-reset connection open"
    );
}

#[tokio::test]
async fn reconnecting_rapid_reset_clients_log_a_bounded_number_of_lines() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    const CONNECTIONS: usize = 200;
    let a = agents("a", "v1", 1).await;
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let listen = format!("[listen]\nhttp = \"{addr}\"\nhttp2_max_client_resets = 1");
    let text = crate::support::with_fast_path_switch(&config(&listen, &backends(&a)));
    std::fs::write(&path, text).expect("write config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["run", "--no-watch", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sluicegate");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read log") {
            if line.contains("serving") {
                return;
            }
        }
        panic!("sluicegate exited before serving");
    })
    .await
    .expect("gateway started in time");
    let log = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });

    let started = tokio::time::Instant::now();
    // Ten clients at a time, each reconnecting as soon as it is dropped.
    for _ in 0..CONNECTIONS / 10 {
        let round = (0..10).map(|_| tokio::spawn(reset_until_dropped(addr)));
        for done in futures_util::future::join_all(round).await {
            done.expect("client task");
        }
    }
    // A drop in a later second carries the count of the lines held back.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    reset_until_dropped(addr).await;
    let elapsed = started.elapsed();

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exit in time")
        .expect("exit status");
    let log = tokio::time::timeout(WAIT, log)
        .await
        .expect("log read")
        .expect("log task");

    // Each of the two lines logs at most a handful per second...
    let budget = (elapsed.as_secs() as usize + 2)
        * sluicegate::testing::data_plane::log_limit::PER_SECOND as usize;
    for needle in ["too many cancelled requests", "(rapid reset?)"] {
        let lines: Vec<_> = log.iter().filter(|l| l.contains(needle)).collect();
        assert!(
            !lines.is_empty() && lines.len() <= budget,
            "{} `{needle}` lines in {elapsed:?}",
            lines.len()
        );
        // ...while the ones let through account for every connection dropped.
        let suppressed: usize = lines
            .iter()
            .filter_map(|l| l.split("suppressed=").nth(1))
            .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            .sum();
        let fired = lines.len() + suppressed;
        assert!(
            fired >= CONNECTIONS / 2,
            "`{needle}` fired {fired} times for {CONNECTIONS} connections: {lines:?}"
        );
    }
}
