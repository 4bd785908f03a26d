//! The discovery task: connect to the engine, list, follow events, re-list.
//!
//! One owned task per gateway. A *session* is one connection: negotiate the API
//! version, list (and publish), then follow the event stream from just before the
//! list, re-listing on a debounce after relevant events and on a resync timer.
//! Any error ends the session; the last published set stays, and the task
//! reconnects with exponential backoff. Stop events of known containers become
//! [`DrainHint`]s at once. The pure parts live in `labels`, `network` and `set`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::container::ListContainersOptions;
use bollard::errors::Error as BollardError;
use bollard::models::ContainerInspectResponse;
use bollard::system::EventsOptions;
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::labels::is_candidate;
use super::network::{find_own, own_id_candidates, OwnContainer};
use super::set::{build, Context, Projects};
use super::{DiscoveredSet, DiscoveryStatus, DrainHint, Options};
use crate::control_plane::config::spec::DockerSpec;

/// Queued drain hints before new ones are dropped (the set carries the
/// `draining` mark too, so a dropped hint only delays the drain to the re-list).
const HINT_QUEUE: usize = 256;
/// Containers inspected concurrently during a re-list.
const INSPECT_CONCURRENCY: usize = 8;
/// Why a session with the engine ended (the task logs it and reconnects).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The engine's unix socket cannot be opened; the text says why and what fixes it.
    #[error("{0}")]
    Socket(String),
    /// `DOCKER_HOST` (or `Options::docker_host`) has a scheme we cannot use.
    #[error(
        "unsupported Docker host {0:?}; use unix:///path, tcp://host:port or http://host:port"
    )]
    Scheme(String),
    /// The engine could not be reached or answered with an error.
    #[error("Docker API: {0}")]
    Api(#[from] BollardError),
    /// The event stream closed (engine restart, proxy gone).
    #[error("the Docker event stream ended")]
    EventsEnded,
}

/// A running discovery task and what it publishes.
#[derive(Debug)]
pub struct DockerDiscovery {
    /// The whole current set; `changed()` fires only when it differs.
    pub sets: watch::Receiver<DiscoveredSet>,
    /// Immediate "stop sending to this container" hints.
    pub drains: mpsc::Receiver<DrainHint>,
    /// Connection state and list count.
    pub status: watch::Receiver<DiscoveryStatus>,
    /// The task; it ends when the shutdown token is cancelled.
    pub task: JoinHandle<()>,
}

impl DockerDiscovery {
    /// Starts discovering for `spec` until `shutdown` is cancelled. Never fails:
    /// an unreachable engine is retried with backoff while the set stays empty.
    pub fn spawn(spec: DockerSpec, options: Options, shutdown: CancellationToken) -> Self {
        let (sets_tx, sets) = watch::channel(DiscoveredSet::default());
        let (drains_tx, drains) = mpsc::channel(HINT_QUEUE);
        let (status_tx, status) = watch::channel(DiscoveryStatus::default());
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let hostname = read("/proc/sys/kernel/hostname").trim().to_owned();
        let worker = Worker {
            own_candidates: own_id_candidates(
                &read("/proc/self/cgroup"),
                &read("/proc/self/mountinfo"),
            ),
            hostname: (!hostname.is_empty()).then_some(hostname),
            spec,
            options,
            sets: sets_tx,
            drains: drains_tx,
            status: status_tx,
            draining: HashMap::new(),
            started: HashMap::new(),
            warned: HashMap::new(),
            own: None,
        };
        let task = tokio::spawn(worker.run(shutdown));
        DockerDiscovery {
            sets,
            drains,
            status,
            task,
        }
    }
}

mod events;

use events::ACTIONS;

struct Worker {
    spec: DockerSpec,
    options: Options,
    own_candidates: Vec<String>,
    hostname: Option<String>,
    sets: watch::Sender<DiscoveredSet>,
    drains: mpsc::Sender<DrainHint>,
    status: watch::Sender<DiscoveryStatus>,
    /// Container id → start time it had when a stop event marked it draining.
    draining: HashMap<String, String>,
    /// Container id → `State.StartedAt` from the last inspect.
    started: HashMap<String, String>,
    /// Container id → skip reason already logged (each is logged once).
    warned: HashMap<String, String>,
    /// The gateway's own container as last seen (logged when it changes).
    own: Option<OwnContainer>,
}

