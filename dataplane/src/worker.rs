//! One worker: its socket and I/O backend, Sphinx processor, slab, delay wheel and counters.
//!
//! The loop has two stages. [`LoopState::receive_and_process`] receives a batch (waiting at
//! most until the wheel's next deadline), hands it to the Sphinx core in place, moves forward
//! hops into slab slots and the wheel with deadlines computed from the receive time, and queues
//! SURB-ACKs and UDP-sink messages for immediate release. [`LoopState::release`] takes what is
//! due from the wheel and sends it grouped by next hop. With cover traffic on, the worker also
//! takes the loops the cover thread built from a bounded channel after each receive
//! ([`LoopState::take_cover`]) and holds them like forward hops, and a final-hop message that
//! carries the node's loop tag is reported to the cover thread instead of the sink. Nothing per
//! packet takes a lock or allocates (a loop's buffer, allocated by the cover thread, is freed
//! here); the one syscall per packet is the Unix sink's `send` of each delivered message (a UDP
//! sink's messages go out with the batched sends).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::budget::BatchBudget;
use crate::counters::{NodeDrop, WorkerCounters, WorkerPhase};
use crate::cover::WorkerCover;
use crate::egress::EgressFilter;
use crate::io::tcp::{PeerBook, PeerTransport, TcpIo};
use crate::io::{Datagram, Outgoing, UdpIo};
use crate::sink::{self, SinkAddr, UnixSink};
use crate::slab::{Slab, SlotId};
use crate::snapshot::Snapshot;
use crate::sphinx::{Deliver, OverCap, Processor, ProcessorConfig, Verdict};
use crate::wheel::{DelayWheel, WheelConfig};

/// The run state shared by a node's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RunState {
    /// Receive, process and release.
    Running = 0,
    /// Stop receiving; release what the wheels hold at its deadlines, then exit.
    Draining = 1,
    /// Exit now.
    Abort = 2,
}

/// A [`RunState`] shared between threads (stored in an `AtomicU8`).
#[derive(Debug)]
pub(crate) struct SharedRunState(AtomicU8);

impl SharedRunState {
    /// A shared state starting at `state`.
    pub(crate) fn new(state: RunState) -> SharedRunState {
        SharedRunState(AtomicU8::new(state as u8))
    }

    /// The current state.
    pub(crate) fn load(&self) -> RunState {
        match self.0.load(Ordering::Acquire) {
            0 => RunState::Running,
            1 => RunState::Draining,
            _ => RunState::Abort,
        }
    }

    /// Sets the state.
    pub(crate) fn store(&self, state: RunState) {
        self.0.store(state as u8, Ordering::Release);
    }

    /// Moves from `from` to `to` if the state is `from`; returns whether it did.
    pub(crate) fn transition(&self, from: RunState, to: RunState) -> bool {
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// A packet waiting in the wheel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    slot: SlotId,
    len: u32,
    to: SocketAddr,
    /// The transport it leaves by (chosen once, when it is held).
    via: PeerTransport,
    deadline_ns: u64,
    rx_ns: u64,
}

/// Settings a worker needs.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) batch: usize,
    /// See `NodeConfig::batch_budget_ns`.
    pub(crate) batch_budget_ns: u64,
    pub(crate) max_delay_ns: u64,
    pub(crate) over_cap: OverCap,
    /// Which next hops packets may go to (shared by the node's workers).
    pub(crate) egress: Arc<EgressFilter>,
    pub(crate) wheel_tick_ns: u64,
    pub(crate) wheel_capacity: usize,
    pub(crate) slab_small: usize,
    pub(crate) slab_large: usize,
    pub(crate) sink: Option<SinkAddr>,
    /// Test-only fault switch: forward hops dropped per 1000.
    pub(crate) fault_drop_per_mille: u16,
}

/// A worker's transports: UDP datagrams, Nym's TCP stream transport, or both (at least one).
pub(crate) struct Transports {
    pub(crate) udp: Option<Box<dyn UdpIo>>,
    pub(crate) tcp: Option<TcpIo>,
}

impl Transports {
    fn name(&self) -> &'static str {
        match (&self.udp, &self.tcp) {
            (Some(u), None) => u.name(),
            (Some(_), Some(_)) => "udp+tcp",
            (None, _) => "tcp",
        }
    }
}

