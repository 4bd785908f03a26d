//! The admin API and its command-line clients through the real binary: token,
//! refusal to start unprotected, corrupt state file, SIGHUP, `ctl`, `plan`, `health`.

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::live::{api, config_text, LiveGateway};
use crate::support::{agents, backends, get, one_pool_toml, WAIT};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sluicegate");

/// The address after `{field}=` in a log line that contains `message`: how a test
/// learns the ports a gateway bound (its config asks for port 0).
fn logged_addr(line: &str, message: &str, field: &str) -> Option<SocketAddr> {
    if !line.contains(message) {
        return None;
    }
    let prefix = format!("{field}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()))
        .and_then(|addr| addr.parse().ok())
}

/// A `sluicegate run` child and every stderr line it printed so far.
struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    admin: SocketAddr,
}

impl Running {
    fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("pid").to_string();
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    async fn stop(mut self) {
        self.signal("-TERM");
        let exit = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exit in time");
        assert!(exit.expect("wait").success(), "{}", self.log());
    }
}

/// Writes `routes.toml` (admin on port 0) into `dir`, starts the binary and reads the
/// admin address it bound from its `admin API` log line.
async fn run(
    dir: &std::path::Path,
    body: &str,
    admin_extra: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> Running {
    let text = config_text(body, "", admin_extra);
    let path = dir.join("routes.toml");
    std::fs::write(&path, text).expect("write");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "-c"])
        .arg(&path)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let admin = tokio::time::timeout(WAIT, async {
        let mut admin = None;
        while let Ok(Some(line)) = lines.next_line().await {
            admin = admin.or_else(|| logged_addr(&line, "admin API", "admin"));
            let serving = line.contains("serving");
            sink.lock().expect("log").push(line);
            if serving {
                return admin.unwrap_or_else(|| {
                    panic!(
                        "no admin address logged before serving:\n{}",
                        sink.lock().expect("log").join("\n")
                    )
                });
            }
        }
        panic!(
            "sluicegate exited before serving:\n{}",
            sink.lock().expect("log").join("\n")
        );
    })
    .await
    .expect("started in time");
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().expect("log").push(line);
        }
    });
    Running { child, log, admin }
}

/// Runs a client command of the binary to completion.
pub(crate) async fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("SLUICEGATE_ADMIN_TOKEN")
        .env_remove("SLUICEGATE_ADMIN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("cli in time");
    out.expect("cli ran")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn one_pool(addr: &str) -> String {
    one_pool_toml(&format!("[{{ addr = \"{addr}\" }}]"))
}

#[tokio::test]
async fn token_missing_or_wrong_is_401_and_right_token_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_env = [("SG_IT_TOKEN", "s3cret-token")];
    let gw = run(
        dir.path(),
        &one_pool("127.0.0.1:9"),
        "token_env = \"SG_IT_TOKEN\"",
        &token_env,
        &[],
    )
    .await;
    for token in [
        None,
        Some("wrong"),
        Some("s3cret-toke"),
        Some("s3cret-token2"),
    ] {
        let r = api(gw.admin, Method::GET, "/api/v1/state", None, token).await;
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"sluicegate\"");
        assert_eq!(r.json()["path"], "authorization");
    }
    let put = api(
        gw.admin,
        Method::PUT,
        "/api/v1/routes/all/split",
        Some(r#"{"p": 2}"#),
        Some("x"),
    )
    .await;
    assert_eq!(put.status, 401);
    let r = api(
        gw.admin,
        Method::GET,
        "/api/v1/state",
        None,
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["routes"][0]["split"][0]["weight"],
        1,
        "refused PUT changed the split"
    );
    // Open without a token. `/readyz` turns 200 once the first probes are in,
    // which may be after the `serving` line `run` waits for: polled, bounded.
    assert_eq!(
        api(gw.admin, Method::GET, "/healthz", None, None)
            .await
            .status,
        200
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = api(gw.admin, Method::GET, "/readyz", None, None)
            .await
            .status;
        assert_ne!(status, 401, "/readyz asks for no token");
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {status} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let url = format!("http://{}", gw.admin);
    let out = cli(&["ctl", "--admin", &url, "--token", "wrong", "status"], &[]).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("401") && err.contains("--token"), "{err}");
    let out = cli(
        &["ctl", "--admin", &url, "status"],
        &[("SLUICEGATE_ADMIN_TOKEN", "s3cret-token")],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ROUTE"), "{}", text(&out.stdout));
    gw.stop().await;
}

#[tokio::test]
async fn refuses_to_start_with_an_unprotected_admin_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let body = one_pool("127.0.0.1:9");
    let cases = [
        (
            config_text(&body, "", "token_env = \"SG_IT_UNSET_TOKEN\""),
            "SG_IT_UNSET_TOKEN",
        ),
        (
            config_text(&body, "", "")
                .replace("listen = \"127.0.0.1:0\"\n\n", "listen = \"0.0.0.0:0\"\n\n"),
            "admin.token_env",
        ),
    ];
    for (config, expected) in cases {
        std::fs::write(&path, &config).expect("write");
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "-c"])
            .arg(&path)
            .env_remove("SG_IT_UNSET_TOKEN");
        let out = tokio::time::timeout(WAIT, cmd.output())
            .await
            .expect("exits")
            .expect("ran");
        assert!(!out.status.success(), "{config}");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

