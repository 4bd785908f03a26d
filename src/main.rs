//! The `sluicegate` binary: command line, runtime and signals. `anyhow` lives only here.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluicegate::{check, config, demo, gateway::Gateway, server::Drained};

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
        /// Worker threads (default: TOKIO_WORKER_THREADS, else one per CPU).
        #[arg(long)]
        workers: Option<usize>,
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
    /// Start blue and green demo agents in-process with the gateway in front.
    Demo {
        /// Address of the demo gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sluicegate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => {
            let spec = config::load(&config)?;
            print!("{}", check::render(&spec));
            println!("\n{}: ok", config.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            drain_timeout,
            workers,
        } => {
            let spec = config::load(&config)?;
            runtime(workers)?.block_on(async {
                let gateway = Gateway::bind(spec).await?;
                tracing::info!(addr = %gateway.local_addr()?, config = %config.display(), "serving");
                match gateway.serve(shutdown_signal(), drain_timeout).await {
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
        Command::Demo { listen } => runtime(None)?.block_on(async {
            demo::run(listen, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }),
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

fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = workers {
        anyhow::ensure!(n >= 1, "--workers must be at least 1");
        builder.worker_threads(n);
    }
    builder.build().context("cannot start the async runtime")
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGTERM; only Ctrl-C will stop the gateway");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
    }
}
