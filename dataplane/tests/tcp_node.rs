//! Real nodes with Nym's TCP transport on loopback: packets built by sphinx-packet 0.8.0 go in
//! over TCP (plain and Noise) or UDP and come out over the next hop's transport, byte-identical
//! to sphinx-packet's own processing, with the frame header the next hop expects.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{TestNode, build_packet, random_plaintext, random_route, rng, v7_header};
use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::io::stream::{NoiseLink, frame_len};
use mixplane_dataplane::io::tcp::{PeerBook, PeerInfo, PeerTransport, TcpDrop, TcpSettings};
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::sphinx::{FrameHeader, KeyRotation, SizeClass};
use sphinx_packet::ProcessedPacketData;
use sphinx_packet::SphinxPacket;
use zeroize::Zeroizing;

const NOISE_SECRET: [u8; 32] = [0x42; 32];

fn noise_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

/// A mixplane node with UDP and TCP on one port, a Noise key, and `peers`.
fn start(me: &TestNode, peers: PeerBook, io: IoBackendKind) -> Node {
    Node::start(
        NodeConfig {
            listen: me.addr,
            io,
            slab_small: 4096,
            slab_large: 64,
            wheel_capacity: 8192,
            replay_expected: 100_000,
            tcp: Some(TcpSettings {
                listen: Some(me.addr),
                noise_secret: Some(Zeroizing::new(NOISE_SECRET)),
                ..TcpSettings::default()
            }),
            peers,
            ..NodeConfig::default()
        },
        me.keys(),
    )
    .expect("node starts")
}

/// A free loopback port that both UDP and TCP can bind.
fn free_addr() -> SocketAddr {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = t.local_addr().unwrap();
        if UdpSocket::bind(a).is_ok() {
            return a;
        }
    }
}

/// Packets for route [node, next], each with what sphinx-packet says `node` forwards.
fn packets(node: &TestNode, next: SocketAddr, n: usize, seed: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rng = rng(seed);
    (0..n)
        .map(|_| {
            let mut route = random_route(&mut rng, 2, 1_000_000);
            route.nodes[0] = node.clone();
            route.nodes[1].addr = next;
            let pt = random_plaintext(&mut rng, SizeClass::Regular);
            let packet = build_packet(&route, SizeClass::Regular, 258, &pt.bytes).to_bytes();
            let oracle = SphinxPacket::from_bytes(&packet)
                .unwrap()
                .process(&node.static_secret())
                .unwrap();
            let ProcessedPacketData::ForwardHop {
                next_hop_packet, ..
            } = oracle.data
            else {
                panic!("a forward hop")
            };
            (packet, next_hop_packet.to_bytes())
        })
        .collect()
}

/// Reads Nym frames from a stream until `n` came or 10 s passed.
fn read_frames(s: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 65536];
    while frames.len() < n && Instant::now() < end {
        if let Ok(k) = s.read(&mut chunk) {
            if k == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..k]);
        }
        while let Ok(Some(len)) = frame_len(&buf) {
            if buf.len() < len {
                break;
            }
            frames.push(buf.drain(..len).collect());
        }
    }
    frames
}

fn tcp_peer(addr: SocketAddr) -> PeerBook {
    let mut book = PeerBook::new(PeerTransport::Udp);
    book.insert(
        addr,
        PeerInfo {
            node_id: 2,
            transport: PeerTransport::Tcp,
            noise_key: None,
            noise_version: None,
        },
    );
    book
}

#[test]
fn plain_tcp_in_and_out_is_byte_identical_to_sphinx_packet() {
    let mut me = TestNode::random(&mut rng(1));
    me.addr = free_addr();
    let next = TcpListener::bind("127.0.0.1:0").unwrap();
    let next_addr = next.local_addr().unwrap();
    let node = start(&me, tcp_peer(next_addr), IoBackendKind::Auto);
    let tcp = node.tcp_local_addr().expect("tcp listener");
    assert_eq!(tcp, node.local_addr(), "TCP shares the UDP port");
    let pk = packets(&me, next_addr, 30, 2);
    // a Nym node sends v7 frames back to back
    let mut c = TcpStream::connect(tcp).unwrap();
    let mut stream = Vec::new();
    for (p, _) in &pk {
        stream.extend(v7_header(SizeClass::Regular).frame(p));
    }
    c.write_all(&stream).unwrap();
    let (mut out, _) = next.accept().unwrap();
    let got = read_frames(&mut out, pk.len());
    assert_eq!(got.len(), pk.len());
    let mut want: Vec<&Vec<u8>> = pk.iter().map(|(_, o)| o).collect();
    let mut have: Vec<&[u8]> = got.iter().map(|f| &f[3..]).collect();
    for f in &got {
        assert_eq!(
            &f[..3],
            &[7, SizeClass::Regular.byte(), 0],
            "v7 out to a Nym peer"
        );
    }
    want.sort();
    have.sort();
    assert_eq!(have, want.iter().map(|v| v.as_slice()).collect::<Vec<_>>());
    let tcp_c = &node.tcp_counters()[0];
    assert_eq!(
        tcp_c.frames_in.load(std::sync::atomic::Ordering::Relaxed),
        30
    );
    node.shutdown().unwrap();
}

