//! sluicegate: the HTTP front door of a docker-compose fleet of agent replicas.
//!
//! Two planes share one immutable routing snapshot: the [`data_plane`] reads it once
//! per request (`route` → `split` → `balance` → `proxy`, and the per-backend atomics
//! of `backend` and `health`); the [`control_plane`]'s `controller` is its single
//! writer (file reloads, Docker discovery, the admin API, rollouts). [`tools`] are the
//! CLI's other commands. At the top: [`gateway`] assembles a running gateway from
//! both planes; [`metrics`], [`tasks`] and [`clock`] serve both.
#![forbid(unsafe_code)]

pub mod clock;
pub mod control_plane;
pub mod data_plane;
pub mod gateway;
pub mod metrics;
pub mod tasks;
pub mod tools;
