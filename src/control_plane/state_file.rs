//! `[admin].state_file`: admin overrides that survive a restart.
//!
//! The file is JSON (small, human-readable, and diffable in an incident). It is
//! written atomically — a temporary file in the same directory, `fsync`, `rename`
//! over the old one, `fsync` of the directory — so a crash leaves either the old or
//! the new content, never half of one. Loading re-checks every value with the
//! file's rules against the current config ([`restore`]); what no longer applies is
//! reported and skipped. A file that cannot be parsed is an error the caller logs
//! loudly before starting from `routes.toml` alone: a corrupt state file must not
//! turn into a crash loop.
//!
//! Rollout records are stored whole beside the splits they explain (see `rollout`).
//!
//! This module does not decide precedence (see `overrides`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::control_plane::config::raw::{RawDuration, RawMirror, RawSize};
use crate::control_plane::config::spec::{PoolName, RouteName, Spec};
use crate::control_plane::config::validate::{
    validate_backend, validate_maintenance, validate_mirror, validate_pause, validate_split,
    ApiBackend, ApiMaintenance, ApiPause,
};
use crate::control_plane::overrides::{Dropped, Overrides};
use crate::control_plane::rollout_record::Rollout;

/// Format version written in the file.
const VERSION: u32 = 1;

/// The file's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Persisted {
    pub version: u32,
    /// Route → pool → weight.
    #[serde(default)]
    pub splits: BTreeMap<String, Vec<PersistedSplit>>,
    #[serde(default)]
    pub drains: Vec<PersistedBackend>,
    #[serde(default)]
    pub backends: Vec<PersistedRegistration>,
    /// The latest rollout of each route whose split it set (written only when
    /// there is one, so files without rollouts stay readable by older versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<Rollout>,
    /// Paused routes (written only when there is one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pauses: Vec<PersistedPause>,
    /// Routes in maintenance (written only when there is one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<PersistedMaintenance>,
    /// Mirrors set through the API (written only when there is one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<PersistedMirror>,
    /// Rate limits set through the admin API (written only when there is one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<PersistedRateLimit>,
}

/// A route's mirror, as `PUT …/mirror` took it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedMirror {
    pub route: String,
    pub pool: String,
    pub percent: i64,
    /// Bytes.
    pub max_body: i64,
    pub timeout: String,
}

/// A route's rate limit, as `PUT …/rate_limit` takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedRateLimit {
    pub route: String,
    pub limit: crate::control_plane::config::raw::RawRateLimit,
}

/// A paused route, as `POST …/pause` took it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedPause {
    pub route: String,
    pub max: String,
    pub max_queued: i64,
}

/// A route in maintenance, as `PUT …/maintenance` took it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedMaintenance {
    pub route: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub retry_after: i64,
}

/// One entry of a persisted split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedSplit {
    pub pool: String,
    pub weight: i64,
}

/// A drained backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedBackend {
    pub pool: String,
    pub addr: String,
}

/// A registered backend; its TTL restarts from the moment it is loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedRegistration {
    pub pool: String,
    pub addr: String,
    pub weight: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read state file {}: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("state file {} is corrupt ({error})", .path.display())]
    Corrupt {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("state file {} has format version {found}; this sluicegate reads version {VERSION}", .path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write state file {}: {error}", .path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Persisted {
    /// What `overrides` looks like on disk.
    pub(crate) fn from_overrides(overrides: &Overrides) -> Persisted {
        let splits = overrides
            .splits()
            .iter()
            .map(|(route, split)| {
                let entries = split
                    .iter()
                    .map(|s| PersistedSplit {
                        pool: s.pool.to_string(),
                        weight: i64::from(s.weight),
                    })
                    .collect();
                (route.to_string(), entries)
            })
            .collect();
        let drains = overrides
            .drains()
            .iter()
            .map(|(pool, addr)| PersistedBackend {
                pool: pool.to_string(),
                addr: addr.to_string(),
            })
            .collect();
        let backends = overrides
            .backends()
            .iter()
            .map(|((pool, addr), reg)| PersistedRegistration {
                pool: pool.to_string(),
                addr: addr.to_string(),
                weight: i64::from(reg.weight),
                ttl: reg.ttl.map(|t| humantime::format_duration(t).to_string()),
            })
            .collect();
        Persisted {
            version: VERSION,
            splits,
            drains,
            backends,
            rollouts: overrides.rollouts().values().cloned().collect(),
            pauses: overrides
                .pauses()
                .iter()
                .map(|(route, p)| PersistedPause {
                    route: route.to_string(),
                    max: humantime::format_duration(p.max).to_string(),
                    max_queued: i64::try_from(p.max_queued).unwrap_or(i64::MAX),
                })
                .collect(),
            maintenance: overrides
                .maintenance()
                .iter()
                .map(|(route, m)| PersistedMaintenance {
                    route: route.to_string(),
                    message: m.message.clone(),
                    retry_after: i64::from(m.retry_after),
                })
                .collect(),
            mirrors: overrides
                .mirrors()
                .iter()
                .map(|(route, m)| PersistedMirror {
                    route: route.to_string(),
                    pool: m.pool.to_string(),
                    percent: i64::from(m.percent),
                    max_body: i64::try_from(m.max_body).unwrap_or(i64::MAX),
                    timeout: humantime::format_duration(m.timeout).to_string(),
                })
                .collect(),
            rate_limits: overrides
                .rate_limits()
                .iter()
                .map(|(route, limit)| PersistedRateLimit {
                    route: route.to_string(),
                    limit: crate::control_plane::config::validate::rate_limit_body(limit),
                })
                .collect(),
        }
    }
}

/// Reads the state file; a missing file is an empty state.
pub(crate) fn load(path: &Path) -> Result<Persisted, StateFileError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Persisted {
                version: VERSION,
                ..Persisted::default()
            })
        }
        Err(error) => {
            return Err(StateFileError::Read {
                path: path.to_path_buf(),
                error,
            })
        }
    };
    let persisted: Persisted =
        serde_json::from_slice(&text).map_err(|error| StateFileError::Corrupt {
            path: path.to_path_buf(),
            error,
        })?;
    if persisted.version != VERSION {
        return Err(StateFileError::Version {
            path: path.to_path_buf(),
            found: persisted.version,
        });
    }
    Ok(persisted)
}

