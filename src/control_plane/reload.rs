//! File hot reload: watch `routes.toml`, debounce, validate, hand to the controller.
//!
//! The watcher (notify) watches the file's *directory*, not the file: editors,
//! `docker cp` and Kubernetes ConfigMaps replace a file by renaming another over it,
//! which a watch on the old inode would miss. Any event in the directory starts a
//! debounce; once the directory has been quiet for the debounce time (bounded, so a
//! file rewritten nonstop still reloads), the file is read and, if its text changed,
//! validated: the config rules, then the TLS files it names (certificates, keys, pool
//! `ca` files must load, as at start). A valid file goes to the controller task,
//! which merges the admin overrides and publishes; an invalid one is logged with
//! every key-path error and counted, and nothing changes. A file refused only for its
//! TLS files is tried again at the next event even if its text did not change (the
//! fix is usually to the certificate files). `SIGHUP` (when enabled) forces the same
//! reload.
//!
//! This module does not merge or publish anything itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::control_plane::config;
use crate::control_plane::controller::task::{ControlHandle, Update};
use crate::control_plane::off_worker;
use crate::data_plane::tls;

/// How reload is triggered.
#[derive(Clone, Debug)]
pub struct ReloadOptions {
    /// Watch the file's directory for changes.
    pub watch: bool,
    /// Quiet time after the last event before reloading.
    pub debounce: Duration,
    /// Also reload on SIGHUP (only the binary: tests share one process).
    pub sighup: bool,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            watch: true,
            debounce: Duration::from_millis(200),
            sighup: false,
        }
    }
}

/// Why a reload source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot watch {}: {error}", .dir.display())]
    Watch { dir: PathBuf, error: notify::Error },
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(std::io::Error),
}

/// What woke the reloader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// Something changed in the directory: reload if the text differs.
    Changed,
    /// SIGHUP or an explicit request: reload even if the text is the same.
    Forced,
}

/// Asks the reloader for a forced reload (what SIGHUP does).
#[derive(Clone, Debug)]
pub struct ReloadTrigger(mpsc::Sender<Trigger>);

impl ReloadTrigger {
    /// Requests a reload; a no-op when one is already pending.
    pub fn reload_now(&self) {
        if self.0.try_send(Trigger::Forced).is_err() {
            tracing::debug!("reload already pending");
        }
    }
}

/// Reloads one config file into the controller.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    options: ReloadOptions,
    control: ControlHandle,
    /// The text last handed on (or rejected): unchanged text is not reloaded.
    last: Option<String>,
    tx: mpsc::Sender<Trigger>,
    rx: mpsc::Receiver<Trigger>,
    _watcher: Option<notify::RecommendedWatcher>,
    sighup: Option<tokio::signal::unix::Signal>,
}

impl Reloader {
    /// Sets up watching `path` (already loaded once by the caller).
    pub fn new(
        path: &Path,
        options: ReloadOptions,
        control: ControlHandle,
    ) -> Result<Reloader, ReloadError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let last = std::fs::read_to_string(&path).ok();
        // One pending trigger is enough: the reload reads the newest text anyway.
        let (tx, rx) = mpsc::channel(1);
        let watcher = if options.watch {
            Some(watch_dir(&path, tx.clone())?)
        } else {
            None
        };
        let sighup = if options.sighup {
            let kind = tokio::signal::unix::SignalKind::hangup();
            Some(tokio::signal::unix::signal(kind).map_err(ReloadError::Signal)?)
        } else {
            None
        };
        Ok(Reloader {
            path,
            options,
            control,
            last,
            tx,
            rx,
            _watcher: watcher,
            sighup,
        })
    }

    /// A handle to force a reload.
    pub fn trigger(&self) -> ReloadTrigger {
        ReloadTrigger(self.tx.clone())
    }

    /// Reloads on triggers until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(file = %self.path.display(), watch = self.options.watch, "hot reload ready");
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return,
                t = self.rx.recv() => t,
                () = hangup(&mut self.sighup) => Some(Trigger::Forced),
            };
            let Some(first) = first else { return };
            let forced = first == Trigger::Forced || self.settle().await;
            self.reload(forced).await;
        }
    }

    /// Waits until no event came for the debounce time (at most 20 debounce
    /// periods); returns whether a forced trigger came meanwhile.
    async fn settle(&mut self) -> bool {
        let debounce = self.options.debounce;
        let give_up = crate::clock::later(
            tokio::time::Instant::now(),
            crate::clock::times(debounce, 20),
        );
        let mut forced = false;
        while let Ok(Some(t)) = tokio::time::timeout(debounce, self.rx.recv()).await {
            forced |= t == Trigger::Forced;
            if tokio::time::Instant::now() >= give_up {
                break;
            }
        }
        forced
    }

    async fn reload(&mut self, forced: bool) {
        let file = self.path.display().to_string();
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(err) => {
                tracing::error!(%file, %err, "config reload failed: cannot read the file; the running config stays");
                self.rejected(err.to_string()).await;
                return;
            }
        };
        if !forced && self.last.as_deref() == Some(text.as_str()) {
            tracing::debug!(%file, "directory changed but the config text did not");
            return;
        }
        self.last = Some(text.clone());
        // Parsing and validating a large file (10 000 backends: tens of
        // milliseconds) would hold up every request on this worker.
        let path = self.path.clone();
        let Some(parsed) =
            off_worker::run("config parse", move || config::parse_at(&text, &path)).await
        else {
            return;
        };
        match parsed {
            Err(errors) => {
                tracing::error!(%file, "config reload rejected, the running config stays; fix:\n{errors}");
                self.rejected(errors.to_string()).await;
            }
            Ok(spec) => {
                let loaded = match tls::load_off_thread(&spec).await {
                    Ok(loaded) => loaded,
                    Err(errors) => {
                        tracing::error!(%file, "config reload rejected: TLS files it names do not load; the running config stays; fix:\n{errors}");
                        // Retry at the next event even with the same text.
                        self.last = None;
                        self.rejected(errors.to_string()).await;
                        return;
                    }
                };
                for warning in &loaded.warnings {
                    tracing::warn!("{warning}");
                }
                let (reply, applied) = oneshot::channel();
                let spec = Box::new(spec);
                if self
                    .control
                    .send(Update::File { spec, reply })
                    .await
                    .is_none()
                    || applied.await.is_err()
                {
                    tracing::debug!("controller stopped before the reload was applied");
                }
            }
        }
    }

    async fn rejected(&self, errors: String) {
        if self
            .control
            .send(Update::FileInvalid { errors })
            .await
            .is_none()
        {
            tracing::debug!("controller stopped; rejected reload not counted");
        }
    }
}

/// Resolves on the next SIGHUP; never when SIGHUP is not handled.
async fn hangup(sighup: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(signal) = sighup {
        if signal.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            return;
        }
    }
    std::future::pending().await
}

/// Watches the directory holding `path`; every event becomes a `Changed` trigger.
fn watch_dir(
    path: &Path,
    tx: mpsc::Sender<Trigger>,
) -> Result<notify::RecommendedWatcher, ReloadError> {
    use notify::Watcher;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let failed = |error| ReloadError::Watch {
        dir: dir.clone(),
        error,
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // Access events (reads) change nothing.
            Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => {}
            Ok(_) => {
                // Full means a trigger is already pending, which is as good.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Trigger::Changed) {
                    tracing::trace!("file event after the reloader stopped");
                }
            }
            Err(err) => tracing::warn!(%err, "file watcher error"),
        }
    })
    .map_err(failed)?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(failed)?;
    Ok(watcher)
}
