//! Whole-node benchmark: a real node on loopback driven flat out with pre-built packets, next to
//! the Sphinx unwrap microbenchmark measured in the same process, so the cost of everything but
//! the crypto (I/O, wheel, replay filter, slab) shows as a ratio. A second phase sends packets
//! with random delays at a moderate rate and reads the wheels' release error. A third sends at
//! a few fixed rates (`--rates`) and reports, at each, the receive batches the node formed (size
//! distribution) and the worker's `process_batch` time per packet. With `--overload 2,10` a
//! fourth offers multiples of the node's capacity and reports what overload does: drops by
//! reason, memory, held packets against their bound, and how late admitted packets leave.
//! `--interleave N` replaces the phases with N rounds per transport of forwarding slices
//! between unwrap slices on the worker's core (`interleave.rs`), and `--unwrap-conditions N`
//! with the unwrap under the node's conditions one at a time (`conditions.rs`): on a VM whose
//! speed drifts, the like-for-like comparisons. Prints the CPU's features,
//! the `MIXPLANE_CPU` cap in force and the paths chosen first.
//!
//! ```sh
//! cargo run --release -p mixplane-bench --bin mixplane-nodebench -- --workers 1
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use mixplane_dataplane::counters::{WorkerCounters, WorkerPhase};
use mixplane_dataplane::histogram::{AtomicHistogram, quantile_of};
use mixplane_dataplane::hostcheck::steal_ms;
use mixplane_dataplane::io::stream::NoiseLink;
use mixplane_dataplane::io::tcp::{
    ConnLimits, PeerBook, PeerInfo, PeerTransport, TcpCounters, TcpIo, TcpSettings,
};
use mixplane_dataplane::io::{self, Datagram, IoBackendKind, Outgoing, UdpIo};
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::sphinx::build::{self, FinalPadding, Hop, PacketSpec};
use mixplane_dataplane::sphinx::{
    FrameHeader, KeyRotation, NoReplay, NodeKeys, Processor, ProcessorConfig, SizeClass, SphinxKey,
};
use rand::{RngExt, SeedableRng};

#[derive(Parser)]
#[command(name = "mixplane-nodebench")]
struct Args {
    /// Node worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Distinct packets for the throughput phase (each is sent once: repeats would be replays).
    #[arg(long, default_value_t = 60_000)]
    packets: usize,
    /// I/O backend: auto, io_uring, mmsg.
    #[arg(long, default_value = "auto")]
    io: IoBackendKind,
    /// Packets for the release-error phase.
    #[arg(long, default_value_t = 4000)]
    delay_packets: usize,
    /// Mean per-hop delay in the release-error phase, ms.
    #[arg(long, default_value_t = 20.0)]
    mean_delay_ms: f64,
    /// Send rate in the release-error phase, packets/s.
    #[arg(long, default_value_t = 2000)]
    delay_rate: u64,
    /// Also time the unwrap over this many distinct frames per call (0: skip), e.g. the size of
    /// the node's receive batches, whose frames no longer fit the core's L2 cache as the 64 of
    /// the reference microbenchmark do.
    #[arg(long, default_value_t = 0)]
    unwrap_frames: usize,
    /// Instead of the node phases: time the unwrap under the node's conditions one at a time
    /// (batch size, fresh frames, a receive arena, the replay filter), interleaved over this
    /// many rounds on the workers' core, against the microbenchmark's, and exit (0: skip).
    #[arg(long, default_value_t = 0)]
    unwrap_conditions: usize,
    /// Instead of the node phases: per transport, this many rounds of a forwarding slice
    /// between two unwrap slices on the worker's core (`--slice-ms` each), and the share per
    /// round and over all of them (0: skip). Needs `--packets` for all rounds (each packet is
    /// sent once) and one worker.
    #[arg(long, default_value_t = 0)]
    interleave: usize,
    /// Length of each slice of `--interleave`, ms.
    #[arg(long, default_value_t = 200)]
    slice_ms: u64,
    /// The node's receive batch (`[node] batch`): most datagrams per receive.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Transports to measure the throughput phase over, each with a fresh node and packets:
    /// udp, tcp (Nym's framing, TCP in and out), noise (the same inside Noise XKpsk3).
    #[arg(long, value_delimiter = ',', default_value = "udp")]
    transport: Vec<Transport>,
    /// Send rates (packets/s) at which to report the batch sizes and unwrap time per packet
    /// (empty: skip).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000")]
    rates: Vec<u64>,
    /// Seconds of sending at each of `--rates`.
    #[arg(long, default_value_t = 1.0)]
    rate_seconds: f64,
    /// Rounds of the throughput phases, each after its own unwrap measurement: the median
    /// share per transport is printed (this VM's speed drifts between phases).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The node's batch time budget (`[node] batch_budget_us`; 0: always full batches).
    #[arg(long, default_value_t = 1000)]
    batch_budget_us: u64,
    /// Pin the harness's threads (this sender and the sinks) to the first core, away from the
    /// node's workers on the last ones. Right on an otherwise idle machine; while other jobs
    /// run, the scheduler then moves them onto the workers' cores instead.
    #[arg(long)]
    pin_harness: bool,
    /// With `--pin-harness`: steer the loopback device's receive processing to the harness's
    /// core (RPS, `/sys/class/net/lo/queues/rx-0/rps_cpus`; needs root; the old mask is put
    /// back at exit). Over loopback the receiving end's TCP and UDP work, waking the peer's
    /// thread included, otherwise runs inside the sending thread's system call, so a
    /// worker's send to the sink also pays the sink's receive; with the peer on another
    /// machine, as in a real network, it pays only its own side.
    #[arg(long)]
    steer_loopback: bool,
    /// With `--prebuilt-stream`: the storing TCP sink asks the kernel to wake it only once
    /// this many KiB wait on its socket (`SO_RCVLOWAT`; or after 20 ms), so a node's writes
    /// no longer wake a sleeping peer thread each time, which over loopback runs inside the
    /// worker's send (0: wake on every arrival, as before). Linux also raises the socket's
    /// receive buffer to hold the mark and clamps the advertised window to it, so the sender
    /// sees a window of at least this much.
    #[arg(long, default_value_t = 0)]
    sink_lowat_kb: usize,
    /// TCP and Noise phases: the sender builds its whole stream (framing and Noise encryption)
    /// after the handshake and before the phase, and the TCP sink stores what arrives and
    /// decrypts and counts it after the phase. The harness then does only socket reads and
    /// writes beside the worker, as a node's peers on other machines cost it nothing; on a
    /// small VM their encryption otherwise runs on the worker's neighbouring vCPU.
    #[arg(long)]
    prebuilt_stream: bool,
    /// Overload phases: offer this many times the node's capacity (the UDP forwarding rate
    /// measured above, else the unwrap rate), e.g. `2,10`; empty: skip.
    #[arg(long, value_delimiter = ',')]
    overload: Vec<f64>,
    /// Seconds of each overload phase.
    #[arg(long, default_value_t = 3.0)]
    overload_seconds: f64,
    /// Mean per-hop delay of the overload's packets, ms.
    #[arg(long, default_value_t = 50.0)]
    overload_delay_ms: f64,
    /// The overload node's bound on held packets (wheel and slab slots per worker).
    #[arg(long, default_value_t = 16_384)]
    overload_held: usize,
    /// How the overload phase sends: one `sendmmsg` per batch, or one `send_to` per datagram
    /// (one datagram per message either way).
    #[arg(long, value_enum, default_value = "mmsg")]
    overload_sender: overload::SenderKind,
    /// The overload sender sleeps until shortly before each batch instead of spinning (which
    /// keeps the sender's core busy all the time).
    #[arg(long)]
    overload_sleep: bool,
    /// The delay wheel tick of every node this starts, µs (`[wheel] tick_us`; default: the
    /// node's own default).
    #[arg(long, alias = "overload-tick-us", default_value_t = NodeConfig::default().wheel_tick_ns / 1000)]
    tick_us: u64,
}

