//! A single-operation X25519: the RFC 7748 Montgomery ladder on GF(2^255 - 19) in radix 2^51
//! with `u128` products, everything inlined into one function per target (with BMI2/ADX, so
//! that the products use `mulx`, when the CPU has them; plain x86-64 otherwise).
//!
//! Constant time: the ladder runs all 255 steps whatever the scalar, the swaps are masks
//! (the mask passes through `black_box`, so the compiler cannot turn it back into a branch),
//! and no index depends on a secret. Bounds: field elements leave `mul`, `sqr` and
//! `mul_small` with limbs below 2^51 + 2^18; `add` of two such stays below 2^53, `sub` (which
//! adds 4p) below 2^53.4; `mul` and `sqr` accept limbs below 2^54, so every product sum stays
//! below 2^116 and every carry fits.
//!
//! The same field also finishes the AVX2 kernel's lanes ([`affine_batch`]): `X / Z` for up to
//! [`AFFINE_GROUP`] lanes with one inversion (Montgomery's trick). Its inputs are canonical
//! words, so their limbs are below 2^51; which lanes have `Z = 0` only changes masks (through
//! `black_box`), never a branch or an index.

use super::words::{clamped_scalar, le_bytes, u_coordinate};

const MASK: u64 = (1 << 51) - 1;

#[derive(Clone, Copy)]
struct Fe([u64; 5]);

#[inline(always)]
fn m(a: u64, b: u64) -> u128 {
    u128::from(a) * u128::from(b)
}

/// Carries five column sums (each below 2^116) down to limbs below 2^51 (limb 1 below
/// 2^51 + 2^18).
#[inline(always)]
fn reduce(c: [u128; 5]) -> Fe {
    let mask = u128::from(MASK);
    let c1 = c[1] + (c[0] >> 51);
    let c2 = c[2] + (c1 >> 51);
    let c3 = c[3] + (c2 >> 51);
    let c4 = c[4] + (c3 >> 51);
    let t = (c[0] & mask) + 19 * (c4 >> 51);
    Fe([
        (t & mask) as u64,
        (c1 & mask) as u64 + (t >> 51) as u64,
        (c2 & mask) as u64,
        (c3 & mask) as u64,
        (c4 & mask) as u64,
    ])
}

#[inline(always)]
fn mul(a: &Fe, b: &Fe) -> Fe {
    let (a, b) = (a.0, b.0);
    let (b1, b2, b3, b4) = (19 * b[1], 19 * b[2], 19 * b[3], 19 * b[4]);
    reduce([
        m(a[0], b[0]) + m(a[1], b4) + m(a[2], b3) + m(a[3], b2) + m(a[4], b1),
        m(a[0], b[1]) + m(a[1], b[0]) + m(a[2], b4) + m(a[3], b3) + m(a[4], b2),
        m(a[0], b[2]) + m(a[1], b[1]) + m(a[2], b[0]) + m(a[3], b4) + m(a[4], b3),
        m(a[0], b[3]) + m(a[1], b[2]) + m(a[2], b[1]) + m(a[3], b[0]) + m(a[4], b4),
        m(a[0], b[4]) + m(a[1], b[3]) + m(a[2], b[2]) + m(a[3], b[1]) + m(a[4], b[0]),
    ])
}

#[inline(always)]
fn sqr(a: &Fe) -> Fe {
    let a = a.0;
    let (d0, d1, d2, d3) = (2 * a[0], 2 * a[1], 2 * a[2], 2 * a[3]);
    let (a3_19, a4_19) = (19 * a[3], 19 * a[4]);
    reduce([
        m(a[0], a[0]) + m(d1, a4_19) + m(d2, a3_19),
        m(d0, a[1]) + m(d2, a4_19) + m(a[3], a3_19),
        m(d0, a[2]) + m(a[1], a[1]) + m(d3, a4_19),
        m(d0, a[3]) + m(d1, a[2]) + m(a[4], a4_19),
        m(d0, a[4]) + m(d1, a[3]) + m(a[2], a[2]),
    ])
}

#[inline(always)]
fn sqr_n(a: &Fe, n: u32) -> Fe {
    let mut t = sqr(a);
    for _ in 1..n {
        t = sqr(&t);
    }
    t
}

#[inline(always)]
fn mul_small(a: &Fe, k: u64) -> Fe {
    reduce(a.0.map(|x| m(x, k)))
}

#[inline(always)]
fn add(a: &Fe, b: &Fe) -> Fe {
    Fe(core::array::from_fn(|i| a.0[i] + b.0[i]))
}

