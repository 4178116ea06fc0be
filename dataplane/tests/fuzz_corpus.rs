//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/`): generated here, checked here.
//!
//! `cargo test -p mixplane-dataplane --test fuzz_corpus -- --ignored` rewrites the seeds;
//! the ordinary run checks that the committed `process_frames` seeds still reach the deep
//! end of the target (a valid packet for the target's key, forwarded), so a change to the
//! target or the wire format that makes them shallow fails here rather than quietly.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{build_packet, random_plaintext, random_route, rng, v7_header};
use mixplane_dataplane::sphinx::{
    FrameHeader, KeyRotation, NoReplay, NodeKeys, Processor, ProcessorConfig, SizeClass, SphinxKey,
    Verdict, address,
};

/// The node secret the `process_frames` target uses for its primary key.
const TARGET_SECRET: [u8; 32] = [7; 32];
/// The target splits its input into frames at this byte.
const SPLIT: u8 = 0xfe;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Ack-class frames (header + packet) of `version` whose first hop is the target's node, free
/// of the split byte so each stays one frame. Returns the first of `tries` seeds that fits.
fn ack_frame(seed: u64, version: u16, v7: bool) -> Vec<u8> {
    let mut r = rng(seed);
    for _ in 0..200 {
        let mut route = random_route(&mut r, 3, 50_000_000);
        route.nodes[0].secret = TARGET_SECRET;
        route.nodes[0].rotation_id = 0;
        let plain = random_plaintext(&mut r, SizeClass::Ack);
        let packet = build_packet(&route, SizeClass::Ack, version, &plain.bytes).to_bytes();
        let header = if v7 {
            v7_header(SizeClass::Ack)
        } else {
            FrameHeader::v8(SizeClass::Ack, KeyRotation::of_rotation_id(0))
        };
        let frame = header.frame(&packet);
        if !frame.contains(&SPLIT) {
            return frame;
        }
    }
    panic!("no ack frame without 0x{SPLIT:02x} in 200 tries");
}

/// `process_frames` seeds: setup byte 0 (primary key only, rotation 0), then frames joined by
/// the split byte.
fn process_frames_seeds() -> Vec<(String, Vec<u8>)> {
    let one = |name: &str, frames: &[Vec<u8>]| {
        let mut data = vec![0u8];
        for (i, f) in frames.iter().enumerate() {
            if i > 0 {
                data.push(SPLIT);
            }
            data.extend_from_slice(f);
        }
        (name.to_string(), data)
    };
    let v258 = ack_frame(1, 258, false);
    let v260 = ack_frame(2, 260, false);
    let v7 = ack_frame(3, 259, true);
    let legacy = ack_frame(4, 1, false);
    vec![
        one("ack-v258", std::slice::from_ref(&v258)),
        one("ack-v260", std::slice::from_ref(&v260)),
        one("ack-v259-v7-header", std::slice::from_ref(&v7)),
        one("ack-v1", std::slice::from_ref(&legacy)),
        one("batch-of-three", &[v258, v260.clone(), v7]),
        one("garbage-then-packet", &[vec![8, 1, 0, 2, 0, 0], v260]),
    ]
}

fn frame_header_seeds() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for class in [SizeClass::Regular, SizeClass::Ack] {
        let h = FrameHeader::v8(class, KeyRotation::of_rotation_id(1));
        v.push((
            format!("v8-{}", class.name()),
            h.frame(&vec![0; class.packet_len()]),
        ));
    }
    let h = v7_header(SizeClass::Ack);
    v.push(("v7-ack".into(), h.frame(&[0; 386])));
    for (name, a) in [
        ("addr-v4", "192.0.2.7:1789"),
        ("addr-v6", "[2001:db8::7]:1789"),
    ] {
        v.push((
            name.into(),
            address::encode::<32>(a.parse().unwrap()).to_vec(),
        ));
    }
    v
}

fn topology_seeds() -> Vec<(String, Vec<u8>)> {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../control/tests/fixtures/skimmed_nodes.json");
    let nym_api = std::fs::read(fixture).expect("control's topology fixture");
    vec![
        ("nym-api-skimmed".into(), nym_api),
        (
            "paged".into(),
            br#"{"status":"fresh","nodes":{"pagination":{"total":1,"page":0,"size":1},"data":[]}}"#
                .to_vec(),
        ),
        ("empty".into(), b"{}".to_vec()),
    ]
}

#[test]
#[ignore = "rewrites fuzz/corpus; run on purpose"]
fn write_the_seed_corpus() {
    for (target, seeds) in [
        ("process_frames", process_frames_seeds()),
        ("frame_header", frame_header_seeds()),
        ("topology", topology_seeds()),
    ] {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}

/// Runs one seed as the `process_frames` target does.
fn run_like_the_target(data: &[u8]) -> Vec<Verdict> {
    let (&setup, rest) = data.split_first().expect("a setup byte");
    assert_eq!(setup, 0, "seeds use the primary key only");
    let keys = Arc::new(NodeKeys::single(SphinxKey::from_secret(TARGET_SECRET, 0)));
    let mut proc = Processor::new(keys, ProcessorConfig::default());
    let mut frames: Vec<Vec<u8>> = rest.split(|&b| b == SPLIT).map(<[u8]>::to_vec).collect();
    let mut out = Vec::new();
    proc.process_batch(&mut frames, &NoReplay, &mut out);
    out
}

#[test]
fn committed_process_frames_seeds_reach_a_forward_verdict() {
    let dir = corpus("process_frames");
    let mut checked = 0;
    for (name, _) in process_frames_seeds() {
        let data = std::fs::read(dir.join(&name))
            .unwrap_or_else(|e| panic!("seed {name} missing ({e}): run the ignored writer"));
        let verdicts = run_like_the_target(&data);
        let forwarded = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Forward(_)))
            .count();
        let want = if name == "batch-of-three" { 3 } else { 1 };
        assert_eq!(forwarded, want, "{name}: {verdicts:?}");
        checked += 1;
    }
    assert_eq!(checked, 6);
}
