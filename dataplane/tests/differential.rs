//! Differential tests: packets built by sphinx-packet 0.8.0 are processed hop by hop both by
//! mixplane and by the crate's own `process`; every output must be identical.

mod common;

use common::*;
use mixplane_crypto_simd::x25519::Backend;
use mixplane_dataplane::sphinx::{
    FrameHeader, NoReplay, Processor, ProcessorConfig, SizeClass, Verdict, address,
};
use rand::RngExt;
use sphinx_packet::{ProcessedPacketData, SphinxPacket};

#[derive(Default, Debug)]
struct Tally {
    routes: usize,
    hops: usize,
}

/// Sends `packet` along `route`, comparing mixplane with sphinx-packet at each hop. `expect`
/// is the plaintext the final hop must recover (None: a sealed v260 SURB reply).
#[allow(clippy::too_many_arguments)] // one knob per dimension of the comparison
fn walk(
    route: &Route,
    class: SizeClass,
    first: SphinxPacket,
    plaintext: &Plaintext,
    recovery: Option<&sphinx_packet::SurbReplyRecovery>,
    use_v7: bool,
    backend: Backend,
    tally: &mut Tally,
) {
    let mut bytes = first.to_bytes();
    assert_eq!(bytes.len(), class.packet_len());
    let mut verdicts = Vec::new();
    for (hop, node) in route.nodes.iter().enumerate() {
        let header = if use_v7 {
            v7_header(class)
        } else {
            node.v8_header(class)
        };
        let mut frame = header.frame(&bytes);
        let mut proc = Processor::new(
            node.keys(),
            ProcessorConfig {
                backend,
                ..ProcessorConfig::default()
            },
        );
        proc.process_batch(std::slice::from_mut(&mut frame), &NoReplay, &mut verdicts);
        let oracle = SphinxPacket::from_bytes(&bytes)
            .unwrap()
            .process(&node.static_secret())
            .expect("oracle processes");
        tally.hops += 1;
        match (oracle.data, &verdicts[0]) {
            (
                ProcessedPacketData::ForwardHop {
                    next_hop_packet,
                    next_hop_address,
                    delay,
                },
                Verdict::Forward(f),
            ) => {
                assert!(hop + 1 < route.nodes.len(), "forward at the last hop");
                assert_eq!(f.sphinx_version, oracle.version.value());
                // nym-node clamps what sphinx-packet reports to the cap (and counts it)
                let cap = mixplane_dataplane::sphinx::DEFAULT_MAX_DELAY_NS;
                assert_eq!(f.delay_ns, delay.to_nanos().min(cap));
                assert_eq!(f.delay_clamped, route.delays[hop].to_nanos() > cap);
                assert_eq!(
                    f.next_hop,
                    address::parse(next_hop_address.as_bytes()).unwrap()
                );
                assert_eq!(f.next_hop, route.nodes[hop + 1].addr);
                let out = &frame[f.frame.clone()];
                assert_eq!(FrameHeader::parse(out), Ok(header));
                let next = next_hop_packet.to_bytes();
                assert_eq!(
                    &out[header.len()..],
                    &next[..],
                    "next packet bytes at hop {hop}"
                );
                bytes = next;
            }
            (
                ProcessedPacketData::FinalHop {
                    destination,
                    identifier,
                    payload,
                },
                Verdict::Deliver(d),
            ) => {
                assert_eq!(hop + 1, route.nodes.len(), "final before the last hop");
                assert_eq!(d.sphinx_version, oracle.version.value());
                assert_eq!(&d.destination, destination.as_bytes_ref());
                assert_eq!(d.identifier, identifier);
                assert_eq!(d.identifier, route.destination.identifier);
                let oracle_payload = payload.as_bytes().to_vec();
                match payload.recover_plaintext() {
                    Err(_) => {
                        // a single-seed SURB reply over several hops: sealed until its creator
                        // opens it
                        let rec = recovery.expect("only v260 SURB replies stay sealed");
                        assert!(d.sealed);
                        assert!(d.surb_ack.is_none());
                        assert_eq!(&frame[d.message.clone()], &oracle_payload[..]);
                        let sealed =
                            sphinx_packet::payload::Payload::from_bytes(&frame[d.message.clone()])
                                .unwrap();
                        assert_eq!(rec.recover_plaintext(sealed).unwrap(), plaintext.bytes);
                    }
                    Ok(recovered) => {
                        assert!(!d.sealed);
                        assert_eq!(recovered, plaintext.bytes);
                        match class {
                            SizeClass::Ack => {
                                assert!(d.surb_ack.is_none());
                                assert_eq!(&frame[d.message.clone()], &recovered[..]);
                                assert_eq!(&frame[d.payload.clone()], &oracle_payload[..]);
                            }
                            _ => {
                                let ack = d.surb_ack.as_ref().expect("surb ack");
                                assert_eq!(Some(ack.next_hop), plaintext.ack_first_hop);
                                let ack_frame = &frame[ack.frame.clone()];
                                let ah = FrameHeader::parse(ack_frame).expect("ack frame parses");
                                assert_eq!(ah.size_class, SizeClass::Ack);
                                assert_eq!(ah.key_rotation, header.key_rotation);
                                assert_eq!(&ack_frame[ah.len()..], &recovered[19..405]);
                                assert_eq!(&frame[d.message.clone()], &recovered[405..]);
                            }
                        }
                    }
                }
            }
            (_, v) => panic!("hop {hop}: oracle and mixplane disagree; mixplane said {v:?}"),
        }
    }
    tally.routes += 1;
}

