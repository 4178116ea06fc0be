//! The sender-side builder: packets built by `sphinx::build` are processed hop by hop by
//! sphinx-packet 0.8.0 and by mixplane's `Processor` with the expected results, and with the same
//! initial secret and final-hop padding they are byte-identical to sphinx-packet's own.

mod common;

use common::*;
use mixplane_crypto_simd::x25519::{Backend, x25519};
use mixplane_dataplane::sphinx::build::{
    self, BuildError, FinalPadding, Hop, MAX_FINAL_PADDING, PacketSpec, final_padding_len,
    max_plaintext_len, plaintext_with_surb_ack, public_key,
};
use mixplane_dataplane::sphinx::kdf::{self, ExpandedSecret};
use mixplane_dataplane::sphinx::{NoReplay, SizeClass, Verdict, address};
use rand::RngExt;
use rand::rngs::StdRng;
use sphinx_packet::version::Version;
use sphinx_packet::{ProcessedPacketData, SphinxPacket, SphinxPacketBuilder};
use x25519_dalek::{PublicKey, StaticSecret};

/// A route from the common helpers in the builder's terms.
struct Owned {
    hops: Vec<Hop>,
    delays: Vec<u64>,
    destination: [u8; 32],
    identifier: [u8; 16],
}

fn owned(route: &Route) -> Owned {
    Owned {
        hops: route
            .nodes
            .iter()
            .map(|n| Hop {
                address: n.addr,
                public_key: public_key(&n.secret),
            })
            .collect(),
        delays: route.delays.iter().map(|d| d.to_nanos()).collect(),
        destination: *route.destination.address.as_bytes_ref(),
        identifier: route.destination.identifier,
    }
}

fn spec<'a>(
    o: &'a Owned,
    class: SizeClass,
    version: u16,
    plaintext: &'a [u8],
    secret: [u8; 32],
    padding: FinalPadding<'a>,
) -> PacketSpec<'a> {
    PacketSpec {
        route: &o.hops,
        delays_ns: &o.delays,
        destination: o.destination,
        identifier: o.identifier,
        version,
        payload_size: class.payload_len(),
        plaintext,
        initial_secret: secret,
        padding,
    }
}

fn seeded<'a>(rng: &mut StdRng) -> FinalPadding<'a> {
    FinalPadding::Seed(rng.random())
}

/// Sends `packet` along `route` through sphinx-packet and mixplane's processor, checking both
/// against the route and each other at every hop.
fn walk(route: &Route, class: SizeClass, version: u16, packet: Vec<u8>, pt: &Plaintext) {
    assert_eq!(packet.len(), class.packet_len());
    let mut bytes = packet;
    let mut verdicts = Vec::new();
    for (hop, node) in route.nodes.iter().enumerate() {
        let header = node.v8_header(class);
        let mut frame = header.frame(&bytes);
        node.processor()
            .process_batch(std::slice::from_mut(&mut frame), &NoReplay, &mut verdicts);
        let oracle = SphinxPacket::from_bytes(&bytes)
            .unwrap()
            .process(&node.static_secret())
            .unwrap_or_else(|e| panic!("hop {hop}: sphinx-packet rejects the packet: {e:?}"));
        assert_eq!(oracle.version.value(), version);
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
                let want = route.nodes[hop + 1].addr;
                assert_eq!(address::parse(next_hop_address.as_bytes()), Ok(want));
                assert_eq!(f.next_hop, want);
                assert_eq!(delay.to_nanos(), route.delays[hop].to_nanos());
                assert_eq!(f.delay_ns, route.delays[hop].to_nanos());
                assert_eq!(f.sphinx_version, version);
                let next = next_hop_packet.to_bytes();
                assert_eq!(&frame[f.frame.clone()][header.len()..], &next[..]);
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
                assert_eq!(
                    destination.as_bytes_ref(),
                    route.destination.address.as_bytes_ref()
                );
                assert_eq!(&d.destination, route.destination.address.as_bytes_ref());
                assert_eq!(identifier, route.destination.identifier);
                assert_eq!(d.identifier, route.destination.identifier);
                assert_eq!(d.sphinx_version, version);
                assert!(!d.sealed);
                let oracle_payload = payload.as_bytes().to_vec();
                let recovered = payload.recover_plaintext().expect("plaintext");
                assert_eq!(recovered, pt.bytes);
                match class {
                    SizeClass::Ack => {
                        assert!(d.surb_ack.is_none());
                        assert_eq!(&frame[d.message.clone()], &pt.bytes[..]);
                        assert!(frame[d.payload.clone()] == oracle_payload[..]);
                    }
                    _ => {
                        let ack = d.surb_ack.as_ref().expect("SURB-ACK");
                        assert_eq!(Some(ack.next_hop), pt.ack_first_hop);
                        let af = &frame[ack.frame.clone()];
                        assert_eq!(&af[4..], &pt.bytes[19..19 + SizeClass::Ack.packet_len()]);
                        assert_eq!(&frame[d.message.clone()], &pt.bytes[405..]);
                    }
                }
            }
            (_, v) => panic!("hop {hop}: sphinx-packet and mixplane disagree; mixplane: {v:?}"),
        }
    }
}

