//! The AVX2 backend: four independent Montgomery ladders side by side.
//!
//! Field elements are held in radix 2^25.5: ten limbs of alternately 26 and 25 bits (limb `i`
//! at bit offset ceil(25.5 i)), each limb one `__m256i` whose four 64-bit elements belong to
//! four different lanes. Products use `vpmuludq` (32 x 32 -> 64 bits), so every multiplication
//! input limb stays below 2^32, and products are summed in 64-bit accumulators.
//!
//! Bounds (all limbs unsigned): a carried element has even limbs < 2^26 and odd limbs
//! < 2^25 + 2^19. Sums of two carried elements and differences `a + 2p - b` are at most three
//! times that, which keeps `19 * limb` below 2^32 and every product column below 2^63.
//!
//! For limbs `i`, `j` the product's weight is that of limb `i + j`, doubled when both are odd
//! (two 25.5-bit halves round up twice); weights at or above 2^255 fold down with
//! 2^255 ≡ 19 (mod p).
//!
//! Constant time: every lane runs the same instruction stream, the conditional swap is an
//! XOR-and-mask with a per-lane mask built from the scalar bit, nothing branches on or indexes
//! memory by secret data (the multiplication tables are read at fixed offsets), and no work is
//! shared between lanes.

use std::arch::x86_64::*;

use super::words::{clamped_scalar, u_coordinate};

/// Lanes per kernel call.
pub(super) const LANES: usize = 4;

/// Bit offset of each limb.
const OFFSET: [u32; 10] = [0, 26, 51, 77, 102, 128, 153, 179, 204, 230];
/// Width of each limb.
const fn width(i: usize) -> u32 {
    if i.is_multiple_of(2) { 26 } else { 25 }
}

/// One field element in each of four lanes.
#[derive(Clone, Copy)]
struct Fe([__m256i; 10]);

#[inline]
#[target_feature(enable = "avx2")]
fn splat(x: u64) -> __m256i {
    _mm256_set1_epi64x(x as i64)
}

#[inline]
#[target_feature(enable = "avx2")]
fn fe_const(limbs: [u64; 10]) -> Fe {
    Fe(limbs.map(|l| splat(l)))
}

/// Moves the bits of limb `i` above its width into limb `i + 1`.
#[inline]
#[target_feature(enable = "avx2")]
fn carry_step<const I: usize>(h: &mut [__m256i; 10]) {
    let i = I;
    let (c, m) = if i.is_multiple_of(2) {
        (_mm256_srli_epi64::<26>(h[i]), splat((1 << 26) - 1))
    } else {
        (_mm256_srli_epi64::<25>(h[i]), splat((1 << 25) - 1))
    };
    h[i] = _mm256_and_si256(h[i], m);
    if i == 9 {
        // 2^255 ≡ 19: add 19 c = c + 2c + 16c (c may exceed 32 bits).
        let c19 = _mm256_add_epi64(
            _mm256_add_epi64(c, _mm256_slli_epi64::<1>(c)),
            _mm256_slli_epi64::<4>(c),
        );
        h[0] = _mm256_add_epi64(h[0], c19);
    } else {
        h[i + 1] = _mm256_add_epi64(h[i + 1], c);
    }
}

/// Carries limbs 0..=8 sequentially into their successors.
#[inline]
#[target_feature(enable = "avx2")]
fn carry_seq(h: &mut [__m256i; 10]) {
    carry_step::<0>(h);
    carry_step::<1>(h);
    carry_step::<2>(h);
    carry_step::<3>(h);
    carry_step::<4>(h);
    carry_step::<5>(h);
    carry_step::<6>(h);
    carry_step::<7>(h);
    carry_step::<8>(h);
}

