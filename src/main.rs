//! The `sluicegate` binary: command line, runtime and signals. `anyhow` lives only here.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sluicegate::access_log::writer::WriterGuard;
use sluicegate::config::spec::{AccessLog, LogSpec};
use sluicegate::ctl::{self, AdminClient};
use sluicegate::gateway::{Gateway, Options};
use sluicegate::reload::ReloadOptions;
use sluicegate::{access_log, check, config, demo, server::Drained, tls};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Parser, Debug)]
#[command(
    name = "sluicegate",
    version,
    about = "HTTP front door for docker-compose agent fleets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    /// (pools, backends, skipped containers and why); `--watch` follows changes.
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
struct AdminArgs {
    /// Admin API base URL.
    #[arg(
        long = "admin",
        env = "SLUICEGATE_ADMIN",
        default_value = "http://127.0.0.1:9901"
    )]
    url: String,
    /// Bearer token (the value of the gateway's [admin].token_env variable).
    #[arg(long, env = "SLUICEGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Give up on the admin API after this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
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
    /// Automated rollouts: start, status [--watch], pause, resume, promote, abort.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
}

#[derive(Subcommand, Debug)]
enum RolloutCommand {
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
struct RolloutArgs {
    route: String,
    /// Follow the rollout until it ends.
    #[arg(long)]
    watch: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` takes its access-log settings from the config. A file that does not load
    // is reported by `dispatch` (with the logger up); here it just means no access log.
    let log = match &cli.command {
        Command::Run { config, .. } => config::load(config).map(|s| s.log).unwrap_or_default(),
        _ => LogSpec::default(),
    };
    // Writes what the access log still holds when dropped, at the end of main.
    let _access_log = match init_logging(log) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("sluicegate: cannot start the access log writer: {err}");
            return ExitCode::FAILURE;
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sluicegate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs on stderr (`RUST_LOG`, default `info`); with `[log] access = "stdout"`, the
/// access log on stdout through a non-blocking writer whose guard is returned.
fn init_logging(log: LogSpec) -> std::io::Result<Option<WriterGuard>> {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Access lines never go to stderr, whatever RUST_LOG says about `sluicegate`.
    if let Ok(off) = format!("{}=off", access_log::TARGET).parse() {
        filter = filter.add_directive(off);
    }
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // No colour codes in `docker logs` and files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(stderr);
    match log.access {
        AccessLog::Off => {
            registry.init();
            Ok(None)
        }
        AccessLog::Stdout => {
            let (layer, guard) = access_log::layer(log.format)?;
            registry.with(layer).init();
            Ok(Some(guard))
        }
    }
}

/// Writes to stdout; a closed pipe (`sluicegate check | head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => {
            let spec = config::load(&config)?;
            let loaded = tls::load(&spec)
                .map_err(|errors| anyhow::anyhow!("{} is invalid:\n{errors}", config.display()))?;
            let mut text = check::render(&spec);
            for warning in &loaded.warnings {
                text.push_str(&format!("\nWARNING {warning}\n"));
            }
            text.push_str(&format!("\n{}: ok\n", config.display()));
            write_stdout(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            drain_timeout,
            workers,
            no_watch,
            reload_debounce,
        } => {
            let spec = config::load(&config)?;
            let options = Options {
                config_path: Some(config.clone()),
                reload: ReloadOptions {
                    watch: !no_watch,
                    debounce: reload_debounce,
                    sighup: true,
                },
                discovery: Default::default(),
            };
            runtime(workers)?.block_on(async {
                // Installed first, so a stop from here on is a graceful one.
                let shutdown = shutdown_signal();
                let gateway = Gateway::bind_with(spec, options).await?;
                if let Some(admin) = gateway.admin_addr() {
                    tracing::info!(%admin, "admin API");
                }
                tracing::info!(addr = %gateway.local_addr()?, config = %config.display(), "serving");
                if let Some(addr) = gateway.https_addr() {
                    tracing::info!(%addr, "serving HTTPS");
                }
                match gateway.serve(shutdown, drain_timeout).await {
                    Drained::Clean => tracing::info!("drained, exiting"),
                    Drained::TimedOut => tracing::warn!(
                        ?drain_timeout,
                        "drain timeout reached: remaining requests were cut"
                    ),
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Discover { config, watch } => {
            let spec = config::load(&config)?;
            let docker = spec.discovery.docker.clone().with_context(|| {
                format!("{} has no enabled [discovery.docker]", config.display())
            })?;
            runtime(None)?.block_on(discover(docker, watch))
        }
        Command::Demo { listen, admin } => runtime(None)?.block_on(async {
            let program = std::env::args()
                .next()
                .unwrap_or_else(|| "sluicegate".into());
            demo::run(listen, admin, &program, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Plan { config, admin } => {
            let client = admin.client()?;
            let plan = small_runtime()?.block_on(ctl::plan(&client, &config))?;
            print!("{plan}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Ctl { admin, command } => {
            let client = admin.client()?;
            let out = small_runtime()?.block_on(async {
                match command {
                    CtlCommand::Status => ctl::status(&client).await,
                    CtlCommand::Split {
                        route,
                        assignments,
                        reset,
                    } => ctl::split(&client, &route, &assignments, reset).await,
                    CtlCommand::Drain { pool, addr } => {
                        ctl::drain(&client, &pool, &addr, true).await
                    }
                    CtlCommand::Undrain { pool, addr } => {
                        ctl::drain(&client, &pool, &addr, false).await
                    }
                    CtlCommand::Rollout { command } => rollout(&client, command).await,
                }
            })?;
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Health { admin } => {
            let client = admin.client()?;
            small_runtime()?.block_on(ctl::health(&client))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `sluicegate discover`: the first full list (bounded), then changes if asked.
async fn discover(docker: config::DockerSpec, watch: bool) -> anyhow::Result<ExitCode> {
    use sluicegate::discovery::{DockerDiscovery, Options};
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut d = DockerDiscovery::spawn(docker, Options::default(), shutdown.clone());
    let first = tokio::time::timeout(Duration::from_secs(10), d.status.wait_for(|s| s.lists > 0));
    if !matches!(first.await, Ok(Ok(_))) {
        let error = d.status.borrow().last_error.clone();
        anyhow::bail!(
            "no container list from Docker within 10s: {}",
            error.unwrap_or_default()
        );
    }
    print!("{}", check::render_discovered(&d.sets.borrow_and_update()));
    if watch {
        loop {
            tokio::select! {
                changed = d.sets.changed() => changed.context("discovery stopped")?,
                _ = shutdown_signal() => break,
            }
            println!();
            print!("{}", check::render_discovered(&d.sets.borrow_and_update()));
        }
    }
    shutdown.cancel();
    Ok(ExitCode::SUCCESS)
}

/// `ctl rollout …`; with `--watch` the table is printed as it changes.
async fn rollout(client: &AdminClient, command: RolloutCommand) -> Result<String, ctl::CtlError> {
    use sluicegate::rollout::Action;
    let watch = |id: String| async move {
        use std::io::IsTerminal;
        let every = Duration::from_secs(1);
        let output = if std::io::stdout().is_terminal() {
            ctl::rollout::WatchOutput::Table
        } else {
            ctl::rollout::WatchOutput::Lines
        };
        let shown =
            ctl::rollout::watch(client, &id, every, output, |frame| println!("{frame}")).await?;
        Ok(format!("rollout {id} ended: {}\n", shown.phase.as_str()))
    };
    let (action, id) = match command {
        RolloutCommand::Start(args) => {
            let follow = args.watch;
            let r = ctl::rollout::start(client, &args.request()?).await?;
            return if follow {
                watch(r.id).await
            } else {
                Ok(ctl::rollout::render(&r))
            };
        }
        RolloutCommand::Status { id: None, .. } => return ctl::rollout::list(client).await,
        RolloutCommand::Status {
            id: Some(id),
            watch: true,
        } => return watch(id).await,
        RolloutCommand::Status {
            id: Some(id),
            watch: false,
        } => {
            return Ok(ctl::rollout::render(&ctl::rollout::get(client, &id).await?));
        }
        RolloutCommand::Pause { id } => (Action::Pause, id),
        RolloutCommand::Resume { id } => (Action::Resume, id),
        RolloutCommand::Promote { id } => (Action::Promote, id),
        RolloutCommand::Abort { id } => (Action::Abort, id),
    };
    Ok(ctl::rollout::render(
        &ctl::rollout::act(client, &id, action).await?,
    ))
}

impl RolloutArgs {
    fn request(self) -> Result<sluicegate::rollout::RolloutRequest, ctl::CtlError> {
        Ok(sluicegate::rollout::RolloutRequest {
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
    fn client(&self) -> anyhow::Result<AdminClient> {
        Ok(AdminClient::new(
            &self.url,
            self.token.clone(),
            self.timeout,
        )?)
    }
}

/// A one-thread runtime for the short-lived client commands.
fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The gateway's runtime: `workers` threads (`--workers` or `TOKIO_WORKER_THREADS`,
/// read by clap; else one per CPU). One worker gets tokio's current-thread scheduler:
/// everything then runs on the thread that drives the I/O, as nginx's single worker
/// does, without the cross-thread queues and wake-ups of the multi-thread scheduler
/// (measured in benches/README.md).
fn runtime(workers: Option<u16>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(1) => {
            tracing::info!("runtime: current-thread scheduler, 1 worker");
            tokio::runtime::Builder::new_current_thread()
        }
        Some(n) => {
            tracing::info!("runtime: multi-thread scheduler, {n} workers");
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(n));
            builder
        }
        None => {
            tracing::info!("runtime: multi-thread scheduler, one worker per CPU");
            tokio::runtime::Builder::new_multi_thread()
        }
    };
    builder.enable_all();
    builder.build().context("cannot start the async runtime")
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called,
/// not when the future is first polled: a signal that comes while the gateway
/// still starts up is kept for it rather than ending the process at once.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let listen = |kind, name| {
        signal(kind)
            .inspect_err(|err| tracing::error!(%err, "cannot listen for {name}; it will not stop the gateway"))
            .ok()
    };
    // A signal that cannot be listened for never arrives.
    async fn arrives(signal: Option<Signal>) {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let term = listen(SignalKind::terminate(), "SIGTERM");
    let int = listen(SignalKind::interrupt(), "SIGINT");
    async move {
        tokio::select! {
            () = arrives(term) => tracing::info!("SIGTERM: draining"),
            () = arrives(int) => tracing::info!("SIGINT: draining"),
        }
    }
}
