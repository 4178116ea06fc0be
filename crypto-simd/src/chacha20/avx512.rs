//! ChaCha20 on AVX-512 F, sixteen blocks at a time in the column layout.
//!
//! `x[i]` holds state word `i` of blocks `16g .. 16g + 16` (lane `j` = block `16g + j`). A
//! quarter round is then four adds, four XORs and four `vprold` on whole vectors, for sixteen
//! blocks at once, with no shuffles between the column and diagonal rounds. After the rounds a
//! 16×16 transpose of 32-bit words (two `vpunpck` stages within 128-bit lanes, then two
//! `vshufi32x4` stages across them) gives one vector per block, ready to XOR into the data.

use std::arch::x86_64::*;

/// "expand 32-byte k".
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// Blocks per group.
const GROUP: usize = 16;

#[inline]
#[target_feature(enable = "avx512f")]
fn quarter(x: &mut [__m512i; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = _mm512_add_epi32(x[a], x[b]);
    x[d] = _mm512_rol_epi32::<16>(_mm512_xor_si512(x[d], x[a]));
    x[c] = _mm512_add_epi32(x[c], x[d]);
    x[b] = _mm512_rol_epi32::<12>(_mm512_xor_si512(x[b], x[c]));
    x[a] = _mm512_add_epi32(x[a], x[b]);
    x[d] = _mm512_rol_epi32::<8>(_mm512_xor_si512(x[d], x[a]));
    x[c] = _mm512_add_epi32(x[c], x[d]);
    x[b] = _mm512_rol_epi32::<7>(_mm512_xor_si512(x[b], x[c]));
}

/// The keystream of sixteen consecutive blocks starting at block `first`, one vector per block.
#[inline]
#[target_feature(enable = "avx512f")]
fn group(init: &[__m512i; 16], first: u32) -> [__m512i; 16] {
    let mut start = *init;
    let lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    start[12] = _mm512_add_epi32(_mm512_set1_epi32(first as i32), lanes);
    let mut x = start;
    for _ in 0..10 {
        quarter(&mut x, 0, 4, 8, 12);
        quarter(&mut x, 1, 5, 9, 13);
        quarter(&mut x, 2, 6, 10, 14);
        quarter(&mut x, 3, 7, 11, 15);
        quarter(&mut x, 0, 5, 10, 15);
        quarter(&mut x, 1, 6, 11, 12);
        quarter(&mut x, 2, 7, 8, 13);
        quarter(&mut x, 3, 4, 9, 14);
    }
    for i in 0..16 {
        x[i] = _mm512_add_epi32(x[i], start[i]);
    }
    transpose(&x)
}

/// Word-major to block-major: lane `j` of input `i` becomes word `i` of output `j`.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose(x: &[__m512i; 16]) -> [__m512i; 16] {
    // Within each 128-bit lane L: u[4q + r] = words 4q..4q+4 of block 4L + r.
    let mut u = [_mm512_setzero_si512(); 16];
    for q in 0..4 {
        let t0 = _mm512_unpacklo_epi32(x[4 * q], x[4 * q + 1]);
        let t1 = _mm512_unpackhi_epi32(x[4 * q], x[4 * q + 1]);
        let t2 = _mm512_unpacklo_epi32(x[4 * q + 2], x[4 * q + 3]);
        let t3 = _mm512_unpackhi_epi32(x[4 * q + 2], x[4 * q + 3]);
        u[4 * q] = _mm512_unpacklo_epi64(t0, t2);
        u[4 * q + 1] = _mm512_unpackhi_epi64(t0, t2);
        u[4 * q + 2] = _mm512_unpacklo_epi64(t1, t3);
        u[4 * q + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    // Block 4L + r is lane L of u[r], u[4 + r], u[8 + r], u[12 + r]: a 4×4 transpose of
    // 128-bit lanes.
    let mut out = [_mm512_setzero_si512(); 16];
    for r in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(u[r], u[4 + r]);
        let v1 = _mm512_shuffle_i32x4::<0b11_10_11_10>(u[r], u[4 + r]);
        let v2 = _mm512_shuffle_i32x4::<0b01_00_01_00>(u[8 + r], u[12 + r]);
        let v3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(u[8 + r], u[12 + r]);
        out[r] = _mm512_shuffle_i32x4::<0b10_00_10_00>(v0, v2);
        out[4 + r] = _mm512_shuffle_i32x4::<0b11_01_11_01>(v0, v2);
        out[8 + r] = _mm512_shuffle_i32x4::<0b10_00_10_00>(v1, v3);
        out[12 + r] = _mm512_shuffle_i32x4::<0b11_01_11_01>(v1, v3);
    }
    out
}

/// XORs the keystream for `key` (zero nonce, counter from 0) into `data`.
///
/// # Safety
/// The CPU must support AVX-512 F ([`super::xor_keystream`] calls it only for
/// [`super::Backend::Avx512`]).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn xor_keystream(key: &[u8; 32], data: &mut [u8]) {
    let mut init = [_mm512_setzero_si512(); 16];
    for (i, &c) in SIGMA.iter().enumerate() {
        init[i] = _mm512_set1_epi32(c as i32);
    }
    for (i, k) in key.chunks_exact(4).enumerate() {
        let w = u32::from_le_bytes(k.try_into().expect("4 bytes"));
        init[4 + i] = _mm512_set1_epi32(w as i32);
    }
    // Words 13..16 (the nonce) stay zero; word 12 (the counter) is set per group.
    let mut chunks = data.chunks_exact_mut(64 * GROUP);
    let mut first = 0u32;
    for chunk in &mut chunks {
        let ks = group(&init, first);
        for (block, k) in chunk.chunks_exact_mut(64).zip(ks) {
            let p = block.as_mut_ptr().cast::<__m512i>();
            // SAFETY: `block` is 64 bytes, in bounds; loadu/storeu need no alignment.
            unsafe { _mm512_storeu_si512(p, _mm512_xor_si512(_mm512_loadu_si512(p), k)) };
        }
        first = first.wrapping_add(GROUP as u32);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let ks = group(&init, first);
        let mut buf = [0u8; 64 * GROUP];
        for (b, k) in buf.chunks_exact_mut(64).zip(ks) {
            // SAFETY: `b` is 64 bytes, in bounds; storeu needs no alignment.
            unsafe { _mm512_storeu_si512(b.as_mut_ptr().cast(), k) };
        }
        for (d, k) in rest.iter_mut().zip(buf.iter()) {
            *d ^= k;
        }
    }
    // Best effort: overwrite the key-derived words before the frame is released. (The
    // keystream left in `buf` is not key material, see `super::xor_keystream_crate`.)
    init = [_mm512_setzero_si512(); 16];
    std::hint::black_box(&init);
}
