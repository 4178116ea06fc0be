//! `mixplane-loadgen`: a load generator, recorder and replayer for Nym mix nodes.
//!
//! ```sh
//! # a local mixnet (3 mix layers + exit, real nodes on loopback, fresh keys), 10 s at 20k pps
//! # (`send` is the default subcommand)
//! mixplane-loadgen --demo --rate 20000 --duration 10
//! mixplane-loadgen send --demo --count 300 --rate 2000
//! # 10 s of Poisson traffic with a size-class mix, figures as JSON
//! mixplane-loadgen send --demo --duration 10 --rate 5000 --poisson \
//!     --mix regular=90,ack=5,ext8=5 --mean-delay-ms 2 --json
//! # an external mixnet (nym-api skimmed nodes JSON): the gateways must deliver final-hop
//! # messages to --sink
//! mixplane-loadgen send --topology skimmed.json --sink 10.0.0.9:7000 --rate 1000 --count 100000
//! # record what is sent (pcap, or pcapng if the name ends in .pcapng)
//! mixplane-loadgen record --topology node.json --sink 127.0.0.1:7000 --count 1000 --pcap run.pcap
//! # replay a capture: original timing, --pps N, --multiplier X or --topspeed; --loop N;
//! # measure at the sink and check the node's replay drops
//! mixplane-loadgen replay --pcap run.pcap --topspeed --sink 127.0.0.1:7000 \
//!     --metrics http://127.0.0.1:9100/metrics
//! ```
//!
//! # Packets
//!
//! `send` builds real Sphinx packets (v8 frames) for random routes through the topology, in
//! chunks, on builder threads ahead of the sender, with the batched builder (one X25519 batch per
//! key-schedule round across a chunk). Regular and extended packets carry a SURB-ACK routed
//! through the mixnet back to the sink, as Nym's do. Each message carries the run id and its
//! sequence number; the send time of every sequence number is kept in a table at send time (the
//! payload is encrypted by then, so it cannot carry it) and looked up when the message reaches
//! the sink: latency is send-to-sink, per-hop delays included.
//!
//! # Topology file (`--topology`)
//!
//! nym-api's skimmed-nodes JSON (`/v1/unstable/nym-nodes/skimmed`, the format of `mixplane
//! run`'s `[topology] file`): a route is a random mix node of layer 1, 2 and 3, then a random
//! exit gateway (entry gateways if there is no exit gateway).
//!
//! # Repeatable replays
//!
//! A node remembers every packet it has processed (its replay filter, keyed per Sphinx key, and
//! persisted in its replay/ directory) and drops a packet it has seen, so replaying a capture
//! against the node that received it delivers nothing. `replay --metrics URL` reads the node's
//! `mixplane_packets_dropped_total{reason="replayed"}` before and after and `--sink ADDR`
//! counts what arrives; either prints a warning when the capture was replayed. To replay
//! repeatably: `mixplane init` a new directory (fresh key) and record against that node, or stop
//! the node, delete its replay/ directory and start it again before each replay. `--demo`
//! nodes get fresh keys on every start, so a demo capture replayed anywhere fails the MAC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use mixplane_bench::loadgen::{
    self, DemoOptions, Mix, ReplayConfig, SendConfig, Target, Timing, Topology,
};
use mixplane_bench::pcap;
use mixplane_dataplane::demo::DemoTransport;
use mixplane_dataplane::io::IoBackendKind;

