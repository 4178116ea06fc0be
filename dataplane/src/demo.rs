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
use crate::io::IoBackendKind;
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
}

impl DemoReport {
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
}

fn start_node(
    cfg: &DemoConfig,
    secret: [u8; 32],
    sink: Option<SinkAddr>,
) -> Result<DemoNode, NodeError> {
    let key = SphinxKey::from_secret(secret, 1);
    let hop_key = *key.public();
    let rotation = key.parity();
    let node = Node::start(
        NodeConfig {
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
            sink,
            ..NodeConfig::default()
        },
        Arc::new(NodeKeys::single(key)),
    )?;
    Ok(DemoNode {
        hop: Hop {
            address: node.local_addr(),
            public_key: hop_key,
        },
        node,
        rotation,
    })
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
        nodes.push(start_node(cfg, rng.random(), sink)?);
    }
    let route: Vec<Hop> = nodes.iter().map(|n| n.hop).collect();
    let io_backend = nodes[0].node.io_backend();

    // Build every packet up front (batched X25519 on the sender side too).
    let epoch = Instant::now();
    let built = build_all(cfg, &route, &mut rng)?;
    let entry = route[0].address;
    let header = FrameHeader::v8(cfg.size, nodes[0].rotation);

    // Sink: count messages and acks, measure latency against the send times the client
    // records per sequence number (the message itself is encrypted before it is sent).
    let n = cfg.packets;
    let sent_at: Arc<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let table = sent_at.clone();
    let receiver = std::thread::spawn(move || receive(sink_sock, n, epoch, &table));

    let client = UdpSocket::bind("127.0.0.1:0")?;
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
        client.send_to(&frame, entry)?;
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
    if recv.sink_overflows > 0 {
        drops.push(("demo_sink_rx_overflow".to_string(), recv.sink_overflows));
    }
    let max_late = all
        .iter()
        .map(|w| w.release_lateness_ns_max.load(Relaxed))
        .max()
        .unwrap_or(0);
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
    })
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
        let arena = io.arena_mut();
        for d in &datagrams {
            {
                let Some(m) = sink::parse(&arena[d.offset..d.offset + d.len]) else {
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
