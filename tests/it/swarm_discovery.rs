//! Swarm discovery's poll loop against a fake Docker API on 127.0.0.1 that
//! serves answers captured from a real engine (`tests/fixtures/swarm`) and can
//! change them or fail: drain on a desired-state change and on node loss, no
//! rebuild when nothing changed, the last set kept while the API is lost and
//! resynced after, and a worker's gateway reading a manager gateway.
//!
//! The fixtures' overlay addresses (10.77.9.x) are rewritten to 127.0.9.x
//! before they are served: a gateway here probes its backends, and nothing may
//! be sent from the host to an overlay address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::Method;
use sluicegate::config::spec::SwarmSpec;
use sluicegate::discovery::swarm::{Board, Options, SwarmDiscovery};
use sluicegate::discovery::{DiscoveredSet, DiscoveryStatus, Options as DiscoveryOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::support::live::{config_text, LiveGateway};
use crate::support::WAIT;

const OK: u8 = 0;
const FAIL: u8 = 1;
const NOT_MANAGER: u8 = 2;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/swarm/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .replace("10.77.9.", "127.0.9.")
}

/// A Docker API that answers from the fixtures it currently holds.
struct Fake {
    nodes: ArcSwap<String>,
    tasks: ArcSwap<String>,
    /// Task id → its inspect answer (`GET /tasks/{id}`); absent ids are 404.
    inspect: ArcSwap<HashMap<String, String>>,
    mode: AtomicU8,
    task_lists: AtomicU64,
    /// Lines sent to every open `/events` stream.
    events: tokio::sync::broadcast::Sender<String>,
}

impl Fake {
    async fn start() -> (Arc<Fake>, SocketAddr) {
        let fake = Arc::new(Fake {
            nodes: ArcSwap::from_pointee(fixture("nodes.json")),
            tasks: ArcSwap::from_pointee(fixture("tasks.json")),
            inspect: ArcSwap::from_pointee(HashMap::new()),
            mode: AtomicU8::new(OK),
            task_lists: AtomicU64::new(0),
            events: tokio::sync::broadcast::channel(16).0,
        });
        let app = Router::new()
            .route(
                "/v1.41/services",
                get(|s| answer(s, |_| fixture("services.json"))),
            )
            .route(
                "/v1.41/nodes",
                get(|s| answer(s, |f| f.nodes.load().to_string())),
            )
            .route(
                "/v1.41/tasks",
                get(|State(f): State<Arc<Fake>>| async move {
                    f.task_lists.fetch_add(1, Ordering::SeqCst);
                    answer(State(f), |f| f.tasks.load().to_string()).await
                }),
            )
            .route("/v1.41/tasks/{id}", get(inspect))
            .route("/v1.41/events", get(events))
            .with_state(Arc::clone(&fake));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, addr)
    }

    fn set_mode(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn lists(&self) -> u64 {
        self.task_lists.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until the task list was read `n` more times.
    async fn wait_lists(&self, n: u64) {
        let target = self.lists() + n;
        tokio::time::timeout(WAIT, async {
            while self.lists() < target {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("task list read in time");
    }
}

async fn answer(State(f): State<Arc<Fake>>, body: impl Fn(&Fake) -> String) -> Response {
    match f.mode.load(Ordering::SeqCst) {
        OK => ([("content-type", "application/json")], body(&f)).into_response(),
        NOT_MANAGER => (
            StatusCode::SERVICE_UNAVAILABLE,
            fixture("error_not_manager.json"),
        )
            .into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "{\"message\":\"engine restarting\"}",
        )
            .into_response(),
    }
}

/// An event stream that stays open and carries what the test sends.
async fn events(State(f): State<Arc<Fake>>) -> Response {
    let rx = f.events.subscribe();
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await.ok()?;
        Some((
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line)),
            rx,
        ))
    });
    axum::body::Body::from_stream(lines).into_response()
}

async fn inspect(State(f): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    match f.inspect.load().get(&id) {
        Some(body) => answer(State(Arc::clone(&f)), |_| body.clone()).await,
        None => (StatusCode::NOT_FOUND, "{\"message\":\"no such task\"}").into_response(),
    }
}

