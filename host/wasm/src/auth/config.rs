//! The `[auth]` table of a config file: how new passwords are hashed.

use serde::{Deserialize, Serialize};

/// How `hightower auth` hashes new passwords. A login rehashes a password
/// whose stored hash is weaker (bcrypt, below the floor, or at most these
/// settings in both memory and passes), never towards weaker settings; so
/// every command should see the same ones: put them here rather than in
/// flags. Argon2id settings below the floor ([`super::ARGON2_FLOOR_M_KIB`],
/// OWASP's minimums) are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Argon2id memory in KiB. Default 19456 (19 MiB, OWASP).
    pub argon2_m_kib: u32,
    /// Argon2id passes. Default 2 (OWASP).
    pub argon2_t: u32,
    /// Argon2id lanes. Default 1 (OWASP).
    pub argon2_p: u32,
    /// Hash new passwords with bcrypt at this cost (10..=31) instead of
    /// Argon2id; for migrations only. Default 0: Argon2id.
    pub bcrypt_cost: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            argon2_m_kib: 19_456,
            argon2_t: 2,
            argon2_p: 1,
            bcrypt_cost: 0,
        }
    }
}
