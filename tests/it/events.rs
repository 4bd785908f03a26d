//! `GET /api/v1/events`: admin changes, a reload, a rollout and a killed agent
//! arrive as typed, numbered events in order; `Last-Event-ID` resumes; a
//! subscriber that never reads slows neither the admin API nor the gateway.
//! Run with `--nocapture` for the change → event latency (`events:` lines).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::health::probe;
use crate::support::live::{config_text, LiveGateway};
use crate::support::{agents, backends, get, WAIT};

/// An open event stream, parsed as it arrives.
pub(crate) struct Events {
    body: Incoming,
    buf: String,
}

impl Events {
    /// Subscribes to `admin`'s stream, resuming after `last` if given.
    pub(crate) async fn open(admin: SocketAddr, last: Option<u64>) -> Events {
        let stream = TcpStream::connect(admin).await.expect("connect admin");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::get("/api/v1/events").header("host", admin.to_string());
        if let Some(last) = last {
            req = req.header("last-event-id", last.to_string());
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("events response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// The next event's data (comments skipped), within [`WAIT`].
    pub(crate) async fn next(&mut self) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                while let Some(end) = self.buf.find("\n\n") {
                    let message: String = self.buf.drain(..end + 2).collect();
                    let data = message
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .map(str::to_owned);
                    if let Some(data) = data {
                        let value: Value = serde_json::from_str(&data).expect("event JSON");
                        if let Some(id) = message.lines().find_map(|l| l.strip_prefix("id: ")) {
                            assert_eq!(value["seq"].to_string(), id, "id: is the seq");
                        }
                        return value;
                    }
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("stream open")
                    .expect("stream frame");
                if let Ok(data) = frame.into_data() {
                    self.buf
                        .push_str(std::str::from_utf8(&data).expect("UTF-8"));
                }
            }
        })
        .await
        .expect("an event within the bound")
    }

    /// Reads until an event of type `kind` (returning it and what came before).
    pub(crate) async fn until(&mut self, kind: &str) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let e = self.next().await;
            if e["type"] == kind {
                return (e, before);
            }
            before.push(e);
        }
    }
}

fn config(blue: &str, green: &str) -> String {
    config_text(
        &format!(
            r#"
[[pools]]
name = "blue"
backends = {blue}
{health}
[[pools]]
name = "green"
backends = {green}
[[routes]]
name = "agents"
split = [{{ pool = "blue", weight = 100 }}, {{ pool = "green", weight = 0 }}]
"#,
            health = probe(1, 1)
        ),
        "",
        "",
    )
}

