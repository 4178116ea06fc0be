//! mixplane nodes in a route with Nym's own transport code, over real loopback TCP.
//!
//! The route: Nym's egress client (`nym-mixnet-client` 2.0.0, what a nym-node forwards with)
//! sends frames into mixplane node A over TCP (plain, or Noise through `nym-noise`); A forwards
//! to B and B to C over UDP; C is the final hop: it delivers each message to its sink and sends
//! the SURB-ACK on over TCP (plain or Noise) to a next hop that is Nym's receive side: a tokio
//! listener with `nym-noise`'s responder and `nym-sphinx-framing`'s `NymCodec`, as in nym-node.
//! Every message and every SURB-ACK must arrive, the acks byte-identical and in v7 frames.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener, UdpSocket};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mixplane_dataplane::io::tcp::{PeerBook, PeerInfo, PeerTransport, TcpSettings};
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::sink::{self, SinkAddr};
use mixplane_dataplane::sphinx::{NodeKeys, SizeClass, SphinxKey, address};
use nym_crypto::asymmetric::x25519;
use nym_mixnet_client::metrics::{PacketTrace, Traced};
use nym_mixnet_client::{Client, Config, SendWithoutResponse};
use nym_noise::config::{NoiseConfig, NoiseNetworkView, NoiseNode, VersionedNoiseKeyV1};
use nym_noise::upgrade_noise_responder;
use nym_sphinx_addressing::nodes::NymNodeRoutingAddress;
use nym_sphinx_forwarding::packet::MixPacket;
use nym_sphinx_framing::codec::NymCodec;
use nym_sphinx_params::{PacketType, SphinxKeyRotation};
use nym_sphinx_types::NymPacket;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sphinx_packet::header::delays::Delay;
use sphinx_packet::route::{
    Destination, DestinationAddressBytes, Node as SpNode, NodeAddressBytes,
};
use sphinx_packet::version::Version;
use sphinx_packet::{SphinxPacket, SphinxPacketBuilder};
use tokio_util::codec::Framed;

const PACKETS: usize = 40;

fn public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

fn nym_key(public: [u8; 32]) -> VersionedNoiseKeyV1 {
    VersionedNoiseKeyV1 {
        supported_version: nym_noise::config::NoiseVersion::V1,
        x25519_pubkey: x25519::PublicKey::from_bytes(&public).expect("a valid key"),
    }
}

/// A free loopback address that both UDP and TCP can bind.
fn free_addr() -> SocketAddr {
    loop {
        let t = StdListener::bind("127.0.0.1:0").unwrap();
        let a = t.local_addr().unwrap();
        if UdpSocket::bind(a).is_ok() {
            return a;
        }
    }
}

struct Mix {
    node: Node,
    secret: [u8; 32],
    noise_secret: [u8; 32],
}

fn mix(rng: &mut StdRng, sink: Option<SinkAddr>) -> Mix {
    let secret: [u8; 32] = rng.random();
    let noise_secret: [u8; 32] = rng.random();
    let addr = free_addr();
    let node = Node::start(
        NodeConfig {
            listen: addr,
            sink,
            replay_expected: 100_000,
            tcp: Some(TcpSettings {
                listen: Some(addr),
                noise_secret: Some(zeroize::Zeroizing::new(noise_secret)),
                ..TcpSettings::default()
            }),
            ..NodeConfig::default()
        },
        Arc::new(NodeKeys::single(SphinxKey::from_secret(secret, 1))),
    )
    .expect("node starts");
    Mix {
        node,
        secret,
        noise_secret,
    }
}

impl Mix {
    fn sp(&self) -> SpNode {
        SpNode {
            address: NodeAddressBytes::from_bytes(address::encode::<32>(self.node.local_addr())),
            pub_key: x25519_dalek::PublicKey::from(public(&self.secret)),
        }
    }
}

/// Frames a receiver collected: header version byte and Sphinx packet.
type Received = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