impl Worker {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = self.options.backoff_min;
        let mut failures = 0u32;
        loop {
            let lists_before = self.status.borrow().lists;
            let ended = tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = self.session() => ended,
            };
            let error = match ended {
                Ok(()) => return,
                Err(error) => error,
            };
            if self.status.borrow().lists > lists_before {
                backoff = self.options.backoff_min;
                failures = 0;
            }
            failures += 1;
            let never_listed = self.status.borrow().lists == 0;
            if failures == 1 && never_listed {
                // One line that says why, so `docker logs` of a gateway with no
                // backends names the problem (the socket, its permission, the fix).
                tracing::error!("docker discovery cannot list containers (not ready until it does; retrying): {error}");
            } else if failures == 1 {
                tracing::warn!(%error, "docker discovery: connection lost; keeping the last known backends and reconnecting");
            } else {
                tracing::debug!(%error, attempt = failures, "docker discovery: reconnect failed");
            }
            self.status.send_modify(|s| {
                s.connected = false;
                s.last_error = Some(error.to_string());
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.options.backoff_max);
        }
    }

    /// One connection: list, then follow events until something fails.
    async fn session(&mut self) -> Result<(), ConnectError> {
        let host = docker_host(self.options.docker_host.as_deref());
        if let Some(path) = host.strip_prefix("unix://") {
            // The HTTP client reports any socket failure as "client error (Connect)";
            // opening the socket first keeps the OS's reason (permission, missing).
            if let Err(error) = tokio::net::UnixStream::connect(path).await {
                return Err(ConnectError::Socket(socket_problem(path, &error)));
            }
        }
        let docker = connect(
            self.options.docker_host.as_deref(),
            self.options.request_timeout,
        )?
        .negotiate_version()
        .await?;
        // Events from just before the list are replayed, so none falls between.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().saturating_sub(1));
        self.relist(&docker).await?;
        tracing::info!(
            backends = self.sets.borrow().len(),
            "docker discovery: connected"
        );
        let filters = HashMap::from([
            ("type", vec!["container", "network"]),
            ("event", ACTIONS.to_vec()),
        ]);
        let mut events = docker.events(Some(EventsOptions::<&str> {
            since: Some(since.to_string()),
            until: None,
            filters,
        }));
        let mut relist_at: Option<Instant> = None;
        let mut resync = tokio::time::interval(self.options.resync);
        resync.reset();
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        if self.on_event(event) && relist_at.is_none() {
                            relist_at = Some(crate::clock::later(Instant::now(), self.options.debounce));
                        }
                    }
                    Some(Err(error)) => return Err(error.into()),
                    None => return Err(ConnectError::EventsEnded),
                },
                _ = sleep_until(relist_at.unwrap_or_else(Instant::now)), if relist_at.is_some() => {
                    relist_at = None;
                    self.relist(&docker).await?;
                }
                _ = resync.tick() => self.relist(&docker).await?,
            }
        }
    }

    /// Lists running containers, inspects the labelled ones of the considered
    /// projects, builds the set and publishes it if it changed.
    async fn relist(&mut self, docker: &Docker) -> Result<(), ConnectError> {
        let options = ListContainersOptions::<&str> {
            filters: HashMap::from([("status", vec!["running"])]),
            ..Default::default()
        };
        let list = docker.list_containers(Some(options)).await?;
        let own = find_own(&list, &self.own_candidates, self.hostname.as_deref());
        if own != self.own {
            match &own {
                Some(o) => tracing::info!(container = %o.id, project = ?o.project, networks = ?o.networks, "docker discovery: the gateway runs in this container; using its networks and project"),
                None => tracing::info!("docker discovery: the gateway runs outside Docker (or in an unknown container); all networks and projects are candidates"),
            }
            self.own.clone_from(&own);
        }
        let projects = Projects::resolve(&self.spec.projects, own.as_ref());
        let prefix = &*self.spec.label_prefix;
        let ids: Vec<String> = list
            .iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_some_and(|l| is_candidate(l, prefix) && projects.allows(l))
            })
            .filter_map(|c| c.id.clone())
            .collect();
        let inspected: Vec<Result<ContainerInspectResponse, BollardError>> =
            futures_util::stream::iter(ids)
                .map(|id| async move { docker.inspect_container(&id, None).await })
                .buffer_unordered(INSPECT_CONCURRENCY)
                .collect()
                .await;
        let mut containers = Vec::with_capacity(inspected.len());
        for result in inspected {
            match result {
                Ok(c) => containers.push(c),
                // Gone between list and inspect: it is simply not in this set.
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.started = containers
            .iter()
            .filter_map(|c| {
                let started = c.state.as_ref()?.started_at.clone()?;
                Some((c.id.clone()?, started))
            })
            .collect();
        self.draining.retain(|id, _| self.started.contains_key(id));
        let ctx = Context {
            prefix,
            network: self.spec.network.as_deref(),
            own: own.as_ref(),
            draining: &self.draining,
        };
        let set = build(&containers, &ctx);
        self.log_changes(&set);
        self.sets.send_if_modified(|current| {
            let changed = *current != set;
            if changed {
                *current = set;
            }
            changed
        });
        self.status.send_modify(|s| {
            s.connected = true;
            s.lists += 1;
            s.last_error = None;
        });
        Ok(())
    }

    /// Logs backends that came or went and each new skip reason once.
    fn log_changes(&mut self, next: &DiscoveredSet) {
        let current = self.sets.borrow().clone();
        for (pool, backends) in &next.pools {
            for b in backends {
                if current
                    .by_container(&b.container_id)
                    .map(|(_, old)| old.addr)
                    != Some(b.addr)
                {
                    tracing::info!(container = %b.container_name, %pool, addr = %b.addr, docker_healthy = b.docker_healthy, "docker discovery: backend added");
                }
            }
        }
        for (pool, backends) in &current.pools {
            for b in backends {
                if next.by_container(&b.container_id).is_none() {
                    tracing::info!(container = %b.container_name, %pool, addr = %b.addr, "docker discovery: backend removed");
                }
            }
        }
        let mut warned = HashMap::new();
        for s in &next.skipped {
            let reason = s.reason.to_string();
            if self.warned.get(&*s.container_id) != Some(&reason) {
                tracing::warn!(container = %s.container_name, "docker discovery: container skipped: {reason}");
            }
            warned.insert(s.container_id.to_string(), reason);
        }
        self.warned = warned;
    }
}