/// `a - b` as `a + 4p - b`: every limb of 4p exceeds a limb of `b` below 2^52.
#[inline(always)]
fn sub(a: &Fe, b: &Fe) -> Fe {
    const FOUR_P: [u64; 5] = [
        (1 << 53) - 76,
        (1 << 53) - 4,
        (1 << 53) - 4,
        (1 << 53) - 4,
        (1 << 53) - 4,
    ];
    Fe(core::array::from_fn(|i| a.0[i] + FOUR_P[i] - b.0[i]))
}

/// Swaps `a` and `b` when `mask` is all ones, leaves them when it is zero.
#[inline(always)]
fn cswap(mask: u64, a: &mut Fe, b: &mut Fe) {
    for (x, y) in a.0.iter_mut().zip(b.0.iter_mut()) {
        let t = (*x ^ *y) & mask;
        *x ^= t;
        *y ^= t;
    }
}

#[inline(always)]
fn from_words(w: &[u64; 4]) -> Fe {
    Fe([
        w[0] & MASK,
        ((w[0] >> 51) | (w[1] << 13)) & MASK,
        ((w[1] >> 38) | (w[2] << 26)) & MASK,
        ((w[2] >> 25) | (w[3] << 39)) & MASK,
        w[3] >> 12,
    ])
}

/// The canonical value below p as little-endian words; `a` has limbs below 2^52.
#[inline(always)]
fn canonical_words(a: &Fe) -> [u64; 4] {
    let mut l = a.0;
    // Carry once so that every limb is below 2^51 (limb 0 below 2^51 + 19 * 2).
    for k in 0..4 {
        l[k + 1] += l[k] >> 51;
        l[k] &= MASK;
    }
    l[0] += 19 * (l[4] >> 51);
    l[4] &= MASK;
    // q = 1 exactly when the value is at least p; subtract q p by adding 19 q and dropping 2^255.
    let mut q = (l[0] + 19) >> 51;
    for limb in &l[1..] {
        q = (limb + q) >> 51;
    }
    l[0] += 19 * q;
    for k in 0..4 {
        l[k + 1] += l[k] >> 51;
        l[k] &= MASK;
    }
    l[4] &= MASK;
    [
        l[0] | (l[1] << 51),
        (l[1] >> 13) | (l[2] << 38),
        (l[2] >> 26) | (l[3] << 25),
        (l[3] >> 39) | (l[4] << 12),
    ]
}

#[inline(always)]
fn invert(z: &Fe) -> Fe {
    invert_chain!(z, sqr_n, mul)
}

/// The ladder, inlined into each target's entry below.
#[inline(always)]
fn ladder(scalar: &[u8; 32], point: &[u8; 32]) -> [u8; 32] {
    let k = clamped_scalar(scalar);
    let x1 = from_words(&u_coordinate(point));
    let one = Fe([1, 0, 0, 0, 0]);
    let (mut x2, mut z2, mut x3, mut z3) = (one, Fe([0; 5]), x1, one);
    let mut swap = 0u64;
    for t in (0..255).rev() {
        let bit = (k[t / 64] >> (t % 64)) & 1;
        let mask = core::hint::black_box(0u64.wrapping_sub(swap ^ bit));
        cswap(mask, &mut x2, &mut x3);
        cswap(mask, &mut z2, &mut z3);
        swap = bit;
        let (a, b) = (add(&x2, &z2), sub(&x2, &z2));
        let (c, d) = (add(&x3, &z3), sub(&x3, &z3));
        let (aa, bb) = (sqr(&a), sqr(&b));
        let e = sub(&aa, &bb);
        let (da, cb) = (mul(&d, &a), mul(&c, &b));
        x3 = sqr(&add(&da, &cb));
        z3 = mul(&x1, &sqr(&sub(&da, &cb)));
        x2 = mul(&aa, &bb);
        z2 = mul(&e, &add(&aa, &mul_small(&e, 121_665)));
    }
    let mask = core::hint::black_box(0u64.wrapping_sub(swap));
    cswap(mask, &mut x2, &mut x3);
    cswap(mask, &mut z2, &mut z3);
    le_bytes(&canonical_words(&mul(&x2, &invert(&z2))))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2,adx")]
fn ladder_bmi2(scalar: &[u8; 32], point: &[u8; 32]) -> [u8; 32] {
    ladder(scalar, point)
}

pub(super) fn ladder_plain(scalar: &[u8; 32], point: &[u8; 32]) -> [u8; 32] {
    ladder(scalar, point)
}

/// X25519 of one scalar and point (RFC 7748; the result of a small-order point is zero).
pub(super) fn x25519(scalar: &[u8; 32], point: &[u8; 32]) -> [u8; 32] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("bmi2") && std::arch::is_x86_feature_detected!("adx") {
        // SAFETY: the CPU has BMI2 and ADX, the features `ladder_bmi2` is compiled for.
        return unsafe { ladder_bmi2(scalar, point) };
    }
    ladder_plain(scalar, point)
}