#[test]
fn noise_in_udp_out_and_udp_in_tcp_out() {
    let mut me = TestNode::random(&mut rng(3));
    me.addr = free_addr();
    let next_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let next_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let next_tcp_addr = next_tcp.local_addr().unwrap();
    let node = start(&me, tcp_peer(next_tcp_addr), IoBackendKind::Mmsg);
    let rot = KeyRotation::of_rotation_id(me.rotation_id);

    // Noise in (our initiator, as a Nym node would), UDP out (unknown peers go by UDP)
    let to_udp = packets(&me, next_udp.local_addr().unwrap(), 10, 4);
    let mut c = TcpStream::connect(node.tcp_local_addr().unwrap()).unwrap();
    let mut wire = Vec::new();
    let mut link = NoiseLink::initiator(&[7; 32], &noise_public(&NOISE_SECRET), &mut wire).unwrap();
    c.write_all(&wire).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut chunk = [0u8; 4096];
    while !link.is_established() {
        let k = c.read(&mut chunk).expect("handshake reply");
        assert!(k > 0, "the node closed the handshake");
        wire.clear();
        link.receive(&chunk[..k], &mut wire, &mut Vec::new())
            .unwrap();
        c.write_all(&wire).unwrap();
    }
    let mut plain = Vec::new();
    for (p, _) in &to_udp {
        plain.extend(FrameHeader::v8(SizeClass::Regular, rot).frame(p));
    }
    wire.clear();
    link.send(&plain, &mut wire).unwrap();
    c.write_all(&wire).unwrap();
    next_udp
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < to_udp.len() {
        let k = next_udp.recv(&mut buf).expect("a forwarded datagram");
        got.push(buf[4..k].to_vec());
        assert_eq!(buf[0], 8, "UDP keeps the v8 header");
    }
    got.sort();
    let mut want: Vec<Vec<u8>> = to_udp.iter().map(|(_, o)| o.clone()).collect();
    want.sort();
    assert_eq!(got, want);

    // UDP in, TCP out
    let to_tcp = packets(&me, next_tcp_addr, 10, 5);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (p, _) in &to_tcp {
        s.send_to(
            &FrameHeader::v8(SizeClass::Regular, rot).frame(p),
            node.local_addr(),
        )
        .unwrap();
    }
    let (mut out, _) = next_tcp.accept().unwrap();
    let mut got: Vec<Vec<u8>> = read_frames(&mut out, to_tcp.len())
        .into_iter()
        .map(|f| f[3..].to_vec())
        .collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = to_tcp.iter().map(|(_, o)| o.clone()).collect();
    want.sort();
    assert_eq!(got, want);
    let t = &node.tcp_counters()[0];
    assert_eq!(
        t.noise_handshakes
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    node.shutdown().unwrap();
}

#[test]
fn a_flood_of_connections_from_one_address_is_refused_and_counted() {
    let mut me = TestNode::random(&mut rng(6));
    me.addr = free_addr();
    let node = Node::start(
        NodeConfig {
            listen: me.addr,
            tcp: Some(TcpSettings {
                listen: Some(me.addr),
                max_connections: 8,
                max_connections_per_ip: 4,
                ..TcpSettings::default()
            }),
            ..NodeConfig::default()
        },
        me.keys(),
    )
    .unwrap();
    let tcp = node.tcp_local_addr().unwrap();
    let conns: Vec<TcpStream> = (0..11).map(|_| TcpStream::connect(tcp).unwrap()).collect();
    let end = Instant::now() + Duration::from_secs(5);
    let refused = || {
        node.tcp_counters()
            .iter()
            .map(|c| c.drops(TcpDrop::RefusedIpLimit))
            .sum::<u64>()
    };
    while refused() < 7 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(refused(), 7, "4 of 11 admitted from one address");
    drop(conns);
    node.shutdown().unwrap();
}
