//! The gateway in front of real containers: a [`LiveGateway`] (admin API, file
//! reload) with `[discovery.docker]` for a test scope's labels, and helpers to
//! wait on its `GET /api/v1/state`.
//!
//! Tests that put load through the gateway take [`SERIAL`] so that two load
//! loops never share this machine's two cores (their timing claims would then
//! measure the neighbour).

use std::time::Duration;

use sluicegate::discovery::Options as DiscoveryOptions;
use sluicegate::state_view::{BackendView, StateView};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::support::docker::Scope;
use crate::support::live::{config_text, LiveGateway};

/// One load-carrying Docker test at a time.
pub static SERIAL: Mutex<()> = Mutex::const_new(());

/// A gateway discovering `scope`'s labels in `projects` (TOML array), with
/// `body` (pools, routes) and quick reconnects, once it has listed the engine.
pub async fn gateway(
    scope: &Scope,
    projects: &str,
    body: &str,
    docker_host: Option<String>,
) -> LiveGateway {
    let text = config_text(
        &format!(
            "[discovery.docker]\nlabel_prefix = \"{}\"\nprojects = {projects}\n{body}",
            scope.prefix
        ),
        "",
        "",
    );
    let options = DiscoveryOptions {
        docker_host,
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        ..DiscoveryOptions::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = LiveGateway::start_with(dir, &text, options).await;
    wait_state(&gw, Duration::from_secs(20), "the first Docker list", |s| {
        s.docker.as_ref().is_some_and(|d| d.lists > 0)
    })
    .await;
    gw
}

/// Polls the state (every 50 ms, at most `limit`) until `pred` holds.
pub async fn wait_state(
    gw: &LiveGateway,
    limit: Duration,
    what: &str,
    pred: impl Fn(&StateView) -> bool,
) -> StateView {
    let deadline = Instant::now() + limit;
    loop {
        let state = gw.state().await;
        if pred(&state) {
            return state;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not reached within {limit:?}; state: {state:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The backends of `pool` in `state` (none when the pool is absent).
pub fn pool<'a>(state: &'a StateView, pool: &str) -> &'a [BackendView] {
    state
        .pools
        .iter()
        .find(|p| p.name == pool)
        .map_or(&[], |p| p.backends.as_slice())
}

/// The backend of container `name`, if it is in `pool`.
pub fn container<'a>(state: &'a StateView, pool_name: &str, name: &str) -> Option<&'a BackendView> {
    pool(state, pool_name)
        .iter()
        .find(|b| b.container.as_deref() == Some(name))
}

/// `n` backends in `pool`, all from Docker, healthy (gateway probes and Docker)
/// and not draining.
pub fn serving(state: &StateView, pool_name: &str, n: usize) -> bool {
    let backends = pool(state, pool_name);
    backends.len() == n
        && backends
            .iter()
            .all(|b| b.healthy && !b.draining && !b.ejected && b.docker_healthy == Some(true))
}
