//! Owner of the probe tasks: one per backend of every pool with `[pools.health]`.
//!
//! [`HealthSupervisor::reconcile`] is called by the controller with every snapshot it
//! publishes. It starts a task for each probed backend that has none, restarts a task
//! whose probe settings changed (the backend keeps its status and counters: they live
//! in its `BackendState`), and cancels tasks whose backend or probe went away. The
//! first snapshot's backends have their first probes spread; a backend that appears
//! in a later one is probed at once (`probe::FirstProbe`). Tasks
//! run on a `TaskTracker`, so [`HealthSupervisor::probes`] counts tasks actually alive
//! (a cancelled task leaves the count when it has really ended), and dropping the
//! supervisor cancels them all.
//!
//! It also owns the health event channel ([`HealthSupervisor::subscribe`]), and
//! watches its probe tasks ([`HealthSupervisor::task_watch`]): a probe that ends
//! before it was cancelled is reported as the `probes` task ending.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::Authority;
use http::Uri;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::grpc;
use super::probe::{self, FirstProbe, ProbeTarget};
use super::state::HealthStatus;
use super::{HealthEvent, EVENT_CAPACITY};
use crate::control_plane::config::spec::{PoolName, ProbeSpec};
use crate::data_plane::backend::BackendState;
use crate::data_plane::snapshot::Snapshot;
use crate::tasks::{self, TaskWatch};

/// Starts, restarts and stops probe tasks as snapshots change.
#[derive(Debug)]
pub struct HealthSupervisor {
    tasks: HashMap<(PoolName, SocketAddr), ProbeTask>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    events: broadcast::Sender<HealthEvent>,
    watch: TaskWatch,
    /// Whether a snapshot was reconciled already: the backends of the first are the
    /// start-up set.
    started: bool,
}

#[derive(Debug)]
struct ProbeTask {
    state: Arc<BackendState>,
    spec: Arc<ProbeSpec>,
    cancel: CancellationToken,
}

impl HealthSupervisor {
    /// A supervisor with no tasks.
    pub fn new() -> Self {
        HealthSupervisor {
            tasks: HashMap::new(),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            events: broadcast::channel(EVENT_CAPACITY).0,
            watch: TaskWatch::new(),
            started: false,
        }
    }

    /// The sender pools publish on (handed to each `PoolHealth`).
    pub fn events(&self) -> broadcast::Sender<HealthEvent> {
        self.events.clone()
    }

    /// Every health transition from now on: probe status changes, ejections,
    /// probation results. A receiver more than [`EVENT_CAPACITY`] behind loses the
    /// oldest events (`RecvError::Lagged`); the backend state stays the truth.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }

    /// Where the probe tasks are watched; the gateway watches its other tasks
    /// there too, so one list says which ended.
    pub fn task_watch(&self) -> TaskWatch {
        self.watch.clone()
    }

    /// Probe tasks alive right now.
    pub fn probes(&self) -> usize {
        self.tracker.len()
    }

    /// Makes the running probe tasks match `snapshot`, and wakes every pool's held
    /// requests (the snapshot may hold a backend they can use).
    pub fn reconcile(&mut self, snapshot: &Snapshot) {
        let mut next = HashMap::with_capacity(self.tasks.len());
        // Tasks to start once the number of new backends is known.
        let mut starts = Vec::new();
        for pool in snapshot.pools() {
            let probe = pool.policy().probe.as_ref();
            for backend in pool.backends() {
                let key = (pool.name.clone(), backend.addr);
                let old = self.tasks.remove(&key);
                let Some(spec) = probe else {
                    if let Some(old) = old {
                        // The probe was removed from a pool: its backends are
                        // healthy again, as in a pool that never had one.
                        old.cancel.cancel();
                        backend.state.health().set_status(HealthStatus::Healthy);
                    }
                    continue;
                };
                let task = match old {
                    Some(task)
                        if Arc::ptr_eq(&task.state, &backend.state) && task.spec == *spec =>
                    {
                        task
                    }
                    old => {
                        // Same state, new settings: a restart, not a new backend.
                        let restart = old
                            .as_ref()
                            .is_some_and(|old| Arc::ptr_eq(&old.state, &backend.state));
                        if let Some(old) = old {
                            old.cancel.cancel();
                        }
                        let target = ProbeTarget {
                            pool: Arc::clone(pool.health()),
                            state: Arc::clone(&backend.state),
                            spec: Arc::clone(spec),
                        };
                        starts.push((key, target, restart || !self.started));
                        continue;
                    }
                };
                next.insert(key, task);
            }
            pool.health().wake_held();
        }
        for (_, gone) in self.tasks.drain() {
            gone.cancel.cancel();
        }
        let batch = starts.iter().filter(|(.., spread)| !spread).count();
        for (key, target, spread) in starts {
            let first = if spread {
                FirstProbe::Spread
            } else {
                FirstProbe::Newcomer { batch }
            };
            if let Some(task) = self.start(target, first) {
                next.insert(key, task);
            }
        }
        self.tasks = next;
        self.started = true;
    }

    /// Spawns the probe task of `target`; `None` (logged) outside a tokio runtime.
    fn start(&self, target: ProbeTarget, first: FirstProbe) -> Option<ProbeTask> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                backend = %target.state.addr(),
                "health probes need a tokio runtime; this backend is not probed"
            );
            return None;
        };
        let cancel = self.shutdown.child_token();
        let task = ProbeTask {
            state: Arc::clone(&target.state),
            spec: Arc::clone(&target.spec),
            cancel: cancel.clone(),
        };
        let addr = target.state.addr();
        let host = probe::host_header(&target.spec, addr);
        let authority = || {
            host.as_ref()
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .or_else(|| Authority::try_from(addr.to_string()).ok())
                .unwrap_or_else(|| Authority::from_static("localhost"))
        };
        let h2 = target.state.conns().h2().is_some();
        let probe = match &target.spec.grpc {
            // An HTTP/2 pool is probed on its own connections, in HTTP/2.
            None if h2 => {
                let path = target.spec.path.clone();
                let (authority, timeout) = (authority(), target.spec.timeout);
                let state = Arc::clone(&target.state);
                let prober = move || {
                    probe::http2_probe(Arc::clone(&state), path.clone(), authority.clone(), timeout)
                };
                runtime.spawn(probe::run(target, first, cancel.clone(), prober))
            }
            None => {
                let path = Uri::from(target.spec.path.clone());
                // The backend's own TLS client side: a pool whose `tls` changes gets new
                // backend states, so this task is restarted with the new one.
                let tls = target.state.conns().tls().cloned();
                let prober =
                    move || probe::http_probe(addr, path.clone(), host.clone(), tls.clone());
                runtime.spawn(probe::run(target, first, cancel.clone(), prober))
            }
            Some(spec) => {
                let check = grpc::Check::new(&spec.service, authority(), target.spec.timeout);
                let state = Arc::clone(&target.state);
                let prober = move || grpc::check(Arc::clone(&state), check.clone());
                runtime.spawn(probe::run(target, first, cancel.clone(), prober))
            }
        };
        self.tracker.spawn_on(
            self.watch.watched(tasks::name::PROBES, probe, cancel),
            &runtime,
        );
        Some(task)
    }
}

impl Default for HealthSupervisor {
    fn default() -> Self {
        HealthSupervisor::new()
    }
}

impl Drop for HealthSupervisor {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.tracker.close();
    }
}
