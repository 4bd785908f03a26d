//! Assembles a running gateway from a validated spec: controller task, rollout
//! manager, proxy, traffic listeners (HTTP and, with `listen.https`, HTTPS), admin
//! API (with `/metrics`), file reload, certificate reload, Docker discovery and
//! metrics upkeep.
//! With `[discovery.swarm]`, Swarm discovery feeds the controller the same way
//! (and the same first-list wait applies); its export and its "cannot reach the
//! swarm" reason are shared with the admin API.
//!
//! With `[cluster]`, a poller reads the shared store and the controller task
//! writes admin changes to it (see `crate::control_plane::cluster`); `serve` waits (bounded)
//! for the first read to be applied, like discovery's first list.
//!
//! This is what `sluicegate run`, `sluicegate demo` and the integration tests start.
//! [`Gateway::bind_with`] loads the TLS files first (refusing to start on a bad
//! one), then binds every socket, so every startup error surfaces before serving.
//! [`Gateway::serve`] is the one place the background tasks are spawned; they share a
//! shutdown signal and are awaited (bounded) after the traffic listeners drained
//! together.
//! With `[discovery.docker]`, `serve` waits (bounded) for the first container list
//! to be applied before it reports ready, so a gateway that just started does not
//! answer 503 for pools Docker is about to fill; an unreachable engine only
//! delays serving by that bound (the pools stay empty until it answers). `/readyz`
//! stays 503 until every configured discovery source has listed once
//! ([`discovery::ListedGate`]): a gateway that never reached the engine is not
//! healthy, one that listed and then lost the connection keeps serving and stays ready.
//! Likewise it waits (bounded by the probes' own first delay and timeout) until every
//! probed backend has had its first probe: a probed backend gets no traffic before
//! its first pass, so serving earlier would answer 503 for pools that are up. The
//! listeners are bound meanwhile, so connections made in that time wait in the
//! kernel's accept queue and are served, not refused.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control_plane::admin::{AdminError, AdminServer, MetricsSource};
use crate::control_plane::cluster::{self, ClusterStore, Identity};
use crate::control_plane::config::spec::{DockerSpec, InitialHealth, Spec, SwarmSpec};
use crate::control_plane::config::ConfigErrors;
use crate::control_plane::controller::task::{ClusterFeed, ControlHandle, DockerFeed, Task};
use crate::control_plane::controller::SharedSnapshot;
use crate::control_plane::discovery::swarm::{self, Board, SwarmDiscovery};
use crate::control_plane::discovery::{self, DockerDiscovery};
use crate::control_plane::reload::{ReloadError, ReloadOptions, ReloadTrigger, Reloader};
use crate::control_plane::rollout::{Manager, RolloutHandle};
use crate::data_plane::backend::BackendState;
use crate::data_plane::health::{probe, HealthEvent};
use crate::data_plane::proxy::Proxy;
use crate::data_plane::server::{
    self, Drained, Handler, Limits, Listener, RedirectHttps, Transport,
};
use crate::data_plane::tls::watch::{CertWatcher, ReloadStatus};
use crate::data_plane::tls::{self, Frontend};
use crate::metrics::{Exporter, MetricsError, Registrar};
use crate::tasks::{self as watched, TaskWatch};

