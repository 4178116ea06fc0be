//! `send` (and `record`): build, pace, send, optionally capture, and measure at the sink.
//!
//! Threads: `builders` threads build chunks of frames ahead of time ([`Factory`], batched
//! X25519) into a bounded channel; this thread paces and sends them (batched `sendmmsg`); a
//! receiver thread reads the sink; with a pcap, a writer thread writes what was sent.
//!
//! Latency: the payload is encrypted before it is sent, so the send time cannot be written into
//! it. Each message carries its sequence number instead ([`super::Tag`]); the sender stores the
//! send time of every sequence number in a lock-free table just before the `sendmmsg` that sends
//! it (one timestamp per batch), and the receiver looks it up when the message reaches the sink.
//! End-to-end latency therefore includes the per-hop delays the packets ask for
//! (`mean_delay_ms` per hop), the nodes' processing, and the sink read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mixplane_dataplane::counters::NodeDrop;
use mixplane_dataplane::cover::{CoverConfig, CoverRoutes};
use mixplane_dataplane::demo::DemoTransport;
use mixplane_dataplane::io::tcp::{ConnLimits, PeerBook, TcpCounters, TcpIo, TcpSettings};
use mixplane_dataplane::io::{self, IoBackendKind, Outgoing, UdpIo};
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::sink::{self, SinkAddr};
use mixplane_dataplane::sphinx::build::{self, Hop};
use mixplane_dataplane::sphinx::{DropReason, NodeKeys, SizeClass, SphinxKey};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::factory::{Built, Factory, Mix, Tag};
use super::topology::{TopoNode, Topology};
use super::{Latency, Progress, latency_histogram, wait_until};
use crate::error::{Error, Result, io as io_err};
use crate::pcap::PcapRecorder;

/// Where the packets go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A local mixnet started in-process, like `mixplane demo`: three mix layers and an exit,
    /// each a real node on loopback with fresh keys, the exit delivering to the loadgen's sink.
    Demo(DemoOptions),
    /// An external mixnet; its exit delivers to `sink`, which the loadgen binds.
    Topology {
        /// The nodes.
        topology: Topology,
        /// Where the exit delivers final-hop messages (bound by the loadgen).
        sink: SocketAddr,
    },
}

/// Every node of `nodes` as a TCP peer, with its noise key when it has one.
fn peer_book(nodes: &[TopoNode]) -> PeerBook {
    PeerBook::tcp_peers(nodes.iter().map(|n| (n.hop.address, n.noise_key)))
}

/// The TCP sender: Nym's transport to the first hops, Noise to those with a noise key (all of
/// them must have one for `noise`).
fn tcp_sender(transport: DemoTransport, topology: &Topology) -> std::io::Result<Box<dyn UdpIo>> {
    let first = topology.first_hops();
    if transport == DemoTransport::Noise && first.iter().any(|n| n.noise_key.is_none()) {
        return Err(std::io::Error::other(
            "--transport noise needs every first hop's noise key in the topology",
        ));
    }
    let mut book = peer_book(first);
    if transport == DemoTransport::Tcp {
        // plain TCP even to nodes that publish a noise key
        book = peer_book(
            &first
                .iter()
                .map(|n| TopoNode {
                    noise_key: None,
                    ..*n
                })
                .collect::<Vec<_>>(),
        );
    }
    let io = TcpIo::new(
        TcpSettings {
            noise_secret: Some(zeroize::Zeroizing::new(rand::random())),
            egress_queue_frames: 1 << 16,
            ..TcpSettings::default()
        },
        Arc::new(ConnLimits::new(1, 1)),
        Arc::new(arc_swap::ArcSwap::from_pointee(book)),
        Arc::new(TcpCounters::default()),
        None,
    )?;
    Ok(Box::new(io))
}

/// Settings of the in-process demo mixnet.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Worker threads per node.
    pub workers: usize,
    /// The nodes' I/O backend.
    pub io: IoBackendKind,
    /// Loop cover traffic of every node, loops per second (0: off). The nodes recognise their
    /// loops and never deliver them to the sink, so the load's counts exclude them; the
    /// report shows them apart ([`Report::cover`]).
    pub cover: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            workers: 1,
            io: IoBackendKind::Auto,
            cover: 0.0,
        }
    }
}

/// The demo nodes' cover traffic, all nodes together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoverSummary {
    /// Loops sent (each loop and the ack loop it carries count as two).
    pub sent: u64,
    /// Loops back in time.
    pub returned: u64,
    /// Loops not back by their deadline.
    pub lost: u64,
    /// Loops back after their deadline.
    pub late: u64,
    /// Loops still out when the run ended.
    pub in_flight: u64,
    /// Nodes whose loss alarm was raised on some node.
    pub alarms: u64,
}

