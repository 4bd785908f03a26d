//! A long-lived bidirectional gRPC stream stays on its backend through split
//! changes and config reloads (issue 26, item 5): one minute of messages
//! through the gateway while the admin API changes the route's split 20 times
//! and the config file is reloaded 5 times; every message is answered, and
//! every answer names the backend the stream started on, while new calls
//! follow each split.
//!
//! It runs for over a minute, longer than any other test of the suite, so it
//! is `#[ignore]`d and `.ci/run` runs it on its own (`--ignored long_stream`).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::{grpc_h2, grpcio, h2c_pool, PyServer, DIR};
use crate::support::live::{config_text, LiveGateway};
use crate::support::WAIT;

/// How long the stream lasts, and one message every this many milliseconds.
const STREAM_SECS: u64 = 60;
const EVERY_MS: u64 = 100;
/// Split changes and file reloads made while it streams.
const SPLITS: usize = 20;
const RELOADS: usize = 5;

/// The config: pools `a` and `b`, route `all` (file split all to `a`), and a
/// route whose path changes with `generation` (what each reload changes).
fn config(a: &PyServer, b: &PyServer, generation: usize) -> String {
    config_text(
        &format!(
            "{}{}[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"a\", weight = 100 }}, {{ pool = \"b\", weight = 0 }}]\n[[routes]]\nname = \"other\"\nmatch = {{ path_prefix = \"/other-{generation}\" }}\nsplit = [{{ pool = \"b\", weight = 1 }}]\n",
            h2c_pool("a", "h2c", &[a.addr]),
            h2c_pool("b", "h2c", &[b.addr]),
        ),
        "",
        "",
    )
}

/// Which backend a new unary call goes to now.
async fn served_by(gw: &LiveGateway) -> String {
    let reply = grpc_h2(gw.addr, "/test.Echo/Unary", b"which", &[]).await;
    assert_eq!(reply.field("grpc-status"), "0", "{:?}", reply.headers);
    reply.field("x-served-by").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "over a minute long: .ci/run runs it on its own"]
async fn long_stream_stays_on_its_backend_through_splits_and_reloads() {
    if !grpcio() {
        return;
    }
    let a = PyServer::start("py-a").await;
    let b = PyServer::start("py-b").await;
    let gw = LiveGateway::start(&config(&a, &b, 0)).await;
    assert_eq!(served_by(&gw).await, "py-a");

    let mut client = Command::new("python3")
        .arg(format!("{DIR}/long_stream.py"))
        .arg(gw.addr.to_string())
        .arg(STREAM_SECS.to_string())
        .arg(EVERY_MS.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 tests/grpc/long_stream.py");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let started = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the stream's first answer in time")
        .expect("read")
        .unwrap_or_default();
    assert_eq!(started, "STARTED py-a", "the stream starts on a");

    // The changes, spread over the stream's minute: every fifth a reload.
    let events = SPLITS + RELOADS;
    let spacing = Duration::from_secs(STREAM_SECS - 5) / u32::try_from(events).expect("few");
    let (mut splits, mut reloads, mut seen_b) = (0, 0, 0);
    for event in 0..events {
        tokio::time::sleep(spacing).await;
        if event % 5 == 4 {
            reloads += 1;
            gw.reload(&config(&a, &b, reloads)).await;
            continue;
        }
        // To b, back to a, then half and half; a new call follows each.
        let (to_a, want) = match splits % 3 {
            0 => (0, Some("py-b")),
            1 => (100, Some("py-a")),
            _ => (50, None),
        };
        splits += 1;
        gw.split("all", &format!("{{\"a\": {to_a}, \"b\": {}}}", 100 - to_a))
            .await;
        if let Some(want) = want {
            assert_eq!(
                served_by(&gw).await,
                want,
                "a new call after split {splits}"
            );
            seen_b += usize::from(want == "py-b");
        }
    }
    assert_eq!((splits, reloads), (SPLITS, RELOADS));
    assert!(seen_b >= 6, "new calls went to b {seen_b} times");
    assert!(gw.counters().reloads_ok >= RELOADS as u64);

    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(STREAM_SECS), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            rest.push(line);
        }
        client.wait().await.expect("client ran")
    })
    .await
    .expect("the stream ended in time");
    let text = rest.join("\n");
    assert!(ended.success(), "the stream failed:\n{text}");
    let sent: usize = rest
        .iter()
        .find_map(|l| l.strip_prefix("sent "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count:\n{text}"));
    // One message per 100 ms for a minute, less the client's own pauses.
    assert!(sent >= 400, "only {sent} messages:\n{text}");
    assert!(rest.contains(&format!("got {sent}")), "{text}");
    assert!(rest.contains(&"backends py-a".to_owned()), "{text}");
    eprintln!("long stream: {text}");
}
