//! A backend's chunked response body, decoded in one read and in many.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluicegate::testing::fuzz_chunked(data));
