//! Multi-buffer BLAKE2b on AVX-512: eight messages of equal length, one per 64-bit lane of a
//! `__m512i`. Same layout as the AVX2 version ([`super::avx2`]) with twice the lanes, and the
//! rotations are single `vprorq` instructions instead of shuffles.

use std::arch::x86_64::*;

use super::{IV, SIGMA};

const BLOCK: usize = 128;
const LANES: usize = 8;

/// Safe entry point; [`super::mac32_x8`] only calls it after detecting AVX-512 F and checking
/// the eight lengths are equal.
pub(super) fn mac32_x8(keys: [&[u8; 64]; LANES], data: [&[u8]; LANES]) -> [[u8; 32]; LANES] {
    assert!(
        crate::cpu::in_force().avx512f,
        "AVX-512 BLAKE2b on a CPU without AVX-512 F"
    );
    let len = data[0].len();
    assert!(data.iter().all(|d| d.len() == len), "equal lengths");
    // SAFETY: AVX-512 F support was checked just above.
    unsafe { mac32_x8_avx512(keys, data) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn g(v: &mut [__m512i; 16], a: usize, b: usize, c: usize, d: usize, x: __m512i, y: __m512i) {
    // indices are constants below 16
    {
        v[a] = _mm512_add_epi64(_mm512_add_epi64(v[a], v[b]), x);
        v[d] = _mm512_ror_epi64::<32>(_mm512_xor_si512(v[d], v[a]));
        v[c] = _mm512_add_epi64(v[c], v[d]);
        v[b] = _mm512_ror_epi64::<24>(_mm512_xor_si512(v[b], v[c]));
        v[a] = _mm512_add_epi64(_mm512_add_epi64(v[a], v[b]), y);
        v[d] = _mm512_ror_epi64::<16>(_mm512_xor_si512(v[d], v[a]));
        v[c] = _mm512_add_epi64(v[c], v[d]);
        v[b] = _mm512_ror_epi64::<63>(_mm512_xor_si512(v[b], v[c]));
    }
}

/// Loads word `i` of eight blocks into one vector (lane j = block j): two 8×8 transposes of
/// 64-bit words (`vpunpck{l,h}qdq`, then two rounds of `vshufi64x2`), 48 shuffles per block.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose(blocks: [&[u8; BLOCK]; LANES], m: &mut [__m512i; 16]) {
    for half in 0..2 {
        // r[j] = words 8 * half .. 8 * half + 8 of block j.
        let r: [__m512i; LANES] = std::array::from_fn(|j| {
            let row: &[u8; 64] = blocks[j][64 * half..64 * half + 64]
                .try_into()
                .expect("64 bytes");
            // SAFETY: `row` is 64 readable bytes; loadu has no alignment requirement.
            unsafe { _mm512_loadu_si512(row.as_ptr().cast()) }
        });
        // t[2k] / t[2k+1]: even / odd words of blocks 2k and 2k+1, interleaved.
        let t: [__m512i; LANES] = std::array::from_fn(|x| {
            let (a, b) = (r[x & !1], r[x | 1]);
            if x % 2 == 0 {
                _mm512_unpacklo_epi64(a, b)
            } else {
                _mm512_unpackhi_epi64(a, b)
            }
        });
        // Then gather 128-bit lanes: `u(a, b, false)` takes lanes 0 and 2 of `a` and of `b`,
        // `u(a, b, true)` lanes 1 and 3.
        let u = |a: __m512i, b: __m512i, odd: bool| {
            if odd {
                _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b)
            } else {
                _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b)
            }
        };
        // u0/u1: words (0, 4) / (2, 6) of blocks 0..4; u4/u5: the same for blocks 4..8.
        let (u0, u1) = (u(t[0], t[2], false), u(t[0], t[2], true));
        let (u4, u5) = (u(t[4], t[6], false), u(t[4], t[6], true));
        // u2/u3: words (1, 5) / (3, 7) of blocks 0..4; u6/u7: blocks 4..8.
        let (u2, u3) = (u(t[1], t[3], false), u(t[1], t[3], true));
        let (u6, u7) = (u(t[5], t[7], false), u(t[5], t[7], true));
        let base = 8 * half;
        m[base] = u(u0, u4, false);
        m[base + 4] = u(u0, u4, true);
        m[base + 2] = u(u1, u5, false);
        m[base + 6] = u(u1, u5, true);
        m[base + 1] = u(u2, u6, false);
        m[base + 5] = u(u2, u6, true);
        m[base + 3] = u(u3, u7, false);
        m[base + 7] = u(u3, u7, true);
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn compress(h: &mut [__m512i; 8], m: &[__m512i; 16], t: u128, last: bool) {
    {
        let mut v = [_mm512_setzero_si512(); 16];
        v[..8].copy_from_slice(h);
        for i in 0..8 {
            v[8 + i] = _mm512_set1_epi64(IV[i] as i64);
        }
        v[12] = _mm512_xor_si512(v[12], _mm512_set1_epi64(t as i64));
        v[13] = _mm512_xor_si512(v[13], _mm512_set1_epi64((t >> 64) as i64));
        if last {
            v[14] = _mm512_xor_si512(v[14], _mm512_set1_epi64(-1));
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
            h[i] = _mm512_xor_si512(h[i], _mm512_xor_si512(v[i], v[i + 8]));
        }
    }
}

#[target_feature(enable = "avx512f")]
fn mac32_x8_avx512(keys: [&[u8; 64]; LANES], data: [&[u8]; LANES]) -> [[u8; 32]; LANES] {
    let len = data[0].len();
    let mut out = [[0u8; 32]; LANES];
    // parameter block: digest length 32, key length 64, fanout 1, depth 1
    let mut h = [_mm512_setzero_si512(); 8];
    for (i, w) in h.iter_mut().enumerate() {
        let p = if i == 0 {
            0x0101_0000 ^ (64 << 8) ^ 32
        } else {
            0
        };
        *w = _mm512_set1_epi64((IV[i] ^ p) as i64);
    }
    let mut m = [_mm512_setzero_si512(); 16];
    let mut pad = [[0u8; BLOCK]; LANES];
    // the key, zero-padded to a block, is the first block
    for j in 0..LANES {
        pad[j][..64].copy_from_slice(keys[j]);
    }
    transpose(std::array::from_fn(|j| &pad[j]), &mut m);
    let mut t = BLOCK as u128;
    compress(&mut h, &m, t, len == 0);
    if len > 0 {
        let full = (len - 1) / BLOCK;
        for b in 0..full {
            let at = b * BLOCK;
            let blk = |j: usize| -> &[u8; BLOCK] {
                data[j][at..at + BLOCK].try_into().expect("full block")
            };
            transpose(std::array::from_fn(blk), &mut m);
            t += BLOCK as u128;
            compress(&mut h, &m, t, false);
        }
        let rest = len - full * BLOCK;
        for j in 0..LANES {
            pad[j] = [0u8; BLOCK];
            pad[j][..rest].copy_from_slice(&data[j][full * BLOCK..]);
        }
        transpose(std::array::from_fn(|j| &pad[j]), &mut m);
        t += rest as u128;
        compress(&mut h, &m, t, true);
    }
    for p in pad.iter_mut() {
        p.fill(0);
    }
    // lane j of h[0..4] is message j's 32-byte output
    let mut words = [[0u64; LANES]; 4];
    for (i, w) in words.iter_mut().enumerate() {
        // SAFETY: `w` is 64 writable bytes; storeu has no alignment requirement.
        unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), h[i]) };
    }
    for (j, o) in out.iter_mut().enumerate() {
        for i in 0..4 {
            o[8 * i..8 * i + 8].copy_from_slice(&words[i][j].to_le_bytes());
        }
    }
    out
}
