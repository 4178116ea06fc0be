//! The AVX-512 IFMA backend: eight independent Montgomery ladders side by side per vector, and
//! one or two such groups per kernel call (two run interleaved, operation by operation).
//!
//! Field elements are held in radix 2^52: five limbs, and each limb is one `__m512i` whose eight
//! 64-bit elements belong to eight different lanes (independent X25519 computations). Products
//! use `vpmadd52luq` / `vpmadd52huq`, which multiply the low 52 bits of their inputs, so every
//! value fed to a multiplication has all five limbs strictly below 2^52.
//!
//! Representation invariants (all limbs unsigned):
//! * "reduced" (output of [`mul`], [`sqr`], [`mul_a24_add`]): limbs 0..=3 < 2^52, limb 4 <
//!   2^47 + 2^6; the value is below 2^255 + 2^214.
//! * "sum" (output of [`add`], [`sub`] applied to reduced inputs): limbs 0..=3 < 2^52, limb 4 <
//!   2^50. Valid as multiplication input, not as the subtrahend of [`sub`].
//!
//! For radix 2^52 the 104-bit product of limbs `i` and `j` has its low half at position `i + j`
//! and its high half at position `i + j + 1`. Positions 5..=9 are folded down with
//! 2^260 = 2^5 * 2^255 ≡ 32 * 19 = 608 (mod p), and the part of limb 4 above bit 47 (bit 255 of
//! the value) with 2^255 ≡ 19.
//!
//! Constant time: every lane runs the same instruction stream; the conditional swap uses a
//! per-lane mask register (`vpblendmq`) derived from the scalar bits, and nothing branches on or
//! indexes memory by secret data. No work is shared between lanes (no batch inversion).

use std::arch::x86_64::*;

/// Lanes per kernel call.
pub(super) const LANES: usize = 8;

const MASK52: u64 = (1 << 52) - 1;
const MASK47: u64 = (1 << 47) - 1;

/// One field element in each of eight lanes.
#[derive(Clone, Copy)]
struct Fe([__m512i; 5]);

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn splat(x: u64) -> __m512i {
    _mm512_set1_epi64(x as i64)
}

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn fe_const(limbs: [u64; 5]) -> Fe {
    Fe(limbs.map(|l| splat(l)))
}

/// Propagates carries from limb 0 up to limb 4 (limb 4 keeps its excess).
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn carry_chain(r: &mut [__m512i; 5]) {
    let m = splat(MASK52);
    for k in 0..4 {
        r[k + 1] = _mm512_add_epi64(r[k + 1], _mm512_srli_epi64::<52>(r[k]));
        r[k] = _mm512_and_si512(r[k], m);
    }
}

/// Reduces a six-position accumulator (`r5` at weight 2^260, each `r[k]` < 2^58) to the
/// "reduced" form: the part at or above 2^255 is folded back with 19 before one carry chain.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn finish(mut r: [__m512i; 5], r5: __m512i) -> Fe {
    // top = floor(value / 2^255) restricted to limbs 4 and 5: (r4 >> 47) + r5 * 2^5 (< 2^16).
    let top = _mm512_add_epi64(_mm512_srli_epi64::<47>(r[4]), _mm512_slli_epi64::<5>(r5));
    r[4] = _mm512_and_si512(r[4], splat(MASK47));
    r[0] = _mm512_madd52lo_epu64(r[0], top, splat(19));
    carry_chain(&mut r);
    Fe(r)
}

/// Folds a ten-column product (`c[k]` < 2^57 at weight 2^(52k)) and reduces it.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn reduce_product(mut c: [__m512i; 10]) -> Fe {
    // Columns 5..=9 are multiplied by 608 with IFMA, which only reads their low 52 bits:
    // carry everything above bit 52 one column up first.
    for k in 5..9 {
        c[k + 1] = _mm512_add_epi64(c[k + 1], _mm512_srli_epi64::<52>(c[k]));
    }
    let c10 = _mm512_srli_epi64::<52>(c[9]); // < 2^6, weight 2^520 ≡ 608^2
    let k608 = splat(608);
    let mut r = [c[0], c[1], c[2], c[3], c[4]];
    for k in 5..9 {
        r[k - 5] = _mm512_madd52lo_epu64(r[k - 5], c[k], k608);
        r[k - 4] = _mm512_madd52hi_epu64(r[k - 4], c[k], k608);
    }
    r[4] = _mm512_madd52lo_epu64(r[4], c[9], k608);
    let r5 = _mm512_madd52hi_epu64(_mm512_setzero_si512(), c[9], k608);
    r[0] = _mm512_madd52lo_epu64(r[0], c10, splat(608 * 608));
    finish(r, r5)
}

