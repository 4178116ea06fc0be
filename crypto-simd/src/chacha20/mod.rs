//! ChaCha20 (RFC 8439, 32-bit block counter from 0, all-zero nonce) as Lioness uses it: the
//! keystream XORed into a buffer of a few kilobytes, a fresh key every time.
//!
//! With AVX-512 F ([`Backend::Avx512`]), [`xor_keystream`] runs sixteen blocks at once in the column layout (`avx512`):
//! vector `i` holds state word `i` of sixteen consecutive blocks, so the rounds need no
//! shuffles, and one 16×16 transpose per kilobyte turns the result back into blocks. With AVX2
//! only ([`Backend::Avx2`]) it does the same for eight blocks at once (`avx2`). Without either
//! the `chacha20` crate does the work (its own AVX2 or portable backend), asked only for runs
//! of three or more whole blocks: it makes a lone trailing block with narrow vectors whose
//! rotates it does not inline, which cost as much as the thirty other blocks of a Sphinx
//! payload. Every path gives the crate's keystream byte for byte (tested).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};

/// ChaCha20 blocks per call of the chacha20 crate's widest path, and per AVX-512 group.
const PAR_BLOCKS: usize = 16;

/// The longest buffer the 32-bit block counter covers.
pub const MAX_LEN: u64 = 64 << 32;

/// A ChaCha20 implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Sixteen blocks at a time on AVX-512 F vectors; needs AVX-512 F.
    Avx512,
    /// Eight blocks at a time on AVX2 vectors; needs AVX2.
    Avx2,
    /// The `chacha20` crate, which picks its own SIMD (AVX2 where the CPU has it, whatever the
    /// cap of [`crate::cpu`]); always available.
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
        if cfg!(target_arch = "x86_64") && features.avx512f {
            Backend::Avx512
        } else if cfg!(target_arch = "x86_64") && features.avx2 {
            Backend::Avx2
        } else {
            Backend::Portable
        }
    }

    /// The backend in use: the fastest one the features in force ([`crate::cpu::in_force`])
    /// allow.
    #[inline]
    pub fn best() -> Backend {
        Self::for_features(crate::cpu::in_force())
    }
}

/// XORs the ChaCha20 keystream for `key` (zero nonce, counter from 0) into `data`.
///
/// # Panics
/// If `data` is longer than [`MAX_LEN`] (the block counter would wrap).
pub fn xor_keystream(key: &[u8; 32], data: &mut [u8]) {
    assert!(
        data.len() as u64 <= MAX_LEN,
        "ChaCha20 block counter overflow"
    );
    xor_keystream_with(Backend::best(), key, data);
}

/// [`xor_keystream`] on a given backend; one the CPU lacks falls back to the `chacha20` crate.
fn xor_keystream_with(backend: Backend, key: &[u8; 32], data: &mut [u8]) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 if crate::cpu::detected().avx512f => {
            // SAFETY: checked just above that the CPU has AVX-512 F.
            unsafe { avx512::xor_keystream(key, data) }
        }
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 if crate::cpu::detected().avx2 => {
            // SAFETY: checked just above that the CPU has AVX2.
            unsafe { avx2::xor_keystream(key, data) }
        }
        _ => xor_keystream_crate(key, data),
    }
}

/// The `chacha20` crate's keystream, asked for runs of whole blocks only.
///
/// Everything but the last run of up to sixteen blocks goes through the crate's sixteen-block
/// path directly; that last run (at least three blocks, so it takes the crate's wide path) is
/// generated into a scratch buffer of which only the bytes needed are used. The scratch buffer
/// is not zeroized: keystream is not key material (ChaCha20 output does not reveal the key),
/// and the part used is the XOR of bytes that are in `data` before and after.
pub(crate) fn xor_keystream_crate(key: &[u8; 32], data: &mut [u8]) {
    let mut cipher = ChaCha20::new(key.into(), &[0u8; 12].into());
    let blocks = data.len().div_ceil(64);
    let mut tail = blocks % PAR_BLOCKS;
    if tail == 0 && !data.len().is_multiple_of(64) {
        tail = PAR_BLOCKS;
    }
    let (head, rest) = data.split_at_mut((blocks - tail) * 64);
    cipher.apply_keystream(head);
    if tail == 0 {
        return;
    }
    let mut ks = [0u8; 64 * PAR_BLOCKS];
    let run = &mut ks[..tail.max(3) * 64];
    cipher.apply_keystream(run);
    for (d, k) in rest.iter_mut().zip(run.iter()) {
        *d ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        ChaCha20::new(key.into(), &[0u8; 12].into()).apply_keystream(&mut out);
        out
    }

    #[test]
    fn rfc_8439_keystream_block_1() {
        // RFC 8439 2.4.2 uses counter 1 and a non-zero nonce; with counter 0 and a zero nonce,
        // the all-zero key's first block is the classic test vector below (RFC 7539 A.1 #1).
        let want = [
            0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90, 0x40, 0x5d, 0x6a, 0xe5, 0x53, 0x86,
            0xbd, 0x28, 0xbd, 0xd2, 0x19, 0xb8, 0xa0, 0x8d, 0xed, 0x1a, 0xa8, 0x36, 0xef, 0xcc,
            0x8b, 0x77, 0x0d, 0xc7,
        ];
        let mut block = [0u8; 64];
        xor_keystream(&[0; 32], &mut block);
        assert_eq!(block[..32], want);
        let mut block = [0u8; 64];
        xor_keystream_crate(&[0; 32], &mut block);
        assert_eq!(block[..32], want);
    }

    /// The backends this CPU can run (the others would silently test the crate's path again).
    fn runnable() -> Vec<Backend> {
        let f = crate::cpu::detected();
        Backend::ALL
            .iter()
            .copied()
            .filter(|b| match b {
                Backend::Avx512 => f.avx512f,
                Backend::Avx2 => f.avx2,
                Backend::Portable => true,
            })
            .collect()
    }

    #[test]
    fn every_backend_gives_the_crates_keystream_at_every_length() {
        let backends = runnable();
        for len in 0..=64 * 3 * PAR_BLOCKS + 70 {
            let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + len) as u8);
            let data: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let want = reference(&key, &data);
            let mut got = data.clone();
            xor_keystream(&key, &mut got);
            assert_eq!(got, want, "best backend, len {len}");
            for &b in &backends {
                let mut got = data.clone();
                xor_keystream_with(b, &key, &mut got);
                assert_eq!(got, want, "{} backend, len {len}", b.name());
            }
            let mut got = data.clone();
            xor_keystream_crate(&key, &mut got);
            assert_eq!(got, want, "crate path, len {len}");
        }
    }

    proptest! {
        #[test]
        fn every_backend_agrees_with_the_crate_on_arbitrary_keys_and_data(
            key in proptest::array::uniform32(any::<u8>()),
            data in proptest::collection::vec(any::<u8>(), 0..5000),
        ) {
            let want = reference(&key, &data);
            let mut got = data.clone();
            xor_keystream(&key, &mut got);
            prop_assert_eq!(&got, &want);
            for b in runnable() {
                let mut got = data.clone();
                xor_keystream_with(b, &key, &mut got);
                prop_assert_eq!(&got, &want, "{} backend", b.name());
            }
        }
    }
}