/// `host`, else `$DOCKER_HOST`, else the default socket.
fn docker_host(host: Option<&str>) -> String {
    host.map(str::to_owned)
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

/// Why the socket at `path` cannot be opened, and what fixes it, in one sentence.
fn socket_problem(path: &str, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    use std::os::unix::fs::MetadataExt;
    match error.kind() {
        ErrorKind::PermissionDenied => {
            let group = std::fs::metadata(path)
                .map(|m| format!("group {}", m.gid()))
                .unwrap_or_else(|_| "its group".to_owned());
            format!(
                "permission denied on the Docker socket {path}: this process is not in the socket's {group}; \
                 run it with that group (docker-compose: `export DOCKER_GID=$(stat -c %g {path})` before \
                 `docker-compose up`, used by `group_add`) or point DOCKER_HOST at a socket it may read"
            )
        }
        ErrorKind::NotFound => format!(
            "no Docker socket at {path}: mount the engine's socket there (`-v /var/run/docker.sock:{path}:ro`) \
             or set DOCKER_HOST"
        ),
        _ => format!("cannot connect to the Docker socket {path}: {error}"),
    }
}

/// A client for `host` (else `$DOCKER_HOST`, else the default socket).
fn connect(host: Option<&str>, timeout: Duration) -> Result<Docker, ConnectError> {
    let host = docker_host(host);
    let secs = timeout.as_secs().max(1);
    if let Some(path) = host.strip_prefix("unix://") {
        Ok(Docker::connect_with_unix(path, secs, API_DEFAULT_VERSION)?)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Ok(Docker::connect_with_http(&host, secs, API_DEFAULT_VERSION)?)
    } else {
        Err(ConnectError::Scheme(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_is_refused() {
        let e = connect(Some("ssh://host"), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, ConnectError::Scheme(_)), "{e}");
    }

    #[tokio::test]
    async fn a_missing_socket_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let path = path.to_str().unwrap();
        let error = tokio::net::UnixStream::connect(path).await.unwrap_err();
        let text = socket_problem(path, &error);
        assert!(
            text.starts_with(&format!("no Docker socket at {path}")),
            "{text}"
        );
    }

    #[test]
    fn permission_denied_names_the_group_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        std::fs::write(&path, "").unwrap();
        let path = path.to_str().unwrap();
        let error = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let text = socket_problem(path, &error);
        assert!(
            text.contains(&format!("permission denied on the Docker socket {path}")),
            "{text}"
        );
        assert!(text.contains("DOCKER_GID"), "{text}");
        assert!(text.contains("group "), "{text}");
    }
}
