//! Ctrl-C (SIGINT) to the real `sluicegate ctl deploy` process in each phase a
//! test can reach deterministically — waiting for health (a pool that never
//! passes a probe), during a stepped rollout (60 s steps), waiting for the drain
//! (an SSE stream held open on the old pool) — leaves a consistent state, and the
//! command says which and exits non-zero.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::admin_cli::BIN;
use crate::live::split_of;
use crate::support::live::{config_text, LiveGateway};
use crate::support::{agents, WAIT};

/// Starts `ctl deploy agents --to POOL ARGS` against `gw`.
fn ctl_deploy(gw: &LiveGateway, to: &str, args: &[&str]) -> Child {
    let url = format!("http://{}", gw.admin);
    Command::new(BIN)
        .args(["ctl", "--admin", &url, "deploy", "agents", "--to", to])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ctl deploy")
}

/// Waits (bounded) until the running deploy of route `agents` is in `phase`.
async fn until_phase(gw: &LiveGateway, phase: &str) {
    tokio::time::timeout(WAIT, async {
        loop {
            let r = gw.api(Method::GET, "/api/v1/deploys", None).await;
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("deploys JSON");
            let now = v["deploys"]
                .as_array()
                .and_then(|d| d.first())
                .map(|d| d["phase"].clone());
            if now.as_ref().and_then(|p| p.as_str()) == Some(phase) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no deploy reached phase {phase}"));
}

/// SIGINT to `child`; its exit status and stderr.
async fn interrupt(mut child: Child) -> (std::process::ExitStatus, String) {
    let pid = child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("ctl exited in time")
        .expect("wait");
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut err).await.expect("stderr");
    }
    (status, err)
}

/// The last deploy's record.
async fn last_deploy(gw: &LiveGateway) -> serde_json::Value {
    let r = gw.api(Method::GET, "/api/v1/deploys", None).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("deploys JSON");
    v["deploys"][0].clone()
}

#[tokio::test]
async fn ctrl_c_in_each_phase_leaves_a_consistent_state_and_says_which() {
    let blue = agents("blue", "v1", 1).await;
    let green = agents("green", "v2", 1).await;
    let body = super::blue_green_dead(&blue, &green).await;
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let before = [("blue".to_owned(), 100), ("green".to_owned(), 0)];

    // 1. While waiting for a pool that never becomes healthy: nothing changed.
    let child = ctl_deploy(&gw, "dead", &["--wait-healthy", "60s"]);
    until_phase(&gw, "waiting_healthy").await;
    let (status, err) = interrupt(child).await;
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("interrupted while waiting for pool dead to be healthy; nothing changed"),
        "{err}"
    );
    assert_eq!(split_of(&gw.state().await, "agents"), before);
    assert_eq!(last_deploy(&gw).await["phase"], "cancelled");
    eprintln!("Ctrl-C while waiting for health: {}", err.trim());

    // 2. During a stepped rollout: aborted, rolled back.
    let child = ctl_deploy(
        &gw,
        "green",
        &[
            "--settle",
            "100ms",
            "--steps",
            "50,100",
            "--step-interval",
            "60s",
        ],
    );
    until_phase(&gw, "rolling_out").await;
    let (status, err) = interrupt(child).await;
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("interrupted during rollout")
            && err.contains("aborted and rolled back; route agents routes as before"),
        "{err}"
    );
    assert_eq!(split_of(&gw.state().await, "agents"), before);
    let rollout = last_deploy(&gw).await["rollout"]
        .as_str()
        .expect("rollout id")
        .to_owned();
    let r = gw
        .api(Method::GET, &format!("/api/v1/rollouts/{rollout}"), None)
        .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("rollout JSON");
    assert_eq!(v["phase"], "aborted", "{v}");
    eprintln!("Ctrl-C during the rollout: {}", err.trim());

    // 3. Waiting for the drain: switched, the old pool still draining.
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get("/sse?events=300&interval_ms=100")
        .header("host", "test.local")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("sse head");
    assert!(resp.headers()["x-agent"]
        .to_str()
        .is_ok_and(|a| a.starts_with("blue")));
    let child = ctl_deploy(
        &gw,
        "green",
        &["--settle", "100ms", "--drain-timeout", "60s"],
    );
    until_phase(&gw, "draining").await;
    let (status, err) = interrupt(child).await;
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("interrupted while waiting for drain: route agents now serves pool green; old pools still draining (1 in flight)"),
        "{err}"
    );
    assert_eq!(
        split_of(&gw.state().await, "agents"),
        [("blue".to_owned(), 0), ("green".to_owned(), 100)]
    );
    assert_eq!(last_deploy(&gw).await["phase"], "cancelled");
    eprintln!("Ctrl-C while draining: {}", err.trim());
    drop(resp);
}
