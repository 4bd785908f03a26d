//! The access log of the real binary: one line per request on stdout, JSON by
//! default (each line parsed and its fields checked), `text` on request.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::support::{agents, get, Reply, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_sluicegate");

/// Runs `sluicegate run` with `[log]` set to `log`, sends `traffic`, stops it with
/// SIGTERM and returns its stdout lines and the replies.
async fn run_with_log(
    log: &str,
    backend: SocketAddr,
    traffic: &[(&str, &[(&str, &str)])],
) -> (Vec<String>, Vec<Reply>) {
    run_with_log_in_pool(log, "", backend, traffic).await
}

/// [`run_with_log`] with `pool_extra` (lines such as `protocol = "h2c"`) in
/// the pool `al` of `backend`.
pub(crate) async fn run_with_log_in_pool(
    log: &str,
    pool_extra: &str,
    backend: SocketAddr,
    traffic: &[(&str, &[(&str, &str)])],
) -> (Vec<String>, Vec<Reply>) {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let text = format!(
        r#"[listen]
http = "{addr}"
[log]
{log}
[[pools]]
name = "al"
{pool_extra}
backends = [{{ addr = "{backend}" }}]
[[routes]]
name = "al-r"
match = {{ headers = {{ "x-to" = "al" }} }}
split = [{{ pool = "al", weight = 1 }}]
"#
    );
    let text = crate::support::with_fast_path_switch(&text);
    std::fs::write(&path, text).expect("write config");
    let child = Command::new(BIN)
        .args(["run", "--no-watch", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sluicegate");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut replies = Vec::new();
    for (path, headers) in traffic {
        replies.push(get(addr, path, headers).await);
    }
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("exit in time")
        .expect("output");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 stdout");
    (stdout.lines().map(str::to_owned).collect(), replies)
}

fn by_path<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["path"] == path)
        .unwrap_or_else(|| panic!("no line for {path} in {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_every_field_of_each_request() {
    let agent = &agents("al", "v1", 1).await[0];
    let to = [("x-to", "al"), ("x-request-id", "req-one")];
    let sse = [("x-to", "al")];
    let traffic: [(&str, &[(&str, &str)]); 3] = [
        ("/status/201?token=secret", &to),
        ("/nowhere", &[]),
        ("/sse?events=3&interval_ms=20", &sse),
    ];
    let (lines, replies) = run_with_log("access = \"stdout\"", agent.addr(), &traffic).await;
    assert_eq!(
        lines.len(),
        3,
        "one line per request, nothing else: {lines:#?}"
    );
    let lines: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();

    let ok = by_path(&lines, "/status/201");
    assert_eq!(ok["status"], 201);
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["host"], "test.local");
    assert_eq!(ok["request_id"], "req-one");
    assert_eq!(
        (ok["route"].as_str(), ok["pool"].as_str()),
        (Some("al-r"), Some("al"))
    );
    assert_eq!(ok["backend"], agent.addr().to_string());
    assert_eq!(ok["bytes"], replies[0].body.len());
    assert_eq!(ok["retries"], 0);
    assert_eq!(ok["error"], "");
    assert_eq!(ok["complete"], true);
    assert!(ok["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:")));
    assert!(
        ok["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{ok}"
    );
    let (upstream, total) = (ok["upstream_ms"].as_f64(), ok["total_ms"].as_f64());
    assert!(
        upstream.zip(total).is_some_and(|(u, t)| 0.0 < u && u <= t),
        "{ok}"
    );
    assert!(
        !ok.to_string().contains("secret"),
        "the query is not logged"
    );

    let lost = by_path(&lines, "/nowhere");
    assert_eq!(lost["status"], 404);
    assert_eq!(lost["error"], "no_route");
    assert_eq!(
        (lost["route"].as_str(), lost["backend"].as_str()),
        (Some(""), Some(""))
    );
    assert_eq!(lost["bytes"], replies[1].body.len());
    assert!(
        lost.get("upstream_ms").is_none(),
        "no backend answered: {lost}"
    );

    // A stream is logged when it ends: all its bytes, and its whole duration.
    let stream = by_path(&lines, "/sse");
    assert_eq!(stream["status"], 200);
    assert_eq!(stream["bytes"], replies[2].body.len());
    assert!(!replies[2].body.is_empty());
    assert_eq!(stream["complete"], true);
    assert!(
        stream["total_ms"].as_f64().is_some_and(|t| t >= 40.0),
        "{stream}"
    );
    // Generated when the client sent none.
    assert_eq!(stream["request_id"].as_str().map(str::len), Some(32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_format_and_off_are_honoured() {
    let agent = &agents("alt", "v1", 1).await[0];
    let to = [("x-to", "al")];
    let traffic: [(&str, &[(&str, &str)]); 1] = [("/status/202", &to)];
    let (lines, _) = run_with_log(
        "access = \"stdout\"\nformat = \"text\"",
        agent.addr(),
        &traffic,
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    for field in [
        "status=202",
        "route=\"al-r\"",
        "pool=\"al\"",
        "path=\"/status/202\"",
        "complete=true",
    ] {
        assert!(lines[0].contains(field), "{field} missing in {}", lines[0]);
    }
    let (lines, _) = run_with_log("access = \"off\"", agent.addr(), &traffic).await;
    assert!(lines.is_empty(), "{lines:#?}");
}
