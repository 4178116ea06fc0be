//! The AVX-512 IFMA backend: eight independent Montgomery ladders side by side per vector, and
//! one or two such groups per kernel call (two run interleaved, operation by operation). It
//! needs AVX-512 F, VL and IFMA (`vpmadd52luq` / `vpmadd52huq` come from IFMA; the CPU must
//! report VL too, which `crate::cpu` checks, though this code uses only 512-bit forms).
//!
//! Field elements are held in radix 2^52: five limbs, and each limb is one `__m512i` whose eight
//! 64-bit elements belong to eight different lanes (independent X25519 computations). Products
//! use `vpmadd52luq` / `vpmadd52huq`, which multiply the low 52 bits of their inputs, so every
//! value fed to a multiplication has all five limbs strictly below 2^52.
//!
//! Representation invariants (all limbs unsigned), each a type:
//! * [`Reduced`] (output of [`mul`], [`sqr`], [`mul_a24_add`], and of decoding a u-coordinate):
//!   limbs 0..=3 < 2^52, limb 4 < 2^47 + 2^6; the value is below 2^255 + 2^214.
//! * [`Sum`] (output of [`add`], [`sub`], which take reduced inputs): limbs 0..=3 < 2^52, limb 4
//!   < 2^50. Valid as multiplication input ([`Operand`]), not as an input of [`add`] or [`sub`].
//!   A `Reduced` is also a valid `Sum` (`From`, free); the way back is [`Sum::reduce`].
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

use super::words::{clamped_scalar, le_bytes, u_coordinate};

/// Lanes per kernel call.
pub(super) const LANES: usize = 8;

const MASK52: u64 = (1 << 52) - 1;
const MASK47: u64 = (1 << 47) - 1;

/// One field element in each of eight lanes, in the "reduced" form (module doc).
#[derive(Clone, Copy)]
#[repr(transparent)]
struct Reduced([__m512i; 5]);

/// One field element in each of eight lanes, in the "sum" form (module doc).
#[derive(Clone, Copy)]
#[repr(transparent)]
struct Sum([__m512i; 5]);

impl From<Reduced> for Sum {
    /// Every reduced element is within the sum form's bounds: no work.
    #[inline(always)]
    fn from(r: Reduced) -> Sum {
        Sum(r.0)
    }
}

impl Sum {
    /// The same value in reduced form: the part at and above 2^255 folded down with 19.
    #[cfg(test)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn reduce(self) -> Reduced {
        finish(self.0, _mm512_setzero_si512())
    }
}

/// A valid multiplication input (every limb below 2^52): [`Reduced`] or [`Sum`].
trait Operand {
    fn limbs(&self) -> &[__m512i; 5];
}

impl Operand for Reduced {
    #[inline(always)]
    fn limbs(&self) -> &[__m512i; 5] {
        &self.0
    }
}

impl Operand for Sum {
    #[inline(always)]
    fn limbs(&self) -> &[__m512i; 5] {
        &self.0
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn splat(x: u64) -> __m512i {
    _mm512_set1_epi64(x as i64)
}

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn fe_const(limbs: [u64; 5]) -> Reduced {
    Reduced(limbs.map(|l| splat(l)))
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
fn finish(mut r: [__m512i; 5], r5: __m512i) -> Reduced {
    // top = floor(value / 2^255) restricted to limbs 4 and 5: (r4 >> 47) + r5 * 2^5 (< 2^16).
    let top = _mm512_add_epi64(_mm512_srli_epi64::<47>(r[4]), _mm512_slli_epi64::<5>(r5));
    r[4] = _mm512_and_si512(r[4], splat(MASK47));
    r[0] = _mm512_madd52lo_epu64(r[0], top, splat(19));
    carry_chain(&mut r);
    Reduced(r)
}

/// Folds a ten-column product (`c[k]` < 2^57 at weight 2^(52k)) and reduces it.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn reduce_product(mut c: [__m512i; 10]) -> Reduced {
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

/// `a * b`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn mul(a: &impl Operand, b: &impl Operand) -> Reduced {
    let (a, b) = (a.limbs(), b.limbs());
    let z = _mm512_setzero_si512();
    let mut c = [z; 10];
    for i in 0..5 {
        for j in 0..5 {
            c[i + j] = _mm512_madd52lo_epu64(c[i + j], a[i], b[j]);
            c[i + j + 1] = _mm512_madd52hi_epu64(c[i + j + 1], a[i], b[j]);
        }
    }
    reduce_product(c)
}

/// `a^2`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn sqr(a: &impl Operand) -> Reduced {
    let a = a.limbs();
    let z = _mm512_setzero_si512();
    let mut c = [z; 10];
    for i in 0..5 {
        for j in (i + 1)..5 {
            c[i + j] = _mm512_madd52lo_epu64(c[i + j], a[i], a[j]);
            c[i + j + 1] = _mm512_madd52hi_epu64(c[i + j + 1], a[i], a[j]);
        }
    }
    // Cross products land in columns 1..=8 only.
    for v in c[1..9].iter_mut() {
        *v = _mm512_add_epi64(*v, *v);
    }
    for i in 0..5 {
        c[2 * i] = _mm512_madd52lo_epu64(c[2 * i], a[i], a[i]);
        c[2 * i + 1] = _mm512_madd52hi_epu64(c[2 * i + 1], a[i], a[i]);
    }
    reduce_product(c)
}

/// `a + b`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn add(a: &Reduced, b: &Reduced) -> Sum {
    let mut r: [__m512i; 5] = core::array::from_fn(|k| _mm512_add_epi64(a.0[k], b.0[k]));
    carry_chain(&mut r);
    Sum(r)
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

/// `a - b`, computed as `a + 2p - b`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn sub(a: &Reduced, b: &Reduced) -> Sum {
    let mut r: [__m512i; 5] = core::array::from_fn(|k| {
        _mm512_sub_epi64(_mm512_add_epi64(a.0[k], splat(TWO_P[k])), b.0[k])
    });
    carry_chain(&mut r);
    Sum(r)
}