/// `a * b`; inputs have limbs < 2^52.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn mul(a: &Fe, b: &Fe) -> Fe {
    let z = _mm512_setzero_si512();
    let mut c = [z; 10];
    for i in 0..5 {
        for j in 0..5 {
            c[i + j] = _mm512_madd52lo_epu64(c[i + j], a.0[i], b.0[j]);
            c[i + j + 1] = _mm512_madd52hi_epu64(c[i + j + 1], a.0[i], b.0[j]);
        }
    }
    reduce_product(c)
}

/// `a^2`; input limbs < 2^52.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn sqr(a: &Fe) -> Fe {
    let z = _mm512_setzero_si512();
    let mut c = [z; 10];
    for i in 0..5 {
        for j in (i + 1)..5 {
            c[i + j] = _mm512_madd52lo_epu64(c[i + j], a.0[i], a.0[j]);
            c[i + j + 1] = _mm512_madd52hi_epu64(c[i + j + 1], a.0[i], a.0[j]);
        }
    }
    // Cross products land in columns 1..=8 only.
    for v in c[1..9].iter_mut() {
        *v = _mm512_add_epi64(*v, *v);
    }
    for i in 0..5 {
        c[2 * i] = _mm512_madd52lo_epu64(c[2 * i], a.0[i], a.0[i]);
        c[2 * i + 1] = _mm512_madd52hi_epu64(c[2 * i + 1], a.0[i], a.0[i]);
    }
    reduce_product(c)
}

/// `a + b` for reduced inputs.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn add(a: &Fe, b: &Fe) -> Fe {
    let mut r: [__m512i; 5] = core::array::from_fn(|k| _mm512_add_epi64(a.0[k], b.0[k]));
    carry_chain(&mut r);
    Fe(r)
}

/// 2p with limbs redistributed so each limb exceeds any reduced subtrahend limb:
/// (2^53 - 38) + (2^53 - 2)(2^52 + 2^104 + 2^156) + (2^48 - 2) 2^208 = 2^256 - 38.
const TWO_P: [u64; 5] = [
    (1 << 53) - 38,
    (1 << 53) - 2,
    (1 << 53) - 2,
    (1 << 53) - 2,
    (1 << 48) - 2,
];

/// `a - b` (computed as `a + 2p - b`) for reduced inputs.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn sub(a: &Fe, b: &Fe) -> Fe {
    let mut r: [__m512i; 5] = core::array::from_fn(|k| {
        _mm512_sub_epi64(_mm512_add_epi64(a.0[k], splat(TWO_P[k])), b.0[k])
    });
    carry_chain(&mut r);
    Fe(r)
}

/// `aa + 121665 * e` (RFC 7748's a24) for reduced `aa` and sum-form `e`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn mul_a24_add(e: &Fe, aa: &Fe) -> Fe {
    let a24 = splat(121_665);
    let mut r = aa.0;
    let mut r5 = _mm512_setzero_si512();
    for k in 0..5 {
        r[k] = _mm512_madd52lo_epu64(r[k], e.0[k], a24);
        if k < 4 {
            r[k + 1] = _mm512_madd52hi_epu64(r[k + 1], e.0[k], a24);
        } else {
            r5 = _mm512_madd52hi_epu64(r5, e.0[k], a24);
        }
    }
    finish(r, r5)
}

/// Swaps `a` and `b` in the lanes whose bit in `mask` is set.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn cswap(mask: __mmask8, a: &mut Fe, b: &mut Fe) {
    for k in 0..5 {
        let x = a.0[k];
        let y = b.0[k];
        a.0[k] = _mm512_mask_blend_epi64(mask, x, y);
        b.0[k] = _mm512_mask_blend_epi64(mask, y, x);
    }
}

/// `f` applied to each group's element, groups interleaved instruction by instruction.
macro_rules! each {
    (|$g:ident| $e:expr) => {
        core::array::from_fn(|$g| $e)
    };
}

