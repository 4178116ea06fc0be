//! How many packets a worker takes per receive so that one batch's processing stays within a
//! time budget: a packet that falls due while a batch is being unwrapped leaves only after the
//! batch, so the batch's processing time is what a held packet can be late by at full load.
//!
//! On an AVX-512 IFMA core a 64-packet batch takes ~0.6 ms; on an AVX2-only core ~3 ms and on
//! the portable path ~8 ms, past the 2 ms that Nym's delays can bear. The cap follows the
//! measured cost per packet: it rises slowly when packets get cheaper and falls at once when
//! they get dearer (a flood of cheap garbage cannot talk it into batches that a following
//! burst of real packets would then overrun). Vector lanes stay full: the cap is a multiple of
//! [`LANES`].

/// The cap is kept a multiple of this (the widest X25519 kernel's lanes).
pub(crate) const LANES: usize = 8;

/// The receive cap of one worker.
#[derive(Debug, Clone)]
pub(crate) struct BatchBudget {
    /// Processing time one batch may take, ns (0: no cap beyond `max`).
    budget_ns: u64,
    /// The receive batch the backends were opened with.
    max: usize,
    /// Cost per packet, ns: raised to each batch's figure at once, lowered by 1/16 of the
    /// difference per batch.
    per_packet_ns: u64,
    limit: usize,
    /// The cap the backends were last told.
    applied: usize,
}

impl BatchBudget {
    /// A cap for batches of at most `max`, each to be processed within `budget_ns` (0: off).
    pub(crate) fn new(budget_ns: u64, max: usize) -> BatchBudget {
        let max = max.max(1);
        BatchBudget {
            budget_ns,
            max,
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

    /// Learns from a batch of `n` packets that took `spent_ns` to process; returns the new cap
    /// when this batch changed it.
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
        let limit = (fit / LANES * LANES).clamp(LANES.min(self.max), self.max);
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
        let mut b = BatchBudget::new(1_000_000, 64);
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
        let mut b = BatchBudget::new(1_000_000, 64);
        for _ in 0..50 {
            b.observe(64, 64 * 1_000); // cheap garbage
        }
        assert_eq!(b.limit(), 64);
        assert_eq!(b.observe(64, 64 * 120_000), Some(8));
    }

    #[test]
    fn never_below_one_lane_group_nor_above_the_batch() {
        let mut b = BatchBudget::new(1_000_000, 64);
        b.observe(1, 10_000_000); // 10 ms for one packet
        assert_eq!(b.limit(), LANES);
        let mut small = BatchBudget::new(1_000_000, 4);
        small.observe(4, 4 * 500_000);
        assert_eq!(small.limit(), 4);
    }

    #[test]
    fn off_keeps_the_batch() {
        let mut b = BatchBudget::new(0, 64);
        assert_eq!(b.observe(64, 64 * 1_000_000), None);
        assert_eq!(b.limit(), 64);
    }
}
