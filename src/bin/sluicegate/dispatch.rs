//! Runs a parsed command: `run`, `check`, `discover`, `demo`, `plan`, `ctl`, `health`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sluicegate::ctl::{self, AdminClient};
use sluicegate::ReloadOptions;
use sluicegate::{check, config, demo, load_tls, Drained, Gateway, GatewayOptions as Options};

use crate::cli::{Cli, Command, CtlCommand, RolloutCommand};
use crate::process::{runtime, shutdown_signal, small_runtime};

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

/// Runs the command of `cli` to its end.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => {
            let spec = config::load(&config)?;
            let loaded = load_tls(&spec)
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
                swarm: Default::default(),
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
            if let Some(swarm) = spec.discovery.swarm.clone() {
                let options = sluicegate::discovery::swarm::Options {
                    manager_token: sluicegate::discovery::swarm::manager_token(&spec),
                    ..Default::default()
                };
                return runtime(None)?.block_on(discover_swarm(swarm, options, watch));
            }
            let docker = spec.discovery.docker.clone().with_context(|| {
                format!(
                    "{} has no enabled [discovery.docker] or [discovery.swarm]",
                    config.display()
                )
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
                    CtlCommand::Pause {
                        route,
                        max,
                        max_queued,
                    } => ctl::pause(&client, &route, Some((max, max_queued))).await,
                    CtlCommand::Deploy {
                        route,
                        to,
                        wait_healthy,
                        settle,
                        drain_timeout,
                        steps,
                        step_interval,
                        max_error_rate,
                        max_p99,
                        min_requests,
                    } => {
                        let args = ctl::deploy::DeployArgs {
                            settle,
                            steps,
                            step_interval,
                            max_error_rate,
                            max_p99,
                            min_requests,
                            ..ctl::deploy::DeployArgs::new(&route, &to, wait_healthy, drain_timeout)
                        };
                        // Listening from now (not from the first poll): a Ctrl-C
                        // once the deploy runs in the gateway always cancels it.
                        let int = tokio::signal::unix::signal(
                            tokio::signal::unix::SignalKind::interrupt(),
                        );
                        let interrupt = async move {
                            match int {
                                Ok(mut int) => {
                                    int.recv().await;
                                }
                                Err(_) => std::future::pending::<()>().await,
                            }
                        };
                        ctl::deploy::deploy(&client, &args, interrupt)
                            .await
                            .map(|t| t.render(&args))
                    }
                    CtlCommand::Resume { route } => ctl::pause(&client, &route, None).await,
                    CtlCommand::Mirror {
                        route,
                        pool,
                        percent,
                        max_body,
                        timeout,
                        reset,
                    } => {
                        let args = match (reset, pool, percent) {
                            (false, Some(pool), Some(percent)) => Some(ctl::MirrorArgs {
                                pool,
                                percent,
                                max_body,
                                timeout,
                            }),
                            _ => None,
                        };
                        ctl::mirror(&client, &route, args).await
                    }
                    CtlCommand::Maintenance {
                        route,
                        message,
                        retry_after,
                        off,
                    } => {
                        let on = (!off).then_some((message, retry_after));
                        ctl::maintenance(&client, &route, on).await
                    }
                    CtlCommand::Rollout { command } => rollout(&client, command).await,
                    CtlCommand::Watch { once: true } => ctl::watch::picture(&client).await,
                    CtlCommand::Watch { once: false } => {
                        use std::io::IsTerminal;
                        let redraw = std::io::stdout().is_terminal();
                        ctl::watch::watch(&client, redraw, |text| println!("{text}"))
                            .await
                            .map(|()| String::new())
                    }
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

/// `sluicegate discover` for `[discovery.swarm]`: the first read (bounded),
/// then changes if asked. A swarm that cannot be read is an error naming why.
async fn discover_swarm(
    spec: config::spec::SwarmSpec,
    options: sluicegate::discovery::swarm::Options,
    watch: bool,
) -> anyhow::Result<ExitCode> {
    use sluicegate::discovery::swarm::SwarmDiscovery;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let board = std::sync::Arc::default();
    let mut d = SwarmDiscovery::spawn(spec, options, board, shutdown.clone());
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        d.status.wait_for(|s| s.lists > 0 || s.last_error.is_some()),
    );
    if !matches!(first.await, Ok(Ok(_))) {
        anyhow::bail!("no answer from the swarm within 10s");
    }
    let status = d.status.borrow().clone();
    if status.lists == 0 {
        anyhow::bail!("{}", status.last_error.unwrap_or_default());
    }
    print!(
        "{}",
        check::render_swarm(&d.reports.borrow_and_update(), &status)
    );
    if watch {
        loop {
            tokio::select! {
                changed = d.reports.changed() => changed.context("discovery stopped")?,
                _ = shutdown_signal() => break,
            }
            println!();
            let status = d.status.borrow().clone();
            print!(
                "{}",
                check::render_swarm(&d.reports.borrow_and_update(), &status)
            );
        }
    }
    shutdown.cancel();
    Ok(ExitCode::SUCCESS)
}

/// `ctl rollout …`; with `--watch` the table is printed as it changes (one line per
/// change when stdout is not a terminal).
async fn rollout(client: &AdminClient, command: RolloutCommand) -> Result<String, ctl::CtlError> {
    use sluicegate::RolloutAction as Action;
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
