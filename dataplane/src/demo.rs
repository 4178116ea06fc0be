//! `mixplane demo`: a local mixnet on loopback. Three mix layers and an exit node, each a real
//! node with its own socket, keys and worker threads; a client that builds Nym packets (each
//! carrying a SURB-ACK routed back through the mixnet) and sends them in; a sink that receives
//! what the exit delivers and measures end-to-end latency.

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};

use crate::counters::{NodeDrop, WorkerCounters};
use crate::cover::{CoverConfig, CoverReport, CoverRoutes};
use crate::io::IoBackendKind;
use crate::io::stream::NoiseLink;
use crate::io::tcp::{PeerBook, TcpDrop, TcpSettings};
use crate::node::{Node, NodeConfig, NodeError};
use crate::sink::{self, SinkAddr};
use crate::sphinx::build::{self, FinalPadding, Hop, PacketSpec};
use crate::sphinx::{DropReason, FrameHeader, KeyRotation, NodeKeys, SizeClass, SphinxKey};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Packets to send.
    pub packets: usize,
    /// Size class of the messages.
    pub size: SizeClass,
    /// Mean per-hop delay (exponential), ms.
    pub mean_delay_ms: f64,
    /// Worker threads per node.
    pub workers: usize,
    /// Send rate, packets per second (0: as fast as possible).
    pub rate: u64,
    /// I/O backend of the nodes.
    pub io: IoBackendKind,
    /// Seed for keys, routes and delays (None: random).
    pub seed: Option<u64>,
    /// How the client and the nodes talk to each other.
    pub transport: DemoTransport,
    /// Loop cover traffic of every node, loops per second (0: off).
    pub cover: f64,
}

/// The transport between the demo's client and nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoTransport {
    /// UDP datagrams (mixplane among itself).
    #[default]
    Udp,
    /// Nym's TCP stream transport, plain (v7 frames, as nym-nodes send them).
    Tcp,
    /// Nym's TCP transport inside Noise XKpsk3 (every node has a noise key).
    Noise,
}

impl DemoTransport {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DemoTransport::Udp => "udp",
            DemoTransport::Tcp => "tcp",
            DemoTransport::Noise => "noise",
        }
    }
}

impl std::str::FromStr for DemoTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(DemoTransport::Udp),
            "tcp" => Ok(DemoTransport::Tcp),
            "noise" => Ok(DemoTransport::Noise),
            other => Err(format!("unknown transport `{other}` (udp, tcp, noise)")),
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            packets: 2000,
            size: SizeClass::Regular,
            mean_delay_ms: 5.0,
            workers: 1,
            rate: 1000,
            io: IoBackendKind::Auto,
            seed: None,
            transport: DemoTransport::Udp,
            cover: 0.0,
        }
    }
}

/// What the demo saw.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Packets sent into the mixnet.
    pub sent: usize,
    /// Messages that reached the sink (distinct).
    pub delivered: usize,
    /// SURB-ACKs that came back through the mixnet to the sink (distinct).
    pub acks: usize,
    /// Drops by reason over all nodes.
    pub drops: Vec<(String, u64)>,
    /// Wall time from first send to last delivery.
    pub elapsed: Duration,
    /// End-to-end message latency, µs: p50, p90, p99, max.
    pub latency_us: [u64; 4],
    /// The nodes' I/O backend.
    pub io_backend: &'static str,
    /// Worst release lateness observed by any node's wheel, µs.
    pub max_release_lateness_us: u64,
    /// Frames the nodes received whole over TCP (0 with the UDP transport).
    pub tcp_frames_in: u64,
    /// Noise handshakes the nodes completed.
    pub noise_handshakes: u64,
    /// Each node's loop statistics (cover on only): its role and what its loops showed.
    pub cover: Vec<(String, CoverReport)>,
}

impl DemoReport {
    /// The cover traffic's lines of the summary (none when cover was off).
    pub fn cover_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, r) in &self.cover {
            let t = &r.total;
            out.push(format!(
                "cover {name}: {} loops sent, {} returned, {} lost, {} late, {} in flight; loss {:.2} % (95 % bound {:.2}..{:.2} %); build {:.3} s = {:.2} % of a core, {:.0} µs per loop{}",
                t.sent,
                t.returned,
                t.lost,
                t.late,
                t.in_flight(),
                r.loss.rate * 100.0,
                r.loss.low * 100.0,
                r.loss.high * 100.0,
                r.build_seconds,
                100.0 * r.build_seconds / r.running_seconds.max(1e-9),
                1e6 * r.build_seconds / (t.sent.max(1) as f64),
                if r.any_alarm() { ", ALARM" } else { "" }
            ));
        }
        out
    }

    /// Whether every message and every ack arrived and nothing was dropped.
    pub fn all_arrived(&self) -> bool {
        self.delivered == self.sent && self.acks == self.sent
    }
}

