//! Password hashing ([`SecretHasher`]: Argon2id, or bcrypt for legacy
//! set-ups) and envelope encryption of metadata ([`EnvelopeEncryptor`]).
//!
//! No error or `Debug` output of this module contains key material.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::environment::Random;

/// Longest password accepted, in bytes (checked before any hashing: the
/// `argon2` crate takes up to 4 GiB, and a huge password is a cheap DoS).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// bcrypt ignores everything after 72 bytes (71 and a NUL terminator); we
/// refuse longer passwords rather than truncate them.
pub const BCRYPT_MAX_PASSWORD_BYTES: usize = 71;

/// The floor of Argon2id parameters: OWASP's minimum configurations
/// (Password Storage Cheat Sheet), which it rates as equally strong: for
/// `t` passes, at least this much memory in KiB. `t = 5` and more need
/// 7168 KiB; any `p` (lanes split the memory, they add no strength).
pub const ARGON2_FLOOR_M_KIB: [(u32, u32); 5] =
    [(1, 47104), (2, 19456), (3, 12288), (4, 9216), (5, 7168)];

/// The least memory (KiB) Argon2id may use with `t` passes (`t >= 1`).
pub fn argon2_floor_m_kib(t: u32) -> u32 {
    ARGON2_FLOOR_M_KIB
        .iter()
        .rev()
        .find(|(passes, _)| t >= *passes)
        .map_or(u32::MAX, |(_, m_kib)| *m_kib)
}

/// Whether `m_kib`, `t` are below [`ARGON2_FLOOR_M_KIB`] (`t = 0` is).
pub fn below_argon2_floor(m_kib: u32, t: u32) -> bool {
    m_kib < argon2_floor_m_kib(t)
}

/// Which password hash new hashes use. Verification reads the algorithm and
/// its parameters from the stored PHC / modular-crypt string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HasherConfig {
    /// OWASP minimum (the default): `m_kib = 19456`, `t = 2`, `p = 1`;
    /// never below [`ARGON2_FLOOR_M_KIB`].
    Argon2id { m_kib: u32, t: u32, p: u32 },
    /// For legacy deployments only; cost ≥ 10.
    Bcrypt { cost: u32 },
}

impl Default for HasherConfig {
    fn default() -> Self {
        HasherConfig::Argon2id {
            m_kib: Params::DEFAULT_M_COST,
            t: Params::DEFAULT_T_COST,
            p: Params::DEFAULT_P_COST,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// Hashing parameters out of range.
    Params(String),
    /// A stored hash could not be parsed.
    MalformedHash,
    /// The ciphertext names a key id the service does not have.
    UnknownKeyId(u32),
    /// Authentication failed: wrong key, wrong record, or tampered data.
    Decrypt,
    /// A key or key list is unusable (the message never contains key bytes).
    BadKey(String),
}

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CryptoError::Params(m) => write!(f, "bad hashing parameters: {m}"),
            CryptoError::MalformedHash => f.write_str("malformed stored password hash"),
            CryptoError::UnknownKeyId(id) => write!(f, "ciphertext uses unknown key id {id}"),
            CryptoError::Decrypt => f.write_str("decryption failed"),
            CryptoError::BadKey(m) => write!(f, "bad encryption key configuration: {m}"),
        }
    }
}

/// Hashes and verifies passwords.
pub trait SecretHasher: Send + Sync {
    /// A self-describing hash string (PHC for Argon2id) of `password`.
    fn hash(&self, password: &[u8], salt: &[u8; 16]) -> Result<String, CryptoError>;
    /// Whether `password` matches `stored`, using the algorithm and
    /// parameters recorded in `stored` (Argon2id or bcrypt).
    fn verify(&self, password: &[u8], stored: &str) -> Result<bool, CryptoError> {
        verify_stored(password, stored)
    }
    /// Whether a successful login should rehash `stored` with this hasher:
    /// only towards settings at least as strong, never weaker (see the
    /// implementations).
    fn needs_rehash(&self, stored: &str) -> bool;
    /// Longest password this hasher accepts.
    fn max_password_bytes(&self) -> usize;
}

