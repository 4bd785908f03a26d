//! A gateway started from a real `routes.toml` in a temp dir, with its admin API
//! and hot reload (short debounce), plus helpers to call the API and rewrite the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use sluicegate::discovery::Options as DiscoveryOptions;
use sluicegate::state_view::StateView;
use sluicegate::testing::control_plane::controller::task::{ControlHandle, Counters};
use sluicegate::testing::control_plane::rollout::RolloutHandle;
use sluicegate::testing::tasks::TaskWatch;
use sluicegate::Drained;
use sluicegate::ReloadOptions;
use sluicegate::{Gateway, GatewayOptions as Options};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{send, Reply, WAIT};

/// Debounce used by tests: short, so a rewrite is live within tens of ms.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// A gateway with `[admin]` on 127.0.0.1:0, serving a config file it watches.
pub struct LiveGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub control: ControlHandle,
    /// Starts and steers rollouts (and signals their changes).
    pub rollouts: RolloutHandle,
    /// The gateway's watched background tasks (tests end them on purpose).
    pub tasks: TaskWatch,
    pub path: PathBuf,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Drained>>,
}

/// The file for `body` (pools, routes): `[listen]` and `[admin]` are added here;
/// `listen_extra` goes into `[listen]`, `admin_extra` into `[admin]`.
pub fn config_text(body: &str, listen_extra: &str, admin_extra: &str) -> String {
    format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\n{listen_extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n{admin_extra}\n{body}"
    )
}

impl LiveGateway {
    /// Writes `text` as `routes.toml` in a new temp dir and starts from it.
    pub async fn start(text: &str) -> LiveGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        LiveGateway::start_in(dir, text).await
    }

    /// Starts from `text` written as `routes.toml` in `dir`.
    pub async fn start_in(dir: tempfile::TempDir, text: &str) -> LiveGateway {
        LiveGateway::start_with(dir, text, DiscoveryOptions::default()).await
    }

    /// Starts from `text` in `dir` with these Docker discovery options.
    pub async fn start_with(
        dir: tempfile::TempDir,
        text: &str,
        discovery: DiscoveryOptions,
    ) -> LiveGateway {
        let path = dir.path().join("routes.toml");
        let text = &super::with_fast_path_switch(text);
        std::fs::write(&path, text).expect("write config");
        let spec = sluicegate::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let options = Options {
            config_path: Some(path.clone()),
            reload: ReloadOptions {
                watch: true,
                debounce: DEBOUNCE,
                sighup: false,
            },
            discovery,
            ..Default::default()
        };
        let gateway = Gateway::bind_with(spec, options).await.expect("bind");
        let addr = gateway.local_addr().expect("addr");
        let admin = gateway.admin_addr().expect("admin listener");
        let control = gateway.control();
        let rollouts = gateway.rollouts();
        let tasks = gateway.task_watch();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        LiveGateway {
            addr,
            admin,
            control,
            rollouts,
            tasks,
            path,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Replaces the config file the way editors and config tools do: write a
    /// temporary file beside it, then rename it over the old one.
    pub fn rewrite(&self, text: &str) {
        let tmp = self.dir.path().join(".routes.toml.tmp");
        std::fs::write(&tmp, super::with_fast_path_switch(text)).expect("write temp config");
        std::fs::rename(&tmp, &self.path).expect("rename config");
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        *self.control.counters().borrow()
    }

    /// Waits (bounded) until the counters satisfy `done`.
    pub async fn wait_counters(&self, done: impl Fn(&Counters) -> bool) -> Counters {
        let mut rx = self.control.counters();
        let c = tokio::time::timeout(WAIT, rx.wait_for(|c| done(c)))
            .await
            .expect("counters reached in time")
            .expect("controller running");
        *c
    }

    /// Rewrites the file and waits until the reload was applied.
    pub async fn reload(&self, text: &str) {
        let before = self.counters().reloads_ok;
        self.rewrite(text);
        self.wait_counters(|c| c.reloads_ok > before).await;
    }

    /// One admin API call with an optional JSON body.
    pub async fn api(&self, method: Method, path: &str, body: Option<&str>) -> Reply {
        api(self.admin, method, path, body, None).await
    }

    /// `GET /api/v1/state`, decoded.
    pub async fn state(&self) -> StateView {
        let r = self.api(Method::GET, "/api/v1/state", None).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        serde_json::from_slice(&r.body).expect("state JSON")
    }

    /// `PUT …/split` that must succeed.
    pub async fn split(&self, route: &str, json: &str) {
        let path = format!("/api/v1/routes/{route}/split");
        let r = self.api(Method::PUT, &path, Some(json)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    /// Stops accepting, waits for the drain, and hands back the directory (to
    /// start again from the same files).
    pub async fn stop(mut self) -> (Drained, tempfile::TempDir) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        let drained = tokio::time::timeout(WAIT, task)
            .await
            .expect("drain within bound")
            .expect("serve task");
        let dir = tempfile::tempdir().expect("tempdir");
        (drained, std::mem::replace(&mut self.dir, dir))
    }
}

impl Drop for LiveGateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// One admin call to `admin`, with a bearer `token` if given.
pub async fn api(
    admin: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Reply {
    let write = !matches!(method, Method::GET | Method::HEAD);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", admin.to_string());
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    // Writes are JSON, bodiless ones included (the admin API refuses others).
    if body.is_some() || write {
        req = req.header("content-type", "application/json");
    }
    let body = Full::new(Bytes::from(body.unwrap_or("").to_owned()));
    send(admin, req.body(body).expect("request")).await
}
