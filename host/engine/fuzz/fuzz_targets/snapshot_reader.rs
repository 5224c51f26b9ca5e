//! See `hightower_engine::fuzz::snapshot_reader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hightower_engine::fuzz::snapshot_reader(data));
