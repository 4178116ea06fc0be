//! Multi-buffer SHA-256 compression: sixteen independent states advanced by one block each.
//!
//! The data is *word-sliced*: a state is `[[u32; 16]; 8]` (word `w` of lane `l` at
//! `[w][l]`) and a block is `[[u32; 16]; 16]` (message word `t` of lane `l` at `[t][l]`, the
//! big-endian words of the 64-byte block as numbers). In that layout the AVX-512 backend (module
//! `avx512`) loads each row as one vector and runs all sixteen compressions with no shuffles;
//! callers whose messages are mostly the same in every lane (the HKDF and HMAC shapes of a Sphinx
//! hop: constant info strings, padding and lengths, with only keys and chaining values differing)
//! fill the constant words once instead of transposing whole messages.
//!
//! [`compress_x16`] (and [`compress_live`], which may skip lanes that hold no message) runs the
//! backend of [`Backend::best`], the first of these that the CPU allows:
//! - [`Backend::Avx512`], all sixteen lanes in one pass, where the features in force
//!   ([`crate::cpu::in_force`]) include AVX-512 F;
//! - [`Backend::ShaNi`], two lanes at a time through the SHA extensions with their round
//!   chains interleaved, where the CPU has SHA-NI ([`crate::cpu::sha_ni`]);
//! - [`Backend::Avx2`], eight lanes per pass, on AVX2 CPUs without SHA-NI (Intel
//!   Haswell..Skylake; the `avx2-nosha` cap selects it anywhere AVX2 is there);
//! - else each lane through the `sha2` crate's compression function ([`Backend::Portable`]).
//!
//! On the Zen 3 EPYC of bench/RESULTS.md (AVX2 and SHA-NI) the example `sha256_timing` put
//! the AVX2 code at 0.76–0.94× the `sha2` crate's SHA-NI block one at a time, per lane and
//! block, and the interleaved SHA-NI code at 1.19–1.71× (runs on a loaded 2-vCPU VM): hence
//! that order.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod shani;

use sha2::block_api::compress256;

/// Lanes per call.
pub const LANES: usize = 16;

/// Sixteen SHA-256 states, word-sliced: `state[w][l]` is word `w` of lane `l`.
pub type StateX16 = [[u32; LANES]; 8];
/// Sixteen message blocks, word-sliced: `block[t][l]` is big-endian word `t` of lane `l`'s block.
pub type BlockX16 = [[u32; LANES]; 16];

/// The SHA-256 initial state.
pub const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The round constants.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// A multi-buffer SHA-256 compression implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// All sixteen lanes in AVX-512 F vectors; needs AVX-512 F.
    Avx512,
    /// Lanes two at a time through the SHA extensions, interleaved; needs SHA-NI
    /// ([`crate::cpu::sha_ni`]).
    ShaNi,
    /// Eight lanes at a time in AVX2 vectors (two passes for sixteen); needs AVX2.
    Avx2,
    /// One lane at a time through the `sha2` crate (SHA-NI where the CPU has it, whatever the
    /// cap of [`crate::cpu`]); always available.
    Portable,
}

impl Backend {
    /// Every backend, fastest first.
    pub const ALL: &'static [Backend] = &[
        Backend::Avx512,
        Backend::ShaNi,
        Backend::Avx2,
        Backend::Portable,
    ];

    /// The backend's short name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Avx512 => "avx512",
            Backend::ShaNi => "sha-ni x2",
            Backend::Avx2 => "avx2",
            Backend::Portable => "portable",
        }
    }

    /// Whether `features` and SHA-NI (`sha_ni`) allow this backend.
    pub fn is_allowed_by(self, features: crate::cpu::Features, sha_ni: bool) -> bool {
        let x86 = cfg!(target_arch = "x86_64");
        match self {
            Backend::Avx512 => x86 && features.avx512f,
            Backend::ShaNi => x86 && sha_ni,
            Backend::Avx2 => x86 && features.avx2,
            Backend::Portable => true,
        }
    }

    /// Whether the features in force ([`crate::cpu::in_force`], [`crate::cpu::sha_ni`])
    /// allow this backend.
    pub fn is_available(self) -> bool {
        self.is_allowed_by(crate::cpu::in_force(), crate::cpu::sha_ni())
    }

    /// The fastest backend that `features` allow on a CPU with (`sha_ni`) or without SHA-NI.
    pub fn for_features(features: crate::cpu::Features, sha_ni: bool) -> Backend {
        *Backend::ALL
            .iter()
            .find(|b| b.is_allowed_by(features, sha_ni))
            .expect("the portable backend is always allowed")
    }

    /// The backend in use: the fastest one the features in force ([`crate::cpu::in_force`],
    /// [`crate::cpu::sha_ni`]) allow.
    #[inline]
    pub fn best() -> Backend {
        Self::for_features(crate::cpu::in_force(), crate::cpu::sha_ni())
    }
}

/// Advances each of the sixteen states by its lane's block, on [`Backend::best`].
pub fn compress_x16(state: &mut StateX16, block: &BlockX16) {
    compress_x16_on(Backend::best(), state, block);
}

/// [`compress_x16`] on `backend`. Panics if the features in force do not allow it.
pub fn compress_x16_on(backend: Backend, state: &mut StateX16, block: &BlockX16) {
    compress_live_on(backend, state, block, LANES);
}

/// Advances the states of lanes `0..live` by their lanes' blocks, on [`Backend::best`]. A
/// backend may also advance some lanes past `live` (it works in groups of its vector width) and
/// leave the others as they were: callers must treat those lanes' states as garbage afterwards.
pub fn compress_live(state: &mut StateX16, block: &BlockX16, live: usize) {
    compress_live_on(Backend::best(), state, block, live);
}

