//! See `hightower_engine::fuzz::record_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hightower_engine::fuzz::record_decoder(data));
