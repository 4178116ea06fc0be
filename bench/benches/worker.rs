//! One worker's whole loop over in-memory frames: everything a node does per packet except the
//! kernel. A real worker thread (the node's own loop: Sphinx batch processing, replay filter,
//! slab, delay wheel, release grouped by next hop) runs over `MemoryIo`, which copies frames into
//! its arena a batch of 64 at a time (as a receive would) and swallows what is sent. Compared in
//! the same run with `Processor::process_batch` alone over the same packets (no replay filter),
//! the figure the node's forwarding target is stated against.
//!
//! Each timed run releases 4096 packets that the node has not seen (repeats would be replays),
//! each with a zero delay at this hop, and measures from the first receive to the last send.
//! The node's replay filter has the default size (1 M packets, 1e-5). Best of 7 runs; one
//! untimed run first.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mixplane_bench::us;
use mixplane_dataplane::io::UdpIo;
use mixplane_dataplane::io::memory::{MemoryIo, MemoryProgress};
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::sphinx::build::{self, FinalPadding, Hop, PacketSpec};
use mixplane_dataplane::sphinx::{
    FrameHeader, KeyRotation, NoReplay, NodeKeys, Processor, ProcessorConfig, SizeClass, SphinxKey,
    Verdict,
};
use rand::{RngExt, SeedableRng};

const RUN: usize = 4096;
const RUNS: usize = 8; // one warm-up + 7 timed
const BATCH: usize = 64;

struct Setup {
    secret: [u8; 32],
    frames: Arc<[Vec<u8>]>,
}

fn setup(class: SizeClass) -> Setup {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let secret: [u8; 32] = rng.random();
    let hop = |s: [u8; 32], port: u16| Hop {
        address: std::net::SocketAddr::from(([10, 0, 0, 1], port)),
        public_key: build::public_key(&s),
    };
    // next hops spread over 16 addresses, as a mix node's traffic is
    let route: Vec<[Hop; 3]> = (0..16)
        .map(|i| {
            [
                hop(secret, 1),
                hop(rng.random(), 100 + i),
                hop(rng.random(), 3),
            ]
        })
        .collect();
    let msg = vec![7u8; 500.min(class.payload_len() - 17)];
    let seeds: Vec<[u8; 32]> = (0..RUN * RUNS).map(|_| rng.random()).collect();
    let specs: Vec<PacketSpec<'_>> = seeds
        .iter()
        .enumerate()
        .map(|(i, seed)| PacketSpec {
            route: &route[i % route.len()],
            delays_ns: &[0, 1_000_000, 1_000_000],
            destination: [1; 32],
            identifier: [2; 16],
            version: 258,
            payload_size: class.payload_len(),
            plaintext: &msg,
            initial_secret: *seed,
            padding: FinalPadding::Seed(*seed),
        })
        .collect();
    let header = FrameHeader::v8(class, KeyRotation::of_rotation_id(1));
    let frames: Arc<[Vec<u8>]> = build::build_batch(&specs)
        .into_iter()
        .map(|p| header.frame(&p.expect("valid spec")))
        .collect();
    Setup { secret, frames }
}

fn keys(s: &Setup) -> Arc<NodeKeys> {
    Arc::new(NodeKeys::single(SphinxKey::from_secret(s.secret, 1)))
}

/// Releases one run of packets and waits until all of them were sent; the run's time.
fn timed_run(p: &MemoryProgress, sent_before: u64) -> Duration {
    p.release(RUN as u64);
    let target = sent_before + RUN as u64;
    let end = Instant::now() + Duration::from_secs(30);
    while p.sent() < target {
        assert!(
            Instant::now() < end,
            "worker stalled: {} of {target} sent",
            p.sent()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    p.window().expect("frames were received and sent")
}

/// Per-packet time of each run of the whole worker loop.
fn worker_loop(s: &Setup) -> Vec<Duration> {
    let (io, progress) = MemoryIo::gated(s.frames.clone(), BATCH);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let node = Node::start_with_io(
        NodeConfig {
            // the worker on the last core, this thread (which mostly sleeps) wherever
            pin_cores: Some(cores.last().map(|c| vec![c.id]).unwrap_or_default()),
            ..NodeConfig::default()
        },
        keys(s),
        vec![Box::new(io) as Box<dyn UdpIo>],
        "127.0.0.1:1".parse().unwrap(),
    )
    .expect("node starts");
    let mut times = Vec::new();
    for r in 0..RUNS {
        times.push(timed_run(&progress, (r * RUN) as u64) / RUN as u32);
    }
    let c = &node.counters()[0];
    assert_eq!(c.total_drops(), 0, "every packet forwarded");
    assert_eq!(progress.sent(), (RUN * RUNS) as u64);
    node.shutdown().expect("clean shutdown");
    times
}

/// Per-packet time of `process_batch` alone over the same packets.
fn unwrap_only(s: &Setup) -> Duration {
    let mut proc = Processor::new(keys(s), ProcessorConfig::default());
    let mut out = Vec::with_capacity(BATCH);
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let mut work: Vec<Vec<u8>> = s.frames[..RUN].to_vec();
        let t = Instant::now();
        for chunk in work.chunks_mut(BATCH) {
            proc.process_batch(black_box(chunk), &NoReplay, &mut out);
            debug_assert!(out.iter().all(|v| matches!(v, Verdict::Forward(_))));
        }
        best = best.min(t.elapsed() / RUN as u32);
    }
    best
}

fn comparison(c: &mut Criterion) {
    let s = setup(SizeClass::Regular);
    let unwrap = unwrap_only(&s);
    let runs = worker_loop(&s);
    let best = *runs[1..].iter().min().expect("timed runs");
    println!(
        "worker loop, regular v258, in-memory I/O (batch {BATCH}): {:.2} µs/packet vs unwrap alone {:.2} µs/packet: everything but the kernel adds {:.1}% ({:.0} vs {:.0} packets/s)",
        us(best),
        us(unwrap),
        (best.as_secs_f64() / unwrap.as_secs_f64() - 1.0) * 100.0,
        1.0 / best.as_secs_f64(),
        1.0 / unwrap.as_secs_f64(),
    );
    // criterion's own report of the loop: a fresh node per sample (each sees new packets)
    let mut g = c.benchmark_group("worker_loop");
    g.throughput(Throughput::Elements(RUN as u64));
    g.sample_size(10);
    g.bench_function("regular_v258_in_memory_4096_packets", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| worker_loop(&s)[1..].iter().sum::<Duration>() * RUN as u32 / 7)
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, comparison);
criterion_main!(benches);
