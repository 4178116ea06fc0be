//! One worker: its socket and I/O backend, Sphinx processor, slab, delay wheel and counters.
//!
//! The loop: receive a batch (waiting at most until the wheel's next deadline), hand it to the
//! Sphinx core in place, move forward hops into slab slots and the wheel with deadlines computed
//! from the receive time, queue SURB-ACKs and sink messages for immediate release, release what
//! is due, and send it grouped by next hop. Nothing per packet takes a lock, allocates or makes
//! a syscall of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::counters::{NodeDrop, WorkerCounters, WorkerPhase};
use crate::io::{Datagram, Outgoing, UdpIo};
use crate::node::Snapshot;
use crate::sink::{self, SinkAddr, UnixSink};
use crate::slab::{Slab, SlotId};
use crate::sphinx::{Processor, ProcessorConfig, Verdict};
use crate::wheel::{DelayWheel, WheelConfig};

/// Run state shared by a node's workers.
pub(crate) const RUNNING: u8 = 0;
/// Stop receiving; release what the wheels hold at its deadlines, then exit.
pub(crate) const DRAINING: u8 = 1;
/// Exit now.
pub(crate) const ABORT: u8 = 2;

/// A packet waiting in the wheel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    slot: SlotId,
    len: u32,
    to: SocketAddr,
    deadline_ns: u64,
    rx_ns: u64,
}

/// Settings a worker needs.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    pub batch: usize,
    pub max_delay_ns: u64,
    pub wheel_tick_ns: u64,
    pub wheel_capacity: usize,
    pub slab_small: usize,
    pub slab_large: usize,
    pub sink: Option<SinkAddr>,
}

pub(crate) struct Worker {
    pub id: usize,
    pub io: Box<dyn UdpIo>,
    pub shared: Arc<ArcSwap<Snapshot>>,
    pub state: Arc<AtomicU8>,
    pub counters: Arc<WorkerCounters>,
    pub epoch: Instant,
    pub settings: WorkerSettings,
}

fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

