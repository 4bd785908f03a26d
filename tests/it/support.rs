//! Shared helpers: start a gateway and echo agents on 127.0.0.1, send requests.
//! Docker helpers (engine, images, scopes) are in [`docker`].

pub mod docker;
pub mod load;

pub mod live;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sluicegate::testing::control_plane::controller::SharedSnapshot;
use sluicegate::testing::data_plane::health::HealthEvent;
use sluicegate::testing::data_plane::tls::watch::ReloadStatus;
use sluicegate::Drained;
use sluicegate::Gateway;
use sluicegate_echo_agent::{self as echo_agent, EchoHandle};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// Set to `0` to run every gateway the tests start with `listen.http1_fast_path =
/// false` (everything through hyper): `.ci/run` runs the suite both ways.
pub const FAST_PATH_ENV: &str = "SLUICEGATE_IT_HTTP1_FAST_PATH";

/// `text` with `http1_fast_path = false` in its `[listen]` table when
/// [`FAST_PATH_ENV`] is `0` (and the file does not set it), else as it is.
pub fn with_fast_path_switch(text: &str) -> String {
    let off = std::env::var(FAST_PATH_ENV).is_ok_and(|v| v == "0");
    if !off || text.contains("http1_fast_path") {
        return text.to_owned();
    }
    match text.find("[listen]\n") {
        Some(at) => {
            let end = at + "[listen]\n".len();
            format!("{}http1_fast_path = false\n{}", &text[..end], &text[end..])
        }
        None => text.to_owned(),
    }
}

/// A gateway serving in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The HTTPS listener, when the config has `listen.https`.
    pub https: Option<SocketAddr>,
    /// Certificate reloads, when HTTPS is on.
    pub reloads: Option<watch::Receiver<ReloadStatus>>,
    /// The snapshot its requests read (to inspect backend state).
    pub snapshot: SharedSnapshot,
    /// Its health events since start.
    pub events: broadcast::Receiver<HealthEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Drained>>,
}

impl TestGateway {
    /// Starts a gateway from `toml` (its `[listen]` section is supplied here).
    pub async fn start(toml: &str) -> TestGateway {
        Self::start_config(&format!("[listen]\nhttp = \"127.0.0.1:0\"\n{toml}")).await
    }

    /// Starts a gateway from a whole config file.
    pub async fn start_config(text: &str) -> TestGateway {
        let text = &with_fast_path_switch(text);
        let spec = sluicegate::config::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let gateway = Gateway::bind(spec).await.expect("bind");
        let addr = gateway.local_addr().expect("addr");
        let https = gateway.https_addr();
        let reloads = gateway.cert_reloads();
        let snapshot = gateway.snapshot();
        let events = gateway.subscribe_health();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        TestGateway {
            addr,
            https,
            reloads,
            snapshot,
            events,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting and waits for the drain.
    pub async fn stop(mut self) -> Drained {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("drain within bound")
            .expect("serve task")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts `n` echo agents named `{prefix}-{i}` reporting `version`.
pub async fn agents(prefix: &str, version: &str, n: usize) -> Vec<EchoHandle> {
    let mut out = Vec::with_capacity(n);
    for i in 1..=n {
        out.push(
            echo_agent::spawn_local(&format!("{prefix}-{i}"), version)
                .await
                .expect("agent"),
        );
    }
    out
}

/// Waits (at most [`WAIT`]) until `agent` has received at least `n` requests;
/// panics naming `what` otherwise. The agent's count has no signal to await, so
/// this polls it.
pub async fn until_agent_has(agent: &EchoHandle, n: u64, what: &str) {
    tokio::time::timeout(WAIT, async {
        while agent.requests() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: the agent had {} of {n} requests", agent.requests()));
}

/// `[{ addr = "…" }, …]` for a pool's backends.
pub fn backends(agents: &[EchoHandle]) -> String {
    let list: Vec<String> = agents
        .iter()
        .map(|a| format!("{{ addr = \"{}\" }}", a.addr()))
        .collect();
    format!("[{}]", list.join(", "))
}

/// The most common fixture: pool `p` with `backends` (a TOML array, e.g. from
/// [`backends`]) and route `all` sending everything to it. Sections a test needs
/// besides (`[listen]`, `[admin]`, more routes) go around it.
pub fn one_pool_toml(backends: &str) -> String {
    format!(
        "[[pools]]\nname = \"p\"\nbackends = {backends}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\n"
    )
}

/// A response read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The `x-agent` header (which replica answered), or "" for gateway answers.
    pub fn agent(&self) -> &str {
        self.headers
            .get("x-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `sluicegate-error` header, or "".
    pub fn error(&self) -> &str {
        self.headers
            .get("sluicegate-error")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The echo agent's JSON body.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one HTTP/1.1 request on a new connection and reads the whole response.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    tokio::time::timeout(WAIT, async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
    .await
    .expect("request finished in time")
}

/// `GET path` with `headers`.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path).header("host", "test.local");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(addr, req.body(Full::new(Bytes::new())).expect("request")).await
}