/// [`compress_live`] on `backend`. Panics if the features in force do not allow it.
pub fn compress_live_on(backend: Backend, state: &mut StateX16, block: &BlockX16, live: usize) {
    assert!(
        backend.is_available(),
        "SHA-256 backend {} not allowed here",
        backend.name()
    );
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => avx512::compress_x16(state, block),
        #[cfg(target_arch = "x86_64")]
        Backend::ShaNi => shani::compress(state, block, live),
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => {
            avx2::compress_x8(state, block, avx2::Half::Low);
            if live > LANES / 2 {
                avx2::compress_x8(state, block, avx2::Half::High);
            }
        }
        _ => compress_portable(state, block, live),
    }
}

/// [`compress_x16`] one lane at a time through the `sha2` crate: the reference for the tests.
#[cfg(test)]
fn compress_x16_portable(state: &mut StateX16, block: &BlockX16) {
    compress_portable(state, block, LANES);
}

/// Lanes `0..live` one at a time through the `sha2` crate.
fn compress_portable(state: &mut StateX16, block: &BlockX16, live: usize) {
    for l in 0..live.min(LANES) {
        let mut s: [u32; 8] = std::array::from_fn(|w| state[w][l]);
        let mut b = [0u8; 64];
        for (t, chunk) in b.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&block[t][l].to_be_bytes());
        }
        compress256(&mut s, &[b]);
        for w in 0..8 {
            state[w][l] = s[w];
        }
    }
}

/// The states with every lane set to `s`.
pub fn splat_state(s: &[u32; 8]) -> StateX16 {
    s.map(|w| [w; LANES])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    fn lane_state(s: &StateX16, l: usize) -> [u32; 8] {
        std::array::from_fn(|w| s[w][l])
    }

    /// The backends the features in force allow.
    fn backends_here() -> impl Iterator<Item = Backend> {
        Backend::ALL.iter().copied().filter(|b| b.is_available())
    }

    proptest! {
        // Random states and blocks, three blocks in a row: every backend of this CPU against
        // the `sha2` crate one lane at a time.
        #[test]
        fn every_backend_equals_portable(words in proptest::collection::vec(any::<u32>(), 16 * 16 * 3 + 8 * 16)) {
            let start: StateX16 = std::array::from_fn(|w| std::array::from_fn(|l| words[16 * w + l]));
            for backend in backends_here() {
                let (mut s, mut p) = (start, start);
                for b in 0..3 {
                    let block: BlockX16 = std::array::from_fn(|t| {
                        std::array::from_fn(|l| words[128 + 256 * b + 16 * t + l])
                    });
                    compress_x16_on(backend, &mut s, &block);
                    compress_x16_portable(&mut p, &block);
                }
                prop_assert_eq!(s, p, "backend {}", backend.name());
            }
        }
    }

    #[test]
    fn choice_follows_the_features_and_sha_ni() {
        use crate::cpu::{Cap, Features};
        let all = Features {
            avx2: true,
            avx512f: true,
            avx512ifma: true,
        };
        let (x86, avx2) = (cfg!(target_arch = "x86_64"), all.capped(Cap::Avx2));
        let vector = |b| if x86 { b } else { Backend::Portable };
        for sha_ni in [false, true] {
            assert_eq!(Backend::for_features(all, sha_ni), vector(Backend::Avx512));
        }
        assert_eq!(Backend::for_features(avx2, false), vector(Backend::Avx2));
        assert_eq!(Backend::for_features(avx2, true), vector(Backend::ShaNi));
        assert_eq!(
            Backend::for_features(Features::NONE, true),
            vector(Backend::ShaNi)
        );
        assert_eq!(
            Backend::for_features(Features::NONE, false),
            Backend::Portable
        );
        assert!(backends_here().any(|b| b == Backend::best()));
    }

    #[test]
    fn live_lanes_are_advanced() {
        let block: BlockX16 =
            std::array::from_fn(|t| std::array::from_fn(|l| (t * 1_000_003 + l * 7919) as u32));
        let start: StateX16 =
            std::array::from_fn(|w| std::array::from_fn(|l| (w * 65_537 + l * 257) as u32));
        let mut want = start;
        compress_x16_portable(&mut want, &block);
        for backend in backends_here() {
            for live in 0..=LANES {
                let mut s = start;
                compress_live_on(backend, &mut s, &block, live);
                for l in 0..live {
                    assert_eq!(lane_state(&s, l), lane_state(&want, l), "{live} {l}");
                }
            }
        }
    }

    #[test]
    fn sixteen_messages_hash_like_sha2() {
        // one padded block per lane: message of lane l = l bytes of value l
        let mut block: BlockX16 = [[0; LANES]; 16];
        for l in 0..LANES {
            let mut b = [0u8; 64];
            b[..l].fill(l as u8);
            b[l] = 0x80;
            b[56..].copy_from_slice(&((l as u64) * 8).to_be_bytes());
            for t in 0..16 {
                block[t][l] = u32::from_be_bytes(b[4 * t..4 * t + 4].try_into().unwrap());
            }
        }
        for backend in backends_here() {
            let mut s = splat_state(&IV);
            compress_x16_on(backend, &mut s, &block);
            for l in 0..LANES {
                let want = Sha256::digest(vec![l as u8; l]);
                let got: Vec<u8> = lane_state(&s, l)
                    .iter()
                    .flat_map(|w| w.to_be_bytes())
                    .collect();
                assert_eq!(&got[..], &want[..], "lane {l}, backend {}", backend.name());
            }
        }
    }
}