/// `aa + 121665 * e` (RFC 7748's a24).
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn mul_a24_add(e: &Sum, aa: &Reduced) -> Reduced {
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
fn cswap(mask: __mmask8, a: &mut Reduced, b: &mut Reduced) {
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
fn sqr_n<const G: usize>(a: &[Reduced; G], n: u32) -> [Reduced; G] {
    let mut t: [Reduced; G] = each!(|g| sqr(&a[g]));
    for _ in 1..n {
        t = each!(|g| sqr(&t[g]));
    }
    t
}

/// `a * b` in every group.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn mul_g<const G: usize>(a: &[Reduced; G], b: &[Reduced; G]) -> [Reduced; G] {
    each!(|g| mul(&a[g], &b[g]))
}

/// `z^(p-2)`, the inverse, in every group (the shared chain, `invert_chain`).
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn invert<const G: usize>(z: &[Reduced; G]) -> [Reduced; G] {
    invert_chain!(z, sqr_n, mul_g)
}

/// Fully reduces an element to its canonical representative below p.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn canonical(a: &Reduced) -> Reduced {
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
    Reduced(r)
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

/// Eight numbers below 2^255 (little-endian words, one per lane) as a reduced element.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn from_words(w: &[[u64; 4]; LANES]) -> Reduced {
    let limb = |f: fn(&[u64; 4]) -> u64| from_lanes(core::array::from_fn(|l| f(&w[l])));
    Reduced([
        limb(|u| u[0] & MASK52),
        limb(|u| ((u[0] >> 52) | (u[1] << 12)) & MASK52),
        limb(|u| ((u[1] >> 40) | (u[2] << 24)) & MASK52),
        limb(|u| ((u[2] >> 28) | (u[3] << 36)) & MASK52),
        limb(|u| u[3] >> 16),
    ])
}

/// The eight lanes of a canonical element as little-endian words.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn to_words(r: &Reduced) -> [[u64; 4]; LANES] {
    let limbs = r.0.map(|v| to_lanes(v));
    core::array::from_fn(|l| {
        [
            limbs[0][l] | (limbs[1][l] << 52),
            (limbs[1][l] >> 12) | (limbs[2][l] << 40),
            (limbs[2][l] >> 24) | (limbs[3][l] << 28),
            (limbs[3][l] >> 36) | (limbs[4][l] << 16),
        ]
    })
}

/// `8 G` X25519 computations, one per lane: `G` groups of eight lanes run their ladders
/// interleaved, operation by operation, so that one group's long dependency chains (a field
/// multiplication is a chain of multiply-adds and carries) overlap with the other's work.
///
/// # Safety
/// The CPU must support AVX-512 F, VL and IFMA (checked by [`super::Backend::is_supported`]).
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) unsafe fn x25519_lanes<const G: usize, const N: usize>(
    scalars: &[[u8; 32]; N],
    points: &[[u8; 32]; N],
    out: &mut [[u8; 32]; N],
) {
    const { assert!(N == G * LANES, "N lanes are G groups of eight") };
    // Transpose the inputs: scalar word w of every lane, point u of every lane.
    let mut sw = [[[0u64; LANES]; 4]; G];
    let mut uw = [[[0u64; 4]; LANES]; G];
    for (n, (scalar, point)) in scalars.iter().zip(points).enumerate() {
        let (g, l) = (n / LANES, n % LANES);
        let w = clamped_scalar(scalar);
        for i in 0..4 {
            sw[g][i][l] = w[i];
        }
        uw[g][l] = u_coordinate(point);
    }
    let sw: [[__m512i; 4]; G] = each!(|g| sw[g].map(|v| from_lanes(v)));
    // Below 2^255, so within the reduced form's bounds.
    let x1: [Reduced; G] = each!(|g| from_words(&uw[g]));
    let (x2, z2) = ladder(&sw, &x1);

    let zi = invert(&z2);
    for g in 0..G {
        let words = to_words(&canonical(&mul(&x2[g], &zi[g])));
        for (o, w) in out[g * LANES..(g + 1) * LANES].iter_mut().zip(&words) {
            *o = le_bytes(w);
        }
    }
}

