//! Known-answer and differential tests of every supported backend against x25519-dalek.

// Tests index several parallel arrays (scalars, points, outputs, expected) by lane.
#![allow(clippy::needless_range_loop)]

use super::*;

fn hex32(s: &str) -> [u8; 32] {
    assert_eq!(s.len(), 64);
    core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

fn reference(s: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(*s, *u)
}

/// Every backend the CPU supports (always includes the portable one).
fn backends() -> Vec<Backend> {
    let b = Backend::supported();
    eprintln!("testing backends: {:?}", b);
    b
}

fn one(backend: Backend, s: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
    let mut out = [[0u8; 32]];
    x25519_batch(backend, &[*s], &[*u], &mut out);
    out[0]
}

/// splitmix64: a small seeded generator for reproducible test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        b
    }
}

const P: &str = "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f";

/// How many of [`edge_points`] (the first ones) have small order.
const SMALL_ORDER: usize = 14;

/// u-coordinates that stress the edges: small order (in several encodings), non-canonical,
/// bit 255 set, twist points.
fn edge_points() -> Vec<[u8; 32]> {
    let mut v = vec![
        [0u8; 32], // 0: order 2 / infinity-like
        hex32("0100000000000000000000000000000000000000000000000000000000000000"), // 1: order 4
        // order-8 points
        hex32("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        hex32("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        // p - 1 (order 2), p (= 0), p + 1 (= 1)
        hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        hex32(P),
        hex32("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        // the same small-order points with bit 255 set (must be ignored)
        hex32("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880"),
        hex32("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7"),
        hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
        hex32("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
        hex32("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
        hex32("0000000000000000000000000000000000000000000000000000000000000080"),
        hex32("0100000000000000000000000000000000000000000000000000000000000080"),
        // order-8 points plus p as 256-bit numbers: with bit 255 ignored they are not small order
        hex32("cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880"),
        hex32("4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7"),
        // non-canonical u in [p, 2^255): p + 2 .. p + 18, 2^255 - 1
        hex32("f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        hex32("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        hex32("feffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        hex32("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
        // twist points (u^3 + 486662 u^2 + u is a non-square) and other small u
        hex32("0200000000000000000000000000000000000000000000000000000000000000"),
        hex32("0300000000000000000000000000000000000000000000000000000000000000"),
        hex32("0400000000000000000000000000000000000000000000000000000000000000"),
        BASEPOINT,
        // the base point with bit 255 set
        hex32("0900000000000000000000000000000000000000000000000000000000000080"),
        // limbs full of ones in both radices
        hex32("ffffffffffffff0fffffffffffff0f0000f0ffffffffff0fffffffffffffff3f"),
    ];
    // p + k for the remaining small k, and 2^255 - 1 - k
    for k in 3u8..19 {
        let mut u = hex32(P);
        u[0] = u[0].wrapping_add(k);
        v.push(u);
        let mut w = [0xffu8; 32];
        w[31] = 0x7f;
        w[0] = 0xff - k;
        v.push(w);
    }
    v
}

fn edge_scalars() -> Vec<[u8; 32]> {
    let mut rng = Rng(7);
    vec![
        [0u8; 32],
        [0xffu8; 32],
        hex32("0100000000000000000000000000000000000000000000000000000000000000"),
        hex32("0800000000000000000000000000000000000000000000000000000000000040"),
        hex32("f8ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        rng.bytes(),
        rng.bytes(),
    ]
}

#[test]
fn rfc7748_vectors() {
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for backend in backends() {
        for (s, u, want) in cases {
            assert_eq!(
                one(backend, &hex32(s), &hex32(u)),
                hex32(want),
                "{}",
                backend.name()
            );
        }
        // Both vectors in one batch, in every lane position.
        let n = backend.lanes() + 1;
        let scalars: Vec<_> = (0..n).map(|i| hex32(cases[i % 2].0)).collect();
        let points: Vec<_> = (0..n).map(|i| hex32(cases[i % 2].1)).collect();
        let mut out = vec![[0u8; 32]; n];
        x25519_batch(backend, &scalars, &points, &mut out);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(*o, hex32(cases[i % 2].2), "{} lane {i}", backend.name());
        }
    }
}

fn iterate(backend: Backend, n: u32) -> [u8; 32] {
    let mut k = BASEPOINT;
    let mut u = BASEPOINT;
    for _ in 0..n {
        let r = one(backend, &k, &u);
        u = k;
        k = r;
    }
    k
}

#[test]
fn rfc7748_iterated_1_and_1000() {
    for backend in backends() {
        assert_eq!(
            iterate(backend, 1),
            hex32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"),
            "{}",
            backend.name()
        );
        assert_eq!(
            iterate(backend, 1000),
            hex32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"),
            "{}",
            backend.name()
        );
    }
}

#[test]
#[ignore = "slow: a million sequential X25519s per backend"]
fn rfc7748_iterated_1_000_000() {
    for backend in backends() {
        assert_eq!(
            iterate(backend, 1_000_000),
            hex32("7c3911e0ab2586fd864497297e575e6f3bc601c0883c30df5f4dd2d24f665424"),
            "{}",
            backend.name()
        );
    }
}

/// `count` random pairs from `seed`, checked in batches of `batch` against x25519-dalek.
fn differential(seed: u64, count: usize, batch: usize) {
    let backends = backends();
    let mut rng = Rng(seed);
    let mut done = 0;
    while done < count {
        let n = batch.min(count - done);
        let scalars: Vec<_> = (0..n).map(|_| rng.bytes()).collect();
        let points: Vec<_> = (0..n).map(|_| rng.bytes()).collect();
        let want: Vec<_> = scalars
            .iter()
            .zip(&points)
            .map(|(s, u)| reference(s, u))
            .collect();
        let mut out = vec![[0u8; 32]; n];
        for &backend in &backends {
            x25519_batch(backend, &scalars, &points, &mut out);
            for i in 0..n {
                assert_eq!(
                    out[i],
                    want[i],
                    "{} seed {seed} pair {}: s={:02x?} u={:02x?}",
                    backend.name(),
                    done + i,
                    scalars[i],
                    points[i]
                );
            }
        }
        done += n;
    }
}

// 4 x 25,000 = 100,000 random pairs, each checked with every supported backend; split so the
// test harness runs them in parallel.
#[test]
fn differential_random_a() {
    differential(1, 25_000, 64);
}

#[test]
fn differential_random_b() {
    differential(2, 25_000, 61);
}

#[test]
fn differential_random_c() {
    differential(3, 25_000, 200);
}

#[test]
fn differential_random_d() {
    differential(4, 25_000, 1);
}

#[test]
fn edge_cases_every_pair() {
    let points = edge_points();
    let scalars = edge_scalars();
    for backend in backends() {
        for s in &scalars {
            // All edge points against this scalar in one batch, and one at a time.
            let ss = vec![*s; points.len()];
            let mut out = vec![[0u8; 32]; points.len()];
            x25519_batch(backend, &ss, &points, &mut out);
            for (u, o) in points.iter().zip(&out) {
                let want = reference(s, u);
                assert_eq!(*o, want, "{} s={s:02x?} u={u:02x?}", backend.name());
                assert_eq!(one(backend, s, u), want, "{} single", backend.name());
            }
        }
    }
}

#[test]
fn small_order_points_give_zero() {
    let mut rng = Rng(11);
    for backend in backends() {
        for u in edge_points().iter().take(SMALL_ORDER) {
            let s = rng.bytes();
            assert_eq!(
                one(backend, &s, u),
                [0u8; 32],
                "{} u={u:02x?}",
                backend.name()
            );
        }
    }
}

/// Lanes for a batch of `n`: edge and random scalars and points mixed at positions that vary
/// with `round`.
fn mixed_lanes(rng: &mut Rng, n: usize, round: usize) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let (edges, escalars) = (edge_points(), edge_scalars());
    let scalars = (0..n)
        .map(|i| {
            if (i + round).is_multiple_of(3) {
                escalars[(i * 5 + round) % escalars.len()]
            } else {
                rng.bytes()
            }
        })
        .collect();
    let points = (0..n)
        .map(|i| {
            if (i + round).is_multiple_of(2) {
                edges[(i * 7 + n + round) % edges.len()]
            } else {
                rng.bytes()
            }
        })
        .collect();
    (scalars, points)
}

/// Every batch length 1..=20 (and lengths around the IFMA kernel's chunks of sixteen), for
/// every backend, with its own tail threshold and with every tail forced through the kernel
/// (`1`) or through the single-operation ladder (`usize::MAX`): equal to x25519-dalek.
#[test]
fn batch_lengths_1_to_20_every_tail_path() {
    let mut rng = Rng(5);
    for backend in backends() {
        for min in [backend.min_vector_lanes(), 1, usize::MAX] {
            for n in (1..=20usize).chain([23, 24, 25, 32, 33, 40]) {
                for round in 0..3 {
                    let (scalars, points) = mixed_lanes(&mut rng, n, round);
                    let mut out = vec![[0xaau8; 32]; n];
                    batch_split(backend, min, &scalars, &points, &mut out);
                    for i in 0..n {
                        assert_eq!(
                            out[i],
                            reference(&scalars[i], &points[i]),
                            "{} min {min} n={n} lane {i}",
                            backend.name()
                        );
                    }
                }
            }
            // Empty batch is fine.
            batch_split(backend, min, &[], &[], &mut []);
        }
    }
}

#[test]
fn vector_backends_take_the_kernel_from_their_threshold() {
    // The thresholds are what the docs say: AVX2 sends a lone lane to the single-operation
    // ladder, IFMA never does, and no threshold exceeds the backend's lanes.
    assert_eq!(Backend::Avx2.min_vector_lanes(), 2);
    assert_eq!(Backend::Ifma.min_vector_lanes(), 1);
    for b in Backend::ALL {
        assert!((1..=b.lanes()).contains(&b.min_vector_lanes()), "{b:?}");
    }
}

#[test]
fn small_order_lane_does_not_affect_others() {
    let small = &edge_points()[..SMALL_ORDER];
    let mut rng = Rng(99);
    for backend in backends() {
        let n = 2 * backend.lanes() + 3;
        let scalars: Vec<_> = (0..n).map(|_| rng.bytes()).collect();
        let points: Vec<_> = (0..n).map(|_| rng.bytes()).collect();
        let mut base = vec![[0u8; 32]; n];
        x25519_batch(backend, &scalars, &points, &mut base);
        for i in 0..n {
            assert_eq!(base[i], reference(&scalars[i], &points[i]));
        }
        for (k, s) in small.iter().enumerate() {
            let victim = (k * 3) % n;
            let mut pts = points.clone();
            pts[victim] = *s;
            let mut out = vec![[0u8; 32]; n];
            x25519_batch(backend, &scalars, &pts, &mut out);
            for i in 0..n {
                if i == victim {
                    assert_eq!(out[i], [0u8; 32], "{} small-order lane", backend.name());
                } else {
                    assert_eq!(out[i], base[i], "{} lane {i} changed", backend.name());
                }
            }
        }
        // Every lane of a chunk small-order except one.
        let mut pts = vec![small[2]; n];
        pts[1] = points[1];
        let mut out = vec![[0u8; 32]; n];
        x25519_batch(backend, &scalars, &pts, &mut out);
        for i in 0..n {
            let want = if i == 1 { base[1] } else { [0u8; 32] };
            assert_eq!(out[i], want, "{} lane {i}", backend.name());
        }
    }
}

/// The AVX2 path divides a whole group of lanes with one inversion (Montgomery's trick): small-
/// order points (`Z` = 0) mixed into batches larger than a group, at the group's and the
/// kernel chunks' edges and in between, must give zero and leave every other lane as
/// x25519-dalek and the portable ladder compute it; so must a group that is all small-order
/// but one lane, and one that is all small-order.
#[test]
fn small_order_points_mixed_into_large_batches() {
    let small = &edge_points()[..SMALL_ORDER];
    let mut rng = Rng(0x5eed);
    let n = 150; // groups of 64, 64 and 22 lanes; the last chunk of four has two
    let scalars: Vec<_> = (0..n).map(|_| rng.bytes()).collect();
    let clean: Vec<_> = (0..n).map(|_| rng.bytes()).collect();
    let positions = [0, 1, 3, 4, 5, 62, 63, 64, 65, 100, 127, 128, 147, 148, 149];
    let mut mixed = clean.clone();
    for (k, &i) in positions.iter().enumerate() {
        mixed[i] = small[k % small.len()];
    }
    // Lanes 64..128 (one whole group) all small-order but lane 70; lanes 128.. all small.
    let mut crowded = clean.clone();
    for i in 64..n {
        if i != 70 {
            crowded[i] = small[i % small.len()];
        }
    }
    for points in [&clean, &mixed, &crowded] {
        let mut portable = vec![[0u8; 32]; n];
        x25519_batch(Backend::Portable, &scalars, points, &mut portable);
        for backend in backends() {
            let mut out = vec![[0xaau8; 32]; n];
            x25519_batch(backend, &scalars, points, &mut out);
            for i in 0..n {
                let want = reference(&scalars[i], &points[i]);
                assert_eq!(out[i], want, "{} lane {i}", backend.name());
                assert_eq!(out[i], portable[i], "{} lane {i}", backend.name());
                if small.contains(&points[i]) {
                    assert_eq!(out[i], [0u8; 32], "{} lane {i}", backend.name());
                } else {
                    assert_ne!(out[i], [0u8; 32], "{} lane {i}", backend.name());
                }
            }
        }
    }
}

#[test]
fn single_x25519_matches_reference() {
    let mut rng = Rng(3);
    for _ in 0..50 {
        let (s, u) = (rng.bytes(), rng.bytes());
        assert_eq!(x25519(&s, &u), reference(&s, &u));
    }
}

#[test]
fn backend_names_and_parsing() {
    assert_eq!(
        Backend::ALL,
        &[Backend::Ifma, Backend::Avx2, Backend::Portable]
    );
    for &b in Backend::ALL {
        let parsed = Backend::from_name(b.name());
        if b.is_supported() {
            assert_eq!(parsed, Ok(b));
            assert_eq!(Backend::from_name(&b.name().to_uppercase()), Ok(b));
            assert_eq!(Backend::from_name(&format!("  {} ", b.name())), Ok(b));
        } else {
            assert_eq!(parsed, Err(BackendError::Unsupported(b.name())));
        }
    }
    assert_eq!(Backend::from_name("serial"), Ok(Backend::Portable));
    assert_eq!(
        Backend::from_name("avx1024"),
        Err(BackendError::Unknown("avx1024".into()))
    );
    assert_eq!(
        Backend::from_name(""),
        Err(BackendError::Unknown("".into()))
    );
    assert_eq!(Backend::Ifma.lanes(), 16);
    assert_eq!(Backend::Avx2.lanes(), 4);
    assert_eq!(Backend::Portable.lanes(), 1);
    assert!(Backend::Portable.is_supported());
    let f = crate::cpu::in_force();
    assert_eq!(
        Backend::Ifma.is_supported(),
        cfg!(target_arch = "x86_64") && f.avx512ifma
    );
    assert_eq!(
        Backend::Avx2.is_supported(),
        cfg!(target_arch = "x86_64") && f.avx2
    );
    // Supported backends are listed fastest first.
    let sup = Backend::supported();
    assert_eq!(sup.last(), Some(&Backend::Portable));
    assert!(
        sup.windows(2)
            .all(|w| Backend::ALL.iter().position(|b| *b == w[0])
                < Backend::ALL.iter().position(|b| *b == w[1]))
    );
}

#[test]
fn choice_follows_the_features() {
    use crate::cpu::{Cap, Features};
    let all = Features {
        avx2: true,
        avx512f: true,
        avx512ifma: true,
    };
    let x86 = cfg!(target_arch = "x86_64");
    assert_eq!(Backend::for_features(Features::NONE), Backend::Portable);
    let want = if x86 {
        Backend::Avx2
    } else {
        Backend::Portable
    };
    assert_eq!(Backend::for_features(all.capped(Cap::Avx2)), want);
    let want = if x86 {
        Backend::Ifma
    } else {
        Backend::Portable
    };
    assert_eq!(Backend::for_features(all), want);
    assert_eq!(
        Backend::for_features(all.capped(Cap::Portable)),
        Backend::Portable
    );
    // best() is the fastest backend the features in force allow.
    assert_eq!(Backend::best(), Backend::supported()[0]);
    assert_eq!(
        Backend::best(),
        Backend::for_features(crate::cpu::in_force())
    );
    assert!(Backend::best().is_supported());
}

#[test]
#[should_panic(expected = "one output per scalar")]
fn mismatched_lengths_panic() {
    x25519_batch(Backend::Portable, &[[0; 32]], &[[0; 32]], &mut []);
}

/// The single-operation ladder, on plain x86-64 and (where the CPU has them) with BMI2/ADX,
/// against x25519-dalek: every edge point with every edge scalar, then random pairs.
#[test]
fn single_operation_ladder_matches_reference() {
    let mut pairs: Vec<([u8; 32], [u8; 32])> = Vec::new();
    for u in edge_points() {
        for s in edge_scalars() {
            pairs.push((s, u));
        }
    }
    let mut rng = Rng(11);
    pairs.extend((0..200).map(|_| (rng.bytes(), rng.bytes())));
    for (s, u) in &pairs {
        let want = reference(s, u);
        assert_eq!(super::single::ladder_plain(s, u), want, "plain {s:?} {u:?}");
        assert_eq!(super::single::x25519(s, u), want, "dispatched {s:?} {u:?}");
    }
}