/// Carries product columns (each < 2^63) down to a carried element.
#[inline]
#[target_feature(enable = "avx2")]
fn carry(mut h: [__m256i; 10]) -> Fe {
    // Two interleaved chains (0..4 and 4..9) shorten the dependency path.
    // (Spelled out with constant indices so the limbs stay in registers.)
    carry_step::<0>(&mut h);
    carry_step::<4>(&mut h);
    carry_step::<1>(&mut h);
    carry_step::<5>(&mut h);
    carry_step::<2>(&mut h);
    carry_step::<6>(&mut h);
    carry_step::<3>(&mut h);
    carry_step::<7>(&mut h);
    carry_step::<4>(&mut h);
    carry_step::<8>(&mut h);
    carry_step::<9>(&mut h);
    carry_step::<0>(&mut h);
    Fe(h)
}

/// One 32 x 32 -> 64-bit product per lane.
#[inline]
#[target_feature(enable = "avx2")]
fn m(a: __m256i, b: __m256i) -> __m256i {
    _mm256_mul_epu32(a, b)
}

/// Sum of `N` products, added as a balanced tree to keep the dependency chains short.
#[inline]
#[target_feature(enable = "avx2")]
fn sum<const N: usize>(t: [__m256i; N]) -> __m256i {
    let mut v = t;
    let mut n = N;
    while n > 1 {
        let half = n / 2;
        for i in 0..half {
            v[i] = _mm256_add_epi64(v[2 * i], v[2 * i + 1]);
        }
        if n % 2 == 1 {
            v[half] = v[n - 1];
        }
        n = half + n % 2;
    }
    v[0]
}

/// `f * g`.
#[inline]
#[target_feature(enable = "avx2")]
fn mul(f: &Fe, g: &Fe) -> Fe {
    mul_by(f, &MulTable::new(g))
}

/// The multiples of one factor's limbs that [`mul_by`] reads: `g` itself (borrowed, not
/// copied) and `19g` of limbs 1..=9. Nine new vectors, so nine stores per table: the ladder is
/// bound by stores as much as by multiplies, and the products that need `2g` or `38g` (odd limbs
/// of both factors) are summed apart and their sum doubled once per column instead (see
/// [`mul_by`]). Every entry stays below 2^32 (the largest, `19g` of an odd limb of a
/// three-element sum, is below 19 * 3 * (2^25 + 2^19) < 2^32), as `vpmuludq` needs.
struct MulTable<'a> {
    g: &'a Fe,
    /// `19 g[j]` at index `j - 1`.
    g19: [__m256i; 9],
}

impl<'a> MulTable<'a> {
    #[inline]
    #[target_feature(enable = "avx2")]
    fn new(g: &'a Fe) -> MulTable<'a> {
        let k19 = splat(19);
        MulTable {
            g,
            g19: core::array::from_fn(|i| _mm256_mul_epu32(g.0[i + 1], k19)),
        }
    }

    /// `g[j]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn g(&self, j: usize) -> __m256i {
        ld(&self.g.0[j])
    }

    /// `19 g[j]`, `j >= 1`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn g19(&self, j: usize) -> __m256i {
        ld(&self.g19[j - 1])
    }
}

/// `even + 2 odd`: an even product column from its products of two even limbs (`even`) and of
/// two odd limbs (`odd`, weighted twice).
#[inline]
#[target_feature(enable = "avx2")]
fn even_column(even: __m256i, odd: __m256i) -> __m256i {
    _mm256_add_epi64(_mm256_add_epi64(even, odd), odd)
}