/// Longest wait for the background tasks after the traffic drain.
const BACKGROUND_STOP: Duration = Duration::from_secs(5);
/// Longest wait at start for Docker's first container list.
const FIRST_LIST: Duration = Duration::from_secs(3);
/// Allowance beyond a probe's own bound (first delay + timeout) for the task to
/// start and record its result on a busy machine.
const FIRST_PROBE_SLACK: Duration = Duration::from_millis(500);
/// How often the start-up wait looks at the probes' results.
const FIRST_PROBE_CHECK: Duration = Duration::from_millis(10);

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
    /// Timings of Swarm discovery (used only with `[discovery.swarm]`); its
    /// engine is `discovery.docker_host` unless set here.
    pub swarm: swarm::Options,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A traffic listener could not be bound.
    #[error(transparent)]
    Listen(#[from] std::io::Error),
    /// A TLS file is missing, unparsable or mismatched (each error has its key path).
    #[error("TLS files are invalid:\n{0}")]
    Tls(ConfigErrors),
    /// The certificate directories cannot be watched for reloads.
    #[error("cannot watch the certificate files for changes: {0}")]
    CertWatch(notify::Error),
    /// The admin API could not start.
    #[error(transparent)]
    Admin(AdminError),
    /// The config file cannot be watched for reloads.
    #[error(transparent)]
    Reload(ReloadError),
    #[error(transparent)]
    Metrics(MetricsError),
    /// `[cluster]` names a store that cannot be used.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A gateway whose listeners are bound but not yet serving.
#[derive(Debug)]
pub struct Gateway {
    task: Task,
    control: ControlHandle,
    manager: Manager,
    rollouts: RolloutHandle,
    snapshot: SharedSnapshot,
    /// `[listen].http` first, then `[listen].https` if set.
    listeners: Vec<Listener>,
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    frontend: Option<Frontend>,
    cert_watcher: Option<CertWatcher>,
    admin: Option<AdminServer>,
    reloader: Option<Reloader>,
    docker: Option<(DockerSpec, discovery::Options)>,
    swarm: Option<(SwarmSpec, swarm::Options)>,
    board: Arc<Board>,
    ready: Arc<AtomicBool>,
    /// Which background tasks ended unplanned (`/readyz` reports them).
    watch: TaskWatch,
    /// Present when metrics are on (with `[admin]`).
    exporter: Option<Exporter>,
    /// The shared store and how to read it and the peers, with `[cluster]`.
    cluster: Option<ClusterRun>,
}

/// What `serve` starts for `[cluster]`.
#[derive(Debug)]
struct ClusterRun {
    store: Arc<dyn ClusterStore>,
    poll_interval: Duration,
    peers: Vec<crate::control_plane::config::spec::ManagerUrl>,
    token: Option<String>,
    identity: Identity,
}

impl Gateway {
    /// Builds the first snapshot and binds the listeners, without file reload.
    pub async fn bind(spec: Spec) -> Result<Gateway, GatewayError> {
        Gateway::bind_with(spec, Options::default()).await
    }

    /// Loads the TLS files, loads persisted admin overrides, builds the first
    /// snapshot, binds `[listen].http`, `[listen].https` and `[admin].listen`, and
    /// sets up reload of the config file and of the certificates.
    pub async fn bind_with(spec: Spec, options: Options) -> Result<Gateway, GatewayError> {
        Gateway::bind_inner(spec, options, None).await
    }

    /// [`bind_with`](Self::bind_with), with `[cluster]` on `store` as `identity`
    /// instead of the store the table names and the environment's identity (tests
    /// share a store in memory between gateways of one process).
    #[cfg(test)]
    pub(crate) async fn bind_with_cluster(
        spec: Spec,
        options: Options,
        store: Arc<dyn ClusterStore>,
        identity: Identity,
    ) -> Result<Gateway, GatewayError> {
        Gateway::bind_inner(spec, options, Some((store, identity))).await
    }

    async fn bind_inner(
        spec: Spec,
        options: Options,
        cluster_given: Option<(Arc<dyn ClusterStore>, Identity)>,
    ) -> Result<Gateway, GatewayError> {
        let loaded = tls::load(&spec).map_err(GatewayError::Tls)?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let http = server::bind(spec.listen.http).await?;
        let https = match spec.listen.https {
            Some(addr) => Some(server::bind(addr).await?),
            None => None,
        };
        let http_addr = http.local_addr()?;
        let https_addr = https.as_ref().map(|l| l.local_addr()).transpose()?;
        let limits = Limits {
            header_read_timeout: spec.listen.header_read_timeout,
            max_connections: spec.listen.max_connections,
            client: spec.listen.client,
        };
        let redirect = spec.listen.redirect_https;
        let http1_fast_path = spec.listen.http1_fast_path;
        let admin_spec = spec.admin.clone();
        // Before the first snapshot: its metric handles register with this
        // gateway's own recorder (never the process's global one).
        let exporter = if spec.metrics_enabled() {
            Some(Exporter::build().map_err(GatewayError::Metrics)?)
        } else {
            None
        };
        let metrics = exporter
            .as_ref()
            .map_or_else(Registrar::off, Exporter::registrar);
        let docker = spec.discovery.docker.clone().map(|d| {
            let mut discovery = options.discovery.clone();
            discovery.metrics = metrics.clone();
            (d, discovery)
        });
        let swarm = spec.discovery.swarm.clone().map(|s| {
            let mut o = options.swarm.clone();
            if o.docker_host.is_none() {
                o.docker_host.clone_from(&options.discovery.docker_host);
            }
            if o.manager_token.is_none() {
                o.manager_token = swarm::manager_token(&spec);
            }
            (s, o)
        });
        let cluster = match &spec.cluster {
            Some(c) => {
                let (store, identity) = match cluster_given {
                    Some(given) => given,
                    None => (
                        cluster::open(c).map_err(GatewayError::Cluster)?,
                        Identity::from_env(),
                    ),
                };
                let token = spec
                    .admin
                    .as_ref()
                    .and_then(|a| a.token_env.as_deref())
                    .and_then(|name| std::env::var(name).ok())
                    .filter(|t| !t.is_empty());
                Some(ClusterRun {
                    store,
                    poll_interval: c.poll_interval,
                    peers: c.peers.clone(),
                    token,
                    identity,
                })
            }
            None => None,
        };
        let (task, control, snapshot) =
            Task::new(spec, options.config_path.clone(), metrics.clone());
        let (manager, rollouts) = Manager::new(control.clone(), Arc::clone(&snapshot));

        let http_handler = match (redirect, https_addr) {
            (Some(redirect), Some(https_addr)) => Handler::Redirect(Arc::new(RedirectHttps::new(
                redirect.port.unwrap_or(https_addr.port()),
            ))),
            _ => Handler::Proxy(Arc::new(Proxy::new(
                Arc::clone(&snapshot),
                "http",
                http1_fast_path,
            ))),
        };
        let mut listeners = vec![Listener {
            tcp: http,
            transport: Transport::Plain,
            handler: http_handler,
            limits,
            metrics: metrics.clone(),
            http1_fast_path,
        }];
        let frontend = loaded.frontend;
        let mut cert_watcher = None;
        if let (Some(tcp), Some(frontend)) = (https, &frontend) {
            cert_watcher = Some(
                CertWatcher::start(Arc::clone(&frontend.store), tls::provider())
                    .map_err(GatewayError::CertWatch)?,
            );
            listeners.push(Listener {
                tcp,
                transport: Transport::Tls {
                    acceptor: frontend.acceptor.clone(),
                    handshake_timeout: frontend.handshake_timeout,
                },
                handler: Handler::Proxy(Arc::new(Proxy::new(
                    Arc::clone(&snapshot),
                    "https",
                    http1_fast_path,
                ))),
                limits,
                metrics: metrics.clone(),
                http1_fast_path,
            });
        }

        let ready = Arc::new(AtomicBool::new(false));
        let watch = task.task_watch();
        let admin = match (&admin_spec, &exporter) {
            (Some(a), Some(exporter)) => {
                let metrics = MetricsSource::new(exporter.clone(), Arc::clone(&snapshot));
                Some(
                    AdminServer::bind(
                        a,
                        control.clone(),
                        rollouts.clone(),
                        Arc::clone(&ready),
                        watch.clone(),
                        metrics,
                    )
                    .await
                    .map_err(GatewayError::Admin)?,
                )
            }
            // Metrics are on exactly when [admin] is: the exporter exists with it.
            _ => None,
        };
        let board = admin.as_ref().map_or_else(Arc::default, AdminServer::board);
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
            manager,
            rollouts,
            snapshot,
            listeners,
            http_addr,
            https_addr,
            frontend,
            cert_watcher,
            admin,
            reloader,
            docker,
            swarm,
            board,
            ready,
            watch,
            exporter,
            cluster,
        })
    }

    /// Which background tasks ended while the gateway ran.
    pub fn task_watch(&self) -> TaskWatch {
        self.watch.clone()
    }

    /// The HTTP traffic address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.http_addr)
    }

    /// The HTTPS address actually bound, when `listen.https` is set.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The admin API address actually bound, if `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The HTTPS listener's TLS side (its live certificate table), if any.
    pub fn tls_frontend(&self) -> Option<&Frontend> {
        self.frontend.as_ref()
    }

    /// Follows certificate reloads (attempts, publications, errors), if HTTPS is on.
    pub fn cert_reloads(&self) -> Option<watch::Receiver<ReloadStatus>> {
        self.cert_watcher.as_ref().map(CertWatcher::status)
    }

    /// The snapshot the data plane reads.
    pub fn snapshot(&self) -> SharedSnapshot {
        Arc::clone(&self.snapshot)
    }

    /// Sends changes to (and reads state from) the controller task.
    pub fn control(&self) -> ControlHandle {
        self.control.clone()
    }

    /// Starts and steers rollouts (what `/api/v1/rollouts` uses).
    pub fn rollouts(&self) -> RolloutHandle {
        self.rollouts.clone()
    }

    /// Forces a reload of the config file (what SIGHUP does), if one is watched.
    pub fn reload_trigger(&self) -> Option<ReloadTrigger> {
        self.reloader.as_ref().map(Reloader::trigger)
    }

    /// Every health transition from now on (probe status changes, ejections).
    pub fn subscribe_health(&self) -> tokio::sync::broadcast::Receiver<HealthEvent> {
        self.task.subscribe_health()
    }

    /// Serves every traffic listener until `shutdown` resolves, then drains them
    /// together for at most `drain_timeout`. Accepting begins after the start-up
    /// waits (Docker's first list, the first probes; see the module documentation),
    /// which `shutdown` cuts short. `/readyz` answers 503 until then and again from
    /// the moment the drain starts.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
        drain_timeout: Duration,
    ) -> Drained {
        let Gateway {
            task,
            control,
            mut manager,
            rollouts,
            listeners,
            cert_watcher,
            admin,
            reloader,
            docker,
            swarm,
            board,
            ready,
            watch,
            exporter,
            snapshot,
            cluster,
            ..
        } = self;
        let mut task = task;
        let background = CancellationToken::new();
        let tasks = TaskTracker::new();
        let first_list = docker.map(|(spec, options)| {
            let d = DockerDiscovery::spawn(spec, options, background.clone());
            let status = d.status.clone();
            if let Some(admin) = &admin {
                admin.listed_gate().watch("docker", d.status.clone());
            }
            task.attach_docker(DockerFeed {
                sets: d.sets,
                drains: d.drains,
                status: d.status,
            });
            tasks.spawn(watch.watched(watched::name::DISCOVERY, d.task, background.clone()));
            status
        });
        let first_list = first_list.or_else(|| {
            let (spec, options) = swarm?;
            let d = SwarmDiscovery::spawn(spec, options, board, background.clone());
            let status = d.status.clone();
            task.attach_docker(DockerFeed {
                sets: d.sets,
                drains: d.drains,
                status: d.status,
            });
            tasks.spawn(watch.watched(watched::name::DISCOVERY, d.task, background.clone()));
            Some(status)
        });
        // Each task is watched: one that ends before `background` is cancelled is
        // logged, counted and reported by `/readyz`.
        let stop = || background.clone();
        let first_read = cluster.map(|run| {
            let (tx, rx) = cluster::poll::channel();
            let peers = (!run.peers.is_empty()).then(|| {
                // The rollout gate sums the peers' traffic (`cluster::counters`).
                manager.sum_peers(cluster::counters::HttpPeers::new(
                    run.peers.clone(),
                    run.token.clone(),
                    run.identity.id.clone(),
                ));
                let (peers_tx, peers_rx) = watch::channel(Vec::new());
                let read = cluster::peers::run(run.peers, run.token, peers_tx, stop());
                tasks.spawn(watch.spawn(watched::name::CLUSTER_PEERS, read, stop()));
                peers_rx
            });
            task.attach_cluster(ClusterFeed {
                store: Arc::clone(&run.store),
                observed: rx.clone(),
                identity: run.identity,
                peers,
            });
            let poll = cluster::poll::run(run.store, run.poll_interval, tx, stop());
            tasks.spawn(watch.spawn(watched::name::CLUSTER, poll, stop()));
            rx
        });
        let run = task.run(stop());
        tasks.spawn(watch.spawn(watched::name::CONTROLLER, run, stop()));
        let run = manager.run(stop());
        tasks.spawn(watch.spawn(watched::name::ROLLOUTS, run, stop()));
        if let Some(admin) = admin {
            let run = admin.serve(stop());
            tasks.spawn(watch.spawn(watched::name::ADMIN, run, stop()));
        }
        if let Some(reloader) = reloader {
            let run = reloader.run(stop());
            tasks.spawn(watch.spawn(watched::name::RELOAD, run, stop()));
        }
        if let Some(exporter) = exporter {
            let run = exporter.run_upkeep(stop());
            tasks.spawn(watch.spawn(watched::name::METRICS, run, stop()));
        }
        tasks.close();
        let mut shutdown = std::pin::pin!(shutdown);
        let start_up = async {
            if let Some(status) = first_list {
                first_list_applied(status, &control).await;
            }
            if let Some(read) = first_read {
                first_read_applied(read, &control).await;
            }
            first_probes_done(&snapshot).await;
        };
        // A stop during the start-up waits ends them: nothing is served yet.
        let stopped_early = tokio::select! {
            () = start_up => false,
            () = shutdown.as_mut() => true,
        };
        drop(snapshot);
        if !stopped_early {
            ready.store(true, Ordering::Release);
        }

        let stop = CancellationToken::new();
        let serving = join_all(listeners.into_iter().map(|listener| {
            server::serve(listener, stop.clone().cancelled_owned(), drain_timeout)
        }));
        let signal = async {
            if !stopped_early {
                shutdown.await;
            }
            ready.store(false, Ordering::Release);
            stop.cancel();
        };
        let ((), drained) = tokio::join!(signal, serving);

        background.cancel();
        drop(control);
        drop(rollouts);
        drop(cert_watcher);
        if tokio::time::timeout(BACKGROUND_STOP, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time");
        }
        if drained.contains(&Drained::TimedOut) {
            Drained::TimedOut
        } else {
            Drained::Clean
        }
    }
}

