//! Keyed BLAKE2b (RFC 7693) with a 64-byte key and a 32-byte output: the hash Lioness uses in
//! Nym's payload encryption (`Blake2bMac<U32>` in RustCrypto terms).
//!
//! One message at a time, [`mac32`] uses the RustCrypto `blake2` crate. Four messages of equal
//! length at a time, [`mac32_x4`] runs a multi-buffer AVX2 compression (module `avx2`): each
//! 256-bit vector holds the same state word of four messages, so every instruction does four
//! messages' work with no shuffles between lanes. [`mac32_x8`] does the same for eight messages
//! with AVX-512 (module `avx512`), or as two four-message calls with AVX2 only. [`Backend`] says
//! which runs; without vector features, or when the lengths differ, the messages go one at a
//! time.

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

/// A BLAKE2b multi-buffer implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// [`mac32_x8`] on AVX-512 F vectors, [`mac32_x4`] on AVX2; needs AVX-512 F (and AVX2).
    Avx512,
    /// [`mac32_x4`] on AVX2 vectors, [`mac32_x8`] as two such calls; needs AVX2.
    Avx2,
    /// One message at a time through the `blake2` crate; always available.
    Portable,
}

impl Backend {
    /// Every backend, fastest first.
    pub const ALL: &'static [Backend] = &[Backend::Avx512, Backend::Avx2, Backend::Portable];

    /// The backend's short name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Avx512 => "avx512",
            Backend::Avx2 => "avx2",
            Backend::Portable => "portable",
        }
    }

    /// The fastest backend that `features` allow.
    pub fn for_features(features: crate::cpu::Features) -> Backend {
        match features {
            f if cfg!(target_arch = "x86_64") && f.avx512f && f.avx2 => Backend::Avx512,
            f if cfg!(target_arch = "x86_64") && f.avx2 => Backend::Avx2,
            _ => Backend::Portable,
        }
    }

    /// The backend in use: the fastest one the features in force ([`crate::cpu::in_force`])
    /// allow.
    #[inline]
    pub fn best() -> Backend {
        Self::for_features(crate::cpu::in_force())
    }

    /// Messages per call of the backend's widest multi-buffer hash (1: one at a time).
    pub fn lanes(self) -> usize {
        match self {
            Backend::Avx512 => 8,
            Backend::Avx2 => 4,
            Backend::Portable => 1,
        }
    }
}

/// Keyed BLAKE2b-256 of four messages at once: `out[i] = mac32(keys[i], data[i])`.
pub fn mac32_x4(keys: [&[u8; 64]; 4], data: [&[u8]; 4]) -> [[u8; 32]; 4] {
    mac32_x4_with(Backend::best(), keys, data)
}

/// [`mac32_x4`] with `backend`, which must be [`Backend::best`] or slower.
fn mac32_x4_with(backend: Backend, keys: [&[u8; 64]; 4], data: [&[u8]; 4]) -> [[u8; 32]; 4] {
    let equal = data.iter().all(|d| d.len() == data[0].len());
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 | Backend::Avx2 if equal => {
            assert!(crate::cpu::in_force().avx2, "AVX2 BLAKE2b without AVX2");
            // SAFETY: the features in force, a subset of the CPU's, include AVX2 (asserted).
            unsafe { avx2::mac32_x4(keys, data) }
        }
        _ => mac32_x4_portable(keys, data),
    }
}

/// Keyed BLAKE2b-256 of eight messages at once: `out[i] = mac32(keys[i], data[i])`.
pub fn mac32_x8(keys: [&[u8; 64]; 8], data: [&[u8]; 8]) -> [[u8; 32]; 8] {
    mac32_x8_with(Backend::best(), keys, data)
}

/// [`mac32_x8`] with `backend`, which must be [`Backend::best`] or slower.
fn mac32_x8_with(backend: Backend, keys: [&[u8; 64]; 8], data: [&[u8]; 8]) -> [[u8; 32]; 8] {
    let equal = data.iter().all(|d| d.len() == data[0].len());
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 if equal => avx512::mac32_x8(keys, data),
        Backend::Avx2 => {
            let half = |h: usize| -> [[u8; 32]; 4] {
                let k = std::array::from_fn(|i| keys[4 * h + i]);
                let d = std::array::from_fn(|i| data[4 * h + i]);
                mac32_x4_with(backend, k, d)
            };
            let (lo, hi) = (half(0), half(1));
            std::array::from_fn(|i| if i < 4 { lo[i] } else { hi[i - 4] })
        }
        _ => std::array::from_fn(|i| mac32(keys[i], data[i])),
    }
}

/// The portable path of [`mac32_x4`].
fn mac32_x4_portable(keys: [&[u8; 64]; 4], data: [&[u8]; 4]) -> [[u8; 32]; 4] {
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
        let want = if cfg!(target_arch = "x86_64") && crate::cpu::in_force().avx2 {
            4
        } else {
            1
        };
        assert!(Backend::best().lanes() >= want);
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

    #[test]
    fn every_allowed_backend_matches_single() {
        let in_force = crate::cpu::in_force();
        let keys: [[u8; 64]; 8] = std::array::from_fn(|j| key(j as u8 * 5 + 2));
        for &backend in Backend::ALL {
            let allowed = Backend::ALL.iter().position(|b| *b == backend)
                >= Backend::ALL.iter().position(|b| *b == Backend::best());
            if !allowed {
                continue;
            }
            assert!(backend != Backend::Avx2 || in_force.avx2);
            for len in [0usize, 1, 127, 128, 129, 2033] {
                let msgs: Vec<Vec<u8>> = (0..8).map(|j| vec![(len + j) as u8; len]).collect();
                let k8 = std::array::from_fn(|j| &keys[j]);
                let d8 = std::array::from_fn(|j| msgs[j].as_slice());
                let got8 = mac32_x8_with(backend, k8, d8);
                let k4 = std::array::from_fn(|j| &keys[j]);
                let d4 = std::array::from_fn(|j| msgs[j].as_slice());
                let got4 = mac32_x4_with(backend, k4, d4);
                for j in 0..8 {
                    let want = mac32(&keys[j], &msgs[j]);
                    assert_eq!(got8[j], want, "{} x8 len {len} lane {j}", backend.name());
                    if j < 4 {
                        assert_eq!(got4[j], want, "{} x4 len {len} lane {j}", backend.name());
                    }
                }
            }
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