/// `a^(2^n)` in every group.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn sqr_n<const G: usize>(a: &[Fe; G], n: u32) -> [Fe; G] {
    let mut t: [Fe; G] = each!(|g| sqr(&a[g]));
    for _ in 1..n {
        t = each!(|g| sqr(&t[g]));
    }
    t
}

/// `a * b` in every group.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn mul_g<const G: usize>(a: &[Fe; G], b: &[Fe; G]) -> [Fe; G] {
    each!(|g| mul(&a[g], &b[g]))
}

/// `z^(p-2) = z^(2^255 - 21)` by the usual fixed chain (254 squarings, 11 multiplications).
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn invert<const G: usize>(z: &[Fe; G]) -> [Fe; G] {
    let t0 = sqr_n(z, 1); // 2
    let t1 = sqr_n(&t0, 2); // 8
    let t1 = mul_g(z, &t1); // 9
    let t0 = mul_g(&t0, &t1); // 11
    let t2 = sqr_n(&t0, 1); // 22
    let t1 = mul_g(&t1, &t2); // 2^5 - 1
    let t2 = sqr_n(&t1, 5);
    let t1 = mul_g(&t2, &t1); // 2^10 - 1
    let t2 = sqr_n(&t1, 10);
    let t2 = mul_g(&t2, &t1); // 2^20 - 1
    let t3 = sqr_n(&t2, 20);
    let t2 = mul_g(&t3, &t2); // 2^40 - 1
    let t2 = sqr_n(&t2, 10);
    let t1 = mul_g(&t2, &t1); // 2^50 - 1
    let t2 = sqr_n(&t1, 50);
    let t2 = mul_g(&t2, &t1); // 2^100 - 1
    let t3 = sqr_n(&t2, 100);
    let t2 = mul_g(&t3, &t2); // 2^200 - 1
    let t2 = sqr_n(&t2, 50);
    let t1 = mul_g(&t2, &t1); // 2^250 - 1
    let t1 = sqr_n(&t1, 5); // 2^255 - 32
    mul_g(&t1, &t0) // 2^255 - 21
}