mod conditions;
mod interleave;
mod overload;
mod steer;

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Transport {
    Udp,
    Tcp,
    Noise,
}

const NOISE_SECRET: [u8; 32] = [9u8; 32];

/// The UDP throughput phase's forwarding rate per worker (0: not measured).
static UDP_RATE: AtomicU64 = AtomicU64::new(0);

const BATCH: usize = 64;

fn build_frames(
    secret: &[u8; 32],
    sink: SocketAddr,
    n: usize,
    delays: impl Fn(usize) -> u64,
    seed: u64,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let node_hop = Hop {
        address: "127.0.0.1:1".parse()?, // the first hop's address is not in the packet
        public_key: build::public_key(secret),
    };
    let sink_hop = Hop {
        address: sink,
        public_key: build::public_key(&[77u8; 32]),
    };
    let route = [node_hop, sink_hop];
    let header = FrameHeader::v8(SizeClass::Regular, KeyRotation::of_rotation_id(1));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pt = vec![0x42u8; 1000];
    let mut frames = Vec::with_capacity(n);
    for chunk_start in (0..n).step_by(1024) {
        let m = 1024.min(n - chunk_start);
        let ds: Vec<[u64; 2]> = (0..m).map(|k| [delays(chunk_start + k), 0]).collect();
        let secrets: Vec<([u8; 32], [u8; 32])> =
            (0..m).map(|_| (rng.random(), rng.random())).collect();
        let specs: Vec<PacketSpec<'_>> = (0..m)
            .map(|k| PacketSpec {
                route: &route,
                delays_ns: &ds[k],
                destination: [1; 32],
                identifier: [2; 16],
                version: 258,
                payload_size: SizeClass::Regular.payload_len(),
                plaintext: &pt,
                initial_secret: secrets[k].0,
                padding: FinalPadding::Seed(secrets[k].1),
            })
            .collect();
        for p in build::build_batch(&specs) {
            frames.push(header.frame(&p?));
        }
    }
    Ok(frames)
}

/// The unwrap microbenchmark's result: packets per second of wall-clock time and of the
/// thread's CPU time, the best of five 300 ms runs each, and over all five together. On a
/// host whose speed moves within seconds the best run is a quiet moment's figure, while a
/// node's forwarding rate is an average over its phase: the mean compares like with like.
#[derive(Clone, Copy)]
struct Unwrap {
    rate: f64,
    cpu_rate: f64,
    mean_rate: f64,
    mean_cpu_rate: f64,
}

/// Time on a CPU and time runnable but waiting for one, ns, of the threads of this process
/// whose name starts with `prefix` (`/proc/self/task/*/schedstat`; unreadable ones count 0).
fn sched_ns(prefix: &str) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let mut f = stat
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        total.0 += f.next().unwrap_or(0);
        total.1 += f.next().unwrap_or(0);
    }
    total
}

/// Time this thread has spent on a CPU, ns (`/proc/thread-self/schedstat`; 0 if unreadable).
fn own_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `Processor::process_batch` on one core over these frames, in wall-clock and CPU time.
/// Distinct frames per call come from `frames[..batch]`.
fn unwrap_rate(secret: &[u8; 32], frames: &[Vec<u8>], batch: usize) -> Unwrap {
    let mut proc = Processor::new(
        Arc::new(NodeKeys::single(SphinxKey::from_secret(*secret, 1))),
        ProcessorConfig::default(),
    );
    let template: Vec<Vec<u8>> = frames[..batch].to_vec();
    let mut work = template.clone();
    let mut out = Vec::new();
    let mut best = f64::MAX;
    let mut best_cpu = f64::MAX;
    let (mut packets, mut wall, mut cpu) = (0usize, 0f64, 0f64);
    for _ in 0..5 {
        let t = Instant::now();
        let cpu0 = own_cpu_ns();
        let mut n = 0;
        while t.elapsed() < Duration::from_millis(300) {
            for (w, f) in work.iter_mut().zip(&template) {
                w.copy_from_slice(f);
            }
            proc.process_batch(&mut work, &NoReplay, &mut out);
            n += 1;
        }
        let (w, c) = (
            t.elapsed().as_secs_f64(),
            (own_cpu_ns() - cpu0) as f64 / 1e9,
        );
        best = best.min(w / (n * batch) as f64);
        best_cpu = best_cpu.min(c / (n * batch) as f64);
        packets += n * batch;
        (wall, cpu) = (wall + w, cpu + c);
    }
    Unwrap {
        rate: 1.0 / best,
        cpu_rate: 1.0 / best_cpu,
        mean_rate: packets as f64 / wall,
        mean_cpu_rate: packets as f64 / cpu.max(f64::MIN_POSITIVE),
    }
}

