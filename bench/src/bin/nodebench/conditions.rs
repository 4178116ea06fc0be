//! `--unwrap-conditions`: what separates the unwrap microbenchmark from `process_batch` inside
//! the node. The microbenchmark unwraps the same 64 frames over and over, copied from a
//! template, against no replay filter; the node unwraps batches of whatever arrived, fresh
//! frames every time, in a receive arena, against its replay filter. Each condition below
//! changes one of those, and all of them run interleaved in short slices on one pinned core,
//! so the VM's drift (its speed moves by 10–50 % within seconds) falls on all alike; each
//! round's times are read against the reference's in the same round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mixplane_dataplane::replay::{ReplayFilter, ReplayParams};
use mixplane_dataplane::sphinx::{
    NoReplay, NodeKeys, Processor, ProcessorConfig, ReplayGuard, SphinxKey,
};

/// One way of feeding `process_batch`.
#[derive(Clone, Copy, Debug)]
struct Condition {
    name: &'static str,
    batch: usize,
    /// Distinct frames on every call (from the pool) rather than the same `batch` again.
    fresh: bool,
    /// Frames back to back in one arena (as a receive buffer holds them) rather than one
    /// allocation each.
    arena: bool,
    /// Against a real replay filter sized as the node's.
    replay: bool,
}

const CONDITIONS: [Condition; 8] = [
    Condition {
        name: "reference: same 64, own buffers, no filter",
        batch: 64,
        fresh: false,
        arena: false,
        replay: false,
    },
    Condition {
        name: "same 12 (three groups of 4 lanes)",
        batch: 12,
        fresh: false,
        arena: false,
        replay: false,
    },
    Condition {
        name: "same 13 (one left for the single ladder)",
        batch: 13,
        fresh: false,
        arena: false,
        replay: false,
    },
    Condition {
        name: "same 14 (a group half empty)",
        batch: 14,
        fresh: false,
        arena: false,
        replay: false,
    },
    Condition {
        name: "same 16",
        batch: 16,
        fresh: false,
        arena: false,
        replay: false,
    },
    Condition {
        name: "fresh 16, own buffers, no filter",
        batch: 16,
        fresh: true,
        arena: false,
        replay: false,
    },
    Condition {
        name: "fresh 16, arena, no filter",
        batch: 16,
        fresh: true,
        arena: true,
        replay: false,
    },
    Condition {
        name: "fresh 16, arena, replay filter",
        batch: 16,
        fresh: true,
        arena: true,
        replay: true,
    },
];

/// A replay guard that is either the node's filter or none, so one loop serves both.
struct Guard<'a>(Option<&'a ReplayFilter>);

impl ReplayGuard for Guard<'_> {
    fn check_and_set(&self, rotation_id: u32, tag: &[u8; 32]) -> bool {
        match self.0 {
            None => NoReplay.check_and_set(rotation_id, tag),
            Some(f) => f.check_and_set(tag),
        }
    }
}

/// Runs every condition for `slice` per round, `rounds` times, on the calling thread (pin it
/// first), and prints each one's mean time per packet and its median ratio to the reference.
pub fn run(
    secret: &[u8; 32],
    pool: &[Vec<u8>],
    replay_expected: u64,
    rounds: usize,
    slice: Duration,
) -> anyhow::Result<()> {
    let frame_len = pool[0].len();
    let mut proc = Processor::new(
        Arc::new(NodeKeys::single(SphinxKey::from_secret(*secret, 1))),
        ProcessorConfig::default(),
    );
    let params = ReplayParams {
        initial_items: replay_expected,
        ..ReplayParams::default()
    };
    let mut filter = ReplayFilter::in_memory(&params)?;
    let mut out = Vec::new();
    let mut next = 0usize; // next fresh frame in the pool
    let mut own: Vec<Vec<u8>> = vec![vec![0u8; frame_len]; 64];
    let mut arena = vec![0u8; frame_len * 64];
    let mut per_packet: Vec<Vec<f64>> = vec![Vec::new(); CONDITIONS.len()];
    let (mut packets, mut secs) = (vec![0usize; CONDITIONS.len()], vec![0f64; CONDITIONS.len()]);
    for _ in 0..rounds {
        for (i, c) in CONDITIONS.iter().enumerate() {
            let guard = Guard(c.replay.then_some(&filter));
            let (mut n, mut spent) = (0usize, Duration::ZERO);
            let t = Instant::now();
            while t.elapsed() < slice {
                // where this call's frames come from
                let start = if c.fresh {
                    if next + c.batch > pool.len() {
                        next = 0;
                    }
                    next += c.batch;
                    next - c.batch
                } else {
                    0
                };
                let src = &pool[start..start + c.batch];
                // the copy in stands for the kernel's copy into the receive buffers: not timed
                if c.arena {
                    for (dst, f) in arena.chunks_exact_mut(frame_len).zip(src) {
                        dst.copy_from_slice(f);
                    }
                    let mut frames: Vec<&mut [u8]> =
                        arena.chunks_exact_mut(frame_len).take(c.batch).collect();
                    let t1 = Instant::now();
                    proc.process_batch(&mut frames, &guard, &mut out);
                    spent += t1.elapsed();
                } else {
                    for (dst, f) in own.iter_mut().zip(src) {
                        dst.copy_from_slice(f);
                    }
                    let t1 = Instant::now();
                    proc.process_batch(&mut own[..c.batch], &guard, &mut out);
                    spent += t1.elapsed();
                }
                n += c.batch;
            }
            per_packet[i].push(spent.as_secs_f64() / n as f64);
            packets[i] += n;
            secs[i] += spent.as_secs_f64();
        }
        // a fresh filter per round, so the pool's frames are never replays of themselves
        filter = ReplayFilter::in_memory(&params)?;
        next = 0;
    }
    println!(
        "unwrap conditions ({rounds} rounds of {} ms each, interleaved, {} frames in the pool):",
        slice.as_millis(),
        pool.len()
    );
    for (i, c) in CONDITIONS.iter().enumerate() {
        let mut ratios: Vec<f64> = per_packet[i]
            .iter()
            .zip(&per_packet[0])
            .map(|(x, r)| x / r)
            .collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "  {:<46} {:>7.2} µs/packet (mean); against the reference in the same round: median {:.3}, range {:.3}-{:.3}",
            c.name,
            secs[i] / packets[i] as f64 * 1e6,
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
        );
    }
    Ok(())
}
