//! Hardening: hostile clients, request smuggling and broken backends, each attack
//! written as exact bytes on a raw socket, with a bystander that must keep being
//! served and checks that nothing leaked (connections, tasks).

mod admin;
mod blame;
mod client_limits;
mod h2;
pub mod raw;
mod smuggling;
mod upgrades;
mod upstreams;