/// A worker before it runs: what the node hands its thread.
pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) io: Transports,
    /// Transport and Noise key of each next hop (shared with the TCP transport).
    pub(crate) peers: Arc<ArcSwap<PeerBook>>,
    pub(crate) shared: Arc<ArcSwap<Snapshot>>,
    pub(crate) state: Arc<SharedRunState>,
    pub(crate) counters: Arc<WorkerCounters>,
    pub(crate) epoch: Instant,
    /// This worker's end of the cover channels, when cover traffic is on.
    pub(crate) cover: Option<WorkerCover>,
    pub(crate) settings: WorkerSettings,
}

/// The longest a receive waits, so that a worker sees a change of run state soon.
const MAX_WAIT: Duration = Duration::from_millis(50);

impl Worker {
    /// Runs the worker loop until the node drains or aborts.
    pub(crate) fn run(mut self) {
        let Some(mut st) = LoopState::new(&mut self) else {
            return;
        };
        tracing::debug!(worker = self.id, io = self.io.name(), "worker started");
        loop {
            let state = self.state.load();
            if state == RunState::Abort {
                break;
            }
            let wait = st.wait();
            if state == RunState::Running {
                st.receive(&mut self.io, wait);
                st.take_cover();
            } else {
                // the TCP frames held back for the next lane group were read from their
                // connections before the stop: process them (once; nothing is held after)
                st.process_held_back(&mut self.io);
                if st.outbox.wheel.is_empty() {
                    break;
                }
                st.idle(&mut self.io, wait.min(Duration::from_millis(1)));
            }
            st.release(&mut self.io);
            if let Some(udp) = &self.io.udp {
                st.counters.set_kernel_overflows(udp.rx_overflows());
            }
        }
        if self.state.load() != RunState::Abort {
            st.finish_tcp(&mut self.io);
        }
        // abort: whatever is left is dropped (counted)
        let left = st.outbox.drop_all();
        if left > 0 {
            tracing::warn!(worker = self.id, left, "exiting with packets still held");
        }
        tracing::debug!(worker = self.id, "worker stopped");
    }
}

fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// What the worker loop carries from one batch to the next.
struct LoopState {
    id: usize,
    epoch: Instant,
    counters: Arc<WorkerCounters>,
    shared: Arc<ArcSwap<Snapshot>>,
    /// The snapshot the current batch is judged by.
    snapshot: Arc<Snapshot>,
    peers: Arc<ArcSwap<PeerBook>>,
    /// The last UDP receive filled a batch: look again before waiting.
    udp_busy: bool,
    /// How many datagrams a receive may take.
    budget: BatchBudget,
    processor: Processor,
    /// Where accepted packets wait for their deadline.
    outbox: Outbox,
    /// Which next hops are allowed.
    egress: Arc<EgressFilter>,
    /// Scratch, reused for every batch.
    datagrams: Vec<Datagram>,
    verdicts: Vec<Verdict>,
    due: Vec<Held>,
}

/// Packets on their way out: the slab that holds their bytes, the wheel that holds them until
/// their deadline, and the sink for final-hop messages.
struct Outbox {
    counters: Arc<WorkerCounters>,
    /// Which transports the worker has: (udp, tcp).
    transports: (bool, bool),
    slab: Slab,
    wheel: DelayWheel<Held>,
    udp_sink: Option<SocketAddr>,
    unix_sink: Option<UnixSink>,
    /// Cover traffic: loops to send and the key that recognises returning ones.
    cover: Option<WorkerCover>,
    /// Test-only fault switch (forward hops dropped per 1000) and its xorshift state.
    fault: (u16, u64),
}

