//! Pause and maintenance (issue 28): a paused route holds new requests and lets
//! them go on at resume (none fails), or answers 504 at the pause's deadline and
//! 503 past its queue bound; maintenance answers 503 with Retry-After, HTML for
//! browsers and JSON for API clients. The gateway's own health stays 200.

use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use crate::live::two_pools;
use crate::support::live::{config_text, LiveGateway};
use crate::support::load::{describe_failures, failures, Load};
use crate::support::{agents, backends, get};

async fn gateway() -> ([Vec<sluicegate_echo_agent::EchoHandle>; 2], LiveGateway) {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 1).await;
    let gw = LiveGateway::start(&config_text(
        &two_pools(&backends(&blue), &backends(&green), (100, 0)),
        "",
        "",
    ))
    .await;
    ([blue, green], gw)
}

async fn health_is_ok(gw: &LiveGateway) {
    for path in ["/healthz", "/readyz"] {
        let r = gw.api(Method::GET, path, None).await;
        assert_eq!(r.status, 200, "{path} while gated: {:?}", r.body);
    }
}

#[tokio::test]
async fn a_three_second_pause_under_load_delays_requests_and_fails_none() {
    let (_blue, gw) = gateway().await;
    let load = Load::start(gw.addr);
    let start = Instant::now();
    load.wait_answers(start, 200, Duration::from_secs(10)).await;

    let r = gw
        .api(
            Method::POST,
            "/api/v1/routes/agents/pause",
            Some(r#"{"max": "20s"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let paused_at = Instant::now();
    let state = gw.state().await;
    assert!(state.routes[0].paused.is_some(), "state shows the pause");
    health_is_ok(&gw).await;
    // The pause lasts 3 s by design of the test (it is the feature's duration,
    // not a synchronisation).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = gw
        .api(Method::POST, "/api/v1/routes/agents/resume", None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let resumed_at = Instant::now();
    load.wait_answers(resumed_at, 200, Duration::from_secs(10))
        .await;
    let records = load.stop().await;

    let (failed_get, failed_post) = failures(&records);
    let (failed, total) = (failed_get + failed_post, records.len());
    assert_eq!(
        failed,
        0,
        "{failed} of {total} failed: {:?}",
        describe_failures(&records, 5)
    );
    // Nothing was answered between the pause taking effect and the resume
    // (the admin answer comes once the pause is live; 100 ms covers requests that
    // passed the gate just before).
    let settled = paused_at + Duration::from_millis(100);
    let early: Vec<_> = records
        .iter()
        .filter(|r| r.done > settled && r.done < resumed_at)
        .collect();
    assert!(
        early.is_empty(),
        "{} answered during the pause",
        early.len()
    );
    // Every worker had a request waiting: those were answered after the resume,
    // having waited about the pause's length.
    let held: Vec<_> = records
        .iter()
        .filter(|r| r.sent < resumed_at && r.done >= resumed_at)
        .collect();
    assert!(!held.is_empty(), "no request waited for the resume");
    let longest = held
        .iter()
        .map(|r| r.done - r.sent)
        .max()
        .unwrap_or_default();
    assert!(
        longest >= Duration::from_millis(2500),
        "longest wait {longest:?}"
    );
    eprintln!(
        "pause 3 s under load: {total} requests, {failed} failed, {} held, longest wait {longest:?}",
        held.len()
    );
    assert!(gw.state().await.routes[0].paused.is_none());
}

#[tokio::test]
async fn a_pause_answers_504_at_its_deadline_and_503_past_its_queue() {
    let (_blue, gw) = gateway().await;
    let r = gw
        .api(
            Method::POST,
            "/api/v1/routes/agents/pause",
            Some(r#"{"max": "300ms"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let t = Instant::now();
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.error(), "paused_timeout");
    assert!(t.elapsed() >= Duration::from_millis(300));
    health_is_ok(&gw).await;

    // One waits, the other finds the queue full.
    let r = gw
        .api(
            Method::POST,
            "/api/v1/routes/agents/pause",
            Some(r#"{"max": "10s", "max_queued": 1}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let addr = gw.addr;
    let a = tokio::spawn(async move { get(addr, "/", &[]).await });
    let b = tokio::spawn(async move { get(addr, "/", &[]).await });
    // Whichever came second is refused at once; the first waits for the resume.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a.is_finished() && !b.is_finished() {
        assert!(Instant::now() < deadline, "neither request was refused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = gw
        .api(Method::POST, "/api/v1/routes/agents/resume", None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (a, b) = (a.await.expect("a"), b.await.expect("b"));
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 503]);
    let refused = if a.status == 503 { &a } else { &b };
    assert_eq!(refused.error(), "pause_queue_full");

    // Unknown route and bad bodies.
    let r = gw
        .api(Method::POST, "/api/v1/routes/nope/pause", None)
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = gw
        .api(
            Method::POST,
            "/api/v1/routes/agents/pause",
            Some(r#"{"max": "2h"}"#),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[tokio::test]
async fn maintenance_answers_503_html_to_browsers_and_json_to_api_clients() {
    let (_blue, gw) = gateway().await;
    let r = gw
        .api(
            Method::PUT,
            "/api/v1/routes/agents/maintenance",
            Some(r#"{"message": "Upgrading <db>", "retry_after": 60}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let html = get(gw.addr, "/", &[("accept", "text/html,*/*;q=0.8")]).await;
    assert_eq!(html.status, 503);
    assert_eq!(html.headers["retry-after"], "60");
    assert_eq!(html.error(), "maintenance");
    assert!(html.headers["content-type"]
        .to_str()
        .is_ok_and(|v| v.starts_with("text/html")));
    let text = String::from_utf8_lossy(&html.body);
    assert!(text.contains("Upgrading &lt;db&gt;"), "{text}");

    let json = get(gw.addr, "/", &[("accept", "application/json")]).await;
    assert_eq!(json.status, 503);
    assert_eq!(json.headers["retry-after"], "60");
    let v = json.json();
    assert_eq!(v["error"], "maintenance");
    assert_eq!(v["message"], "Upgrading <db>");
    health_is_ok(&gw).await;
    let state = gw.state().await;
    assert_eq!(
        state.routes[0].maintenance.as_ref().map(|m| m.retry_after),
        Some(60)
    );

    let r = gw
        .api(Method::DELETE, "/api/v1/routes/agents/maintenance", None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let ok = get(gw.addr, "/", &[("accept", "text/html")]).await;
    assert_eq!(ok.status, 200);
    assert!(ok.agent().starts_with("blue"));
}

/// `[maintenance] template`: the operator's page from a file beside the config,
/// placeholders filled and escaped; a gRPC call gets 14 UNAVAILABLE naming the
/// maintenance instead of an HTML page it cannot read.
#[tokio::test]
async fn an_operators_page_for_browsers_and_a_grpc_status_for_grpc_clients() {
    let blue = agents("blue", "v1", 1).await;
    let green = agents("green", "v2", 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("down.html"),
        "<html><h1>ACME is down ({{route}})</h1><p>{{message}}</p><p>back in {{retry_after}} s</p></html>",
    )
    .expect("write page");
    let body = format!(
        "[maintenance]\ntemplate = \"down.html\"\n{}",
        two_pools(&backends(&blue), &backends(&green), (100, 0))
    );
    let gw = LiveGateway::start_in(dir, &config_text(&body, "", "")).await;
    let r = gw
        .api(
            Method::PUT,
            "/api/v1/routes/agents/maintenance",
            Some(r#"{"message": "Moving <racks> & cables", "retry_after": 45}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let html = get(gw.addr, "/", &[("accept", "text/html")]).await;
    assert_eq!(html.status, 503);
    assert_eq!(
        String::from_utf8_lossy(&html.body),
        "<html><h1>ACME is down (agents)</h1><p>Moving &lt;racks&gt; &amp; cables</p><p>back in 45 s</p></html>"
    );
    let json = get(gw.addr, "/", &[]).await;
    assert_eq!(json.json()["message"], "Moving <racks> & cables");

    let grpc = crate::grpc::grpc_h2(gw.addr, "/test.Echo/Unary", b"x", &[]).await;
    assert_eq!(grpc.status, 200, "a gRPC status, not an HTTP 503");
    assert_eq!(grpc.headers["content-type"], "application/grpc");
    assert_eq!(grpc.field("grpc-status"), "14", "UNAVAILABLE");
    assert_eq!(grpc.field("sluicegate-error"), "maintenance");
    assert_eq!(grpc.field("retry-after"), "45");
    let message = grpc.field("grpc-message");
    assert!(
        message.starts_with("sluicegate-error=maintenance: route agents is down for maintenance: Moving <racks> & cables"),
        "{message}"
    );
    health_is_ok(&gw).await;
}

/// The `ctl` commands of the binary: pause/resume, maintenance on/off, status
/// shows them, and a deploy to a pool that is not there exits non-zero with
/// routing unchanged.
#[tokio::test]
async fn ctl_pause_maintenance_and_a_failed_deploy_through_the_binary() {
    use crate::admin_cli::{cli, text};
    let (_agents, gw) = gateway().await;
    let url = format!("http://{}", gw.admin);
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--admin", url.as_str()];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&refs, &[]).await
    };

    let out = run(ctl(&["pause", "agents", "--max", "5s"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("paused"),
        "{}",
        text(&out.stdout)
    );
    let out = run(ctl(&["status"])).await;
    assert!(
        text(&out.stdout).contains("PAUSED (max 5s"),
        "{}",
        text(&out.stdout)
    );
    let out = run(ctl(&["resume", "agents"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(get(gw.addr, "/", &[]).await.status, 200);

    let out = run(ctl(&["maintenance", "agents", "--retry-after", "30"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(ctl(&["status"])).await;
    assert!(text(&out.stdout).contains("MAINTENANCE (retry after 30s)"));
    assert_eq!(get(gw.addr, "/", &[]).await.status, 503);
    let out = run(ctl(&["maintenance", "agents", "--off"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(get(gw.addr, "/", &[]).await.status, 200);

    let out = run(ctl(&[
        "deploy",
        "agents",
        "--to",
        "nope",
        "--wait-healthy",
        "1s",
    ]))
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("nothing changed"), "{err}");
    let out = run(ctl(&[
        "deploy", "agents", "--to", "green", "--settle", "100ms",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("switched at") && said.contains("drained at"),
        "{said}"
    );
}