/// Writes `overrides` atomically: temp file, fsync, rename, fsync directory.
pub(crate) fn save(path: &Path, overrides: &Overrides) -> Result<(), StateFileError> {
    let failed = |error| StateFileError::Write {
        path: path.to_path_buf(),
        error,
    };
    let mut text = serde_json::to_vec_pretty(&Persisted::from_overrides(overrides))
        .map_err(|e| failed(std::io::Error::other(e)))?;
    text.push(b'\n');
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|error| {
        if let Err(cleanup) = std::fs::remove_file(&tmp) {
            tracing::debug!(tmp = %tmp.display(), %cleanup, "no temporary state file to remove");
        }
        failed(error)
    })
}

/// Turns a loaded state into overrides for `file`, re-checking every value with
/// the file's rules; returns what was skipped and why (for the log).
pub(crate) fn restore(
    persisted: &Persisted,
    file: &Spec,
    now: Instant,
) -> (Overrides, Vec<Dropped>) {
    let mut overrides = Overrides::default();
    let mut skipped = Vec::new();
    let pools: Vec<&str> = file.pools.iter().map(|p| p.name.as_str()).collect();
    for (route, entries) in &persisted.splits {
        let pairs: Vec<(String, i64)> =
            entries.iter().map(|e| (e.pool.clone(), e.weight)).collect();
        match validate_split(&pairs, &pools) {
            Ok(split) => overrides.set_split(RouteName(route.as_str().into()), split),
            Err(errors) => skipped.push(Dropped {
                what: format!("split of route {route}"),
                why: errors.to_string().replace('\n', "; "),
            }),
        }
    }
    for reg in &persisted.backends {
        let body = ApiBackend {
            addr: reg.addr.clone(),
            weight: Some(reg.weight),
            ttl: reg.ttl.clone().map(RawDuration),
        };
        match validate_backend(&body) {
            Ok((backend, ttl)) => {
                let key = (PoolName(reg.pool.as_str().into()), backend.addr);
                overrides.register(key, backend.weight, ttl, now);
            }
            Err(errors) => skipped.push(Dropped {
                what: format!("registered backend {} in pool {}", reg.addr, reg.pool),
                why: errors.to_string().replace('\n', "; "),
            }),
        }
    }
    for drain in &persisted.drains {
        match drain.addr.parse() {
            Ok(addr) => {
                overrides.set_drain((PoolName(drain.pool.as_str().into()), addr), true);
            }
            Err(_) => skipped.push(Dropped {
                what: format!("drain of {} in pool {}", drain.addr, drain.pool),
                why: "not an ip:port address".into(),
            }),
        }
    }
    for rollout in &persisted.rollouts {
        let route = RouteName(rollout.spec.route.as_str().into());
        overrides.set_rollout(route, rollout.clone());
    }
    for p in &persisted.pauses {
        let body = ApiPause {
            max: Some(RawDuration(p.max.clone())),
            max_queued: Some(p.max_queued),
        };
        match validate_pause(&body) {
            Ok(spec) => overrides.set_pause(RouteName(p.route.as_str().into()), spec),
            Err(errors) => skipped.push(Dropped {
                what: format!("pause of route {}", p.route),
                why: errors.to_string().replace('\n', "; "),
            }),
        }
    }
    for m in &persisted.maintenance {
        let body = ApiMaintenance {
            message: m.message.clone(),
            retry_after: Some(m.retry_after),
        };
        match validate_maintenance(&body) {
            Ok(spec) => overrides.set_maintenance(RouteName(m.route.as_str().into()), spec),
            Err(errors) => skipped.push(Dropped {
                what: format!("maintenance of route {}", m.route),
                why: errors.to_string().replace('\n', "; "),
            }),
        }
    }
    let pools: Vec<&str> = file.pools.iter().map(|p| p.name.as_str()).collect();
    for m in &persisted.mirrors {
        let raw = RawMirror {
            pool: Some(m.pool.clone()),
            percent: Some(m.percent),
            max_body: Some(RawSize::Bytes(m.max_body)),
            timeout: Some(RawDuration(m.timeout.clone())),
        };
        match validate_mirror(&raw, &pools) {
            Ok(spec) => overrides.set_mirror(RouteName(m.route.as_str().into()), spec),
            Err(errors) => skipped.push(Dropped {
                what: format!("mirror of route {}", m.route),
                why: errors.to_string().replace('\n', "; "),
            }),
        }
    }
    for r in &persisted.rate_limits {
        match crate::control_plane::config::validate::validate_rate_limit(&r.limit) {
            Ok(spec) => overrides.set_rate_limit(RouteName(r.route.as_str().into()), spec),
            Err(errors) => skipped.push(Dropped {
                what: format!("rate limit of route {}", r.route),
                why: errors.to_string().replace('\n', "; "),
            }),
        }
    }
    skipped.extend(overrides.prune(file));
    (overrides, skipped)
}

#[cfg(test)]
mod tests;
