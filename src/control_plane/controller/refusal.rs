//! Why the control plane refused a request: one type for admin writes, rollout
//! starts and rollout actions, with one mapping to an HTTP status.
//!
//! The controller task and the rollout manager answer with it; the admin layer
//! renders it (`{error, path}` with [`Refusal::status`]). Nothing changed when a
//! request was refused.

use http::StatusCode;

use crate::control_plane::config::{ConfigError, ConfigErrors};
use crate::control_plane::state_file::StateFileError;

/// Why a request was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The request broke a config rule; every problem with its key path (400).
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The route, pool, backend or rollout named does not exist (404).
    #[error("{path}: {message}")]
    NotFound { path: String, message: String },
    /// Not now: it contradicts the file, another rollout runs, this one has
    /// ended… (409).
    #[error("{path}: {message}")]
    Conflict { path: String, message: String },
    /// The change could not be persisted, so it was not applied (500).
    #[error(transparent)]
    Persist(StateFileError),
    /// The task that would answer has stopped (shutting down) (503).
    #[error("the {0} is not running (shutting down)")]
    Closed(Stopped),
}

/// Which control-plane task was not there to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    Controller,
    RolloutManager,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stopped::Controller => "controller",
            Stopped::RolloutManager => "rollout manager",
        })
    }
}

impl Refusal {
    /// A single-error `Invalid`.
    pub fn invalid(path: &str, message: impl Into<String>) -> Refusal {
        Refusal::Invalid(ConfigErrors(vec![ConfigError {
            path: path.to_owned(),
            message: message.into(),
        }]))
    }

    /// A `NotFound` at `path`.
    pub fn not_found(path: &str, message: impl Into<String>) -> Refusal {
        Refusal::NotFound {
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// A `Conflict` at `path`.
    pub fn conflict(path: &str, message: impl Into<String>) -> Refusal {
        Refusal::Conflict {
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// The HTTP status the admin API answers it with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
            Refusal::NotFound { .. } => StatusCode::NOT_FOUND,
            Refusal::Conflict { .. } => StatusCode::CONFLICT,
            Refusal::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::Closed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The key path the refusal is about (`""` for none; an `Invalid`'s first).
    pub fn path(&self) -> &str {
        match self {
            Refusal::Invalid(errors) => errors.0.first().map_or("", |e| e.path.as_str()),
            Refusal::NotFound { path, .. } | Refusal::Conflict { path, .. } => path,
            Refusal::Persist(_) => "state_file",
            Refusal::Closed(_) => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_one_status_and_path() {
        let io = || StateFileError::Write {
            path: "/x".into(),
            error: std::io::Error::other("disk full"),
        };
        let table = [
            (Refusal::invalid("weight", "bad"), 400, "weight"),
            (Refusal::not_found("route", "no route"), 404, "route"),
            (Refusal::conflict("addr", "from the file"), 409, "addr"),
            (Refusal::Persist(io()), 500, "state_file"),
            (Refusal::Closed(Stopped::Controller), 503, ""),
        ];
        for (refusal, status, path) in table {
            assert_eq!(refusal.status().as_u16(), status, "{refusal}");
            assert_eq!(refusal.path(), path, "{refusal}");
        }
        assert_eq!(
            Refusal::Closed(Stopped::Controller).to_string(),
            "the controller is not running (shutting down)"
        );
        assert_eq!(
            Refusal::Closed(Stopped::RolloutManager).to_string(),
            "the rollout manager is not running (shutting down)"
        );
    }
}