/// `f * g` with `g` given by its [`MulTable`] (built once for a factor used many times, like
/// the ladder's base point).
///
/// Each product takes one limb of `f` and one table entry read with a plain load: the limbs of
/// `f` can stay in registers while the multiples come from memory, which with sixteen vector
/// registers spills far less than keeping both sides in registers, and the loads go to the
/// load ports instead of competing with the multiplies and adds. Measured: about 4% off a
/// whole X25519. In the even columns the products of two odd limbs (weight doubled) are
/// summed apart and that sum is doubled, so the table needs no `2g` or `38g`.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_by(f: &Fe, t: &MulTable) -> Fe {
    let [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9] = f.0;
    let h0 = even_column(
        sum([
            m(f0, t.g(0)),
            m(f2, t.g19(8)),
            m(f4, t.g19(6)),
            m(f6, t.g19(4)),
            m(f8, t.g19(2)),
        ]),
        sum([
            m(f1, t.g19(9)),
            m(f3, t.g19(7)),
            m(f5, t.g19(5)),
            m(f7, t.g19(3)),
            m(f9, t.g19(1)),
        ]),
    );
    let h1 = sum([
        m(f0, t.g(1)),
        m(f1, t.g(0)),
        m(f2, t.g19(9)),
        m(f3, t.g19(8)),
        m(f4, t.g19(7)),
        m(f5, t.g19(6)),
        m(f6, t.g19(5)),
        m(f7, t.g19(4)),
        m(f8, t.g19(3)),
        m(f9, t.g19(2)),
    ]);
    let h2 = even_column(
        sum([
            m(f0, t.g(2)),
            m(f2, t.g(0)),
            m(f4, t.g19(8)),
            m(f6, t.g19(6)),
            m(f8, t.g19(4)),
        ]),
        sum([
            m(f1, t.g(1)),
            m(f3, t.g19(9)),
            m(f5, t.g19(7)),
            m(f7, t.g19(5)),
            m(f9, t.g19(3)),
        ]),
    );
    let h3 = sum([
        m(f0, t.g(3)),
        m(f1, t.g(2)),
        m(f2, t.g(1)),
        m(f3, t.g(0)),
        m(f4, t.g19(9)),
        m(f5, t.g19(8)),
        m(f6, t.g19(7)),
        m(f7, t.g19(6)),
        m(f8, t.g19(5)),
        m(f9, t.g19(4)),
    ]);
    let h4 = even_column(
        sum([
            m(f0, t.g(4)),
            m(f2, t.g(2)),
            m(f4, t.g(0)),
            m(f6, t.g19(8)),
            m(f8, t.g19(6)),
        ]),
        sum([
            m(f1, t.g(3)),
            m(f3, t.g(1)),
            m(f5, t.g19(9)),
            m(f7, t.g19(7)),
            m(f9, t.g19(5)),
        ]),
    );
    let h5 = sum([
        m(f0, t.g(5)),
        m(f1, t.g(4)),
        m(f2, t.g(3)),
        m(f3, t.g(2)),
        m(f4, t.g(1)),
        m(f5, t.g(0)),
        m(f6, t.g19(9)),
        m(f7, t.g19(8)),
        m(f8, t.g19(7)),
        m(f9, t.g19(6)),
    ]);
    let h6 = even_column(
        sum([
            m(f0, t.g(6)),
            m(f2, t.g(4)),
            m(f4, t.g(2)),
            m(f6, t.g(0)),
            m(f8, t.g19(8)),
        ]),
        sum([
            m(f1, t.g(5)),
            m(f3, t.g(3)),
            m(f5, t.g(1)),
            m(f7, t.g19(9)),
            m(f9, t.g19(7)),
        ]),
    );
    let h7 = sum([
        m(f0, t.g(7)),
        m(f1, t.g(6)),
        m(f2, t.g(5)),
        m(f3, t.g(4)),
        m(f4, t.g(3)),
        m(f5, t.g(2)),
        m(f6, t.g(1)),
        m(f7, t.g(0)),
        m(f8, t.g19(9)),
        m(f9, t.g19(8)),
    ]);
    let h8 = even_column(
        sum([
            m(f0, t.g(8)),
            m(f2, t.g(6)),
            m(f4, t.g(4)),
            m(f6, t.g(2)),
            m(f8, t.g(0)),
        ]),
        sum([
            m(f1, t.g(7)),
            m(f3, t.g(5)),
            m(f5, t.g(3)),
            m(f7, t.g(1)),
            m(f9, t.g19(9)),
        ]),
    );
    let h9 = sum([
        m(f0, t.g(9)),
        m(f1, t.g(8)),
        m(f2, t.g(7)),
        m(f3, t.g(6)),
        m(f4, t.g(5)),
        m(f5, t.g(4)),
        m(f6, t.g(3)),
        m(f7, t.g(2)),
        m(f8, t.g(1)),
        m(f9, t.g(0)),
    ]);
    carry([h0, h1, h2, h3, h4, h5, h6, h7, h8, h9])
}

