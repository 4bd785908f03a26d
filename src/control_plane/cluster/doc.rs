//! The document replicas share: the admin overrides, versioned and bounded.
//!
//! It is the state file's content ([`Persisted`]) plus what a single process
//! keeps only in memory: when each TTL registration lapses, as wall-clock time
//! (replicas share no monotonic clock), so that a heartbeat to one replica keeps
//! the backend on all of them. `seq` grows by one with every write (the version
//! a replica *serves*; the store's own version also moves for unrelated service
//! updates). Reading it back re-checks every value with the file's rules, like a
//! state file ([`state_file::restore`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::control_plane::config::spec::{PoolName, Spec};
use crate::control_plane::overrides::{Dropped, Overrides};
use crate::control_plane::state_file::{self, Persisted};

/// Format version written; a document of another format is foreign (ignored).
pub(crate) const FORMAT: u32 = 1;
/// Largest document written or read. A Swarm service spec travels in one Raft
/// entry; this keeps the label far below the store's own limits.
pub(crate) const MAX_DOC: usize = 256 * 1024;

/// How much later than the stored expiry a local one must be to count as renewed.
const RENEWED_SLACK_MS: u64 = 100;

/// The shared state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterDoc {
    pub(crate) format: u32,
    /// Bumped by every write: the state version a replica serves.
    pub(crate) seq: u64,
    /// The replica that wrote it.
    pub(crate) writer: String,
    /// When it was written (milliseconds since the Unix epoch).
    pub(crate) written_ms: u64,
    /// Splits, drains, registrations, rollout records.
    pub(crate) state: Persisted,
    /// When each TTL registration lapses unless renewed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) expires: Vec<Expiry>,
    /// Rollout ID → the replica whose rollout manager drives it (the only one
    /// that resumes it after a restart).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) drivers: BTreeMap<String, String>,
    /// Rollout ID → until when its driver's lease holds (milliseconds since the
    /// Unix epoch; see `cluster::lease`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) leases: BTreeMap<String, u64>,
}

/// When a registration lapses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expiry {
    pub(crate) pool: String,
    pub(crate) addr: String,
    /// Milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
}

/// Why a stored value is not a document this replica can use.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DocError {
    #[error("{len} bytes, more than the {MAX_DOC} bytes a cluster document may have")]
    TooLarge { len: usize },
    #[error("not a sluicegate cluster document ({0})")]
    Malformed(String),
    #[error("cluster document format {found}; this sluicegate reads format {FORMAT}")]
    Format { found: u32 },
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The moment `now` (monotonic) is, as wall-clock time `wall`, for expiry times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clocks {
    pub(crate) now: Instant,
    pub(crate) wall: SystemTime,
}

impl Clocks {
    /// Both clocks, now.
    pub(crate) fn now() -> Clocks {
        Clocks {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn to_ms(self, at: Instant) -> u64 {
        let wall = unix_ms(self.wall);
        if at >= self.now {
            let ahead = u64::try_from(at.duration_since(self.now).as_millis()).unwrap_or(u64::MAX);
            wall.saturating_add(ahead)
        } else {
            let behind = u64::try_from(self.now.duration_since(at).as_millis()).unwrap_or(u64::MAX);
            wall.saturating_sub(behind)
        }
    }

    fn to_instant(self, at_ms: u64) -> Instant {
        let wall = unix_ms(self.wall);
        if at_ms >= wall {
            crate::clock::later(self.now, Duration::from_millis(at_ms - wall))
        } else {
            // Already lapsed: due now.
            self.now
        }
    }
}

impl ClusterDoc {
    /// The document for `overrides`, numbered `seq`, written by `writer`.
    pub(crate) fn of(overrides: &Overrides, seq: u64, writer: &str, clocks: Clocks) -> ClusterDoc {
        let expires = overrides
            .backends()
            .iter()
            .filter_map(|((pool, addr), reg)| {
                reg.expires.map(|at| Expiry {
                    pool: pool.to_string(),
                    addr: addr.to_string(),
                    at_ms: clocks.to_ms(at),
                })
            })
            .collect();
        ClusterDoc {
            format: FORMAT,
            seq,
            writer: writer.to_owned(),
            written_ms: unix_ms(clocks.wall),
            state: Persisted::from_overrides(overrides),
            expires,
            drivers: BTreeMap::new(),
            leases: BTreeMap::new(),
        }
    }

    /// The JSON text, refused when larger than [`MAX_DOC`].
    pub(crate) fn encode(&self) -> Result<String, DocError> {
        let text = serde_json::to_string(self).map_err(|e| DocError::Malformed(e.to_string()))?;
        if text.len() > MAX_DOC {
            return Err(DocError::TooLarge { len: text.len() });
        }
        Ok(text)
    }

    /// Reads a stored value: bounded, JSON of this shape, this format.
    pub(crate) fn decode(text: &str) -> Result<ClusterDoc, DocError> {
        if text.len() > MAX_DOC {
            return Err(DocError::TooLarge { len: text.len() });
        }
        // The format first, so a newer document says so rather than "unknown field".
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let head: Head =
            serde_json::from_str(text).map_err(|e| DocError::Malformed(e.to_string()))?;
        if head.format != FORMAT {
            return Err(DocError::Format { found: head.format });
        }
        serde_json::from_str(text).map_err(|e| DocError::Malformed(e.to_string()))
    }

    /// The overrides it holds for `file`, each value re-checked with the file's
    /// rules; returns what was skipped and why.
    pub(crate) fn restore(&self, file: &Spec, clocks: Clocks) -> (Overrides, Vec<Dropped>) {
        let (mut overrides, skipped) = state_file::restore(&self.state, file, clocks.now);
        for e in &self.expires {
            if let Ok(addr) = e.addr.parse() {
                let key = (PoolName(e.pool.as_str().into()), addr);
                overrides.renew_until(&key, clocks.to_instant(e.at_ms));
            }
        }
        (overrides, skipped)
    }

    /// Whether writing `next` is needed when this document is what the store
    /// holds: anything but TTL renewals differs, or a registration renewed since
    /// it was stored would otherwise let its stored expiry come within half its
    /// TTL. Heartbeats are coalesced: a write carries every renewal this replica
    /// has, so an agent heartbeating every third of its TTL causes a write only
    /// when its stored renewal is older than half the TTL, and with many agents
    /// about one write per heartbeat period in all; an agent that stopped
    /// heartbeating causes none (renewing it is not in this replica's hands).
    pub(crate) fn needs_write(&self, next: &Overrides, clocks: Clocks) -> bool {
        if self.state != Persisted::from_overrides(next) {
            return true;
        }
        let now_ms = unix_ms(clocks.wall);
        next.backends().iter().any(|((pool, addr), reg)| {
            let (Some(ttl), Some(local)) = (reg.ttl, reg.expires) else {
                return false;
            };
            let half = u64::try_from(ttl.as_millis() / 2).unwrap_or(u64::MAX);
            let stored = self
                .expires
                .iter()
                .find(|e| e.pool == pool.as_str() && e.addr == addr.to_string())
                .map_or(0, |e| e.at_ms);
            // The slack absorbs the rounding of a stored time read back.
            stored < now_ms.saturating_add(half)
                && clocks.to_ms(local) > stored.saturating_add(RENEWED_SLACK_MS)
        })
    }
}