/// The hasher of the service's configuration: Argon2id parameters below the
/// floor are refused.
pub fn hasher_for(config: HasherConfig) -> Result<Box<dyn SecretHasher>, CryptoError> {
    Ok(match config {
        HasherConfig::Argon2id { m_kib, t, p } => Box::new(Argon2idHasher::new(m_kib, t, p)?),
        HasherConfig::Bcrypt { cost } => {
            if !(10..=31).contains(&cost) {
                return Err(CryptoError::Params(format!(
                    "bcrypt cost {cost} not in 10..=31"
                )));
            }
            Box::new(BcryptHasher { cost })
        }
    })
}

/// Verifies against a stored Argon2 PHC string or bcrypt string.
pub fn verify_stored(password: &[u8], stored: &str) -> Result<bool, CryptoError> {
    if stored.starts_with("$argon2") {
        let parsed = PasswordHash::new(stored).map_err(|_| CryptoError::MalformedHash)?;
        // Argon2's verifier takes the algorithm, version and parameters from
        // the parsed hash, not from `Argon2::default()`.
        match Argon2::default().verify_password(password, &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(_) => Err(CryptoError::MalformedHash),
        }
    } else if stored.starts_with("$2") {
        bcrypt::verify(password, stored).map_err(|_| CryptoError::MalformedHash)
    } else {
        Err(CryptoError::MalformedHash)
    }
}

pub struct Argon2idHasher {
    params: Params,
    /// Whether hashes below [`ARGON2_FLOOR_M_KIB`] are refused and rehashed.
    floor: bool,
}

impl Argon2idHasher {
    /// The service's Argon2id: refuses parameters below the floor.
    pub fn new(m_kib: u32, t: u32, p: u32) -> Result<Self, CryptoError> {
        if t >= 1 && below_argon2_floor(m_kib, t) {
            return Err(CryptoError::Params(format!(
                "Argon2id m = {m_kib} KiB, t = {t} is below the floor (OWASP's minimum): \
                 with t = {t}, m must be at least {} KiB \
                 (t = 1: 47104, 2: 19456, 3: 12288, 4: 9216, 5 or more: 7168)",
                argon2_floor_m_kib(t)
            )));
        }
        Self::build(m_kib, t, p, true)
    }

    /// Without the floor: cheap hashes for the unit tests, which hash a lot.
    #[cfg(test)]
    pub fn below_floor_for_tests(m_kib: u32, t: u32, p: u32) -> Self {
        Self::build(m_kib, t, p, false).expect("valid test parameters")
    }

    fn build(m_kib: u32, t: u32, p: u32, floor: bool) -> Result<Self, CryptoError> {
        let params =
            Params::new(m_kib, t, p, None).map_err(|e| CryptoError::Params(e.to_string()))?;
        Ok(Argon2idHasher { params, floor })
    }
}

impl SecretHasher for Argon2idHasher {
    fn hash(&self, password: &[u8], salt: &[u8; 16]) -> Result<String, CryptoError> {
        let salt = SaltString::encode_b64(salt).map_err(|e| CryptoError::Params(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        argon2
            .hash_password(password, &salt)
            .map(|h| h.to_string())
            .map_err(|e| CryptoError::Params(e.to_string()))
    }

    /// Rehashes bcrypt and other Argon2 variants or versions (migrations),
    /// an Argon2id hash below the floor, and one whose memory and passes
    /// both are at most ours (so at least one is less): towards settings at
    /// least as strong. A hash stronger in either is kept, so that lowering
    /// the settings never weakens a stored hash.
    fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.version != Some(Version::V0x13.into())
        {
            return true;
        }
        let Ok(old) = Params::try_from(&parsed) else {
            return true;
        };
        let new = &self.params;
        if self.floor && below_argon2_floor(old.m_cost(), old.t_cost()) {
            return true;
        }
        let same = (old.m_cost(), old.t_cost(), old.p_cost())
            == (new.m_cost(), new.t_cost(), new.p_cost());
        !same && new.m_cost() >= old.m_cost() && new.t_cost() >= old.t_cost()
    }

    fn max_password_bytes(&self) -> usize {
        MAX_PASSWORD_BYTES
    }
}

pub struct BcryptHasher {
    cost: u32,
}

impl SecretHasher for BcryptHasher {
    fn hash(&self, password: &[u8], salt: &[u8; 16]) -> Result<String, CryptoError> {
        // Non-truncating: longer passwords are refused before we get here.
        bcrypt::non_truncating_hash_with_salt(password, self.cost, *salt)
            .map(|parts| parts.format_for_version(bcrypt::Version::TwoB))
            .map_err(|e| CryptoError::Params(e.to_string()))
    }