const MAGIC: &[u8; 8] = b"mixdemo1";

struct DemoNode {
    node: Node,
    hop: Hop,
    rotation: KeyRotation,
    noise_public: [u8; 32],
}

fn start_node(
    cfg: &DemoConfig,
    secret: [u8; 32],
    noise_secret: [u8; 32],
    sink: Option<SinkAddr>,
) -> Result<DemoNode, NodeError> {
    let key = SphinxKey::from_secret(secret, 1);
    let hop_key = *key.public();
    let rotation = key.parity();
    let noise_public = *SphinxKey::from_secret(noise_secret, 0).public();
    // TCP listens on the port UDP gets (a port taken for TCP alone: try another)
    let tcp = (cfg.transport != DemoTransport::Udp).then(|| TcpSettings {
        listen: Some("127.0.0.1:0".parse().expect("an address")),
        noise_secret: (cfg.transport == DemoTransport::Noise)
            .then(|| zeroize::Zeroizing::new(noise_secret)),
        ..TcpSettings::default()
    });
    let mut tries = 0;
    let node = loop {
        let r = Node::start(
            NodeConfig {
                tcp: tcp.clone(),
                workers: cfg.workers,
                io: cfg.io,
                wheel_capacity: cfg.packets.max(1024) * 2,
                slab_small: cfg.packets.max(1024) * 2,
                slab_large: if cfg.size == SizeClass::Regular || cfg.size == SizeClass::Ack {
                    64
                } else {
                    cfg.packets.max(64)
                },
                replay_expected: (cfg.packets as u64 * 4).max(10_000),
                sink: sink.clone(),
                cover: (cfg.cover > 0.0).then(|| CoverConfig {
                    rate_per_second: cfg.cover,
                    mean_delay_ms: cfg.mean_delay_ms,
                    timeout: cover_timeout(cfg),
                    max_core_share: 0.25,
                    ..CoverConfig::default()
                }),
                ..NodeConfig::default()
            },
            Arc::new(NodeKeys::single(key.clone())),
        );
        match r {
            Err(NodeError::Io { .. }) if tries < 5 => tries += 1,
            r => break r?,
        }
    };
    Ok(DemoNode {
        hop: Hop {
            address: node.local_addr(),
            public_key: hop_key,
        },
        node,
        rotation,
        noise_public,
    })
}

/// Tells every node that every other speaks TCP (with its noise key when Noise is on).
fn publish_peers(cfg: &DemoConfig, nodes: &[DemoNode]) {
    if cfg.transport == DemoTransport::Udp {
        return;
    }
    let noise = cfg.transport == DemoTransport::Noise;
    let book = PeerBook::tcp_peers(
        nodes
            .iter()
            .map(|n| (n.hop.address, noise.then_some(n.noise_public))),
    );
    for n in nodes {
        n.node.set_peers(book.clone());
    }
}

/// How the client reaches the entry node.
enum Entry {
    Udp(UdpSocket),
    Tcp(std::net::TcpStream, Option<NoiseLink>, Vec<u8>),
}

impl Entry {
    fn open(cfg: &DemoConfig, entry: &DemoNode) -> anyhow::Result<Entry> {
        let to = entry.hop.address;
        if cfg.transport == DemoTransport::Udp {
            return Ok(Entry::Udp(UdpSocket::bind("127.0.0.1:0")?));
        }
        let mut s = std::net::TcpStream::connect(to)?;
        s.set_nodelay(true)?;
        let link = if cfg.transport == DemoTransport::Noise {
            use std::io::{Read, Write};
            let mut wire = Vec::new();
            let mut link = NoiseLink::initiator(&rand::random(), &entry.noise_public, &mut wire)?;
            s.write_all(&wire)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut buf = [0u8; 1024];
            while !link.is_established() {
                let k = s.read(&mut buf)?;
                anyhow::ensure!(k > 0, "the entry node closed the Noise handshake");
                wire.clear();
                link.receive(&buf[..k], &mut wire, &mut Vec::new())?;
                s.write_all(&wire)?;
            }
            Some(link)
        } else {
            None
        };
        Ok(Entry::Tcp(s, link, Vec::new()))
    }

