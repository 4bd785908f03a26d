//! A backend's response head and the body framing it decides.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluicegate::testing::fuzz_response(data));