fn sum(node: &Node, f: impl Fn(&WorkerCounters) -> u64) -> u64 {
    node.counters().iter().map(|c| f(c)).sum()
}

/// Whether `--pin-harness` was given.
static PIN_HARNESS: AtomicBool = AtomicBool::new(false);

/// The cores this process may run on, read once at the start of `main`, before
/// `--pin-harness` narrows the main thread to the first of them. (Read later, from a pinned
/// thread, they would be that one core, and the workers would be put on the harness's core.)
static CORES: OnceLock<Vec<usize>> = OnceLock::new();

fn allowed_cores() -> &'static [usize] {
    CORES.get_or_init(|| {
        let cores = mixplane_dataplane::hostcheck::allowed_cores();
        if cores.is_empty() { vec![0] } else { cores }
    })
}

/// Cores for `n` workers: the last of the process's cores, wrapping when there are fewer.
fn worker_cores(n: usize) -> Vec<usize> {
    worker_cores_of(allowed_cores(), n)
}

fn worker_cores_of(allowed: &[usize], n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| allowed[allowed.len() - 1 - i % allowed.len()])
        .collect()
}

/// With `--pin-harness`, pins the calling thread to the process's first core: the harness's
/// threads (sender, sinks) stay off the node's workers, which take the last cores, as the
/// other ends of a real node's links run on other machines.
fn pin_to_first_core() {
    if !PIN_HARNESS.load(Relaxed) {
        return;
    }
    core_affinity::set_for_current(core_affinity::CoreId {
        id: allowed_cores()[0],
    });
}

/// Counts datagrams arriving at the sink until told to stop.
fn sink_thread(mut io: Box<dyn UdpIo>, count: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    pin_to_first_core();
    let mut d = Vec::new();
    while !stop.load(Relaxed) {
        if let Ok(n) = io.recv(Duration::from_millis(20), &mut d) {
            count.fetch_add(n as u64, Relaxed);
        }
    }
}

/// A fresh node for a phase over `transport` (its workers on the last cores), the TCP sink
/// at `sink_addr` when the phase forwards over TCP, and the sender connected to the node.
fn open_phase(
    args: &Args,
    transport: Transport,
    secret: &[u8; 32],
    sink_addr: SocketAddr,
    frames: &[Vec<u8>],
) -> anyhow::Result<(Node, Option<Sink>, Sender)> {
    // Throughput: the node's workers on the last cores (the sender and sinks on core 0 with
    // `--pin-harness`).
    let cores = worker_cores(args.workers);
    let tcp = transport != Transport::Udp;
    let noise = transport == Transport::Noise;
    let mut peers = PeerBook::new(PeerTransport::Udp);
    if tcp {
        peers.insert(sink_addr, tcp_peer(noise));
    }
    let node = Node::start(
        NodeConfig {
            workers: args.workers,
            batch: args.batch,
            batch_budget_ns: args.batch_budget_us * 1000,
            pin_cores: Some(cores.clone()),
            io: args.io,
            wheel_capacity: 1 << 18,
            wheel_tick_ns: args.tick_us * 1000,
            slab_small: 1 << 17,
            replay_expected: (args.packets as u64
                + args.delay_packets as u64
                + args.rates.iter().sum::<u64>() * args.rate_seconds.ceil() as u64)
                * 2,
            tcp: tcp.then(|| TcpSettings {
                listen: Some("127.0.0.1:0".parse().expect("an address")),
                noise_secret: noise.then(|| zeroize::Zeroizing::new(NOISE_SECRET)),
                egress_queue_frames: 1 << 16,
                ..TcpSettings::default()
            }),
            peers,
            ..NodeConfig::default()
        },
        Arc::new(NodeKeys::single(SphinxKey::from_secret(*secret, 1))),
    )?;
    let to = node.local_addr();
    // the TCP sink listens on the UDP sink's port
    let tcp_sink = match (tcp, args.prebuilt_stream) {
        (false, _) => None,
        (true, false) => Some(Sink::Live(TcpSink::start(sink_addr, noise)?)),
        (true, true) => Some(Sink::Stored(StoringSink::start(
            sink_addr,
            noise,
            args.sink_lowat_kb << 10,
        )?)),
    };
    let tx = if tcp && args.prebuilt_stream {
        Sender::Prebuilt(Box::new(Prebuilt::open(noise, to, frames)?))
    } else {
        Sender::open(transport, to)?
    };
    Ok((node, tcp_sink, tx))
}

