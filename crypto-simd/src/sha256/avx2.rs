//! SHA-256 compression of eight word-sliced blocks with AVX2: lane `j` of every `__m256i`
//! belongs to message `j` of the half ([`Half`]) of the sixteen-lane rows being advanced.
//!
//! AVX2 has no vector rotate and no three-input logic instruction: each rotation is a shift
//! pair, Σ and σ are XORs of those, Ch is `((f ^ g) & e) ^ g` and Maj `((a ^ b) & (b ^ c)) ^ b`.
//! All of it is straight-line arithmetic on the data; no branch or index depends on it.

use std::arch::x86_64::*;

use super::{BlockX16, K, StateX16};

/// Lanes per vector.
const X8: usize = 8;

/// Which eight of the sixteen lanes of a word-sliced row a call advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Half {
    /// Lanes 0..8.
    Low,
    /// Lanes 8..16.
    High,
}

impl Half {
    fn offset(self) -> usize {
        match self {
            Half::Low => 0,
            Half::High => X8,
        }
    }
}

/// Advances the eight states of `half` by their lanes' blocks; the other lanes are untouched.
/// Safe entry point: [`super::compress_x16`] only calls it when the features in force include
/// AVX2.
pub(super) fn compress_x8(state: &mut StateX16, block: &BlockX16, half: Half) {
    assert!(
        crate::cpu::in_force().avx2,
        "AVX2 SHA-256 on a CPU without AVX2"
    );
    // SAFETY: AVX2 support was checked just above.
    unsafe { compress_x8_avx2(state, block, half.offset()) }
}

/// Eight words of `row` from `at`.
#[inline]
#[target_feature(enable = "avx2")]
fn load(row: &[u32], at: usize) -> __m256i {
    let row = &row[at..at + X8];
    // SAFETY: `row` is 32 readable bytes (the slice above is bounds-checked); loadu has no
    // alignment requirement.
    unsafe { _mm256_loadu_si256(row.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn store(row: &mut [u32], at: usize, v: __m256i) {
    let row = &mut row[at..at + X8];
    // SAFETY: `row` is 32 writable bytes (the slice above is bounds-checked); storeu has no
    // alignment requirement.
    unsafe { _mm256_storeu_si256(row.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn add(a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(a, b)
}

#[inline]
#[target_feature(enable = "avx2")]
fn xor(a: __m256i, b: __m256i) -> __m256i {
    _mm256_xor_si256(a, b)
}

/// `ror(x, R) ^ ror(x, S) ^ ror(x, T)` (`L*` = 32 − the rotation).
#[inline]
#[target_feature(enable = "avx2")]
fn rot3<const R: i32, const LR: i32, const S: i32, const LS: i32, const T: i32, const LT: i32>(
    x: __m256i,
) -> __m256i {
    let r = xor(
        xor(_mm256_srli_epi32::<R>(x), _mm256_srli_epi32::<S>(x)),
        _mm256_srli_epi32::<T>(x),
    );
    let l = xor(
        xor(_mm256_slli_epi32::<LR>(x), _mm256_slli_epi32::<LS>(x)),
        _mm256_slli_epi32::<LT>(x),
    );
    xor(r, l)
}

/// `ror(x, R) ^ ror(x, S) ^ (x >> T)`: the message schedule's σ.
#[inline]
#[target_feature(enable = "avx2")]
fn small_sigma<const R: i32, const LR: i32, const S: i32, const LS: i32, const T: i32>(
    x: __m256i,
) -> __m256i {
    let r = xor(
        xor(_mm256_srli_epi32::<R>(x), _mm256_srli_epi32::<S>(x)),
        _mm256_srli_epi32::<T>(x),
    );
    let l = xor(_mm256_slli_epi32::<LR>(x), _mm256_slli_epi32::<LS>(x));
    xor(r, l)
}

/// Message word `r` (16 ≤ `r` < 64) into the ring `w` of the last sixteen.
#[inline]
#[target_feature(enable = "avx2")]
fn schedule(w: &mut [__m256i; 16], r: usize) -> __m256i {
    let w2 = w[(r - 2) % 16];
    let w15 = w[(r - 15) % 16];
    let s1 = small_sigma::<17, 15, 19, 13, 10>(w2);
    let s0 = small_sigma::<7, 25, 18, 14, 3>(w15);
    let v = add(add(s1, w[(r - 7) % 16]), add(s0, w[r % 16]));
    w[r % 16] = v;
    v
}

/// Round `8n + I` of the compression, `kw` = K + W of the round. The working variables stay
/// in place and the roles move instead: `s[(8 - I) % 8]` is `a` of this round, and the round
/// writes only `d` (+ T1) and `h` (the new `a`).
#[inline]
#[target_feature(enable = "avx2")]
fn round<const I: usize>(s: &mut [__m256i; 8], kw: __m256i) {
    let at = |j: usize| (j + 8 - I) % 8;
    let (a, b, c, d) = (s[at(0)], s[at(1)], s[at(2)], s[at(3)]);
    let (e, f, g, h) = (s[at(4)], s[at(5)], s[at(6)], s[at(7)]);
    let big_s1 = rot3::<6, 26, 11, 21, 25, 7>(e);
    let ch = xor(_mm256_and_si256(xor(f, g), e), g);
    let t1 = add(add(h, big_s1), add(ch, kw));
    let big_s0 = rot3::<2, 30, 13, 19, 22, 10>(a);
    let maj = xor(_mm256_and_si256(xor(a, b), xor(b, c)), b);
    s[at(3)] = add(d, t1);
    s[at(7)] = add(t1, add(big_s0, maj));
}

/// Eight rounds; after them every variable is back in its place.
#[inline]
#[target_feature(enable = "avx2")]
fn eight_rounds(s: &mut [__m256i; 8], kw: &[__m256i; 8]) {
    round::<0>(s, kw[0]);
    round::<1>(s, kw[1]);
    round::<2>(s, kw[2]);
    round::<3>(s, kw[3]);
    round::<4>(s, kw[4]);
    round::<5>(s, kw[5]);
    round::<6>(s, kw[6]);
    round::<7>(s, kw[7]);
}

#[target_feature(enable = "avx2")]
fn compress_x8_avx2(state: &mut StateX16, block: &BlockX16, at: usize) {
    let mut w: [__m256i; 16] = std::array::from_fn(|t| load(&block[t], at));
    let init: [__m256i; 8] = std::array::from_fn(|i| load(&state[i], at));
    let mut s = init;
    for n in 0..8 {
        let kw: [__m256i; 8] = std::array::from_fn(|j| {
            let r = 8 * n + j;
            let wt = if r < 16 { w[r] } else { schedule(&mut w, r) };
            add(_mm256_set1_epi32(K[r] as i32), wt)
        });
        eight_rounds(&mut s, &kw);
    }
    for i in 0..8 {
        store(&mut state[i], at, add(init[i], s[i]));
    }
}
