//! sluicegate: the HTTP front door of a docker-compose fleet of agent replicas.
//!
//! Requests flow `route` (which route) → `split` (which pool, i.e. version) →
//! `balance` (which backend) → `proxy` (forward and stream back). The `controller`
//! is the single writer of the immutable `snapshot` that every request reads;
//! `backend` holds the per-backend atomics that survive snapshot swaps.
#![forbid(unsafe_code)]

pub mod backend;
pub mod balance;
pub mod check;
pub mod config;
pub mod controller;
pub mod demo;
pub mod discovery;
pub mod echo_agent;
pub mod gateway;
pub mod proxy;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod split;
pub mod upstream;