fn spec(poll: &str, managers: &str) -> SwarmSpec {
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\n[discovery.swarm]\nnetwork = \"sgfix\"\npoll_interval = \"{poll}\"\nmanagers = [{managers}]\n"
    );
    sluicegate::config::parse(&text)
        .unwrap()
        .discovery
        .swarm
        .expect("swarm on")
}

fn spawn(addr: SocketAddr, spec: SwarmSpec) -> (SwarmDiscovery, Arc<Board>, CancellationToken) {
    let stop = CancellationToken::new();
    let board = Arc::new(Board::default());
    let options = Options {
        docker_host: Some(format!("http://{addr}")),
        ..Options::default()
    };
    let d = SwarmDiscovery::spawn(spec, options, Arc::clone(&board), stop.clone());
    (d, board, stop)
}

async fn wait_set(
    sets: &mut watch::Receiver<DiscoveredSet>,
    done: impl Fn(&DiscoveredSet) -> bool,
) -> DiscoveredSet {
    tokio::time::timeout(WAIT, sets.wait_for(|s| done(s)))
        .await
        .expect("set in time")
        .expect("discovery running")
        .clone()
}

async fn wait_status(
    status: &mut watch::Receiver<DiscoveryStatus>,
    done: impl Fn(&DiscoveryStatus) -> bool,
) -> DiscoveryStatus {
    tokio::time::timeout(WAIT, status.wait_for(|s| done(s)))
        .await
        .expect("status in time")
        .expect("discovery running")
        .clone()
}