/// A load from a [`MulTable`] that stays a load: a volatile read, so that the compiler does
/// not hoist the table's entries into the sixteen registers (and spill them).
#[inline]
#[target_feature(enable = "avx2")]
fn ld(v: &__m256i) -> __m256i {
    // SAFETY: `v` is a valid, aligned reference to an initialised vector.
    unsafe { core::ptr::read_volatile(v) }
}

/// `v`, hidden from the optimiser. Seeing that a product such as `19 f[j]` is only ever used
/// for its low 32 bits, the compiler turns `vpmuludq` into a full 64-bit multiply (five
/// instructions); an opaque value keeps the single instruction. Costs nothing: no code is
/// emitted and the value stays in its register.
#[inline]
#[target_feature(enable = "avx2")]
fn opaque(mut v: __m256i) -> __m256i {
    // SAFETY: an empty template: no instruction runs, no memory, stack or flags are touched;
    // `v` comes back in the same register unchanged.
    unsafe {
        core::arch::asm!("/* {0} */", inout(ymm_reg) v, options(pure, nomem, nostack, preserves_flags));
    }
    v
}

/// The square of the element with limbs `$f` (an expression of type `[__m256i; 10]`), the
/// body of [`sqr`], [`sqr_of_sum`] and [`sqr_of_dif`]: a macro, so that each of them gets its own
/// copy with the limbs in registers (a shared out-of-line function would take them through
/// memory).
macro_rules! sqr_limbs {
    ($f:expr) => {{
        let k19 = splat(19);
        let [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9]: [__m256i; 10] = $f;
        let f0_2 = _mm256_add_epi64(f0, f0);
        let f1_2 = _mm256_add_epi64(f1, f1);
        let f2_2 = _mm256_add_epi64(f2, f2);
        let f3_2 = _mm256_add_epi64(f3, f3);
        let f4_2 = _mm256_add_epi64(f4, f4);
        let f5_2 = _mm256_add_epi64(f5, f5);
        let f6_2 = _mm256_add_epi64(f6, f6);
        let f7_2 = _mm256_add_epi64(f7, f7);
        let f8_2 = _mm256_add_epi64(f8, f8);
        let [f5_19, f6_19, f7_19, f8_19, f9_19] =
            [f5, f6, f7, f8, f9].map(|v| opaque(_mm256_mul_epu32(v, k19)));
        let h0 = even_column(
            sum([m(f0, f0), m(f2_2, f8_19), m(f4_2, f6_19)]),
            sum([m(f1_2, f9_19), m(f3_2, f7_19), m(f5, f5_19)]),
        );
        let h1 = sum([
            m(f0_2, f1),
            m(f2_2, f9_19),
            m(f3_2, f8_19),
            m(f4_2, f7_19),
            m(f5_2, f6_19),
        ]);
        let h2 = even_column(
            sum([m(f0_2, f2), m(f4_2, f8_19), m(f6, f6_19)]),
            sum([m(f1, f1), m(f3_2, f9_19), m(f5_2, f7_19)]),
        );
        let h3 = sum([
            m(f0_2, f3),
            m(f1_2, f2),
            m(f4_2, f9_19),
            m(f5_2, f8_19),
            m(f6_2, f7_19),
        ]);
        let h4 = even_column(
            sum([m(f0_2, f4), m(f2, f2), m(f6_2, f8_19)]),
            sum([m(f1_2, f3), m(f5_2, f9_19), m(f7, f7_19)]),
        );
        let h5 = sum([
            m(f0_2, f5),
            m(f1_2, f4),
            m(f2_2, f3),
            m(f6_2, f9_19),
            m(f7_2, f8_19),
        ]);
        let h6 = even_column(
            sum([m(f0_2, f6), m(f2_2, f4), m(f8, f8_19)]),
            sum([m(f1_2, f5), m(f3, f3), m(f7_2, f9_19)]),
        );
        let h7 = sum([
            m(f0_2, f7),
            m(f1_2, f6),
            m(f2_2, f5),
            m(f3_2, f4),
            m(f8_2, f9_19),
        ]);
        let h8 = even_column(
            sum([m(f0_2, f8), m(f2_2, f6), m(f4, f4)]),
            sum([m(f1_2, f7), m(f3_2, f5), m(f9, f9_19)]),
        );
        let h9 = sum([
            m(f0_2, f9),
            m(f1_2, f8),
            m(f2_2, f7),
            m(f3_2, f6),
            m(f4_2, f5),
        ]);
        carry([h0, h1, h2, h3, h4, h5, h6, h7, h8, h9])
    }};
}