impl Worker {
    pub(crate) fn run(mut self) {
        let s = self.settings.clone();
        let mut snapshot = self.shared.load_full();
        let mut processor = Processor::new(
            snapshot.keys.clone(),
            ProcessorConfig {
                max_delay_ns: s.max_delay_ns,
                ..ProcessorConfig::default()
            },
        );
        let mut wheel = match DelayWheel::new(
            WheelConfig {
                tick_ns: s.wheel_tick_ns,
                capacity: s.wheel_capacity,
                max_delay_ns: s.max_delay_ns,
                ..WheelConfig::default()
            },
            now_ns(self.epoch),
        ) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(worker = self.id, error = %e, "bad wheel configuration");
                return;
            }
        };
        let mut slab = Slab::new(s.slab_small, s.slab_large);
        let (udp_sink, mut unix_sink) = match &s.sink {
            Some(SinkAddr::Udp(a)) => (Some(*a), None),
            Some(SinkAddr::Unix(p)) => match UnixSink::connect(p) {
                Ok(u) => (None, Some(u)),
                Err(e) => {
                    tracing::error!(worker = self.id, path = %p.display(), error = %e, "cannot open the unix sink");
                    (None, None)
                }
            },
            None => (None, None),
        };
        let mut datagrams: Vec<Datagram> = Vec::with_capacity(s.batch * 4);
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(s.batch * 4);
        let mut due: Vec<Held> = Vec::with_capacity(s.batch * 4);
        tracing::debug!(worker = self.id, io = self.io.name(), "worker started");

        loop {
            let state = self.state.load(Ordering::Acquire);
            if state == ABORT {
                break;
            }

            let now = now_ns(self.epoch);
            let wait = match wheel.next_deadline_hint() {
                Some(d) => {
                    Duration::from_nanos(d.saturating_sub(now)).min(Duration::from_millis(50))
                }
                None => Duration::from_millis(50),
            };
            if state == RUNNING {
                let t_call = now_ns(self.epoch);
                match self.io.recv(wait, &mut datagrams) {
                    Ok(0) => {}
                    Ok(n) => {
                        let t_rx = now_ns(self.epoch);
                        self.counters
                            .add_phase(WorkerPhase::Receive, t_rx.saturating_sub(t_call));
                        // pick up a new snapshot (key rotation) between batches: after the
                        // receive, so a batch is never judged by keys older than its arrival
                        let current = self.shared.load();
                        if !Arc::ptr_eq(&current, &snapshot) {
                            snapshot = arc_swap::Guard::into_inner(current);
                            processor.set_keys(snapshot.keys.clone());
                        }
                        WorkerCounters::add(&self.counters.rx_datagrams, n as u64);
                        WorkerCounters::add(&self.counters.rx_batches, 1);
                        // carve needs arena order (io_uring hands buffers back in any order)
                        datagrams.sort_unstable_by_key(|d| d.offset);
                        let arena = self.io.arena_mut();
                        let mut frames = carve(arena, &datagrams);
                        processor.process_batch(&mut frames, &snapshot.replay, &mut verdicts);
                        let t_done = now_ns(self.epoch);
                        let spent = t_done.saturating_sub(t_rx);
                        self.counters.unwrap_per_packet.record(spent / n as u64);
                        self.counters.add_phase(WorkerPhase::Process, spent);
                        self.counters.batch_size.record(n as u64);
                        let allowed = snapshot.next_hops.as_deref();
                        for (frame, v) in frames.iter().zip(&verdicts) {
                            handle(
                                allowed,
                                &self.counters,
                                frame,
                                v,
                                t_rx,
                                &mut slab,
                                &mut wheel,
                                udp_sink,
                                unix_sink.as_mut(),
                            );
                        }
                        self.counters.add_phase(
                            WorkerPhase::Hold,
                            now_ns(self.epoch).saturating_sub(t_done),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(worker = self.id, error = %e, "receive failed");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            } else {
                if wheel.is_empty() {
                    break;
                }
                std::thread::sleep(wait.min(Duration::from_millis(1)));
            }

            // release what is due
            let now = now_ns(self.epoch);
            due.clear();
            wheel.expire(now, |h| due.push(h));
            if !due.is_empty() {
                for h in &due {
                    self.counters
                        .record_lateness(now.saturating_sub(h.deadline_ns));
                    self.counters.residence.record(now.saturating_sub(h.rx_ns));
                }
                // group by destination, longest first, so runs can go out as GSO messages
                due.sort_unstable_by(|a, b| a.to.cmp(&b.to).then(b.len.cmp(&a.len)));
                let out: Vec<Outgoing<'_>> = due
                    .iter()
                    .map(|h| Outgoing {
                        to: h.to,
                        data: &slab.get(h.slot)[..h.len as usize],
                    })
                    .collect();
                let st = self.io.send(&out);
                drop(out);
                WorkerCounters::add(&self.counters.tx_datagrams, st.sent as u64);
                WorkerCounters::add(&self.counters.tx_calls, st.calls as u64);
                if st.failed > 0 {
                    self.counters
                        .drop_node(NodeDrop::SendFailed, st.failed as u64);
                }
                for h in &due {
                    slab.free(h.slot);
                }
                self.counters
                    .add_phase(WorkerPhase::Release, now_ns(self.epoch).saturating_sub(now));
            }
            self.counters
                .wheel_len
                .store(wheel.len() as u64, Ordering::Relaxed);
            self.counters.set_kernel_overflows(self.io.rx_overflows());
        }
        // abort: whatever is left is dropped (counted)
        let left = wheel.drain_all(|h| slab.free(h.slot));
        if left > 0 {
            tracing::warn!(worker = self.id, left, "exiting with packets still held");
        }
        tracing::debug!(worker = self.id, "worker stopped");
    }
}

#[allow(clippy::too_many_arguments)]
fn handle(
    allowed: Option<&std::collections::HashSet<SocketAddr>>,
    counters: &WorkerCounters,
    frame: &[u8],
    v: &Verdict,
    t_rx: u64,
    slab: &mut Slab,
    wheel: &mut DelayWheel<Held>,
    udp_sink: Option<SocketAddr>,
    unix_sink: Option<&mut UnixSink>,
) {
    match v {
        Verdict::Drop(r) => counters.drop_sphinx(*r),
        Verdict::Forward(f) if next_hop_ok(allowed, f.next_hop).is_err() => {
            if let Err(r) = next_hop_ok(allowed, f.next_hop) {
                counters.drop_node(r, 1);
            }
        }
        Verdict::Forward(f) => {
            if hold(
                counters,
                &frame[f.frame.clone()],
                f.next_hop,
                t_rx + f.delay_ns,
                t_rx,
                slab,
                wheel,
                None,
            ) {
                WorkerCounters::add(&counters.forwarded, 1);
            }
        }
        Verdict::Deliver(d) => {
            if let Some(ack) = &d.surb_ack
                && let Err(r) = next_hop_ok(allowed, ack.next_hop)
            {
                counters.drop_node(r, 1);
            } else if let Some(ack) = &d.surb_ack
                && hold(
                    counters,
                    &frame[ack.frame.clone()],
                    ack.next_hop,
                    t_rx,
                    t_rx,
                    slab,
                    wheel,
                    None,
                )
            {
                WorkerCounters::add(&counters.surb_acks, 1);
            }
            let msg = &frame[d.message.clone()];
            let delivered = if let Some(to) = udp_sink {
                let header = (&d.destination, &d.identifier, d.sealed);
                hold(counters, msg, to, t_rx, t_rx, slab, wheel, Some(header))
            } else if let Some(u) = unix_sink {
                let ok = u.send(&d.destination, &d.identifier, d.sealed, msg);
                if !ok {
                    counters.drop_node(NodeDrop::SinkFailed, 1);
                }
                ok
            } else {
                counters.drop_node(NodeDrop::NoSink, 1);
                false
            };
            if delivered {
                WorkerCounters::add(&counters.delivered, 1);
            }
        }
    }
}

/// Whether a packet may be sent to `to`: a routable unicast address with a port, and, when the
/// routing filter is on, a node of the topology.
fn next_hop_ok(
    allowed: Option<&std::collections::HashSet<SocketAddr>>,
    to: SocketAddr,
) -> Result<(), NodeDrop> {
    let unroutable = to.port() == 0
        || to.ip().is_unspecified()
        || to.ip().is_multicast()
        || matches!(to.ip(), std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if unroutable {
        Err(NodeDrop::UnroutableNextHop)
    } else if allowed.is_some_and(|a| !a.contains(&to)) {
        Err(NodeDrop::UnknownNextHop)
    } else {
        Ok(())
    }
}

/// Copies `bytes` (behind a sink header, if given) into a slab slot and puts it in the wheel.
#[allow(clippy::too_many_arguments)]
fn hold(
    counters: &WorkerCounters,
    bytes: &[u8],
    to: SocketAddr,
    deadline_ns: u64,
    rx_ns: u64,
    slab: &mut Slab,
    wheel: &mut DelayWheel<Held>,
    sink_header: Option<(&[u8; 32], &[u8; 16], bool)>,
) -> bool {
    let pre = if sink_header.is_some() {
        sink::SINK_HEADER_LEN
    } else {
        0
    };
    let len = pre + bytes.len();
    let Some(slot) = slab.alloc(len) else {
        counters.drop_node(NodeDrop::SlabFull, 1);
        return false;
    };
    let buf = slab.get_mut(slot);
    if let Some((dest, id, sealed)) = sink_header {
        sink::write_header(buf, dest, id, sealed);
    }
    buf[pre..len].copy_from_slice(bytes);
    let held = Held {
        slot,
        len: len as u32,
        to,
        deadline_ns,
        rx_ns,
    };
    match wheel.insert(deadline_ns, held) {
        Ok(()) => true,
        Err(full) => {
            slab.free(full.into_inner().slot);
            counters.drop_node(NodeDrop::WheelFull, 1);
            false
        }
    }
}

/// Splits the arena into disjoint mutable frames, one per datagram (offsets ascending).
fn carve<'a>(arena: &'a mut [u8], datagrams: &[Datagram]) -> Vec<&'a mut [u8]> {
    let mut frames = Vec::with_capacity(datagrams.len());
    let mut rest = arena;
    let mut base = 0usize;
    for d in datagrams {
        debug_assert!(d.offset >= base, "datagrams are in arena order");
        let skip = d.offset - base;
        let (_, tail) = rest.split_at_mut(skip);
        let (frame, tail) = tail.split_at_mut(d.len);
        frames.push(frame);
        rest = tail;
        base = d.offset + d.len;
    }
    frames
}

#[cfg(test)]
mod next_hop_tests {
    use super::*;

    #[test]
    fn unroutable_and_unknown_next_hops_are_refused() {
        let ok: SocketAddr = "192.0.2.1:1789".parse().unwrap();
        assert_eq!(next_hop_ok(None, ok), Ok(()));
        for bad in [
            "192.0.2.1:0",
            "0.0.0.0:1789",
            "[::]:1789",
            "224.0.0.1:1789",
            "[ff02::1]:1789",
            "255.255.255.255:1789",
        ] {
            let a: SocketAddr = bad.parse().unwrap();
            assert_eq!(
                next_hop_ok(None, a),
                Err(NodeDrop::UnroutableNextHop),
                "{bad}"
            );
        }
        let known: std::collections::HashSet<SocketAddr> = [ok].into();
        assert_eq!(next_hop_ok(Some(&known), ok), Ok(()));
        let other: SocketAddr = "192.0.2.2:1789".parse().unwrap();
        assert_eq!(
            next_hop_ok(Some(&known), other),
            Err(NodeDrop::UnknownNextHop)
        );
    }
}
