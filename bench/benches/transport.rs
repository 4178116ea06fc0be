//! Per-packet cost of Nym's TCP transport layers on one core, beside the Sphinx unwrap the
//! issue-11 targets are stated against (forwarding with TCP ≥ 85 %, with Noise ≥ 80 % of the
//! unwrap rate): how many microseconds the stream layers add to each packet.
//!
//! * `noise_seal_open`: one regular v8 frame encrypted by an established `NoiseLink` and
//!   decrypted by its peer (a node pays one open on ingress and one seal on egress), in
//!   frames of 64 packets as a busy connection carries them, and one packet per Noise frame as a
//!   lightly loaded one does.
//! * `frame_cut`: cutting the same frames out of a plaintext stream (`frame_len`).
//! * `unwrap`: `Processor::process_batch` at batch 64, the baseline.
//!
//! The summary line prints each layer as a share of the unwrap time from the same run, and
//! which AES-GCM snow uses (snow's resolver choice is a build feature of `mixplane-dataplane`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mixplane_bench::{calibrate, sample, us};
use mixplane_dataplane::io::stream::{NoiseLink, frame_len};
use mixplane_dataplane::sphinx::build::{self, FinalPadding, Hop, PacketSpec};
use mixplane_dataplane::sphinx::{
    FrameHeader, KeyRotation, NoReplay, NodeKeys, Processor, ProcessorConfig, SizeClass, SphinxKey,
};
use rand::{RngExt, SeedableRng};

const BATCH: usize = 64;

fn frames(secret: &[u8; 32], n: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let route = [
        Hop {
            address: "127.0.0.1:1".parse().expect("address"),
            public_key: build::public_key(secret),
        },
        Hop {
            address: "127.0.0.1:2".parse().expect("address"),
            public_key: build::public_key(&[77u8; 32]),
        },
    ];
    let header = FrameHeader::v8(SizeClass::Regular, KeyRotation::of_rotation_id(1));
    let pt = vec![0x42u8; 1000];
    let ds = [0u64; 2];
    let secrets: Vec<([u8; 32], [u8; 32])> = (0..n).map(|_| (rng.random(), rng.random())).collect();
    let specs: Vec<PacketSpec<'_>> = secrets
        .iter()
        .map(|s| PacketSpec {
            route: &route,
            delays_ns: &ds,
            destination: [1; 32],
            identifier: [2; 16],
            version: 258,
            payload_size: SizeClass::Regular.payload_len(),
            plaintext: &pt,
            initial_secret: s.0,
            padding: FinalPadding::Seed(s.1),
        })
        .collect();
    build::build_batch(&specs)
        .into_iter()
        .map(|p| header.frame(&p.expect("packet builds")))
        .collect()
}

/// An established initiator/responder pair.
fn noise_pair() -> (NoiseLink, NoiseLink) {
    let (ik, rk) = ([3u8; 32], [4u8; 32]);
    let mut to_r = Vec::new();
    let mut to_i = Vec::new();
    let mut plain = Vec::new();
    let mut i = NoiseLink::initiator(&ik, &build::public_key(&rk), &mut to_r).expect("initiator");
    let mut r = NoiseLink::responder(&rk).expect("responder");
    while !(i.is_established() && r.is_established()) {
        r.receive(&std::mem::take(&mut to_r), &mut to_i, &mut plain)
            .expect("responder step");
        i.receive(&std::mem::take(&mut to_i), &mut to_r, &mut plain)
            .expect("initiator step");
    }
    (i, r)
}

/// Seals `stream` in Noise frames of `per_frame` bytes and opens them on the other side.
fn seal_open(
    i: &mut NoiseLink,
    r: &mut NoiseLink,
    stream: &[u8],
    per_frame: usize,
    wire: &mut Vec<u8>,
    plain: &mut Vec<u8>,
) {
    wire.clear();
    plain.clear();
    for chunk in stream.chunks(per_frame) {
        i.send(chunk, wire).expect("seal");
    }
    let mut back = Vec::new();
    r.receive(wire, &mut back, plain).expect("open");
    assert_eq!(plain.len(), stream.len());
}

fn cut(stream: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while let Ok(Some(len)) = frame_len(&stream[at..]) {
        at += len;
        n += 1;
    }
    n
}

fn bench(c: &mut Criterion) {
    println!("{}", mixplane_crypto_simd::cpu::report());
    let secret = [5u8; 32];
    let frames = frames(&secret, BATCH);
    let flen = frames[0].len();
    let stream: Vec<u8> = frames.concat();
    let (mut i, mut r) = noise_pair();
    let (mut wire, mut plain) = (Vec::new(), Vec::new());
    let mut proc = Processor::new(
        Arc::new(NodeKeys::single(SphinxKey::from_secret(secret, 1))),
        ProcessorConfig::default(),
    );
    let mut work = frames.clone();
    let mut out = Vec::new();
    let mut unwrap = || {
        for (w, f) in work.iter_mut().zip(&frames) {
            w.copy_from_slice(f);
        }
        proc.process_batch(&mut work, &NoReplay, &mut out);
    };

    // The summary from this run: best of five samples each.
    let best = |f: &mut dyn FnMut()| -> Duration {
        let n = calibrate(&mut || f());
        (0..5)
            .map(|_| sample(&mut || f(), n, BATCH as u32))
            .min()
            .expect("samples")
    };
    let t_unwrap = best(&mut unwrap);
    let t_big =
        best(&mut || seal_open(&mut i, &mut r, &stream, stream.len(), &mut wire, &mut plain));
    let t_one = best(&mut || seal_open(&mut i, &mut r, &stream, flen, &mut wire, &mut plain));
    let t_cut = best(&mut || assert_eq!(cut(black_box(&stream)), BATCH));
    let share = |t: Duration| 100.0 * t.as_secs_f64() / t_unwrap.as_secs_f64();
    println!(
        "per packet ({flen}-byte v8 frames): unwrap {:.2} µs; Noise seal+open {:.2} µs ({:.1} % of unwrap) in 64-packet Noise frames, {:.2} µs ({:.1} %) one packet per Noise frame; frame cut {:.3} µs ({:.2} %)",
        us(t_unwrap),
        us(t_big),
        share(t_big),
        us(t_one),
        share(t_one),
        us(t_cut),
        share(t_cut),
    );

    let mut g = c.benchmark_group("transport");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("noise_seal_open_64_per_frame", |b| {
        b.iter(|| seal_open(&mut i, &mut r, &stream, stream.len(), &mut wire, &mut plain))
    });
    g.bench_function("noise_seal_open_1_per_frame", |b| {
        b.iter(|| seal_open(&mut i, &mut r, &stream, flen, &mut wire, &mut plain))
    });
    g.bench_function("frame_cut", |b| b.iter(|| cut(black_box(&stream))));
    g.bench_function("unwrap_batch64", |b| b.iter(&mut unwrap));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