/// `f^2`.
#[inline]
#[target_feature(enable = "avx2")]
fn sqr(f: &Fe) -> Fe {
    sqr_limbs!(f.0)
}

/// `(a + b)^2`, the sum (not carried) formed limb by limb as the squaring reads it, so that
/// the ladder does not store it as an element first (20 stores per ladder step fewer with
/// [`sqr_of_dif`]; `#[inline(never)]`, as the other field operations end up, so that the
/// ladder's body does not take the squaring's registers).
#[inline(never)]
#[target_feature(enable = "avx2")]
fn sqr_of_sum(a: &Fe, b: &Fe) -> Fe {
    sqr_limbs!(core::array::from_fn(|i| _mm256_add_epi64(a.0[i], b.0[i])))
}

/// `(a - b)^2` with `a - b` as `a + 2p - b` (`b` must be carried), formed as the squaring
/// reads it, like [`sqr_of_sum`].
#[inline(never)]
#[target_feature(enable = "avx2")]
fn sqr_of_dif(a: &Fe, b: &Fe) -> Fe {
    sqr_limbs!(core::array::from_fn(|i| {
        _mm256_sub_epi64(_mm256_add_epi64(a.0[i], splat(TWO_P[i])), b.0[i])
    }))
}

/// `n` successive squarings (`n >= 1`).
///
/// Used by [`invert`] only (test builds).
///
/// Two at a time through a second element: `t = sqr(&t)` made the compiler square into a
/// temporary and `memcpy` it back (320 bytes, 254 times per inversion), since the result
/// would overwrite its own input.
#[cfg(test)]
#[inline]
#[target_feature(enable = "avx2")]
fn sqr_n(a: &Fe, n: u32) -> Fe {
    let mut t = sqr(a);
    for _ in 0..(n - 1) / 2 {
        let u = sqr(&t);
        t = sqr(&u);
    }
    if n.is_multiple_of(2) {
        t = sqr(&t);
    }
    t
}

/// `a + b` (not carried). The ladder forms its sums in [`swapped_sums`], [`sqr_of_sum`] and
/// [`plus_a24`]; the field tests use this one.
#[cfg(test)]
#[inline]
#[target_feature(enable = "avx2")]
fn add(a: &Fe, b: &Fe) -> Fe {
    Fe(core::array::from_fn(|i| _mm256_add_epi64(a.0[i], b.0[i])))
}

/// 2p in radix 2^25.5; every limb exceeds the matching limb of a carried element.
const TWO_P: [u64; 10] = {
    let mut t = [0u64; 10];
    let mut i = 0;
    while i < 10 {
        t[i] = if i % 2 == 0 {
            (1 << 27) - 2
        } else {
            (1 << 26) - 2
        };
        i += 1;
    }
    t[0] = (1 << 27) - 38;
    t
};

