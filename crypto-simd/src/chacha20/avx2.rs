//! ChaCha20 on AVX2, eight blocks at a time in the column layout.
//!
//! `x[i]` holds state word `i` of blocks `8g .. 8g + 8` (lane `j` = block `8g + j`). A quarter
//! round is then four adds, four XORs and four rotates on whole vectors, for eight blocks at
//! once, with no shuffles between the column and diagonal rounds (the `chacha20` crate's AVX2
//! backend keeps two blocks per vector in rows and shuffles between them). AVX2 has no vector
//! rotate: the rotations by 16 and 8 are byte shuffles (`vpshufb`), those by 12 and 7 a shift
//! pair and an OR. After the rounds an 8×8 transpose of 32-bit words per half block
//! (`vpunpck` within 128-bit lanes, then `vperm2i128` across them) gives two vectors per block,
//! ready to XOR into the data. Everything is straight-line arithmetic on the key and counter:
//! no branch or index depends on a secret.

use std::arch::x86_64::*;

/// "expand 32-byte k".
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// Blocks per group.
const GROUP: usize = 8;

/// Rotates each 32-bit word left by a multiple of 8 bits: one byte shuffle with a `mask`
/// from [`rot_masks`].
#[inline]
#[target_feature(enable = "avx2")]
fn rol_bytes(v: __m256i, mask: __m256i) -> __m256i {
    _mm256_shuffle_epi8(v, mask)
}

/// Rotates each 32-bit word left by `L` bits (`R` = 32 − `L`).
#[inline]
#[target_feature(enable = "avx2")]
fn rol<const L: i32, const R: i32>(v: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_slli_epi32::<L>(v), _mm256_srli_epi32::<R>(v))
}

/// Byte-shuffle masks that rotate every 32-bit word left by 16 and by 8.
#[inline]
#[target_feature(enable = "avx2")]
fn rot_masks() -> (__m256i, __m256i) {
    let r16 = _mm256_setr_epi8(
        2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, //
        2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
    );
    let r8 = _mm256_setr_epi8(
        3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14, //
        3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14,
    );
    (r16, r8)
}

#[inline]
#[target_feature(enable = "avx2")]
fn quarter(x: &mut [__m256i; 16], m: (__m256i, __m256i), a: usize, b: usize, c: usize, d: usize) {
    x[a] = _mm256_add_epi32(x[a], x[b]);
    x[d] = rol_bytes(_mm256_xor_si256(x[d], x[a]), m.0);
    x[c] = _mm256_add_epi32(x[c], x[d]);
    x[b] = rol::<12, 20>(_mm256_xor_si256(x[b], x[c]));
    x[a] = _mm256_add_epi32(x[a], x[b]);
    x[d] = rol_bytes(_mm256_xor_si256(x[d], x[a]), m.1);
    x[c] = _mm256_add_epi32(x[c], x[d]);
    x[b] = rol::<7, 25>(_mm256_xor_si256(x[b], x[c]));
}

/// The keystream of eight consecutive blocks starting at block `first`: two vectors per block
/// (`out[2j]` its first 32 bytes, `out[2j + 1]` the rest).
#[inline]
#[target_feature(enable = "avx2")]
fn group(init: &[__m256i; 16], first: u32) -> [__m256i; 16] {
    let mut start = *init;
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    start[12] = _mm256_add_epi32(_mm256_set1_epi32(first as i32), lanes);
    let m = rot_masks();
    let mut x = start;
    for _ in 0..10 {
        quarter(&mut x, m, 0, 4, 8, 12);
        quarter(&mut x, m, 1, 5, 9, 13);
        quarter(&mut x, m, 2, 6, 10, 14);
        quarter(&mut x, m, 3, 7, 11, 15);
        quarter(&mut x, m, 0, 5, 10, 15);
        quarter(&mut x, m, 1, 6, 11, 12);
        quarter(&mut x, m, 2, 7, 8, 13);
        quarter(&mut x, m, 3, 4, 9, 14);
    }
    for i in 0..16 {
        x[i] = _mm256_add_epi32(x[i], start[i]);
    }
    let lo = transpose(x[..8].try_into().expect("8 words"));
    let hi = transpose(x[8..].try_into().expect("8 words"));
    std::array::from_fn(|i| if i % 2 == 0 { lo[i / 2] } else { hi[i / 2] })
}

