//! X25519 over a batch of 64: every supported `mixplane-crypto-simd` backend against
//! x25519-dalek's serial `x25519()`, in the same run.
//!
//! Besides criterion's report, prints the CPU's features and the cap in force, then one
//! comparison line per backend and batch size (1, 2, 4, 8, 16, 64), timed directly with
//! `std::time::Instant`, the two sides sampled alternately, best of seven samples.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mixplane_bench::{per_item_pair, us};
use mixplane_crypto_simd::x25519::{Backend, x25519_batch};

const BATCH: usize = 64;

/// Deterministic inputs (splitmix64).
fn inputs() -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut bytes = || {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&next().to_le_bytes());
        }
        b
    };
    let scalars = (0..BATCH).map(|_| bytes()).collect();
    let points = (0..BATCH).map(|_| bytes()).collect();
    (scalars, points)
}

fn dalek_batch(scalars: &[[u8; 32]], points: &[[u8; 32]], out: &mut [[u8; 32]]) {
    for ((s, p), o) in scalars.iter().zip(points).zip(out.iter_mut()) {
        *o = x25519_dalek::x25519(*s, *p);
    }
}

/// The batch sizes compared with x25519-dalek.
const BATCH_SIZES: [usize; 6] = [1, 2, 4, 8, 16, 64];

fn print_comparison() {
    let (scalars, points) = inputs();
    let mut want = vec![[0u8; 32]; BATCH];
    dalek_batch(&scalars, &points, &mut want);
    println!("{}", mixplane_crypto_simd::cpu::report());
    println!("best X25519 backend here: {}", Backend::best().name());
    for backend in Backend::supported() {
        let mut out = vec![[0u8; 32]; BATCH];
        x25519_batch(backend, &scalars, &points, &mut out);
        assert_eq!(out, want, "{} disagrees with x25519-dalek", backend.name());
        for n in BATCH_SIZES {
            let (s, p) = (&scalars[..n], &points[..n]);
            let mut out = vec![[0u8; 32]; n];
            let mut out2 = vec![[0u8; 32]; n];
            let (t, dalek) = per_item_pair(
                || x25519_batch(backend, black_box(s), black_box(p), &mut out),
                n as u32,
                || dalek_batch(black_box(s), black_box(p), &mut out2),
                n as u32,
            );
            println!(
                "x25519 {} batch {n:>2}: {:.2} µs/op vs x25519-dalek {:.2} µs/op = {:.2}x",
                backend.name(),
                us(t),
                us(dalek),
                dalek.as_secs_f64() / t.as_secs_f64()
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    if !mixplane_bench::profiling() {
        print_comparison();
    }
    let (scalars, points) = inputs();
    let mut out = vec![[0u8; 32]; BATCH];
    let mut g = c.benchmark_group("x25519_batch64");
    g.throughput(Throughput::Elements(BATCH as u64));
    for backend in Backend::supported() {
        g.bench_function(backend.name(), |b| {
            b.iter(|| x25519_batch(backend, black_box(&scalars), black_box(&points), &mut out))
        });
    }
    g.bench_function("x25519-dalek", |b| {
        b.iter(|| dalek_batch(black_box(&scalars), black_box(&points), &mut out))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