/// `a - b` as `a + 2p - b` (not carried); `b` must be carried.
#[inline]
#[target_feature(enable = "avx2")]
fn sub(a: &Fe, b: &Fe) -> Fe {
    Fe(core::array::from_fn(|i| {
        _mm256_sub_epi64(_mm256_add_epi64(a.0[i], splat(TWO_P[i])), b.0[i])
    }))
}

/// `121665 * e` (RFC 7748's a24), carried.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_a24(e: &Fe) -> Fe {
    let a24 = splat(121_665);
    carry(core::array::from_fn(|i| _mm256_mul_epu32(e.0[i], a24)))
}

/// `a + 121665 e`, the sum not carried (`121665 e` is).
///
/// `a` is read limb by limb as the sum is formed (a load each): read up front, the compiler
/// kept its limbs across the carry of `121665 e` and copied them to other stack slots.
#[inline]
#[target_feature(enable = "avx2")]
fn plus_a24(a: &Fe, e: &Fe) -> Fe {
    let t = mul_a24(e);
    Fe(core::array::from_fn(|i| {
        _mm256_add_epi64(ld(&a.0[i]), t.0[i])
    }))
}

/// Swaps `a` and `b` in the lanes where `mask` is all ones (it is all ones or all zeros).
#[inline]
#[target_feature(enable = "avx2")]
fn cswap(mask: __m256i, a: &mut Fe, b: &mut Fe) {
    for i in 0..10 {
        let t = _mm256_and_si256(_mm256_xor_si256(a.0[i], b.0[i]), mask);
        a.0[i] = _mm256_xor_si256(a.0[i], t);
        b.0[i] = _mm256_xor_si256(b.0[i], t);
    }
}

/// Writes the ladder step's sums `[x2 + z2, x2 - z2, x3 + z3, x3 - z3]` (not carried) of
/// `[x2, z2, x3, z3]` to `out`, after swapping `x2` with `x3` and `z2` with `z3` in the lanes where
/// `mask` is all ones (it is all ones or all zeros).
///
/// One pass limb by limb: the swapped values stay in registers and only the four sums are
/// stored (the ladder is bound by stores), where a separate swap would store the state first.
/// (Written through `&mut` so that the sums go straight to their slots, not through copies.)
#[inline]
#[target_feature(enable = "avx2")]
fn swapped_sums(mask: __m256i, [x2, z2, x3, z3]: [&Fe; 4], out: [&mut Fe; 4]) {
    for (i, &two_p) in TWO_P.iter().enumerate() {
        let tx = _mm256_and_si256(_mm256_xor_si256(x2.0[i], x3.0[i]), mask);
        let tz = _mm256_and_si256(_mm256_xor_si256(z2.0[i], z3.0[i]), mask);
        let (x2, x3) = (_mm256_xor_si256(x2.0[i], tx), _mm256_xor_si256(x3.0[i], tx));
        let (z2, z3) = (_mm256_xor_si256(z2.0[i], tz), _mm256_xor_si256(z3.0[i], tz));
        let two_p = splat(two_p);
        out[0].0[i] = _mm256_add_epi64(x2, z2);
        out[1].0[i] = _mm256_sub_epi64(_mm256_add_epi64(x2, two_p), z2);
        out[2].0[i] = _mm256_add_epi64(x3, z3);
        out[3].0[i] = _mm256_sub_epi64(_mm256_add_epi64(x3, two_p), z3);
    }
}

/// `z^(p-2)`, the inverse (the shared chain, `invert_chain`). The kernel leaves the
/// division to the batch (module `single`'s `affine_batch`); the field tests check this one.
#[cfg(test)]
#[inline]
#[target_feature(enable = "avx2")]
fn invert(z: &Fe) -> Fe {
    invert_chain!(z, sqr_n, mul)
}