/// Nym's receive side of a mix port: Noise responder (or plain TCP), `NymCodec` frames.
/// Collects each frame's header bytes and Sphinx packet.
async fn nym_receiver(
    listener: tokio::net::TcpListener,
    noise: Option<NoiseConfig>,
    got: Received,
) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            return;
        };
        let noise = noise.clone();
        let got = got.clone();
        tokio::spawn(async move {
            let conn = match &noise {
                Some(cfg) => match upgrade_noise_responder(conn, cfg).await {
                    Ok(c) => c,
                    Err(e) => panic!("Nym's Noise responder refused mixplane: {e}"),
                },
                None => nym_noise::connection::Connection::Raw(conn),
            };
            let mut framed = Framed::new(conn, NymCodec);
            while let Some(frame) = framed.next().await {
                let frame = frame.expect("NymCodec decodes mixplane's frames");
                let version = frame.header().packet_version.as_u8();
                match frame.into_inner() {
                    NymPacket::Sphinx(p) => got.lock().unwrap().push((version, p.to_bytes())),
                    _ => panic!("a Sphinx packet"),
                }
            }
        });
    }
}

/// What one packet should produce.
struct Expect {
    message: Vec<u8>,
    ack: Vec<u8>,
}

/// Packets over [a, b, c] whose SURB-ACK's first hop is `ack_to`.
fn packets(rng: &mut StdRng, route: &[SpNode], ack_to: SocketAddr) -> Vec<(SphinxPacket, Expect)> {
    (0..PACKETS)
        .map(|_| {
            let ack: Vec<u8> = (0..SizeClass::Ack.packet_len())
                .map(|_| rng.random())
                .collect();
            let message: Vec<u8> = (0..rng.random_range(1..1500))
                .map(|_| rng.random())
                .collect();
            let mut plaintext = address::encode::<19>(ack_to).to_vec();
            plaintext.extend_from_slice(&ack);
            plaintext.extend_from_slice(&message);
            let delays: Vec<Delay> = (0..route.len())
                .map(|_| Delay::new_from_millis(rng.random_range(0..5)))
                .collect();
            let destination = Destination::new(
                DestinationAddressBytes::from_bytes(rng.random()),
                rng.random(),
            );
            let packet = SphinxPacketBuilder::new()
                .with_version(Version::new(258))
                .with_payload_size(SizeClass::Regular.payload_len())
                .build_packet(&plaintext, route, &destination, &delays)
                .expect("sphinx-packet builds it");
            (packet, Expect { message, ack })
        })
        .collect()
}