impl CoverSummary {
    fn of(nodes: &[Node]) -> Option<CoverSummary> {
        let reports: Vec<_> = nodes
            .iter()
            .filter_map(|n| n.cover().map(|c| c.report()))
            .collect();
        if reports.is_empty() {
            return None;
        }
        let mut s = CoverSummary::default();
        for r in &reports {
            s.sent += r.total.sent;
            s.returned += r.total.returned;
            s.lost += r.total.lost;
            s.late += r.total.late;
            s.in_flight += r.total.in_flight();
            s.alarms += u64::from(r.any_alarm());
        }
        Some(s)
    }
}

/// Everything `send` needs.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Where to send.
    pub target: Target,
    /// Packets per second (0: as fast as the builders and the socket allow).
    pub rate: u64,
    /// Exponential inter-arrival times at mean `rate` instead of a constant interval.
    pub poisson: bool,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Stop after this long. With neither `count` nor `duration`: 1000 packets.
    pub duration: Option<Duration>,
    /// Size-class mix.
    pub mix: Mix,
    /// Mean per-hop delay (exponential), ms.
    pub mean_delay_ms: f64,
    /// Record every sent frame to this pcap.
    pub pcap: Option<PathBuf>,
    /// Seed for routes, delays and packet secrets (None: random).
    pub seed: Option<u64>,
    /// Builder threads.
    pub builders: usize,
    /// Packets per build chunk.
    pub chunk: usize,
    /// Stop waiting for stragglers after this long without an arrival (None: derived from the
    /// delays, at least 1 s).
    pub drain: Option<Duration>,
    /// Local address to send from (None: an ephemeral port on loopback or any address).
    pub bind: Option<SocketAddr>,
    /// Sphinx version of the packets.
    pub sphinx_version: u16,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// Keep a copy of every sent frame in [`Report::sent_log`] (for tests and tools; costs the
    /// frames' memory).
    pub keep_sent: bool,
    /// How the load enters the mixnet: UDP datagrams, or one TCP connection per first hop with
    /// Nym's framing (v7 frames), plain or inside Noise (the first hop's noise key from the
    /// topology). Demo nodes then speak that transport among themselves too.
    pub transport: DemoTransport,
}

impl Default for SendConfig {
    fn default() -> Self {
        SendConfig {
            target: Target::Demo(DemoOptions::default()),
            rate: 1000,
            poisson: false,
            count: None,
            duration: None,
            mix: Mix::default(),
            mean_delay_ms: 1.0,
            pcap: None,
            seed: None,
            builders: 1,
            chunk: 128,
            drain: None,
            bind: None,
            sphinx_version: 258,
            progress: false,
            keep_sent: false,
            transport: DemoTransport::Udp,
        }
    }
}

/// Counts of one size class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassReport {
    /// Class name.
    pub class: &'static str,
    /// Packets sent.
    pub sent: u64,
    /// Messages received at the sink.
    pub received: u64,
}

/// One sent frame, kept when [`SendConfig::keep_sent`] is set.
#[derive(Debug, Clone)]
pub struct SentRecord {
    /// Send time (since the Unix epoch), as the capture records it.
    pub ts: Duration,
    /// Sequence number.
    pub seq: u64,
    /// Destination (the route's first hop).
    pub to: SocketAddr,
    /// The frame.
    pub frame: Vec<u8>,
}

/// The capture written.
#[derive(Debug, Clone, Serialize)]
pub struct PcapSummary {
    /// File.
    pub path: String,
    /// Frames written.
    pub frames: u64,
}

/// What a `send` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was driven.
    pub target: String,
    /// This run's id (in every message).
    pub run_id: u32,
    /// Packets handed to the kernel.
    pub sent: u64,
    /// Bytes of the frames sent (without IP/UDP headers; includes any the kernel refused).
    pub sent_bytes: u64,
    /// Packets the kernel refused.
    pub send_errors: u64,
    /// Distinct messages that reached the sink.
    pub received: u64,
    /// Messages that did not (`sent - received`).
    pub lost: u64,
    /// `lost / sent`, percent.
    pub loss_pct: f64,
    /// SURB-ACKs expected (sent packets that carry one).
    pub acks_expected: u64,
    /// Distinct SURB-ACKs that came back to the sink.
    pub acks_received: u64,
    /// Sink datagrams that were not this run's messages.
    pub foreign: u64,
    /// Seconds from the first send to the last.
    pub send_secs: f64,
    /// Asked rate, packets/s (0: flat out).
    pub target_rate_pps: u64,
    /// Exponential inter-arrival times.
    pub poisson: bool,
    /// Achieved send rate, packets/s.
    pub send_rate_pps: f64,
    /// Achieved send rate, Mbit/s of frames.
    pub send_mbps: f64,
    /// Messages received per second from the first send to the last arrival.
    pub recv_rate_pps: f64,
    /// Builder throughput, packets per second of builder thread time.
    pub build_rate_pps: f64,
    /// End-to-end message latency (send to sink), µs.
    pub latency_us: Latency,
    /// Send to SURB-ACK arrival (message route and the ack's route), µs.
    pub ack_latency_us: Latency,
    /// Per size class.
    pub classes: Vec<ClassReport>,
    /// Drops counted by the demo nodes, by reason (demo only; TCP ones as `tcp_<reason>`).
    pub node_drops: BTreeMap<String, u64>,
    /// Frames the demo nodes received whole over TCP (demo only; 0 over UDP).
    pub demo_tcp_frames: u64,
    /// The demo nodes' loop cover traffic, apart from the load (demo with cover only).
    pub cover: Option<CoverSummary>,
    /// The capture, if one was written.
    pub pcap: Option<PcapSummary>,
    /// The local address the frames were sent from.
    pub sender: SocketAddr,
    /// Every sent frame in send order, with [`SendConfig::keep_sent`].
    #[serde(skip)]
    pub sent_log: Vec<SentRecord>,
}

