//! `mixplane-loadgen`: a load generator, recorder and replayer for Nym mix nodes.
//!
//! ```sh
//! # a local mixnet (3 mix layers + exit, real nodes on loopback, fresh keys), 300 packets
//! mixplane-loadgen send --demo --count 300 --rate 2000
//! # 10 s of Poisson traffic with a size-class mix, figures as JSON
//! mixplane-loadgen send --demo --duration 10 --rate 5000 --poisson \
//!     --mix regular=90,ack=5,ext8=5 --mean-delay-ms 2 --json
//! # an external mixnet: the exit must deliver final-hop messages to --sink
//! mixplane-loadgen send --topology topo.json --sink 10.0.0.9:7000 --rate 1000 --count 100000
//! # record what is sent (pcap, or pcapng if the name ends in .pcapng)
//! mixplane-loadgen record --demo --count 1000 --rate 1000 --pcap run.pcap
//! # replay a capture: original timing, --pps N, --multiplier X or --topspeed; --loop N
//! mixplane-loadgen replay --pcap run.pcap --to 127.0.0.1:1789 --topspeed --loop 3
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
//! JSON: a list of mix layers, each a list of nodes, and an optional exit (alias `gateway`) that
//! every route ends at; a route is one random node per layer, then the exit (5 hops at most).
//! `public_key` is the node's X25519 Sphinx key in base58 or 64 hex digits; `rotation_id`
//! (default 1) of a route's first hop sets the frame's key-rotation byte.
//!
//! ```json
//! {"layers": [[{"address": "10.0.0.1:1789", "public_key": "<base58|hex>", "rotation_id": 1}],
//!             [{"address": "10.0.0.2:1789", "public_key": "<base58|hex>"}],
//!             [{"address": "10.0.0.3:1789", "public_key": "<base58|hex>"}]],
//!  "exit": {"address": "10.0.0.4:1789", "public_key": "<base58|hex>"}}
//! ```
//!
//! # Repeatable replays
//!
//! A node remembers every packet it has processed (its replay filter, keyed per Sphinx key) and
//! drops a packet it has seen, so replaying a capture against the node that received it shows
//! only replay drops. `--demo` nodes get fresh keys on every start, so an old capture replayed
//! at them fails the MAC instead. To replay repeatably: record against a node, then for every
//! replay start a fresh node that loads the same key file but not its persisted replay filter
//! (delete its replay directory, or run it without one). The replayer cannot see the target's
//! drop counters; read them from the node's metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use mixplane_bench::loadgen::{
    self, DemoOptions, Mix, ReplayConfig, SendConfig, Target, Timing, Topology,
};
use mixplane_bench::pcap;
use mixplane_dataplane::io::IoBackendKind;

#[derive(Parser)]
#[command(
    name = "mixplane-loadgen",
    about = "Load generator, recorder and replayer for Nym mix nodes",
    after_help = "Topology file (--topology): JSON {\"layers\": [[{\"address\": \"IP:PORT\", \"public_key\": \"<base58|hex>\", \"rotation_id\": 1}, ...], ...], \"exit\": {...}}; see the binary's doc comment or bench/README.md."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build real Nym packets and send them; measure loss and latency at the sink.
    Send(SendArgs),
    /// `send`, writing every sent frame with its send time to --pcap.
    Record(SendArgs),
    /// Replay a capture's UDP payloads (tcpreplay-style).
    Replay(ReplayArgs),
}

#[derive(Args)]
struct SendArgs {
    /// Start a local mixnet in-process (3 mix layers + exit on loopback, fresh keys) and drive it.
    #[arg(long, conflicts_with_all = ["topology", "sink"])]
    demo: bool,
    /// Topology file (JSON: layers of {address, public_key (base58 or hex), rotation_id}, optional exit).
    #[arg(long, requires = "sink")]
    topology: Option<PathBuf>,
    /// Where the topology's exit delivers final-hop messages; the loadgen binds it.
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
    /// The target node's admin API (e.g. 127.0.0.1:8080): read its drop counters before and
    /// after, and say whether it dropped the packets as replays or for another key.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Print one JSON object to stdout instead of the text report.
    #[arg(long)]
    json: bool,
    /// No progress line and no advice.
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
        }),
        (false, Some(t), Some(sink)) => Target::Topology {
            topology: Topology::load(&t)?,
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
    let timing = match (a.pps, a.multiplier, a.topspeed) {
        (Some(p), ..) => Timing::Pps(p),
        (_, _, true) => Timing::TopSpeed,
        (_, m, false) => Timing::Original {
            multiplier: m.unwrap_or(1.0),
        },
    };
    if !a.quiet && a.admin.is_none() {
        eprintln!(
            "note: a node drops packets it has already processed (replay filter) and packets built for another key (bad MAC); \
             give --admin ADDR to check. For repeatable replays, replay at a fresh node that loaded the recorded node's key file without its replay directory."
        );
    }
    let before = a
        .admin
        .map(loadgen::node_metrics::drops_by_reason)
        .transpose()?;
    let report = loadgen::replay(
        &capture,
        &ReplayConfig {
            to: a.to,
            timing,
            loops: a.loops,
            bind: a.bind,
            progress: !a.quiet,
        },
    )?;
    let verdict = match (a.admin, before) {
        (Some(admin), Some(before)) => {
            // let the node finish what is in its socket
            std::thread::sleep(Duration::from_millis(500));
            let after = loadgen::node_metrics::drops_by_reason(admin)?;
            Some(loadgen::NodeVerdict::between(
                &before,
                &after,
                report.packets_sent,
            ))
        }
        _ => None,
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(n) = &verdict {
            v["node"] = serde_json::to_value(n)?;
        }
        println!("{v}");
    } else {
        print!("{}", report.text());
        if let Some(n) = &verdict {
            println!("node drops during the replay: {:?}", n.drops);
        }
    }
    if let Some(w) = verdict.as_ref().and_then(loadgen::NodeVerdict::warning) {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Send(a) => send(a, false),
        Cmd::Record(a) => send(a, true),
        Cmd::Replay(a) => replay(a),
    }
}
