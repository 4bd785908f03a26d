//! Losing the Docker connection: discovery talks to the engine through a
//! unix-socket forwarder that the test stops and starts again (restarting the
//! shared daemon is not an option). While it is down the last set stays; once it
//! is back, what changed meanwhile is picked up: at the discovery level, and
//! through a gateway under load.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluicegate::config::spec::ProjectFilter;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::front::{self, gateway, serving, wait_state, SERIAL};
use super::{APPEAR, SLOW};
use crate::support::docker::{cmd, names, wait_set, wait_status};
use crate::support::load::{by_agent, describe_failures, failures, first_answer, Load};

/// Copies bytes between clients of `path` and the real engine socket.
struct Forwarder {
    path: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl Forwarder {
    fn start(path: &Path) -> Forwarder {
        // A socket file left by the previous start would make bind fail.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind forwarder socket");
        let upstream = engine_socket();
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every copy.
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect(&upstream).await {
                        // Either side closing ends the copy; nothing to report.
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Forwarder {
            path: path.to_path_buf(),
            task: Some(task),
        }
    }

    /// Closes the listener and every forwarded connection.
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            assert!(
                task.await.is_err_and(|e| e.is_cancelled()),
                "forwarder ended by itself"
            );
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The engine's socket: `$DOCKER_HOST` when it is a unix socket, else the default.
fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_keeps_the_last_set_and_resyncs_after_reconnect() {
    let scope = scope!("reconnect");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let mut forwarder = Forwarder::start(&socket);
    let shutdown = CancellationToken::new();
    let host = format!("unix://{}", socket.display());
    let mut d = scope.discover(Some(host), ProjectFilter::Any, &shutdown);
    let pool = scope.label("pool", "p");
    let first = scope
        .agent("a", std::slice::from_ref(&pool), &["--no-healthcheck"], &[])
        .await;
    wait_set(&mut d.sets, APPEAR, |s| names(s, "p") == [first.as_str()])
        .await
        .expect("first agent through the forwarder");

    forwarder.stop().await;
    wait_status(&mut d.status, SLOW, |s| !s.connected).await;
    // Changes while disconnected: the first agent goes, a second one comes.
    cmd("docker", &["rm", "-f", &first]).await;
    let second = scope.agent("b", &[pool], &["--no-healthcheck"], &[]).await;
    let kept = d.sets.borrow().clone();
    assert_eq!(
        names(&kept, "p"),
        [first.as_str()],
        "last known set is kept while down"
    );
    assert!(
        !d.sets.has_changed().expect("discovery alive"),
        "nothing published while down"
    );

    let restarted = Instant::now();
    let _forwarder = Forwarder::start(&socket);
    let set = wait_set(&mut d.sets, SLOW, |s| names(s, "p") == [second.as_str()])
        .await
        .unwrap_or_else(|last| panic!("changes made while down were not picked up: {last:#?}"));
    eprintln!(
        "reconnect: set resynced {:.1?} after the socket came back",
        restarted.elapsed()
    );
    assert!(set.pool("p")[0].is_eligible());
    // The set is published just before the status that counts its list.
    let status = wait_status(&mut d.status, APPEAR, |s| s.connected).await;
    assert!(status.last_error.is_none(), "{status:?}");
    shutdown.cancel();
}

/// (f) Through the gateway: while the engine is unreachable the last known pools
/// keep serving (no failed request), and what changed meanwhile is picked up
/// once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_the_gateway_serves_the_last_pools_while_docker_is_away_then_resyncs() {
    let scope = scope!("gwreconnect");
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let mut forwarder = Forwarder::start(&socket);
    let host = format!("unix://{}", socket.display());
    let body =
        "[[routes]]\nname = \"agents\"\nsplit = [{ pool = \"p\", weight = 1 }]\nretries = 2\n";
    let gw = gateway(&scope, "[\"*\"]", body, Some(host)).await;
    let pool = scope.label("pool", "p");
    for short in ["a", "b"] {
        let labels = std::slice::from_ref(&pool);
        scope.agent(short, labels, &["--no-healthcheck"], &[]).await;
    }
    wait_state(&gw, SLOW, "a and b serving", |s| serving(s, "p", 2)).await;
    let load = Load::start(gw.addr);

    forwarder.stop().await;
    let down = Instant::now();
    wait_state(&gw, SLOW, "discovery disconnected", |s| {
        s.docker.as_ref().is_some_and(|d| !d.connected)
    })
    .await;
    scope.agent("c", &[pool], &["--no-healthcheck"], &[]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = gw.state().await;
    assert_eq!(front::pool(&state, "p").len(), 2, "last known pool kept");

    let restarted = Instant::now();
    let _forwarder = Forwarder::start(&socket);
    wait_state(&gw, SLOW, "c joins after the resync", |s| {
        serving(s, "p", 3)
    })
    .await;
    let resynced = restarted.elapsed();
    load.wait_answers(Instant::now(), 200, SLOW).await;
    let records = load.stop().await;
    let outage: Vec<_> = records
        .iter()
        .filter(|r| r.sent >= down && r.sent < restarted)
        .cloned()
        .collect();
    let by = by_agent(&outage);
    let c_first = first_answer(&records).get("c").map(|t| *t - restarted);
    let (get_failed, post_failed) = failures(&records);
    assert!(c_first.is_some(), "c never answered");
    eprintln!(
        "FIGURE (f) reconnect: {} answers while Docker was away ({:.1?}), served by {:?}; resynced {resynced:.1?} after the socket came back, c answered {:.1?} after; whole run failed GET {get_failed} POST {post_failed}",
        outage.len(),
        restarted - down,
        by.keys().collect::<Vec<_>>(),
        c_first.unwrap_or_default(),
    );
    assert_eq!(
        (get_failed, post_failed),
        (0, 0),
        "{:?}",
        describe_failures(&records, 5)
    );
    assert!(
        !outage.is_empty() && by.keys().all(|a| a == "a" || a == "b"),
        "{by:?}"
    );
    gw.stop().await;
}
