//! libFuzzer target: `petrel::fuzz_targets::config_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| petrel::fuzz_targets::config_text(data));
