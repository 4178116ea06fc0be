//! Per-operation time of one X25519 backend over batches of 64, best of 15 samples: a quick
//! A/B tool for kernel changes (build the old and new binaries, run them alternately).
//! Criterion's bench (`cargo bench -p mixplane-bench --bench x25519`) is the reference figure.
//!
//! `cargo run --release -p mixplane-crypto-simd --example ladder_timing -- avx2`

use mixplane_crypto_simd::x25519::{Backend, x25519_batch};
use std::time::Instant;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "ifma".into());
    let Some(backend) = Backend::supported().into_iter().find(|b| b.name() == name) else {
        eprintln!("backend {name} is not supported here");
        std::process::exit(2);
    };
    let n = 64;
    let scalars: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 ^ 0x5a; 32]).collect();
    let points: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 9; 32]).collect();
    let mut out = vec![[0u8; 32]; n];
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..20 {
            x25519_batch(backend, std::hint::black_box(&scalars), &points, &mut out);
        }
        best = best.min(t.elapsed().as_secs_f64() / (20.0 * n as f64));
    }
    for i in 0..n {
        assert_eq!(
            out[i],
            x25519_dalek::x25519(scalars[i], points[i]),
            "lane {i}"
        );
    }
    println!("{}: {:.3} µs/op", backend.name(), best * 1e6);
}
