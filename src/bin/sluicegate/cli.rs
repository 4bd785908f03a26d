//! The command line: every subcommand and flag (clap types), and their conversion
//! into the library's requests. No behaviour: `dispatch` runs the commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sluicegate::ctl::{self, AdminClient};

#[derive(Parser, Debug)]
#[command(
    name = "sluicegate",
    version,
    about = "HTTP front door for docker-compose agent fleets"
)]
/// `sluicegate` and its subcommands.
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve traffic. SIGTERM/SIGINT: stop accepting, finish in-flight requests, exit 0.
    Run {
        /// Path to routes.toml.
        #[arg(short, long, default_value = "routes.toml")]
        config: PathBuf,
        /// Longest time to wait for in-flight requests and tunnels on shutdown.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        drain_timeout: Duration,
        /// Worker threads (default: one per CPU). One worker runs tokio's
        /// current-thread scheduler.
        #[arg(long, env = "TOKIO_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
        workers: Option<u16>,
        /// Do not watch the config file; reload only on SIGHUP.
        #[arg(long)]
        no_watch: bool,
        /// Quiet time after a change of the config file before it is reloaded.
        #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
        reload_debounce: Duration,
    },
    /// Validate routes.toml and print the resolved table; exit 1 on any error.
    Check {
        #[arg(short, long, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// List what Docker discovery finds for routes.toml's [discovery.docker]
    /// (pools, backends, skipped containers and why) or [discovery.swarm]
    /// (services, their tasks with node, address, state and desired state, and
    /// what was skipped and why); `--watch` follows changes.
    Discover {
        #[arg(short, long, default_value = "routes.toml")]
        config: PathBuf,
        /// Keep printing the set whenever it changes (Ctrl-C to stop).
        #[arg(long)]
        watch: bool,
    },
    /// Show what reloading routes.toml would change in the running gateway (applies nothing).
    Plan {
        #[arg(short, long, default_value = "routes.toml")]
        config: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Steer a running gateway through its admin API.
    Ctl {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// Exit 0 if the local admin API's /readyz answers (for Docker HEALTHCHECK).
    Health {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Start blue and green demo agents in-process with the gateway in front.
    Demo {
        /// Address of the demo gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the demo's admin API.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
}

/// Where the admin API is.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Admin API base URL.
    #[arg(
        long = "admin",
        env = "SLUICEGATE_ADMIN",
        default_value = "http://127.0.0.1:9901"
    )]
    pub url: String,
    /// Bearer token (the value of the gateway's [admin].token_env variable).
    #[arg(long, env = "SLUICEGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Give up on the admin API after this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `ctl` subcommands.
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Routes, splits, pools and backends (health, in-flight, source).
    Status,
    /// Set a route's whole split: `split agents agent-blue=0 agent-green=100`.
    Split {
        route: String,
        /// POOL=WEIGHT for every pool of the new split.
        assignments: Vec<String>,
        /// Drop the admin override: back to the config file's split.
        #[arg(long)]
        reset: bool,
    },
    /// Stop sending new requests to a backend; in-flight ones and streams finish.
    Drain { pool: String, addr: String },
    /// Put a drained backend back in rotation.
    Undrain { pool: String, addr: String },
    /// Hold new requests of a route (in-flight ones continue) until `ctl resume`;
    /// a request that waits `--max` is answered 504 `paused_timeout`.
    Pause {
        route: String,
        /// Longest wait of one request.
        #[arg(long, default_value = "30s")]
        max: String,
        /// Most requests waiting at once; one more is answered 503 `pause_queue_full`.
        #[arg(long)]
        max_queued: Option<i64>,
    },
    /// Switch ROUTE to POOL once all of POOL's backends are healthy (at once, or
    /// in `--steps` with gates), then wait until the pools that lost their share
    /// have nothing in flight; exits 0 with the timeline, non-zero (routing as
    /// before, or rolled back) when POOL is not healthy in time or a gate fails.
    /// The deploy runs in the gateway; Ctrl-C cancels it and says what state it left.
    Deploy {
        route: String,
        /// The pool that gets the whole route.
        #[arg(long)]
        to: String,
        /// Longest wait for POOL to be healthy.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait_healthy: Duration,
        /// How long POOL must stay healthy before the switch.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        settle: Duration,
        /// Longest wait for the old pools' in-flight requests, streams and tunnels.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        drain_timeout: Duration,
        /// Switch in steps of percent on POOL through a gated rollout, e.g.
        /// `5,25,50,100`; a failed gate rolls back and the command fails.
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<u32>>,
        /// How long each step runs before its gate judges it (default 30s).
        #[arg(long, requires = "steps", value_parser = humantime::parse_duration)]
        step_interval: Option<Duration>,
        /// The gate's largest error rate of a step (default 0.01).
        #[arg(long, requires = "steps")]
        max_error_rate: Option<f64>,
        /// The gate's largest p99 of a step.
        #[arg(long, requires = "steps", value_parser = humantime::parse_duration)]
        max_p99: Option<Duration>,
        /// Requests a step needs before its gate can judge (default 20).
        #[arg(long, requires = "steps")]
        min_requests: Option<u64>,
    },
    /// End a route's pause: the waiting requests go on.
    Resume { route: String },
    /// Copy a share of a route's requests to another pool (shadow traffic: the
    /// copies' answers are discarded and counted); `--reset` removes the override.
    Mirror {
        route: String,
        /// The pool the copies go to.
        #[arg(long = "to", required_unless_present = "reset")]
        pool: Option<String>,
        /// Share of requests copied, 0 to 100 (0 stops a file's or labels' mirror).
        #[arg(long, required_unless_present = "reset")]
        percent: Option<i64>,
        /// Larger request bodies are not mirrored (bytes or e.g. "1MiB"; default 1 MiB).
        #[arg(long)]
        max_body: Option<String>,
        /// Whole life of one copy (default 10s).
        #[arg(long)]
        timeout: Option<String>,
        /// Remove the override: back to the file's (or labels') mirror.
        #[arg(long, conflicts_with_all = ["pool", "percent", "max_body", "timeout"])]
        reset: bool,
    },
    /// Answer a route's requests 503 with Retry-After (an HTML page for browsers,
    /// JSON for API clients); `--off` ends it.
    Maintenance {
        route: String,
        /// Shown on the page and in the JSON answer.
        #[arg(long)]
        message: Option<String>,
        /// Retry-After in seconds.
        #[arg(long)]
        retry_after: Option<i64>,
        /// End the maintenance.
        #[arg(long, conflicts_with_all = ["message", "retry_after"])]
        off: bool,
    },
    /// The status picture, live from the event stream (redrawn on a terminal,
    /// one line per event otherwise).
    Watch {
        /// Print the picture once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Automated rollouts: start, status [--watch], pause, resume, promote, abort.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
}

/// `ctl rollout` subcommands.
#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Move ROUTE to a pool in steps, judging each: `start agents --to agent-green`.
    Start(Box<RolloutArgs>),
    /// One rollout's step table (or, without ID, every rollout).
    Status {
        id: Option<String>,
        /// Redraw as it changes until the rollout ends.
        #[arg(long, requires = "id")]
        watch: bool,
    },
    /// Hold the current split; resume measures the step again from its start.
    Pause { id: String },
    /// Continue a paused rollout.
    Resume { id: String },
    /// Jump to 100% on the target now (no more judging).
    Promote { id: String },
    /// Roll back to the starting split now.
    Abort { id: String },
}

/// The rollout request (see `POST /api/v1/rollouts`).
#[derive(Args, Debug)]
pub struct RolloutArgs {
    route: String,
    /// Follow the rollout until it ends.
    #[arg(long)]
    pub watch: bool,
    /// The pool that receives the traffic.
    #[arg(long)]
    to: String,
    /// Pools the traffic comes from (default: those carrying weight now).
    #[arg(long, value_delimiter = ',')]
    from: Option<Vec<String>>,
    /// Percent on the target at each step, ending at 100 (`100` alone: blue-green).
    #[arg(long, value_delimiter = ',', default_value = "5,25,50,100")]
    steps: Vec<i64>,
    /// How long each step runs before it is judged.
    #[arg(long = "step-interval", default_value = "30s")]
    step_interval: String,
    /// Highest error rate (5xx and gateway errors) of the target during a step.
    #[arg(long)]
    max_error_rate: Option<f64>,
    /// Highest p99 latency of the target during a step, e.g. 500ms.
    #[arg(long)]
    max_p99: Option<String>,
    /// Highest error rate of the target above that of the `from` pools.
    #[arg(long)]
    max_error_rate_delta: Option<f64>,
    /// Requests the target must see in a step before it is judged.
    #[arg(long)]
    min_requests: Option<i64>,
    /// Longest a step waits for min-requests.
    #[arg(long)]
    max_wait: Option<String>,
    /// After max-wait with too few requests: fail (roll back) or pass.
    #[arg(long, value_parser = ["fail", "pass"])]
    on_low_traffic: Option<String>,
    /// Judge the final 100% step for this long (blue-green).
    #[arg(long)]
    bake: Option<String>,
    /// What a gateway restart mid-rollout does: resume or rollback.
    #[arg(long, value_parser = ["resume", "rollback"])]
    on_restart: Option<String>,
}

impl RolloutArgs {
    /// The admin API request these flags ask for.
    pub fn request(self) -> Result<sluicegate::RolloutRequest, ctl::CtlError> {
        Ok(sluicegate::RolloutRequest {
            route: self.route,
            to: self.to,
            from: self.from,
            steps: self.steps,
            step_interval: self.step_interval,
            max_error_rate: self.max_error_rate,
            max_p99: self.max_p99,
            min_requests: self.min_requests,
            max_wait: self.max_wait,
            on_low_traffic: choice("on-low-traffic", self.on_low_traffic)?,
            max_error_rate_delta: self.max_error_rate_delta,
            bake: self.bake,
            on_restart: choice("on-restart", self.on_restart)?,
        })
    }
}

/// A `snake_case` enum value given on the command line.
fn choice<T: serde::de::DeserializeOwned>(
    flag: &str,
    value: Option<String>,
) -> Result<Option<T>, ctl::CtlError> {
    value
        .map(|v| serde_json::from_value(serde_json::Value::String(v)))
        .transpose()
        .map_err(|e| ctl::CtlError::Usage(format!("--{flag}: {e}")))
}

impl AdminArgs {
    /// A client of the admin API these flags name.
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        Ok(AdminClient::new(
            &self.url,
            self.token.clone(),
            self.timeout,
        )?)
    }
}
