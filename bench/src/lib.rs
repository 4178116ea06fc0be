//! Shared helpers for mixplane's benchmarks, load generator and pcap replay.
//!
//! Boundaries: measurement tooling only; nothing here is linked into the node.

use std::time::{Duration, Instant};

pub mod error;
pub mod loadgen;
pub mod pcap;

pub use error::Error;

/// Calls per sample so that one sample of `f` takes about 100 ms.
pub fn calibrate(f: &mut impl FnMut()) -> u32 {
    f(); // warm up
    let start = Instant::now();
    let mut iters = 0u32;
    while start.elapsed() < Duration::from_millis(30) {
        f();
        iters += 1;
    }
    let per_call = start.elapsed() / iters;
    (Duration::from_millis(100).as_nanos() / per_call.as_nanos().max(1)).max(1) as u32
}

/// Mean time per item of one sample: `n` calls of `f`, each handling `items` items.
pub fn sample(f: &mut impl FnMut(), n: u32, items: u32) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / (n * items)
}

/// Per-item times of `a` and `b` (each call handles `items_a` / `items_b` items), sampled
/// alternately so that load from other processes affects both alike; best of seven samples.
pub fn per_item_pair(
    mut a: impl FnMut(),
    items_a: u32,
    mut b: impl FnMut(),
    items_b: u32,
) -> (Duration, Duration) {
    let (na, nb) = (calibrate(&mut a), calibrate(&mut b));
    let (mut ta, mut tb) = (Duration::MAX, Duration::MAX);
    for _ in 0..7 {
        ta = ta.min(sample(&mut a, na, items_a));
        tb = tb.min(sample(&mut b, nb, items_b));
    }
    (ta, tb)
}

/// Whether the bench runs under criterion's `--profile-time` (for a profiler): the benches then
/// skip their printed comparisons, so that a profile shows only the benchmark loops.
pub fn profiling() -> bool {
    std::env::args().any(|a| a == "--profile-time")
}

/// Microseconds as f64.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
