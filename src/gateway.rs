//! Assembles a running gateway from a validated spec: controller task, proxy,
//! traffic listener, admin API, file reload and Docker discovery.
//!
//! This is what `sluicegate run`, `sluicegate demo` and the integration tests start.
//! [`Gateway::serve`] is the one place the background tasks are spawned; they share a
//! shutdown signal and are awaited (bounded) after the traffic listener drained.
//! With `[discovery.docker]`, `serve` waits (bounded) for the first container list
//! to be applied before it reports ready, so a gateway that just started does not
//! answer 503 for pools Docker is about to fill; an unreachable engine only
//! delays readiness by that bound (the pools stay empty until it answers).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{AdminError, AdminServer};
use crate::config::spec::{DockerSpec, Spec};
use crate::controller::task::{ControlHandle, DockerFeed, Task};
use crate::controller::SharedSnapshot;
use crate::discovery::{self, DockerDiscovery};
use crate::health::HealthEvent;
use crate::proxy::Proxy;
use crate::reload::{ReloadError, ReloadOptions, ReloadTrigger, Reloader};
use crate::server::{self, Drained, Limits};

/// Longest wait for the background tasks after the traffic drain.
const BACKGROUND_STOP: Duration = Duration::from_secs(5);
/// Longest wait at start for Docker's first container list.
const FIRST_LIST: Duration = Duration::from_secs(3);

/// How a gateway is run beyond what its spec says.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The config file the spec came from: enables hot reload (and is shown in the
    /// admin state). `None` for an embedded config.
    pub config_path: Option<PathBuf>,
    /// How the file is reloaded.
    pub reload: ReloadOptions,
    /// Engine address and timings of Docker discovery (used only with
    /// `[discovery.docker]`).
    pub discovery: discovery::Options,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Listen(std::io::Error),
    #[error(transparent)]
    Admin(AdminError),
    #[error(transparent)]
    Reload(ReloadError),
}

/// A gateway whose listeners are bound but not yet serving.
#[derive(Debug)]
pub struct Gateway {
    task: Task,
    control: ControlHandle,
    snapshot: SharedSnapshot,
    proxy: Arc<Proxy>,
    listener: TcpListener,
    limits: Limits,
    admin: Option<AdminServer>,
    reloader: Option<Reloader>,
    docker: Option<(DockerSpec, discovery::Options)>,
    ready: Arc<AtomicBool>,
}

impl Gateway {
    /// Builds the first snapshot and binds the listeners, without file reload.
    pub async fn bind(spec: Spec) -> Result<Gateway, GatewayError> {
        Gateway::bind_with(spec, Options::default()).await
    }

    /// Loads persisted admin overrides, builds the first snapshot, binds
    /// `[listen].http` and `[admin].listen`, and sets up reload of the config file.
    pub async fn bind_with(spec: Spec, options: Options) -> Result<Gateway, GatewayError> {
        let listener = server::bind(spec.listen.http)
            .await
            .map_err(GatewayError::Listen)?;
        let limits = Limits {
            header_read_timeout: spec.listen.header_read_timeout,
            max_connections: spec.listen.max_connections,
        };
        let admin_spec = spec.admin.clone();
        let docker = spec
            .discovery
            .docker
            .clone()
            .map(|d| (d, options.discovery.clone()));
        let (task, control, snapshot) = Task::new(spec, options.config_path.clone());
        let proxy = Arc::new(Proxy::new(Arc::clone(&snapshot), "http"));
        let ready = Arc::new(AtomicBool::new(false));
        let admin = match &admin_spec {
            Some(a) => Some(
                AdminServer::bind(a, control.clone(), Arc::clone(&ready))
                    .await
                    .map_err(GatewayError::Admin)?,
            ),
            None => None,
        };
        let reloader = match &options.config_path {
            Some(path) => Some(
                Reloader::new(path, options.reload.clone(), control.clone())
                    .map_err(GatewayError::Reload)?,
            ),
            None => None,
        };
        Ok(Gateway {
            task,
            control,
            snapshot,
            proxy,
            listener,
            limits,
            admin,
            reloader,
            docker,
            ready,
        })
    }

    /// The traffic address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin API address actually bound, if `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The snapshot the data plane reads.
    pub fn snapshot(&self) -> SharedSnapshot {
        Arc::clone(&self.snapshot)
    }

    /// Sends changes to (and reads state from) the controller task.
    pub fn control(&self) -> ControlHandle {
        self.control.clone()
    }

    /// Forces a reload of the config file (what SIGHUP does), if one is watched.
    pub fn reload_trigger(&self) -> Option<ReloadTrigger> {
        self.reloader.as_ref().map(Reloader::trigger)
    }

    /// Every health transition from now on (probe status changes, ejections).
    pub fn subscribe_health(&self) -> tokio::sync::broadcast::Receiver<HealthEvent> {
        self.task.subscribe_health()
    }

    /// Serves until `shutdown` resolves, then drains for at most `drain_timeout`.
    /// `/readyz` answers 503 from the moment the drain starts.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
        drain_timeout: Duration,
    ) -> Drained {
        let Gateway {
            task,
            control,
            snapshot: _,
            proxy,
            listener,
            limits,
            admin,
            reloader,
            docker,
            ready,
        } = self;
        let mut task = task;
        let background = CancellationToken::new();
        let tasks = TaskTracker::new();
        let first_list = docker.map(|(spec, options)| {
            let d = DockerDiscovery::spawn(spec, options, background.clone());
            let status = d.status.clone();
            task.attach_docker(DockerFeed {
                sets: d.sets,
                drains: d.drains,
                status: d.status,
            });
            tasks.spawn(async move {
                if let Err(err) = d.task.await {
                    tracing::error!(%err, "docker discovery task failed");
                }
            });
            status
        });
        tasks.spawn(task.run(background.clone()));
        if let Some(admin) = admin {
            tasks.spawn(admin.serve(background.clone()));
        }
        if let Some(reloader) = reloader {
            tasks.spawn(reloader.run(background.clone()));
        }
        tasks.close();
        if let Some(status) = first_list {
            first_list_applied(status, &control).await;
        }
        ready.store(true, Ordering::Release);
        let shutdown = async {
            shutdown.await;
            ready.store(false, Ordering::Release);
        };
        let drained = server::serve(listener, proxy, limits, shutdown, drain_timeout).await;
        background.cancel();
        drop(control);
        if tokio::time::timeout(BACKGROUND_STOP, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time");
        }
        drained
    }
}

/// Waits (at most [`FIRST_LIST`]) until discovery listed the engine once and the
/// controller task took that set in.
async fn first_list_applied(
    mut status: tokio::sync::watch::Receiver<discovery::DiscoveryStatus>,
    control: &ControlHandle,
) {
    let listed = tokio::time::timeout(FIRST_LIST, status.wait_for(|s| s.lists > 0))
        .await
        .is_ok_and(|r| r.is_ok());
    if listed {
        // The set is published before the status; the task takes discovery news
        // before queued requests, so once this answers the set is live.
        if control.state().await.is_none() {
            tracing::debug!("controller stopped before the first Docker list was applied");
        }
    } else {
        let error = status.borrow().last_error.clone().unwrap_or_default();
        tracing::warn!(%error, "no container list from Docker yet; serving without discovered backends until it answers");
    }
}
