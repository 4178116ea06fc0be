//! Shared helpers: nodes, routes and packets built with sphinx-packet 0.8.0 (the oracle).
#![allow(dead_code)]

pub mod local;

use std::net::SocketAddr;
use std::sync::Arc;

use mixplane_dataplane::sphinx::{
    FrameHeader, FrameVersion, KeyRotation, NodeKeys, Processor, ProcessorConfig, SizeClass,
    SphinxKey, address,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sphinx_packet::header::delays::Delay;
use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
use sphinx_packet::version::Version;
use sphinx_packet::{SURBMaterial, SphinxPacket, SphinxPacketBuilder};
use x25519_dalek::{PublicKey, StaticSecret};

pub const VERSIONS: [u16; 5] = [1, 257, 258, 259, 260];

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A mix node under test: its secret, rotation id and routing address.
#[derive(Clone)]
pub struct TestNode {
    pub secret: [u8; 32],
    pub rotation_id: u32,
    pub addr: SocketAddr,
}

impl TestNode {
    pub fn random(rng: &mut StdRng) -> TestNode {
        let v6: bool = rng.random_bool(0.3);
        let port: u16 = rng.random();
        let addr = if v6 {
            SocketAddr::new(std::net::IpAddr::V6(rng.random::<[u8; 16]>().into()), port)
        } else {
            SocketAddr::new(std::net::IpAddr::V4(rng.random::<[u8; 4]>().into()), port)
        };
        TestNode {
            secret: rng.random(),
            rotation_id: rng.random_range(1..100_000),
            addr,
        }
    }

    pub fn sphinx_node(&self) -> Node {
        Node {
            address: NodeAddressBytes::from_bytes(address::encode::<32>(self.addr)),
            pub_key: PublicKey::from(&StaticSecret::from(self.secret)),
        }
    }

    pub fn key(&self) -> SphinxKey {
        SphinxKey::from_secret(self.secret, self.rotation_id)
    }

    pub fn keys(&self) -> Arc<NodeKeys> {
        Arc::new(NodeKeys::single(self.key()))
    }

    pub fn processor(&self) -> Processor {
        Processor::new(self.keys(), ProcessorConfig::default())
    }

    pub fn v8_header(&self, class: SizeClass) -> FrameHeader {
        FrameHeader::v8(class, KeyRotation::of_rotation_id(self.rotation_id))
    }

    pub fn static_secret(&self) -> StaticSecret {
        StaticSecret::from(self.secret)
    }
}

pub fn v7_header(class: SizeClass) -> FrameHeader {
    FrameHeader {
        version: FrameVersion::V7,
        size_class: class,
        key_rotation: KeyRotation::Unknown,
    }
}

/// A route's worth of material.
pub struct Route {
    pub nodes: Vec<TestNode>,
    pub delays: Vec<Delay>,
    pub destination: Destination,
}

pub fn random_route(rng: &mut StdRng, hops: usize, max_delay_ns: u64) -> Route {
    let nodes: Vec<TestNode> = (0..hops).map(|_| TestNode::random(rng)).collect();
    let delays = (0..hops)
        .map(|_| Delay::new_from_nanos(rng.random_range(0..=max_delay_ns)))
        .collect();
    let destination = Destination::new(
        DestinationAddressBytes::from_bytes(rng.random()),
        rng.random(),
    );
    Route {
        nodes,
        delays,
        destination,
    }
}

impl Route {
    pub fn sphinx_nodes(&self) -> Vec<Node> {
        self.nodes.iter().map(|n| n.sphinx_node()).collect()
    }
}

/// The plaintext Nym puts in a packet of `class`: for all classes but ack, a SURB-ACK (19-byte
/// first-hop address, then a 386-byte ack packet) followed by the message.
pub struct Plaintext {
    pub bytes: Vec<u8>,
    pub ack_first_hop: Option<SocketAddr>,
}

pub fn random_plaintext(rng: &mut StdRng, class: SizeClass) -> Plaintext {
    let max = class.payload_len() - 17;
    if class == SizeClass::Ack {
        let len = rng.random_range(0..=max);
        let bytes = (0..len).map(|_| rng.random()).collect();
        return Plaintext {
            bytes,
            ack_first_hop: None,
        };
    }
    let first_hop = TestNode::random(rng).addr;
    let mut bytes = address::encode::<19>(first_hop).to_vec();
    bytes.extend((0..SizeClass::Ack.packet_len()).map(|_| rng.random::<u8>()));
    let msg_len = rng.random_range(0..=max - bytes.len());
    bytes.extend((0..msg_len).map(|_| rng.random::<u8>()));
    Plaintext {
        bytes,
        ack_first_hop: Some(first_hop),
    }
}

pub fn build_packet(
    route: &Route,
    class: SizeClass,
    version: u16,
    plaintext: &[u8],
) -> SphinxPacket {
    SphinxPacketBuilder::new()
        .with_version(Version::new(version))
        .with_payload_size(class.payload_len())
        .build_packet(
            plaintext,
            &route.sphinx_nodes(),
            &route.destination,
            &route.delays,
        )
        .expect("sphinx-packet builds the packet")
}

/// Builds a reply packet through sphinx-packet's SURB API. Returns the packet and, for v260, the
/// creator's recovery material.
pub fn build_surb_reply(
    route: &Route,
    class: SizeClass,
    version: u16,
    plaintext: &[u8],
) -> (SphinxPacket, Option<sphinx_packet::SurbReplyRecovery>) {
    let material = SURBMaterial::new(
        route.sphinx_nodes(),
        route.delays.clone(),
        route.destination.clone(),
        Version::new(version),
    );
    let (surb, recovery) = if version == 260 {
        let (s, r) = material.construct_recoverable_SURB().expect("surb");
        (s, Some(r))
    } else {
        (material.construct_SURB().expect("surb"), None)
    };
    let (packet, first_hop) = surb
        .use_surb(plaintext, class.payload_len())
        .expect("use surb");
    assert_eq!(
        *first_hop.as_bytes(),
        address::encode::<32>(route.nodes[0].addr)
    );
    (packet, recovery)
}
