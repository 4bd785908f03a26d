//! sluicegate: the HTTP front door of a docker-compose fleet of agent replicas.
//!
//! Two planes share one immutable routing snapshot: the [`data_plane`] reads it once
//! per request (`route` → `split` → `balance` → `proxy`, and the per-backend atomics
//! of `backend` and `health`); the [`control_plane`]'s `controller` is its single
//! writer (file reloads, Docker discovery, the admin API, rollouts). [`tools`] are the
//! CLI's other commands. At the top: [`gateway`] assembles a running gateway from
//! both planes; [`metrics`], [`tasks`] and [`clock`] serve both.
//!
//! The library's own entry points are re-exported here: [`Gateway`] (with
//! [`GatewayOptions`]), [`parse`] / [`load`] for `routes.toml` (validated, errors
//! with key paths), and the admin API's client [`AdminClient`]. Test-only hooks
//! (fault injection, fuzzing entry points) are in the hidden `testing` module and
//! nowhere else.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod clock;
pub mod control_plane;
pub mod data_plane;
pub mod gateway;
pub mod metrics;
pub mod tasks;
#[doc(hidden)]
pub mod testing;
pub mod tools;

// What a user of the library needs, at the top: run a gateway, read and check its
// configuration, talk to a running one's admin API.
pub use control_plane::config::{load, parse, ConfigError, ConfigErrors, LoadError, Spec};
pub use gateway::{Gateway, GatewayError, Options as GatewayOptions};
pub use tools::ctl::{AdminClient, CtlError};
