//! Every drop reason is reached by a crafted input, keys are chosen by the frame's rotation
//! byte, and a batch of mixed frames gives the same verdicts as processing them one by one.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::*;
use curve25519_dalek::montgomery::MontgomeryPoint;
use mixplane_crypto_simd::x25519;
use mixplane_dataplane::sphinx::kdf::{ExpandedSecret, apply_routing_stream, header_mac};
use mixplane_dataplane::sphinx::{
    DropReason, FrameHeader, KeyRotation, KeySlot, NoReplay, NodeKeys, OverCap, Processor,
    ProcessorConfig, SizeClass, Verdict,
};
use rand::RngExt;
use sphinx_packet::route::NodeAddressBytes;

const H: usize = 4; // v8 frame header length

fn verdict_of(proc: &mut Processor, frame: &mut Vec<u8>) -> Verdict {
    let mut out = Vec::new();
    proc.process_batch(std::slice::from_mut(frame), &NoReplay, &mut out);
    out.pop().unwrap()
}

/// Every drop reason a test in this file has produced (read by the coverage test).
static PRODUCED: Mutex<Vec<DropReason>> = Mutex::new(Vec::new());

fn produced(r: DropReason) -> DropReason {
    PRODUCED.lock().unwrap().push(r);
    r
}

fn drop_of(proc: &mut Processor, mut frame: Vec<u8>) -> DropReason {
    match verdict_of(proc, &mut frame) {
        Verdict::Drop(r) => produced(r),
        v => panic!("expected a drop, got {v:?}"),
    }
}

/// A one-hop (final) or two-hop packet for `node`, framed.
fn packet_for(node: &TestNode, hops: usize, class: SizeClass, version: u16) -> (Route, Vec<u8>) {
    let mut rng = rng(99);
    let mut route = random_route(&mut rng, hops, 1_000_000);
    route.nodes[0] = node.clone();
    let pt = random_plaintext(&mut rng, class);
    let p = build_packet(&route, class, version, &pt.bytes);
    (route, node.v8_header(class).frame(&p.to_bytes()))
}

/// Re-encrypts the first routing slot after `edit` changed it, with a valid MAC: what a sender
/// who knows the hop's shared secret could do.
fn forge_slot(node: &TestNode, frame: &mut [u8], edit: impl FnOnce(&mut [u8])) {
    let alpha: [u8; 32] = frame[H..H + 32].try_into().unwrap();
    let s = x25519::x25519(&node.secret, &alpha);
    let e = ExpandedSecret::expand(&s);
    let beta = &mut frame[H + 48..H + 348];
    apply_routing_stream(e.stream_key(), beta);
    edit(beta);
    apply_routing_stream(e.stream_key(), beta);
    let mac = header_mac(e.mac_key(), &frame[H + 48..H + 348]);
    frame[H + 32..H + 48].copy_from_slice(&mac);
}

#[test]
fn frame_level_drops() {
    let mut rng = rng(5);
    let node = TestNode::random(&mut rng);
    let mut proc = node.processor();
    let (_, good) = packet_for(&node, 2, SizeClass::Regular, 258);
    assert!(matches!(
        verdict_of(&mut proc, &mut good.clone()),
        Verdict::Forward(_)
    ));

    assert_eq!(drop_of(&mut proc, vec![]), DropReason::Truncated);
    assert_eq!(
        drop_of(&mut proc, good[..good.len() - 1].to_vec()),
        DropReason::Truncated
    );
    assert_eq!(
        drop_of(&mut proc, good[..100].to_vec()),
        DropReason::Truncated
    );
    let mut long = good.clone();
    long.extend_from_slice(&[0; 10]);
    assert_eq!(drop_of(&mut proc, long), DropReason::Oversized);
    let with = |i: usize, b: u8| {
        let mut f = good.clone();
        f[i] = b;
        f
    };
    assert_eq!(
        drop_of(&mut proc, with(0, 6)),
        DropReason::UnknownFrameVersion
    );
    assert_eq!(drop_of(&mut proc, with(1, 9)), DropReason::UnknownSizeClass);
    assert_eq!(drop_of(&mut proc, with(1, 6)), DropReason::OutfoxSizeClass);
    assert_eq!(
        drop_of(&mut proc, with(2, 2)),
        DropReason::UnsupportedPacketType
    );
    assert_eq!(
        drop_of(&mut proc, with(3, 7)),
        DropReason::UnknownKeyRotation
    );
    let other_parity = match KeyRotation::of_rotation_id(node.rotation_id) {
        KeyRotation::Odd => 2,
        _ => 1,
    };
    assert_eq!(
        drop_of(&mut proc, with(3, other_parity)),
        DropReason::NoKeyForRotation
    );
}

