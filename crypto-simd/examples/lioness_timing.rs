//! Lioness decryption of `n` regular-payload blocks (2065 bytes) for n = 1..=8: `decrypt_batch`
//! (multi-buffer BLAKE2b, part-filled groups padded) against `decrypt` one block at a time, per
//! block, best of five rounds. Shows what a worker's batch holding only a few packets of one
//! size class gains from the padded groups.
//!
//! `cargo run --release -p mixplane-crypto-simd --example lioness_timing [-- N]` (N: only that
//! block count)

use mixplane_crypto_simd::lioness::{KEY_LEN, decrypt, decrypt_batch};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let keys: Vec<[u8; KEY_LEN]> = (0..8)
        .map(|j| std::array::from_fn(|i| (i as u8).wrapping_mul(3) ^ j))
        .collect();
    let key_refs: Vec<&[u8; KEY_LEN]> = keys.iter().collect();
    let mut blocks: Vec<Vec<u8>> = (0..8).map(|j| vec![j as u8; 2065]).collect();
    let reps = 4000;
    let only: Option<usize> = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("a block count"));
    for n in only.map_or(1..=8usize, |n| n..=n) {
        let (mut batch, mut single) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                let mut views: Vec<&mut [u8]> =
                    blocks[..n].iter_mut().map(|b| b.as_mut_slice()).collect();
                decrypt_batch(&key_refs[..n], black_box(&mut views)).unwrap();
            }
            batch = batch.min(t.elapsed().as_secs_f64() / (reps * n) as f64);
            let t = Instant::now();
            for _ in 0..reps {
                for (b, k) in blocks[..n].iter_mut().zip(&keys) {
                    decrypt(k, black_box(b)).unwrap();
                }
            }
            single = single.min(t.elapsed().as_secs_f64() / (reps * n) as f64);
        }
        println!(
            "{n} block(s) of 2065 B: decrypt_batch {:.2} µs/block vs one by one {:.2} µs/block = {:.2}x",
            batch * 1e6,
            single * 1e6,
            single / batch
        );
    }
}
