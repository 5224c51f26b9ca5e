//! Paths of the test components, built by this crate's build script for
//! `wasm32-wasip2`. A dev-dependency of the crates whose tests and benches
//! run guests; nothing else builds them.

/// Follows the rules: stays in its namespaces, within every limit.
pub const WELL_BEHAVED: &str = env!("HIGHTOWER_GUEST_WELL_BEHAVED");
/// Tries to reach keys, files and sockets outside what it was granted.
pub const ESCAPE: &str = env!("HIGHTOWER_GUEST_ESCAPE");
/// Loops forever (the CPU limit must stop it).
pub const SPIN: &str = env!("HIGHTOWER_GUEST_SPIN");
/// Grows its memory until the limiter stops it.
pub const MEMORY_BOMB: &str = env!("HIGHTOWER_GUEST_MEMORY_BOMB");
/// Panics on request.
pub const PANICKY: &str = env!("HIGHTOWER_GUEST_PANICKY");
/// Sends keys, values and batches over the limits.
pub const OVERSIZE: &str = env!("HIGHTOWER_GUEST_OVERSIZE");
/// A command (`wasi:cli/run`) with get/set/delete/list subcommands.
pub const KV_CLI: &str = env!("HIGHTOWER_GUEST_KV_CLI");
/// A command calling every function of both `wasi:keyvalue` drafts.
pub const KEYVALUE_SUITE: &str = env!("HIGHTOWER_GUEST_KEYVALUE_SUITE");
