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

    // Bounded random inputs: the config loader's counterpart of the engine's
    // fuzz targets (docs/fuzzing.md). Whatever the file says, loading it
    // returns a config or an error, never panics; a config it returns is
    // valid and survives being written out and read again unchanged.
    mod random_input {
        use super::*;
        use proptest::prelude::*;

        /// Field names of every table, from the defaults, plus a stray one.
        fn names(of: impl serde::Serialize) -> Vec<String> {
            let table = toml::Table::try_from(of).unwrap();
            table.keys().cloned().chain(["stray".to_string()]).collect()
        }

        fn scalar() -> impl Strategy<Value = toml::Value> {
            let words = prop::sample::select(vec![
                "always", "interval", "os", "strict", "salvage", "", "/tmp/x", "0",
            ]);
            prop_oneof![
                prop::sample::select(vec![
                    0i64,
                    1,
                    -1,
                    4096,
                    1 << 30,
                    1 << 40,
                    i64::MAX,
                    i64::MIN
                ])
                .prop_map(toml::Value::Integer),
                any::<i64>().prop_map(toml::Value::Integer),
                prop::sample::select(vec![
                    0.0,
                    0.5,
                    0.875,
                    1.0,
                    -1.0,
                    f64::NAN,
                    f64::INFINITY,
                    1e300
                ])
                .prop_map(toml::Value::Float),
                words.prop_map(|w| toml::Value::String(w.to_string())),
                any::<bool>().prop_map(toml::Value::Boolean),
            ]
        }

        fn value() -> impl Strategy<Value = toml::Value> {
            scalar().prop_recursive(2, 8, 3, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(toml::Value::Array),
                    prop::collection::vec(("[a-z_]{1,12}", inner), 0..3)
                        .prop_map(|pairs| toml::Value::Table(pairs.into_iter().collect())),
                ]
            })
        }

        fn table_of(names: Vec<String>) -> impl Strategy<Value = toml::Table> {
            prop::collection::vec((prop::sample::select(names), value()), 0..6)
                .prop_map(|pairs| pairs.into_iter().collect())
        }

        /// A file of known and stray names with values of every type.
        fn file() -> impl Strategy<Value = String> {
            (
                table_of(names(Config::default())),
                proptest::option::of(table_of(names(SandboxConfig::default()))),
                proptest::option::of(table_of(names(AuthConfig::default()))),
            )
                .prop_filter_map("not writable as TOML", |(mut top, wasm, auth)| {
                    if let Some(wasm) = wasm {
                        top.insert("wasm".into(), toml::Value::Table(wasm));
                    }
                    if let Some(auth) = auth {
                        top.insert("auth".into(), toml::Value::Table(auth));
                    }
                    toml::to_string(&top).ok()
                })
        }

        /// Loads `text`; a config it accepts must be valid and round-trip.
        fn check(text: &str) {
            let Ok(config) = FileConfig::from_toml(text) else {
                return;
            };
            config.engine.validate().unwrap();
            config.wasm.validate().unwrap();
            let mut table = toml::Table::try_from(&config.engine).unwrap();
            table.insert("wasm".into(), toml::Value::try_from(&config.wasm).unwrap());
            table.insert("auth".into(), toml::Value::try_from(&config.auth).unwrap());
            let written = toml::to_string(&table).unwrap();
            assert_eq!(
                FileConfig::from_toml(&written).unwrap(),
                config,
                "{written}"
            );
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            #[test]
            fn any_file_of_known_names_loads_or_is_refused(text in file()) {
                check(&text);
            }

            #[test]
            fn any_text_loads_or_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                check(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn a_damaged_readme_example_loads_or_is_refused(
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
            ) {
                let mut text = b"data_dir = \"/var/lib/hightower\"\nsync = \"interval\"\nsync_interval_ms = 50\nsegment_size_bytes = 134217728\n[wasm]\ncall_timeout_ms = 250\n".to_vec();
                for (at, byte) in edits {
                    let at = at.index(text.len());
                    text[at] = byte;
                }
                check(&String::from_utf8_lossy(&text));
            }
        }
    }
}
