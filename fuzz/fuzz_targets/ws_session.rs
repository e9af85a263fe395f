//! libFuzzer target: `petrel::fuzz_targets::ws_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| petrel::fuzz_targets::ws_session(data));
