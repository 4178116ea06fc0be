//! Delay wheel vs `BinaryHeap`, and replay-filter `check_and_set`.
//!
//! `cargo bench -p mixplane-bench --bench structures` prints one comparison line per structure
//! (measured with `Instant` over a fixed workload) before criterion's own statistics.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mixplane_dataplane::replay::ReplayFilter;
use mixplane_dataplane::wheel::{DelayWheel, WheelConfig};

const MS: u64 = 1_000_000;
/// Packets arriving per 1 ms tick (200k pps on one worker).
const PER_TICK: usize = 200;
/// Delays uniform in [0, 4 s): the inner level's span for 4096 x 1 ms.
const MAX_DELAY_NS: u64 = 4_000 * MS;

/// What the node stores per delayed packet: buffer slot, next hop, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Handle {
    slot: u32,
    len: u16,
    next_hop: SocketAddr,
}

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn tag(&mut self) -> [u8; 32] {
        let mut t = [0u8; 32];
        for c in t.chunks_exact_mut(8) {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        t
    }
}

fn handle(i: u64) -> Handle {
    Handle {
        slot: i as u32,
        len: 1_500,
        next_hop: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1789)),
    }
}

/// The same steady-state work for both structures: every tick, `PER_TICK` inserts with
/// random delays, then release everything due.
trait DelayQueue {
    fn tick(&mut self, now: u64, rng: &mut Rng, next_id: &mut u64) -> usize;
}

struct Wheel(DelayWheel<Handle>);

impl DelayQueue for Wheel {
    fn tick(&mut self, now: u64, rng: &mut Rng, next_id: &mut u64) -> usize {
        for _ in 0..PER_TICK {
            let d = now + rng.next_u64() % MAX_DELAY_NS;
            *next_id += 1;
            if self.0.insert(d, handle(*next_id)).is_err() {
                panic!("wheel full");
            }
        }
        self.0.expire(now, |h| {
            black_box(h);
        })
    }
}

struct Heap(BinaryHeap<Reverse<(u64, Handle)>>);

impl DelayQueue for Heap {
    fn tick(&mut self, now: u64, rng: &mut Rng, next_id: &mut u64) -> usize {
        for _ in 0..PER_TICK {
            let d = now + rng.next_u64() % MAX_DELAY_NS;
            *next_id += 1;
            self.0.push(Reverse((d, handle(*next_id))));
        }
        let mut n = 0;
        while let Some(Reverse((d, _))) = self.0.peek() {
            if *d > now {
                break;
            }
            let Reverse((_, h)) = self.0.pop().expect("peeked");
            black_box(h);
            n += 1;
        }
        n
    }
}

fn new_wheel() -> Wheel {
    let config = WheelConfig::with_capacity(PER_TICK * 4_200);
    Wheel(DelayWheel::new(config, 0).expect("valid config"))
}

fn new_heap() -> Heap {
    Heap(BinaryHeap::with_capacity(PER_TICK * 4_200))
}

/// Warms up to steady state (~800k held), then times `ticks` ticks; ns per inserted item.
fn time_per_item(q: &mut impl DelayQueue, ticks: u64) -> f64 {
    let mut rng = Rng(42);
    let mut id = 0;
    let mut now = 0;
    for _ in 0..4_000 {
        now += MS;
        q.tick(now, &mut rng, &mut id);
    }
    let start = Instant::now();
    for _ in 0..ticks {
        now += MS;
        black_box(q.tick(now, &mut rng, &mut id));
    }
    start.elapsed().as_nanos() as f64 / (ticks as usize * PER_TICK) as f64
}

fn wheel_vs_heap(c: &mut Criterion) {
    let wheel_ns = time_per_item(&mut new_wheel(), 4_000);
    let heap_ns = time_per_item(&mut new_heap(), 4_000);
    println!(
        "wheel insert+expire (4096 x 1 ms slots, {PER_TICK}/tick, delays U[0,4s), ~800k held): \
         {wheel_ns:.1} ns/item vs BinaryHeap {heap_ns:.1} ns/item = {:.2}x",
        heap_ns / wheel_ns
    );

    let mut group = c.benchmark_group("delay_queue");
    group.throughput(Throughput::Elements(PER_TICK as u64));
    for (name, mut q) in [
        ("wheel", Box::new(new_wheel()) as Box<dyn DelayQueueDyn>),
        ("binary_heap", Box::new(new_heap())),
    ] {
        let mut rng = Rng(7);
        let mut id = 0;
        let mut now = 0;
        for _ in 0..4_000 {
            now += MS;
            q.tick_dyn(now, &mut rng, &mut id);
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                now += MS;
                q.tick_dyn(now, &mut rng, &mut id)
            })
        });
    }
    group.finish();
}

trait DelayQueueDyn {
    fn tick_dyn(&mut self, now: u64, rng: &mut Rng, next_id: &mut u64) -> usize;
}

impl<Q: DelayQueue> DelayQueueDyn for Q {
    fn tick_dyn(&mut self, now: u64, rng: &mut Rng, next_id: &mut u64) -> usize {
        self.tick(now, rng, next_id)
    }
}

const FILTER_ITEMS: u64 = 10_000_000;

fn replay_filter(c: &mut Criterion) {
    let mut f = ReplayFilter::new(FILTER_ITEMS, 1e-5).expect("valid parameters");
    // Fill to half the design load so that lookups see a realistic mix of set bits.
    let mut rng = Rng(1);
    for _ in 0..FILTER_ITEMS / 2 {
        f.check_and_set(&rng.tag());
    }
    let ops = 2_000_000u64;
    let start = Instant::now();
    for _ in 0..ops {
        black_box(f.check_and_set(&rng.tag()));
    }
    let new_ns = start.elapsed().as_nanos() as f64 / ops as f64;
    // Replays: re-derive tags already inserted.
    let mut replay_rng = Rng(1);
    let start = Instant::now();
    for _ in 0..ops {
        black_box(f.check_and_set(&replay_rng.tag()));
    }
    let seen_ns = start.elapsed().as_nanos() as f64 / ops as f64;
    let mut gen_rng = Rng(3);
    let start = Instant::now();
    for _ in 0..ops {
        black_box(gen_rng.tag());
    }
    let gen_ns = start.elapsed().as_nanos() as f64 / ops as f64;
    println!(
        "replay check_and_set (10M @ 1e-5: {:.1} MiB, k={}, half full): {new_ns:.1} ns/op new tag, \
         {seen_ns:.1} ns/op replayed tag (tag generation {gen_ns:.1} ns/op included)",
        f.size_bytes() as f64 / (1 << 20) as f64,
        f.hashes()
    );

    let mut group = c.benchmark_group("replay_filter");
    group.throughput(Throughput::Elements(1));
    let mut inserted = FILTER_ITEMS / 2 + ops;
    group.bench_function("check_and_set_new_10M_1e-5", |b| {
        b.iter(|| {
            inserted += 1;
            if inserted == FILTER_ITEMS {
                // Keep the fill at or below the design load: start a fresh filter.
                f = ReplayFilter::new(FILTER_ITEMS, 1e-5).expect("valid parameters");
                inserted = 0;
            }
            f.check_and_set(&rng.tag())
        })
    });
    group.finish();
}

criterion_group!(benches, wheel_vs_heap, replay_filter);
criterion_main!(benches);
