//! A backend's chunked response body, decoded in one read and in many.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluicegate::data_plane::http1::client::fuzz_chunked(data));
