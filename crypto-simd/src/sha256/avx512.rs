//! SHA-256 compression of sixteen word-sliced blocks with AVX-512 F: lane `l` of every
//! `__m512i` belongs to message `l`. Rotations are single `vprord`s and the three-input boolean
//! functions (Ch, Maj, the three-way XORs of Σ and σ) single `vpternlogd`s.

use std::arch::x86_64::*;

use super::{BlockX16, K, LANES, StateX16};

/// Safe entry point; [`super::compress_x16`] only calls it after detecting AVX-512 F.
pub(super) fn compress_x16(state: &mut StateX16, block: &BlockX16) {
    assert!(
        crate::cpu::in_force().avx512f,
        "AVX-512 SHA-256 on a CPU without AVX-512 F"
    );
    // SAFETY: AVX-512 F support was checked just above.
    unsafe { compress_x16_avx512(state, block) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load(row: &[u32; LANES]) -> __m512i {
    // SAFETY: `row` is 64 readable bytes; loadu has no alignment requirement.
    unsafe { _mm512_loadu_si512(row.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store(row: &mut [u32; LANES], v: __m512i) {
    // SAFETY: `row` is 64 writable bytes; storeu has no alignment requirement.
    unsafe { _mm512_storeu_si512(row.as_mut_ptr().cast(), v) }
}

/// a ^ b ^ c
#[inline]
#[target_feature(enable = "avx512f")]
fn xor3(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0x96>(a, b, c)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn add(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(a, b)
}

#[target_feature(enable = "avx512f")]
fn compress_x16_avx512(state: &mut StateX16, block: &BlockX16) {
    let mut w: [__m512i; 16] = std::array::from_fn(|t| load(&block[t]));
    let init: [__m512i; 8] = std::array::from_fn(|i| load(&state[i]));
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = init;
    for r in 0..64 {
        let wt = if r < 16 {
            w[r]
        } else {
            // w[t] = σ1(w[t-2]) + w[t-7] + σ0(w[t-15]) + w[t-16], in a ring of sixteen
            let w2 = w[(r - 2) % 16];
            let w15 = w[(r - 15) % 16];
            let s1 = xor3(
                _mm512_ror_epi32::<17>(w2),
                _mm512_ror_epi32::<19>(w2),
                _mm512_srli_epi32::<10>(w2),
            );
            let s0 = xor3(
                _mm512_ror_epi32::<7>(w15),
                _mm512_ror_epi32::<18>(w15),
                _mm512_srli_epi32::<3>(w15),
            );
            let v = add(add(s1, w[(r - 7) % 16]), add(s0, w[r % 16]));
            w[r % 16] = v;
            v
        };
        let big_s1 = xor3(
            _mm512_ror_epi32::<6>(e),
            _mm512_ror_epi32::<11>(e),
            _mm512_ror_epi32::<25>(e),
        );
        // Ch(e, f, g) = (e & f) ^ (!e & g): truth table 0xCA over (e, f, g)
        let ch = _mm512_ternarylogic_epi32::<0xCA>(e, f, g);
        let kw = add(_mm512_set1_epi32(K[r] as i32), wt);
        let t1 = add(add(h, big_s1), add(ch, kw));
        let big_s0 = xor3(
            _mm512_ror_epi32::<2>(a),
            _mm512_ror_epi32::<13>(a),
            _mm512_ror_epi32::<22>(a),
        );
        // Maj(a, b, c): truth table 0xE8
        let maj = _mm512_ternarylogic_epi32::<0xE8>(a, b, c);
        let t2 = add(big_s0, maj);
        h = g;
        g = f;
        f = e;
        e = add(d, t1);
        d = c;
        c = b;
        b = a;
        a = add(t1, t2);
    }
    let out = [a, b, c, d, e, f, g, h];
    for i in 0..8 {
        store(&mut state[i], add(init[i], out[i]));
    }
}
