//! A fixed-size, lock-free log-linear histogram of nanosecond values: one writer (a worker),
//! any number of readers (metrics, benchmarks). Values are bucketed by their power of two and
//! the next 3 bits (8 sub-buckets per octave), so any quantile read back is within 12.5% above
//! the true value; recording is one relaxed atomic increment.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = 64 * SUB;

/// The histogram.
pub struct AtomicHistogram {
    counts: Box<[AtomicU64; BUCKETS]>,
    sum: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            counts: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            sum: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicHistogram")
            .field("count", &self.count())
            .finish()
    }
}

fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) as usize & (SUB - 1);
    ((exp - SUB_BITS + 1) as usize) * SUB + sub
}

/// The largest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let exp = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = (i % SUB) as u64;
    let base = (1u64 << exp) | (sub << (exp - SUB_BITS));
    base | ((1u64 << (exp - SUB_BITS)) - 1)
}

impl AtomicHistogram {
    /// Records one value.
    pub fn record(&self, v: u64) {
        self.counts[index(v)].fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
    }

    /// Sum of the recorded values (wraps after 2^64).
    pub fn sum(&self) -> u64 {
        self.sum.load(Relaxed)
    }

    /// For each bound (ascending), how many recorded values fall in buckets whose upper edge is
    /// at most that bound: Prometheus-style cumulative `le` counts (a value is counted under the
    /// first bound at or above its bucket's upper edge, so counts can lag by up to 12.5%).
    pub(crate) fn cumulative(&self, bounds: &[u64]) -> Vec<u64> {
        let snap: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        bounds
            .iter()
            .map(|&b| {
                snap.iter()
                    .enumerate()
                    .take_while(|(i, _)| upper(*i) <= b)
                    .map(|(_, c)| c)
                    .sum()
            })
            .collect()
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The value at quantile `q` (0..=1), as the upper edge of its bucket; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let snap: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        quantile_of(&snap, q)
    }

    /// Adds this histogram's counts into `into` (for summing workers).
    pub fn add_into(&self, into: &mut [u64]) {
        for (i, c) in self.counts.iter().enumerate() {
            into[i] += c.load(Relaxed);
        }
    }

    /// Number of buckets (the length `add_into` expects).
    pub const fn buckets() -> usize {
        BUCKETS
    }
}

/// The quantile of summed bucket counts (see [`AtomicHistogram::add_into`]).
pub fn quantile_of(counts: &[u64], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return upper(i);
        }
    }
    upper(BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = AtomicHistogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000); // 1 µs .. 1 ms
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!((500_000..=500_000 * 9 / 8).contains(&p50), "{p50}");
        assert!((990_000..=990_000 * 9 / 8).contains(&p99), "{p99}");
        assert_eq!(AtomicHistogram::default().quantile(0.99), 0);
        assert_eq!(h.sum(), (1..=1000u64).map(|v| v * 1000).sum::<u64>());
        let c = h.cumulative(&[0, 100_000, 2_000_000]);
        assert_eq!(c[0], 0);
        assert!((80..=100).contains(&c[1]), "{c:?}");
        assert_eq!(c[2], 1000);
    }

    proptest! {
        #[test]
        fn every_value_lands_in_a_bucket_that_bounds_it(v in any::<u64>()) {
            let i = index(v);
            prop_assert!(i < BUCKETS);
            prop_assert!(upper(i) >= v);
            // within 12.5% (or exact for small values)
            prop_assert!(upper(i) - v <= v / 8 + 1);
            if i > 0 { prop_assert!(upper(i - 1) < v); }
        }
    }
}