/// Waits (bounded) until the gateway's discovery view satisfies `done`.
async fn wait_view(
    gw: &LiveGateway,
    done: impl Fn(&sluicegate::state_view::DockerView) -> bool,
) -> sluicegate::state_view::StateView {
    tokio::time::timeout(WAIT, async {
        loop {
            let state = gw.state().await;
            if state.docker.as_ref().is_some_and(&done) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("discovery view in time")
}

/// Waits (bounded) until `GET /readyz` answers `status`; returns the body.
async fn wait_ready(gw: &LiveGateway, status: u16) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            let r = gw.api(Method::GET, "/readyz", None).await;
            if r.status == status {
                return String::from_utf8_lossy(&r.body).to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("readyz in time")
}

#[tokio::test]
async fn swarm_poll_drains_stopping_tasks_and_tasks_of_lost_nodes_at_once() {
    let (fake, addr) = Fake::start().await;
    let (mut d, _board, stop) = spawn(addr, spec("100ms", ""));
    let set = wait_set(&mut d.sets, |s| s.len() == 3).await;
    assert!(set.pools.values().flatten().all(|b| !b.draining));
    assert!(set
        .pool("agent-blue")
        .iter()
        .all(|b| b.addr.ip().is_loopback()));

    // Scale-down: the task leaves the running list (desired state "remove") while
    // its container still runs. It drains, with a hint, in the next read.
    let stopping = fixture("task_stopping.json");
    let id = serde_json::from_str::<serde_json::Value>(&stopping).unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.inspect
        .store(Arc::new(HashMap::from([(id.clone(), stopping)])));
    fake.tasks.store(Arc::new(fixture("tasks_scaled.json")));
    let hint = tokio::time::timeout(WAIT, d.drains.recv())
        .await
        .expect("hint")
        .expect("open");
    assert_eq!(&*hint.container_id, id.as_str());
    let set = d.sets.borrow().clone();
    let blue = set.pool("agent-blue");
    assert_eq!(blue.len(), 2);
    assert!(blue.iter().any(|b| b.draining && *b.container_id == *id));
    // Its container stopped and the task is gone: it leaves the set.
    fake.inspect.store(Arc::new(HashMap::new()));
    wait_set(&mut d.sets, |s| s.pool("agent-blue").len() == 1).await;

    // The node is drained: every task out of rotation in one read.
    fake.nodes.store(Arc::new(fixture("nodes_drain.json")));
    let set = wait_set(&mut d.sets, |s| {
        s.pools.values().flatten().all(|b| b.draining)
    })
    .await;
    assert_eq!(set.len(), 2);
    // And down (the manager lost it): still out of rotation.
    fake.nodes.store(Arc::new(
        fixture("nodes.json").replace("\"ready\"", "\"down\""),
    ));
    fake.wait_lists(2).await;
    assert!(d.sets.borrow().pools.values().flatten().all(|b| b.draining));
    stop.cancel();
}

#[tokio::test]
async fn swarm_service_event_triggers_a_read_before_the_next_poll() {
    let (fake, addr) = Fake::start().await;
    // A poll far beyond the test's bound: only the event can explain a re-read.
    let (mut d, _board, stop) = spawn(addr, spec("60s", ""));
    wait_set(&mut d.sets, |s| s.len() == 3).await;
    tokio::time::timeout(WAIT, async {
        while fake.events.receiver_count() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("event stream open");
    // The first read, and the one the stream's opening asks for (events may
    // have been missed before it): two in all, then nothing for 60 s.
    tokio::time::timeout(WAIT, async {
        while fake.lists() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("two reads");
    let reads = fake.lists();
    fake.tasks.store(Arc::new(fixture("tasks_scaled.json")));
    let event = fixture("events.jsonl")
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    fake.events.send(format!("{event}\n")).expect("subscriber");
    wait_set(&mut d.sets, |s| s.pool("agent-blue").len() == 1).await;
    assert_eq!(fake.lists(), reads + 1, "one read per event");
    stop.cancel();
}

#[tokio::test]
async fn swarm_keeps_the_last_set_while_the_api_is_lost_and_resyncs_after() {
    let (fake, addr) = Fake::start().await;
    let (mut d, board, stop) = spawn(addr, spec("100ms", ""));
    let first = wait_set(&mut d.sets, |s| s.len() == 3).await;
    let published = d.status.borrow().sets_published;
    assert_eq!(published, 1);
    fake.set_mode(FAIL);
    let down = wait_status(&mut d.status, |s| !s.connected).await;
    let error = down.last_error.unwrap_or_default();
    assert!(
        error.contains("500") && error.contains("engine restarting"),
        "{error}"
    );
    fake.wait_lists(3).await;
    assert_eq!(*d.sets.borrow(), first, "the last set stays");
    // Once it had a set, a lost API does not make the gateway unready.
    assert!(board.not_ready.load().is_none());
    // Meanwhile the swarm changed; the first read after the API returns has it.
    fake.tasks.store(Arc::new(fixture("tasks_scaled.json")));
    let lists = d.status.borrow().lists;
    fake.set_mode(OK);
    let up = wait_status(&mut d.status, |s| s.connected && s.lists > lists).await;
    assert!(up.last_error.is_none() && up.last_confirmed.is_some());
    assert_eq!(d.sets.borrow().pool("agent-blue").len(), 1);
    stop.cancel();
}

#[tokio::test]
async fn swarm_unchanged_polls_publish_nothing_and_rebuild_no_snapshot() {
    let (fake, addr) = Fake::start().await;
    let routes = "[[routes]]\nname = \"blue\"\nsplit = [{ pool = \"agent-blue\", weight = 1 }]\n";
    let text = config_text(
        &format!("[discovery.swarm]\nnetwork = \"sgfix\"\npoll_interval = \"100ms\"\n{routes}"),
        "",
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let options = DiscoveryOptions {
        docker_host: Some(format!("http://{addr}")),
        ..DiscoveryOptions::default()
    };
    let gw = LiveGateway::start_with(dir, &text, options).await;
    let state = wait_view(&gw, |v| v.lists > 0).await;
    let view = state.docker.clone().expect("discovery view");
    assert!(view.connected && view.lists > 0, "{view:?}");
    assert!(view
        .source
        .as_deref()
        .unwrap_or("")
        .starts_with("swarm engine http://127.0.0.1:"));
    assert!(view.last_confirmed.is_some());
    assert!(view.skipped.iter().any(|s| s.container == "shop_bad"));
    let blue = state
        .pools
        .iter()
        .find(|p| p.name == "agent-blue")
        .expect("pool");
    assert_eq!(blue.backends.len(), 2);
    let generation = gw.counters().generation;
    fake.wait_lists(5).await;
    assert_eq!(
        gw.counters().generation,
        generation,
        "unchanged polls rebuilt a snapshot"
    );
    let later = gw.state().await.docker.expect("view");
    assert!(later.lists >= view.lists + 5, "{later:?}");
    assert_ne!(later.last_confirmed, None);
    // A change does rebuild, once.
    fake.tasks.store(Arc::new(fixture("tasks_scaled.json")));
    gw.wait_counters(|c| c.generation > generation).await;
    fake.wait_lists(3).await;
    assert_eq!(gw.counters().generation, generation + 1);
    gw.stop().await;
}

#[tokio::test]
async fn swarm_worker_reads_a_manager_gateway_and_says_when_it_reaches_neither() {
    // The manager: a gateway whose engine is the fake swarm.
    let (fake, addr) = Fake::start().await;
    let text = config_text(
        "[discovery.swarm]\nnetwork = \"sgfix\"\npoll_interval = \"100ms\"\n",
        "",
        "",
    );
    let options = DiscoveryOptions {
        docker_host: Some(format!("http://{addr}")),
        ..DiscoveryOptions::default()
    };
    let manager = LiveGateway::start_with(tempfile::tempdir().unwrap(), &text, options).await;
    wait_view(&manager, |v| v.lists > 0).await;
    let export = manager
        .api(Method::GET, "/api/v1/discovery/swarm", None)
        .await;
    assert_eq!(export.status, 200, "{:?}", export.body);

    // The worker: its engine refuses cluster reads, as a worker's does.
    let (worker_engine, worker_addr) = Fake::start().await;
    worker_engine.set_mode(NOT_MANAGER);
    let managers = format!("\"http://127.0.0.1:1\", \"http://{}\"", manager.admin);
    let (mut d, board, stop) = spawn(worker_addr, spec("100ms", &managers));
    let set = wait_set(&mut d.sets, |s| s.len() == 3).await;
    assert_eq!(set.pool("agent-blue").len(), 2);
    let status = d.status.borrow().clone();
    let source = status.source.unwrap_or_default();
    assert!(
        source.starts_with(&format!("manager gateway http://{}", manager.admin)),
        "{source}"
    );
    // A worker relays nothing.
    assert!(board.export.load().is_none());
    // The manager's view changes; the worker follows.
    fake.tasks.store(Arc::new(fixture("tasks_scaled.json")));
    wait_set(&mut d.sets, |s| s.pool("agent-blue").len() == 1).await;

    // The manager gateway goes away: the worker keeps its set and says why.
    manager.stop().await;
    let lost = wait_status(&mut d.status, |s| !s.connected).await;
    let error = lost.last_error.unwrap_or_default();
    assert!(
        error.starts_with("can reach neither the Docker engine as a swarm manager"),
        "{error}"
    );
    assert!(
        error.contains("not a swarm manager") && error.contains("http://127.0.0.1:1"),
        "{error}"
    );
    assert_eq!(d.sets.borrow().pool("agent-blue").len(), 1);
    stop.cancel();
}

#[tokio::test]
async fn swarm_gateway_that_reaches_neither_is_not_ready_and_says_why() {
    let (engine, addr) = Fake::start().await;
    engine.set_mode(NOT_MANAGER);
    let text = config_text(
        "[discovery.swarm]\nnetwork = \"sgfix\"\npoll_interval = \"100ms\"\nmanagers = [\"http://127.0.0.1:1\"]\n",
        "",
        "",
    );
    let options = DiscoveryOptions {
        docker_host: Some(format!("http://{addr}")),
        ..DiscoveryOptions::default()
    };
    let gw = LiveGateway::start_with(tempfile::tempdir().unwrap(), &text, options).await;
    wait_view(&gw, |v| v.last_error.is_some()).await;
    let body = wait_ready(&gw, 503).await;
    assert!(
        body.starts_with(
            "not ready: swarm discovery: can reach neither the Docker engine as a swarm manager"
        ),
        "{body}"
    );
    assert!(body.contains("http://127.0.0.1:1"), "{body}");
    let export = gw.api(Method::GET, "/api/v1/discovery/swarm", None).await;
    assert_eq!(export.status, 503);
    // The engine becomes a manager: ready, and the set is served.
    engine.set_mode(OK);
    assert_eq!(wait_ready(&gw, 200).await, "ready\n");
    let export = gw.api(Method::GET, "/api/v1/discovery/swarm", None).await;
    assert_eq!(export.status, 200);
    gw.stop().await;
}