    fn send(&mut self, frame: &[u8], to: std::net::SocketAddr) -> anyhow::Result<()> {
        use std::io::Write;
        match self {
            Entry::Udp(s) => {
                s.send_to(frame, to)?;
            }
            Entry::Tcp(s, None, _) => s.write_all(frame)?,
            Entry::Tcp(s, Some(link), wire) => {
                wire.clear();
                link.send(frame, wire)?;
                s.write_all(wire)?;
            }
        }
        Ok(())
    }
}

fn exp_delay_ns(rng: &mut impl rand::Rng, mean_ms: f64) -> u64 {
    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let ns = -u.ln() * mean_ms * 1e6;
    (ns as u64).min(crate::sphinx::DEFAULT_MAX_DELAY_NS)
}

/// Runs the demo.
pub fn run(cfg: &DemoConfig) -> anyhow::Result<DemoReport> {
    let seed = cfg.seed.unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sink_sock = crate::io::socket::bind_udp("127.0.0.1:0".parse()?)?;
    let sink_addr = sink_sock.local_addr()?;

    let mut nodes = Vec::new();
    for layer in 0..4 {
        let sink = (layer == 3).then_some(SinkAddr::Udp(sink_addr));
        nodes.push(start_node(cfg, rng.random(), rng.random(), sink)?);
    }
    publish_peers(cfg, &nodes);
    let route: Vec<Hop> = nodes.iter().map(|n| n.hop).collect();
    // the three mixes are the layers; the exit's loops cross all three
    for n in &nodes {
        if let Some(c) = n.node.cover() {
            c.set_routes(CoverRoutes {
                layers: route[..3].iter().map(|h| vec![*h]).collect(),
                me: n.hop,
            });
        }
    }
    let io_backend = nodes[0].node.io_backend();

    // Build every packet up front (batched X25519 on the sender side too).
    let epoch = Instant::now();
    let built = build_all(cfg, &route, &mut rng)?;
    let entry = route[0].address;
    let header = match cfg.transport {
        // what a nym-node sends by default
        DemoTransport::Tcp | DemoTransport::Noise => FrameHeader {
            version: crate::sphinx::FrameVersion::V7,
            size_class: cfg.size,
            key_rotation: KeyRotation::Unknown,
        },
        DemoTransport::Udp => FrameHeader::v8(cfg.size, nodes[0].rotation),
    };

    // Sink: count messages and acks, measure latency against the send times the client
    // records per sequence number (the message itself is encrypted before it is sent).
    let n = cfg.packets;
    let sent_at: Arc<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let table = sent_at.clone();
    let receiver = std::thread::spawn(move || receive(sink_sock, n, epoch, &table));

    let mut client = Entry::open(cfg, &nodes[0])?;
    let start = Instant::now();
    for (i, (seq, packet)) in built.iter().enumerate() {
        if cfg.rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / cfg.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let frame = header.frame(packet);
        sent_at[*seq as usize].store(epoch.elapsed().as_nanos() as u64, Relaxed);
        client.send(&frame, entry)?;
    }
    let recv = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("sink thread panicked"))?;

    let mut drops: Vec<(String, u64)> = Vec::new();
    let all: Vec<Arc<WorkerCounters>> = nodes
        .iter()
        .flat_map(|d| d.node.counters().to_vec())
        .collect();
    for r in DropReason::ALL {
        let c: u64 = all.iter().map(|w| w.sphinx_drops(r)).sum();
        if c > 0 {
            drops.push((r.name().to_string(), c));
        }
    }
    for r in NodeDrop::ALL {
        let c: u64 = all.iter().map(|w| w.node_drops(r)).sum();
        if c > 0 {
            drops.push((r.name().to_string(), c));
        }
    }
    for r in TcpDrop::ALL {
        let c: u64 = nodes
            .iter()
            .flat_map(|d| d.node.tcp_counters())
            .map(|t| t.drops(r))
            .sum();
        if c > 0 {
            drops.push((format!("tcp_{}", r.name()), c));
        }
    }
    if recv.sink_overflows > 0 {
        drops.push(("demo_sink_rx_overflow".to_string(), recv.sink_overflows));
    }
    let max_late = all
        .iter()
        .map(|w| w.release_lateness_ns_max.load(Relaxed))
        .max()
        .unwrap_or(0);
    let tcp_sum = |f: &dyn Fn(&crate::io::tcp::TcpCounters) -> u64| -> u64 {
        nodes
            .iter()
            .flat_map(|d| d.node.tcp_counters())
            .map(|t| f(t))
            .sum()
    };
    let tcp_frames_in = tcp_sum(&|t| t.frames_in.load(Relaxed));
    let noise_handshakes = tcp_sum(&|t| t.noise_handshakes.load(Relaxed));
    let cover = settle_cover(cfg, &nodes);
    for d in nodes {
        d.node.shutdown()?;
    }
    Ok(DemoReport {
        sent: n,
        delivered: recv.messages,
        acks: recv.acks,
        drops,
        elapsed: recv.last.saturating_duration_since(start),
        latency_us: [
            recv.hist.value_at_quantile(0.5),
            recv.hist.value_at_quantile(0.9),
            recv.hist.value_at_quantile(0.99),
            recv.hist.max(),
        ],
        io_backend,
        max_release_lateness_us: max_late / 1000,
        tcp_frames_in,
        noise_handshakes,
        cover,
    })
}

