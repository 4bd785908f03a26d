//! A rollout's record: what was asked, where it is and what each step measured.
//!
//! These are the types the controller persists with the split they explain (in
//! the admin overrides and the state file), the admin API returns and `ctl`
//! reads. They sit below both the controller and the rollout manager
//! (`crate::control_plane::rollout`), which steers through the controller: neither imports the
//! other's module for them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One rollout: what was asked, where it is, and what each step measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// `{route}-{n}`.
    pub id: String,
    pub spec: RolloutSpec,
    pub phase: Phase,
    /// The route's split when the rollout started (what a rollback restores).
    pub start_split: Vec<Weight>,
    /// Whether that split was the file's (a rollback then removes the override).
    pub start_from_file: bool,
    /// Steps reached so far, in order; the last is the one in force.
    pub steps: Vec<StepRecord>,
    /// Why the rollout ended (or was paused), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Wall-clock start and end (milliseconds since the Unix epoch).
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// Times another gateway process picked this rollout up and went on: a
    /// restart of its driver, or (with `[cluster]`) another replica taking it
    /// over, by lease expiry or by receiving an admin action.
    #[serde(default)]
    pub resumed: u32,
}

/// A validated rollout request (defaults filled in).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub route: String,
    /// The pool that receives the traffic.
    pub to: String,
    /// The pools it comes from (default: those carrying weight at the start).
    pub from: Vec<String>,
    /// Percent of the route's traffic on `to` at each step; increasing, ends at 100.
    pub steps: Vec<u32>,
    #[serde(with = "humantime_serde")]
    pub step_interval: Duration,
    /// Highest error rate (0..1) of the target pool during a step.
    pub max_error_rate: f64,
    /// Highest p99 latency (time to response head) during a step.
    #[serde(default, with = "humantime_serde")]
    pub max_p99: Option<Duration>,
    /// Requests the target must have seen in a step before it is judged.
    pub min_requests: u64,
    /// Longest a step waits for `min_requests` (from the step's start).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    pub on_low_traffic: LowTraffic,
    /// Highest error rate of the target minus that of the `from` pools.
    #[serde(default)]
    pub max_error_rate_delta: Option<f64>,
    /// How long the final (100 %) step is judged; none: not judged.
    #[serde(default, with = "humantime_serde")]
    pub bake: Option<Duration>,
    pub on_restart: OnRestart,
}

/// One pool's weight in a split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    pub pool: String,
    pub weight: u32,
}

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Stepping and judging.
    Running,
    /// Holding the current split; the step restarts on resume.
    Paused,
    /// All traffic on the target.
    Succeeded,
    /// A gate, the target's health or a restart rolled it back.
    RolledBack,
    /// An operator rolled it back.
    Aborted,
}

impl Phase {
    /// Whether the rollout still owns its route's split.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Running | Phase::Paused)
    }

    /// Lower-case name (JSON, tables, metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Succeeded => "succeeded",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
        }
    }
}

/// What a step's gate said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The step is in force and being measured.
    Measuring,
    Passed,
    Failed,
    /// Cut short (promote, abort, health, pause-then-abort).
    Skipped,
    /// The final step without `bake`, or reached by `promote`.
    NotJudged,
}

/// One step as it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    /// Percent of the route on the target.
    pub weight: u32,
    pub started_ms: u64,
    /// How long the measured window lasted (live while measuring).
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Target pool figures during the window.
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Error rate of the `from` pools during the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_error_rate: Option<f64>,
    pub verdict: Verdict,
    /// Why it failed, or a note (waiting for traffic, passed on low traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// With `[cluster].peers`: how many replicas' traffic the figures sum (the
    /// driver's included); 0 when only the driver's own was measured.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicas: u32,
    /// Peers whose traffic is not (wholly) in the figures, each with why: one
    /// that could not be read, or was counted only from a later read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a rollout ended: which metric, its value and the bound, in words too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// `error_rate`, `error_rate_delta`, `p99`, `requests`, `health`, `abort`,
    /// `promote`, `restart`, `apply`.
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<f64>,
    pub message: String,
}

impl Reason {
    /// A reason without figures.
    pub fn plain(metric: &str, message: impl Into<String>) -> Reason {
        Reason {
            metric: metric.to_owned(),
            value: None,
            bound: None,
            message: message.into(),
        }
    }
}

/// What a step does when it saw fewer than `min_requests` by `max_wait`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LowTraffic {
    /// Roll back: an unproven version is not promoted (the default).
    #[default]
    Fail,
    /// Judge the requests there were (and pass with none).
    Pass,
}

/// What a gateway restart does with a running rollout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRestart {
    /// Re-apply the current step and measure it again from the start (the default).
    #[default]
    Resume,
    /// Roll back to the starting split.
    Rollback,
}

/// `pause`, `resume`, `promote`, `abort`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Pause,
    Resume,
    Promote,
    Abort,
}

impl Rollout {
    /// The target's percentage now (the last step reached; 0 after a rollback).
    pub fn current_weight(&self) -> u32 {
        match self.phase {
            Phase::RolledBack | Phase::Aborted => 0,
            _ => self.steps.last().map_or(0, |s| s.weight),
        }
    }
}
