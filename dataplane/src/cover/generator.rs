//! The cover thread: draws Poisson send times, builds loops in batches within its core budget,
//! hands them to the workers ahead of their send time and keeps the statistics.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rand::RngExt;

use super::stats::{LoopHop, LoopKey, LoopStats};
use super::{CoverConfig, CoverPacket, CoverShared};
use crate::snapshot::Snapshot;
use crate::sphinx::build::{self, BuildError, FinalPadding, Hop, PacketSpec};
use crate::sphinx::{FrameHeader, KeyRotation, SizeClass, address};

/// How long before its send time a loop is handed to a worker (the worker's wheel holds it
/// until then; a worker looks at its queue at least every 50 ms).
const LEAD_NS: u64 = 60_000_000;
/// The longest the thread sleeps between looks at its work.
const TICK: Duration = Duration::from_millis(10);
/// How often the report is published.
const REPORT_EVERY_NS: u64 = 100_000_000;
/// Most loops built in one batch.
const MAX_BATCH: usize = 64;
/// The build budget saved up while idle is capped at this much wall time's worth.
const BURST_NS: f64 = 1e9;

/// One loop to build: its route, its ack loop's route, their delays and sequence numbers.
pub(crate) struct LoopPlan {
    pub(crate) seq: u64,
    pub(crate) ack_seq: u64,
    pub(crate) sent_ns: u64,
    pub(crate) route: Vec<LoopHop>,
    pub(crate) ack_route: Vec<LoopHop>,
    pub(crate) delays: Vec<u64>,
    pub(crate) ack_delays: Vec<u64>,
}

/// A built loop, waiting for its send time.
struct Ready {
    plan: LoopPlan,
    frame: Vec<u8>,
}

/// The cover thread's state.
pub(crate) struct Generator {
    pub(crate) config: CoverConfig,
    pub(crate) shared: Arc<CoverShared>,
    pub(crate) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(crate) epoch: Instant,
    pub(crate) workers: Vec<SyncSender<CoverPacket>>,
    pub(crate) returned: Receiver<(u64, u64)>,
}

/// Counters the thread keeps besides the statistics.
#[derive(Default)]
struct Tallies {
    budget_skipped: u64,
    no_route: u64,
    queue_full: u64,
    build_ns: u64,
}

impl Generator {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Runs until the node stops the cover.
    pub(crate) fn run(self) {
        let mut stats = LoopStats::new(self.config.window);
        let mut tallies = Tallies::default();
        let mut rng = rand::rng();
        let mut queue: VecDeque<Ready> = VecDeque::new();
        let mut next_at = self.now() + self.gap(&mut rng);
        let mut seq = 0u64;
        let mut credit = 0.0f64;
        let mut last = self.now();
        let mut reported = 0u64;
        let mut rr = 0usize;
        while !self.shared.stopped() {
            let now = self.now();
            credit = (credit + (now - last) as f64 * self.config.max_core_share)
                .min(BURST_NS * self.config.max_core_share);
            last = now;
            while let Ok((s, t)) = self.returned.try_recv() {
                stats.returned(s, t);
            }
            stats.expire(now);
            if self.shared.paused() {
                queue.clear();
                next_at = now + LEAD_NS;
            } else if queue.is_empty() && next_at <= now + LEAD_NS {
                if credit < 0.0 {
                    while next_at <= now + LEAD_NS {
                        tallies.budget_skipped += 1;
                        next_at += self.gap(&mut rng);
                    }
                } else {
                    let t0 = crate::hostcheck::thread_cpu_ns();
                    self.fill(&mut queue, &mut next_at, &mut seq, &mut tallies, &mut rng);
                    let spent = crate::hostcheck::thread_cpu_ns().saturating_sub(t0);
                    tallies.build_ns += spent;
                    credit -= spent as f64;
                }
            }
            while queue
                .front()
                .is_some_and(|r| r.plan.sent_ns <= now + LEAD_NS)
            {
                let r = queue.pop_front().expect("front checked");
                self.hand_over(r, rr, &mut stats, &mut tallies);
                rr = rr.wrapping_add(1);
            }
            if now >= reported + REPORT_EVERY_NS {
                reported = now;
                self.publish(&stats, &tallies);
            }
            std::thread::sleep(TICK);
        }
        self.publish(&stats, &tallies);
    }

    /// An exponential gap between loops, ns.
    fn gap(&self, rng: &mut impl rand::Rng) -> u64 {
        exp_ns(rng, 1e9 / self.config.rate_per_second.max(1e-9))
    }