/// How long the demo's loops (and their ack loops) may take.
fn cover_timeout(cfg: &DemoConfig) -> Duration {
    Duration::from_millis(1000 + (cfg.mean_delay_ms * 40.0) as u64)
}

/// Stops the nodes' loops, waits until those in flight are back or lost (at most twice the
/// timeout, what an ack loop gets) and returns each node's report.
fn settle_cover(cfg: &DemoConfig, nodes: &[DemoNode]) -> Vec<(String, CoverReport)> {
    let covers: Vec<_> = nodes.iter().filter_map(|n| n.node.cover()).collect();
    if covers.is_empty() {
        return Vec::new();
    }
    for c in &covers {
        c.pause(true);
    }
    let end = Instant::now() + 2 * cover_timeout(cfg) + Duration::from_millis(300);
    // the report is refreshed every 100 ms: wait for one made after the pause
    std::thread::sleep(Duration::from_millis(250));
    while Instant::now() < end && covers.iter().any(|c| c.report().total.in_flight() > 0) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let names = ["layer 1", "layer 2", "layer 3", "exit"];
    covers
        .iter()
        .zip(names)
        .map(|(c, n)| (n.to_string(), c.report()))
        .collect()
}

/// Messages are `MAGIC | sequence (u64 BE)`; acks are `"ack!" | sequence (u64 BE)`.
fn build_all(
    cfg: &DemoConfig,
    route: &[Hop],
    rng: &mut impl rand::Rng,
) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
    let payload = cfg.size.payload_len();
    let mut out = Vec::with_capacity(cfg.packets);
    let chunk = 256;
    let mut seq = 0u64;
    while (seq as usize) < cfg.packets {
        let m = chunk.min(cfg.packets - seq as usize);
        // materials for this chunk
        let mut mats = Vec::with_capacity(m);
        for k in 0..m {
            let s = seq + k as u64;
            let delays: Vec<u64> = (0..route.len())
                .map(|_| exp_delay_ns(rng, cfg.mean_delay_ms))
                .collect();
            let ack_delays: Vec<u64> = (0..route.len())
                .map(|_| exp_delay_ns(rng, cfg.mean_delay_ms))
                .collect();
            let mut ack_msg = Vec::with_capacity(16);
            ack_msg.extend_from_slice(b"ack!");
            ack_msg.extend_from_slice(&s.to_be_bytes());
            let mut msg = Vec::with_capacity(16);
            msg.extend_from_slice(MAGIC);
            msg.extend_from_slice(&s.to_be_bytes());
            mats.push((
                s,
                delays,
                ack_delays,
                ack_msg,
                msg,
                rng.random::<[u8; 32]>(),
                rng.random::<[u8; 32]>(),
                rng.random::<[u8; 32]>(),
                rng.random::<[u8; 32]>(),
                rng.random::<[u8; 16]>(),
            ));
        }
        // the ack packets first (ack class, no SURB-ACK inside)
        let ack_specs: Vec<PacketSpec<'_>> = mats
            .iter()
            .map(|(_, _, ad, am, _, x, p, _, _, id)| PacketSpec {
                route,
                delays_ns: ad,
                destination: [0xAC; 32],
                identifier: *id,
                version: 258,
                payload_size: SizeClass::Ack.payload_len(),
                plaintext: am,
                initial_secret: *x,
                padding: FinalPadding::Seed(*p),
            })
            .collect();
        let acks = build::build_batch(&ack_specs);
        let plaintexts: Vec<Vec<u8>> = mats
            .iter()
            .zip(acks)
            .map(|((_, _, _, _, msg, ..), ack)| {
                let ack = ack?;
                if cfg.size == SizeClass::Ack {
                    Ok(msg.clone())
                } else {
                    build::plaintext_with_surb_ack(route[0].address, &ack, msg)
                }
            })
            .collect::<Result<_, build::BuildError>>()?;
        let specs: Vec<PacketSpec<'_>> = mats
            .iter()
            .zip(&plaintexts)
            .map(|((_, d, _, _, _, _, _, x, p, id), pt)| PacketSpec {
                route,
                delays_ns: d,
                destination: [0xDE; 32],
                identifier: *id,
                version: 258,
                payload_size: payload,
                plaintext: pt,
                initial_secret: *x,
                padding: FinalPadding::Seed(*p),
            })
            .collect();
        for ((s, ..), p) in mats.iter().zip(build::build_batch(&specs)) {
            out.push((*s, p?));
        }
        seq += m as u64;
    }
    Ok(out)
}

