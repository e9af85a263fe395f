//! libFuzzer target: `petrel::fuzz_targets::routing_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| petrel::fuzz_targets::routing_headers(data));
