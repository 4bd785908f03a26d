//! The controller task fed by hand-made discovery channels (the real engine is
//! exercised by the integration tests): sets become backends with their Docker
//! health, hints drain at once and stay drained, overrides apply to discovered
//! backends, and a backend leaves with its set.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::DockerFeed;
use crate::control_plane::config::spec::{PoolName, Source};
use crate::control_plane::controller::task::{Change, ControlHandle, DrainAction, Task};
use crate::control_plane::controller::SharedSnapshot;
use crate::control_plane::discovery::{
    DiscoveredBackend, DiscoveredSet, DiscoveryStatus, DrainHint,
};
use crate::data_plane::backend::BackendState;

const FILE: &str = r#"
[listen]
http = "127.0.0.1:0"
[discovery.docker]
[[pools]]
name = "blue"
backends = [{ addr = "127.0.0.1:9001" }]
[[pools]]
name = "held"
hold = { timeout = "5s", max_queued = 10 }
[[routes]]
name = "agents"
split = [{ pool = "blue", weight = 100 }, { pool = "green", weight = 0 }]
[[routes]]
name = "held"
match = { path_prefix = "/held" }
split = [{ pool = "held", weight = 1 }]
"#;

const BLUE: &str = "127.0.0.1:9002";
const GREEN: &str = "127.0.0.1:9003";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}

fn backend(name: &str, at: &str, docker_healthy: bool) -> DiscoveredBackend {
    DiscoveredBackend {
        addr: addr(at),
        weight: 1,
        container_name: Arc::from(name),
        container_id: Arc::from(format!("id-{name}")),
        docker_healthy,
        docker_health: if docker_healthy {
            crate::control_plane::config::spec::DockerHealth::Healthy
        } else {
            crate::control_plane::config::spec::DockerHealth::Starting
        },
        draining: false,
        health_path: None,
        protocol: None,
        mirror: None,
        rate_limit: None,
        network: Arc::from("net"),
    }
}

fn set(backends: &[(&str, DiscoveredBackend)]) -> DiscoveredSet {
    let mut set = DiscoveredSet::default();
    for (pool, b) in backends {
        set.pools
            .entry(PoolName(Arc::from(*pool)))
            .or_default()
            .push(b.clone());
    }
    set
}

struct Fixture {
    sets: watch::Sender<DiscoveredSet>,
    hints: mpsc::Sender<DrainHint>,
    handle: ControlHandle,
    shared: SharedSnapshot,
    _status: watch::Sender<DiscoveryStatus>,
    cancel: CancellationToken,
}

impl Fixture {
    fn start() -> Fixture {
        let spec = crate::control_plane::config::parse(FILE).expect("valid");
        let (mut task, handle, shared) = Task::new(spec, None, crate::metrics::Registrar::off());
        let (sets, sets_rx) = watch::channel(DiscoveredSet::default());
        let (hints, drains) = mpsc::channel(4);
        let (status, status_rx) = watch::channel(DiscoveryStatus::default());
        task.attach_docker(DockerFeed {
            sets: sets_rx,
            drains,
            status: status_rx,
        });
        let cancel = CancellationToken::new();
        tokio::spawn(task.run(cancel.clone()));
        Fixture {
            sets,
            hints,
            handle,
            shared,
            _status: status,
            cancel,
        }
    }

    /// A round trip through the task: discovery news sent before it are handled.
    async fn settle(&self) -> crate::control_plane::controller::state_view::StateView {
        self.handle.state().await.expect("task running")
    }