#[tokio::test]
async fn changes_reload_rollout_and_a_killed_agent_arrive_in_order_and_resume_works() {
    let blue = agents("blue", "v1", 1).await;
    let green = agents("green", "v2", 2).await;
    let gw = LiveGateway::start(&config(&backends(&blue), &backends(&green[..1]))).await;
    let green0 = green[0].addr().to_string();
    let mut events = Events::open(gw.admin, None).await;

    // Admin changes.
    let sent = Instant::now();
    gw.split("agents", r#"{"blue": 50, "green": 50}"#).await;
    let (e, _) = events.until("split_changed").await;
    let latency = sent.elapsed();
    assert_eq!(e["route"], "agents");
    assert_eq!(e["by"], "api");
    assert_eq!(
        e["split"][1],
        serde_json::json!({"pool": "green", "weight": 50})
    );
    let first_seq = e["seq"].as_u64().unwrap();
    let drain = format!("/api/v1/pools/green/backends/{green0}/drain");
    assert_eq!(gw.api(Method::POST, &drain, None).await.status, 200);
    let (e, _) = events.until("backend_draining").await;
    assert_eq!(
        (e["pool"].as_str(), e["addr"].as_str()),
        (Some("green"), Some(green0.as_str()))
    );
    assert_eq!(
        (e["draining"].as_bool(), e["by"].as_str()),
        (Some(true), Some("api"))
    );
    let undrain = format!("/api/v1/pools/green/backends/{green0}/undrain");
    assert_eq!(gw.api(Method::POST, &undrain, None).await.status, 200);
    let (e, _) = events.until("backend_draining").await;
    assert_eq!(e["draining"], false);

    // A reload that adds a backend.
    gw.reload(&config(&backends(&blue), &backends(&green)))
        .await;
    let (added, _) = events.until("backend_added").await;
    assert_eq!(added["addr"], green[1].addr().to_string());
    assert_eq!(added["by"], "file");
    let (reload, _) = events.until("reload_applied").await;
    assert!(reload["seq"].as_u64() > added["seq"].as_u64());
    gw.rewrite("[listen\nnot toml");
    let (refused, _) = events.until("reload_refused").await;
    assert!(!refused["errors"].as_str().unwrap_or("").is_empty());

    // A rollout, aborted after its first step.
    let r = gw
        .api(
            Method::POST,
            "/api/v1/rollouts",
            Some(r#"{"route": "agents", "to": "green", "steps": [60, 100], "step_interval": "30s", "max_error_rate": 0.01}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = serde_json::from_slice::<Value>(&r.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (step, _) = events.until("rollout_step_started").await;
    assert_eq!(
        (step["rollout"].as_str(), step["weight"].as_u64()),
        (Some(id.as_str()), Some(60))
    );
    let (split, _) = events.until("split_changed").await;
    assert_eq!(split["by"], "rollout");
    let abort = format!("/api/v1/rollouts/{id}/abort");
    assert_eq!(gw.api(Method::POST, &abort, None).await.status, 200);
    let (phase, _) = events.until("rollout_phase").await;
    assert_eq!(phase["phase"], "aborted");

    // A killed agent: its probe fails (once it had passed).
    tokio::time::timeout(WAIT, async {
        while !gw.state().await.pools[0].backends[0].healthy {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("blue healthy in time");
    blue[0].shutdown();
    let health = loop {
        let (health, _) = events.until("backend_health").await;
        if health["to"] != "healthy" {
            break health;
        }
    };
    assert_eq!(health["addr"], blue[0].addr().to_string());
    assert_eq!(
        (health["from"].as_str(), health["to"].as_str()),
        (Some("healthy"), Some("unhealthy"))
    );
    let last_seq = health["seq"].as_u64().unwrap();

    // Resume: everything after the first split change, in the same order, no repeats.
    let mut resumed = Events::open(gw.admin, Some(first_seq)).await;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last_seq) {
        seqs.push(resumed.next().await["seq"].as_u64().unwrap());
    }
    let want: Vec<u64> = (first_seq + 1..=last_seq).collect();
    assert_eq!(seqs, want);
    eprintln!(
        "events: admin split change -> event on the stream: {:?}",
        latency
    );
}

#[tokio::test]
async fn a_subscriber_that_never_reads_slows_neither_admin_writes_nor_requests() {
    let blue = agents("blue", "v1", 1).await;
    let green = agents("green", "v2", 1).await;
    let gw = LiveGateway::start(&config(&backends(&blue), &backends(&green))).await;
    // Asks for the stream, then never reads a byte.
    let mut silent = TcpStream::connect(gw.admin).await.expect("connect");
    let head = format!("GET /api/v1/events HTTP/1.1\r\nhost: {}\r\n\r\n", gw.admin);
    silent.write_all(head.as_bytes()).await.expect("send head");
    let mut reader = Events::open(gw.admin, None).await;
    let started = Instant::now();
    let mut slowest_write = Duration::ZERO;
    let mut slowest_get = Duration::ZERO;
    for i in 0..400u32 {
        let t = Instant::now();
        let w = i % 100 + 1;
        gw.split("agents", &format!(r#"{{"blue": {w}, "green": 1}}"#))
            .await;
        slowest_write = slowest_write.max(t.elapsed());
        let t = Instant::now();
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 200);
        slowest_get = slowest_get.max(t.elapsed());
        assert_eq!(reader.until("split_changed").await.0["by"], "api");
    }
    eprintln!(
        "events: 400 splits and GETs with a silent subscriber in {:?}; slowest write {slowest_write:?}, slowest GET {slowest_get:?}",
        started.elapsed()
    );
    assert!(slowest_write < Duration::from_secs(2), "{slowest_write:?}");
    assert!(slowest_get < Duration::from_secs(2), "{slowest_get:?}");
    drop(silent);
}

#[tokio::test]
async fn ctl_watch_once_prints_the_state_and_watch_prints_a_line_per_event() {
    use crate::admin_cli::{cli, text};
    let blue = agents("blue", "v1", 1).await;
    let green = agents("green", "v2", 1).await;
    // No probe: the picture does not change between the two reads.
    let body = crate::live::two_pools(&backends(&blue), &backends(&green), (100, 0));
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    gw.split("agents", r#"{"blue": 70, "green": 30}"#).await;
    let url = format!("http://{}", gw.admin);
    let out = cli(&["ctl", "--admin", &url, "watch", "--once"], &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    // The same picture as `ctl status` renders from the state right now.
    let state = gw.state().await;
    assert_eq!(shown, sluicegate::tools::ctl::render_status(&state));
    for needle in [
        "agents",
        "blue",
        "green",
        "70",
        "30",
        &blue[0].addr().to_string(),
    ] {
        assert!(shown.contains(needle), "{needle} missing:\n{shown}");
    }

    // Without a terminal: the picture once, then one line per event.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["ctl", "--admin", &url, "watch"])
        .env_remove("SLUICEGATE_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ctl watch");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    // The picture ends with the last backend line; wait until it was printed.
    tokio::time::timeout(WAIT, async {
        while !line.contains(&green[0].addr().to_string()) {
            line.clear();
            lines.read_line(&mut line).await.expect("read");
        }
    })
    .await
    .expect("picture printed");
    gw.split("agents", r#"{"blue": 40, "green": 60}"#).await;
    let event = tokio::time::timeout(WAIT, async {
        loop {
            line.clear();
            lines.read_line(&mut line).await.expect("read");
            if line.contains("split_changed") {
                return line.clone();
            }
        }
    })
    .await
    .expect("event line in time");
    assert!(
        event.contains("route=agents split=blue=40,green=60"),
        "{event}"
    );
    assert!(event.contains("by=api"), "{event}");
    child.kill().await.expect("kill ctl watch");
}

/// Runs Debian's `chromium` headless against `url` with `args`; `None` when it is
/// not installed (CI installs it: `.ci/run`, and then it is required).
async fn chromium(args: &[&str], url: &str) -> Option<String> {
    let installed = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs chromium (.ci/run installs it)"
        );
        eprintln!("dashboard: chromium not installed; skipped");
        return None;
    }
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--virtual-time-budget=3000",
            ])
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium in time")
    .expect("chromium ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn the_dashboard_in_headless_chromium_shows_the_routes_and_split() {
    let blue = agents("blue", "v1", 1).await;
    let green = agents("green", "v2", 1).await;
    let body = crate::live::two_pools(&backends(&blue), &backends(&green), (100, 0));
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    gw.split("agents", r#"{"blue": 90, "green": 10}"#).await;
    let url = format!("http://{}/ui/", gw.admin);
    let Some(dom) = chromium(&["--dump-dom"], &url).await else {
        return;
    };
    // Rendered by the page's script from /api/v1/state, not in the served HTML.
    assert!(
        dom.contains(r#"data-route="agents"><b>agents</b> blue=90 green=10"#),
        "{dom}"
    );
    assert!(dom.contains("source: api"), "{dom}");
    assert!(dom.contains(&blue[0].addr().to_string()), "{dom}");
    assert!(dom.contains(">live<"), "the event stream is open: {dom}");
    let shot = std::env::temp_dir().join(format!("sluicegate-dashboard-{}.png", gw.admin.port()));
    let arg = format!("--screenshot={}", shot.display());
    chromium(&[&arg, "--window-size=1000,800"], &url).await;
    let len = std::fs::metadata(&shot).expect("screenshot written").len();
    assert!(len > 1000, "screenshot of {len} bytes");
    eprintln!("dashboard: screenshot saved to {}", shot.display());
}
