//! Keyed BLAKE2b (RFC 7693) with a 64-byte key and a 32-byte output: the hash Lioness uses in
//! Nym's payload encryption (`Blake2bMac<U32>` in RustCrypto terms).
//!
//! One message at a time, [`mac32`] uses the RustCrypto `blake2` crate. Four messages of equal
//! length at a time, [`mac32_x4`] runs a multi-buffer AVX2 compression (module `avx2`): each
//! 256-bit vector holds the same state word of four messages, so every instruction does four
//! messages' work with no shuffles between lanes. It falls back to four single calls without
//! AVX2 or when the lengths differ. [`mac32_x8`] does the same for eight messages with AVX-512
//! (module `avx512`).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};

/// The BLAKE2b initialisation vector.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// Message word schedule per round (rounds 10 and 11 repeat 0 and 1).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const SIGMA: [[usize; 16]; 12] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
];

/// Keyed BLAKE2b-256 of `data` under a 64-byte key.
pub fn mac32(key: &[u8; 64], data: &[u8]) -> [u8; 32] {
    let mut m = <Blake2bMac<U32> as KeyInit>::new_from_slice(key).expect("64-byte key is valid");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Whether [`mac32_x4`] runs the vector code on this CPU.
pub fn x4_is_vectorised() -> bool {
    cfg!(target_arch = "x86_64") && crate::cpu::features().avx2
}

/// Keyed BLAKE2b-256 of four messages at once: `out[i] = mac32(keys[i], data[i])`.
pub fn mac32_x4(keys: [&[u8; 64]; 4], data: [&[u8]; 4]) -> [[u8; 32]; 4] {
    #[cfg(target_arch = "x86_64")]
    if x4_is_vectorised() && data.iter().all(|d| d.len() == data[0].len()) {
        return avx2::mac32_x4(keys, data);
    }
    std::array::from_fn(|i| mac32(keys[i], data[i]))
}

/// Whether [`mac32_x8`] runs the vector code on this CPU.
pub fn x8_is_vectorised() -> bool {
    cfg!(target_arch = "x86_64") && crate::cpu::features().avx512f
}

/// Keyed BLAKE2b-256 of eight messages at once: `out[i] = mac32(keys[i], data[i])`.
pub fn mac32_x8(keys: [&[u8; 64]; 8], data: [&[u8]; 8]) -> [[u8; 32]; 8] {
    #[cfg(target_arch = "x86_64")]
    if x8_is_vectorised() && data.iter().all(|d| d.len() == data[0].len()) {
        return avx512::mac32_x8(keys, data);
    }
    std::array::from_fn(|i| mac32(keys[i], data[i]))
}

/// The portable path of [`mac32_x4`], for tests that compare the two.
pub fn mac32_x4_portable(keys: [&[u8; 64]; 4], data: [&[u8]; 4]) -> [[u8; 32]; 4] {
    std::array::from_fn(|i| mac32(keys[i], data[i]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8) -> [u8; 64] {
        std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
    }

    #[test]
    fn x4_matches_single_at_every_length_around_block_edges() {
        let keys = [key(1), key(2), key(3), key(4)];
        for len in (0..=530).chain([1023, 1024, 1025, 2033, 8177, 32753]) {
            let msgs: Vec<Vec<u8>> = (0..4u32)
                .map(|j| {
                    (0..len as u32)
                        .map(|i| (i * 7 + j * 13 + 3) as u8)
                        .collect()
                })
                .collect();
            let got = mac32_x4(
                [&keys[0], &keys[1], &keys[2], &keys[3]],
                [&msgs[0], &msgs[1], &msgs[2], &msgs[3]],
            );
            for j in 0..4 {
                assert_eq!(got[j], mac32(&keys[j], &msgs[j]), "len {len} lane {j}");
            }
        }
        assert!(
            x4_is_vectorised() || !cfg!(target_arch = "x86_64") || !crate::cpu::features().avx2
        );
    }

    #[test]
    fn unequal_lengths_fall_back_correctly() {
        let keys = [key(5), key(6), key(7), key(8)];
        let msgs = [vec![1u8; 10], vec![2u8; 300], vec![3u8; 0], vec![4u8; 129]];
        let got = mac32_x4(
            [&keys[0], &keys[1], &keys[2], &keys[3]],
            [&msgs[0], &msgs[1], &msgs[2], &msgs[3]],
        );
        for j in 0..4 {
            assert_eq!(got[j], mac32(&keys[j], &msgs[j]));
        }
    }

    #[test]
    fn x8_matches_single_at_every_length_around_block_edges() {
        let keys: [[u8; 64]; 8] = std::array::from_fn(|j| key(j as u8 * 3 + 1));
        for len in (0..=530).chain([1023, 1024, 1025, 2033, 8177, 32753]) {
            let msgs: Vec<Vec<u8>> = (0..8u32)
                .map(|j| {
                    (0..len as u32)
                        .map(|i| (i * 11 + j * 29 + 5) as u8)
                        .collect()
                })
                .collect();
            let got = mac32_x8(
                std::array::from_fn(|j| &keys[j]),
                std::array::from_fn(|j| msgs[j].as_slice()),
            );
            for j in 0..8 {
                assert_eq!(got[j], mac32(&keys[j], &msgs[j]), "len {len} lane {j}");
            }
        }
        let mixed: Vec<Vec<u8>> = (0..8).map(|j| vec![j as u8; 100 * j]).collect();
        let got = mac32_x8(
            std::array::from_fn(|j| &keys[j]),
            std::array::from_fn(|j| mixed[j].as_slice()),
        );
        for j in 0..8 {
            assert_eq!(
                got[j],
                mac32(&keys[j], &mixed[j]),
                "unequal lengths, lane {j}"
            );
        }
    }

    proptest! {
        #[test]
        fn random_lanes_match(seed in any::<[u8; 4]>(), len in 0usize..700, fill in any::<u8>()) {
            let keys = [key(seed[0]), key(seed[1]), key(seed[2]), key(seed[3])];
            let msgs: Vec<Vec<u8>> = (0..4u8)
                .map(|j| (0..len).map(|i| (i as u8).wrapping_mul(fill | 1).wrapping_add(j)).collect())
                .collect();
            let got = mac32_x4(
                [&keys[0], &keys[1], &keys[2], &keys[3]],
                [&msgs[0], &msgs[1], &msgs[2], &msgs[3]],
            );
            let want = mac32_x4_portable(
                [&keys[0], &keys[1], &keys[2], &keys[3]],
                [&msgs[0], &msgs[1], &msgs[2], &msgs[3]],
            );
            prop_assert_eq!(got, want);
        }
    }
}
