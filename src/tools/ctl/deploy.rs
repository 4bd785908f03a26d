//! `ctl deploy ROUTE --to POOL`: the blocking deploy a CI script can trust.
//!
//! Three phases over the admin API, each bounded:
//! 1. *healthy*: every backend of POOL is healthy in the gateway's view (its own
//!    probes, not ejected, not draining, Docker health `healthy` where known), and
//!    stays so for `settle` (a backend nobody probed yet counts as healthy, so a
//!    pool with `[pools.health]` needs one probe round to show a dead backend);
//!    not within `wait_healthy` → error, nothing changed.
//! 2. *switch*: the route's split becomes POOL = 100, every other pool 0 (one
//!    admin write, live when it answers).
//! 3. *drain*: wait until the backends of every pool that lost its share have
//!    nothing in flight (requests, streams and tunnels each hold a backend's
//!    in-flight count until they end), or `drain_timeout`.
//!
//! An interrupt (Ctrl-C) ends the command at once and says which state it left:
//! before the switch nothing changed; after it the route is on POOL and only the
//! drain was not awaited.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use super::client::{self, AdminClient, CtlError};
use crate::control_plane::controller::state_view::{BackendView, StateView};

/// What `ctl deploy` was asked.
#[derive(Clone, Debug)]
pub struct DeployArgs {
    pub route: String,
    pub to: String,
    /// Longest wait for POOL to be healthy.
    pub wait_healthy: Duration,
    /// How long POOL must stay healthy before the switch.
    pub settle: Duration,
    /// Longest wait for the old pools' in-flight work after the switch.
    pub drain_timeout: Duration,
    /// How often the state is read.
    pub poll: Duration,
}

/// What a deploy did, with times from its start.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub healthy_after: Duration,
    pub switched_at: Duration,
    /// When the old pools had nothing in flight; `None`: the drain timed out.
    pub drained_at: Option<Duration>,
    /// In flight on the old pools when the command returned.
    pub left_in_flight: u64,
    /// The pools that lost their share.
    pub old_pools: Vec<String>,
}

impl Timeline {
    /// The lines `ctl deploy` prints.
    pub fn render(&self, args: &DeployArgs) -> String {
        let mut out = String::new();
        let ms = |d: Duration| d.as_millis();
        let _ = writeln!(
            out,
            "route {}: deployed to pool {} (old: {})",
            args.route,
            args.to,
            if self.old_pools.is_empty() {
                "none".to_owned()
            } else {
                self.old_pools.join(", ")
            }
        );
        let _ = writeln!(out, "  healthy after  {} ms", ms(self.healthy_after));
        let _ = writeln!(out, "  switched at    {} ms", ms(self.switched_at));
        match self.drained_at {
            Some(d) => {
                let _ = writeln!(
                    out,
                    "  drained at     {} ms (old pools: 0 in flight)",
                    ms(d)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  drain timed out after {:?}: {} still in flight on the old pools",
                    args.drain_timeout, self.left_in_flight
                );
            }
        }
        out
    }
}

/// Why POOL is not ready, or `None` when it is.
fn not_ready(state: &StateView, pool: &str) -> Option<String> {
    let Some(p) = state.pools.iter().find(|p| p.name == pool) else {
        return Some(format!("pool {pool} does not exist"));
    };
    if p.backends.is_empty() {
        return Some(format!("pool {pool} has no backends"));
    }
    let bad: Vec<String> = p
        .backends
        .iter()
        .filter(|b| !backend_ready(b))
        .map(|b| b.addr.clone())
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "{} of {} backends of pool {pool} not healthy: {}",
            bad.len(),
            p.backends.len(),
            bad.join(", ")
        )
    })
}

fn backend_ready(b: &BackendView) -> bool {
    b.healthy && !b.ejected && !b.draining && b.docker_healthy != Some(false)
}

/// In flight on the backends of `pools`.
fn in_flight(state: &StateView, pools: &[String]) -> u64 {
    state
        .pools
        .iter()
        .filter(|p| pools.contains(&p.name))
        .flat_map(|p| &p.backends)
        .map(|b| u64::from(b.inflight))
        .sum()
}

