//! `[cluster]`: gateway replicas sharing one truth.
//!
//! Several replicas of the gateway keep the admin overrides (splits, drains,
//! registrations with their TTL expiry times, rollout records) in one
//! [`ClusterStore`]: a versioned value read whole and written by
//! compare-and-set. The one implementation, [`swarm::SwarmStore`], keeps it in a
//! label of the gateway's own Swarm service (the Swarm's replicated store, no new
//! component to run); [`memory::MemoryStore`] serves tests.
//!
//! What is stored is a [`doc::ClusterDoc`]: a versioned, size-bounded JSON
//! document. The controller task (`controller::task::cluster`) writes it for every
//! admin write (retrying on a version conflict by re-reading and re-applying the
//! write) and applies what other replicas wrote, which a poller
//! ([`poll`]) reads every `[cluster].poll_interval`.
//!
//! This module owns the store interface, the document and the poller; it does not
//! decide what a write means (the controller task does).

pub(crate) mod counters;
pub(crate) mod doc;
pub(crate) mod lease;
#[cfg(test)]
pub(crate) mod memory;
pub(crate) mod peers;
pub(crate) mod poll;
pub(crate) mod swarm;

use std::fmt::Debug;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::control_plane::config::spec::{ClusterSpec, ClusterStoreKind};

/// What the store holds: its version (the compare-and-set token) and the value,
/// `None` when nothing was written yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Grows with every change of the store (not only of the value).
    pub(crate) version: u64,
    pub(crate) value: Option<String>,
}

/// Why the store could not be read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StoreError {
    /// The store moved past the version the write was based on: re-read, re-apply.
    #[error("the cluster store changed since version {expected}")]
    Conflict { expected: u64 },
    /// No answer (engine down, socket gone, timeout): nothing was written.
    #[error("the cluster store is unreachable: {0}")]
    Unreachable(String),
    /// It answered but refused (no such service, not a manager, …).
    #[error("the cluster store refused: {0}")]
    Refused(String),
}

/// A versioned value with compare-and-set writes.
pub(crate) trait ClusterStore: Send + Sync + Debug {
    /// The whole value and its version.
    fn read(&self) -> BoxFuture<'_, Result<Stored, StoreError>>;

    /// Replaces the value if the store is still at `version`. Answers the version
    /// the write produced when it could confirm it (`None`: written, but someone
    /// else may have written since; the next read tells).
    fn write(&self, version: u64, value: String) -> BoxFuture<'_, Result<Option<u64>, StoreError>>;

    /// Where the store is, for logs and `ctl status`.
    fn describe(&self) -> String;
}

/// Who this replica is: an ID (the container's hostname unless
/// `SLUICEGATE_REPLICA` says otherwise) and the node it runs on
/// (`SLUICEGATE_NODE`, e.g. `{{.Node.Hostname}}` in a Swarm service template).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) id: String,
    pub(crate) node: String,
}

impl Identity {
    /// From the environment (see the type).
    pub(crate) fn from_env() -> Identity {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let id = var("SLUICEGATE_REPLICA")
            .or_else(|| var("HOSTNAME"))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| format!("pid-{}", std::process::id()));
        let node = var("SLUICEGATE_NODE").unwrap_or_else(|| "unknown".to_owned());
        Identity { id, node }
    }
}

/// The store `spec` names.
pub(crate) fn open(spec: &ClusterSpec) -> Result<Arc<dyn ClusterStore>, String> {
    match spec.store {
        ClusterStoreKind::Swarm => {
            let store = swarm::SwarmStore::new(spec).map_err(|e| e.to_string())?;
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests;
