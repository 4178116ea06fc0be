//! SHA-256 compression through the SHA extensions (SHA-NI), [`GROUP`] lanes interleaved.
//!
//! One SHA-NI compression is a chain of 32 `sha256rnds2`, each waiting for the one before, so
//! a single message leaves the unit idle most of the time (the `sha2` crate, one block at a
//! time, runs at that latency). Lanes are independent: this code advances [`GROUP`] of them
//! step by step side by side, so their chains overlap. Each lane is gathered from the
//! word-sliced rows into the extensions' layout (`ABEF`/`CDGH` state halves, message words in
//! rising dword order) and scattered back. Straight-line code on the data: no branch or index
//! depends on it.

use std::arch::x86_64::*;

use super::{BlockX16, K, LANES, StateX16};

/// Lanes advanced side by side.
pub(super) const GROUP: usize = 2;

/// Advances the states of lanes `0..live` (rounded up to a whole group) by their lanes'
/// blocks. Safe entry point: [`super::compress_live_on`] only calls it when
/// [`crate::cpu::sha_ni`] says SHA-NI is there.
pub(super) fn compress(state: &mut StateX16, block: &BlockX16, live: usize) {
    assert!(crate::cpu::sha_ni(), "SHA-NI SHA-256 on a CPU without it");
    for first in (0..live.min(LANES)).step_by(GROUP) {
        // SAFETY: SHA-NI (with SSSE3 and SSE4.1, which every CPU with it has, and which
        // `cpu::sha_ni` checks too) was checked just above.
        unsafe { compress_group(state, block, first) }
    }
}

/// The state of lane `l` as (`ABEF`, `CDGH`), `A` in the top dword.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn load_state(state: &StateX16, l: usize) -> (__m128i, __m128i) {
    let w = |i: usize| state[i][l] as i32;
    (
        _mm_set_epi32(w(0), w(1), w(4), w(5)),
        _mm_set_epi32(w(2), w(3), w(6), w(7)),
    )
}

#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn store_state(state: &mut StateX16, l: usize, abef: __m128i, cdgh: __m128i) {
    let (a, b) = (_mm_extract_epi32::<3>(abef), _mm_extract_epi32::<2>(abef));
    let (e, f) = (_mm_extract_epi32::<1>(abef), _mm_extract_epi32::<0>(abef));
    let (c, d) = (_mm_extract_epi32::<3>(cdgh), _mm_extract_epi32::<2>(cdgh));
    let (g, h) = (_mm_extract_epi32::<1>(cdgh), _mm_extract_epi32::<0>(cdgh));
    for (i, v) in [a, b, c, d, e, f, g, h].into_iter().enumerate() {
        state[i][l] = v as u32;
    }
}

/// Message words `4q .. 4q + 4` of lane `l`, word `4q` in the lowest dword.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn load_words(block: &BlockX16, l: usize, q: usize) -> __m128i {
    let w = |t: usize| block[4 * q + t][l] as i32;
    _mm_set_epi32(w(3), w(2), w(1), w(0))
}

/// K of rounds `4q .. 4q + 4`.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn k4(q: usize) -> __m128i {
    let k = |t: usize| K[4 * q + t] as i32;
    _mm_set_epi32(k(3), k(2), k(1), k(0))
}

/// Four rounds: `wk` holds W + K of them.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn four_rounds(abef: &mut __m128i, cdgh: &mut __m128i, wk: __m128i) {
    // Two rounds turn ABEF into the next CDGH; the second call uses the upper two W + K.
    *cdgh = _mm_sha256rnds2_epu32(*cdgh, *abef, wk);
    *abef = _mm_sha256rnds2_epu32(*abef, *cdgh, _mm_shuffle_epi32::<0x0E>(wk));
}

/// The next four message words from the last sixteen `w` (oldest first).
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn next_words(w: &[__m128i; 4]) -> __m128i {
    // W[t-16] + σ0(W[t-15]), plus W[t-7], then + σ1(W[t-2]) in order
    let partial = _mm_add_epi32(
        _mm_sha256msg1_epu32(w[0], w[1]),
        _mm_alignr_epi8::<4>(w[3], w[2]),
    );
    _mm_sha256msg2_epu32(partial, w[3])
}

#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn compress_group(state: &mut StateX16, block: &BlockX16, first: usize) {
    let lane = |g: usize| (first + g).min(LANES - 1);
    let init: [(__m128i, __m128i); GROUP] = std::array::from_fn(|g| load_state(state, lane(g)));
    let mut s = init;
    let mut w: [[__m128i; 4]; GROUP] =
        std::array::from_fn(|g| std::array::from_fn(|q| load_words(block, lane(g), q)));
    for q in 0..16 {
        let k = k4(q);
        for g in 0..GROUP {
            let words = if q < 4 {
                w[g][q]
            } else {
                let v = next_words(&w[g]);
                w[g] = [w[g][1], w[g][2], w[g][3], v];
                v
            };
            let (abef, cdgh) = &mut s[g];
            four_rounds(abef, cdgh, _mm_add_epi32(words, k));
        }
    }
    for g in (0..GROUP).filter(|g| first + g < LANES) {
        let (abef, cdgh) = (&s[g].0, &s[g].1);
        let abef = _mm_add_epi32(*abef, init[g].0);
        let cdgh = _mm_add_epi32(*cdgh, init[g].1);
        store_state(state, first + g, abef, cdgh);
    }
}
