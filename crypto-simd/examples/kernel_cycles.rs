//! Time per X25519 of one `x25519_batch` call on a busy machine: the minimum over many single
//! calls of a batch of `n` (default 4, one AVX2 kernel call), so that a call that the scheduler
//! interrupted or that shared its core does not count; then the core clock, measured with a
//! chain of dependent one-cycle adds, and the minimum in cycles per operation. Also prints the
//! 10th percentile and the median, which show how loaded the machine was.
//!
//! With `sweep` for `n` it measures batches of 4, 16 and 64 one after the other and prints,
//! for each, the minimum per call beside the minimum per operation (a batch of 64 shares one
//! field inversion between its lanes on the AVX2 backend).
//!
//! `cargo run --release -p mixplane-crypto-simd --example kernel_cycles -- avx2 [n|sweep] [samples]`

use mixplane_crypto_simd::x25519::{Backend, x25519_batch};
use std::hint::black_box;
use std::time::Instant;

/// The core clock in GHz: the best of 200 timings of 400 000 dependent one-cycle adds.
fn clock_ghz() -> f64 {
    let mut best = f64::MAX;
    for _ in 0..200 {
        let t = Instant::now();
        let mut x: u64 = 1;
        for _ in 0..100_000 {
            // SAFETY: four register additions; no memory, stack or flags that Rust relies on.
            unsafe {
                core::arch::asm!(
                    "add {0}, 1", "add {0}, 1", "add {0}, 1", "add {0}, 1",
                    inout(reg) x,
                    options(nomem, nostack)
                )
            };
        }
        black_box(x);
        best = best.min(t.elapsed().as_secs_f64());
    }
    400_000.0 / best / 1e9
}

/// Seconds per call of `samples` calls of a batch of `n`, sorted, after checking the outputs
/// against x25519-dalek.
fn per_call(backend: Backend, n: usize, samples: usize) -> Vec<f64> {
    let scalars: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 ^ 0x5a; 32]).collect();
    let points: Vec<[u8; 32]> = (0..n).map(|i| [(i as u8).wrapping_add(9); 32]).collect();
    let mut out = vec![[0u8; 32]; n];
    let mut t: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            x25519_batch(backend, black_box(&scalars), &points, &mut out);
            t.elapsed().as_secs_f64()
        })
        .collect();
    for i in 0..n {
        let want = x25519_dalek::x25519(scalars[i], points[i]);
        assert_eq!(out[i], want, "lane {i}");
    }
    t.sort_by(f64::total_cmp);
    t
}

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "avx2".into());
    let sizes: Vec<usize> = match args.next().as_deref() {
        None => vec![4],
        Some("sweep") => vec![4, 16, 64],
        Some(a) => vec![a.parse().expect("batch size or `sweep`")],
    };
    let samples: usize = args.next().map_or(3000, |a| a.parse().expect("samples"));
    let Some(backend) = Backend::supported().into_iter().find(|b| b.name() == name) else {
        eprintln!("backend {name} is not supported here");
        std::process::exit(2);
    };
    let runs: Vec<(usize, Vec<f64>)> = sizes
        .iter()
        .map(|&n| (n, per_call(backend, n, samples)))
        .collect();
    let ghz = clock_ghz();
    for (n, t) in runs {
        let us = |q: usize| t[q.min(samples - 1)] * 1e6 / n as f64;
        println!(
            "{} batch {n}: min {:.3} µs/op, p10 {:.3}, median {:.3} ({samples} calls; min {:.2} µs/call); clock {ghz:.2} GHz: {:.0} cycles/op (min)",
            backend.name(),
            us(0),
            us(samples / 10),
            us(samples / 2),
            t[0] * 1e6,
            t[0] * ghz * 1e9 / n as f64
        );
    }
}