impl Report {
    /// Whether every message and every ack arrived.
    pub fn all_arrived(&self) -> bool {
        self.received == self.sent && self.acks_received == self.acks_expected
    }

    /// A human-readable summary.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "target: {} (run {:08x})", self.target, self.run_id);
        let rate = if self.target_rate_pps == 0 {
            "flat out".to_string()
        } else {
            format!(
                "{} {} pps",
                if self.poisson { "poisson" } else { "constant" },
                self.target_rate_pps
            )
        };
        let _ = writeln!(
            s,
            "sent:     {} packets, {} bytes in {:.3} s = {:.0} pps, {:.1} Mbit/s ({rate}; {} send errors; builders {:.0} pps)",
            self.sent,
            self.sent_bytes,
            self.send_secs,
            self.send_rate_pps,
            self.send_mbps,
            self.send_errors,
            self.build_rate_pps
        );
        let _ = writeln!(
            s,
            "received: {} messages ({:.0} pps), lost {} ({:.2}%), acks {}/{}, foreign {}",
            self.received,
            self.recv_rate_pps,
            self.lost,
            self.loss_pct,
            self.acks_received,
            self.acks_expected,
            self.foreign
        );
        if self.target_rate_pps > 0 && self.send_rate_pps < 0.95 * self.target_rate_pps as f64 {
            let _ = writeln!(
                s,
                "note:     sent at {:.0}% of the asked rate: the builders or the socket could not keep up (more --builders, or a lower --rate)",
                100.0 * self.send_rate_pps / self.target_rate_pps as f64
            );
        }
        let _ = writeln!(s, "latency:  {}", self.latency_us.line());
        let _ = writeln!(s, "ack rtt:  {}", self.ack_latency_us.line());
        let classes: Vec<String> = self
            .classes
            .iter()
            .map(|c| format!("{} {}/{}", c.class, c.received, c.sent))
            .collect();
        let _ = writeln!(s, "classes:  {}", classes.join(", "));
        if !self.node_drops.is_empty() {
            let d: Vec<String> = self
                .node_drops
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(s, "drops:    {}", d.join(", "));
        }
        if let Some(c) = &self.cover {
            let _ = writeln!(
                s,
                "cover:    {} loops sent by the nodes, {} returned, {} lost, {} late, {} in flight, {} node(s) alarmed (not counted above)",
                c.sent, c.returned, c.lost, c.late, c.in_flight, c.alarms
            );
        }
        if let Some(p) = &self.pcap {
            let _ = writeln!(s, "pcap:     {} frames -> {}", p.frames, p.path);
        }
        s
    }
}

/// Send times by sequence number, in lazily allocated segments: written by the sender, read by
/// the receiver, without locks. A slot holds `ns since epoch + 1` (0: not sent yet).
pub(super) struct SendTimes {
    segs: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

const SEG_BITS: u32 = 16;
const SEG_LEN: usize = 1 << SEG_BITS;
const MAX_SEGS: usize = 1 << 14; // 2^30 packets per run

impl SendTimes {
    pub(super) fn new() -> SendTimes {
        SendTimes {
            segs: (0..MAX_SEGS).map(|_| OnceLock::new()).collect(),
        }
    }

    fn seg(&self, seq: u64) -> Option<&OnceLock<Box<[AtomicU64]>>> {
        self.segs.get((seq >> SEG_BITS) as usize)
    }

    pub(super) fn set(&self, seq: u64, ns: u64) {
        if let Some(seg) = self.seg(seq) {
            let s = seg.get_or_init(|| (0..SEG_LEN).map(|_| AtomicU64::new(0)).collect());
            s[seq as usize & (SEG_LEN - 1)].store(ns + 1, Release);
        }
    }