/// Fully reduces a carried element to its canonical representative below p.
#[inline]
#[target_feature(enable = "avx2")]
fn canonical(a: &Fe) -> Fe {
    let mut h = a.0;
    // One sequential pass (with the 19-fold) and a second into limb 1: the value is then below
    // 2^255 + 2^26 < 2p and every limb fits its width except possibly limb 1 by one.
    carry_seq(&mut h);
    carry_step::<9>(&mut h);
    carry_step::<0>(&mut h);
    // q = floor((value + 19) / 2^255) is 1 exactly when value >= p.
    let mut q = _mm256_srli_epi64::<26>(_mm256_add_epi64(h[0], splat(19)));
    for (i, hi) in h.iter().enumerate().skip(1) {
        let t = _mm256_add_epi64(*hi, q);
        q = if i.is_multiple_of(2) {
            _mm256_srli_epi64::<26>(t)
        } else {
            _mm256_srli_epi64::<25>(t)
        };
    }
    // value - q p = value + 19 q - q 2^255: add 19 q, carry, drop bit 255.
    h[0] = _mm256_add_epi64(h[0], _mm256_mul_epu32(q, splat(19)));
    carry_seq(&mut h);
    h[9] = _mm256_and_si256(h[9], splat((1 << 25) - 1));
    Fe(h)
}

