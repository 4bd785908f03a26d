//! `/readyz` and discovery, without Docker: a gateway whose configured discovery
//! has never listed is not ready and says why; one that listed once and then lost
//! the engine stays ready. The "engine" is a stand-in on a unix socket that answers
//! the three calls discovery makes (version, container list, event stream).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, StatusCode};
use sluicegate::discovery::Options as DiscoveryOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::support::live::{config_text, LiveGateway};
use crate::support::WAIT;

const CONFIG: &str = "[discovery.docker]\n\n[[routes]]\nname = \"agents\"\nsplit = [{ pool = \"agent-blue\", weight = 1 }]\n";

fn options(socket: &Path) -> DiscoveryOptions {
    DiscoveryOptions {
        docker_host: Some(format!("unix://{}", socket.display())),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..DiscoveryOptions::default()
    }
}

/// `GET /readyz` on the admin API: status and body.
async fn readyz(gw: &LiveGateway) -> (StatusCode, String) {
    let reply = gw.api(Method::GET, "/readyz", None).await;
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

/// Polls `/readyz` until `pred` holds (bounded).
async fn wait_readyz(gw: &LiveGateway, what: &str, pred: impl Fn(StatusCode, &str) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = readyz(gw).await;
        if pred(status, &body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: /readyz still {status} {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn discovery_that_never_listed_keeps_readyz_503_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("no-engine.sock");
    let text = config_text(CONFIG, "", "");
    let gw = LiveGateway::start_with(
        tempfile::tempdir().expect("tempdir"),
        &text,
        options(&socket),
    )
    .await;
    // Serving starts after the bounded first-list wait; readiness must not follow.
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        let (status, body) = readyz(&gw).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, body) = readyz(&gw).await;
    assert!(
        body.contains("docker discovery has never listed")
            && body.contains(&format!("no Docker socket at {}", socket.display())),
        "{body}"
    );
    let state = gw.state().await;
    let docker = state.docker.expect("docker view");
    assert!(!docker.connected && docker.lists == 0, "{docker:?}");
    assert!(
        docker
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no Docker socket at")),
        "{docker:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn discovery_that_listed_once_stays_ready_after_losing_the_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("engine.sock");
    let mut engine = FakeEngine::start(&socket);
    let text = config_text(CONFIG, "", "");
    let gw = LiveGateway::start_with(
        tempfile::tempdir().expect("tempdir"),
        &text,
        options(&socket),
    )
    .await;
    wait_readyz(&gw, "ready after the first list", |s, _| {
        s == StatusCode::OK
    })
    .await;

    engine.stop().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let docker = gw.state().await.docker.expect("docker view");
        if !docker.connected {
            assert!(docker.lists >= 1, "{docker:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the engine loss was not noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = readyz(&gw).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "lost after listing: still ready ({body})"
    );
    gw.stop().await;
}

/// A stand-in Docker engine: `/version`, an empty `/containers/json`, and an
/// `/events` stream that stays open until [`FakeEngine::stop`].
pub(crate) struct FakeEngine {
    path: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl FakeEngine {
    pub(crate) fn start(path: &Path) -> FakeEngine {
        let listener = UnixListener::bind(path).expect("bind fake engine");
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) closes every connection.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(answer(stream));
                while conns.try_join_next().is_some() {}
            }
        });
        FakeEngine {
            path: path.to_path_buf(),
            task: Some(task),
        }
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Answers requests on one connection (keep-alive) until the client closes it.
async fn answer(mut stream: UnixStream) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        if path.contains("/events") {
            let open = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(open.as_bytes()).await.is_err() {
                return;
            }
            // Held open: the stream ends when the engine stops.
            std::future::pending::<()>().await;
        }
        let body = if path.contains("/containers/json") {
            "[]"
        } else if path.contains("/version") {
            r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.0","Os":"linux","Arch":"amd64"}"#
        } else {
            r#"{"message":"not in the fake engine"}"#
        };
        let status = if body.starts_with("{\"message") {
            "404 Not Found"
        } else {
            "200 OK"
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
