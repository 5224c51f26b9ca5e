//! The engine's part of the config file: a TOML table read as
//! `hightower_engine::Config` and validated, as the CLI's
//! `FileConfig::from_toml` does for the top level (the CLI is a binary
//! crate with wasmtime behind it; its own bounded random-input test lives
//! in `host/cli/src/config_file.rs`). A config that validates must survive
//! a round trip through TOML unchanged.
#![no_main]

use hightower_engine::Config;
use serde::Deserialize;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return;
    };
    let Ok(config) = Config::deserialize(table) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let again: Config =
        toml::from_str(&toml::to_string(&config).expect("a valid config serializes"))
            .expect("a serialized config parses");
    assert_eq!(again, config);
});