struct Received {
    messages: usize,
    acks: usize,
    hist: Histogram<u64>,
    last: Instant,
    sink_overflows: u64,
}

fn receive(sock: UdpSocket, n: usize, epoch: Instant, sent_at: &[AtomicU64]) -> Received {
    use crate::io::UdpIo;
    let mut io = crate::io::mmsg::MmsgIo::new(sock, 64);
    let mut datagrams = Vec::new();
    let mut msgs = HashSet::new();
    let mut acks = HashSet::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut last = Instant::now();
    let mut idle_since = Instant::now();
    while msgs.len() < n || acks.len() < n {
        match io.recv(Duration::from_millis(50), &mut datagrams) {
            Ok(k) if k > 0 => {
                idle_since = Instant::now();
                last = Instant::now();
            }
            _ => {
                if idle_since.elapsed() > Duration::from_secs(3) {
                    break;
                }
                continue;
            }
        }
        for d in &datagrams {
            {
                let Some(m) = sink::parse(io.datagram(*d)) else {
                    continue;
                };
                if m.message.len() >= 16 && &m.message[..8] == MAGIC {
                    let seq = u64::from_be_bytes(m.message[8..16].try_into().expect("8 bytes"));
                    let Some(t) = sent_at.get(seq as usize) else {
                        continue;
                    };
                    if msgs.insert(seq) {
                        let now = epoch.elapsed().as_nanos() as u64;
                        let us = now.saturating_sub(t.load(Relaxed)) / 1000;
                        let _ = hist.record(us.max(1));
                    }
                } else if m.message.len() >= 12 && &m.message[..4] == b"ack!" {
                    acks.insert(u64::from_be_bytes(
                        m.message[4..12].try_into().expect("8 bytes"),
                    ));
                }
            }
        }
    }
    Received {
        messages: msgs.len(),
        acks: acks.len(),
        hist,
        last,
        sink_overflows: io.rx_overflows(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(transport: DemoTransport) -> DemoReport {
        run(&DemoConfig {
            packets: 200,
            rate: 2000,
            mean_delay_ms: 1.0,
            seed: Some(7),
            transport,
            ..DemoConfig::default()
        })
        .expect("the demo runs")
    }

    #[test]
    fn the_local_mixnet_runs_over_tcp_and_noise() {
        let r = run_with(DemoTransport::Tcp);
        assert!(r.all_arrived(), "{r:?}");
        // client -> entry, three node-to-node hops, and the acks' four hops (the exit
        // delivers to the UDP sink): 200 * (4 + 4) frames over TCP
        assert_eq!(r.tcp_frames_in, 200 * 8, "{r:?}");
        assert_eq!(r.noise_handshakes, 0);
        let r = run_with(DemoTransport::Noise);
        assert!(r.all_arrived(), "{r:?}");
        assert_eq!(r.tcp_frames_in, 200 * 8, "{r:?}");
        // the client's, and one per next hop a node connected to (both directions count)
        assert!(r.noise_handshakes >= 2, "{r:?}");
        let r = run_with(DemoTransport::Udp);
        assert!(r.all_arrived(), "{r:?}");
        assert_eq!(r.tcp_frames_in, 0);
    }
}
