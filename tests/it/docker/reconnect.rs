//! Losing the Docker connection: discovery talks to the engine through a
//! unix-socket forwarder that the test stops and starts again (restarting the
//! shared daemon is not an option). While it is down the last set stays; once it
//! is back, what changed meanwhile is picked up.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sluicegate::config::spec::ProjectFilter;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{APPEAR, SLOW};
use crate::support::docker::{cmd, names, run, wait_set, wait_status, Scope};

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
