//! How many packets a worker takes per receive so that one batch's processing stays within a
//! time budget: a packet that falls due while a batch is being unwrapped leaves only after the
//! batch, so the batch's processing time is what a held packet can be late by at full load.
//!
//! On an AVX-512 IFMA core a 64-packet batch takes ~0.6 ms; on an AVX2-only core ~3 ms and on
//! the portable path ~8 ms, past the 2 ms that Nym's delays can bear. The cap follows the
//! measured cost per packet: it rises slowly when packets get cheaper and falls at once when
//! they get dearer (a flood of cheap garbage cannot talk it into batches that a following
//! burst of real packets would then overrun). The cost is the worker thread's CPU time, not
//! the wall-clock time: a batch during which the thread was preempted (by the node's own
//! senders, the kernel's softirqs or anything else on the core) was not dearer per packet, and
//! a smaller batch would not have been preempted less. Vector lanes stay full: the cap is a
//! multiple of the X25519 backend's lanes ([`lanes`]).

use std::sync::OnceLock;

use mixplane_crypto_simd::x25519::Backend;

/// Lanes of the X25519 kernel that unwraps the batches ([`Backend::best`], which follows the
/// `MIXPLANE_CPU` cap): 4 with AVX2, 16 with AVX-512 IFMA, 1 on the portable path. A batch whose
/// length is not a multiple of it leaves a partial kernel call (or, below
/// [`Backend::min_vector_lanes`], operations on the slower single-operation ladder).
pub(crate) fn lanes() -> usize {
    static LANES: OnceLock<usize> = OnceLock::new();
    *LANES.get_or_init(|| Backend::best().lanes().max(1))
}

pub(crate) use crate::hostcheck::thread_cpu_ns;

/// The receive cap of one worker.
#[derive(Debug, Clone)]
pub(crate) struct BatchBudget {
    /// Processing time one batch may take, ns (0: no cap beyond `max`).
    budget_ns: u64,
    /// The receive batch the backends were opened with.
    max: usize,
    /// The cap is a multiple of this (at least 1).
    lanes: usize,
    /// Cost per packet, ns: raised to each batch's figure at once, lowered by 1/16 of the
    /// difference per batch.
    per_packet_ns: u64,
    limit: usize,
    /// The cap the backends were last told.
    applied: usize,
}

impl BatchBudget {
    /// A cap for batches of at most `max`, each to be processed within `budget_ns` (0: off),
    /// in whole groups of the X25519 kernel's [`lanes`].
    pub(crate) fn new(budget_ns: u64, max: usize) -> BatchBudget {
        BatchBudget::with_lanes(budget_ns, max, lanes())
    }

    /// As [`Self::new`], in groups of `lanes`.
    pub(crate) fn with_lanes(budget_ns: u64, max: usize, lanes: usize) -> BatchBudget {
        let max = max.max(1);
        BatchBudget {
            budget_ns,
            max,
            lanes: lanes.max(1),
            per_packet_ns: 0,
            limit: max,
            applied: max,
        }
    }

    /// The current cap on datagrams per receive.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The cap, when it differs from what [`Self::changed`] returned last (the backends are
    /// told only then).
    pub(crate) fn changed(&mut self) -> Option<usize> {
        (self.limit != self.applied).then(|| {
            self.applied = self.limit;
            self.limit
        })
    }

    /// Learns from a batch of `n` packets that took `spent_ns` of the worker's CPU time to
    /// process; returns the new cap when this batch changed it.
    pub(crate) fn observe(&mut self, n: usize, spent_ns: u64) -> Option<usize> {
        if self.budget_ns == 0 || n == 0 {
            return None;
        }
        let sample = spent_ns / n as u64;
        self.per_packet_ns = if sample >= self.per_packet_ns {
            sample
        } else {
            self.per_packet_ns - (self.per_packet_ns - sample) / 16
        };
        let fit = (self.budget_ns / self.per_packet_ns.max(1)) as usize;
        let lanes = self.lanes;
        let limit = (fit / lanes * lanes).clamp(lanes.min(self.max), self.max);
        (limit != self.limit).then(|| {
            self.limit = limit;
            limit
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_packets_shrink_the_batch_to_the_budget() {
        let mut b = BatchBudget::with_lanes(1_000_000, 64, 8);
        assert_eq!(b.limit(), 64);
        // 50 µs per packet: 20 fit in 1 ms, rounded down to whole lanes
        assert_eq!(b.observe(64, 64 * 50_000), Some(16));
        assert_eq!(b.observe(16, 16 * 50_000), None);
        assert_eq!(b.changed(), Some(16));
        assert_eq!(b.changed(), None);
        // 10 µs per packet: 100 fit, capped at the receive batch, but only after the
        // estimate has come down (slowly)
        let mut steps = 0;
        while b.limit() < 64 {
            b.observe(16, 16 * 10_000);
            steps += 1;
            assert!(steps < 200, "never recovered");
        }
        assert!(steps > 3, "recovered at once ({steps} batches)");
    }

    #[test]
    fn a_dear_batch_shrinks_the_cap_at_once() {
        let mut b = BatchBudget::with_lanes(1_000_000, 64, 8);
        for _ in 0..50 {
            b.observe(64, 64 * 1_000); // cheap garbage
        }
        assert_eq!(b.limit(), 64);
        assert_eq!(b.observe(64, 64 * 120_000), Some(8));
    }

    #[test]
    fn never_below_one_lane_group_nor_above_the_batch() {
        let mut b = BatchBudget::with_lanes(1_000_000, 64, 8);
        b.observe(1, 10_000_000); // 10 ms for one packet
        assert_eq!(b.limit(), 8);
        let mut small = BatchBudget::with_lanes(1_000_000, 4, 8);
        small.observe(4, 4 * 500_000);
        assert_eq!(small.limit(), 4);
    }

    #[test]
    fn the_cap_follows_the_kernel_width() {
        // 65 µs per packet: 15 fit in 1 ms; four-lane groups keep 12, eight-lane ones only 8
        let mut four = BatchBudget::with_lanes(1_000_000, 64, 4);
        assert_eq!(four.observe(64, 64 * 65_000), Some(12));
        let mut eight = BatchBudget::with_lanes(1_000_000, 64, 8);
        assert_eq!(eight.observe(64, 64 * 65_000), Some(8));
        // one lane (the portable path): exactly what fits
        let mut one = BatchBudget::with_lanes(1_000_000, 64, 1);
        assert_eq!(one.observe(64, 64 * 65_000), Some(15));
        assert!(lanes() >= 1);
    }

    #[test]
    fn the_thread_clock_counts_work_not_sleep() {
        let t0 = thread_cpu_ns();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let slept = thread_cpu_ns() - t0;
        assert!(slept < 20_000_000, "sleeping used {slept} ns of CPU");
        // a fixed amount of work (tens of ms on any CPU here): its CPU time does not depend
        // on how long other threads held the core meanwhile
        let t1 = thread_cpu_ns();
        let mut x = 1u64;
        for _ in 0..50_000_000u32 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(thread_cpu_ns() - t1 > 1_000_000, "working used no CPU");
    }

    #[test]
    fn off_keeps_the_batch() {
        let mut b = BatchBudget::new(0, 64);
        assert_eq!(b.observe(64, 64 * 1_000_000), None);
        assert_eq!(b.limit(), 64);
    }
}