    /// Only a bcrypt hash of a lower cost: an Argon2id hash is never
    /// rehashed to bcrypt (a legacy setting must not weaken it).
    fn needs_rehash(&self, stored: &str) -> bool {
        // `$2b$12$...`: the cost is the second field.
        let mut fields = stored.split('$');
        let (Some(""), Some(_), Some(cost)) = (fields.next(), fields.next(), fields.next()) else {
            return false;
        };
        stored.starts_with("$2") && cost.parse::<u32>().is_ok_and(|cost| cost < self.cost)
    }

    fn max_password_bytes(&self) -> usize {
        BCRYPT_MAX_PASSWORD_BYTES
    }
}

/// A key-encryption key (KEK): 32 bytes with an id. `Debug` never shows the key.
#[derive(Clone)]
pub struct Kek {
    pub id: u32,
    pub key: [u8; 32],
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A check value of a key-encryption key: the first 16 bytes of SHA-256
/// over a fixed label and the key, in hex. Tells whether two keys of one id
/// are the same without storing anything that helps to find the key (it is
/// 256 random bits).
pub fn kek_check(key: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"hightower-auth/kek-check/v1\0")
        .chain_update(key)
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Envelope encryption with AES-256-GCM.
///
/// Each encryption draws a fresh 256-bit data key (DEK) and encrypts the
/// plaintext with it; the DEK is encrypted ("wrapped") with the newest KEK.
/// Both use a fresh random 96-bit nonce, and both bind the record's key as
/// associated data, so a ciphertext copied to another record fails.
///
/// Layout (version 1):
/// `0x01 | KEK id (u32 BE) | nonce₁ (12) | wrapped DEK (32 + 16 tag) | nonce₂ (12) | ciphertext + tag (16)`.
/// Older KEKs stay in the key list to decrypt old records; rotate by adding
/// a key with a higher id and making it current.
pub struct EnvelopeEncryptor {
    keks: Vec<(u32, Aes256Gcm)>,
    current: u32,
}

const FORMAT_V1: u8 = 1;
const HEADER: usize = 1 + 4 + 12 + 48 + 12;
const WRAP_AAD: &[u8] = b"hightower-auth/dek/v1:";

impl EnvelopeEncryptor {
    /// Uses `current` for new encryptions; every key in `keks` decrypts.
    pub fn new(keks: &[Kek], current: u32) -> Result<Self, CryptoError> {
        let mut list: Vec<(u32, Aes256Gcm)> = Vec::new();
        for kek in keks {
            if list.iter().any(|(id, _)| *id == kek.id) {
                return Err(CryptoError::BadKey(format!("duplicate key id {}", kek.id)));
            }
            list.push((kek.id, Aes256Gcm::new((&kek.key).into())));
        }
        if !list.iter().any(|(id, _)| *id == current) {
            return Err(CryptoError::BadKey(format!(
                "no key with the current id {current}"
            )));
        }
        Ok(EnvelopeEncryptor {
            keks: list,
            current,
        })
    }

    fn kek(&self, id: u32) -> Result<&Aes256Gcm, CryptoError> {
        self.keks
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, c)| c)
            .ok_or(CryptoError::UnknownKeyId(id))
    }

    pub fn encrypt(&self, rng: &dyn Random, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut dek = [0u8; 32];
        let mut n1 = [0u8; 12];
        let mut n2 = [0u8; 12];
        rng.fill(&mut dek);
        rng.fill(&mut n1);
        rng.fill(&mut n2);
        let wrap_aad = [WRAP_AAD, aad].concat();
        let kek = self.kek(self.current).expect("checked in new");
        let wrapped = kek
            .encrypt(
                Nonce::from_slice(&n1),
                Payload {
                    msg: &dek,
                    aad: &wrap_aad,
                },
            )
            .expect("AES-GCM encryption of 32 bytes cannot fail");
        let data = Aes256Gcm::new((&dek).into())
            .encrypt(
                Nonce::from_slice(&n2),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption within size limits cannot fail");
        dek.fill(0);
        let mut out = Vec::with_capacity(HEADER + data.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&n1);
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&n2);
        out.extend_from_slice(&data);
        out
    }