/// The throughput phase over one transport: a fresh node driven flat out (closed loop) with
/// `frames`, forwarding to the sink (over UDP, or over TCP to a TCP sink at the same address);
/// prints the rate next to the unwrap rate and returns the node (still running), its
/// forwarding rate per worker and the same on the workers' CPU time as a share of the unwrap
/// rate on CPU time (what the node would forward with its cores to itself).
fn throughput(
    args: &Args,
    transport: Transport,
    secret: &[u8; 32],
    sink_addr: SocketAddr,
    frames: &[Vec<u8>],
    unwrap_both: Unwrap,
) -> anyhow::Result<(Node, f64, f64)> {
    let unwrap = unwrap_both.rate;
    let cores = worker_cores(args.workers);
    let noise = transport == Transport::Noise;
    let (node, tcp_sink, mut tx) = open_phase(args, transport, secret, sink_addr, frames)?;
    let to = node.local_addr();
    // Closed loop: keep at most IN_FLIGHT packets between the sender and the node, so the
    // node always has work queued but its socket never overflows.
    const IN_FLIGHT: u64 = 4096;
    let handled = |node: &Node| {
        sum(node, |c| {
            c.rx_datagrams.load(Relaxed)
                + c.node_drops(mixplane_dataplane::counters::NodeDrop::KernelRxOverflow)
        })
    };
    let t0 = Instant::now();
    let sched0 = sched_ns("mixplane-w");
    let steal_cores: Vec<usize> = {
        let mut c = cores.clone();
        c.sort_unstable();
        c.dedup();
        c
    };
    let steal = || -> Option<u64> { steal_cores.iter().map(|&c| steal_ms(c)).sum() };
    let steal0 = steal();
    let mut sent = 0u64;
    let mut send_failed = 0;
    for chunk in frames.chunks(BATCH) {
        while sent.saturating_sub(handled(&node)) > IN_FLIGHT {
            tx.progress();
        }
        let out: Vec<Outgoing<'_>> = chunk.iter().map(|f| Outgoing { to, data: f }).collect();
        let st = tx.send(&out);
        send_failed += st.failed;
        sent += chunk.len() as u64;
    }
    tx.flush();
    // wait until the node has forwarded what it received and gone quiet
    let mut last = u64::MAX;
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_millis(300) {
        let now = sum(&node, |c| c.tx_datagrams.load(Relaxed));
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let busy = last_change.duration_since(t0).as_secs_f64();
    let sched1 = sched_ns("mixplane-w");
    let stolen = steal0.zip(steal()).map(|(a, b)| b.saturating_sub(a));
    let rx = sum(&node, |c| c.rx_datagrams.load(Relaxed));
    let fwd = sum(&node, |c| c.tx_datagrams.load(Relaxed));
    let overflow = sum(&node, |c| {
        c.node_drops(mixplane_dataplane::counters::NodeDrop::KernelRxOverflow)
    });
    let rate = fwd as f64 / busy;
    let per_worker = rate / args.workers as f64;
    println!(
        "node forwarding over {transport:?} ({} worker(s), io {}): {} sent ({} send errors), {} received, {} forwarded, {} kernel drops in {:.2} s = {:.0} packets/s, {:.0} per worker",
        args.workers,
        node.io_backend(),
        sent,
        send_failed,
        rx,
        fwd,
        overflow,
        busy,
        rate,
        per_worker
    );
    if transport == Transport::Udp {
        UDP_RATE.store(per_worker as u64, Relaxed);
    }
    println!(
        "{transport:?}: I/O, wheel and replay overhead: forwarding per worker is {:.1}% of the unwrap rate (target >= {}%)",
        100.0 * per_worker / unwrap,
        if noise { 80 } else { 85 }
    );
    // The same on the workers' CPU time (the VM's other jobs take the workers' cores now and
    // then; the quiet wait at the end costs them no CPU)
    let (on_cpu, waiting) = (sched1.0 - sched0.0, sched1.1 - sched0.1);
    let cpu_share = fwd as f64 / (on_cpu as f64 / 1e9) / unwrap_both.cpu_rate;
    println!(
        "{transport:?}: on the workers' CPU time {:.1}% of the unwrap rate on CPU time ({:.2} µs per forwarded packet against {:.2}); workers runnable but not running {:.2} µs per packet",
        100.0 * cpu_share,
        on_cpu as f64 / fwd.max(1) as f64 / 1e3,
        1e6 / unwrap_both.cpu_rate,
        waiting as f64 / fwd.max(1) as f64 / 1e3,
    );
    // Time the hypervisor ran something else on the workers' vCPUs (0 on bare metal): the
    // wall-clock share above loses it, the CPU-time share does not count it.
    if let Some(ms) = stolen {
        println!(
            "{transport:?}: host steal on the workers' cores {ms} ms ({:.2}% of the phase, /proc/stat)",
            100.0 * ms as f64 / 1e3 / busy / steal_cores.len().max(1) as f64
        );
    }
    if let Some(s) = tcp_sink {
        let tcp_c = |f: &dyn Fn(&TcpCounters) -> u64| -> u64 {
            node.tcp_counters().iter().map(|c| f(c)).sum()
        };
        println!(
            "{transport:?}: frames in over TCP {}, out over TCP {}, Noise handshakes {}; the TCP sink got {}",
            tcp_c(&|c| c.frames_in.load(Relaxed)),
            tcp_c(&|c| c.frames_out.load(Relaxed)),
            tcp_c(&|c| c.noise_handshakes.load(Relaxed)),
            s.stop()?
        );
    }
    // Where the workers' time went (their own phase counters), per forwarded packet, next to
    // the microbenchmark; and how the kernel batched the receives.
    let per_packet =
        |ph: WorkerPhase| sum(&node, |c| c.phase_ns(ph)) as f64 / fwd.max(1) as f64 / 1e3;
    let batches = sum(&node, |c| c.batch_size.count());
    println!(
        "worker time per packet: receive {:.2} µs, process_batch {:.2} µs (microbenchmark {:.2}), hold {:.2} µs, release and send {:.2} µs; {} receive batches of {:.0} datagrams on average",
        per_packet(WorkerPhase::Receive),
        per_packet(WorkerPhase::Process),
        1e6 / unwrap,
        per_packet(WorkerPhase::Hold),
        per_packet(WorkerPhase::Release),
        batches,
        sum(&node, |c| c.batch_size.sum()) as f64 / batches.max(1) as f64,
    );
    println!("batch sizes (packets: batches): {}", batch_size_list(&node));

    Ok((node, per_worker, cpu_share))
}

/// The workers' batch sizes so far, exact up to 15 (the histogram's resolution), as
/// `size: batches` pairs.
fn batch_size_list(node: &Node) -> String {
    let counts = batch_sizes(node);
    let mut parts: Vec<String> = (1..16)
        .filter(|&i| counts[i] > 0)
        .map(|i| format!("{i}: {}", counts[i]))
        .collect();
    let more: u64 = counts[16..].iter().sum();
    if more > 0 {
        parts.push(format!("16 or more: {more}"));
    }
    parts.join(", ")
}

fn tcp_peer(noise: bool) -> PeerInfo {
    PeerInfo {
        node_id: 0,
        transport: PeerTransport::Tcp,
        noise_key: noise.then(|| build::public_key(&NOISE_SECRET)),
        noise_version: noise.then_some(1),
    }
}

/// The load's sender: UDP datagrams, or one TCP connection (plain or Noise) as a Nym node has,
/// framing and encrypting as it goes or writing a stream built beforehand.
enum Sender {
    Udp(Box<dyn UdpIo>),
    Tcp(Box<TcpIo>, Vec<Datagram>),
    Prebuilt(Box<Prebuilt>),
}

/// One TCP connection to the node whose whole stream (Nym frames, inside Noise when asked) is
/// built after the handshake: during the phase it only writes, one [`BATCH`] of frames per
/// [`Sender::send`], in order.
struct Prebuilt {
    stream: std::net::TcpStream,
    wire: Vec<u8>,
    /// Where each batch of frames ends in `wire`.
    ends: Vec<usize>,
    next: usize,
}

impl Prebuilt {
    fn open(noise: bool, to: SocketAddr, frames: &[Vec<u8>]) -> anyhow::Result<Prebuilt> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(to)?;
        stream.set_nodelay(true)?;
        let mut link = None;
        if noise {
            let (mut out, mut plain) = (Vec::new(), Vec::new());
            let mut l =
                NoiseLink::initiator(&[3u8; 32], &build::public_key(&NOISE_SECRET), &mut out)?;
            stream.write_all(&out)?;
            let mut buf = vec![0u8; 4096];
            while !l.is_established() {
                let n = stream.read(&mut buf)?;
                anyhow::ensure!(n > 0, "the node closed the connection during the handshake");
                out.clear();
                l.receive(&buf[..n], &mut out, &mut plain)?;
                stream.write_all(&out)?;
            }
            link = Some(l);
        }
        let (mut wire, mut ends, mut plain) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in frames.chunks(BATCH) {
            match &mut link {
                Some(l) => {
                    plain.clear();
                    chunk.iter().for_each(|f| plain.extend_from_slice(f));
                    l.send(&plain, &mut wire)?;
                }
                None => chunk.iter().for_each(|f| wire.extend_from_slice(f)),
            }
            ends.push(wire.len());
        }
        Ok(Prebuilt {
            stream,
            wire,
            ends,
            next: 0,
        })
    }

    /// Writes the next batch's bytes (blocking); false when the connection failed.
    fn send_next(&mut self) -> bool {
        use std::io::Write;
        let start = self.next.checked_sub(1).map_or(0, |i| self.ends[i]);
        let Some(&end) = self.ends.get(self.next) else {
            return false;
        };
        self.next += 1;
        self.stream.write_all(&self.wire[start..end]).is_ok()
    }
}