#[test]
fn every_class_version_and_length_is_processed_by_sphinx_packet_and_mixplane() {
    let mut rng = rng(101);
    let mut routes = 0;
    for class in SizeClass::ALL {
        for version in VERSIONS {
            for hops in 1..=5 {
                let route = random_route(&mut rng, hops, 10_000_000_000);
                let pt = random_plaintext(&mut rng, class);
                let o = owned(&route);
                let padding = seeded(&mut rng);
                let s = spec(&o, class, version, &pt.bytes, rng.random(), padding);
                let packet = build::build_packet(&s).expect("builds");
                walk(&route, class, version, packet, &pt);
                routes += 1;
            }
        }
    }
    assert_eq!(routes, 5 * 5 * 5);
}

#[test]
fn batches_build_the_same_packets_as_single_builds_and_keep_errors_in_place() {
    let mut rng = rng(102);
    let mut cases = Vec::new();
    for _ in 0..64 {
        let class = SizeClass::ALL[rng.random_range(0..5)];
        let version = VERSIONS[rng.random_range(0..5)];
        let hops = rng.random_range(1..=5);
        let route = random_route(&mut rng, hops, 10_000_000_000);
        let pt = random_plaintext(&mut rng, class);
        let secret: [u8; 32] = rng.random();
        let seed: [u8; 32] = rng.random();
        cases.push((class, version, route, pt, secret, seed));
    }
    let owned_routes: Vec<Owned> = cases.iter().map(|c| owned(&c.2)).collect();
    let too_long = vec![0u8; SizeClass::Regular.payload_len()];
    let mut specs: Vec<PacketSpec<'_>> = Vec::new();
    let mut expect_err = Vec::new();
    for (i, ((class, version, _, pt, secret, seed), o)) in
        cases.iter().zip(&owned_routes).enumerate()
    {
        specs.push(spec(
            o,
            *class,
            *version,
            &pt.bytes,
            *secret,
            FinalPadding::Seed(*seed),
        ));
        expect_err.push(false);
        if i % 16 == 3 {
            // an invalid spec between valid ones
            specs.push(spec(
                o,
                SizeClass::Regular,
                260,
                &too_long,
                *secret,
                FinalPadding::Seed(*seed),
            ));
            expect_err.push(true);
        }
    }
    let out = build::build_batch(&specs);
    assert_eq!(out.len(), specs.len());
    let mut built = 0;
    let mut k = 0;
    for (i, (r, &bad)) in out.iter().zip(&expect_err).enumerate() {
        if bad {
            assert_eq!(
                *r,
                Err(BuildError::PlaintextTooLong {
                    len: SizeClass::Regular.payload_len(),
                    max: SizeClass::Regular.payload_len() - 17,
                })
            );
            continue;
        }
        let (class, version, route, pt, _, _) = &cases[k];
        let packet = r.as_ref().expect("valid spec builds").clone();
        assert_eq!(packet.len(), class.packet_len());
        let single = build::build_packet(&specs[i]).unwrap();
        assert_eq!(single, packet, "batch and single builds differ");
        walk(route, *class, *version, packet, pt);
        built += 1;
        k += 1;
    }
    assert_eq!(built, 64);
}

/// Recovers the final-hop padding sphinx-packet drew for `packet` by walking it to the last hop
/// and decrypting the final routing information there.
fn sphinx_packet_padding(route: &Route, packet: &SphinxPacket) -> Vec<u8> {
    let mut bytes = packet.to_bytes();
    let n = route.nodes.len();
    for node in &route.nodes[..n - 1] {
        match SphinxPacket::from_bytes(&bytes)
            .unwrap()
            .process(&node.static_secret())
            .unwrap()
            .data
        {
            ProcessedPacketData::ForwardHop {
                next_hop_packet, ..
            } => bytes = next_hop_packet.to_bytes(),
            _ => panic!("final hop too early"),
        }
    }
    let alpha: [u8; 32] = bytes[..32].try_into().unwrap();
    let secret = ExpandedSecret::expand(&x25519(&route.nodes[n - 1].secret, &alpha));
    let mut beta = bytes[48..348].to_vec();
    kdf::apply_routing_stream(secret.stream_key(), &mut beta);
    let final_len = 300 - 60 * (n - 1);
    assert_eq!(beta[0], 2);
    beta[52..final_len].to_vec()
}

