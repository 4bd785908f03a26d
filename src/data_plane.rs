//! The data plane: everything a request touches, from the listener to the answer.
//!
//! `server` accepts (plain or TLS, with `http1`'s own loop beside hyper's), `proxy`
//! handles the request: `route` (which route) → `split` (which pool) → `balance`
//! (which backend) over the `snapshot` it loaded once, then one attempt on the
//! backend's `upstream` pool, and the answer streamed back. `backend` holds the
//! per-backend atomics that survive snapshot swaps, `health` the state they carry
//! (probes and passive ejection write it, balancing and hold read it). Nothing here
//! builds a snapshot: that is the control plane's one writer.

pub mod access_log;
pub mod backend;
pub mod balance;
pub(crate) mod cold;
pub mod gate;
pub mod health;
pub mod http1;
pub mod limits;
pub mod log_limit;
pub mod mirror;
pub(crate) mod pool_stats;
pub mod proxy;
pub mod route;
pub mod server;
pub(crate) mod sessions;
pub mod snapshot;
pub(crate) mod split;
pub mod tls;
pub mod upstream;
