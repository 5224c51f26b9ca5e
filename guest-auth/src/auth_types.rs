//! Records stored in the `auth/` namespace, their keys, and username rules.
//!
//! Key space (relative to the namespace):
//! - `user/<user id>`: [`UserRecord`];
//! - `user_by_name/<normalized username>`: the user id (uniqueness index);
//! - `user_keys/<user id>`: [`UserKeys`], the ids of the user's API keys;
//! - `apikey/<key id>`: [`ApiKeyRecord`];
//! - `kek_ids`: [`KekIds`], the key-encryption keys stored metadata needs.
//!
//! Records are JSON (self-describing, so fields can be added later).

use caseless::Caseless;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

pub const USER_PREFIX: &str = "user/";
pub const NAME_PREFIX: &str = "user_by_name/";
pub const USER_KEYS_PREFIX: &str = "user_keys/";
pub const APIKEY_PREFIX: &str = "apikey/";
pub const KEK_IDS_KEY: &str = "kek_ids";

/// Longest username accepted as input, in bytes, checked before normalizing
/// (NFKC of huge input is a DoS, CVE-2023-46695).
pub const MAX_USERNAME_INPUT_BYTES: usize = 256;
/// Longest normalized username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Most live (neither revoked nor expired) API keys per user.
pub const MAX_LIVE_KEYS_PER_USER: usize = 100;
/// Most API keys kept per user, revoked and expired ones included (bounds
/// the `user_keys` record); `delete-api-key` makes room.
pub const MAX_STORED_KEYS_PER_USER: usize = 1000;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_KEY_NAME_BYTES: usize = 128;

pub fn user_key(id: &str) -> Vec<u8> {
    format!("{USER_PREFIX}{id}").into_bytes()
}
pub fn name_key(normalized: &str) -> Vec<u8> {
    format!("{NAME_PREFIX}{normalized}").into_bytes()
}
pub fn user_keys_key(id: &str) -> Vec<u8> {
    format!("{USER_KEYS_PREFIX}{id}").into_bytes()
}
pub fn apikey_key(id: &str) -> Vec<u8> {
    format!("{APIKEY_PREFIX}{id}").into_bytes()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    /// As given at creation (for display).
    pub username: String,
    /// The key of the `user_by_name` index.
    pub normalized: String,
    /// PHC string (Argon2id) or bcrypt string.
    pub password_hash: String,
    /// Envelope-encrypted metadata (see `crypto::EnvelopeEncryptor`), bound
    /// to this record's key.
    pub metadata: Option<Vec<u8>>,
    pub created_at: u64,
    pub updated_at: u64,
    /// Permissions of a password login (`scopes.rs`); records written
    /// before users had scopes have none.
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct UserKeys {
    pub key_ids: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// SHA-256 of the token's secret part; the token itself is never stored.
    pub secret_sha256: Vec<u8>,
    pub scopes: Vec<String>,
    pub created_at: u64,
    /// Seconds since the Unix epoch; the key fails from then on.
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    /// The token's last eight characters, to recognise it in listings.
    pub last_eight: String,
}

/// The ids of the key-encryption keys that stored metadata is encrypted
/// under, each with a check value of its key (`crypto::kek_check`), so that
/// a missing or different key is found before anything is encrypted under
/// a conflicting id (a store restored without its key file).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct KekIds {
    pub keks: Vec<KekCheck>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KekCheck {
    pub id: u32,
    pub check: String,
}

pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

pub fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("corrupt record: {e}"))
}

/// Why a username is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsernameError {
    Empty,
    TooLong,
    ForbiddenCharacter(char),
}

impl std::fmt::Display for UsernameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsernameError::Empty => f.write_str("username is empty"),
            UsernameError::TooLong => write!(
                f,
                "username longer than {MAX_USERNAME_INPUT_BYTES} bytes or {MAX_USERNAME_CHARS} characters"
            ),
            UsernameError::ForbiddenCharacter(c) => {
                write!(
                    f,
                    "username contains a forbidden character U+{:04X}",
                    *c as u32
                )
            }
        }
    }
}