/// Waits until every probed backend of the current snapshot has a first probe
/// result (pass or fail), at most as long as the slowest of those probes can take
/// ([`probe::first_result_within`] + [`FIRST_PROBE_SLACK`]).
async fn first_probes_done(snapshot: &SharedSnapshot) {
    let current = snapshot.load_full();
    let mut waiting: Vec<Arc<BackendState>> = Vec::new();
    let mut bound = Duration::ZERO;
    for pool in current.pools() {
        // `initial = "healthy"`: traffic at once, nothing to wait for.
        let Some(spec) = pool
            .policy()
            .probe
            .as_ref()
            .filter(|spec| spec.initial != InitialHealth::Healthy)
        else {
            continue;
        };
        bound = bound.max(probe::first_result_within(spec));
        waiting.extend(pool.backends().map(|b| Arc::clone(&b.state)));
    }
    drop(current);
    if waiting.is_empty() {
        return;
    }
    let started = tokio::time::Instant::now();
    let deadline = crate::clock::later(started, bound.saturating_add(FIRST_PROBE_SLACK));
    // No event says "probed" when a first probe fails without changing the status
    // (`fall` > 1); the results are atomics, read a few times a start-up.
    let mut check = tokio::time::interval(FIRST_PROBE_CHECK);
    loop {
        waiting.retain(|state| state.health().last_probe().is_none());
        if waiting.is_empty() {
            tracing::info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "first health probes done; serving"
            );
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                unprobed = waiting.len(),
                "some backends have not been probed yet; serving without them until they pass"
            );
            return;
        }
        check.tick().await;
    }
}

/// Waits (at most [`FIRST_LIST`]) until the cluster store was read once and the
/// controller task applied what it holds (an unreachable store only delays
/// serving by that bound; the gateway then starts from its config file).
async fn first_read_applied(
    mut read: watch::Receiver<Option<cluster::poll::Observation>>,
    control: &ControlHandle,
) {
    let seen = tokio::time::timeout(FIRST_LIST, read.wait_for(|o| o.is_some()))
        .await
        .is_ok_and(|r| r.is_ok());
    if seen {
        // The task takes store reads before queued requests: once this answers,
        // what was read is live.
        if control.state().await.is_none() {
            tracing::debug!("controller stopped before the first cluster read was applied");
        }
    } else {
        tracing::warn!(
            "no answer from the cluster store yet; serving from the config file until it answers"
        );
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
