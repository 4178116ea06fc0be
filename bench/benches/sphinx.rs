//! Sphinx unwrap per packet: mixplane's batch processor (batch of 64, each X25519 backend; v258
//! for every size class, plus v260 regular with the best backend) against sphinx-packet 0.8.0's
//! `SphinxPacket::process`, in the same run; regular v258 at batches of 1, 2, 4, 8, 16 and 64
//! with the best backend, each beside sphinx-packet; Lioness on a
//! regular payload against sphinx-packet's payload layer; and the ChaCha20 keystream of one
//! Lioness stream round against the `chacha20` crate.
//!
//! Packets are real: built by sphinx-packet for a 3-hop route whose first hop is the node under
//! test; each measured call restores the 64 frames from a template (a 150 KiB memcpy, included
//! in mixplane's time) and processes them.
//!
//! First prints the CPU's features and the `MIXPLANE_CPU` cap in force; run with
//! `MIXPLANE_CPU=portable` (or `avx2`) to measure an older CPU class on this one.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mixplane_bench::{per_item_pair, profiling, us};
use mixplane_crypto_simd::chacha20 as chacha20_simd;
use mixplane_crypto_simd::{lioness, x25519::Backend};
use mixplane_dataplane::sphinx::{
    FrameHeader, KeyRotation, NoReplay, NodeKeys, Processor, ProcessorConfig, SizeClass, SphinxKey,
    Verdict, address,
};
use rand::{RngExt, SeedableRng};
use sphinx_packet::header::delays::Delay;
use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
use sphinx_packet::version::Version;
use x25519_dalek::{PublicKey, StaticSecret};

const BATCH: usize = 64;

/// The batch sizes compared with sphinx-packet one by one.
const BATCH_SIZES: [usize; 6] = [1, 2, 4, 8, 16, 64];

struct Setup {
    secret: [u8; 32],
    packets: Vec<Vec<u8>>, // Sphinx packets
    frames: Vec<Vec<u8>>,  // framed
}

fn setup(class: SizeClass) -> Setup {
    setup_version(class, 258)
}

fn setup_version(class: SizeClass, version: u16) -> Setup {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let secret: [u8; 32] = rng.random();
    let node = |s: [u8; 32], port: u16| Node {
        address: NodeAddressBytes::from_bytes(address::encode::<32>(std::net::SocketAddr::from((
            [10, 0, 0, 1],
            port,
        )))),
        pub_key: PublicKey::from(&StaticSecret::from(s)),
    };
    let route = [
        node(secret, 1),
        node(rng.random(), 2),
        node(rng.random(), 3),
    ];
    let header = FrameHeader::v8(class, KeyRotation::of_rotation_id(1));
    let mut packets = Vec::new();
    let mut frames = Vec::new();
    for _ in 0..BATCH {
        let dest = Destination::new(
            DestinationAddressBytes::from_bytes(rng.random()),
            rng.random(),
        );
        let delays = [Delay::new_from_millis(10); 3];
        let p = sphinx_packet::SphinxPacketBuilder::new()
            .with_version(Version::new(version))
            .with_payload_size(class.payload_len())
            .build_packet(
                vec![7u8; 500.min(class.payload_len() - 17)],
                &route,
                &dest,
                &delays,
            )
            .unwrap()
            .to_bytes();
        frames.push(header.frame(&p));
        packets.push(p);
    }
    Setup {
        secret,
        packets,
        frames,
    }
}

fn processor(s: &Setup, backend: Backend) -> Processor {
    Processor::new(
        Arc::new(NodeKeys::single(SphinxKey::from_secret(s.secret, 1))),
        ProcessorConfig {
            backend,
            ..ProcessorConfig::default()
        },
    )
}

