//! The batch time budget: a worker whose packets cost more than its budget allows takes fewer
//! of them per receive (so a held packet is never late by more than one short batch), and one
//! without a budget takes full batches. Over in-memory I/O, so the batch sizes are exact.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mixplane_dataplane::io::UdpIo;
use mixplane_dataplane::io::memory::MemoryIo;
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::sphinx::{NodeKeys, SphinxKey};

const FRAMES: usize = 1000;
const BATCH: usize = 64;

/// Receive batches a node with `budget_ns` forms over `FRAMES` garbage frames (each is
/// dropped, but still costs its share of the batch), and their median size.
fn batches(budget_ns: u64) -> (u64, u64) {
    let frames: Arc<[Vec<u8>]> = (0..FRAMES).map(|i| vec![i as u8; 600]).collect();
    let (io, progress) = MemoryIo::new(frames, BATCH);
    let node = Node::start_with_io(
        NodeConfig {
            batch: BATCH,
            batch_budget_ns: budget_ns,
            ..NodeConfig::default()
        },
        Arc::new(NodeKeys::single(SphinxKey::from_secret([7; 32], 1))),
        vec![Box::new(io) as Box<dyn UdpIo>],
        "127.0.0.1:1".parse().unwrap(),
    )
    .expect("node starts");
    let c = node.counters()[0].clone();
    let end = Instant::now() + Duration::from_secs(20);
    // a batch is counted as received before it is processed: wait for its drops
    while c.total_drops() < FRAMES as u64 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(progress.received(), FRAMES as u64);
    assert_eq!(
        c.total_drops(),
        FRAMES as u64,
        "garbage is dropped, counted"
    );
    let n = c.rx_batches.load(Ordering::Acquire);
    // sizes up to 15 are exact in the histogram: the median batch
    let median = c.batch_size.quantile(0.5);
    node.shutdown().expect("clean shutdown");
    (n, median)
}

#[test]
fn packets_dearer_than_the_budget_make_batches_small() {
    // a 1 ns budget: every packet costs more, so the cap falls to one group of the X25519
    // kernel's lanes (4 with AVX2, 16 with IFMA, 1 on the portable path) after the first batch
    // (which is taken before anything was measured)
    let lanes = mixplane_crypto_simd::x25519::Backend::best().lanes();
    let (n, median) = batches(1);
    if lanes <= 15 {
        assert_eq!(median, lanes as u64);
    }
    assert_eq!(n, 1 + (FRAMES - BATCH).div_ceil(lanes) as u64);
}

#[test]
fn without_a_budget_batches_stay_full() {
    let (n, _) = batches(0);
    assert_eq!(n, FRAMES.div_ceil(BATCH) as u64);
}