/// Word-major to block-major for eight words: lane `j` of input `i` becomes word `i` of
/// output `j`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose(x: &[__m256i; 8]) -> [__m256i; 8] {
    // Within each 128-bit lane L, a 4×4 transpose of each half: u[4h + r] holds words
    // 4h..4h+4 of block r (low lane) and of block 4 + r (high lane).
    let mut u = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let t0 = _mm256_unpacklo_epi32(x[4 * h], x[4 * h + 1]);
        let t1 = _mm256_unpackhi_epi32(x[4 * h], x[4 * h + 1]);
        let t2 = _mm256_unpacklo_epi32(x[4 * h + 2], x[4 * h + 3]);
        let t3 = _mm256_unpackhi_epi32(x[4 * h + 2], x[4 * h + 3]);
        u[4 * h] = _mm256_unpacklo_epi64(t0, t2);
        u[4 * h + 1] = _mm256_unpackhi_epi64(t0, t2);
        u[4 * h + 2] = _mm256_unpacklo_epi64(t1, t3);
        u[4 * h + 3] = _mm256_unpackhi_epi64(t1, t3);
    }
    // Block r is the low lanes of u[r] and u[4 + r]; block 4 + r their high lanes.
    let mut out = [_mm256_setzero_si256(); 8];
    for r in 0..4 {
        out[r] = _mm256_permute2x128_si256::<0x20>(u[r], u[4 + r]);
        out[4 + r] = _mm256_permute2x128_si256::<0x31>(u[r], u[4 + r]);
    }
    out
}

/// XORs the keystream for `key` (zero nonce, counter from 0) into `data`.
///
/// # Safety
/// The CPU must support AVX2 ([`super::xor_keystream`] calls it only for
/// [`super::Backend::Avx2`]).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn xor_keystream(key: &[u8; 32], data: &mut [u8]) {
    let mut init = [_mm256_setzero_si256(); 16];
    for (i, &c) in SIGMA.iter().enumerate() {
        init[i] = _mm256_set1_epi32(c as i32);
    }
    for (i, k) in key.chunks_exact(4).enumerate() {
        let w = u32::from_le_bytes(k.try_into().expect("4 bytes"));
        init[4 + i] = _mm256_set1_epi32(w as i32);
    }
    // Words 13..16 (the nonce) stay zero; word 12 (the counter) is set per group.
    let mut chunks = data.chunks_exact_mut(64 * GROUP);
    let mut first = 0u32;
    for chunk in &mut chunks {
        let ks = group(&init, first);
        for (half, k) in chunk.chunks_exact_mut(32).zip(ks) {
            let p = half.as_mut_ptr().cast::<__m256i>();
            // SAFETY: `half` is 32 bytes, in bounds; loadu/storeu need no alignment.
            unsafe { _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), k)) };
        }
        first = first.wrapping_add(GROUP as u32);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let ks = group(&init, first);
        let mut buf = [0u8; 64 * GROUP];
        for (b, k) in buf.chunks_exact_mut(32).zip(ks) {
            // SAFETY: `b` is 32 bytes, in bounds; storeu needs no alignment.
            unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), k) };
        }
        for (d, k) in rest.iter_mut().zip(buf.iter()) {
            *d ^= k;
        }
    }
    // Best effort: overwrite the key-derived words before the frame is released. (The
    // keystream left in `buf` is not key material, see `super::xor_keystream_crate`.)
    init = [_mm256_setzero_si256(); 16];
    std::hint::black_box(&init);
}