    pub fn decrypt(&self, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if blob.len() < HEADER + 16 || blob[0] != FORMAT_V1 {
            return Err(CryptoError::Decrypt);
        }
        let id = u32::from_be_bytes(blob[1..5].try_into().unwrap());
        let kek = self.kek(id)?;
        let (n1, rest) = blob[5..].split_at(12);
        let (wrapped, rest) = rest.split_at(48);
        let (n2, data) = rest.split_at(12);
        let wrap_aad = [WRAP_AAD, aad].concat();
        let mut dek = kek
            .decrypt(
                Nonce::from_slice(n1),
                Payload {
                    msg: wrapped,
                    aad: &wrap_aad,
                },
            )
            .map_err(|_| CryptoError::Decrypt)?;
        let key: [u8; 32] = dek
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Decrypt)?;
        dek.fill(0);
        Aes256Gcm::new((&key).into())
            .decrypt(Nonce::from_slice(n2), Payload { msg: data, aad })
            .map_err(|_| CryptoError::Decrypt)
    }

    /// The id of the key new encryptions use.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// The KEK id of a ciphertext (for rotation reports).
    pub fn key_id_of(blob: &[u8]) -> Option<u32> {
        (blob.len() >= 5 && blob[0] == FORMAT_V1)
            .then(|| u32::from_be_bytes(blob[1..5].try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRandom;

    fn cheap() -> Argon2idHasher {
        Argon2idHasher::below_floor_for_tests(64, 1, 1)
    }

    #[test]
    fn argon2id_default_is_owasp_and_phc() {
        assert_eq!(
            HasherConfig::default(),
            HasherConfig::Argon2id {
                m_kib: 19456,
                t: 2,
                p: 1
            }
        );
        let h = hasher_for(HasherConfig::default()).unwrap();
        let phc = h.hash(b"correct horse", &[7; 16]).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify(b"correct horse", &phc).unwrap());
        assert!(!h.verify(b"wrong horse", &phc).unwrap());
        assert!(!h.needs_rehash(&phc));
    }

    #[test]
    fn verification_uses_stored_params_and_rehash_is_detected() {
        let weak = cheap();
        let phc = weak.hash(b"pw", &[1; 16]).unwrap();
        let strong = Argon2idHasher::below_floor_for_tests(128, 2, 1);
        assert!(strong.verify(b"pw", &phc).unwrap());
        assert!(strong.needs_rehash(&phc));
        assert!(!weak.needs_rehash(&phc));
        assert_eq!(
            strong.verify(b"pw", "garbage"),
            Err(CryptoError::MalformedHash)
        );
    }

    #[test]
    fn bcrypt_alternative() {
        let b = hasher_for(HasherConfig::Bcrypt { cost: 10 }).unwrap();
        let s = b.hash(b"pw", &[3; 16]).unwrap();
        assert!(s.starts_with("$2b$10$"), "{s}");
        assert!(b.verify(b"pw", &s).unwrap());
        assert!(!b.verify(b"px", &s).unwrap());
        assert!(!b.needs_rehash(&s));
        assert!(
            hasher_for(HasherConfig::Bcrypt { cost: 12 })
                .unwrap()
                .needs_rehash(&s)
        );
        // A lower cost, or an Argon2id hash, is never rehashed to bcrypt.
        let b12 = hasher_for(HasherConfig::Bcrypt { cost: 12 }).unwrap();
        let s12 = b12.hash(b"pw", &[3; 16]).unwrap();
        assert!(!b.needs_rehash(&s12));
        assert!(!b.needs_rehash(&cheap().hash(b"pw", &[1; 16]).unwrap()));
        // An Argon2 hasher verifies bcrypt hashes (migration) and wants to rehash them.
        assert!(cheap().verify(b"pw", &s).unwrap());
        assert!(cheap().needs_rehash(&s));
        assert!(hasher_for(HasherConfig::Bcrypt { cost: 4 }).is_err());
        assert_eq!(b.max_password_bytes(), 71);
    }

    /// OWASP's five equivalent minimums pass; one KiB less does not; the
    /// error names the rule.
    #[test]
    fn argon2id_parameters_below_the_floor_are_refused() {
        for (t, m_kib) in ARGON2_FLOOR_M_KIB {
            assert!(Argon2idHasher::new(m_kib, t, 1).is_ok(), "t = {t}");
            let Err(CryptoError::Params(message)) = Argon2idHasher::new(m_kib - 1, t, 1) else {
                panic!("t = {t}, m = {} accepted", m_kib - 1);
            };
            assert!(message.contains("below the floor"), "{message}");
        }
        assert!(Argon2idHasher::new(7168, 50, 1).is_ok());
        assert!(Argon2idHasher::new(7167, 50, 1).is_err());
        for (m_kib, t) in [(8, 1), (u32::MAX, 0), (19456, 1), (64, 5)] {
            let config = HasherConfig::Argon2id { m_kib, t, p: 1 };
            assert!(hasher_for(config).is_err(), "{m_kib} {t}");
        }
    }

    /// A login rehashes only towards parameters at least as strong.
    #[test]
    fn rehash_goes_only_towards_stronger_parameters() {
        let phc = |m_kib: u32, t: u32, p: u32| {
            Argon2idHasher::below_floor_for_tests(m_kib, t, p)
                .hash(b"pw", &[5; 16])
                .unwrap()
        };
        let floor = Argon2idHasher::new(7168, 5, 1).unwrap();
        // Below the floor: always raised to it.
        assert!(floor.needs_rehash(&phc(8, 1, 1)));
        assert!(floor.needs_rehash(&phc(64, 10, 1)));
        // At or above the floor: only when ours is at least as strong in
        // both memory and passes.
        assert!(!floor.needs_rehash(&phc(7168, 5, 1)));
        assert!(!floor.needs_rehash(&phc(19456, 2, 1)));
        assert!(!floor.needs_rehash(&phc(7168, 6, 1)));
        assert!(!floor.needs_rehash(&phc(8192, 5, 1)));
        let strong = Argon2idHasher::new(19456, 5, 1).unwrap();
        assert!(strong.needs_rehash(&phc(7168, 5, 1)));
        assert!(strong.needs_rehash(&phc(19456, 2, 1)));
        assert!(!strong.needs_rehash(&phc(47104, 1, 1)));
        // Lanes only: the same strength, so the setting takes effect.
        let two_lanes = Argon2idHasher::new(7168, 5, 2).unwrap();
        assert!(two_lanes.needs_rehash(&phc(7168, 5, 1)));
    }

    fn keks() -> Vec<Kek> {
        vec![
            Kek {
                id: 1,
                key: [1; 32],
            },
            Kek {
                id: 2,
                key: [2; 32],
            },
        ]
    }

    #[test]
    fn envelope_round_trip_binding_and_rotation() {
        let rng = FakeRandom::new(3);
        let old = EnvelopeEncryptor::new(&keks()[..1], 1).unwrap();
        let blob1 = old.encrypt(&rng, b"user/a", b"meta");
        assert_eq!(EnvelopeEncryptor::key_id_of(&blob1), Some(1));
        assert_eq!(old.decrypt(b"user/a", &blob1).unwrap(), b"meta");
        // Moved to another record: fails.
        assert_eq!(old.decrypt(b"user/b", &blob1), Err(CryptoError::Decrypt));
        // Fresh nonce every time.
        let again = old.encrypt(&rng, b"user/a", b"meta");
        assert_ne!(blob1, again);
        assert_ne!(blob1[5..17], again[5..17]);
        // Rotation: new writes use key 2, old blobs still decrypt.
        let rotated = EnvelopeEncryptor::new(&keks(), 2).unwrap();
        let blob2 = rotated.encrypt(&rng, b"user/a", b"meta2");
        assert_eq!(EnvelopeEncryptor::key_id_of(&blob2), Some(2));
        assert_eq!(rotated.decrypt(b"user/a", &blob1).unwrap(), b"meta");
        assert_eq!(
            old.decrypt(b"user/a", &blob2),
            Err(CryptoError::UnknownKeyId(2))
        );
        // Tampering anywhere fails.
        for i in 0..blob2.len() {
            let mut t = blob2.clone();
            t[i] ^= 1;
            assert!(rotated.decrypt(b"user/a", &t).is_err(), "byte {i}");
        }
        // Nothing secret in Debug or errors.
        let dbg = format!("{:?}", keks());
        assert!(!dbg.contains("[1, 1") && !dbg.contains("key:"), "{dbg}");
        assert!(EnvelopeEncryptor::new(&keks(), 9).is_err());
    }
}