impl LoopState {
    /// The loop state of `w`; `None` (logged) when its wheel settings are invalid.
    fn new(w: &mut Worker) -> Option<LoopState> {
        let s = &w.settings;
        let snapshot = w.shared.load_full();
        let processor = Processor::new(
            snapshot.keys.clone(),
            ProcessorConfig {
                max_delay_ns: s.max_delay_ns,
                over_cap: s.over_cap,
                ..ProcessorConfig::default()
            },
        );
        let wheel_config = WheelConfig {
            tick_ns: s.wheel_tick_ns,
            capacity: s.wheel_capacity,
            max_delay_ns: s.max_delay_ns,
            ..WheelConfig::default()
        };
        let wheel = match DelayWheel::new(wheel_config, now_ns(w.epoch)) {
            Ok(wheel) => wheel,
            Err(e) => {
                tracing::error!(worker = w.id, error = %e, "bad wheel configuration");
                return None;
            }
        };
        let (udp_sink, unix_sink) = open_sink(w.id, s.sink.as_ref());
        if let Some(tcp) = &mut w.io.tcp {
            // whole groups of the X25519 kernel's lanes per batch where the stream allows
            tcp.set_lane_width(crate::budget::lanes());
        }
        Some(LoopState {
            id: w.id,
            epoch: w.epoch,
            counters: w.counters.clone(),
            shared: w.shared.clone(),
            snapshot,
            peers: w.peers.clone(),
            udp_busy: false,
            budget: BatchBudget::new(s.batch_budget_ns, s.batch),
            processor,
            outbox: Outbox {
                counters: w.counters.clone(),
                transports: (w.io.udp.is_some(), w.io.tcp.is_some()),
                slab: Slab::new(s.slab_small, s.slab_large),
                wheel,
                udp_sink,
                unix_sink,
                cover: w.cover.take(),
                fault: (s.fault_drop_per_mille, 0x9E37_79B9_7F4A_7C15 ^ w.id as u64),
            },
            egress: s.egress.clone(),
            datagrams: Vec::with_capacity(s.batch * 4),
            verdicts: Vec::with_capacity(s.batch * 4),
            due: Vec::with_capacity(s.batch * 4),
        })
    }

    fn now(&self) -> u64 {
        now_ns(self.epoch)
    }

    /// How long a receive may wait: until the wheel's next deadline, at most [`MAX_WAIT`].
    fn wait(&self) -> Duration {
        match self.outbox.wheel.next_deadline_hint() {
            Some(d) => Duration::from_nanos(d.saturating_sub(self.now())).min(MAX_WAIT),
            None => MAX_WAIT,
        }
    }

    /// Receives from every transport the worker has, waiting up to `wait` for the first
    /// packet: with one transport its own receive waits; with both, the TCP poll watches the
    /// UDP socket too and each gives what it has without waiting.
    fn receive(&mut self, io: &mut Transports, wait: Duration) {
        match (&mut io.udp, &mut io.tcp) {
            (Some(udp), None) => {
                self.receive_and_process(udp.as_mut(), wait);
            }
            (udp, Some(tcp)) => {
                let wait = if self.udp_busy {
                    Duration::ZERO
                } else if udp.as_ref().is_some_and(|u| u.readiness_fd().is_none()) {
                    // a backend the poll cannot watch (in-memory): look at it often
                    wait.min(Duration::from_millis(1))
                } else {
                    wait
                };
                if let Err(e) = tcp.wait(wait) {
                    tracing::warn!(worker = self.id, error = %e, "poll failed");
                    std::thread::sleep(Duration::from_millis(1));
                }
                let t_call = self.now();
                let n = tcp.take_frames(&mut self.datagrams);
                if n > 0 {
                    self.received(tcp, n, t_call);
                }
                if let Some(udp) = udp {
                    let n = self.receive_and_process(udp.as_mut(), Duration::ZERO);
                    self.udp_busy = n >= self.budget.limit();
                }
            }
            (None, None) => std::thread::sleep(wait),
        }
        if let Some(limit) = self.budget.changed() {
            if let Some(udp) = &mut io.udp {
                udp.set_recv_limit(limit);
            }
            if let Some(tcp) = &mut io.tcp {
                tcp.set_recv_limit(limit);
            }
        }
    }

    /// Processes the TCP frames the last receive held back, if any.
    fn process_held_back(&mut self, io: &mut Transports) {
        if let Some(tcp) = &mut io.tcp {
            let t_call = self.now();
            let n = tcp.take_held_back(&mut self.datagrams);
            if n > 0 {
                self.received(tcp, n, t_call);
            }
        }
    }