fn forward_suite(seed: u64, use_v7: bool, backend: Backend) -> Tally {
    let mut rng = rng(seed);
    let mut tally = Tally::default();
    for class in SizeClass::ALL {
        for version in VERSIONS {
            for hops in 1..=5 {
                let route = random_route(&mut rng, hops, 10_000_000_000);
                let pt = random_plaintext(&mut rng, class);
                let packet = build_packet(&route, class, version, &pt.bytes);
                walk(
                    &route, class, packet, &pt, None, use_v7, backend, &mut tally,
                );
            }
        }
    }
    tally
}

#[test]
fn every_class_version_and_length_matches_sphinx_packet() {
    let t = forward_suite(1, false, Backend::best());
    eprintln!(
        "compared {} routes, {} hops (v8 frames, {})",
        t.routes,
        t.hops,
        Backend::best().name()
    );
    assert_eq!(t.routes, 5 * 5 * 5);
    assert_eq!(t.hops, 5 * 5 * 15);
}

#[test]
fn legacy_v7_frames_match_sphinx_packet() {
    let t = forward_suite(2, true, Backend::best());
    eprintln!("compared {} routes, {} hops (v7 frames)", t.routes, t.hops);
    assert_eq!(t.hops, 5 * 5 * 15);
}

#[test]
fn surb_replies_match_sphinx_packet() {
    let mut rng = rng(3);
    let mut tally = Tally::default();
    for class in SizeClass::ALL {
        for version in [259u16, 260] {
            for hops in 1..=5 {
                let route = random_route(&mut rng, hops, 50_000_000);
                let pt = random_plaintext(&mut rng, class);
                let (packet, recovery) = build_surb_reply(&route, class, version, &pt.bytes);
                walk(
                    &route,
                    class,
                    packet,
                    &pt,
                    recovery.as_ref(),
                    false,
                    Backend::best(),
                    &mut tally,
                );
            }
        }
    }
    eprintln!("compared {} SURB routes, {} hops", tally.routes, tally.hops);
    assert_eq!(tally.routes, 5 * 2 * 5);
}

#[test]
fn random_routes_match_sphinx_packet() {
    let mut rng = rng(4);
    let mut tally = Tally::default();
    for _ in 0..400 {
        let class = SizeClass::ALL[rng.random_range(0..5)];
        let version = VERSIONS[rng.random_range(0..5)];
        let hops = rng.random_range(1..=5);
        // up to twice Nym's 10 s cap: longer delays are clamped, as nym-node does
        let route = random_route(&mut rng, hops, 20_000_000_000);
        let pt = random_plaintext(&mut rng, class);
        let packet = build_packet(&route, class, version, &pt.bytes);
        walk(
            &route,
            class,
            packet,
            &pt,
            None,
            rng.random_bool(0.5),
            Backend::best(),
            &mut tally,
        );
    }
    eprintln!(
        "compared {} random routes, {} hops",
        tally.routes, tally.hops
    );
}

#[test]
fn every_x25519_backend_matches_sphinx_packet() {
    let backends = Backend::supported();
    for backend in &backends {
        let t = forward_suite(6, false, *backend);
        eprintln!(
            "compared {} routes, {} hops with the {} backend",
            t.routes,
            t.hops,
            backend.name()
        );
        assert_eq!(t.hops, 5 * 5 * 15);
    }
    assert!(backends.contains(&Backend::Portable));
}
