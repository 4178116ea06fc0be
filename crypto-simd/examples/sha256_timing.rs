//! SHA-256 compression per block: the 16-lane word-sliced compression on every backend the
//! features in force allow (AVX-512: sixteen lanes in one pass; AVX2: eight lanes per pass, two
//! passes) against the `sha2` crate's compression function one block at a time (SHA-NI where
//! the CPU has it), best of `ROUNDS` rounds each, the backends and the single block
//! interleaved. A quick A/B tool; the Sphinx bench shows the effect on a whole unwrap.
//!
//! `cargo run --release -p mixplane-crypto-simd --example sha256_timing`

use mixplane_crypto_simd::cpu;
use mixplane_crypto_simd::sha256::{Backend, BlockX16, IV, LANES, compress_x16_on, splat_state};
use sha2::block_api::compress256;
use std::hint::black_box;
use std::time::Instant;

const ROUNDS: usize = 7;
const CALLS: usize = 50_000;

/// Seconds per lane and block of one round of `CALLS` calls on `backend`.
fn time_x16(backend: Backend, block: &BlockX16) -> f64 {
    let mut s = splat_state(&IV);
    let t = Instant::now();
    for _ in 0..CALLS {
        compress_x16_on(backend, black_box(&mut s), black_box(block));
    }
    black_box(s);
    t.elapsed().as_secs_f64() / (CALLS * LANES) as f64
}

/// Seconds per block of the `sha2` crate, one block at a time.
fn time_one() -> f64 {
    let bytes = [0x5au8; 64];
    let mut s = IV;
    let t = Instant::now();
    for _ in 0..CALLS * LANES {
        compress256(black_box(&mut s), black_box(&[bytes]));
    }
    black_box(s);
    t.elapsed().as_secs_f64() / (CALLS * LANES) as f64
}

fn main() {
    println!("{}; SHA-NI: {}", cpu::report(), cpu::sha_ni());
    println!("backend in force: {}", Backend::best().name());
    let block: BlockX16 = std::array::from_fn(|t| {
        std::array::from_fn(|l| ((t * 31 + l * 7) as u32).wrapping_mul(0x9e37_79b9))
    });
    let backends: Vec<Backend> = Backend::ALL
        .iter()
        .copied()
        .filter(|b| b.is_available())
        .collect();
    let mut best = vec![f64::MAX; backends.len()];
    let mut one = f64::MAX;
    for _ in 0..ROUNDS {
        for (b, best) in backends.iter().zip(&mut best) {
            *best = best.min(time_x16(*b, &block));
        }
        one = one.min(time_one());
    }
    println!(
        "sha2 compress256 one block at a time: {:.1} ns per block",
        one * 1e9
    );
    for (b, t) in backends.iter().zip(&best) {
        println!(
            "compress_x16 on {:<8}: {:.1} ns per lane and block = {:.2}x the single block",
            b.name(),
            t * 1e9,
            one / t
        );
    }
}
