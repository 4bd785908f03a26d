//! `ctl deploy ROUTE --to POOL`: the blocking deploy a CI script can trust.
//!
//! The deploy itself runs in the gateway (`POST /api/v1/routes/{route}/deploy`,
//! see `crate::control_plane::deploy`): healthy, switch (at once, or in `steps`
//! through the rollout engine and its gates), drain. This command starts it,
//! follows its record until it ends, and prints the timeline; it exits non-zero
//! with the gateway's sentence on what routing is now when the deploy failed.
//!
//! An interrupt (Ctrl-C) cancels the deploy in the gateway and prints the
//! consistent state it was left in: before the switch nothing changed; during a
//! stepped switch the rollout is aborted (rolled back); after the switch the
//! route is on POOL and only the wait for the drain ended.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use http::Method;

use super::client::{self, AdminClient, CtlError};
use crate::control_plane::deploy::{Deploy, DeployPhase, DeployRequest};

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
    /// How often the deploy's record is read.
    pub poll: Duration,
    /// Percent on POOL per step (ending at 100): a gated rollout; `None` switches at once.
    pub steps: Option<Vec<u32>>,
    /// How long each step runs before its gate judges it.
    pub step_interval: Option<Duration>,
    /// The gate's bounds (the rollout engine's defaults when `None`).
    pub max_error_rate: Option<f64>,
    pub max_p99: Option<Duration>,
    pub min_requests: Option<u64>,
}

impl DeployArgs {
    /// A deploy of `route` to `to` at once with the given bounds.
    pub fn new(route: &str, to: &str, wait_healthy: Duration, drain_timeout: Duration) -> Self {
        DeployArgs {
            route: route.to_owned(),
            to: to.to_owned(),
            wait_healthy,
            settle: crate::control_plane::deploy::DEFAULT_SETTLE,
            drain_timeout,
            poll: Duration::from_millis(100),
            steps: None,
            step_interval: None,
            max_error_rate: None,
            max_p99: None,
            min_requests: None,
        }
    }

    fn request(&self) -> DeployRequest {
        let text = |d: Duration| humantime::format_duration(d).to_string();
        DeployRequest {
            to: self.to.clone(),
            wait_healthy: Some(text(self.wait_healthy)),
            settle: Some(text(self.settle)),
            drain_timeout: Some(text(self.drain_timeout)),
            steps: self
                .steps
                .as_ref()
                .map(|s| s.iter().map(|&w| i64::from(w)).collect()),
            step_interval: self.step_interval.map(text),
            max_error_rate: self.max_error_rate,
            max_p99: self.max_p99.map(text),
            min_requests: self
                .min_requests
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        }
    }
}

/// What a deploy did, with times from its start in the gateway.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub id: String,
    pub healthy_after: Duration,
    pub switched_at: Duration,
    /// When the old pools had nothing in flight; `None`: the drain timed out.
    pub drained_at: Option<Duration>,
    /// In flight on the old pools when the deploy ended.
    pub left_in_flight: u64,
    /// The pools that lost their share.
    pub old_pools: Vec<String>,
    /// The rollout of a stepped deploy.
    pub rollout: Option<String>,
}

impl Timeline {
    fn from_record(d: &Deploy) -> Timeline {
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        Timeline {
            id: d.id.clone(),
            healthy_after: ms(d.healthy_after_ms).unwrap_or_default(),
            switched_at: ms(d.switched_at_ms).unwrap_or_default(),
            drained_at: ms(d.drained_at_ms),
            left_in_flight: d.in_flight,
            old_pools: d.old_pools.clone(),
            rollout: d.rollout.clone(),
        }
    }

    /// The lines `ctl deploy` prints.
    pub fn render(&self, args: &DeployArgs) -> String {
        let mut out = String::new();
        let ms = |d: Duration| d.as_millis();
        let _ = writeln!(
            out,
            "route {}: deployed to pool {} (old: {}; deploy {})",
            args.route,
            args.to,
            if self.old_pools.is_empty() {
                "none".to_owned()
            } else {
                self.old_pools.join(", ")
            },
            self.id
        );
        let _ = writeln!(out, "  healthy after  {} ms", ms(self.healthy_after));
        match &self.rollout {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "  switched at    {} ms (rollout {r}, every gate passed)",
                    ms(self.switched_at)
                );
            }
            None => {
                let _ = writeln!(out, "  switched at    {} ms", ms(self.switched_at));
            }
        }
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

/// Starts the deploy in the gateway and follows it to its end; `interrupt`
/// (Ctrl-C) cancels it and ends with an error saying which state it left.
pub async fn deploy(
    client: &AdminClient,
    args: &DeployArgs,
    interrupt: impl Future<Output = ()>,
) -> Result<Timeline, CtlError> {
    let mut interrupt = std::pin::pin!(interrupt);
    let path = format!("/api/v1/routes/{}/deploy", client::segment(&args.route));
    let body = serde_json::to_vec(&args.request())
        .map_err(|e| CtlError::BadAnswer(format!("cannot write the request: {e}")))?;
    let started: Deploy = client
        .json(Method::POST, &path, Some(("application/json", body)))
        .await
        .map_err(|e| match e {
            CtlError::Api { .. } => CtlError::Deploy(format!("{e}; nothing changed")),
            e => e,
        })?;
    let id = started.id;
    let path = format!("/api/v1/deploys/{}", client::segment(&id));
    loop {
        let record: Deploy = client.json(Method::GET, &path, None).await?;
        if !record.phase.is_active() {
            return finish(&record);
        }
        tokio::select! {
            () = &mut interrupt => {
                let cancel = format!("{path}/cancel");
                let record: Deploy = client
                    .json(Method::POST, &cancel, Some(("application/json", b"{}".to_vec())))
                    .await?;
                return Err(CtlError::Deploy(match (record.phase, record.outcome) {
                    (DeployPhase::Cancelled, Some(outcome)) => outcome,
                    (phase, Some(outcome)) => format!("interrupted, but deploy {id} had ended ({phase:?}): {outcome}"),
                    (phase, None) => format!("interrupted; deploy {id} did not end within the wait ({phase:?}); see GET /api/v1/deploys/{id}"),
                }));
            }
            () = tokio::time::sleep(args.poll) => {}
        }
    }
}

fn finish(record: &Deploy) -> Result<Timeline, CtlError> {
    let outcome = record.outcome.clone().unwrap_or_default();
    match record.phase {
        DeployPhase::Drained | DeployPhase::DrainTimedOut => Ok(Timeline::from_record(record)),
        _ => Err(CtlError::Deploy(outcome)),
    }
}
