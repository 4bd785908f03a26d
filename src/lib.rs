//! sluicegate: the HTTP front door of a docker-compose fleet of agent replicas.
//!
//! Two planes share one immutable routing snapshot: the data plane reads it once per
//! request (`route` → `split` → `balance` → `proxy`, and the per-backend atomics of
//! `backend` and `health`); the control plane's `controller` is its single writer
//! (file reloads, Docker discovery, the admin API, rollouts). The tools are the CLI's
//! other commands. `gateway` assembles a running gateway from both planes; `metrics`,
//! `tasks` and `clock` serve both. ARCHITECTURE.md maps the tree.
//!
//! # The public API
//! Everything a program embedding or driving sluicegate needs, and nothing more, is
//! at this crate's root:
//! - run a gateway: [`Gateway`], [`GatewayOptions`], [`GatewayError`], [`Drained`],
//!   [`ReloadOptions`];
//! - read and check its configuration: [`config`] (`routes.toml`'s schema, [`parse`],
//!   [`load`], errors with key paths), [`check`] (what `sluicegate check` prints),
//!   [`load_tls`];
//! - talk to a running gateway: [`ctl`] (the admin API's client, [`AdminClient`]) and
//!   [`state_view`] (the state document it answers), [`RolloutRequest`] and
//!   [`RolloutAction`];
//! - find agents: [`discovery`] (Docker labels and Swarm services);
//! - the rest of the command line: [`demo`] and the [`access_log`] layer.
//!
//! The layers themselves (`data_plane`, `control_plane`, `tools`, …) are private.
//! What only the integration tests, benches and fuzz targets need from inside them is
//! behind one door, the hidden [`testing`] module, and nowhere else: no production type
//! carries a public test-only method.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod clock;
mod control_plane;
mod data_plane;
mod gateway;
mod metrics;
mod tasks;
#[doc(hidden)]
pub mod testing;
mod tools;

pub use control_plane::config::{self, load, parse, ConfigError, ConfigErrors, LoadError, Spec};
pub use control_plane::controller::state_view;
pub use control_plane::discovery;
pub use control_plane::reload::ReloadOptions;
pub use control_plane::rollout::{Action as RolloutAction, RolloutRequest};
pub use data_plane::access_log;
pub use data_plane::server::Drained;
pub use data_plane::tls::load as load_tls;
pub use gateway::{Gateway, GatewayError, Options as GatewayOptions};
pub use tools::ctl::{self, AdminClient, CtlError};
pub use tools::{check, demo};