    /// While draining: no receiving, but TCP connections still make progress (writes,
    /// handshakes, timeouts).
    fn idle(&mut self, io: &mut Transports, wait: Duration) {
        match &mut io.tcp {
            Some(tcp) => {
                let _ = tcp.wait(wait);
            }
            None => std::thread::sleep(wait),
        }
    }

    /// After the last release: give the TCP transport up to a second to write what it holds.
    fn finish_tcp(&mut self, io: &mut Transports) {
        let Some(tcp) = &mut io.tcp else {
            return;
        };
        let end = Instant::now() + Duration::from_secs(1);
        while tcp.queued_frames() > 0 && Instant::now() < end {
            let _ = tcp.wait(Duration::from_millis(5));
        }
    }

    /// Receives one batch from `io` (waiting up to `wait`) and processes it in place in the
    /// backend's arena ([`Self::process`]). Returns how many datagrams it received.
    fn receive_and_process(&mut self, io: &mut dyn UdpIo, wait: Duration) -> usize {
        let t_call = self.now();
        let n = match io.recv(wait, &mut self.datagrams) {
            Ok(0) => return 0,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(worker = self.id, error = %e, "receive failed");
                std::thread::sleep(Duration::from_millis(1));
                return 0;
            }
        };
        self.received(io, n, t_call);
        n
    }

    /// Counts a received batch of `n` frames (the receive began at `t_call`) and processes
    /// it in place in `io`'s buffers.
    fn received(&mut self, io: &mut dyn UdpIo, n: usize, t_call: u64) {
        let t_rx = self.now();
        self.counters
            .add_phase(WorkerPhase::Receive, t_rx.saturating_sub(t_call));
        WorkerCounters::add(&self.counters.rx_datagrams, n as u64);
        WorkerCounters::add(&self.counters.rx_batches, 1);
        // frames_mut needs arena order (io_uring hands buffers back in any order)
        self.datagrams.sort_unstable_by_key(|d| d.offset);
        let mut frames = io.frames_mut(&self.datagrams);
        self.process(&mut frames, t_rx);
    }

    /// Unwraps a batch of frames received at `t_rx` in place and holds or delivers what
    /// survives. Any transport's batch can come through here.
    fn process(&mut self, frames: &mut [&mut [u8]], t_rx: u64) {
        if frames.is_empty() {
            return;
        }
        // pick up a new snapshot (key rotation) between batches: after the receive, so a batch
        // is never judged by keys older than its arrival
        let current = self.shared.load();
        if !Arc::ptr_eq(&current, &self.snapshot) {
            self.snapshot = arc_swap::Guard::into_inner(current);
            self.processor.set_keys(self.snapshot.keys.clone());
        }
        let n = frames.len() as u64;
        let cpu0 = crate::budget::thread_cpu_ns();
        self.processor
            .process_batch(frames, &self.snapshot.replay, &mut self.verdicts);
        let t_done = self.now();
        let spent = t_done.saturating_sub(t_rx);
        self.counters.unwrap_per_packet.record(spent / n);
        // the cap follows the CPU time the batch took (wall-clock time if the clock fails)
        let cpu = match cpu0 {
            0 => spent,
            c0 => crate::budget::thread_cpu_ns().saturating_sub(c0).min(spent),
        };
        self.budget.observe(frames.len(), cpu);
        self.counters.add_phase(WorkerPhase::Process, spent);
        self.counters.batch_size.record(n);
        let allowed = self.snapshot.next_hops.as_deref();
        let peers = self.peers.load();
        let route = Route {
            egress: &self.egress,
            allowed,
            peers: &peers,
            transports: self.outbox.transports,
        };
        for (frame, v) in frames.iter().zip(&self.verdicts) {
            self.outbox.take(&route, frame, v, t_rx);
        }
        self.counters
            .add_phase(WorkerPhase::Hold, self.now().saturating_sub(t_done));
    }

    /// Takes the loops the cover thread has handed this worker and holds them until their send
    /// time, through the same egress checks as forward hops (a bounded number per call).
    fn take_cover(&mut self) {
        let Some(cover) = &self.outbox.cover else {
            return;
        };
        let mut loops = Vec::new();
        while loops.len() < 64
            && let Ok(p) = cover.outbound.try_recv()
        {
            loops.push(p);
        }
        if loops.is_empty() {
            return;
        }
        let peers = self.peers.load();
        let route = Route {
            egress: &self.egress,
            allowed: self.snapshot.next_hops.as_deref(),
            peers: &peers,
            transports: self.outbox.transports,
        };
        let now = self.now();
        for p in loops {
            match route.to(p.to) {
                Err(r) => self.counters.drop_node(r, 1),
                Ok(via) => {
                    self.outbox
                        .hold(&p.frame, (p.to, via), p.at_ns.max(now), now, None);
                }
            }
        }
    }

    /// Sends what the wheel says is due, grouped by transport and destination, and frees its
    /// slots.
    fn release(&mut self, io: &mut Transports) {
        let now = self.now();
        let outbox = &mut self.outbox;
        self.due.clear();
        outbox.wheel.expire(now, |h| self.due.push(h));
        if !self.due.is_empty() {
            for h in &self.due {
                self.counters
                    .record_lateness(now.saturating_sub(h.deadline_ns));
                self.counters.residence.record(now.saturating_sub(h.rx_ns));
            }
            // group by transport and destination, longest first, so runs can go out as GSO
            // messages (UDP) or one write per next hop (TCP)
            self.due.sort_unstable_by(|a, b| {
                (a.via as u8, a.to)
                    .cmp(&(b.via as u8, b.to))
                    .then(b.len.cmp(&a.len))
            });
            let split = self.due.partition_point(|h| h.via == PeerTransport::Udp);
            let (by_udp, by_tcp) = self.due.split_at(split);
            let outgoing = |held: &[Held]| -> Vec<Outgoing<'_>> {
                held.iter()
                    .map(|h| Outgoing {
                        to: h.to,
                        data: &outbox.slab.get(h.slot)[..h.len as usize],
                    })
                    .collect()
            };
            let mut st = crate::io::SendStats::default();
            for (held, via) in [(by_udp, PeerTransport::Udp), (by_tcp, PeerTransport::Tcp)] {
                if held.is_empty() {
                    continue;
                }
                let out = outgoing(held);
                let s = match via {
                    PeerTransport::Udp => io.udp.as_mut().map(|u| u.send(&out)),
                    PeerTransport::Tcp => io.tcp.as_mut().map(|t| t.send_frames(&out)),
                }
                .unwrap_or(crate::io::SendStats {
                    failed: held.len(),
                    ..Default::default()
                });
                st.sent += s.sent;
                st.failed += s.failed;
                st.calls += s.calls;
            }
            WorkerCounters::add(&self.counters.tx_datagrams, st.sent as u64);
            WorkerCounters::add(&self.counters.tx_calls, st.calls as u64);
            if st.failed > 0 {
                self.counters
                    .drop_node(NodeDrop::SendFailed, st.failed as u64);
            }
            for h in &self.due {
                outbox.slab.free(h.slot);
            }
            self.counters
                .add_phase(WorkerPhase::Release, now_ns(self.epoch).saturating_sub(now));
        }
        self.counters
            .wheel_len
            .store(outbox.wheel.len() as u64, Ordering::Relaxed);
    }
}

