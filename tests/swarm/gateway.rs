//! The gateway under test: the gateway image (this test build's binary) as a plain
//! container on the swarm's overlay, on node 1 or node 2, its traffic and admin ports
//! published on an address the host may use (127.0.0.1 on node 1, node 2's veth
//! address on node 2; never an overlay address). And a socket proxy between the
//! gateway and the manager's engine that a test can switch off to lose the API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sluicegate::state_view::StateView;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cluster::{notice, run, sync, Cluster};

/// Where the gateway's engine socket is mounted inside its container.
const SOCKET_DIR: &str = "/run/sluicegate-docker";

/// Which engine the gateway talks to.
pub enum Engine<'a> {
    /// Node 1's socket (a manager).
    Manager,
    /// Node 1's socket through a [`SocketProxy`].
    Proxied(&'a SocketProxy),
    /// Node 2's own socket (a worker: cluster reads answer 503).
    Worker,
}

/// A running gateway container; removed on drop.
pub struct Gateway {
    pub name: String,
    /// Its HTTP listener as published to the host.
    pub http: SocketAddr,
    /// Its admin API as published to the host.
    pub admin: SocketAddr,
    /// `-H` for the engine that runs it.
    host: String,
    token: String,
    _config: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway named `<run>-<short>` whose `routes.toml` is `config`
    /// (`{token_env}` is the admin token's variable), on node 2 when `on_node2`.
    pub async fn start(
        c: &Cluster,
        short: &str,
        config: &str,
        engine: Engine<'_>,
        on_node2: bool,
    ) -> Gateway {
        let name = c.name(short);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("routes.toml"), config).expect("write routes.toml");
        // The container runs as uid 10001: let it read the file.
        sync("chmod", &["-R", "a+rX", &dir.path().to_string_lossy()]).expect("chmod");
        // One token per run: a worker's gateway reads the set from a manager's
        // gateway with the token of its own `[admin].token_env`.
        let token = format!("t{}", c.id);
        let (host, publish_ip) = if on_node2 {
            (c.node2.clone(), "10.250.0.2")
        } else {
            ("unix:///var/run/docker.sock".to_owned(), "127.0.0.1")
        };
        let socket_mount = match engine {
            Engine::Manager => format!("/var/run/docker.sock:{SOCKET_DIR}/docker.sock:ro"),
            Engine::Proxied(proxy) => format!("{}:{SOCKET_DIR}:ro", proxy.dir().display()),
            Engine::Worker => {
                let sock = c.node2.strip_prefix("unix://").expect("unix socket");
                format!("{sock}:{SOCKET_DIR}/docker.sock:ro")
            }
        };
        let user = format!("10001:{}", c.docker_gid);
        let config_mount = format!("{}:/etc/sluicegate:ro", dir.path().display());
        let p_http = format!("{publish_ip}::8080");
        let p_admin = format!("{publish_ip}::9901");
        let docker_host = format!("DOCKER_HOST=unix://{SOCKET_DIR}/docker.sock");
        let token_env = format!("SG_ADMIN_TOKEN={token}");
        let label = c.run_label();
        let args = [
            "-H",
            &host,
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &label,
            "--network",
            &c.net,
            "--user",
            &user,
            "-p",
            &p_http,
            "-p",
            &p_admin,
            "-v",
            &config_mount,
            "-v",
            &socket_mount,
            "-e",
            &docker_host,
            "-e",
            &token_env,
            "-e",
            "RUST_LOG=info",
            &c.gateway_image,
            "run",
            "-c",
            "/etc/sluicegate/routes.toml",
        ];
        run("docker", &args).await;
        let port = |p: &'static str| {
            let (host, name) = (host.clone(), name.clone());
            async move {
                let out = run("docker", &["-H", &host, "port", &name, p]).await;
                out.lines()
                    .next()
                    .and_then(|l| l.trim().parse::<SocketAddr>().ok())
                    .unwrap_or_else(|| panic!("docker port {name} {p}: {out:?}"))
            }
        };
        let gateway = Gateway {
            http: port("8080/tcp").await,
            admin: port("9901/tcp").await,
            name,
            host,
            token,
            _config: dir,
        };
        gateway.wait_ready(Duration::from_secs(30)).await;
        gateway
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            match get(self.admin, "/readyz", None).await {
                Ok((200, _)) => return,
                _ if !self.is_running() => {
                    panic!("gateway {} exited:\n{}", self.name, self.logs())
                }
                last => assert!(
                    Instant::now() < deadline,
                    "gateway {} not ready within {limit:?}: {last:?}\n{}",
                    self.name,
                    self.logs()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The admin API's bearer token.
    #[allow(dead_code)]
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `GET path` on the admin API with the token.
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        get(self.admin, path, Some(&self.token)).await
    }

    /// The admin API's state as JSON.
    pub async fn state_json(&self) -> serde_json::Value {
        let (status, body) = self.admin_get("/api/v1/state").await.expect("state");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("state JSON")
    }

    /// The admin API's state.
    pub async fn state(&self) -> StateView {
        serde_json::from_value(self.state_json().await).expect("state view")
    }

    /// Addresses in `pool` that can get traffic now (present, healthy, not
    /// ejected, not draining).
    pub async fn eligible(&self, pool: &str) -> Vec<String> {
        let state = self.state().await;
        let mut out: Vec<String> = state
            .pools
            .iter()
            .filter(|p| p.name == pool)
            .flat_map(|p| &p.backends)
            .filter(|b| b.healthy && !b.ejected && !b.draining)
            .map(|b| b.addr.clone())
            .collect();
        out.sort();
        out
    }

    /// Waits until `pool`'s eligible addresses satisfy `done` (at most `limit`);
    /// returns them and when that was seen.
    pub async fn wait_eligible(
        &self,
        pool: &str,
        limit: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> (Vec<String>, Instant) {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.eligible(pool).await;
            if done(&now) {
                return (now, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "{pool}: eligible {now:?} after {limit:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn is_running(&self) -> bool {
        sync(
            "docker",
            &[
                "-H",
                &self.host,
                "inspect",
                "-f",
                "{{.State.Running}}",
                &self.name,
            ],
        )
        .is_ok_and(|out| out.trim() == "true")
    }

    /// The last lines of the gateway's log.
    pub fn logs(&self) -> String {
        let out = std::process::Command::new("docker")
            .args(["-H", &self.host, "logs", "--tail", "40", &self.name])
            .output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("docker logs: {e}"),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            notice(&format!("gateway {} log:\n{}", self.name, self.logs()));
        }
        if let Err(e) = sync("docker", &["-H", &self.host, "rm", "-f", &self.name]) {
            notice(&format!("removing {}: {e}", self.name));
        }
    }
}

/// A plain HTTP/1.1 GET to a published port (never an overlay address).
pub async fn get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let fut = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::get(path).header("host", addr.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// A unix socket in a temp dir that forwards every connection to node 1's engine,
/// until switched off: then open connections are cut and new ones refused (the
/// socket file stays, nothing listens), as when a manager's engine goes away.
pub struct SocketProxy {
    dir: tempfile::TempDir,
    on: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SocketProxy {
    pub fn start() -> SocketProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        sync("chmod", &["755", &dir.path().to_string_lossy()]).expect("chmod");
        let (on, rx) = watch::channel(true);
        let path = dir.path().join("docker.sock");
        let task = tokio::spawn(serve(path, rx));
        SocketProxy { dir, on, task }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Switches forwarding on or off.
    pub fn set(&self, on: bool) {
        self.on.send_replace(on);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(path: PathBuf, mut on: watch::Receiver<bool>) {
    loop {
        while !*on.borrow_and_update() {
            if on.changed().await.is_err() {
                return;
            }
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the proxy socket");
        sync("chmod", &["666", &path.to_string_lossy()]).expect("chmod socket");
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { continue };
                    conns.spawn(async move {
                        if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                        }
                    });
                }
                changed = on.changed() => {
                    if changed.is_err() || !*on.borrow_and_update() {
                        break;
                    }
                }
            }
        }
        // Off: nothing listens on the file (connect is refused), open streams cut.
        drop(listener);
        conns.abort_all();
    }
}

/// `[pools.health]` of [`routes_toml`]: probed every 500 ms, one pass admits, two
/// failures eject (node loss is seen within about a second).
pub const FAST_PROBE: &str =
    "path = \"/health\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\nrise = 1\nfall = 2";

/// `[pools.health]` with every setting at its default.
pub const DEFAULT_PROBE: &str = "path = \"/health\"";

/// The `routes.toml` of a test gateway: one route over pool `agents`, filled by
/// Swarm discovery of services labelled `<prefix>.pool=agents` on `net` polled every
/// second, probed by [`FAST_PROBE`] (a backend that appears after start-up is probed
/// at once, whatever the interval); `swarm_extra` goes into `[discovery.swarm]`.
pub fn routes_toml(net: &str, prefix: &str, swarm_extra: &str) -> String {
    routes_toml_with(net, prefix, swarm_extra, FAST_PROBE)
}

/// [`routes_toml`] with `probe` as the pool's `[pools.health]` table.
pub fn routes_toml_with(net: &str, prefix: &str, swarm_extra: &str, probe: &str) -> String {
    format!(
        r#"[listen]
http = "0.0.0.0:8080"

[admin]
listen = "0.0.0.0:9901"
token_env = "SG_ADMIN_TOKEN"

[discovery.swarm]
network = "{net}"
label_prefix = "{prefix}"
poll_interval = "1s"
{swarm_extra}

[[pools]]
name = "agents"
balance = "least_conn"
[pools.health]
{probe}

[[routes]]
name = "agents"
split = [{{ pool = "agents", weight = 100 }}]
retries = 2
timeouts = {{ connect = "300ms", response_header = "3s" }}
"#
    )
}
