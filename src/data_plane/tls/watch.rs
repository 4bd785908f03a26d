//! Certificate hot reload: watch the certificate directories, reload, swap.
//!
//! The directories holding the `cert` and `key` files are watched (not the files:
//! editors and `mv` replace files, and Kubernetes swaps a `..data` symlink). An
//! event naming one of the files (or a `..` entry) wakes the reload task, which
//! waits [`DEBOUNCE`] for the writer to finish and reloads every entry. An entry
//! whose files fail to load (unreadable, bad PEM, key not matching the
//! certificate, a half-written file) keeps its previous certificate, and the error
//! names the file; an entry whose bytes did not change is left alone. Only when
//! something changed is a new table published.
//!
//! The task is owned by the returned [`CertWatcher`]: dropping it stops watching.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::certs;
use super::resolver::{CertStore, CertTable};
use crate::control_plane::config::ConfigError;

/// Quiet time after a file event before reloading, so a writer can finish.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// What the reload task has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Reloads attempted.
    pub attempts: u64,
    /// Reloads that published a new table.
    pub published: u64,
    /// Entries that failed at the last attempt (they kept their previous certificate).
    pub errors: Vec<ConfigError>,
}

/// What one reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Entries whose certificate changed.
    pub changed: Vec<usize>,
    /// Entries that failed to load, at their key paths.
    pub errors: Vec<ConfigError>,
}

/// Reloads every entry of `store` once and publishes a new table if any changed.
pub fn reload(store: &CertStore, provider: &CryptoProvider) -> Reloaded {
    let current = store.current();
    let mut out = Reloaded::default();
    let mut entries = current.entries().to_vec();
    for (i, spec) in store.specs().iter().enumerate() {
        match certs::load(spec, provider) {
            Ok(loaded) if entries.get(i).map(|e| e.fingerprint) == Some(loaded.fingerprint) => {}
            Ok(loaded) => {
                if let Some(slot) = entries.get_mut(i) {
                    *slot = loaded;
                    out.changed.push(i);
                }
            }
            Err(err) => out.errors.push(ConfigError {
                path: format!("tls.certificates[{i}].{}", err.field()),
                message: err.to_string(),
            }),
        }
    }
    if !out.changed.is_empty() {
        store.publish(CertTable::build(store.specs(), entries));
    }
    out
}

/// Watches the certificate files of a store; reloads stop when it is dropped.
#[derive(Debug)]
pub struct CertWatcher {
    // Held for its Drop: it ends the OS watch.
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
    status: watch::Receiver<ReloadStatus>,
}

impl CertWatcher {
    /// Starts watching; needs a tokio runtime.
    pub fn start(
        store: Arc<CertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<CertWatcher, notify::Error> {
        let (dirs, names) = watched(&store);
        let wake = Arc::new(Notify::new());
        let on_event = Arc::clone(&wake);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<Event>| match event {
                Ok(event) if is_relevant(&event, &names) => on_event.notify_one(),
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "certificate watch error"),
            })?;
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        let (report, status) = watch::channel(ReloadStatus::default());
        let task = tokio::spawn(run(store, provider, wake, report));
        Ok(CertWatcher {
            _watcher: watcher,
            task,
            status,
        })
    }

    /// Follows reload attempts (tests and diagnostics await changes on it).
    pub fn status(&self) -> watch::Receiver<ReloadStatus> {
        self.status.clone()
    }
}

impl Drop for CertWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The directories to watch and the file names that matter in them.
fn watched(store: &CertStore) -> (Vec<PathBuf>, HashSet<OsString>) {
    let mut dirs = Vec::new();
    let mut names = HashSet::new();
    for spec in store.specs() {
        for file in [&spec.cert, &spec.key] {
            let dir = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
            if let Some(name) = file.file_name() {
                names.insert(name.to_os_string());
            }
        }
    }
    (dirs, names)
}

/// A change (not a read: our own reloads open the files) of a watched name.
fn is_relevant(event: &Event, names: &HashSet<OsString>) -> bool {
    let changes = matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    changes
        && event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| names.contains(n) || n.to_string_lossy().starts_with(".."))
        })
}

async fn run(
    store: Arc<CertStore>,
    provider: Arc<CryptoProvider>,
    wake: Arc<Notify>,
    report: watch::Sender<ReloadStatus>,
) {
    let mut logged: Vec<ConfigError> = Vec::new();
    loop {
        wake.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
        let (store_now, provider_now) = (Arc::clone(&store), Arc::clone(&provider));
        let reloaded =
            match tokio::task::spawn_blocking(move || reload(&store_now, &provider_now)).await {
                Ok(reloaded) => reloaded,
                Err(err) => {
                    tracing::error!(%err, "certificate reload task failed");
                    continue;
                }
            };
        for &i in &reloaded.changed {
            if let Some(spec) = store.specs().get(i) {
                tracing::info!(cert = %spec.cert.display(), "certificate reloaded; new handshakes use it");
            }
        }
        for error in &reloaded.errors {
            if !logged.contains(error) {
                tracing::warn!("{error}; keeping the previous certificate");
            }
        }
        logged.clone_from(&reloaded.errors);
        report.send_modify(|s| {
            s.attempts += 1;
            s.published += u64::from(!reloaded.changed.is_empty());
            s.errors = reloaded.errors;
        });
    }
}