/// What a batch's next hops are checked and routed by.
struct Route<'a> {
    /// The egress policy (never the node itself, loopback or private ranges unless allowed).
    egress: &'a EgressFilter,
    /// The routing filter (known nodes), when on.
    allowed: Option<&'a std::collections::HashSet<SocketAddr>>,
    /// Each next hop's transport.
    peers: &'a PeerBook,
    /// Which transports this worker has: (udp, tcp).
    transports: (bool, bool),
}

impl Route<'_> {
    /// Whether a packet may go to `to` (the egress policy, then the routing filter), and by
    /// which transport.
    fn to(&self, to: SocketAddr) -> Result<PeerTransport, NodeDrop> {
        self.egress.check(to)?;
        next_hop_ok(self.allowed, to)?;
        Ok(match (self.peers.transport(to), self.transports) {
            (PeerTransport::Udp, (false, _)) => PeerTransport::Tcp,
            (PeerTransport::Tcp, (_, false)) => PeerTransport::Udp,
            (t, _) => t,
        })
    }
}

/// Opens the configured sink: a UDP address, or a connected Unix socket (`None` and logged
/// when it cannot be opened).
fn open_sink(worker: usize, sink: Option<&SinkAddr>) -> (Option<SocketAddr>, Option<UnixSink>) {
    match sink {
        Some(SinkAddr::Udp(a)) => (Some(*a), None),
        Some(SinkAddr::Unix(p)) => match UnixSink::connect(p) {
            Ok(u) => (None, Some(u)),
            Err(e) => {
                tracing::error!(worker, path = %p.display(), error = %e, "cannot open the unix sink");
                (None, None)
            }
        },
        None => (None, None),
    }
}