#[derive(Parser)]
#[command(
    name = "mixplane-loadgen",
    about = "Load generator, recorder and replayer for Nym mix nodes (send is the default subcommand)",
    args_conflicts_with_subcommands = true,
    after_help = "Topology file (--topology): nym-api skimmed-nodes JSON; routes take a mix node of layers 1, 2, 3 and an exit (else entry) gateway."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build real Nym packets and send them; measure loss and latency at the sink.
    Send(SendArgs),
    /// `send`, writing every sent frame with its send time to --pcap.
    Record(SendArgs),
    /// Replay a capture's UDP payloads (tcpreplay-style).
    Replay(ReplayArgs),
    /// Only build packets (no network): the builders' throughput.
    Build(BuildArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// Packets to build per builder thread.
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Builder threads.
    #[arg(long, default_value_t = 1)]
    builders: usize,
    /// Packets per batched build call.
    #[arg(long, default_value_t = 128)]
    chunk: usize,
    /// Size-class mix.
    #[arg(long, default_value = "regular")]
    mix: Mix,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Builds packets for 4-hop routes through fresh keys on `a.builders` threads.
fn build(a: BuildArgs) -> anyhow::Result<()> {
    use mixplane_bench::loadgen::topology::TopoNode;
    use mixplane_dataplane::sphinx::KeyRotation;
    use mixplane_dataplane::sphinx::build::{Hop, public_key};
    if a.builders == 0 || a.chunk == 0 || a.count == 0 {
        bail!("--builders, --chunk and --count must be at least 1");
    }
    let route: Vec<TopoNode> = (0..4u16)
        .map(|i| TopoNode {
            hop: Hop {
                address: SocketAddr::from(([127, 0, 0, 1], 20_000 + i)),
                public_key: public_key(&rand::random()),
            },
            rotation: KeyRotation::of_rotation_id(1),
            noise_key: None,
        })
        .collect();
    let topology = Topology::fixed(&route);
    let start = std::time::Instant::now();
    let threads: Vec<_> = (0..a.builders)
        .map(|b| {
            let mut f =
                loadgen::Factory::new(topology.clone(), a.mix.clone(), 1.0, 1, 258, b as u64);
            let (count, chunk) = (a.count, a.chunk as u64);
            std::thread::spawn(move || -> Result<u64, mixplane_bench::Error> {
                let mut bytes = 0u64;
                let mut first = 0;
                while first < count {
                    let n = chunk.min(count - first);
                    bytes += f
                        .build(first, n as usize)?
                        .iter()
                        .map(|p| p.frame.len() as u64)
                        .sum::<u64>();
                    first += n;
                }
                Ok(bytes)
            })
        })
        .collect();
    let mut bytes = 0;
    for t in threads {
        bytes += t
            .join()
            .map_err(|_| anyhow::anyhow!("a builder panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = a.count * a.builders as u64;
    let pps = total as f64 / secs;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"packets": total, "bytes": bytes, "secs": secs, "packets_per_s": pps,
                "builders": a.builders, "chunk": a.chunk, "hops": 4})
        );
    } else {
        println!(
            "built {total} packets (4 hops, each regular/extended one with a 4-hop SURB-ACK) on {} builder(s), chunks of {}: {secs:.3} s = {pps:.0} packets/s ({:.1} µs/packet/builder)",
            a.builders,
            a.chunk,
            secs * 1e6 * a.builders as f64 / total as f64
        );
    }
    Ok(())
}

