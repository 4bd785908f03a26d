//! `routes.toml` text → validation → a snapshot, as a reload or `POST /api/v1/plan`
//! takes it.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sluicegate::testing::data_plane::backend::BackendState;
use sluicegate::testing::data_plane::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = sluicegate::config::parse(text) {
        let _ = Snapshot::build(Arc::new(spec), |_, b| Arc::new(BackendState::new(b.addr)));
    }
});