    pub(super) fn get(&self, seq: u64) -> Option<u64> {
        let s = self.seg(seq)?.get()?;
        match s[seq as usize & (SEG_LEN - 1)].load(Acquire) {
            0 => None,
            v => Some(v - 1),
        }
    }
}

/// What the receiver publishes while it runs.
#[derive(Default)]
pub(super) struct RecvShared {
    pub(super) messages: AtomicU64,
    pub(super) acks: AtomicU64,
    /// ns since epoch of the last arrival of this run's datagrams.
    pub(super) last_ns: AtomicU64,
}

/// What the sink saw.
pub(super) struct Received {
    pub(super) hist: Histogram<u64>,
    pub(super) ack_hist: Histogram<u64>,
    pub(super) classes: [u64; 5],
    pub(super) foreign: u64,
    pub(super) messages: u64,
    pub(super) acks: u64,
}

fn class_index(c: SizeClass) -> usize {
    SizeClass::ALL
        .iter()
        .position(|&x| x == c)
        .expect("class in ALL")
}

/// What the sink thread needs.
pub(super) struct ReceiverCtx {
    /// Only count messages of this run (None: of any run).
    pub(super) run: Option<u32>,
    /// The clock of the send times in `table`.
    pub(super) epoch: Instant,
    /// Send times by sequence number.
    pub(super) table: Arc<SendTimes>,
    pub(super) shared: Arc<RecvShared>,
    pub(super) stop: Arc<AtomicBool>,
}

/// Reads the sink until `ctx.stop`: counts distinct messages and acks, and records the latency
/// of each from its send time in `ctx.table`.
pub(super) fn receive(mut io: Box<dyn UdpIo>, ctx: ReceiverCtx) -> Received {
    let mut datagrams = Vec::new();
    let mut msgs = HashSet::new();
    let mut acks = HashSet::new();
    let mut r = Received {
        hist: latency_histogram(),
        ack_hist: latency_histogram(),
        classes: [0; 5],
        foreign: 0,
        messages: 0,
        acks: 0,
    };
    while !ctx.stop.load(Relaxed) {
        match io.recv(Duration::from_millis(20), &mut datagrams) {
            Ok(n) if n > 0 => {}
            _ => continue,
        }
        let now = ctx.epoch.elapsed().as_nanos() as u64;
        let mut ours = false;
        for d in &datagrams {
            let tag = sink::parse(io.datagram(*d))
                .and_then(|m| Tag::parse(m.message))
                .filter(|t| ctx.run.is_none_or(|r| t.run == r));
            let Some(tag) = tag else {
                r.foreign += 1;
                continue;
            };
            ours = true;
            let key = (tag.run, tag.seq);
            let (set, hist) = if tag.ack {
                (&mut acks, &mut r.ack_hist)
            } else {
                (&mut msgs, &mut r.hist)
            };
            if !set.insert(key) {
                continue; // a duplicate
            }
            if !tag.ack {
                r.classes[class_index(tag.class)] += 1;
            }
            if let Some(t) = ctx.table.get(tag.seq) {
                let _ = hist.record((now.saturating_sub(t) / 1000).max(1));
            }
        }
        if ours {
            ctx.shared.messages.store(msgs.len() as u64, Relaxed);
            ctx.shared.acks.store(acks.len() as u64, Relaxed);
            ctx.shared.last_ns.store(now, Relaxed);
        }
    }
    r.messages = msgs.len() as u64;
    r.acks = acks.len() as u64;
    r
}

/// Demo nodes and the route topology through them.
struct Demo {
    nodes: Vec<Node>,
    topology: Topology,
}

fn start_demo(
    opts: &DemoOptions,
    sink: SocketAddr,
    expected: u64,
    mix: &Mix,
    rng: &mut StdRng,
    transport: DemoTransport,
) -> Result<Demo> {
    let held = (expected.saturating_mul(2)).clamp(4096, 1 << 18) as usize;
    let mut nodes = Vec::new();
    let mut route = Vec::new();
    for layer in 0..4 {
        let key = SphinxKey::from_secret(rng.random(), 1);
        let (public, rotation) = (*key.public(), key.parity());
        let noise_secret: [u8; 32] = rng.random();
        let noise = transport == DemoTransport::Noise;
        let tcp = (transport != DemoTransport::Udp).then(|| TcpSettings {
            // the port UDP gets
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            noise_secret: noise.then(|| zeroize::Zeroizing::new(noise_secret)),
            ..TcpSettings::default()
        });
        let node = Node::start(
            NodeConfig {
                tcp,
                workers: opts.workers,
                io: opts.io,
                wheel_capacity: held,
                slab_small: held,
                slab_large: if mix.has_extended() {
                    (expected as usize).clamp(64, 1024)
                } else {
                    64
                },
                replay_expected: expected.saturating_mul(4).max(100_000),
                sink: (layer == 3).then_some(SinkAddr::Udp(sink)),
                cover: (opts.cover > 0.0).then(|| CoverConfig {
                    rate_per_second: opts.cover,
                    mean_delay_ms: 1.0,
                    timeout: Duration::from_secs(2),
                    max_core_share: 0.25,
                    ..CoverConfig::default()
                }),
                ..NodeConfig::default()
            },
            Arc::new(NodeKeys::single(key)),
        )?;
        route.push(TopoNode {
            hop: Hop {
                address: node.local_addr(),
                public_key: public,
            },
            rotation,
            noise_key: noise.then(|| build::public_key(&noise_secret)),
        });
        nodes.push(node);
    }
    if transport != DemoTransport::Udp {
        // every node reaches every other by TCP (with its noise key for Noise)
        let book = peer_book(&route);
        for n in &nodes {
            n.set_peers(book.clone());
        }
    }
    // the three mixes are the cover loops' layers; the exit's loops cross all three
    let layers: Vec<Vec<Hop>> = route[..3].iter().map(|n| vec![n.hop]).collect();
    for (node, me) in nodes.iter().zip(&route) {
        if let Some(c) = node.cover() {
            c.set_routes(CoverRoutes {
                layers: layers.clone(),
                me: me.hop,
            });
        }
    }
    let gateways = route.pop().into_iter().collect();
    Ok(Demo {
        nodes,
        topology: Topology {
            layers: route.into_iter().map(|n| vec![n]).collect(),
            gateways,
        },
    })
}

fn demo_drops(nodes: &[Node]) -> BTreeMap<String, u64> {
    let mut drops = BTreeMap::new();
    let all: Vec<_> = nodes.iter().flat_map(|n| n.counters().to_vec()).collect();
    for r in DropReason::ALL {
        let c: u64 = all.iter().map(|w| w.sphinx_drops(r)).sum();
        if c > 0 {
            drops.insert(r.name().to_string(), c);
        }
    }
    for r in NodeDrop::ALL {
        let c: u64 = all.iter().map(|w| w.node_drops(r)).sum();
        if c > 0 {
            drops.insert(r.name().to_string(), c);
        }
    }
    for r in mixplane_dataplane::io::tcp::TcpDrop::ALL {
        let c: u64 = nodes
            .iter()
            .flat_map(|n| n.tcp_counters())
            .map(|t| t.drops(r))
            .sum();
        if c > 0 {
            drops.insert(format!("tcp_{}", r.name()), c);
        }
    }
    drops
}

/// The local address the kernel sends from to reach `dst` (for the capture's IP headers when
/// the socket is bound to an unspecified address).
fn source_for(local: SocketAddr, dst: SocketAddr) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    let any: SocketAddr = if dst.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let ip = UdpSocket::bind(any)
        .and_then(|s| s.connect(dst).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(local.ip());
    SocketAddr::new(ip, local.port())
}

/// A batch on its way to the pcap writer: send time (ns since epoch) and frames.
type Captured = (u64, Vec<Built>);

fn pcap_writer(
    path: PathBuf,
    rx: mpsc::Receiver<Captured>,
    wall0: Duration,
    local: SocketAddr,
) -> Result<u64> {
    let mut rec = PcapRecorder::create(&path)?;
    let mut sources: HashMap<SocketAddr, SocketAddr> = HashMap::new();
    for (t, batch) in rx {
        let ts = wall0 + Duration::from_nanos(t);
        for b in &batch {
            let src = *sources
                .entry(b.to)
                .or_insert_with(|| source_for(local, b.to));
            rec.record(ts, src, b.to, &b.frame)?;
        }
    }
    let frames = rec.frames();
    rec.finish()?;
    Ok(frames)
}

/// The send schedule: offsets from the start, constant or exponential steps.
struct Schedule {
    interval_ns: f64,
    poisson: bool,
    next_ns: f64,
    rng: StdRng,
}

impl Schedule {
    fn due(&self, start: Instant) -> Instant {
        start + Duration::from_nanos(self.next_ns as u64)
    }