impl Outbox {
    /// Acts on one verdict for `frame`, received at `t_rx`: counts a drop, holds a forward hop
    /// until its deadline, or sends a final hop's SURB-ACK on and delivers its message. Next
    /// hops must pass [`Route::to`].
    fn take(&mut self, route: &Route<'_>, frame: &[u8], v: &Verdict, t_rx: u64) {
        if let Verdict::Forward(f) = v
            && f.delay_clamped
        {
            WorkerCounters::add(&self.counters.excessive_delay, 1);
        }
        match v {
            Verdict::Drop(r) => self.counters.drop_sphinx(*r),
            Verdict::Forward(_) if self.fault_hit() => {}
            Verdict::Forward(f) => match route.to(f.next_hop) {
                Err(r) => self.counters.drop_node(r, 1),
                Ok(via) => {
                    let deadline = t_rx + f.delay_ns;
                    let to = (f.next_hop, via);
                    if self.hold(&frame[f.frame.clone()], to, deadline, t_rx, None) {
                        WorkerCounters::add(&self.counters.forwarded, 1);
                    }
                }
            },
            Verdict::Deliver(d) => {
                if let Some(ack) = &d.surb_ack {
                    match route.to(ack.next_hop) {
                        Err(r) => self.counters.drop_node(r, 1),
                        Ok(via) => {
                            let to = (ack.next_hop, via);
                            if self.hold(&frame[ack.frame.clone()], to, t_rx, t_rx, None) {
                                WorkerCounters::add(&self.counters.surb_acks, 1);
                            }
                        }
                    }
                }
                if let Some(cover) = &self.cover
                    && cover.intercept(&frame[d.message.clone()], t_rx)
                {
                    return;
                }
                if self.deliver(frame, d, t_rx) {
                    WorkerCounters::add(&self.counters.delivered, 1);
                }
            }
        }
    }

    /// Whether the test-only fault switch drops this forward hop.
    fn fault_hit(&mut self) -> bool {
        let (per_mille, x) = &mut self.fault;
        if *per_mille == 0 {
            return false;
        }
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x % 1000 < u64::from(*per_mille)
    }

    /// Hands a final hop's message to the sink: through the wheel (no delay) for a UDP sink, at
    /// once for a Unix sink. Returns whether it was accepted; failures are counted.
    fn deliver(&mut self, frame: &[u8], d: &Deliver, t_rx: u64) -> bool {
        let msg = &frame[d.message.clone()];
        if let Some(to) = self.udp_sink {
            let header = (&d.destination, &d.identifier, d.sealed);
            // the sink is a local UDP socket, whatever the next hops speak
            let via = if self.transports.0 {
                PeerTransport::Udp
            } else {
                self.counters.drop_node(NodeDrop::NoSink, 1);
                return false;
            };
            self.hold(msg, (to, via), t_rx, t_rx, Some(header))
        } else if let Some(u) = &mut self.unix_sink {
            let ok = u.send(&d.destination, &d.identifier, d.sealed, msg);
            if !ok {
                self.counters.drop_node(NodeDrop::SinkFailed, 1);
            }
            ok
        } else {
            self.counters.drop_node(NodeDrop::NoSink, 1);
            false
        }
    }

