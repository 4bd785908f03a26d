//! Standalone echo agent: the upstream used by sluicegate's Docker images and
//! manual testing. All behaviour lives in the library of this package; this file
//! only parses flags, runs the runtime and handles signals, plus `--probe URL`:
//! a one-shot health check for Docker `HEALTHCHECK` in images without curl.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use sluicegate_echo_agent::{self as echo_agent, EchoConfig};

/// How long shutdown may take before we exit anyway; connections are dropped,
/// not drained, so this is only a safety net.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// HTTP/1.1 + h2c echo upstream for sluicegate tests and demos.
#[derive(Debug, Parser)]
#[command(name = "echo_agent", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "AGENT_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Agent name reported in `x-agent` [default: $HOSTNAME, else "echo"].
    #[arg(long, env = "AGENT_NAME")]
    name: Option<String>,
    /// Version reported in `x-agent-version` (`--version` is clap's own).
    #[arg(long, env = "AGENT_VERSION", default_value = "v1")]
    agent_version: String,
    /// Start with `/health` answering 503 (until `POST /control/health?ok=true`).
    #[arg(long, env = "AGENT_START_UNHEALTHY")]
    start_unhealthy: bool,
    /// Do not serve: GET this `http://IP:PORT/path` once and exit 0 iff it
    /// answers 2xx (for Docker HEALTHCHECK in a scratch image).
    #[arg(long, value_name = "URL")]
    probe: Option<http::Uri>,
    /// Bound on the whole `--probe` request.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    probe_timeout: Duration,
    /// After SIGTERM, keep serving this long before stopping: the time a load
    /// balancer needs to stop sending new requests (sluicegate drains on the
    /// `kill` event at once). 0 stops at once, dropping open connections.
    #[arg(long, env = "AGENT_STOP_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    stop_delay: Duration,
    /// Answer 500 to this share (0 to 1) of the requests, spread evenly, from
    /// the start (as `POST /control/fail?status=500&ratio=R`): a bad canary.
    #[arg(long, env = "AGENT_FAIL_RATIO", value_parser = ratio)]
    fail_ratio: Option<f64>,
}

/// A share between 0 and 1.
fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?} is not a share between 0 and 1")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(url) = args.probe {
        return match probe(url, args.probe_timeout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("echo_agent probe: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echo_agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // Logging is opt-in via RUST_LOG; a second init (never here) would only be ignored.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();

    let name = args
        .name
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "echo".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let config = EchoConfig {
            name,
            version: args.agent_version,
        };
        let agent = echo_agent::spawn(listener, config.clone());
        if args.start_unhealthy {
            agent.set_healthy(false);
        }
        if let Some(r) = args.fail_ratio {
            agent.set_failing_ratio(500, r);
        }
        println!(
            "echo_agent {} {} listening on {}",
            config.name,
            config.version,
            agent.addr()
        );
        wait_for_signal().await?;
        if !args.stop_delay.is_zero() {
            println!(
                "echo_agent {}: stopping in {:?} (serving until then)",
                config.name, args.stop_delay
            );
            tokio::time::sleep(args.stop_delay).await;
        }
        agent.shutdown();
        // Best effort: the process is exiting either way.
        let _ = tokio::time::timeout(STOP_GRACE, agent.stopped()).await;
        Ok(())
    })
}

/// `GET url` once; Ok iff the answer is 2xx within `timeout`.
fn probe(url: http::Uri, timeout: Duration) -> anyhow::Result<()> {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;

    anyhow::ensure!(
        url.scheme_str() == Some("http"),
        "only http:// URLs can be probed"
    );
    let host = url.host().context("URL has no host")?.to_owned();
    let port = url.port_u16().unwrap_or(80);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio runtime")?;
    runtime.block_on(async {
        let request = async {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let stream = tokio::net::TcpStream::connect((host, port))
                .await
                .with_context(|| format!("connecting to {host}:{port}"))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let path = url.path_and_query().map_or("/", |p| p.as_str());
            let req = http::Request::get(path)
                .header(http::header::HOST, format!("{host}:{port}"))
                .body(Empty::<bytes::Bytes>::new())?;
            let status = sender.send_request(req).await?.status();
            anyhow::ensure!(status.is_success(), "{url} answered {status}");
            Ok(())
        };
        tokio::time::timeout(timeout, request)
            .await
            .with_context(|| format!("no answer from {url} within {timeout:?}"))?
    })
}

/// Resolves on ctrl-c, or SIGTERM on unix (what `docker stop` sends).
async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res.context("waiting for ctrl-c"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for ctrl-c")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_ratio_is_a_share_between_0_and_1() {
        assert_eq!(ratio("0.05"), Ok(0.05));
        assert_eq!(ratio("1"), Ok(1.0));
        assert!(ratio("1.5").is_err());
        assert!(ratio("-0.1").is_err());
        assert!(ratio("five").is_err());
        let args = Args::try_parse_from(["echo_agent", "--fail-ratio", "0.25"]).expect("parses");
        assert_eq!(args.fail_ratio, Some(0.25));
        assert!(Args::try_parse_from(["echo_agent", "--fail-ratio", "2"]).is_err());
    }
}