/// The one normalization used both to write the `user_by_name` index and to
/// look it up:
/// 1. input longer than [`MAX_USERNAME_INPUT_BYTES`] is refused (before any
///    Unicode processing);
/// 2. Unicode NFKC (compatibility forms: full-width `Ａ` → `A`, `ﬁ` → `fi`);
/// 3. full Unicode case folding (CaseFolding.txt, status C and F: `ß` →
///    `ss`, final `ς` → `σ`, `ǅ` → `ǆ`), then NFKC again (folding can
///    denormalize) — Unicode's NFKC_Casefold, short of dropping default
///    ignorables, which step 4 refuses instead;
/// 4. refused if empty, longer than [`MAX_USERNAME_CHARS`] characters, or
///    containing control characters, whitespace, or invisible format
///    characters (zero-width, bidi overrides, BOM).
///
/// The result is a fixed point: normalizing it again changes nothing.
pub fn normalize_username(input: &str) -> Result<String, UsernameError> {
    if input.len() > MAX_USERNAME_INPUT_BYTES {
        return Err(UsernameError::TooLong);
    }
    let normalized = fold(input);
    if normalized.is_empty() {
        return Err(UsernameError::Empty);
    }
    if normalized.chars().count() > MAX_USERNAME_CHARS {
        return Err(UsernameError::TooLong);
    }
    if let Some(c) = normalized.chars().find(|&c| forbidden(c)) {
        return Err(UsernameError::ForbiddenCharacter(c));
    }
    Ok(normalized)
}

/// NFKC, case fold, NFKC. A second round changes nothing (tested for every
/// scalar value in `fold_is_idempotent`).
fn fold(input: &str) -> String {
    input.nfkc().default_case_fold().nfkc().collect()
}

fn forbidden(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_normalize_nfkc_and_case() {
        assert_eq!(normalize_username("Alice").unwrap(), "alice");
        assert_eq!(normalize_username("ＡＬＩＣＥ").unwrap(), "alice");
        assert_eq!(normalize_username("ǅemal").unwrap(), "džemal");
        // Case folding, not just lowercasing: these are one name each.
        assert_eq!(normalize_username("Straße").unwrap(), "strasse");
        assert_eq!(
            normalize_username("ΟΔΥΣΣΕΥΣ").unwrap(),
            normalize_username("οδυσσευς").unwrap()
        );
        assert_eq!(normalize_username("ﬀ").unwrap(), "ff");
        assert_eq!(
            normalize_username("\u{212B}ngstr\u{F6}m").unwrap(),
            normalize_username("A\u{30A}NGSTRO\u{308}M").unwrap()
        );
        assert_eq!(normalize_username("ﬁona").unwrap(), "fiona");
        assert_eq!(
            normalize_username("Ünïcödé").unwrap(),
            normalize_username("u\u{308}nïcödé").unwrap()
        );
        assert_eq!(normalize_username(""), Err(UsernameError::Empty));
        assert!(matches!(
            normalize_username("a\u{0}b"),
            Err(UsernameError::ForbiddenCharacter(_))
        ));
        assert!(matches!(
            normalize_username("a b"),
            Err(UsernameError::ForbiddenCharacter(_))
        ));
        assert!(matches!(
            normalize_username("ad\u{200B}min"),
            Err(UsernameError::ForbiddenCharacter(_))
        ));
        assert!(matches!(
            normalize_username("a\u{202E}b"),
            Err(UsernameError::ForbiddenCharacter(_))
        ));
        assert_eq!(
            normalize_username(&"a".repeat(65)),
            Err(UsernameError::TooLong)
        );
        assert!(normalize_username(&"a".repeat(64)).is_ok());
        // Bounded before normalization: a megabyte is refused at once.
        assert_eq!(
            normalize_username(&"ﷺ".repeat(400_000)),
            Err(UsernameError::TooLong)
        );
    }

    #[test]
    fn fold_is_idempotent() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let once = fold(c.encode_utf8(&mut [0; 4]));
            assert_eq!(fold(&once), once, "U+{:04X}", c as u32);
        }
        for s in ["ǅemal", "Straße", "ΌΣΟΣ", "\u{1FC3}\u{345}", "İstanbul"] {
            assert_eq!(fold(&fold(s)), fold(s), "{s}");
        }
    }

    /// A user stored before users had scopes still reads, with none.
    #[test]
    fn user_records_without_scopes_still_read() {
        let old = br#"{"id":"u1","username":"Al","normalized":"al","password_hash":"$argon2id$x","metadata":null,"created_at":1,"updated_at":2}"#;
        let record: UserRecord = from_bytes(old).unwrap();
        assert_eq!(record.scopes, Vec::<String>::new());
        assert_eq!(record.username, "Al");
    }

    #[test]
    fn records_round_trip() {
        let r = UserKeys {
            key_ids: vec!["a".into()],
        };
        assert_eq!(from_bytes::<UserKeys>(&to_bytes(&r)).unwrap(), r);
        assert!(from_bytes::<UserKeys>(b"{").is_err());
    }
}