#[inline]
#[target_feature(enable = "avx2")]
fn to_lanes(v: __m256i) -> [u64; 4] {
    // SAFETY: `__m256i` and `[u64; 4]` have the same size and every bit pattern is valid for
    // both.
    unsafe { core::mem::transmute::<__m256i, [u64; 4]>(v) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn from_lanes(v: [u64; 4]) -> __m256i {
    _mm256_set_epi64x(v[3] as i64, v[2] as i64, v[1] as i64, v[0] as i64)
}

/// The `width` bits of the 256-bit little-endian number `w` starting at bit `off`.
fn bits(w: &[u64; 4], off: u32, width: u32) -> u64 {
    let lo = (off / 64) as usize;
    let sh = off % 64;
    let mut v = w[lo] >> sh;
    if sh != 0 && lo + 1 < 4 {
        v |= w[lo + 1] << (64 - sh);
    }
    v & ((1 << width) - 1)
}

/// Four numbers below 2^255 (little-endian words, one per lane) as a carried element.
#[inline]
#[target_feature(enable = "avx2")]
fn from_words(w: &[[u64; 4]; LANES]) -> Fe {
    Fe(core::array::from_fn(|i| {
        from_lanes(core::array::from_fn(|l| bits(&w[l], OFFSET[i], width(i))))
    }))
}

/// The four lanes of a canonical element as little-endian words.
#[inline]
#[target_feature(enable = "avx2")]
fn to_words(r: &Fe) -> [[u64; 4]; LANES] {
    let limbs = r.0.map(|v| to_lanes(v));
    core::array::from_fn(|l| {
        let mut w = [0u64; 4];
        for i in 0..10 {
            let v = (limbs[i][l] as u128) << (OFFSET[i] % 64);
            let at = (OFFSET[i] / 64) as usize;
            w[at] |= v as u64;
            if at + 1 < 4 {
                w[at + 1] |= (v >> 64) as u64;
            }
        }
        w
    })
}

/// Four X25519 ladders without the final division: the projective `(X, Z)` of every lane's
/// result, each canonical (below p), as little-endian words in `x` and `z`. The lane's X25519
/// is `X / Z`, zero where `Z` is zero (a small-order point); module `single`'s
/// `affine_batch` divides a whole batch's lanes with one inversion. Both outputs are
/// secret-derived: the caller wipes them.
///
/// # Safety
/// The CPU must support AVX2 (checked by [`super::Backend::is_supported`]).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn x25519_lanes_projective(
    scalars: &[[u8; 32]; LANES],
    points: &[[u8; 32]; LANES],
    x: &mut [[u64; 4]; LANES],
    z: &mut [[u64; 4]; LANES],
) {
    let mut sw = [[0u64; LANES]; 4];
    for l in 0..LANES {
        let w = clamped_scalar(&scalars[l]);
        for i in 0..4 {
            sw[i][l] = w[i];
        }
    }
    let sw = sw.map(|v| from_lanes(v));
    // Below 2^255 with every limb within its width: a carried element.
    let x1 = from_words(&points.each_ref().map(u_coordinate));
    let (x2, z2) = ladder(&sw, &x1);
    *x = to_words(&canonical(&x2));
    *z = to_words(&canonical(&z2));
}

/// The Montgomery ladder over the 255 bits of the clamped scalars `sw` (words as vectors) from
/// the u-coordinates `x1`: the projective `(x2, z2)` of every lane's result.
#[inline]
#[target_feature(enable = "avx2")]
fn ladder(sw: &[__m256i; 4], x1: &Fe) -> (Fe, Fe) {
    let x1_table = MulTable::new(x1);
    let one = fe_const([1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let zero = _mm256_setzero_si256();
    let k1 = splat(1);
    let mut x2 = one;
    let mut z2 = fe_const([0; 10]);
    let mut x3 = *x1;
    let mut z3 = one;
    let mut swap = zero;
    let [mut a, mut b, mut c, mut d] = [one; 4];
    for t in (0..255).rev() {
        let shift = splat((t % 64) as u64);
        let bit = _mm256_and_si256(_mm256_srlv_epi64(sw[t / 64], shift), k1);
        let k_t = _mm256_sub_epi64(zero, bit); // all ones where the bit is set
        let mask = _mm256_xor_si256(swap, k_t);
        swapped_sums(mask, [&x2, &z2, &x3, &z3], [&mut a, &mut b, &mut c, &mut d]);
        swap = k_t;
        // Ordered so that no operation needs the result of the one just before it: the
        // out-of-order core then always has independent work while a product's carries finish.
        let aa = sqr(&a);
        let bb = sqr(&b);
        let da = mul(&d, &a);
        let cb = mul(&c, &b);
        x2 = mul(&aa, &bb);
        let e = sub(&aa, &bb);
        let f = plus_a24(&aa, &e);
        let dif2 = sqr_of_dif(&da, &cb);
        x3 = sqr_of_sum(&da, &cb);
        z2 = mul(&e, &f);
        z3 = mul_by(&dif2, &x1_table);
    }
    cswap(swap, &mut x2, &mut x3);
    cswap(swap, &mut z2, &mut z3);
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
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(in crate::x25519) unsafe fn apply(
        op: Op,
        a: &[[u64; 4]; LANES],
        b: &[[u64; 4]; LANES],
    ) -> [[u64; 4]; LANES] {
        let (a, b) = (from_words(a), from_words(b));
        let r = match op {
            Op::Canonical => a,
            Op::Add => carry(add(&a, &b).0),
            Op::Sub => carry(sub(&a, &b).0),
            Op::Mul => mul(&a, &b),
            Op::Sqr => sqr(&a),
            Op::MulSums => mul(&add(&a, &b), &sub(&a, &b)),
            Op::SqrDifference => sqr(&sub(&a, &b)),
            Op::A24 => carry(add(&a, &mul_a24(&sub(&a, &b))).0),
            Op::Invert => invert(&a),
        };
        to_words(&canonical(&r))
    }

    /// [`canonical`] of the carried element with every limb at its bound (even limbs
    /// 2^26 - 1, odd limbs 2^25 + 2^19 - 1), and those limbs.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(in crate::x25519) unsafe fn canonical_of_largest() -> ([u64; 4], Vec<(u64, u32)>) {
        let limbs: [u64; 10] = core::array::from_fn(|i| {
            if i % 2 == 0 {
                (1 << 26) - 1
            } else {
                (1 << 25) + (1 << 19) - 1
            }
        });
        let r = canonical(&fe_const(limbs));
        let at = limbs.iter().zip(OFFSET).map(|(&l, o)| (l, o)).collect();
        (to_words(&r)[0], at)
    }
}
