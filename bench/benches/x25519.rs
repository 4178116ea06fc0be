//! X25519 over a batch of 64: every supported `mixplane-crypto-simd` backend against
//! x25519-dalek's serial `x25519()`, in the same run.
//!
//! Besides criterion's report, prints one comparison line per backend, timed directly with
//! `std::time::Instant` over enough batches to be stable.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

/// Batches per sample so that one sample of `f` takes about 100 ms.
fn calibrate(f: &mut impl FnMut()) -> u32 {
    f(); // warm up
    let start = Instant::now();
    let mut iters = 0u32;
    while start.elapsed() < Duration::from_millis(30) {
        f();
        iters += 1;
    }
    let per_batch = start.elapsed() / iters;
    (Duration::from_millis(100).as_nanos() / per_batch.as_nanos().max(1)).max(1) as u32
}

/// Mean time per X25519 operation of one sample of `n` batches.
fn sample(f: &mut impl FnMut(), n: u32) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / (n * BATCH as u32)
}

/// Per-operation times of `a` and `b`, sampled alternately (so that load from other
/// processes affects both alike), best of seven samples each.
fn per_op_pair(mut a: impl FnMut(), mut b: impl FnMut()) -> (Duration, Duration) {
    let (na, nb) = (calibrate(&mut a), calibrate(&mut b));
    let (mut ta, mut tb) = (Duration::MAX, Duration::MAX);
    for _ in 0..7 {
        ta = ta.min(sample(&mut a, na));
        tb = tb.min(sample(&mut b, nb));
    }
    (ta, tb)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print_comparison() {
    let (scalars, points) = inputs();
    let mut want = vec![[0u8; 32]; BATCH];
    dalek_batch(&scalars, &points, &mut want);
    println!(
        "x25519 batch of {BATCH}, best backend here: {}",
        Backend::best().name()
    );
    for backend in Backend::supported() {
        let mut out = vec![[0u8; 32]; BATCH];
        x25519_batch(backend, &scalars, &points, &mut out);
        assert_eq!(out, want, "{} disagrees with x25519-dalek", backend.name());
        let mut out2 = vec![[0u8; 32]; BATCH];
        let (t, dalek) = per_op_pair(
            || x25519_batch(backend, black_box(&scalars), black_box(&points), &mut out),
            || dalek_batch(black_box(&scalars), black_box(&points), &mut out2),
        );
        println!(
            "x25519 {}: {:.2} µs/op vs x25519-dalek {:.2} µs/op = {:.2}x",
            backend.name(),
            us(t),
            us(dalek),
            dalek.as_secs_f64() / t.as_secs_f64()
        );
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
