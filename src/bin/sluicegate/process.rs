//! The process around a command: logging, the tokio runtime, and the stop signals.

use anyhow::Context;
use sluicegate::access_log::{self, writer::WriterGuard};
use sluicegate::config::spec::{AccessLog, LogSpec};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Logs on stderr (`RUST_LOG`, default `info`); with `[log] access = "stdout"`, the
/// access log on stdout through a non-blocking writer whose guard is returned.
pub fn init_logging(log: LogSpec) -> std::io::Result<Option<WriterGuard>> {
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

/// A one-thread runtime for the short-lived client commands.
pub fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The gateway's runtime: `workers` threads (`--workers` or `TOKIO_WORKER_THREADS`,
/// read by clap; else one per CPU). One worker gets tokio's current-thread scheduler:
/// everything then runs on the thread that drives the I/O, as nginx's single worker
/// does, without the cross-thread queues and wake-ups of the multi-thread scheduler
/// (benches/JOURNAL.md, "Side by side with nginx and HAProxy").
pub fn runtime(workers: Option<u16>) -> anyhow::Result<tokio::runtime::Runtime> {
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
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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
