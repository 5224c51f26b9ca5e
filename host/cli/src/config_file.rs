//! The config file (`--config FILE`, TOML): the engine's fields at the top
//! level, the sandbox's in `[wasm]` and password hashing in `[auth]`. Each
//! part is validated by the layer that owns it; unknown names are refused
//! everywhere (a typo must not be silently ignored).

use hightower_engine::Config;
use hightower_engine::ConfigError;
use hightower_wasm::SandboxConfig;
use hightower_wasm::auth::AuthConfig;
use serde::Deserialize;

/// Everything a config file can set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileConfig {
    pub engine: Config,
    pub wasm: SandboxConfig,
    pub auth: AuthConfig,
}

impl FileConfig {
    /// Parses and validates a config file's text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|err| syntax_error(text, &err))?;
        let wasm = take_table::<SandboxConfig>(&mut table, "wasm")?;
        let auth = take_table::<AuthConfig>(&mut table, "auth")?;
        let engine = deserialize_naming_the_key::<Config>(table)?;
        engine.validate()?;
        wasm.validate().map_err(|inner| ConfigError {
            field: "wasm",
            reason: format!("{}: {}", inner.field, inner.reason),
        })?;
        Ok(FileConfig { engine, wasm, auth })
    }
}

/// Removes `[name]` from the file's table and reads it as `T` (its
/// defaults when absent).
fn take_table<T: Default + for<'de> Deserialize<'de>>(
    table: &mut toml::Table,
    name: &'static str,
) -> Result<T, ConfigError> {
    match table.remove(name) {
        None => Ok(T::default()),
        Some(toml::Value::Table(inner)) => {
            deserialize_naming_the_key(inner).map_err(|err| ConfigError {
                field: name,
                reason: err.reason,
            })
        }
        Some(other) => Err(ConfigError {
            field: name,
            reason: format!("must be a table ([{name}]), not a {}", other.type_str()),
        }),
    }
}

/// Reads `table` as `T`. A table deserializer knows no lines, so when that
/// fails the message is prefixed with the first key that fails on its own.
fn deserialize_naming_the_key<T: for<'de> Deserialize<'de>>(
    table: toml::Table,
) -> Result<T, ConfigError> {
    T::deserialize(table.clone()).map_err(|err| {
        let culprit = table.iter().find(|(key, value)| {
            let alone = toml::Table::from_iter([((*key).clone(), (*value).clone())]);
            T::deserialize(alone).is_err()
        });
        match culprit {
            Some((key, _)) => invalid(&format!("{key}: {}", err.message())),
            None => invalid(err.message()),
        }
    })
}

/// A file that is not TOML (or holds an integer TOML cannot: over
/// 2^63 - 1): the message names the key of the line, and the line.
fn syntax_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let Some(span) = err.span() else {
        return invalid(err.message());
    };
    let line_number = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_number - 1).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(key, _)| key.trim())
        .filter(|key| !key.is_empty() && !key.starts_with('#'));
    match key {
        Some(key) => invalid(&format!("{key}: {} (line {line_number})", err.message())),
        None => invalid(&format!("line {line_number}: {}", err.message())),
    }
}

fn invalid(message: &str) -> ConfigError {
    ConfigError {
        field: "config file",
        reason: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hightower_engine::SyncMode;
    use std::time::Duration;

    #[test]
    fn missing_fields_take_their_defaults() {
        let config = FileConfig::from_toml("sync = \"interval\"\nsync_interval_ms = 5\n").unwrap();
        assert_eq!(config.engine.sync, SyncMode::Interval);
        assert_eq!(config.engine.sync_interval(), Duration::from_millis(5));
        assert_eq!(
            config.engine.segment_size_bytes,
            Config::default().segment_size_bytes
        );
        assert_eq!(config.wasm, SandboxConfig::default());
        assert_eq!(config.auth, AuthConfig::default());
    }

    #[test]
    fn unknown_fields_are_refused_and_named() {
        let err = FileConfig::from_toml("segment_size = 10\n").unwrap_err();
        assert!(err.reason.contains("segment_size"), "{err}");
        let err = FileConfig::from_toml("[wasm]\ntimeout = 1\n").unwrap_err();
        assert_eq!(err.field, "wasm");
        assert!(err.reason.contains("timeout"), "{err}");
        let err = FileConfig::from_toml("sync = \"sometimes\"\n").unwrap_err();
        assert_eq!(err.field, "config file");
        assert!(
            err.reason.starts_with("sync: unknown variant `sometimes`"),
            "{err}"
        );
        let err = FileConfig::from_toml("[auth]\nargon2 = 1\n").unwrap_err();
        assert_eq!(err.field, "auth");
        let err = FileConfig::from_toml("wasm = 3\n").unwrap_err();
        assert_eq!(err.field, "wasm");
    }

    /// TOML's integers end at 2^63 - 1; a bigger one is named by its key.
    #[test]
    fn syntax_errors_name_the_key_and_line() {
        let err =
            FileConfig::from_toml("sync = \"os\"\nindex_initial_capacity = 18446744073709551615\n")
                .unwrap_err();
        assert!(
            err.reason.starts_with("index_initial_capacity: ") && err.reason.ends_with("(line 2)"),
            "{err}"
        );
        let err = FileConfig::from_toml("[wasm\n").unwrap_err();
        assert!(err.reason.starts_with("line 1: "), "{err}");
        // Values TOML can hold reach the engine's bounds, which name them.
        let err = FileConfig::from_toml("index_initial_capacity = 99999999999999\n").unwrap_err();
        assert_eq!(err.field, "index_initial_capacity");
    }

    #[test]
    fn the_wasm_table_configures_the_sandbox() {
        let config =
            FileConfig::from_toml("[wasm]\ncall_timeout_ms = 250\nmax_memory_bytes = 1048576\n")
                .unwrap();
        assert_eq!(config.wasm.call_timeout_ms, 250);
        assert_eq!(config.wasm.max_memory_bytes, 1 << 20);
        assert_eq!(
            config.wasm.max_page_keys,
            SandboxConfig::default().max_page_keys
        );
        let err = FileConfig::from_toml("[wasm]\nepoch_tick_ms = 0\n").unwrap_err();
        assert_eq!(
            (err.field, err.reason.as_str()),
            ("wasm", "epoch_tick_ms: must be at least 1")
        );
    }

    /// The example of the README's Configuration section, and a file using
    /// every table, as files written for earlier releases did.
    #[test]
    fn files_written_for_the_single_crate_release_still_load() {
        let readme = "data_dir = \"/var/lib/hightower\"\nsync = \"interval\"\nsync_interval_ms = 50\nsegment_size_bytes = 134217728\n";
        let config = FileConfig::from_toml(readme).unwrap();
        assert_eq!(
            config.engine.data_dir,
            std::path::Path::new("/var/lib/hightower")
        );
        assert_eq!(config.engine.segment_size_bytes, 134_217_728);
        let everything = "sync = \"os\"\nhot_index_max_entries = 1000\n\n[wasm]\ncall_timeout_ms = 250\n\n[auth]\nargon2_m_kib = 65536\nargon2_t = 3\n";
        let config = FileConfig::from_toml(everything).unwrap();
        assert_eq!(config.engine.hot_index_max_entries, 1000);
        assert_eq!(config.wasm.call_timeout_ms, 250);
        assert_eq!(
            (config.auth.argon2_m_kib, config.auth.argon2_t),
            (65_536, 3)
        );
    }
}