impl Sender {
    fn open(transport: Transport, to: SocketAddr) -> anyhow::Result<Sender> {
        if transport == Transport::Udp {
            return Ok(Sender::Udp(
                io::open(IoBackendKind::Mmsg, "127.0.0.1:0".parse()?, 64)?.0,
            ));
        }
        let mut peers = PeerBook::new(PeerTransport::Tcp);
        peers.insert(to, tcp_peer(transport == Transport::Noise));
        let io = TcpIo::new(
            TcpSettings {
                noise_secret: Some(zeroize::Zeroizing::new([3u8; 32])),
                egress_queue_frames: 1 << 16,
                ..TcpSettings::default()
            },
            Arc::new(ConnLimits::new(1, 1)),
            Arc::new(arc_swap::ArcSwap::from_pointee(peers)),
            Arc::new(TcpCounters::default()),
            None,
        )?;
        Ok(Sender::Tcp(Box::new(io), Vec::new()))
    }

    fn send(&mut self, out: &[Outgoing<'_>]) -> io::SendStats {
        match self {
            Sender::Udp(u) => u.send(out),
            Sender::Tcp(t, _) => t.send_frames(out),
            Sender::Prebuilt(p) => io::SendStats {
                failed: if p.send_next() { 0 } else { out.len() },
                ..io::SendStats::default()
            },
        }
    }

    /// Lets a TCP sender write and handshake; a UDP sender only yields.
    fn progress(&mut self) {
        match self {
            Sender::Udp(_) | Sender::Prebuilt(_) => std::thread::yield_now(),
            Sender::Tcp(t, d) => {
                let _ = t.wait(Duration::from_micros(200));
                t.take_frames(d);
            }
        }
    }

    fn flush(&mut self) {
        if let Sender::Tcp(t, _) = self {
            let end = Instant::now() + Duration::from_secs(10);
            while t.queued_frames() > 0 && Instant::now() < end {
                let _ = t.wait(Duration::from_millis(1));
            }
        }
    }
}

/// The TCP next hop of a phase.
enum Sink {
    Live(TcpSink),
    Stored(StoringSink),
}

impl Sink {
    /// Frames received.
    fn stop(self) -> anyhow::Result<u64> {
        match self {
            Sink::Live(s) => Ok(s.stop()),
            Sink::Stored(s) => s.stop(),
        }
    }
}

/// What a [`StoringSink`] kept: the Noise link, the plaintext that came with the last
/// handshake message, and the raw bytes after it.
#[derive(Default)]
struct Stored {
    link: Option<NoiseLink>,
    plain: Vec<u8>,
    raw: Vec<u8>,
}

/// A TCP next hop that answers the node's Noise handshake, then only stores the bytes that
/// arrive on the connection; decryption and counting wait until the phase is over.
struct StoringSink {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<Stored>>,
}

impl StoringSink {
    /// A sink at `addr` (Noise responder if `noise`); `lowat` > 0: woken only once that many
    /// bytes wait (after the handshake), or at the 20 ms read timeout.
    fn start(addr: SocketAddr, noise: bool, lowat: usize) -> anyhow::Result<StoringSink> {
        use std::io::{ErrorKind, Read, Write};
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            pin_to_first_core();
            let mut stream = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if s.load(Relaxed) {
                            return Ok(Stored::default());
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(Duration::from_millis(20)))?;
            let mut link = noise
                .then(|| NoiseLink::responder(&NOISE_SECRET))
                .transpose()?;
            let (mut buf, mut raw) = (
                vec![0u8; (1 << 16).max(2 * lowat)],
                Vec::with_capacity(64 << 20),
            );
            let (mut out, mut plain) = (Vec::new(), Vec::new());
            let mut lowat_set = lowat == 0;
            while !s.load(Relaxed) {
                if !lowat_set && link.as_ref().is_none_or(|l| l.is_established()) {
                    set_rcvlowat(&stream, lowat)?;
                    lowat_set = true;
                }
                let n = match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                match &mut link {
                    Some(l) if !l.is_established() => {
                        // the handshake (and whatever follows it in the same read) now
                        out.clear();
                        l.receive(&buf[..n], &mut out, &mut plain)?;
                        stream.write_all(&out)?;
                    }
                    _ => raw.extend_from_slice(&buf[..n]),
                }
            }
            Ok(Stored { link, plain, raw })
        });
        Ok(StoringSink { stop, thread })
    }

    /// Stops, decrypts what was stored and counts the Nym frames in it.
    fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Relaxed);
        let Stored {
            link,
            mut plain,
            raw,
        } = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the sink thread panicked"))??;
        match link {
            Some(mut l) => l.receive(&raw, &mut Vec::new(), &mut plain)?,
            None => plain.extend_from_slice(&raw),
        }
        let mut n = 0u64;
        let mut rest = &plain[..];
        while let Some(len) = mixplane_dataplane::io::stream::frame_len(rest)? {
            if rest.len() < len {
                break;
            }
            rest = &rest[len..];
            n += 1;
        }
        Ok(n)
    }
}