#[derive(Args)]
struct SendArgs {
    /// Start a local mixnet in-process (3 mix layers + exit on loopback, fresh keys) and drive it.
    #[arg(long, conflicts_with_all = ["topology", "sink"])]
    demo: bool,
    /// Topology file: nym-api skimmed-nodes JSON.
    #[arg(long, requires = "sink")]
    topology: Option<PathBuf>,
    /// Where the topology's gateways deliver final-hop messages; the loadgen binds it.
    #[arg(long)]
    sink: Option<SocketAddr>,
    /// Packets per second (0: flat out).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Exponential inter-arrival times at mean --rate.
    #[arg(long)]
    poisson: bool,
    /// Packets to send (default 1000 when --duration is not given).
    #[arg(long)]
    count: Option<u64>,
    /// Seconds to send for.
    #[arg(long)]
    duration: Option<f64>,
    /// Size-class mix: ack, regular, ext8, ext16, ext32 with weights, e.g. regular=90,ack=5,ext8=5.
    #[arg(long, default_value = "regular")]
    mix: Mix,
    /// Mean per-hop delay in ms (exponential).
    #[arg(long, default_value_t = 1.0)]
    mean_delay_ms: f64,
    /// Write every sent frame with its send time to this capture (pcapng if it ends in .pcapng).
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Print one JSON object with all figures to stdout instead of the text report.
    #[arg(long)]
    json: bool,
    /// Seed for keys, routes, delays and packet secrets (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Builder threads.
    #[arg(long, default_value_t = 1)]
    builders: usize,
    /// Packets per build chunk.
    #[arg(long, default_value_t = 128)]
    chunk: usize,
    /// Stop waiting for stragglers after this long without an arrival, ms (default: from the delays, >= 1000).
    #[arg(long)]
    drain_ms: Option<u64>,
    /// Local address to send from.
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Sphinx version of the packets.
    #[arg(long, default_value_t = 258)]
    sphinx_version: u16,
    /// Worker threads per demo node.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Demo nodes' I/O backend: auto, io_uring, mmsg.
    #[arg(long, default_value = "auto")]
    io: IoBackendKind,
    /// How the load enters the mixnet: udp, tcp (Nym's framing) or noise (inside Noise XKpsk3,
    /// with the first hops' noise keys from the topology); demo nodes then use it among
    /// themselves too.
    #[arg(long, default_value = "udp")]
    transport: DemoTransport,
    /// Loop cover traffic of every demo node, loops per second (0: off); reported apart from
    /// the load.
    #[arg(long, default_value_t = 0.0)]
    cover: f64,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct ReplayArgs {
    /// The capture (pcap or pcapng).
    #[arg(long)]
    pcap: PathBuf,
    /// Send everything here (default: each datagram's captured destination).
    #[arg(long)]
    to: Option<SocketAddr>,
    /// Constant rate, packets/s.
    #[arg(long, conflicts_with_all = ["multiplier", "topspeed"])]
    pps: Option<f64>,
    /// Original timing sped up by this factor.
    #[arg(long, conflicts_with = "topspeed")]
    multiplier: Option<f64>,
    /// As fast as possible.
    #[arg(long)]
    topspeed: bool,
    /// Times through the capture.
    #[arg(long = "loop", default_value_t = 1)]
    loops: u32,
    /// Local address to send from.
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Listen here for what the exit delivers: count messages and measure latency.
    #[arg(long)]
    sink: Option<SocketAddr>,
    /// The target node's admin metrics URL (http://HOST:PORT/metrics): check its replay drops.
    #[arg(long)]
    metrics: Option<String>,
    /// With --sink: stop waiting after this long without an arrival, ms.
    #[arg(long, default_value_t = 1000)]
    drain_ms: u64,
    /// Print one JSON object to stdout instead of the text report.
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

fn send(a: SendArgs, record: bool) -> anyhow::Result<()> {
    if record && a.pcap.is_none() {
        bail!("record needs --pcap FILE");
    }
    let target = match (a.demo, a.topology, a.sink) {
        (true, ..) => Target::Demo(DemoOptions {
            workers: a.workers,
            io: a.io,
            cover: a.cover,
        }),
        (false, Some(t), Some(sink)) => Target::Topology {
            topology: Topology::load(&t).with_context(|| format!("topology {}", t.display()))?,
            sink,
        },
        _ => bail!("give --demo, or --topology FILE and --sink ADDR"),
    };
    let cfg = SendConfig {
        target,
        rate: a.rate,
        poisson: a.poisson,
        count: a.count,
        duration: a.duration.map(Duration::from_secs_f64),
        mix: a.mix,
        mean_delay_ms: a.mean_delay_ms,
        pcap: a.pcap,
        seed: a.seed,
        builders: a.builders,
        chunk: a.chunk,
        drain: a.drain_ms.map(Duration::from_millis),
        bind: a.bind,
        sphinx_version: a.sphinx_version,
        progress: !a.quiet,
        keep_sent: false,
        transport: a.transport,
    };
    let report = loadgen::run(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn replay(a: ReplayArgs) -> anyhow::Result<()> {
    let capture = pcap::read_capture(&a.pcap)?;
    if capture.datagrams.is_empty() {
        bail!(
            "{} holds no UDP datagrams ({} records skipped)",
            a.pcap.display(),
            capture.skipped
        );
    }
    let timing = match (a.pps, a.multiplier, a.topspeed) {
        (Some(p), ..) => Timing::Pps(p),
        (_, _, true) => Timing::TopSpeed,
        (_, m, false) => Timing::Original {
            multiplier: m.unwrap_or(1.0),
        },
    };
    let report = loadgen::replay(
        &capture,
        &ReplayConfig {
            to: a.to,
            timing,
            loops: a.loops,
            bind: a.bind,
            progress: !a.quiet,
            sink: a.sink,
            metrics: a.metrics.clone(),
            drain: Duration::from_millis(a.drain_ms),
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    for w in &report.warnings {
        eprintln!("WARNING: {w}");
    }
    if a.sink.is_none() && a.metrics.is_none() && !a.quiet {
        eprintln!(
            "note: without --sink or --metrics the replayer cannot tell whether the node dropped the packets as replays; {}",
            loadgen::replay::REPEATABLE
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        None => send(cli.send, false),
        Some(Cmd::Send(a)) => send(a, false),
        Some(Cmd::Record(a)) => send(a, true),
        Some(Cmd::Replay(a)) => replay(a),
        Some(Cmd::Build(a)) => build(a),
    }
}
