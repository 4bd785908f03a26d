//! What only the tests and the fuzz targets take from inside the library: fault
//! injection and the HTTP/1 parsers' fuzzing entry points. Not part of the API
//! (hidden from the docs); nothing in the product calls it. The one door for test
//! hooks, so that production types carry no public test-only methods.

use crate::tasks::TaskWatch;

/// Fault injection (`tests/it/hardening/admin.rs`): aborts one live task of `tasks`
/// named `name`, as a crash would end it; false when there is none.
pub fn abort_task(tasks: &TaskWatch, name: &str) -> bool {
    tasks.abort_one(name)
}

/// Fuzzing entry point (`fuzz/fuzz_targets/request_head.rs`): parses `data` as the
/// request heads at the front of a connection's buffer, the way the server loop
/// does. Panics only on a bug.
pub fn fuzz_request_head(data: &[u8]) {
    crate::data_plane::http1::server::fuzz_request_head(data);
}

/// Fuzzing entry point (`fuzz/fuzz_targets/response_head.rs`): parses `data` as a
/// response head and frames what follows it. Panics only on a bug.
pub fn fuzz_response(data: &[u8]) {
    crate::data_plane::http1::client::fuzz_response(data);
}

/// Fuzzing entry point (`fuzz/fuzz_targets/chunked.rs`): decodes `data` as a chunked
/// body in one read and in cut reads. Panics only on a bug.
pub fn fuzz_chunked(data: &[u8]) {
    crate::data_plane::http1::client::fuzz_chunked(data);
}

/// How many events a subscriber may fall behind before it is dropped
/// (`tests/it/events.rs` sizes its bursts from it).
pub const EVENT_BUFFER: usize = crate::control_plane::events::BUFFER;

/// Regular connections the admin listener serves at once (beyond its spare
/// slots for health checks).
pub const ADMIN_MAX_CONNECTIONS: usize = crate::control_plane::admin::serve::MAX_CONNECTIONS;

// The library's layers, whole, for the integration tests, benches and fuzz targets
// that reach inside them (a backend's atomics, the HTTP/1 parsers, the snapshot).
// Not part of the API: programs use the crate root.
/// The data plane (`crate::data_plane`).
pub mod data_plane {
    pub use crate::data_plane::*;
}
/// The control plane (`crate::control_plane`).
pub mod control_plane {
    pub use crate::control_plane::*;
}
/// The CLI's tools (`crate::tools`).
pub mod tools {
    pub use crate::tools::*;
}
/// Time helpers (`crate::clock`).
pub mod clock {
    pub use crate::clock::*;
}
/// Metrics (`crate::metrics`).
pub mod metrics {
    pub use crate::metrics::*;
}
/// Task supervision (`crate::tasks`).
pub mod tasks {
    pub use crate::tasks::*;
}
/// Assembling a gateway (`crate::gateway`).
pub mod gateway {
    pub use crate::gateway::*;
}