#[test]
fn crypto_level_drops() {
    let mut rng = rng(6);
    let node = TestNode::random(&mut rng);
    let mut proc = node.processor();
    let (_, good) = packet_for(&node, 2, SizeClass::Regular, 258);

    // tampered routing information or MAC
    let mut f = good.clone();
    f[H + 100] ^= 1;
    assert_eq!(drop_of(&mut proc, f), DropReason::BadMac);
    let mut f = good.clone();
    f[H + 40] ^= 0x80;
    assert_eq!(drop_of(&mut proc, f), DropReason::BadMac);

    // a packet for another node (wrong key)
    let other = TestNode::random(&mut rng);
    let (_, theirs) = packet_for(&other, 2, SizeClass::Regular, 258);
    let mut theirs = theirs;
    theirs[3] = node.v8_header(SizeClass::Regular).key_rotation.byte();
    assert_eq!(drop_of(&mut proc, theirs), DropReason::BadMac);

    // small-order alphas give an all-zero shared secret
    let p_minus_1 = {
        let mut b = [0xffu8; 32];
        b[0] = 0xec;
        b[31] = 0x7f;
        b
    };
    let order8 = hex32("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
    for alpha in [
        [0u8; 32],
        {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        },
        p_minus_1,
        order8,
    ] {
        let mut f = good.clone();
        f[H..H + 32].copy_from_slice(&alpha);
        assert_eq!(
            drop_of(&mut proc, f),
            DropReason::ZeroSharedSecret,
            "{alpha:02x?}"
        );
    }

    // an alpha on the twist: the ladder handles it, the MAC check drops it
    let twist = (2u8..=255)
        .map(|u| {
            let mut b = [0u8; 32];
            b[0] = u;
            b
        })
        .find(|b| MontgomeryPoint(*b).to_edwards(0).is_none())
        .expect("a small u on the twist exists");
    let mut f = good.clone();
    f[H..H + 32].copy_from_slice(&twist);
    let s = x25519::x25519(&node.secret, &twist);
    assert_ne!(
        s, [0u8; 32],
        "a twist point of large order gives a non-zero secret"
    );
    assert_eq!(drop_of(&mut proc, f), DropReason::BadMac);
}

#[test]
fn replayed_packets_are_dropped() {
    let mut rng = rng(7);
    let node = TestNode::random(&mut rng);
    let mut proc = node.processor();
    let (_, good) = packet_for(&node, 3, SizeClass::Regular, 259);
    let seen = Mutex::new(HashSet::new());
    let mut batch = vec![good.clone(), good.clone()];
    let mut out = Vec::new();
    proc.process_batch(&mut batch, &seen, &mut out);
    assert!(matches!(out[0], Verdict::Forward(_)));
    if let Verdict::Drop(r) = out[1] {
        produced(r);
    }
    assert_eq!(out[1], Verdict::Drop(DropReason::Replayed));
    let mut again = vec![good];
    proc.process_batch(&mut again, &seen, &mut out);
    assert_eq!(out[0], Verdict::Drop(DropReason::Replayed));
}

#[test]
fn routing_level_drops() {
    let mut rng = rng(8);
    let node = TestNode::random(&mut rng);
    let mut proc = node.processor();

    // delay over the cap (10 s by default)
    let mut route = random_route(&mut rng, 2, 1);
    route.nodes[0] = node.clone();
    route.delays[0] = sphinx_packet::header::delays::Delay::new_from_nanos(10_000_000_001);
    let pt = random_plaintext(&mut rng, SizeClass::Regular);
    let p = build_packet(&route, SizeClass::Regular, 258, &pt.bytes);
    let f = node.v8_header(SizeClass::Regular).frame(&p.to_bytes());
    // by default (as nym-node) the delay is cut to the cap and the packet marked
    match verdict_of(&mut proc, &mut f.clone()) {
        Verdict::Forward(fw) => {
            assert_eq!(fw.delay_ns, 10_000_000_000);
            assert!(fw.delay_clamped);
        }
        v => panic!("expected a clamped forward, got {v:?}"),
    }
    let mut strict = Processor::new(
        node.keys(),
        ProcessorConfig {
            over_cap: OverCap::Drop,
            ..Default::default()
        },
    );
    assert_eq!(drop_of(&mut strict, f.clone()), DropReason::DelayTooLong);
    let mut lenient = Processor::new(
        node.keys(),
        ProcessorConfig {
            max_delay_ns: 20_000_000_000,
            over_cap: OverCap::Drop,
            ..Default::default()
        },
    );
    match verdict_of(&mut lenient, &mut f.clone()) {
        Verdict::Forward(fw) => {
            assert_eq!(fw.delay_ns, 10_000_000_001);
            assert!(!fw.delay_clamped);
        }
        v => panic!("expected a forward, got {v:?}"),
    }

    // next hop with a bad address encoding
    let mut route = random_route(&mut rng, 2, 1);
    route.nodes[0] = node.clone();
    let mut nodes = route.sphinx_nodes();
    nodes[1].address = NodeAddressBytes::from_bytes([9; 32]);
    let p = sphinx_packet::SphinxPacketBuilder::new()
        .with_version(sphinx_packet::version::Version::new(258))
        .with_payload_size(SizeClass::Regular.payload_len())
        .build_packet(&pt.bytes, &nodes, &route.destination, &route.delays)
        .unwrap();
    let f = node.v8_header(SizeClass::Regular).frame(&p.to_bytes());
    assert_eq!(drop_of(&mut proc, f), DropReason::BadNextHop);

    // unknown sphinx version (well formed otherwise)
    let (_, f) = packet_for(&node, 2, SizeClass::Regular, 300);
    assert_eq!(drop_of(&mut proc, f), DropReason::UnknownSphinxVersion);
    // a version whose reserved first byte is not zero
    let (_, mut f) = packet_for(&node, 2, SizeClass::Regular, 258);
    forge_slot(&node, &mut f, |slot| slot[1] = 1);
    assert_eq!(drop_of(&mut proc, f), DropReason::UnknownSphinxVersion);
    // unknown routing flag
    for flag in [0u8, 3, 255] {
        let (_, mut f) = packet_for(&node, 2, SizeClass::Regular, 258);
        forge_slot(&node, &mut f, |slot| slot[0] = flag);
        assert_eq!(drop_of(&mut proc, f), DropReason::UnknownRoutingFlag);
    }
    // the forger's helper itself is sound: an unchanged slot still forwards
    let (_, mut f) = packet_for(&node, 2, SizeClass::Regular, 258);
    forge_slot(&node, &mut f, |_| {});
    assert!(matches!(verdict_of(&mut proc, &mut f), Verdict::Forward(_)));
}

#[test]
fn final_hop_drops() {
    let mut rng = rng(9);
    let node = TestNode::random(&mut rng);
    let mut proc = node.processor();

    // corrupted payload: Lioness turns it into garbage, the padding check catches it
    for version in [1u16, 257, 258, 259] {
        let (_, mut f) = packet_for(&node, 1, SizeClass::Regular, version);
        f[H + 348 + 500] ^= 1;
        assert_eq!(drop_of(&mut proc, f), DropReason::BadPadding, "v{version}");
    }

    // a regular packet whose plaintext is too short to hold a SURB-ACK
    let mut route = random_route(&mut rng, 1, 1);
    route.nodes[0] = node.clone();
    let p = build_packet(&route, SizeClass::Regular, 258, b"short");
    let f = node.v8_header(SizeClass::Regular).frame(&p.to_bytes());
    assert_eq!(drop_of(&mut proc, f), DropReason::NoSurbAck);

    // a SURB-ACK whose first-hop address is malformed
    let mut pt = random_plaintext(&mut rng, SizeClass::Regular).bytes;
    pt[0] = 5;
    let p = build_packet(&route, SizeClass::Regular, 258, &pt);
    let f = node.v8_header(SizeClass::Regular).frame(&p.to_bytes());
    assert_eq!(drop_of(&mut proc, f), DropReason::BadSurbAck);

    // ack packets carry no SURB-ACK: a short plaintext is fine
    let p = build_packet(&route, SizeClass::Ack, 258, b"ack!");
    let mut f = node.v8_header(SizeClass::Ack).frame(&p.to_bytes());
    match verdict_of(&mut proc, &mut f) {
        Verdict::Deliver(d) => {
            assert_eq!(&f[d.message.clone()], b"ack!");
            assert!(d.surb_ack.is_none());
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn every_drop_reason_is_reached_by_the_tests_above() {
    // Run the drop tests again here and collect what they actually produced: a reason added
    // without an input that reaches it fails this test.
    frame_level_drops();
    crypto_level_drops();
    replayed_packets_are_dropped();
    routing_level_drops();
    final_hop_drops();
    let reached: HashSet<DropReason> = PRODUCED.lock().unwrap().iter().copied().collect();
    for r in DropReason::ALL {
        assert!(reached.contains(&r), "{r:?} is reached by no test input");
        assert_eq!(DropReason::ALL[r.index()], r);
    }
    let names: HashSet<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(names.len(), DropReason::ALL.len());
}

#[test]
fn rotation_byte_picks_the_key() {
    let mut rng = rng(10);
    let mut old = TestNode::random(&mut rng);
    old.rotation_id = 40;
    let mut new = old.clone();
    new.secret = rng.random();
    new.rotation_id = 41;
    let keys = Arc::new(NodeKeys {
        primary: new.key(),
        secondary: Some(old.key()),
    });
    let mut proc = Processor::new(keys, ProcessorConfig::default());

    for (node, slot) in [(&new, KeySlot::Primary), (&old, KeySlot::Secondary)] {
        let (_, f) = packet_for(node, 2, SizeClass::Regular, 258);
        // the right parity byte
        match verdict_of(&mut proc, &mut f.clone()) {
            Verdict::Forward(fw) => {
                assert_eq!(fw.accepted.key_slot, slot);
                assert_eq!(fw.accepted.rotation_id, node.rotation_id);
            }
            v => panic!("{v:?}"),
        }
        // the wrong parity byte: the other key's MAC check fails
        let mut wrong = f.clone();
        wrong[3] = if wrong[3] == 1 { 2 } else { 1 };
        assert_eq!(drop_of(&mut proc, wrong), DropReason::BadMac);
        // unknown rotation (v8 byte 0, and a v7 frame): primary, then secondary
        let mut unknown = f.clone();
        unknown[3] = 0;
        assert!(matches!(
            verdict_of(&mut proc, &mut unknown),
            Verdict::Forward(_)
        ));
        let mut v7 = v7_header(SizeClass::Regular).frame(&f[4..]);
        match verdict_of(&mut proc, &mut v7) {
            Verdict::Forward(fw) => assert_eq!(fw.accepted.key_slot, slot),
            v => panic!("{v:?}"),
        }
    }
    // after the purge only the new key is live: the old parity has no key
    proc.set_keys(Arc::new(NodeKeys::single(new.key())));
    let (_, f) = packet_for(&old, 2, SizeClass::Regular, 258);
    assert_eq!(drop_of(&mut proc, f.clone()), DropReason::NoKeyForRotation);
    let mut unknown = f;
    unknown[3] = 0;
    assert_eq!(drop_of(&mut proc, unknown), DropReason::BadMac);
}

#[test]
fn a_mixed_batch_matches_one_by_one_processing() {
    let mut rng = rng(11);
    let mut primary = TestNode::random(&mut rng);
    primary.rotation_id = 8;
    let mut secondary = TestNode::random(&mut rng);
    secondary.rotation_id = 7;
    let keys = Arc::new(NodeKeys {
        primary: primary.key(),
        secondary: Some(secondary.key()),
    });
    let mut frames = Vec::new();
    for i in 0..150 {
        let node = if rng.random_bool(0.5) {
            &primary
        } else {
            &secondary
        };
        let class = SizeClass::ALL[rng.random_range(0..5)];
        let version = VERSIONS[rng.random_range(0..5)];
        let hops = rng.random_range(1..=5);
        let mut route = random_route(&mut rng, hops, 10_000_000_000);
        route.nodes[0] = node.clone();
        let pt = random_plaintext(&mut rng, class);
        let p = build_packet(&route, class, version, &pt.bytes).to_bytes();
        let mut f = match i % 5 {
            0 => v7_header(class).frame(&p),
            1 => FrameHeader::v8(class, KeyRotation::Unknown).frame(&p),
            _ => node.v8_header(class).frame(&p),
        };
        if i % 7 == 3 {
            let at = rng.random_range(0..f.len());
            f[at] ^= 1 << rng.random_range(0..8); // some corrupted frames
        }
        if i % 11 == 5 {
            f.truncate(rng.random_range(0..f.len())); // some truncated ones
        }
        frames.push(f);
    }
    let mut one_by_one = Vec::new();
    for f in &frames {
        let mut p = Processor::new(keys.clone(), ProcessorConfig::default());
        let mut f = f.clone();
        let v = verdict_of(&mut p, &mut f);
        one_by_one.push((v, f));
    }
    let mut proc = Processor::new(keys, ProcessorConfig::default());
    let mut batch = frames.clone();
    let mut out = Vec::new();
    proc.process_batch(&mut batch, &NoReplay, &mut out);
    let mut kinds = [0usize; 3];
    for (i, (v, f)) in one_by_one.iter().enumerate() {
        assert_eq!(&out[i], v, "frame {i}");
        assert_eq!(&batch[i], f, "frame {i} bytes");
        kinds[match v {
            Verdict::Forward(_) => 0,
            Verdict::Deliver(_) => 1,
            Verdict::Drop(_) => 2,
        }] += 1;
    }
    assert!(
        kinds.iter().all(|&k| k > 0),
        "batch covers forward, deliver and drop: {kinds:?}"
    );
    // the processor's scratch is reused: a second batch gives the same answers
    let mut batch2 = frames.clone();
    proc.process_batch(&mut batch2, &NoReplay, &mut out);
    assert_eq!(batch2, batch);
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}
