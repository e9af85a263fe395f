//! libFuzzer target: `petrel::fuzz_targets::mesh_datagram`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| petrel::fuzz_targets::mesh_datagram(data));