/// `SO_RCVLOWAT`: a read (and a wake-up) waits for this many bytes.
fn set_rcvlowat(stream: &std::net::TcpStream, bytes: usize) -> std::io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    mixplane_dataplane::io::socket::set_int_option(stream, libc::SOL_SOCKET, libc::SO_RCVLOWAT, v)
}

/// A TCP next hop that counts the frames it receives.
struct TcpSink {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl TcpSink {
    fn start(addr: SocketAddr, noise: bool) -> anyhow::Result<TcpSink> {
        let mut io = TcpIo::new(
            TcpSettings {
                listen: Some(addr),
                noise_secret: noise.then(|| zeroize::Zeroizing::new(NOISE_SECRET)),
                batch: 256,
                ..TcpSettings::default()
            },
            Arc::new(ConnLimits::new(64, 64)),
            Arc::new(arc_swap::ArcSwap::from_pointee(PeerBook::default())),
            Arc::new(TcpCounters::default()),
            None,
        )?;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            pin_to_first_core();
            let mut d = Vec::new();
            while !s.load(Relaxed) {
                if let Ok(n) = io.recv(Duration::from_millis(20), &mut d) {
                    c.fetch_add(n as u64, Relaxed);
                }
            }
        });
        Ok(TcpSink {
            count,
            stop,
            thread,
        })
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Relaxed);
        let _ = self.thread.join();
        self.count.load(Relaxed)
    }
}

/// Sums the workers' receive-batch-size histograms (see `AtomicHistogram::add_into`).
fn batch_sizes(node: &Node) -> Vec<u64> {
    let mut v = vec![0u64; AtomicHistogram::buckets()];
    for c in node.counters() {
        c.batch_size.add_into(&mut v);
    }
    v
}