fn unwrap_comparison(class: SizeClass, version: u16, backends: &[Backend]) {
    let s = setup_version(class, version);
    let sk = StaticSecret::from(s.secret);
    for &backend in backends {
        let mut proc = processor(&s, backend);
        let mut work = s.frames.clone();
        let mut out = Vec::with_capacity(BATCH);
        // sanity: everything forwards
        proc.process_batch(&mut work, &NoReplay, &mut out);
        assert!(out.iter().all(|v| matches!(v, Verdict::Forward(_))));
        let (ours, theirs) = per_item_pair(
            || {
                for (w, f) in work.iter_mut().zip(&s.frames) {
                    w.copy_from_slice(f);
                }
                proc.process_batch(black_box(&mut work), &NoReplay, &mut out);
                black_box(&out);
            },
            BATCH as u32,
            || {
                let p = sphinx_packet::SphinxPacket::from_bytes(black_box(&s.packets[0])).unwrap();
                black_box(p.process(&sk).unwrap());
            },
            1,
        );
        println!(
            "sphinx unwrap {} v{version} (batch {BATCH}, x25519 {}): mixplane {:.2} µs/packet vs sphinx-packet {:.2} µs/packet = {:.2}x",
            class.name(),
            backend.name(),
            us(ours),
            us(theirs),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}

/// Regular v258 with the best backend at each of [`BATCH_SIZES`]: mixplane's time per packet
/// and sphinx-packet's, sampled alternately in the same run.
fn batch_size_comparison() {
    let s = setup(SizeClass::Regular);
    let sk = StaticSecret::from(s.secret);
    let backend = Backend::best();
    for n in BATCH_SIZES {
        let mut proc = processor(&s, backend);
        let template = &s.frames[..n];
        let mut work = template.to_vec();
        let mut out = Vec::with_capacity(n);
        proc.process_batch(&mut work, &NoReplay, &mut out);
        assert!(out.iter().all(|v| matches!(v, Verdict::Forward(_))));
        let (ours, theirs) = per_item_pair(
            || {
                for (w, f) in work.iter_mut().zip(template) {
                    w.copy_from_slice(f);
                }
                proc.process_batch(black_box(&mut work), &NoReplay, &mut out);
                black_box(&out);
            },
            n as u32,
            || {
                let p = sphinx_packet::SphinxPacket::from_bytes(black_box(&s.packets[0])).unwrap();
                black_box(p.process(&sk).unwrap());
            },
            1,
        );
        println!(
            "sphinx unwrap regular v258 batch {n:>2} (x25519 {}): mixplane {:.2} µs/packet vs sphinx-packet {:.2} µs/packet = {:.2}x",
            backend.name(),
            us(ours),
            us(theirs),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}

fn lioness_comparison() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let key: [u8; 192] = std::array::from_fn(|_| rng.random());
    let data: Vec<u8> = (0..SizeClass::Regular.payload_len())
        .map(|_| rng.random())
        .collect();
    let mut buf = data.clone();
    let (ours, theirs) = per_item_pair(
        || {
            lioness::decrypt(&key, black_box(&mut buf)).unwrap();
        },
        1,
        || {
            let p = sphinx_packet::payload::Payload::from_bytes(black_box(&data)).unwrap();
            black_box(p.unwrap(key).unwrap());
        },
        1,
    );
    println!(
        "lioness decrypt {} B: mixplane {:.2} µs vs sphinx-packet {:.2} µs = {:.2}x",
        data.len(),
        us(ours),
        us(theirs),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

fn chacha_comparison() {
    use chacha20::cipher::{KeyIvInit, StreamCipher};
    // The right half of a regular payload: what each of Lioness's two stream rounds covers.
    let len = SizeClass::Regular.payload_len() - lioness::LEFT_LEN;
    let key = [7u8; 32];
    let mut ours_buf = vec![0u8; len];
    let mut theirs_buf = vec![0u8; len];
    let (ours, theirs) = per_item_pair(
        || chacha20_simd::xor_keystream(black_box(&key), &mut ours_buf),
        1,
        || {
            chacha20::ChaCha20::new(black_box(&key).into(), &[0u8; 12].into())
                .apply_keystream(&mut theirs_buf)
        },
        1,
    );
    println!(
        "chacha20 keystream {len} B (backend: {}): mixplane {:.3} µs vs chacha20 crate {:.3} µs = {:.2}x",
        chacha20_simd::Backend::best().name(),
        us(ours),
        us(theirs),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

fn benches(c: &mut Criterion) {
    println!("{}", mixplane_crypto_simd::cpu::report());
    println!("paths in force: {}", mixplane_crypto_simd::paths());
    if !profiling() {
        batch_size_comparison();
        for class in [SizeClass::Regular, SizeClass::Ack, SizeClass::Ext8] {
            unwrap_comparison(class, 258, &Backend::supported());
        }
        // Version 260 (sphinx-packet's current default) derives each payload key from a seed
        // with one more HKDF per hop; the best backend only.
        unwrap_comparison(SizeClass::Regular, 260, &[Backend::best()]);
        lioness_comparison();
        chacha_comparison();
    }

    let s = setup(SizeClass::Regular);
    let mut g = c.benchmark_group("sphinx_unwrap_regular_v258");
    g.throughput(Throughput::Elements(BATCH as u64));
    for backend in Backend::supported() {
        let mut proc = processor(&s, backend);
        let mut work = s.frames.clone();
        let mut out = Vec::with_capacity(BATCH);
        g.bench_function(format!("mixplane_batch64_{}", backend.name()), |b| {
            b.iter(|| {
                for (w, f) in work.iter_mut().zip(&s.frames) {
                    w.copy_from_slice(f);
                }
                proc.process_batch(&mut work, &NoReplay, &mut out);
            })
        });
    }
    // Smaller batches with the best backend: what a node sees at low load.
    for n in BATCH_SIZES.into_iter().filter(|&n| n < BATCH) {
        let backend = Backend::best();
        let mut proc = processor(&s, backend);
        let template = &s.frames[..n];
        let mut work = template.to_vec();
        let mut out = Vec::with_capacity(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("mixplane_batch{n}_{}", backend.name()), |b| {
            b.iter(|| {
                for (w, f) in work.iter_mut().zip(template) {
                    w.copy_from_slice(f);
                }
                proc.process_batch(&mut work, &NoReplay, &mut out);
            })
        });
    }
    g.throughput(Throughput::Elements(BATCH as u64));
    let sk = StaticSecret::from(s.secret);
    g.bench_function("sphinx_packet_x64", |b| {
        b.iter(|| {
            for p in &s.packets {
                let p = sphinx_packet::SphinxPacket::from_bytes(p).unwrap();
                black_box(p.process(&sk).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(group);
