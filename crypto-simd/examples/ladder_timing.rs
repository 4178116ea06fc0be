//! Per-operation time of one X25519 backend over batches of `n` (default 64), best of 15
//! samples, beside x25519-dalek's serial `x25519()` timed the same way: a quick A/B tool for
//! kernel changes (build the old and new binaries, run them alternately), and the way to find
//! a backend's crossover on a CPU (`Backend::min_vector_lanes`: run it for n = 1, 2, 3, ...).
//! Criterion's bench (`cargo bench -p mixplane-bench --bench x25519`) is the reference figure.
//!
//! `cargo run --release -p mixplane-crypto-simd --example ladder_timing -- avx2 [n]`

use mixplane_crypto_simd::x25519::{Backend, x25519_batch};
use std::hint::black_box;
use std::time::Instant;

/// Best time per operation of `f` (which runs `n` operations), over 15 samples of 20 calls.
fn best_per_op(n: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..20 {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / (20.0 * n as f64));
    }
    best
}

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "ifma".into());
    let n: usize = std::env::args()
        .nth(2)
        .map_or(64, |a| a.parse().expect("batch size"));
    let Some(backend) = Backend::supported().into_iter().find(|b| b.name() == name) else {
        eprintln!("backend {name} is not supported here");
        std::process::exit(2);
    };
    println!("{}", mixplane_crypto_simd::cpu::report());
    let scalars: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 ^ 0x5a; 32]).collect();
    let points: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 9; 32]).collect();
    let mut out = vec![[0u8; 32]; n];
    let ours = best_per_op(n, || {
        x25519_batch(backend, black_box(&scalars), &points, &mut out)
    });
    let dalek = best_per_op(n, || {
        for (s, p) in scalars.iter().zip(&points) {
            black_box(x25519_dalek::x25519(*black_box(s), *p));
        }
    });
    for i in 0..n {
        assert_eq!(
            out[i],
            x25519_dalek::x25519(scalars[i], points[i]),
            "lane {i}"
        );
    }
    println!(
        "{} batch {n}: {:.3} µs/op (x25519-dalek {:.3} µs/op; tails below {} lanes run one at a time)",
        backend.name(),
        ours * 1e6,
        dalek * 1e6,
        backend.min_vector_lanes()
    );
}