fn mixed_route(noise: bool, seed: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let a = mix(&mut rng, None);
    let b = mix(&mut rng, None);
    let c = mix(&mut rng, Some(SinkAddr::Udp(sink.local_addr().unwrap())));

    // Nym's receiver, listening where the SURB-ACKs go
    let receiver_secret: [u8; 32] = rng.random();
    let receiver_keys = Arc::new(key_pair(&receiver_secret));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let ack_to = listener.local_addr().unwrap();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let responder = noise.then(|| {
        // nym-node answers Noise only from IPs its topology lists as Noise-capable nodes
        let view = NoiseNetworkView::new(HashMap::from([(
            IpAddr::from([127, 0, 0, 1]),
            NoiseNode::new_nym_node(nym_key(public(&c.noise_secret))),
        )]));
        NoiseConfig::new(receiver_keys.clone(), view, Duration::from_secs(5))
    });
    rt.spawn(nym_receiver(listener, responder, acks.clone()));

    // C reaches the receiver by TCP, with Noise when its key is known
    let mut book = PeerBook::new(PeerTransport::Udp);
    book.insert(
        ack_to,
        PeerInfo {
            node_id: 99,
            transport: PeerTransport::Tcp,
            noise_key: noise.then(|| public(&receiver_secret)),
            noise_version: noise.then_some(1),
        },
    );
    c.node.set_peers(book);

    let route = [a.sp(), b.sp(), c.sp()];
    let sent = packets(&mut rng, &route, ack_to);

    // Nym's egress client sends into A (Noise when its view lists A's noise key)
    let client_secret: [u8; 32] = rng.random();
    let client_keys = Arc::new(key_pair(&client_secret));
    let view = if noise {
        NoiseNetworkView::new(HashMap::from([(
            a.node.local_addr().ip(),
            NoiseNode::new_nym_node(nym_key(public(&a.noise_secret))),
        )]))
    } else {
        NoiseNetworkView::new_empty()
    };
    let a_addr = a.node.local_addr();
    let packets: Vec<Vec<u8>> = sent.iter().map(|(p, _)| p.to_bytes()).collect();
    rt.block_on(async move {
        let client = Client::new(
            Config::new(
                Duration::from_millis(100),
                Duration::from_secs(1),
                Duration::from_millis(1500),
                2000,
                true,
                Duration::from_secs(300),
                Duration::from_millis(500),
            ),
            NoiseConfig::new(client_keys, view, Duration::from_secs(5)),
            Arc::new(AtomicUsize::new(0)),
        );
        for p in packets {
            let packet = MixPacket::new(
                NymNodeRoutingAddress::from(a_addr),
                NymPacket::Sphinx(SphinxPacket::from_bytes(&p).unwrap()),
                PacketType::Mix,
                SphinxKeyRotation::Unknown,
            );
            // the first send opens the connection and reports it as in progress (queued)
            let _ = client.send_without_response(Traced::new(packet, PacketTrace::start(false)));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // keep the client (and its connection task) alive until everything went through
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(client);
    });

    // every message at C's sink
    let want_msgs: HashSet<Vec<u8>> = sent.iter().map(|(_, e)| e.message.clone()).collect();
    let mut got_msgs = HashSet::new();
    let end = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    while got_msgs.len() < PACKETS && Instant::now() < end {
        if let Ok(n) = sink.recv(&mut buf) {
            got_msgs.insert(buf[sink::SINK_HEADER_LEN..n].to_vec());
        }
    }
    assert_eq!(got_msgs, want_msgs, "every message reaches the sink");

    // every SURB-ACK at Nym's receiver, in v7 frames, byte-identical
    let end = Instant::now() + Duration::from_secs(10);
    while acks.lock().unwrap().len() < PACKETS && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = acks.lock().unwrap().clone();
    assert_eq!(got.len(), PACKETS, "every SURB-ACK reaches Nym's receiver");
    assert!(got.iter().all(|(v, _)| *v == 7), "v7 frames to a Nym peer");
    let got_acks: HashSet<Vec<u8>> = got.into_iter().map(|(_, p)| p).collect();
    let want_acks: HashSet<Vec<u8>> = sent.iter().map(|(_, e)| e.ack.clone()).collect();
    assert_eq!(got_acks, want_acks);

    // the path really was TCP in at A, UDP between, TCP out at C
    let frames_in = |m: &Mix| {
        m.node
            .tcp_counters()
            .iter()
            .map(|t| t.frames_in.load(std::sync::atomic::Ordering::Relaxed))
            .sum::<u64>()
    };
    assert_eq!(frames_in(&a), PACKETS as u64);
    assert_eq!(frames_in(&b), 0);
    assert_eq!(frames_in(&c), 0);
    let handshakes = |m: &Mix| {
        m.node
            .tcp_counters()
            .iter()
            .map(|t| {
                t.noise_handshakes
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum::<u64>()
    };
    let expect = u64::from(noise);
    assert_eq!(handshakes(&a), expect, "Nym's client did Noise with A");
    assert_eq!(handshakes(&c), expect, "C did Noise with Nym's responder");
    for m in [a, b, c] {
        m.node.shutdown().unwrap();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// A nym-crypto key pair from a secret.
fn key_pair(secret: &[u8; 32]) -> x25519::KeyPair {
    x25519::KeyPair::from_bytes(secret, &public(secret)).expect("a key pair")
}

#[test]
fn nym_client_in_plain_tcp_then_udp_then_plain_tcp_out_to_nym_codec() {
    mixed_route(false, 11);
}

#[test]
fn nym_client_in_over_noise_then_udp_then_noise_out_to_nym_responder() {
    mixed_route(true, 12);
}
