//! Request heads at the front of a client connection's buffer (the HTTP/1 fast
//! path's parser, then the framing checks every request goes through).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluicegate::testing::fuzz_request_head(data));
