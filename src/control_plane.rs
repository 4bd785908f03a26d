//! The control plane: what changes the routing snapshot, and what observes it.
//!
//! Changes come from `config` files (`reload`), Docker `discovery`, the `admin` API
//! and the `rollout` manager; the `controller` task is their single writer: effective
//! spec = file + discovered set + `overrides` (persisted by `state_file`), validated,
//! built into a snapshot off the workers (`off_worker`) and swapped in. `events` and
//! `rollout_record` are what it publishes; `plan` is the diff a reload would make;
//! `deploy` runs `ctl deploy`'s deploys through the controller and the rollout manager.

pub(crate) mod admin;
pub(crate) mod cluster;
pub mod config;
pub mod controller;
pub mod deploy;
pub mod discovery;
pub(crate) mod events;
pub(crate) mod off_worker;
pub(crate) mod overrides;
pub mod plan;
pub mod reload;
pub mod rollout;
pub(crate) mod rollout_record;
pub(crate) mod state_file;