/// The Montgomery ladder over the 255 bits of the clamped scalars `sw` (words as vectors) from
/// the u-coordinates `x1`: the projective `(x2, z2)` of every lane's result.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn ladder<const G: usize>(
    sw: &[[__m512i; 4]; G],
    x1: &[Reduced; G],
) -> ([Reduced; G], [Reduced; G]) {
    let one = fe_const([1, 0, 0, 0, 0]);
    let mut x2 = [one; G];
    let mut z2 = [fe_const([0; 5]); G];
    let mut x3 = *x1;
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

        let a: [Sum; G] = each!(|g| add(&x2[g], &z2[g]));
        let b: [Sum; G] = each!(|g| sub(&x2[g], &z2[g]));
        let c: [Sum; G] = each!(|g| add(&x3[g], &z3[g]));
        let d: [Sum; G] = each!(|g| sub(&x3[g], &z3[g]));
        // Ordered so that no operation needs the result of the one just before it.
        let aa: [Reduced; G] = each!(|g| sqr(&a[g]));
        let bb: [Reduced; G] = each!(|g| sqr(&b[g]));
        let da: [Reduced; G] = each!(|g| mul(&d[g], &a[g]));
        let cb: [Reduced; G] = each!(|g| mul(&c[g], &b[g]));
        x2 = each!(|g| mul(&aa[g], &bb[g]));
        let e: [Sum; G] = each!(|g| sub(&aa[g], &bb[g]));
        let f: [Reduced; G] = each!(|g| mul_a24_add(&e[g], &aa[g]));
        let dif: [Sum; G] = each!(|g| sub(&da[g], &cb[g]));
        let s: [Sum; G] = each!(|g| add(&da[g], &cb[g]));
        let dif2: [Reduced; G] = each!(|g| sqr(&dif[g]));
        x3 = each!(|g| sqr(&s[g]));
        z2 = each!(|g| mul(&e[g], &f[g]));
        z3 = each!(|g| mul(&x1[g], &dif2[g]));
    }
    for g in 0..G {
        cswap(swap[g], &mut x2[g], &mut x3[g]);
        cswap(swap[g], &mut z2[g], &mut z3[g]);
    }
    (x2, z2)
}

/// The field operations one at a time, in and out as words, for the tests against the
/// portable reference field (module `field_tests`).
#[cfg(test)]
pub(super) mod testing {
    use super::*;
    use crate::x25519::field_tests::Op;

    /// `op` on lane `l` of `a` and `b` (numbers below 2^255) for each lane, canonical.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, VL and IFMA.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(in crate::x25519) unsafe fn apply(
        op: Op,
        a: &[[u64; 4]; LANES],
        b: &[[u64; 4]; LANES],
    ) -> [[u64; 4]; LANES] {
        let (a, b) = (from_words(a), from_words(b));
        let r = match op {
            Op::Canonical => a,
            Op::Add => add(&a, &b).reduce(),
            Op::Sub => sub(&a, &b).reduce(),
            Op::Mul => mul(&a, &b),
            Op::Sqr => sqr(&a),
            Op::MulSums => mul(&add(&a, &b), &sub(&a, &b)),
            Op::SqrDifference => sqr(&sub(&a, &b)),
            Op::A24 => mul_a24_add(&sub(&a, &b), &a),
            Op::Invert => invert(&[a])[0],
        };
        to_words(&canonical(&r))
    }

    /// [`canonical`] of the reduced element with every limb at its bound (limbs 0..=3
    /// 2^52 - 1, limb 4 2^47 + 2^6 - 1), and those limbs with their bit offsets.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, VL and IFMA.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(in crate::x25519) unsafe fn canonical_of_largest() -> ([u64; 4], Vec<(u64, u32)>) {
        let limbs = [MASK52, MASK52, MASK52, MASK52, (1 << 47) + (1 << 6) - 1];
        let r = canonical(&fe_const(limbs));
        let at = limbs
            .iter()
            .enumerate()
            .map(|(i, &l)| (l, 52 * i as u32))
            .collect();
        (to_words(&r)[0], at)
    }
}
