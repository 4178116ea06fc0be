//! Keyed BLAKE2b-256 of 2033-byte messages (a regular Sphinx payload's Lioness half): the
//! 4-way AVX2 and 8-way AVX-512 multi-buffer paths against the `blake2` crate, per message,
//! three rounds. A quick A/B tool; the Sphinx bench shows the effect on a whole unwrap.
//!
//! `cargo run --release -p mixplane-crypto-simd --example blake2b_timing`

use mixplane_crypto_simd::blake2b::{Backend, mac32, mac32_x4, mac32_x8};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let data: Vec<Vec<u8>> = (0..8)
        .map(|j| (0..2033).map(|i| (i * 7 + j) as u8).collect())
        .collect();
    let key = [5u8; 64];
    let d4: [&[u8]; 4] = std::array::from_fn(|j| &data[j][..]);
    let d8: [&[u8]; 8] = std::array::from_fn(|j| &data[j][..]);
    assert_eq!(mac32_x8([&key; 8], d8)[3], mac32(&key, &data[3]));
    println!("backend here: {}", Backend::best().name());
    let n = 20000;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            black_box(mac32_x4([&key; 4], black_box(d4)));
        }
        let x4 = t.elapsed().as_secs_f64() / (n as f64 * 4.0) * 1e6;
        let t = Instant::now();
        for _ in 0..n {
            black_box(mac32_x8([&key; 8], black_box(d8)));
        }
        let x8 = t.elapsed().as_secs_f64() / (n as f64 * 8.0) * 1e6;
        let t = Instant::now();
        for _ in 0..n {
            black_box(mac32(&key, black_box(&data[0])));
        }
        let one = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        println!("per message 2033 B: x4 {x4:.3} µs, x8 {x8:.3} µs, blake2 crate {one:.3} µs");
    }
}