/// The most elements that one [`affine_batch`] call converts (its stack buffer's length).
pub(super) const AFFINE_GROUP: usize = 64;

/// All ones when the little-endian words are zero, else zero, without a branch (the mask
/// passes through `black_box`, so the compiler cannot turn its uses into a branch).
#[inline(always)]
fn zero_mask(w: &[u64; 4]) -> u64 {
    let or = w[0] | w[1] | w[2] | w[3];
    // The top bit of `or | -or` is set exactly when `or` is not zero.
    let nonzero = (or | or.wrapping_neg()) >> 63;
    core::hint::black_box(nonzero.wrapping_sub(1))
}

/// `a` where `mask` is all ones, `b` where it is zero.
#[inline(always)]
fn select(mask: u64, a: &Fe, b: &Fe) -> Fe {
    Fe(core::array::from_fn(|k| (a.0[k] & mask) | (b.0[k] & !mask)))
}

/// `Z`, or 1 where `Z` is zero (`zero` is [`zero_mask`] of `z`): no zero enters the product of
/// the batch, so one small-order point cannot zero the other lanes' inverses.
#[inline(always)]
fn nonzero_z(z: &[u64; 4], zero: u64) -> Fe {
    select(zero, &Fe([1, 0, 0, 0, 0]), &from_words(z))
}

/// The batch conversion, inlined into each target's entry below.
///
/// Montgomery's trick: `prefix[i] = z_0 ... z_i`, one inversion of the whole product, then,
/// from the last element down, `1/z_i = (1/prefix[i]) prefix[i - 1]` and
/// `1/prefix[i - 1] = (1/prefix[i]) z_i`: four products per element and one inversion for
/// all, where each element's own inversion costs about 265 squarings and products.
#[inline(always)]
fn affine_batch_inner(x: &[[u64; 4]], z: &[[u64; 4]], out: &mut [[u8; 32]]) {
    let n = z.len();
    assert!(
        n <= AFFINE_GROUP,
        "at most {AFFINE_GROUP} elements per call"
    );
    assert!(x.len() == n && out.len() == n, "one X and one output per Z");
    let mut prefix = [Fe([0; 5]); AFFINE_GROUP];
    let mut acc = Fe([1, 0, 0, 0, 0]);
    for (p, zi) in prefix.iter_mut().zip(z) {
        acc = mul(&acc, &nonzero_z(zi, zero_mask(zi)));
        *p = acc;
    }
    let mut inv = invert(&acc);
    for i in (0..n).rev() {
        let zero = zero_mask(&z[i]);
        let zi_inv = if i > 0 {
            mul(&inv, &prefix[i - 1])
        } else {
            inv
        };
        inv = mul(&inv, &nonzero_z(&z[i], zero));
        let w = canonical_words(&mul(&from_words(&x[i]), &zi_inv));
        // X/0 is 0 (RFC 7748's result for small-order points): clear what X/1 left.
        out[i] = le_bytes(&w.map(|v| v & !zero));
    }
    // The prefix products are secret-derived: do not leave them on the stack.
    for p in &mut prefix[..n] {
        zeroize::Zeroize::zeroize(&mut p.0);
    }
    zeroize::Zeroize::zeroize(&mut acc.0);
    zeroize::Zeroize::zeroize(&mut inv.0);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2,adx")]
fn affine_batch_bmi2(x: &[[u64; 4]], z: &[[u64; 4]], out: &mut [[u8; 32]]) {
    affine_batch_inner(x, z, out)
}

fn affine_batch_plain(x: &[[u64; 4]], z: &[[u64; 4]], out: &mut [[u8; 32]]) {
    affine_batch_inner(x, z, out)
}

/// `out[i] = X_i / Z_i` (canonical, little-endian bytes) for projective u-coordinates given
/// as canonical little-endian words (below p), zero where `Z_i` is zero, with one field inversion for
/// the whole batch. Constant time: which elements are zero changes no branch and no index.
///
/// # Panics
/// If the slices differ in length or hold more than [`AFFINE_GROUP`] elements.
pub(super) fn affine_batch(x: &[[u64; 4]], z: &[[u64; 4]], out: &mut [[u8; 32]]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("bmi2") && std::arch::is_x86_feature_detected!("adx") {
        // SAFETY: the CPU has BMI2 and ADX, the features `affine_batch_bmi2` is compiled for.
        return unsafe { affine_batch_bmi2(x, z, out) };
    }
    affine_batch_plain(x, z, out)
}
