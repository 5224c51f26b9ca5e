//! The Bloom filter of a segment's metadata: is a key possibly in the segment?
//!
//! `k` probes into `m` bits by double hashing of one XXH3-64 hash of the key
//! (seed 0): probe `i` tests bit `(h + i * delta) mod m` with
//! `delta = rotate_right(h, 17) | 1`. The layout is part of the on-disk
//! format (`docs/format.md`), so it never changes within a format version.

use xxhash_rust::xxh3::xxh3_64;

/// Probes for `bits_per_key` bits per key: `round(bits_per_key * ln 2)`,
/// which minimises the false-positive rate (about 0.6185^bits_per_key).
pub fn hash_count(bits_per_key: u32) -> u32 {
    ((f64::from(bits_per_key) * std::f64::consts::LN_2).round() as u32).clamp(1, 30)
}

/// Bytes of a filter for `keys` keys: at least 8, a whole number of bytes.
pub fn filter_len(keys: usize, bits_per_key: u32) -> usize {
    (keys * bits_per_key as usize).div_ceil(8).max(8)
}

pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Sets the bits of `hash` in `bits`.
pub fn insert(bits: &mut [u8], hash_count: u32, hash: u64) {
    for bit in probes(bits.len(), hash_count, hash) {
        bits[bit / 8] |= 1 << (bit % 8);
    }
}

/// `false` means definitely absent.
pub fn may_contain(bits: &[u8], hash_count: u32, hash: u64) -> bool {
    probes(bits.len(), hash_count, hash).all(|bit| bits[bit / 8] & (1 << (bit % 8)) != 0)
}

fn probes(len_bytes: usize, hash_count: u32, hash: u64) -> impl Iterator<Item = usize> {
    let m = (len_bytes as u64) * 8;
    let delta = hash.rotate_right(17) | 1;
    (0..u64::from(hash_count)).map(move |i| (hash.wrapping_add(i.wrapping_mul(delta)) % m) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_keys_are_always_found() {
        let mut bits = vec![0u8; filter_len(1000, 10)];
        for i in 0..1000u32 {
            insert(&mut bits, hash_count(10), key_hash(&i.to_le_bytes()));
        }
        for i in 0..1000u32 {
            assert!(may_contain(
                &bits,
                hash_count(10),
                key_hash(&i.to_le_bytes())
            ));
        }
    }

    #[test]
    fn ten_bits_per_key_give_about_one_percent_false_positives() {
        let keys = 20_000u32;
        let mut bits = vec![0u8; filter_len(keys as usize, 10)];
        for i in 0..keys {
            insert(
                &mut bits,
                hash_count(10),
                key_hash(format!("key-{i}").as_bytes()),
            );
        }
        let false_positives = (0..100_000u32)
            .filter(|i| {
                may_contain(
                    &bits,
                    hash_count(10),
                    key_hash(format!("absent-{i}").as_bytes()),
                )
            })
            .count();
        let rate = false_positives as f64 / 100_000.0;
        assert!(rate < 0.015, "false-positive rate {rate}");
        assert!(
            rate > 0.002,
            "suspiciously low rate {rate}: are probes independent?"
        );
    }

    #[test]
    fn the_hash_is_the_specified_xxh3() {
        // A change of hash would make every stored filter wrong: pin it.
        assert_eq!(key_hash(b""), 0x2D06_8005_38D3_94C2);
    }

    #[test]
    fn hash_counts_follow_the_bits() {
        assert_eq!(hash_count(10), 7);
        assert_eq!(hash_count(1), 1);
        assert_eq!(hash_count(100), 30);
    }
}