    /// Copies `bytes` (behind a sink header, if given) into a slab slot and puts it in the
    /// wheel. Returns whether it is held; a full slab or wheel is counted.
    fn hold(
        &mut self,
        bytes: &[u8],
        (to, via): (SocketAddr, PeerTransport),
        deadline_ns: u64,
        rx_ns: u64,
        sink_header: Option<(&[u8; 32], &[u8; 16], bool)>,
    ) -> bool {
        let pre = if sink_header.is_some() {
            sink::SINK_HEADER_LEN
        } else {
            0
        };
        let len = pre + bytes.len();
        let Some(slot) = self.slab.alloc(len) else {
            self.counters.drop_node(NodeDrop::SlabFull, 1);
            return false;
        };
        let buf = self.slab.get_mut(slot);
        if let Some((dest, id, sealed)) = sink_header {
            sink::write_header(buf, dest, id, sealed);
        }
        buf[pre..len].copy_from_slice(bytes);
        let held = Held {
            slot,
            len: len as u32,
            to,
            via,
            deadline_ns,
            rx_ns,
        };
        match self.wheel.insert(deadline_ns, held) {
            Ok(()) => true,
            Err(full) => {
                self.slab.free(full.into_inner().slot);
                self.counters.drop_node(NodeDrop::WheelFull, 1);
                false
            }
        }
    }

    /// Drops everything still held; returns how many packets that was.
    fn drop_all(&mut self) -> usize {
        let slab = &mut self.slab;
        self.wheel.drain_all(|h| slab.free(h.slot))
    }
}

/// Whether the routing filter, when on, lets a packet go to `to`: a node of the topology.
fn next_hop_ok(
    allowed: Option<&std::collections::HashSet<SocketAddr>>,
    to: SocketAddr,
) -> Result<(), NodeDrop> {
    if allowed.is_some_and(|a| !a.contains(&to)) {
        Err(NodeDrop::UnknownNextHop)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod next_hop_tests {
    use super::*;
    use crate::egress::EgressPolicy;

    fn route<'a>(
        egress: &'a EgressFilter,
        allowed: Option<&'a std::collections::HashSet<SocketAddr>>,
        peers: &'a PeerBook,
    ) -> Route<'a> {
        Route {
            egress,
            allowed,
            peers,
            transports: (true, false),
        }
    }

    #[test]
    fn unroutable_unknown_and_local_next_hops_are_refused() {
        let peers = PeerBook::default();
        let strict = EgressFilter::new(EgressPolicy::STRICT, &[]);
        let ok: SocketAddr = "192.0.2.1:1789".parse().unwrap();
        assert_eq!(route(&strict, None, &peers).to(ok), Ok(PeerTransport::Udp));
        for (bad, why) in [
            ("192.0.2.1:0", NodeDrop::UnroutableNextHop),
            ("0.0.0.0:1789", NodeDrop::UnroutableNextHop),
            ("[::]:1789", NodeDrop::UnroutableNextHop),
            ("224.0.0.1:1789", NodeDrop::UnroutableNextHop),
            ("[ff02::1]:1789", NodeDrop::UnroutableNextHop),
            ("255.255.255.255:1789", NodeDrop::UnroutableNextHop),
            ("169.254.169.254:80", NodeDrop::UnroutableNextHop),
            ("127.0.0.1:6379", NodeDrop::LoopbackNextHop),
            ("[::ffff:127.0.0.1]:6379", NodeDrop::LoopbackNextHop),
            ("192.168.0.1:53", NodeDrop::PrivateNextHop),
        ] {
            let a: SocketAddr = bad.parse().unwrap();
            assert_eq!(route(&strict, None, &peers).to(a), Err(why), "{bad}");
        }
        let known: std::collections::HashSet<SocketAddr> = [ok].into();
        assert!(route(&strict, Some(&known), &peers).to(ok).is_ok());
        let other: SocketAddr = "192.0.2.2:1789".parse().unwrap();
        assert_eq!(
            route(&strict, Some(&known), &peers).to(other),
            Err(NodeDrop::UnknownNextHop)
        );
        // the policy holds for known nodes too
        let local: SocketAddr = "10.0.0.1:1789".parse().unwrap();
        let known: std::collections::HashSet<SocketAddr> = [local].into();
        assert_eq!(
            route(&strict, Some(&known), &peers).to(local),
            Err(NodeDrop::PrivateNextHop)
        );
    }
}