    fn advance(&mut self) {
        self.next_ns += if self.poisson {
            let u: f64 = self.rng.random_range(f64::MIN_POSITIVE..1.0);
            -u.ln() * self.interval_ns
        } else {
            self.interval_ns
        };
    }
}

const SEND_BATCH: usize = 64;

/// Chunks from the builders, handed out in sequence order (builders finish out of order), so
/// that frames are sent, and recorded, in sequence order: frame `i` of a capture carries
/// message `i`, which is how a replay's sink finds a message's send time.
struct InOrder {
    rx: mpsc::Receiver<(u64, Result<Vec<Built>>)>,
    next: u64,
    held: BTreeMap<u64, Vec<Built>>,
}

enum Next {
    Chunk(Vec<Built>),
    Empty,
    Done,
    Failed(Error),
}

impl InOrder {
    fn ready(&mut self) -> Option<Vec<Built>> {
        let c = self.held.remove(&self.next)?;
        self.next += c.len() as u64;
        Some(c)
    }

    fn take(&mut self, got: (u64, Result<Vec<Built>>)) -> Option<Next> {
        match got {
            (first, Ok(c)) => {
                self.held.insert(first, c);
                None
            }
            (_, Err(e)) => Some(Next::Failed(e)),
        }
    }

    /// The next chunk in order, waiting for it.
    fn recv(&mut self) -> Next {
        loop {
            if let Some(c) = self.ready() {
                return Next::Chunk(c);
            }
            match self.rx.recv() {
                Ok(got) => {
                    if let Some(n) = self.take(got) {
                        return n;
                    }
                }
                Err(_) => return Next::Done,
            }
        }
    }