    fn state(&self, pool: &str, at: &str) -> Option<Arc<BackendState>> {
        let snapshot = self.shared.load_full();
        let pool = snapshot.pool(pool)?;
        let b = pool.backends().find(|b| b.addr == addr(at))?;
        Some(Arc::clone(&b.state))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[tokio::test]
async fn a_set_adds_backends_with_their_container_and_docker_health() {
    let f = Fixture::start();
    f.sets.send_replace(set(&[
        ("blue", backend("blue-1", BLUE, true)),
        ("green", backend("green-1", GREEN, false)),
    ]));
    let view = f.settle().await;
    let blue = view.backend("blue", BLUE).expect("discovered blue");
    assert_eq!(blue.source, Source::Docker);
    assert_eq!(blue.container.as_deref(), Some("blue-1"));
    assert_eq!(blue.docker_healthy, Some(true));
    assert_eq!(
        view.backend("blue", "127.0.0.1:9001").map(|b| b.source),
        Some(Source::File)
    );
    assert!(f.state("blue", BLUE).expect("in snapshot").is_eligible());
    let green = f.state("green", GREEN).expect("in snapshot");
    assert!(!green.is_docker_healthy() && !green.is_eligible());
    // The pool only the route names gets the label default: a /health probe.
    let snapshot = f.shared.load_full();
    let probe = snapshot
        .pool("green")
        .and_then(|p| p.policy().probe.clone());
    assert_eq!(
        probe.map(|p| p.path.to_string()).as_deref(),
        Some("/health")
    );

    // Docker says healthy: the same backend state becomes Docker-healthy.
    f.sets.send_replace(set(&[
        ("blue", backend("blue-1", BLUE, true)),
        ("green", backend("green-1", GREEN, true)),
    ]));
    f.settle().await;
    assert!(Arc::ptr_eq(&green, &f.state("green", GREEN).expect("kept")));
    assert!(green.is_docker_healthy());
}

#[tokio::test]
async fn a_hint_drains_at_once_and_later_publishes_keep_it_drained() {
    let f = Fixture::start();
    f.sets
        .send_replace(set(&[("blue", backend("blue-1", BLUE, true))]));
    f.settle().await;
    let state = f.state("blue", BLUE).expect("discovered");
    // Discovery marks the set first, then sends the hint.
    let mut stopping = backend("blue-1", BLUE, true);
    stopping.draining = true;
    f.sets.send_replace(set(&[("blue", stopping)]));
    f.hints
        .send(DrainHint {
            pool: PoolName(Arc::from("blue")),
            addr: addr(BLUE),
            container_id: Arc::from("id-blue-1"),
            container_name: Arc::from("blue-1"),
            action: Arc::from("kill"),
        })
        .await
        .expect("task running");
    f.settle().await;
    assert!(state.is_draining() && !state.is_eligible());
    // An admin change rebuilds the snapshot; the drain stands, and an admin
    // undrain cannot bring a stopping container back.
    let undrain = Change::Drain {
        pool: "blue".into(),
        addr: BLUE.into(),
        action: DrainAction::Undrain,
    };
    f.handle.change(undrain).await.expect("undrain accepted");
    let split = Change::SetSplit {
        route: "agents".into(),
        weights: vec![("blue".into(), 50), ("green".into(), 50)],
    };
    f.handle.change(split).await.expect("split accepted");
    assert!(state.is_draining());
    // The re-list without the container removes it.
    f.sets
        .send_replace(set(&[("blue", backend("blue-2", GREEN, true))]));
    let view = f.settle().await;
    assert!(view.backend("blue", BLUE).is_none());
    assert!(f.state("blue", BLUE).is_none());
}

#[tokio::test]
async fn admin_drain_and_registration_see_discovered_backends() {
    let f = Fixture::start();
    f.sets.send_replace(set(&[
        ("blue", backend("blue-1", BLUE, true)),
        ("extra", backend("extra-1", GREEN, true)),
    ]));
    f.settle().await;
    // A pool only labels create is a pool the admin API knows.
    let drain = Change::Drain {
        pool: "extra".into(),
        addr: GREEN.into(),
        action: DrainAction::Drain,
    };
    f.handle
        .change(drain)
        .await
        .expect("drain a discovered backend");
    assert!(f.state("extra", GREEN).expect("present").is_draining());
    let register = Change::Register {
        pool: "blue".into(),
        body: serde_json::from_str(&format!("{{\"addr\": \"{BLUE}\"}}")).expect("body"),
    };
    let err = f
        .handle
        .change(register)
        .await
        .expect_err("docker lists it");
    assert!(err.to_string().contains("Docker discovery"), "{err}");
}

#[tokio::test]
async fn a_held_request_is_served_when_docker_says_healthy() {
    let f = Fixture::start();
    f.sets
        .send_replace(set(&[("held", backend("held-1", BLUE, false))]));
    f.settle().await;
    let snapshot = f.shared.load_full();
    let pool = Arc::clone(snapshot.pool("held").expect("pool"));
    let hold = snapshot
        .pool("held")
        .and_then(|p| p.policy().hold)
        .expect("hold configured");
    let shared = Arc::clone(&f.shared);
    let started = tokio::time::Instant::now();
    let waiter = tokio::spawn(async move {
        let mut tried = crate::data_plane::snapshot::Tried::default();
        let deadline = tokio::time::Instant::now() + hold.timeout;
        crate::data_plane::health::hold::wait(&shared, &pool, &hold, deadline, &mut tried)
            .await
            .map(|p| p.backends().count())
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "nothing eligible yet");
    f.sets
        .send_replace(set(&[("held", backend("held-1", BLUE, true))]));
    f.settle().await;
    let found = waiter
        .await
        .expect("waiter")
        .expect("served, not timed out");
    assert_eq!(found, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test]
async fn plan_of_the_running_file_keeps_discovered_backends() {
    let f = Fixture::start();
    f.sets
        .send_replace(set(&[("blue", backend("blue-1", BLUE, true))]));
    f.settle().await;
    let same = crate::control_plane::config::parse(FILE).expect("valid");
    let plan = f.handle.plan(same).await.expect("task running");
    assert!(plan.is_empty(), "{plan:?}");
}
