//! sluicegate: the HTTP front door of a docker-compose fleet of agent replicas.
//!
//! Requests flow `route` (which route) → `split` (which pool, i.e. version) →
//! `balance` (which backend) → `proxy` (forward and stream back). The `controller`
//! is the single writer of the immutable `snapshot` that every request reads;
//! `backend` holds the per-backend atomics that survive snapshot swaps; `health`
//! drives their health (probes, ejection, slow start, hold).
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod balance;
pub mod check;
pub mod clock;
pub mod cluster;
pub(crate) mod cold;
pub mod config;
pub mod controller;
pub mod ctl;
pub mod demo;
pub mod discovery;
pub mod events;
pub mod gateway;
pub mod health;
pub mod http1;
pub mod log_limit;
pub mod metrics;
pub(crate) mod off_worker;
pub(crate) mod overrides;
pub mod plan;
pub(crate) mod pool_stats;
pub mod proxy;
pub mod reload;
pub mod rollout;
pub mod rollout_record;
pub mod route;
pub mod server;
pub(crate) mod sessions;
pub mod snapshot;
pub(crate) mod split;
pub(crate) mod state_file;
pub mod tasks;
pub mod tls;
pub mod upstream;