#[tokio::test]
async fn truncated_state_file_is_reported_loudly_and_the_file_config_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        r#"{"version": 1, "splits": {"all": [{"pool": "p", "wei"#,
    )
    .expect("write");
    let admin = format!("state_file = {:?}", state.display().to_string());
    let gw = run(dir.path(), &one_pool("127.0.0.1:9"), &admin, &[], &[]).await;
    let log = gw.log();
    assert!(
        log.contains("STATE FILE IGNORED") && log.contains("is corrupt"),
        "{log}"
    );
    assert!(dir.path().join("state.json.corrupt").exists());
    let r = api(gw.admin, Method::GET, "/api/v1/state", None, None).await;
    assert_eq!(r.json()["routes"][0]["split_source"], "file");
    // Writes work again and produce a good state file.
    let r = api(
        gw.admin,
        Method::PUT,
        "/api/v1/routes/all/split",
        Some(r#"{"p": 7}"#),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("state")).expect("json");
    assert_eq!(saved["splits"]["all"][0]["weight"], 7);
    let url = format!("http://{}", gw.admin);
    assert!(cli(&["health", "--admin", &url], &[])
        .await
        .status
        .success());
    gw.stop().await;
    // Bound but not listening: the port stays ours and a connect is refused.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let dead = format!("http://{}", socket.local_addr().expect("addr"));
    let out = cli(&["health", "--admin", &dead, "--timeout", "2s"], &[]).await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn sighup_reloads_the_file_without_a_watcher() {
    let (x, y) = (agents("x", "v1", 1).await, agents("y", "v2", 1).await);
    let dir = tempfile::tempdir().expect("tempdir");
    let body = |addr: SocketAddr| one_pool(&addr.to_string());
    let gw = run(dir.path(), &body(x[0].addr()), "", &[], &["--no-watch"]).await;
    let path = dir.path().join("routes.toml");
    let old = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        old.replace(&x[0].addr().to_string(), &y[0].addr().to_string()),
    )
    .expect("write");
    let ok = |r: &crate::support::Reply| r.json()["counters"]["reloads_ok"].as_u64();
    let state = api(gw.admin, Method::GET, "/api/v1/state", None, None).await;
    assert_eq!(
        ok(&state),
        Some(0),
        "reloaded without SIGHUP despite --no-watch"
    );
    gw.signal("-HUP");
    tokio::time::timeout(WAIT, async {
        while ok(&api(gw.admin, Method::GET, "/api/v1/state", None, None).await) != Some(1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("reloaded after SIGHUP");
    assert!(gw.log().contains("SIGHUP"), "{}", gw.log());
    gw.stop().await;
}

#[tokio::test]
async fn ctl_split_drain_status_and_plan_against_a_running_gateway() {
    let (b, g) = (
        agents("blue", "v1", 1).await,
        agents("green", "v2", 1).await,
    );
    let body = |green: &str, split: &str| {
        format!(
            "[[pools]]\nname = \"blue\"\nbackends = {}\n[[pools]]\nname = \"green\"\nbackends = {green}\n\
             [[routes]]\nname = \"agents\"\nsplit = [{split}]\n",
            backends(&b)
        )
    };
    let config = config_text(
        &body(
            &backends(&g),
            "{ pool = \"blue\", weight = 100 }, { pool = \"green\", weight = 0 }",
        ),
        "",
        "",
    );
    let gw = LiveGateway::start(&config).await;
    let url = format!("http://{}", gw.admin);
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--admin", url.as_str()];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run_ctl = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&refs, &[]).await
    };

    let out = run_ctl(ctl(&["split", "agents", "blue=0", "green=100"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("green=100 (100%)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(get(gw.addr, "/", &[]).await.agent(), "green-1");

    let out = run_ctl(ctl(&["split", "agents", "blu=1"])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("400 Bad Request: blu: no pool named"),
        "{}",
        text(&out.stderr)
    );

    let green = g[0].addr().to_string();
    let out = run_ctl(ctl(&["drain", "green", &green])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_ctl(ctl(&["status"])).await;
    let status = text(&out.stdout);
    assert!(
        status.contains("blue=0 (0%) green=100 (100%)  api (file: blue=100 (100%) green=0 (0%))"),
        "{status}"
    );
    let row = status
        .lines()
        .find(|l| l.contains(&green))
        .expect("green row");
    assert!(row.contains("yes"), "{row}");
    // Drained green is the only pool with weight: 503, not blue.
    assert_eq!(get(gw.addr, "/", &[]).await.status, 503);
    assert!(run_ctl(ctl(&["undrain", "green", &green]))
        .await
        .status
        .success());

    // Plan a file without green: the pool, its backend and the override all go.
    let next = dir_file(
        &gw,
        &config_text(
            &body("[]", "{ pool = \"blue\", weight = 1 }")
                .replace("[[pools]]\nname = \"green\"\nbackends = []\n", ""),
            "",
            "",
        ),
    );
    let out = cli(&["plan", "-c", &next, "--admin", &url], &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for line in [
        "~ split agents: blue=0 green=100 → blue=1",
        "- pool green: 1 backend(s)",
        "! admin override dropped: split of route agents: pool green is no longer in the file",
    ] {
        assert!(plan.contains(line), "{line}\n---\n{plan}");
    }
    // Planning applied nothing.
    assert_eq!(get(gw.addr, "/", &[]).await.agent(), "green-1");
}

/// Writes `text` next to the gateway's config (not over it) and returns the path.
fn dir_file(gw: &LiveGateway, text: &str) -> String {
    let path = gw.dir.path().join("next.toml");
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}
