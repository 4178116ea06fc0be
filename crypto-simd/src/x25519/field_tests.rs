//! Field arithmetic of every vector backend the CPU supports against the portable reference
//! field ([`Fe51`]), on edge values and random ones, each result compared in canonical form.

use super::Backend;
use super::field51::Fe51;
use proptest::prelude::*;

/// A field operation, applied the way the ladder applies it (sums and differences as
/// multiplication inputs, the a24 step on a difference).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// `a` (only reduced to canonical form).
    Canonical,
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a^2`.
    Sqr,
    /// `(a + b) (a - b)`.
    MulSums,
    /// `(a - b)^2`.
    SqrDifference,
    /// `a + 121665 (a - b)`.
    A24,
    /// `a^(p-2)`.
    Invert,
}

const OPS: [Op; 9] = [
    Op::Canonical,
    Op::Add,
    Op::Sub,
    Op::Mul,
    Op::Sqr,
    Op::MulSums,
    Op::SqrDifference,
    Op::A24,
    Op::Invert,
];

/// p = 2^255 - 19 as words.
const P: [u64; 4] = [u64::MAX - 18, u64::MAX, u64::MAX, u64::MAX >> 1];

/// `p + k` (or `p - k` for negative `k`) as words; the result stays below 2^255.
fn p_plus(k: i64) -> [u64; 4] {
    let mut w = P;
    w[0] = w[0].wrapping_add_signed(k);
    w
}

fn reference(op: Op, a: &[u64; 4], b: &[u64; 4]) -> [u64; 4] {
    let (x, y) = (Fe51::from_words(a), Fe51::from_words(b));
    let r = match op {
        Op::Canonical => x,
        Op::Add => x.add(&y),
        Op::Sub => x.sub(&y),
        Op::Mul => x.mul(&y),
        Op::Sqr => x.sqr(),
        Op::MulSums => x.add(&y).mul(&x.sub(&y)),
        Op::SqrDifference => x.sub(&y).sqr(),
        Op::A24 => x.add(&Fe51::from_u64(121_665).mul(&x.sub(&y))),
        Op::Invert => x.invert(),
    };
    r.canonical_words()
}

/// The vector backends the CPU supports, with their field operations on a slice of lanes.
type Apply = fn(Op, &[[u64; 4]], &[[u64; 4]]) -> Vec<[u64; 4]>;

fn vector_backends() -> Vec<(Backend, Apply)> {
    let mut v: Vec<(Backend, Apply)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if Backend::Avx2.is_supported() {
            v.push((Backend::Avx2, |op, a, b| {
                in_chunks(a, b, |a, b| {
                    // SAFETY: the features in force, a subset of the CPU's, include AVX2.
                    unsafe { super::avx2::testing::apply(op, a, b) }
                })
            }));
        }
        if Backend::Ifma.is_supported() {
            v.push((Backend::Ifma, |op, a, b| {
                in_chunks(a, b, |a, b| {
                    // SAFETY: the features in force, a subset of the CPU's, include AVX-512
                    // F, VL and IFMA.
                    unsafe { super::ifma::testing::apply(op, a, b) }
                })
            }));
        }
    }
    eprintln!(
        "field tests of: {:?}",
        v.iter().map(|(b, _)| b.name()).collect::<Vec<_>>()
    );
    v
}

/// Runs `f` over chunks of `N` lanes, the last one padded with zeros.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn in_chunks<const N: usize>(
    a: &[[u64; 4]],
    b: &[[u64; 4]],
    f: impl Fn(&[[u64; 4]; N], &[[u64; 4]; N]) -> [[u64; 4]; N],
) -> Vec<[u64; 4]> {
    let mut out = Vec::with_capacity(a.len());
    for (ca, cb) in a.chunks(N).zip(b.chunks(N)) {
        let mut ta = [[0u64; 4]; N];
        let mut tb = [[0u64; 4]; N];
        ta[..ca.len()].copy_from_slice(ca);
        tb[..cb.len()].copy_from_slice(cb);
        out.extend_from_slice(&f(&ta, &tb)[..ca.len()]);
    }
    out
}

/// Every backend's `op` on the lanes `a`, `b` equals the reference, lane by lane.
fn check(op: Op, a: &[[u64; 4]], b: &[[u64; 4]]) {
    for (backend, apply) in vector_backends() {
        let got = apply(op, a, b);
        for (i, g) in got.iter().enumerate() {
            let want = reference(op, &a[i], &b[i]);
            assert_eq!(
                *g,
                want,
                "{} {op:?} a={:x?} b={:x?}",
                backend.name(),
                a[i],
                b[i]
            );
        }
    }
}

/// Numbers below 2^255 at the edges of the field and of the limb layouts.
fn edge_values() -> Vec<[u64; 4]> {
    let mut v = vec![
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [2, 0, 0, 0],
        [19, 0, 0, 0],
        [121_665, 0, 0, 0],
        p_plus(-1),
        P,
        p_plus(1),
        p_plus(18), // 2^255 - 1
        p_plus(-19),
        [0, 0, 0, 1 << 62],
        [(1 << 52) - 1, 0, 0, 0],
        [1 << 51, 0, 0, 0],
        [0, 0, 0, (1 << 63) - (1 << 47)],
        [u64::MAX, 0, u64::MAX, 0],
        [
            0x0fff_ffff_ffff_ffff,
            0x000f_ffff_ffff_ffff,
            0x0fff_ffff_fff0_0000,
            0x3fff_ffff_ffff_ffff,
        ],
    ];
    // Every limb full in radix 2^25.5 and 2^52 (a single bit off the top).
    v.push([u64::MAX, u64::MAX, u64::MAX, (1 << 62) - 1]);
    v
}

#[test]
fn canonical_at_the_edges() {
    let cases: [([u64; 4], [u64; 4]); 6] = [
        (p_plus(-1), p_plus(-1)),
        (P, [0; 4]),
        (p_plus(1), [1, 0, 0, 0]),
        (p_plus(18), [18, 0, 0, 0]), // 2^255 - 1
        ([0; 4], [0; 4]),
        ([1, 0, 0, 0], [1, 0, 0, 0]),
    ];
    for (x, want) in cases {
        assert_eq!(
            Fe51::from_words(&x).canonical_words(),
            want,
            "reference {x:x?}"
        );
    }
    let xs: Vec<_> = cases.iter().map(|c| c.0).collect();
    for (backend, apply) in vector_backends() {
        let got = apply(Op::Canonical, &xs, &xs);
        for ((x, want), g) in cases.iter().zip(got) {
            assert_eq!(g, *want, "{} canonical({x:x?})", backend.name());
        }
    }
}

#[test]
fn canonical_of_the_largest_limbs() {
    #[cfg(target_arch = "x86_64")]
    {
        type Run = (&'static str, ([u64; 4], Vec<(u64, u32)>));
        let mut runs: Vec<Run> = Vec::new();
        if Backend::Avx2.is_supported() {
            // SAFETY: the features in force, a subset of the CPU's, include AVX2.
            runs.push(("avx2", unsafe {
                super::avx2::testing::canonical_of_largest()
            }));
        }
        if Backend::Ifma.is_supported() {
            // SAFETY: the features in force, a subset of the CPU's, include AVX-512 F/VL/IFMA.
            runs.push(("ifma", unsafe {
                super::ifma::testing::canonical_of_largest()
            }));
        }
        for (name, (got, limbs)) in runs {
            let value = limbs.iter().fold(Fe51::ZERO, |acc, &(l, off)| {
                acc.add(&Fe51::from_u64(l).mul(&Fe51::pow2(off)))
            });
            assert_eq!(got, value.canonical_words(), "{name}");
        }
    }
}

#[test]
fn every_op_on_every_pair_of_edge_values() {
    let edges = edge_values();
    let (a, b): (Vec<_>, Vec<_>) = edges
        .iter()
        .flat_map(|x| edges.iter().map(move |y| (*x, *y)))
        .unzip();
    for op in OPS {
        check(op, &a, &b);
    }
}

#[test]
fn reference_field_is_a_field() {
    // The reference itself: distributivity, inverse, and p ≡ 0, against plain arithmetic.
    let edges = edge_values();
    for a in &edges {
        for b in &edges {
            let (x, y) = (Fe51::from_words(a), Fe51::from_words(b));
            let lhs = x.add(&y).mul(&x.sub(&y)).canonical_words();
            let rhs = x.sqr().sub(&y.sqr()).canonical_words();
            assert_eq!(lhs, rhs, "{a:x?} {b:x?}");
        }
        let x = Fe51::from_words(a);
        let inv = x.mul(&x.invert()).canonical_words();
        let zero = x.canonical_words() == [0; 4];
        assert_eq!(inv, if zero { [0; 4] } else { [1, 0, 0, 0] }, "{a:x?}");
    }
    assert_eq!(Fe51::pow2(255).canonical_words(), [19, 0, 0, 0]);
    let big = Fe51::from_u64(u64::MAX).sqr().canonical_words();
    let want = u128::from(u64::MAX) * u128::from(u64::MAX);
    assert_eq!(big, [want as u64, (want >> 64) as u64, 0, 0]);
}

/// A number below 2^255.
fn below_2_255() -> impl Strategy<Value = [u64; 4]> {
    any::<[u64; 4]>().prop_map(|mut w| {
        w[3] >>= 1;
        w
    })
}

proptest! {
    #[test]
    fn random_values_match_the_reference(
        pairs in proptest::collection::vec((below_2_255(), below_2_255()), 1..40),
    ) {
        let (a, b): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        for op in OPS {
            check(op, &a, &b);
        }
    }
}