#[test]
fn same_secret_and_padding_give_sphinx_packets_exact_bytes() {
    let mut rng = rng(103);
    let mut compared = 0;
    for version in VERSIONS {
        for class in [SizeClass::Ack, SizeClass::Regular, SizeClass::Ext8] {
            for hops in 1..=5 {
                let route = random_route(&mut rng, hops, 10_000_000_000);
                let pt = random_plaintext(&mut rng, class);
                let x: [u8; 32] = rng.random();
                let theirs = SphinxPacketBuilder::new()
                    .with_version(Version::new(version))
                    .with_initial_secret(&StaticSecret::from(x))
                    .with_payload_size(class.payload_len())
                    .build_packet(
                        &pt.bytes,
                        &route.sphinx_nodes(),
                        &route.destination,
                        &route.delays,
                    )
                    .unwrap();
                let theirs_bytes = theirs.to_bytes();
                let padding = sphinx_packet_padding(&route, &theirs);
                assert_eq!(padding.len(), final_padding_len(hops));

                let o = owned(&route);
                let exact = build::build_packet(&spec(
                    &o,
                    class,
                    version,
                    &pt.bytes,
                    x,
                    FinalPadding::Bytes(&padding),
                ))
                .unwrap();
                assert_eq!(exact, theirs_bytes, "v{version} {class:?} {hops} hops");

                // With our own padding only the routing information and MACs differ.
                let ours =
                    build::build_packet(&spec(&o, class, version, &pt.bytes, x, seeded(&mut rng)))
                        .unwrap();
                assert_eq!(ours[..32], theirs_bytes[..32], "alpha");
                assert_eq!(ours[348..], theirs_bytes[348..], "payload");
                assert_eq!(
                    ours[..32],
                    PublicKey::from(&StaticSecret::from(x)).to_bytes()
                );
                walk(&route, class, version, ours, &pt);
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 5 * 3 * 5);
}

#[test]
fn surb_ack_plaintext_round_trips_through_the_processor() {
    let mut rng = rng(104);
    for version in VERSIONS {
        // The ack: an ack-class packet along its own route.
        let ack_route = random_route(&mut rng, 3, 1_000_000);
        let ack_o = owned(&ack_route);
        let ack_id: Vec<u8> = (0..SizeClass::Ack.payload_len() - 17)
            .map(|_| rng.random())
            .collect();
        let ack = build::build_packet(&spec(
            &ack_o,
            SizeClass::Ack,
            version,
            &ack_id,
            rng.random(),
            seeded(&mut rng),
        ))
        .unwrap();
        let message = b"hello from the mixplane builder";
        let plaintext = plaintext_with_surb_ack(ack_route.nodes[0].addr, &ack, message).unwrap();
        assert_eq!(plaintext.len(), build::SURB_ACK_LEN + message.len());
        let pt = Plaintext {
            bytes: plaintext.clone(),
            ack_first_hop: Some(ack_route.nodes[0].addr),
        };
        let route = random_route(&mut rng, 3, 1_000_000);
        let o = owned(&route);
        let packet = build::build_packet(&spec(
            &o,
            SizeClass::Regular,
            version,
            &plaintext,
            rng.random(),
            seeded(&mut rng),
        ))
        .unwrap();
        walk(&route, SizeClass::Regular, version, packet, &pt);
        // The ack itself reaches its destination with its identifier.
        let ack_pt = Plaintext {
            bytes: ack_id,
            ack_first_hop: None,
        };
        walk(&ack_route, SizeClass::Ack, version, ack, &ack_pt);
    }
}

#[test]
fn public_key_matches_x25519_dalek() {
    let mut rng = rng(105);
    for _ in 0..16 {
        let s: [u8; 32] = rng.random();
        assert_eq!(
            public_key(&s),
            PublicKey::from(&StaticSecret::from(s)).to_bytes()
        );
    }
}

/// Builds `good` changed by `f`.
fn with<'a>(
    good: PacketSpec<'a>,
    f: impl FnOnce(&mut PacketSpec<'a>),
) -> Result<Vec<u8>, BuildError> {
    let mut s = good;
    f(&mut s);
    build::build_packet(&s)
}

#[test]
fn bad_specs_give_typed_errors() {
    let mut rng = rng(106);
    let route = random_route(&mut rng, 5, 1000);
    let o = owned(&route);
    let pt = [7u8; 10];
    let good = spec(
        &o,
        SizeClass::Regular,
        260,
        &pt,
        rng.random(),
        seeded(&mut rng),
    );
    assert!(build::build_packet(&good).is_ok());

    assert_eq!(
        with(good.clone(), |s| s.route = &[]),
        Err(BuildError::EmptyRoute)
    );
    let six = [o.hops[0]; 6];
    let six_delays = [0u64; 6];
    assert_eq!(
        with(good.clone(), |s| {
            s.route = &six;
            s.delays_ns = &six_delays;
        }),
        Err(BuildError::RouteTooLong { hops: 6 })
    );
    assert_eq!(
        with(good.clone(), |s| s.delays_ns = &o.delays[..4]),
        Err(BuildError::DelaysMismatch { hops: 5, delays: 4 })
    );
    for v in [0u16, 2, 256, 261, u16::MAX] {
        assert_eq!(
            with(good.clone(), |s| s.version = v),
            Err(BuildError::UnknownVersion(v))
        );
    }
    assert_eq!(
        with(good.clone(), |s| s.payload_size = 32),
        Err(BuildError::PayloadTooSmall { size: 32 })
    );
    assert_eq!(
        with(good.clone(), |s| s.payload_size = 0),
        Err(BuildError::PayloadTooSmall { size: 0 })
    );
    for size in [build::MAX_PAYLOAD_SIZE + 1, usize::MAX] {
        assert_eq!(
            with(good.clone(), |s| s.payload_size = size),
            Err(BuildError::PayloadTooLarge { size })
        );
    }
    // the smallest payload works, and holds 16 bytes
    let sixteen = [1u8; 16];
    let seventeen = [1u8; 17];
    let small = with(good.clone(), |s| {
        s.payload_size = 33;
        s.plaintext = &sixteen;
    })
    .unwrap();
    assert_eq!(small.len(), 348 + 33);
    assert_eq!(
        with(good.clone(), |s| {
            s.payload_size = 33;
            s.plaintext = &seventeen;
        }),
        Err(BuildError::PlaintextTooLong { len: 17, max: 16 })
    );
    let max = max_plaintext_len(SizeClass::Ack.payload_len());
    let fits = vec![0u8; max];
    let over = vec![0u8; max + 1];
    assert!(
        with(good.clone(), |s| {
            s.payload_size = SizeClass::Ack.payload_len();
            s.plaintext = &fits;
        })
        .is_ok()
    );
    assert_eq!(
        with(good.clone(), |s| {
            s.payload_size = SizeClass::Ack.payload_len();
            s.plaintext = &over;
        }),
        Err(BuildError::PlaintextTooLong { len: max + 1, max })
    );
    let short_pad = [0u8; 7];
    assert_eq!(
        with(good.clone(), |s| s.padding =
            FinalPadding::Bytes(&short_pad)),
        Err(BuildError::PaddingTooShort { len: 7, needed: 8 })
    );
    let long_pad = [0u8; MAX_FINAL_PADDING];
    assert!(with(good.clone(), |s| s.padding = FinalPadding::Bytes(&long_pad)).is_ok());

    // a small-order public key (u = 0) at hop 2, and at hop 0
    for weak in [2usize, 0] {
        let mut hops = o.hops.clone();
        hops[weak].public_key = [0u8; 32];
        let mut s = good.clone();
        s.route = &hops;
        assert_eq!(
            build::build_packet(&s),
            Err(BuildError::WeakPublicKey { hop: weak })
        );
        // and in a batch, next to good specs
        let out = build::build_batch(&[good.clone(), s, good.clone()]);
        assert!(out[0].is_ok() && out[2].is_ok());
        assert_eq!(out[1], Err(BuildError::WeakPublicKey { hop: weak }));
    }

    assert_eq!(
        plaintext_with_surb_ack(route.nodes[0].addr, &[0u8; 385], b""),
        Err(BuildError::BadSurbAck { len: 385 })
    );
    assert!(build::build_batch(&[]).is_empty());
    // every backend this CPU supports builds the same packet
    let reference = build::build_packet(&good).unwrap();
    for &backend in Backend::ALL {
        let out = build::build_batch_with(backend, std::slice::from_ref(&good));
        if backend.is_supported() {
            assert_eq!(out[0].as_ref().unwrap(), &reference, "{}", backend.name());
        } else {
            assert_eq!(out[0], Err(BuildError::UnsupportedBackend(backend.name())));
        }
    }
}
