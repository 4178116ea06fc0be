//! SHA-256 compression per block: the 16-lane word-sliced [`compress_x16`] (AVX-512 where the
//! CPU has it) against the `sha2` crate's compression function one block at a time (SHA-NI where
//! the CPU has it), best of five rounds. A quick A/B tool; the Sphinx bench shows the effect on
//! a whole unwrap.
//!
//! `cargo run --release -p mixplane-crypto-simd --example sha256_timing`

use mixplane_crypto_simd::sha256::{Backend, BlockX16, IV, LANES, compress_x16, splat_state};
use sha2::block_api::compress256;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    println!("backend here: {}", Backend::best().name());
    let block: BlockX16 = std::array::from_fn(|t| {
        std::array::from_fn(|l| ((t * 31 + l * 7) as u32).wrapping_mul(0x9e37_79b9))
    });
    let bytes = [0x5au8; 64];
    let n = 100_000;
    let (mut x16, mut one) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let mut s = splat_state(&IV);
        let t = Instant::now();
        for _ in 0..n {
            compress_x16(black_box(&mut s), black_box(&block));
        }
        x16 = x16.min(t.elapsed().as_secs_f64() / (n * LANES) as f64);
        black_box(s);
        let mut s = IV;
        let t = Instant::now();
        for _ in 0..n * LANES {
            compress256(black_box(&mut s), black_box(&[bytes]));
        }
        one = one.min(t.elapsed().as_secs_f64() / (n * LANES) as f64);
        black_box(s);
    }
    println!(
        "per block: compress_x16 {:.1} ns/lane vs sha2 compress256 {:.1} ns = {:.2}x",
        x16 * 1e9,
        one * 1e9,
        one / x16
    );
}