/// Sends `frames` to `to` paced at `rate` packets/s, then reports the receive batches the node
/// formed meanwhile (distribution of their sizes; a quantile is the upper edge of its histogram
/// bucket, exact up to 15), `process_batch`'s time per packet, and the datagrams the kernel
/// dropped because the node fell behind.
fn rate_phase(node: &Node, tx: &mut Box<dyn UdpIo>, to: SocketAddr, frames: &[Vec<u8>], rate: u64) {
    let hist0 = batch_sizes(node);
    let sum0 = sum(node, |c| c.batch_size.sum());
    let proc0 = sum(node, |c| c.phase_ns(WorkerPhase::Process));
    let overflow = |node: &Node| {
        sum(node, |c| {
            c.node_drops(mixplane_dataplane::counters::NodeDrop::KernelRxOverflow)
        })
    };
    let drops0 = overflow(node);
    let calls0 = sum(node, |c| c.tx_calls.load(Relaxed));
    let cpu0 = sched_ns("mixplane-w").0;
    let t = Instant::now();
    for (i, f) in frames.iter().enumerate() {
        let due = t + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        tx.send(&[Outgoing { to, data: f }]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent_s = t.elapsed().as_secs_f64() - 0.3;
    let diff: Vec<u64> = batch_sizes(node)
        .iter()
        .zip(&hist0)
        .map(|(a, b)| a - b)
        .collect();
    let batches: u64 = diff.iter().sum();
    let packets = sum(node, |c| c.batch_size.sum()) - sum0;
    let proc_ns = sum(node, |c| c.phase_ns(WorkerPhase::Process)) - proc0;
    let cpu_ns = sched_ns("mixplane-w").0 - cpu0;
    let calls = sum(node, |c| c.tx_calls.load(Relaxed)) - calls0;
    println!(
        "at {rate} packets/s (sent at {:.0}, {} kernel drops): {packets} packets in {batches} receive batches, size mean {:.2}, p50 {}, p90 {}, p99 {}, max {}; process_batch {:.2} µs/packet; workers on a CPU {:.2} µs/packet; {:.2} send calls/packet",
        frames.len() as f64 / sent_s,
        overflow(node) - drops0,
        packets as f64 / batches.max(1) as f64,
        quantile_of(&diff, 0.5),
        quantile_of(&diff, 0.9),
        quantile_of(&diff, 0.99),
        quantile_of(&diff, 1.0),
        proc_ns as f64 / packets.max(1) as f64 / 1e3,
        cpu_ns as f64 / packets.max(1) as f64 / 1e3,
        calls as f64 / packets.max(1) as f64,
    );
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // the sender (this thread) and the sinks on the first core, the workers on the last ones
    PIN_HARNESS.store(args.pin_harness, Relaxed);
    let cores = allowed_cores();
    anyhow::ensure!(
        !args.steer_loopback || args.pin_harness,
        "--steer-loopback needs --pin-harness (it steers to the harness's core)"
    );
    let _steered = if args.steer_loopback {
        let s = steer::Steered::to_core(cores[0])?;
        println!("{s}");
        Some(s)
    } else {
        None
    };
    pin_to_first_core();
    println!("{}", mixplane_crypto_simd::cpu::report());
    println!("paths in force: {}", mixplane_crypto_simd::paths());
    if let Some(w) = mixplane_crypto_simd::cpu::warning() {
        println!("warning: {w}");
    }
    let secret = [5u8; 32];
    let (sink_io, sink_addr) = io::open(IoBackendKind::Mmsg, "127.0.0.1:0".parse()?, 64)?;
    let sink_count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sink = {
        let (c, s) = (sink_count.clone(), stop.clone());
        std::thread::spawn(move || sink_thread(sink_io, c, s))
    };

    println!(
        "node settings: batch {}, batch budget {} µs, wheel tick {} µs; workers on cores {:?}, harness {}",
        args.batch,
        args.batch_budget_us,
        args.tick_us,
        worker_cores(args.workers),
        if args.pin_harness {
            format!("on core {}", cores[0])
        } else {
            format!("on any of {cores:?}")
        }
    );
    println!("building {} regular v258 packets...", args.packets);
    let frames = build_frames(&secret, sink_addr, args.packets, |_| 0, 1)?;
    if args.unwrap_conditions > 0 {
        let core = worker_cores(1)[0];
        let expected = args.packets as u64 * 2;
        let (f, s) = (&frames, &secret);
        return std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    println!("unwrap conditions on core {core}");
                    conditions::run(
                        s,
                        f,
                        expected,
                        args.unwrap_conditions,
                        Duration::from_millis(100),
                    )
                })
                .join()
                .expect("the conditions thread")
        });
    }
    if args.interleave > 0 {
        let mut results = Vec::new();
        for &transport in &args.transport {
            // a fresh node (and replay filter) per transport: the same packets serve each
            let shares = interleave::run(
                &args,
                transport,
                &secret,
                sink_addr,
                &frames,
                args.interleave,
                Duration::from_millis(args.slice_ms),
            )?;
            results.push((transport, shares));
        }
        for (transport, mut s) in results {
            println!(
                "{transport:?}, interleaved: forwarding per worker / the unwrap rate around it: {}; on CPU time: {}; target >= {}%",
                interleave::summary(&mut s.wall),
                interleave::summary(&mut s.cpu),
                match transport {
                    Transport::Noise => 80,
                    Transport::Tcp => 85,
                    Transport::Udp => 85,
                }
            );
        }
        stop.store(true, Relaxed);
        let _ = sink.join();
        return Ok(());
    }
    let unwrap_both = unwrap_rate(&secret, &frames, BATCH);
    let unwrap = unwrap_both.rate;
    println!(
        "unwrap microbenchmark (1 core, batch {BATCH}, x25519 {}): {:.0} packets/s ({:.2} µs/packet; {:.2} µs of CPU time)",
        mixplane_crypto_simd::x25519::Backend::best().name(),
        unwrap,
        1e6 / unwrap,
        1e6 / unwrap_both.cpu_rate
    );

    if args.unwrap_frames > 0 {
        let m = args.unwrap_frames.min(frames.len());
        let r = unwrap_rate(&secret, &frames, m).rate;
        println!(
            "unwrap over {m} distinct frames per call: {:.0} packets/s ({:.2} µs/packet)",
            r,
            1e6 / r
        );
    }

    let mut node = None;
    // per transport, each round's forwarding rate as a share of that round's unwrap rate, in
    // wall-clock time and in CPU time
    let mut shares = vec![Vec::new(); args.transport.len()];
    let mut cpu_shares = vec![Vec::new(); args.transport.len()];
    let mut mean_shares = vec![Vec::new(); args.transport.len()];
    let mut mean_cpu_shares = vec![Vec::new(); args.transport.len()];
    let mut unwrap = unwrap_both;
    for round in 0..args.rounds.max(1) {
        if round > 0 {
            unwrap = unwrap_rate(&secret, &frames, BATCH);
            println!(
                "round {}: unwrap microbenchmark {:.0} packets/s ({:.2} µs/packet; {:.2} µs of CPU time)",
                round + 1,
                unwrap.rate,
                1e6 / unwrap.rate,
                1e6 / unwrap.cpu_rate
            );
        }
        for (k, &transport) in args.transport.iter().enumerate() {
            if let Some(n) = node.take() {
                let n: Node = n;
                n.shutdown()?;
            }
            let fresh = if k == 0 && round == 0 {
                frames.clone()
            } else {
                println!(
                    "building {} more packets for the {transport:?} phase...",
                    args.packets
                );
                let seed = 10 + (round * args.transport.len() + k) as u64;
                build_frames(&secret, sink_addr, args.packets, |_| 0, seed)?
            };
            if k > 0 {
                // this VM's speed drifts within seconds: measure the unwrap right before
                // each phase, and again right after it (below)
                unwrap = unwrap_rate(&secret, &frames, BATCH);
            }
            let (n, per_worker, cpu_share) =
                throughput(&args, transport, &secret, sink_addr, &fresh, unwrap)?;
            let after = unwrap_rate(&secret, &frames, BATCH);
            // the faster of the two unwraps that bracket the phase is its baseline (the
            // stricter comparison)
            let (rate, cpu_rate) = (
                unwrap.rate.max(after.rate),
                unwrap.cpu_rate.max(after.cpu_rate),
            );
            println!(
                "{transport:?}: unwrap right after the phase {:.2} µs/packet ({:.2} before); against the faster: {:.1}% of the unwrap rate, {:.1}% on CPU time",
                1e6 / after.rate,
                1e6 / unwrap.rate,
                100.0 * per_worker / rate,
                100.0 * cpu_share * unwrap.cpu_rate / cpu_rate
            );
            // the same against the mean of all ten samples that bracket the phase
            let mean_rate = 2.0 / (1.0 / unwrap.mean_rate + 1.0 / after.mean_rate);
            let mean_cpu_rate = 2.0 / (1.0 / unwrap.mean_cpu_rate + 1.0 / after.mean_cpu_rate);
            println!(
                "{transport:?}: against the mean of the bracketing unwraps ({:.2} µs/packet; the faster's best {:.2}): {:.1}% of the unwrap rate, {:.1}% on CPU time",
                1e6 / mean_rate,
                1e6 / rate,
                100.0 * per_worker / mean_rate,
                100.0 * cpu_share * unwrap.cpu_rate / mean_cpu_rate
            );
            shares[k].push(per_worker / rate);
            cpu_shares[k].push(cpu_share * unwrap.cpu_rate / cpu_rate);
            mean_shares[k].push(per_worker / mean_rate);
            mean_cpu_shares[k].push(cpu_share * unwrap.cpu_rate / mean_cpu_rate);
            node = Some(n);
        }
    }
    if args.rounds > 1 {
        for (k, transport) in args.transport.iter().enumerate() {
            for (s, what) in [
                (
                    &mut shares[k],
                    "forwarding per worker / the faster unwrap bracketing the phase",
                ),
                (&mut cpu_shares[k], "the same on CPU time"),
                (
                    &mut mean_shares[k],
                    "forwarding per worker / the mean of the bracketing unwraps",
                ),
                (&mut mean_cpu_shares[k], "the same on CPU time"),
            ] {
                s.sort_by(f64::total_cmp);
                println!(
                    "{transport:?} over {} rounds: {what}: median {:.1}%, range {:.1}-{:.1}%",
                    s.len(),
                    100.0 * s[s.len() / 2],
                    100.0 * s[0],
                    100.0 * s[s.len() - 1]
                );
            }
        }
    }
    let node = node.expect("at least one transport");
    let to = node.local_addr();
    let (mut tx, _) = io::open(IoBackendKind::Mmsg, "127.0.0.1:0".parse()?, 64)?;

    // Release error: moderate rate, random delays.
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mean = args.mean_delay_ms;
    let delays: Vec<u64> = (0..args.delay_packets)
        .map(|_| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            ((-u.ln() * mean * 1e6) as u64).min(1_000_000_000)
        })
        .collect();
    let dframes = build_frames(&secret, sink_addr, args.delay_packets, |i| delays[i], 3)?;
    let before: Vec<u64> = {
        let mut v = vec![0u64; AtomicHistogram::buckets()];
        for c in node.counters() {
            c.release_lateness.add_into(&mut v);
        }
        v
    };
    let t1 = Instant::now();
    for (i, f) in dframes.iter().enumerate() {
        let due = t1 + Duration::from_secs_f64(i as f64 / args.delay_rate as f64);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        tx.send(&[Outgoing { to, data: f }]);
    }
    std::thread::sleep(Duration::from_millis(1200));
    let mut after = vec![0u64; AtomicHistogram::buckets()];
    for c in node.counters() {
        c.release_lateness.add_into(&mut after);
    }
    let diff: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let n: u64 = diff.iter().sum();
    println!(
        "release error over {n} delayed packets (mean delay {mean} ms, {} packets/s): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms (target p99 <= 2 ms)",
        args.delay_rate,
        quantile_of(&diff, 0.5) as f64 / 1e6,
        quantile_of(&diff, 0.99) as f64 / 1e6,
        quantile_of(&diff, 0.999) as f64 / 1e6
    );
    // Batch sizes and unwrap cost per packet at a few fixed rates (fresh packets: no replays).
    for (k, &rate) in args.rates.iter().enumerate() {
        let n = ((rate as f64 * args.rate_seconds) as usize).max(1);
        let rframes = build_frames(&secret, sink_addr, n, |_| 0, 10 + k as u64)?;
        rate_phase(&node, &mut tx, to, &rframes, rate);
    }
    node.shutdown()?;
    let capacity = match UDP_RATE.load(Relaxed) {
        0 => unwrap.rate,
        r => r as f64,
    } * args.workers as f64;
    for &multiple in &args.overload {
        overload::phase(&args, &secret, sink_addr, capacity, multiple)?;
    }
    stop.store(true, Relaxed);
    let _ = sink.join();
    println!(
        "sink received {} datagrams in all",
        sink_count.load(Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prebuilt_stream_is_forwarded_and_the_storing_sink_counts_every_frame() {
        // a low-water mark larger than the whole stream: the tail comes in at the read timeout
        for (noise, lowat) in [(false, 0), (true, 0), (false, 1 << 20), (true, 1 << 20)] {
            let secret = [5u8; 32];
            let sink_addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap();
            let frames = build_frames(&secret, sink_addr, 200, |_| 0, 1).unwrap();
            let sink = StoringSink::start(sink_addr, noise, lowat).unwrap();
            let mut peers = PeerBook::new(PeerTransport::Udp);
            peers.insert(sink_addr, tcp_peer(noise));
            let node = Node::start(
                NodeConfig {
                    workers: 1,
                    replay_expected: 10_000,
                    tcp: Some(TcpSettings {
                        listen: Some("127.0.0.1:0".parse().unwrap()),
                        noise_secret: noise.then(|| zeroize::Zeroizing::new(NOISE_SECRET)),
                        ..TcpSettings::default()
                    }),
                    peers,
                    ..NodeConfig::default()
                },
                Arc::new(NodeKeys::single(SphinxKey::from_secret(secret, 1))),
            )
            .unwrap();
            let mut tx = Prebuilt::open(noise, node.local_addr(), &frames).unwrap();
            for _ in frames.chunks(BATCH) {
                assert!(tx.send_next());
            }
            assert!(!tx.send_next(), "every batch was written");
            let deadline = Instant::now() + Duration::from_secs(10);
            while sum(&node, |c| c.tx_datagrams.load(Relaxed)) < 200 {
                assert!(Instant::now() < deadline, "the node forwarded only part");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(sink.stop().unwrap(), 200, "noise: {noise}, lowat {lowat}");
            node.shutdown().unwrap();
        }
    }

    #[test]
    fn workers_take_the_last_cores_wrapping_when_there_are_fewer() {
        assert_eq!(worker_cores_of(&[0, 1], 1), vec![1]);
        assert_eq!(worker_cores_of(&[2, 3, 5], 2), vec![5, 3]);
        assert_eq!(worker_cores_of(&[4], 3), vec![4, 4, 4]);
    }

    #[test]
    fn a_pinned_harness_thread_does_not_move_the_workers_onto_its_core() {
        let all = allowed_cores().to_vec();
        let last = *all.last().expect("at least one core");
        // as `--pin-harness` does to the main thread before the node starts
        let from_pinned = std::thread::spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: all[0] });
            worker_cores(1)
        })
        .join()
        .unwrap();
        assert_eq!(from_pinned, vec![last]);
    }
}