async fn state(client: &AdminClient) -> Result<StateView, CtlError> {
    client.json(Method::GET, "/api/v1/state", None).await
}

/// Runs the deploy; `interrupt` (Ctrl-C) ends it at once with an error saying
/// which state it left.
pub async fn deploy(
    client: &AdminClient,
    args: &DeployArgs,
    interrupt: impl Future<Output = ()>,
) -> Result<Timeline, CtlError> {
    let mut interrupt = std::pin::pin!(interrupt);
    let start = Instant::now();
    let first = state(client).await?;
    let Some(route) = first.routes.iter().find(|r| r.name == args.route) else {
        return Err(CtlError::Deploy(format!(
            "route {} does not exist; nothing changed",
            args.route
        )));
    };
    if !first.pools.iter().any(|p| p.name == args.to) {
        return Err(CtlError::Deploy(format!(
            "pool {} does not exist; nothing changed",
            args.to
        )));
    }
    let old_pools: Vec<String> = route
        .split
        .iter()
        .filter(|s| s.pool != args.to && s.weight > 0)
        .map(|s| s.pool.clone())
        .collect();
    let mut weights: Vec<(String, u32)> = route.split.iter().map(|s| (s.pool.clone(), 0)).collect();
    if !weights.iter().any(|(p, _)| *p == args.to) {
        weights.push((args.to.clone(), 0));
    }
    for (p, w) in &mut weights {
        if *p == args.to {
            *w = 100;
        }
    }

    // 1. healthy, and stays so for `settle`.
    let deadline = crate::clock::later(start, args.wait_healthy);
    let mut healthy_since: Option<Instant> = None;
    let healthy_after = loop {
        let now = Instant::now();
        match not_ready(&state(client).await?, &args.to) {
            None => {
                let since = *healthy_since.get_or_insert(now);
                if now.duration_since(since) >= args.settle {
                    break now.duration_since(start);
                }
            }
            Some(why) => {
                healthy_since = None;
                if now >= deadline {
                    return Err(CtlError::Deploy(format!(
                        "pool {} was not healthy within {:?} ({why}); nothing changed, route {} routes as before",
                        args.to, args.wait_healthy, args.route
                    )));
                }
            }
        }
        tokio::select! {
            () = &mut interrupt => return Err(CtlError::Deploy(format!(
                "interrupted while waiting for pool {} to be healthy; nothing changed, route {} routes as before",
                args.to, args.route
            ))),
            () = tokio::time::sleep(args.poll) => {}
        }
    };

    // 2. switch.
    let body: serde_json::Map<String, serde_json::Value> = weights
        .iter()
        .map(|(p, w)| (p.clone(), (*w).into()))
        .collect();
    let path = format!("/api/v1/routes/{}/split", client::segment(&args.route));
    let body = serde_json::Value::Object(body).to_string().into_bytes();
    let _: serde_json::Value = client
        .json(Method::PUT, &path, Some(("application/json", body)))
        .await
        .map_err(|e| {
            CtlError::Deploy(format!(
                "switching route {} failed ({e}); routing is as before",
                args.route
            ))
        })?;
    let switched_at = start.elapsed();

    // 3. drain.
    let drain_deadline = crate::clock::later(Instant::now(), args.drain_timeout);
    let (drained_at, left_in_flight) = loop {
        let n = in_flight(&state(client).await?, &old_pools);
        if n == 0 {
            break (Some(start.elapsed()), 0);
        }
        if Instant::now() >= drain_deadline {
            break (None, n);
        }
        tokio::select! {
            () = &mut interrupt => return Err(CtlError::Deploy(format!(
                "interrupted while draining: route {} is switched to pool {}; {n} still in flight on the old pools",
                args.route, args.to
            ))),
            () = tokio::time::sleep(args.poll) => {}
        }
    };
    Ok(Timeline {
        healthy_after,
        switched_at,
        drained_at,
        left_in_flight,
        old_pools,
    })
}
