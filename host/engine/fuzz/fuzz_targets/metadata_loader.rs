//! See `hightower_engine::fuzz::metadata_loader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hightower_engine::fuzz::metadata_loader(data));