    /// The next chunk in order if it has been built.
    fn try_recv(&mut self) -> Next {
        loop {
            if let Some(c) = self.ready() {
                return Next::Chunk(c);
            }
            match self.rx.try_recv() {
                Ok(got) => {
                    if let Some(n) = self.take(got) {
                        return n;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return Next::Empty,
                Err(mpsc::TryRecvError::Disconnected) => return Next::Done,
            }
        }
    }
}

/// Runs `send` (with `cfg.pcap`, `record`) and reports.
pub fn run(cfg: &SendConfig) -> Result<Report> {
    if cfg.builders == 0 || cfg.chunk == 0 {
        return Err(Error::Config(
            "builders and chunk must be at least 1".into(),
        ));
    }
    let seed = cfg.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let run_id: u32 = rng.random();
    let count = match (cfg.count, cfg.duration) {
        (None, None) => Some(1000),
        (c, _) => c,
    };
    let expected = count.unwrap_or_else(|| {
        let secs = cfg.duration.map_or(10.0, |d| d.as_secs_f64());
        ((cfg.rate.max(10_000) as f64) * secs) as u64
    });

    // the sink first, so the demo exit can deliver to it
    let sink_bind = match &cfg.target {
        Target::Demo(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
        Target::Topology { sink, .. } => *sink,
    };
    let (sink_io, sink_addr) = io::open(IoBackendKind::Mmsg, sink_bind, 64)
        .map_err(io_err(format!("binding the sink {sink_bind}")))?;
    let (demo, topology, target_name) = match &cfg.target {
        Target::Demo(opts) => {
            let d = start_demo(opts, sink_addr, expected, &cfg.mix, &mut rng, cfg.transport)?;
            let t = d.topology.clone();
            let name = format!(
                "demo mixnet (3 layers + exit on loopback, {} worker(s)/node, io {})",
                opts.workers,
                d.nodes[0].io_backend()
            );
            (Some(d), t, name)
        }
        Target::Topology { topology, sink } => (
            None,
            topology.clone(),
            format!("topology ({} hops), sink {sink}", topology.route_len()),
        ),
    };
    let result = drive(cfg, &mut rng, run_id, count, sink_io, topology, target_name);
    let drops = demo.as_ref().map(|d| demo_drops(&d.nodes));
    let tcp_frames: u64 = demo.as_ref().map_or(0, |d| {
        d.nodes
            .iter()
            .flat_map(|n| n.tcp_counters())
            .map(|t| t.frames_in.load(Relaxed))
            .sum()
    });
    let cover = demo.as_ref().and_then(|d| CoverSummary::of(&d.nodes));
    if let Some(d) = demo {
        for n in d.nodes {
            n.shutdown()?;
        }
    }
    let mut report = result?;
    report.node_drops = drops.unwrap_or_default();
    report.demo_tcp_frames = tcp_frames;
    report.cover = cover;
    Ok(report)
}

fn drive(
    cfg: &SendConfig,
    rng: &mut StdRng,
    run_id: u32,
    count: Option<u64>,
    sink_io: Box<dyn UdpIo>,
    topology: Topology,
    target: String,
) -> Result<Report> {
    let hops = topology.route_len();
    if hops == 0 {
        return Err(Error::Topology("no hops".into()));
    }
    let first_hops_v4 = topology
        .first_hops()
        .iter()
        .all(|n| n.hop.address.is_ipv4());
    let all_loopback = topology
        .first_hops()
        .iter()
        .all(|n| n.hop.address.ip().is_loopback());
    let bind = cfg.bind.unwrap_or(match (first_hops_v4, all_loopback) {
        (true, true) => SocketAddr::from(([127, 0, 0, 1], 0)),
        (true, false) => SocketAddr::from(([0, 0, 0, 0], 0)),
        (false, true) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
        (false, false) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    });
    let (mut tx, local) = io::open(IoBackendKind::Mmsg, bind, SEND_BATCH)
        .map_err(io_err(format!("binding the sender {bind}")))?;
    if cfg.transport != DemoTransport::Udp {
        tx = tcp_sender(cfg.transport, &topology)
            .map_err(io_err("opening the TCP sender".to_string()))?;
    }

    let epoch = Instant::now();
    let wall0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| Error::Config(format!("the clock is before 1970: {e}")))?;
    let table = Arc::new(SendTimes::new());
    let shared = Arc::new(RecvShared::default());
    let stop_rx = Arc::new(AtomicBool::new(false));
    let receiver = {
        let ctx = ReceiverCtx {
            run: Some(run_id),
            epoch,
            table: table.clone(),
            shared: shared.clone(),
            stop: stop_rx.clone(),
        };
        std::thread::Builder::new()
            .name("loadgen-sink".into())
            .spawn(move || receive(sink_io, ctx))
            .map_err(io_err("starting the sink thread"))?
    };

    // builders
    let stop_build = Arc::new(AtomicBool::new(false));
    let next_seq = Arc::new(AtomicU64::new(0));
    let build_ns = Arc::new(AtomicU64::new(0));
    let built = Arc::new(AtomicU64::new(0));
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<(u64, Result<Vec<Built>>)>(4 * cfg.builders);
    let mut builders = Vec::new();
    for b in 0..cfg.builders {
        let mut factory = Factory::new(
            topology.clone(),
            cfg.mix.clone(),
            cfg.mean_delay_ms,
            run_id,
            cfg.sphinx_version,
            rng.random::<u64>() ^ b as u64,
        );
        let (tx, stop, next, ns, nb) = (
            chunk_tx.clone(),
            stop_build.clone(),
            next_seq.clone(),
            build_ns.clone(),
            built.clone(),
        );
        let chunk = cfg.chunk as u64;
        builders.push(
            std::thread::Builder::new()
                .name(format!("loadgen-build-{b}"))
                .spawn(move || {
                    while !stop.load(Relaxed) {
                        let first = next.fetch_add(chunk, Relaxed);
                        let n = match count {
                            Some(c) if first >= c => break,
                            Some(c) => chunk.min(c - first),
                            None => chunk,
                        };
                        let t = Instant::now();
                        let r = factory.build(first, n as usize);
                        ns.fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
                        nb.fetch_add(n, Relaxed);
                        let failed = r.is_err();
                        if tx.send((first, r)).is_err() || failed {
                            break;
                        }
                    }
                })
                .map_err(io_err("starting a builder thread"))?,
        );
    }
    drop(chunk_tx);

    // the pcap writer
    let (cap_tx, writer) = match &cfg.pcap {
        Some(path) => {
            let (t, r) = mpsc::channel::<Captured>();
            let path = path.clone();
            let w = std::thread::Builder::new()
                .name("loadgen-pcap".into())
                .spawn(move || pcap_writer(path, r, wall0, local))
                .map_err(io_err("starting the pcap writer thread"))?;
            (Some(t), Some(w))
        }
        None => (None, None),
    };

    // send
    let mut progress = Progress::new(cfg.progress);
    let mut schedule = Schedule {
        interval_ns: if cfg.rate > 0 {
            1e9 / cfg.rate as f64
        } else {
            0.0
        },
        poisson: cfg.poisson,
        next_ns: 0.0,
        rng: StdRng::seed_from_u64(rng.random()),
    };
    let mut pending: std::collections::VecDeque<Built> = Default::default();
    let mut sent = 0u64;
    let mut sent_bytes = 0u64;
    let mut send_errors = 0u64;
    let mut acks_expected = 0u64;
    let mut class_sent = [0u64; 5];
    let mut batch: Vec<Built> = Vec::with_capacity(SEND_BATCH);
    let mut build_error = None;
    let mut sent_log = Vec::new();
    // wait for the first chunk so that start-up does not count against the rate
    let mut chunks = InOrder {
        rx: chunk_rx,
        next: 0,
        held: BTreeMap::new(),
    };
    match chunks.recv() {
        Next::Chunk(c) => pending.extend(c),
        Next::Failed(e) => build_error = Some(e),
        Next::Empty | Next::Done => {}
    }
    let start = Instant::now();
    let end = cfg.duration.map(|d| start + d);
    let mut last_send = start;
    let mut done = build_error.is_some();
    while !done {
        if pending.is_empty() {
            match chunks.recv() {
                Next::Chunk(c) => pending.extend(c),
                Next::Failed(e) => {
                    build_error = Some(e);
                    break;
                }
                Next::Empty | Next::Done => break,
            }
        }
        // a run behind its schedule (builders or the socket slower than the rate) still ends
        // on time
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        if cfg.rate > 0 {
            let due = schedule.due(start);
            if end.is_some_and(|e| due >= e) {
                break;
            }
            wait_until(due);
        }
        let now = Instant::now();
        while batch.len() < SEND_BATCH {
            if pending.is_empty() {
                match chunks.try_recv() {
                    Next::Chunk(c) => pending.extend(c),
                    Next::Failed(e) => {
                        build_error = Some(e);
                        done = true;
                        break;
                    }
                    Next::Empty => break,
                    Next::Done => {
                        done = true;
                        break;
                    }
                }
                continue;
            }
            if cfg.rate > 0 {
                let due = schedule.due(start);
                if due > now || end.is_some_and(|e| due >= e) {
                    break;
                }
                schedule.advance();
            }
            batch.push(pending.pop_front().expect("not empty"));
        }
        if batch.is_empty() {
            continue;
        }
        let t = epoch.elapsed().as_nanos() as u64;
        for b in &batch {
            table.set(b.seq, t);
        }
        let out: Vec<Outgoing<'_>> = batch
            .iter()
            .map(|b| Outgoing {
                to: b.to,
                data: &b.frame,
            })
            .collect();
        let st = tx.send(&out);
        last_send = Instant::now();
        send_errors += st.failed as u64;
        sent += st.sent as u64;
        if cfg.keep_sent {
            sent_log.extend(batch.iter().map(|b| SentRecord {
                ts: wall0 + Duration::from_nanos(t),
                seq: b.seq,
                to: b.to,
                frame: b.frame.clone(),
            }));
        }
        for b in &batch {
            sent_bytes += b.frame.len() as u64;
            class_sent[class_index(b.class)] += 1;
            acks_expected += u64::from(b.has_ack);
        }
        match &cap_tx {
            Some(c) => {
                let _ = c.send((t, std::mem::take(&mut batch)));
                batch.reserve(SEND_BATCH);
            }
            None => batch.clear(),
        }
        progress.tick(|el| {
            format!(
                "{:.0} s: sent {sent} ({:.0} pps), received {}, acks {}",
                el.as_secs_f64(),
                sent as f64 / el.as_secs_f64(),
                shared.messages.load(Relaxed),
                shared.acks.load(Relaxed)
            )
        });
    }
    stop_build.store(true, Relaxed);
    drop(chunks);
    for b in builders {
        let _ = b.join();
    }
    drop(cap_tx);
    let send_secs = last_send.duration_since(start).as_secs_f64();

    // drain: until everything arrived or nothing has for a while
    let idle_limit = cfg.drain.unwrap_or_else(|| {
        Duration::from_secs_f64((30.0 * cfg.mean_delay_ms * hops as f64 / 1000.0).max(1.0))
    });
    let mut last_seen = (0, 0);
    let mut last_change = Instant::now();
    if build_error.is_none() {
        loop {
            let m = shared.messages.load(Relaxed);
            let a = shared.acks.load(Relaxed);
            if m >= sent && a >= acks_expected {
                break;
            }
            if (m, a) != last_seen {
                last_seen = (m, a);
                last_change = Instant::now();
            } else if last_change.elapsed() >= idle_limit {
                break;
            }
            progress.tick(|el| {
                format!(
                    "{:.0} s: sent {sent}, draining: received {m}, acks {a}",
                    el.as_secs_f64()
                )
            });
            // a TCP sender writes what it still holds meanwhile
            tx.idle(Duration::from_millis(5));
        }
    }
    progress.finish();
    stop_rx.store(true, Relaxed);
    let recv = receiver.join().map_err(|_| Error::Panicked("sink"))?;
    let pcap = match (writer, &cfg.pcap) {
        (Some(w), Some(path)) => Some(PcapSummary {
            path: path.display().to_string(),
            frames: w.join().map_err(|_| Error::Panicked("pcap writer"))??,
        }),
        _ => None,
    };
    if let Some(e) = build_error {
        return Err(e);
    }

    let received = recv.messages;
    let acks_received = recv.acks;
    let last_ns = shared.last_ns.load(Relaxed);
    let start_ns = start.duration_since(epoch).as_nanos() as u64;
    let recv_secs = last_ns.saturating_sub(start_ns) as f64 / 1e9;
    let lost = sent.saturating_sub(received);
    let builder_secs = build_ns.load(Relaxed) as f64 / 1e9;
    Ok(Report {
        target,
        run_id,
        sent,
        sent_bytes,
        send_errors,
        received,
        lost,
        loss_pct: if sent > 0 {
            100.0 * lost as f64 / sent as f64
        } else {
            0.0
        },
        acks_expected,
        acks_received,
        foreign: recv.foreign,
        send_secs,
        target_rate_pps: cfg.rate,
        poisson: cfg.poisson,
        send_rate_pps: per_sec(sent as f64, send_secs),
        send_mbps: per_sec(sent_bytes as f64 * 8.0 / 1e6, send_secs),
        recv_rate_pps: per_sec(received as f64, recv_secs),
        build_rate_pps: per_sec(built.load(Relaxed) as f64, builder_secs),
        latency_us: Latency::of(&recv.hist),
        ack_latency_us: Latency::of(&recv.ack_hist),
        classes: SizeClass::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| class_sent[*i] > 0 || recv.classes[*i] > 0)
            .map(|(i, c)| ClassReport {
                class: c.name(),
                sent: class_sent[i],
                received: recv.classes[i],
            })
            .collect(),
        node_drops: BTreeMap::new(),
        demo_tcp_frames: 0,
        cover: None,
        pcap,
        sender: local,
        sent_log,
    })
}

/// `x / secs`, 0 for an empty interval. A single batch sent at once has an interval of ~0:
/// report its count over 1 µs rather than infinity.
fn per_sec(x: f64, secs: f64) -> f64 {
    if x == 0.0 { 0.0 } else { x / secs.max(1e-6) }
}
