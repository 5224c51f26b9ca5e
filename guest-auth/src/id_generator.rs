//! Ids and API tokens.
//!
//! Token format (like GitHub's `ghp_` tokens): `hkv_<key id>_<secret><checksum>`
//! - `hkv_`: a fixed prefix, so scanners and humans recognise the token;
//! - key id: 12 base62 characters (≈71 bits), public, used to look the key up;
//! - secret: 32 base62 characters (≈190 bits), never stored (only its SHA-256);
//! - checksum: CRC32 of everything before it, as 6 base62 characters, so a
//!   mistyped or truncated token is rejected without reading the store.

use crate::environment::Random;

pub const TOKEN_PREFIX: &str = "hkv_";
pub const KEY_ID_LEN: usize = 12;
pub const SECRET_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
/// Length of every well-formed token.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` uniformly random base62 characters (rejection sampling: bytes of
/// 248 and above are dropped, so there is no modulo bias).
pub fn base62(rng: &dyn Random, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf);
        for &b in &buf {
            if b < 248 && out.len() < len {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    out
}

/// A user id: 128 random bits, 32 lowercase hex characters.
pub fn user_id(rng: &dyn Random) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An API key id (public, part of the token).
pub fn key_id(rng: &dyn Random) -> String {
    base62(rng, KEY_ID_LEN)
}

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes()) as u64;
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(digits.to_vec()).expect("base62 is ASCII")
}

/// A fresh token for `key_id`; returns `(secret, token)`.
pub fn new_token(rng: &dyn Random, key_id: &str) -> (String, String) {
    let secret = base62(rng, SECRET_LEN);
    let body = format!("{TOKEN_PREFIX}{key_id}_{secret}");
    let token = format!("{body}{}", checksum(&body));
    (secret, token)
}

/// The parts of a well-formed token.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    pub key_id: &'a str,
    pub secret: &'a str,
}

/// Checks a token's shape and checksum, without any store access.
pub fn parse_token(token: &str) -> Option<ParsedToken<'_>> {
    if token.len() != TOKEN_LEN || !token.is_ascii() {
        return None;
    }
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (key_id, rest) = rest.split_at(KEY_ID_LEN);
    let rest = rest.strip_prefix('_')?;
    let (secret, sum) = rest.split_at(SECRET_LEN);
    let is_b62 = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !is_b62(key_id) || !is_b62(secret) || !is_b62(sum) {
        return None;
    }
    let body = &token[..token.len() - CHECKSUM_LEN];
    if checksum(body) != sum {
        return None;
    }
    Some(ParsedToken { key_id, secret })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRandom;

    #[test]
    fn tokens_round_trip_and_reject_typos() {
        let rng = FakeRandom::new(7);
        let kid = key_id(&rng);
        let (secret, token) = new_token(&rng, &kid);
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token.starts_with("hkv_"));
        let parsed = parse_token(&token).unwrap();
        assert_eq!(parsed.key_id, kid);
        assert_eq!(parsed.secret, secret);
        // Every single-character substitution and every adjacent swap is caught.
        let bytes = token.as_bytes();
        for i in 4..bytes.len() {
            let mut typo = bytes.to_vec();
            typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
            if typo != bytes && typo[i] != b'_' {
                assert!(
                    parse_token(std::str::from_utf8(&typo).unwrap()).is_none(),
                    "{i}"
                );
            }
            if i + 1 < bytes.len() && bytes[i] != bytes[i + 1] {
                let mut swap = bytes.to_vec();
                swap.swap(i, i + 1);
                assert!(parse_token(std::str::from_utf8(&swap).unwrap()).is_none());
            }
        }
        assert!(parse_token(&token[..token.len() - 1]).is_none());
        assert!(parse_token(&format!("{token}x")).is_none());
        assert!(parse_token(&token.replace("hkv_", "ghp_")).is_none());
    }

    #[test]
    fn ids_have_their_shape() {
        let rng = FakeRandom::new(1);
        let id = user_id(&rng);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(user_id(&rng), id);
        assert_eq!(key_id(&rng).len(), KEY_ID_LEN);
    }
}