    /// Builds the loops due from `next_at` on (one batch: about 200 ms of them, at most
    /// [`MAX_BATCH`]) and queues them in send order.
    fn fill(
        &self,
        queue: &mut VecDeque<Ready>,
        next_at: &mut u64,
        seq: &mut u64,
        tallies: &mut Tallies,
        rng: &mut impl rand::Rng,
    ) {
        let n = ((self.config.rate_per_second * 0.2).ceil() as usize).clamp(1, MAX_BATCH);
        let Some(routes) = self.shared.routes() else {
            tallies.no_route += n as u64;
            for _ in 0..n {
                *next_at += self.gap(rng);
            }
            return;
        };
        let mut routes = (*routes).clone();
        // always our live primary key, whatever the topology says
        routes.me.public_key = *self.snapshot.load().keys.primary.public();
        let mut plans = Vec::with_capacity(n);
        for _ in 0..n {
            let sent_ns = *next_at;
            *next_at += self.gap(rng);
            match (routes.choose(rng), routes.choose(rng)) {
                (Some(route), Some(ack_route)) => {
                    let delay = |rng: &mut _, r: &[LoopHop]| -> Vec<u64> {
                        r.iter()
                            .map(|_| exp_ns(rng, self.config.mean_delay_ms * 1e6))
                            .collect()
                    };
                    plans.push(LoopPlan {
                        ack_seq: *seq,
                        seq: *seq + 1,
                        sent_ns,
                        delays: delay(rng, &route),
                        ack_delays: delay(rng, &ack_route),
                        route,
                        ack_route,
                    });
                    *seq += 2;
                }
                _ => tallies.no_route += 1,
            }
        }
        let built = build_loops(&self.shared.key, routes.me.address, &plans, rng);
        for (plan, frame) in plans.into_iter().zip(built) {
            match frame {
                Ok(frame) => queue.push_back(Ready { plan, frame }),
                Err(e) => {
                    tracing::warn!(error = %e, "cover loop not built");
                    tallies.no_route += 1;
                }
            }
        }
    }

