//! Multi-buffer BLAKE2b on AVX2: four messages of equal length, one per 64-bit lane. State word
//! `v[i]` of all four messages lives in one `__m256i`; G runs on whole vectors, so a block of
//! four messages costs about what one block of one message costs in scalar code.

use std::arch::x86_64::*;

use super::{IV, SIGMA};

const BLOCK: usize = 128;

/// Keyed BLAKE2b-256 of four messages of equal length: `out[j] = mac32(keys[j], data[j])`.
///
/// # Safety
/// The CPU must support AVX2 ([`super::mac32_x4`] calls it only when the features in force
/// include it).
///
/// # Panics
/// If the four lengths differ.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn mac32_x4(keys: [&[u8; 64]; 4], data: [&[u8]; 4]) -> [[u8; 32]; 4] {
    let len = data[0].len();
    assert!(data.iter().all(|d| d.len() == len), "equal lengths");
    mac32_x4_avx2(keys, data)
}

#[inline]
#[target_feature(enable = "avx2")]
fn rot32(x: __m256i) -> __m256i {
    _mm256_shuffle_epi32::<0b10_11_00_01>(x)
}

#[inline]
#[target_feature(enable = "avx2")]
fn rot24(x: __m256i) -> __m256i {
    let m = _mm256_setr_epi8(
        3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10, 3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13,
        14, 15, 8, 9, 10,
    );
    _mm256_shuffle_epi8(x, m)
}

#[inline]
#[target_feature(enable = "avx2")]
fn rot16(x: __m256i) -> __m256i {
    let m = _mm256_setr_epi8(
        2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9, 2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12,
        13, 14, 15, 8, 9,
    );
    _mm256_shuffle_epi8(x, m)
}

#[inline]
#[target_feature(enable = "avx2")]
fn rot63(x: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_srli_epi64::<63>(x), _mm256_add_epi64(x, x))
}

/// The mixing function G on whole vectors (indices are constants below 16).
#[inline]
#[target_feature(enable = "avx2")]
fn g(v: &mut [__m256i; 16], a: usize, b: usize, c: usize, d: usize, x: __m256i, y: __m256i) {
    v[a] = _mm256_add_epi64(_mm256_add_epi64(v[a], v[b]), x);
    v[d] = rot32(_mm256_xor_si256(v[d], v[a]));
    v[c] = _mm256_add_epi64(v[c], v[d]);
    v[b] = rot24(_mm256_xor_si256(v[b], v[c]));
    v[a] = _mm256_add_epi64(_mm256_add_epi64(v[a], v[b]), y);
    v[d] = rot16(_mm256_xor_si256(v[d], v[a]));
    v[c] = _mm256_add_epi64(v[c], v[d]);
    v[b] = rot63(_mm256_xor_si256(v[b], v[c]));
}

/// Loads word `i` of four blocks into one vector (lane j = block j).
#[inline]
#[target_feature(enable = "avx2")]
fn transpose(blocks: [&[u8; BLOCK]; 4], m: &mut [__m256i; 16]) {
    for (i, w) in m.iter_mut().enumerate() {
        let r =
            |j: usize| i64::from_le_bytes(blocks[j][8 * i..8 * i + 8].try_into().expect("8 bytes"));
        *w = _mm256_set_epi64x(r(3), r(2), r(1), r(0));
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn compress(h: &mut [__m256i; 8], m: &[__m256i; 16], t: u128, last: bool) {
    let mut v = [_mm256_setzero_si256(); 16];
    v[..8].copy_from_slice(h);
    for i in 0..8 {
        v[8 + i] = _mm256_set1_epi64x(IV[i] as i64);
    }
    v[12] = _mm256_xor_si256(v[12], _mm256_set1_epi64x(t as i64));
    v[13] = _mm256_xor_si256(v[13], _mm256_set1_epi64x((t >> 64) as i64));
    if last {
        v[14] = _mm256_xor_si256(v[14], _mm256_set1_epi64x(-1));
    }
    for s in &SIGMA {
        g(&mut v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
        g(&mut v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
        g(&mut v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
        g(&mut v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
        g(&mut v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
        g(&mut v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
        g(&mut v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
        g(&mut v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for i in 0..8 {
        h[i] = _mm256_xor_si256(h[i], _mm256_xor_si256(v[i], v[i + 8]));
    }
}

/// The four 64-bit lanes of `v`.
#[inline]
#[target_feature(enable = "avx2")]
fn to_lanes(v: __m256i) -> [u64; 4] {
    // SAFETY: `__m256i` and `[u64; 4]` have the same size and every bit pattern is valid for
    // both.
    unsafe { core::mem::transmute::<__m256i, [u64; 4]>(v) }
}

#[target_feature(enable = "avx2")]
fn mac32_x4_avx2(keys: [&[u8; 64]; 4], data: [&[u8]; 4]) -> [[u8; 32]; 4] {
    let len = data[0].len();
    let mut out = [[0u8; 32]; 4];
    {
        // parameter block: digest length 32, key length 64, fanout 1, depth 1
        let mut h = [_mm256_setzero_si256(); 8];
        for (i, w) in h.iter_mut().enumerate() {
            let p = if i == 0 {
                0x0101_0000 ^ (64 << 8) ^ 32
            } else {
                0
            };
            *w = _mm256_set1_epi64x((IV[i] ^ p) as i64);
        }
        let mut m = [_mm256_setzero_si256(); 16];
        let mut pad = [[0u8; BLOCK]; 4];
        // the key, zero-padded to a block, is the first block
        for j in 0..4 {
            pad[j][..64].copy_from_slice(keys[j]);
        }
        transpose([&pad[0], &pad[1], &pad[2], &pad[3]], &mut m);
        let mut t = BLOCK as u128;
        compress(&mut h, &m, t, len == 0);
        if len > 0 {
            let full = (len - 1) / BLOCK;
            for b in 0..full {
                let at = b * BLOCK;
                let blk = |j: usize| -> &[u8; BLOCK] {
                    data[j][at..at + BLOCK].try_into().expect("full block")
                };
                transpose([blk(0), blk(1), blk(2), blk(3)], &mut m);
                t += BLOCK as u128;
                compress(&mut h, &m, t, false);
            }
            let rest = len - full * BLOCK;
            for j in 0..4 {
                pad[j] = [0u8; BLOCK];
                pad[j][..rest].copy_from_slice(&data[j][full * BLOCK..]);
            }
            transpose([&pad[0], &pad[1], &pad[2], &pad[3]], &mut m);
            t += rest as u128;
            compress(&mut h, &m, t, true);
        }
        for p in pad.iter_mut() {
            p.fill(0);
        }
        // lane j of h[0..4] is message j's 32-byte output
        let words: [[u64; 4]; 4] = std::array::from_fn(|i| to_lanes(h[i]));
        for (j, o) in out.iter_mut().enumerate() {
            for i in 0..4 {
                o[8 * i..8 * i + 8].copy_from_slice(&words[i][j].to_le_bytes());
            }
        }
    }
    out
}