/// Fully reduces a "reduced"-form element to its canonical representative below p.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn canonical(a: &Fe) -> Fe {
    let m47 = splat(MASK47);
    let k19 = splat(19);
    let mut r = a.0;
    // Fold bit 255 and up: afterwards the value is below 2^255 + 2^208 < 2p.
    let top = _mm512_srli_epi64::<47>(r[4]);
    r[4] = _mm512_and_si512(r[4], m47);
    r[0] = _mm512_madd52lo_epu64(r[0], top, k19);
    carry_chain(&mut r);
    // q = 1 exactly when value >= p, i.e. when value + 19 reaches 2^255.
    let mut t = r;
    t[0] = _mm512_add_epi64(t[0], k19);
    carry_chain(&mut t);
    let q = _mm512_srli_epi64::<47>(t[4]);
    // value - q p = value + 19 q - q 2^255.
    r[0] = _mm512_madd52lo_epu64(r[0], q, k19);
    carry_chain(&mut r);
    r[4] = _mm512_and_si512(r[4], m47);
    Fe(r)
}

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn to_lanes(v: __m512i) -> [u64; 8] {
    // SAFETY: `__m512i` and `[u64; 8]` have the same size and every bit pattern is valid for
    // both.
    unsafe { core::mem::transmute::<__m512i, [u64; 8]>(v) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn from_lanes(v: [u64; 8]) -> __m512i {
    _mm512_set_epi64(
        v[7] as i64,
        v[6] as i64,
        v[5] as i64,
        v[4] as i64,
        v[3] as i64,
        v[2] as i64,
        v[1] as i64,
        v[0] as i64,
    )
}

fn le_words(b: &[u8; 32]) -> [u64; 4] {
    core::array::from_fn(|i| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap()))
}

/// `8 G` X25519 computations, one per lane: `G` groups of eight lanes run their ladders
/// interleaved, operation by operation, so that one group's long dependency chains (a field
/// multiplication is a chain of multiply-adds and carries) overlap with the other's work.
///
/// # Safety
/// The CPU must support AVX-512 F and IFMA (checked by [`super::Backend::is_supported`]).
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) unsafe fn x25519_lanes<const G: usize, const N: usize>(
    scalars: &[[u8; 32]; N],
    points: &[[u8; 32]; N],
    out: &mut [[u8; 32]; N],
) {
    const { assert!(N == G * LANES, "N lanes are G groups of eight") };
    // Transpose the inputs: scalar word w of every lane, point limb k of every lane.
    let mut sw = [[[0u64; LANES]; 4]; G];
    let mut ul = [[[0u64; LANES]; 5]; G];
    for (n, (scalar, point)) in scalars.iter().zip(points).enumerate() {
        let (g, l) = (n / LANES, n % LANES);
        let mut s = *scalar;
        s[0] &= 248;
        s[31] &= 127;
        s[31] |= 64;
        let w = le_words(&s);
        for i in 0..4 {
            sw[g][i][l] = w[i];
        }
        let mut u = le_words(point);
        u[3] &= (1 << 63) - 1; // RFC 7748: ignore the top bit of u
        ul[g][0][l] = u[0] & MASK52;
        ul[g][1][l] = ((u[0] >> 52) | (u[1] << 12)) & MASK52;
        ul[g][2][l] = ((u[1] >> 40) | (u[2] << 24)) & MASK52;
        ul[g][3][l] = ((u[2] >> 28) | (u[3] << 36)) & MASK52;
        ul[g][4][l] = u[3] >> 16;
    }
    let sw: [[__m512i; 4]; G] = each!(|g| sw[g].map(|v| from_lanes(v)));
    let x1: [Fe; G] = each!(|g| Fe(ul[g].map(|v| from_lanes(v))));

    let one = fe_const([1, 0, 0, 0, 0]);
    let mut x2 = [one; G];
    let mut z2 = [fe_const([0; 5]); G];
    let mut x3 = x1;
    let mut z3 = [one; G];
    let mut swap: [__mmask8; G] = [0; G];
    for t in (0..255).rev() {
        let bit = splat(1u64 << (t % 64));
        for g in 0..G {
            let k_t = _mm512_test_epi64_mask(sw[g][t / 64], bit);
            swap[g] ^= k_t;
            cswap(swap[g], &mut x2[g], &mut x3[g]);
            cswap(swap[g], &mut z2[g], &mut z3[g]);
            swap[g] = k_t;
        }

        let a: [Fe; G] = each!(|g| add(&x2[g], &z2[g]));
        let b: [Fe; G] = each!(|g| sub(&x2[g], &z2[g]));
        let c: [Fe; G] = each!(|g| add(&x3[g], &z3[g]));
        let d: [Fe; G] = each!(|g| sub(&x3[g], &z3[g]));
        // Ordered so that no operation needs the result of the one just before it.
        let aa: [Fe; G] = each!(|g| sqr(&a[g]));
        let bb: [Fe; G] = each!(|g| sqr(&b[g]));
        let da: [Fe; G] = each!(|g| mul(&d[g], &a[g]));
        let cb: [Fe; G] = each!(|g| mul(&c[g], &b[g]));
        x2 = each!(|g| mul(&aa[g], &bb[g]));
        let e: [Fe; G] = each!(|g| sub(&aa[g], &bb[g]));
        let f: [Fe; G] = each!(|g| mul_a24_add(&e[g], &aa[g]));
        let dif: [Fe; G] = each!(|g| sub(&da[g], &cb[g]));
        let s: [Fe; G] = each!(|g| add(&da[g], &cb[g]));
        let dif2: [Fe; G] = each!(|g| sqr(&dif[g]));
        x3 = each!(|g| sqr(&s[g]));
        z2 = each!(|g| mul(&e[g], &f[g]));
        z3 = each!(|g| mul(&x1[g], &dif2[g]));
    }
    for g in 0..G {
        cswap(swap[g], &mut x2[g], &mut x3[g]);
        cswap(swap[g], &mut z2[g], &mut z3[g]);
    }

    let zi = invert(&z2);
    for g in 0..G {
        let r = canonical(&mul(&x2[g], &zi[g]));
        let limbs = r.0.map(|v| to_lanes(v));
        for (l, o) in out[g * LANES..(g + 1) * LANES].iter_mut().enumerate() {
            let w = [
                limbs[0][l] | (limbs[1][l] << 52),
                (limbs[1][l] >> 12) | (limbs[2][l] << 40),
                (limbs[2][l] >> 24) | (limbs[3][l] << 28),
                (limbs[3][l] >> 36) | (limbs[4][l] << 16),
            ];
            for i in 0..4 {
                o[8 * i..8 * i + 8].copy_from_slice(&w[i].to_le_bytes());
            }
        }
    }
}