    /// Gives a built loop to worker `rr` (round robin) and records it (and its ack loop) as
    /// sent.
    fn hand_over(&self, r: Ready, rr: usize, stats: &mut LoopStats, tallies: &mut Tallies) {
        if self.workers.is_empty() {
            return;
        }
        let plan = r.plan;
        let packet = CoverPacket {
            to: plan.route[0].1.address,
            frame: r.frame,
            at_ns: plan.sent_ns,
        };
        match self.workers[rr % self.workers.len()].try_send(packet) {
            Ok(()) => {
                let timeout = self.config.timeout.as_nanos() as u64;
                let others = |route: &[LoopHop]| -> Vec<(u8, SocketAddr)> {
                    route
                        .iter()
                        .filter(|(layer, _)| *layer != 0)
                        .map(|(layer, h)| (*layer, h.address))
                        .collect()
                };
                stats.sent(
                    plan.ack_seq,
                    plan.sent_ns + 2 * timeout,
                    &others(&plan.ack_route),
                );
                stats.sent(plan.seq, plan.sent_ns + timeout, &others(&plan.route));
            }
            Err(TrySendError::Full(_)) => tallies.queue_full += 1,
            // the worker has exited: the node is stopping
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn publish(&self, stats: &LoopStats, t: &Tallies) {
        let mut report = stats.report();
        report.budget_skipped = t.budget_skipped;
        report.no_route = t.no_route;
        report.queue_full = t.queue_full;
        report.build_seconds = t.build_ns as f64 * 1e-9;
        report.running_seconds = self.epoch.elapsed().as_secs_f64();
        self.shared.publish(report);
    }
}

/// An exponential sample with mean `mean_ns`, capped at Sphinx's default delay cap.
fn exp_ns(rng: &mut impl rand::Rng, mean_ns: f64) -> u64 {
    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    ((-u.ln() * mean_ns) as u64).min(crate::sphinx::DEFAULT_MAX_DELAY_NS)
}

/// Builds the framed regular-class loop of each plan, its SURB-ACK an ack-class loop: two
/// batched builds (the acks, then the loops that carry them). `me` is this node's address,
/// written as the final destination.
pub(crate) fn build_loops(
    key: &LoopKey,
    me: SocketAddr,
    plans: &[LoopPlan],
    rng: &mut impl rand::Rng,
) -> Vec<Result<Vec<u8>, BuildError>> {
    let destination = address::encode::<32>(me);
    let secrets: Vec<[[u8; 32]; 4]> = plans.iter().map(|_| rng.random()).collect();
    let ids: Vec<[[u8; 16]; 2]> = plans.iter().map(|_| rng.random()).collect();
    let hops = |r: &[LoopHop]| -> Vec<Hop> { r.iter().map(|(_, h)| *h).collect() };
    let ack_routes: Vec<Vec<Hop>> = plans.iter().map(|p| hops(&p.ack_route)).collect();
    let routes: Vec<Vec<Hop>> = plans.iter().map(|p| hops(&p.route)).collect();
    let ack_tags: Vec<_> = plans
        .iter()
        .map(|p| key.tag(p.ack_seq, p.sent_ns))
        .collect();
    let tags: Vec<_> = plans.iter().map(|p| key.tag(p.seq, p.sent_ns)).collect();
    let spec = |route, delays, plaintext, class: SizeClass, x, pad, id| PacketSpec {
        route,
        delays_ns: delays,
        destination,
        identifier: id,
        version: 258,
        payload_size: class.payload_len(),
        plaintext,
        initial_secret: x,
        padding: FinalPadding::Seed(pad),
    };
    let ack_specs: Vec<PacketSpec<'_>> = (0..plans.len())
        .map(|i| {
            let s = &secrets[i];
            let (r, d) = (&ack_routes[i][..], &plans[i].ack_delays[..]);
            spec(
                r,
                d,
                &ack_tags[i][..],
                SizeClass::Ack,
                s[0],
                s[1],
                ids[i][0],
            )
        })
        .collect();
    let acks = build::build_batch(&ack_specs);
    let plaintexts: Vec<Result<Vec<u8>, BuildError>> = acks
        .into_iter()
        .zip(&ack_routes)
        .zip(&tags)
        .map(|((ack, r), tag)| build::plaintext_with_surb_ack(r[0].address, &ack?, tag))
        .collect();
    let empty = Vec::new();
    let specs: Vec<PacketSpec<'_>> = (0..plans.len())
        .map(|i| {
            let s = &secrets[i];
            let pt = plaintexts[i].as_ref().unwrap_or(&empty);
            let (r, d) = (&routes[i][..], &plans[i].delays[..]);
            spec(r, d, &pt[..], SizeClass::Regular, s[2], s[3], ids[i][1])
        })
        .collect();
    let header = FrameHeader::v8(SizeClass::Regular, KeyRotation::Unknown);
    build::build_batch(&specs)
        .into_iter()
        .zip(plaintexts)
        .map(|(p, pt)| {
            pt?;
            Ok(header.frame(&p?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sphinx::{NoReplay, NodeKeys, Processor, ProcessorConfig, SphinxKey, Verdict};

    /// Runs `frame` through the processors of the route, starting at `at`, and returns the
    /// final hop's message and its SURB-ACK (first hop, framed ack) if any.
    fn through(
        nodes: &mut [(SocketAddr, Processor)],
        mut at: SocketAddr,
        mut frame: Vec<u8>,
    ) -> (Vec<u8>, Option<(SocketAddr, Vec<u8>)>) {
        let mut verdicts = Vec::new();
        for _ in 0..4 {
            let p = &mut nodes.iter_mut().find(|(a, _)| *a == at).unwrap().1;
            let mut frames = [&mut frame[..]];
            p.process_batch(&mut frames, &NoReplay, &mut verdicts);
            match &verdicts[0] {
                Verdict::Forward(f) => {
                    at = f.next_hop;
                    frame = frame[f.frame.clone()].to_vec();
                }
                Verdict::Deliver(d) => {
                    let ack = d
                        .surb_ack
                        .as_ref()
                        .map(|a| (a.next_hop, frame[a.frame.clone()].to_vec()));
                    return (frame[d.message.clone()].to_vec(), ack);
                }
                Verdict::Drop(r) => panic!("dropped at {at}: {r:?}"),
            }
        }
        panic!("no final hop");
    }

    #[test]
    fn a_loop_and_its_ack_loop_come_back_with_their_tags() {
        let mut nodes = Vec::new();
        let mut hops = Vec::new();
        for i in 1..=3u8 {
            let key = SphinxKey::from_secret([i; 32], 1);
            let addr = SocketAddr::from(([192, 0, 2, i], 1789));
            hops.push(Hop {
                address: addr,
                public_key: *key.public(),
            });
            let p = Processor::new(Arc::new(NodeKeys::single(key)), ProcessorConfig::default());
            nodes.push((addr, p));
        }
        let me = hops[2];
        let plan = LoopPlan {
            ack_seq: 8,
            seq: 9,
            sent_ns: 5_000_000_000,
            route: vec![(1, hops[0]), (2, hops[1]), (0, me)],
            ack_route: vec![(2, hops[1]), (1, hops[0]), (0, me)],
            delays: vec![1000, 2000, 0],
            ack_delays: vec![3000, 4000, 0],
        };
        let key = LoopKey::random();
        let built = build_loops(&key, me.address, &[plan], &mut rand::rng());
        let frame = built.into_iter().next().unwrap().unwrap();
        assert_eq!(
            frame.len(),
            FrameHeader::v8(SizeClass::Regular, KeyRotation::Unknown).len()
                + SizeClass::Regular.packet_len()
        );
        let (message, ack) = through(&mut nodes, hops[0].address, frame);
        assert_eq!(key.check(&message), Some((9, 5000)));
        assert_eq!(LoopKey::random().check(&message), None);
        let (ack_to, ack_frame) = ack.expect("a regular loop carries an ack loop");
        assert_eq!(ack_to, hops[1].address);
        let (ack_message, none) = through(&mut nodes, ack_to, ack_frame);
        assert_eq!(key.check(&ack_message), Some((8, 5000)));
        assert!(none.is_none(), "ack-class packets carry no SURB-ACK");
    }
}
