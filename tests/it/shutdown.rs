//! Graceful shutdown of the real binary: SIGTERM lets in-flight requests finish.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::support::{agents, get, until_agent_has, WAIT};

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    sigterm_case(None, "multi-thread scheduler, one worker per CPU").await;
}

/// One worker runs the current-thread scheduler (what the benchmarks measure): the
/// same drain has to hold there.
#[tokio::test]
async fn one_worker_runs_the_current_thread_scheduler_and_drains_the_same() {
    sigterm_case(Some("1"), "current-thread scheduler, 1 worker").await;
}

async fn sigterm_case(workers: Option<&str>, runtime: &str) {
    let a = agents("a", "v1", 1).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = one_pool_config(&dir, &format!("127.0.0.1:{port}"), a[0].addr(), "");
    let mut args = vec!["--drain-timeout", "10s"];
    if let Some(n) = workers {
        args.extend(["--workers", n]);
    }
    let mut saw_runtime = false;
    let (mut child, pid) = start_until_serving(&path, &args, |line| {
        saw_runtime |= line.contains(runtime);
    })
    .await;
    assert!(saw_runtime, "no '{runtime}' line before serving");

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1500", &[]).await });
    // Wait (bounded) until the agent has the request, so it is truly in flight.
    until_agent_has(&a[0], 1, "request reached the agent").await;

    sigterm(pid);

    // New connections are refused while the slow request is still running.
    tokio::time::timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("listener closed after SIGTERM");
    assert!(
        !slow.is_finished(),
        "slow request ended before the listener closed"
    );

    let reply = slow.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.agent(), "a-1");
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exited in time")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

/// Writes a `routes.toml` in `dir`: `listen`, one pool `p` over `backend` (with
/// `pool_extra`, e.g. its `[pools.health]`), one route to it.
fn one_pool_config(
    dir: &tempfile::TempDir,
    listen: &str,
    backend: SocketAddr,
    pool_extra: &str,
) -> PathBuf {
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        crate::support::with_fast_path_switch(&format!(
            r#"
[listen]
http = "{listen}"
[[pools]]
name = "p"
backends = [{{ addr = "{backend}" }}]
{pool_extra}
[[routes]]
name = "all"
split = [{{ pool = "p", weight = 1 }}]
"#
        )),
    )
    .unwrap();
    path
}

/// Starts `sluicegate run -c path ARGS` (one worker per CPU, log at info) and reads
/// its log, each line shown to `seen`, up to the "serving" line (logged once the
/// listeners are bound); the rest of the log is read on in the background.
async fn start_until_serving(
    path: &Path,
    args: &[&str],
    mut seen: impl FnMut(&str),
) -> (Child, u32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["run", "-c"])
        .arg(path)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("TOKIO_WORKER_THREADS")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sluicegate");
    let pid = child.id().expect("pid");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen(&line);
            if line.contains("serving") {
                return;
            }
        }
        panic!("sluicegate exited before serving");
    })
    .await
    .expect("gateway started in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, pid)
}

fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn drain_waits_for_an_open_sse_stream() {
    let a = agents("a", "v1", 1).await;
    let gw = crate::support::TestGateway::start(&crate::support::one_pool_toml(
        &crate::support::backends(&a[..1]),
    ))
    .await;
    let addr = gw.addr;
    let stream = tokio::spawn(async move { get(addr, "/sse?events=3&interval_ms=300", &[]).await });
    until_agent_has(&a[0], 1, "stream started").await;
    let drained = gw.stop().await;
    assert_eq!(drained, sluicegate::Drained::Clean);
    let reply = stream.await.unwrap();
    assert_eq!(reply.status, 200);
    let events = reply.body.windows(5).filter(|w| w == b"data:").count();
    assert_eq!(events, 3, "the stream was cut during the drain");
}

/// SIGTERM while the gateway still waits for its first health probes (a backend
/// that accepts connections and never answers holds that wait for the probe's
/// timeout): it exits 0 at once, neither killed by the signal nor waiting out the
/// probes.
#[tokio::test]
async fn sigterm_during_the_start_up_wait_exits_0_without_waiting_it_out() {
    // Accepted by the kernel, never read: a probe there times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = one_pool_config(
        &dir,
        "127.0.0.1:0",
        silent.local_addr().unwrap(),
        "[pools.health]\ninterval = \"30s\"\ntimeout = \"5s\"",
    );
    let (mut child, pid) = start_until_serving(&path, &[], |line| {
        assert!(
            !line.contains("first health probes done"),
            "the probe answered: {line}"
        );
    })
    .await;

    let sent = tokio::time::Instant::now();
    sigterm(pid);
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exited in time")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    // The probe's wait would last its timeout (5 s) and more.
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "exited {:?} after SIGTERM",
        sent.elapsed()
    );
    drop(silent);
}
