//! Interop of mixplane's sans-IO TCP transport pieces (`io::stream`: `frame_len`, `NoiseLink`)
//! with Nym's own crates over real loopback TCP: `nym-noise` 2.0.0 (initiator and responder,
//! Noise and its plain-TCP fallback) and `nym-sphinx-framing` 2.0.0 (`NymCodec`), carrying real
//! Sphinx packets of every size class in v7 and v8 frames.
//!
//! mixplane's side is driven by blocking std sockets on its own thread; Nym's side runs on a
//! tokio runtime, as in nym-node.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mixplane_dataplane::io::stream::{NoiseLink, frame_len, starts_noise};
use mixplane_dataplane::sphinx::build::public_key;
use mixplane_dataplane::sphinx::{FrameHeader, FrameVersion, KeyRotation, SizeClass};
use nym_crypto::asymmetric::x25519;
use nym_noise::config::{NoiseConfig, NoiseNetworkView, NoiseNode, VersionedNoiseKeyV1};
use nym_noise::{upgrade_noise_initiator, upgrade_noise_responder};
use nym_sphinx_framing::codec::NymCodec;
use nym_sphinx_framing::packet::FramedNymPacket;
use nym_sphinx_params::{PacketType, SphinxKeyRotation};
use nym_sphinx_types::NymPacket;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sphinx_packet::header::delays::Delay;
use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
use sphinx_packet::version::Version;
use tokio_util::codec::Framed;
use x25519_dalek::{PublicKey, StaticSecret};

const MIXPLANE_SECRET: [u8; 32] = [0x5a; 32];
const NYM_SECRET: [u8; 32] = [0xa5; 32];
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One frame to send: a real Sphinx packet and the frame version and rotation to put it in.
struct TestFrame {
    class: SizeClass,
    version: FrameVersion,
    rotation: KeyRotation,
    packet: Vec<u8>,
}

impl TestFrame {
    /// The frame's bytes as mixplane writes (and expects to read) them.
    fn bytes(&self) -> Vec<u8> {
        FrameHeader {
            version: self.version,
            size_class: self.class,
            key_rotation: self.rotation,
        }
        .frame(&self.packet)
    }

    /// The same frame as Nym's codec takes it.
    fn nym(&self) -> FramedNymPacket {
        let rotation = match self.rotation {
            KeyRotation::Unknown => SphinxKeyRotation::Unknown,
            KeyRotation::Odd => SphinxKeyRotation::OddRotation,
            KeyRotation::Even => SphinxKeyRotation::EvenRotation,
        };
        let packet = NymPacket::sphinx_from_bytes(&self.packet).expect("a sphinx packet");
        FramedNymPacket::new(
            packet,
            PacketType::Mix,
            rotation,
            self.version == FrameVersion::V7,
        )
    }
}

/// Real Sphinx packets (sphinx-packet 0.8.0, v258, three hops) of every size class, in v7 and
/// v8 frames, interleaved.
fn test_frames(seed: u64) -> Vec<TestFrame> {
    let mut rng = StdRng::seed_from_u64(seed);
    let route: Vec<Node> = (0..3)
        .map(|_| Node {
            address: NodeAddressBytes::from_bytes(rng.random()),
            pub_key: PublicKey::from(&StaticSecret::from(rng.random::<[u8; 32]>())),
        })
        .collect();
    let delays = vec![Delay::new_from_nanos(1_000_000); 3];
    let versions = [
        (FrameVersion::V7, KeyRotation::Unknown),
        (FrameVersion::V8, KeyRotation::Even),
        (FrameVersion::V8, KeyRotation::Odd),
    ];
    let mut frames = Vec::new();
    for (i, class) in SizeClass::ALL.into_iter().cycle().take(12).enumerate() {
        let dest = Destination::new(
            DestinationAddressBytes::from_bytes(rng.random()),
            rng.random(),
        );
        let packet = sphinx_packet::SphinxPacketBuilder::new()
            .with_version(Version::new(258))
            .with_payload_size(class.payload_len())
            .build_packet(format!("message {i}"), &route, &dest, &delays)
            .expect("sphinx packet builds")
            .to_bytes();
        assert_eq!(packet.len(), class.packet_len());
        let (version, rotation) = versions[i % versions.len()];
        frames.push(TestFrame {
            class,
            version,
            rotation,
            packet,
        });
    }
    frames
}

fn nym_keypair(secret: [u8; 32]) -> Arc<x25519::KeyPair> {
    let private = x25519::PrivateKey::from_bytes(&secret).expect("32-byte key");
    Arc::new(x25519::KeyPair::from(private))
}

/// A Nym noise config whose network view lists 127.0.0.1 with `peer_public` (or is empty).
fn nym_config(local_secret: [u8; 32], peer_public: Option<[u8; 32]>) -> NoiseConfig {
    let mut nodes = HashMap::new();
    if let Some(key) = peer_public {
        let key = VersionedNoiseKeyV1 {
            supported_version: nym_noise::config::NoiseVersion::V1,
            x25519_pubkey: x25519::PublicKey::from_byte_array(&key),
        };
        nodes.insert(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            NoiseNode::new_nym_node(key),
        );
    }
    NoiseConfig::new(
        nym_keypair(local_secret),
        NoiseNetworkView::new(nodes),
        IO_TIMEOUT,
    )
}

/// Cuts whole Nym frames off the front of `buf` into `frames`.
fn split_frames(buf: &mut Vec<u8>, frames: &mut Vec<Vec<u8>>) {
    loop {
        match frame_len(buf).expect("a frame mixplane accepts") {
            Some(len) if buf.len() >= len => frames.push(buf.drain(..len).collect()),
            _ => return,
        }
    }
}

/// mixplane's ingress: accepts one connection, tells Noise from plain TCP by its first byte,
/// runs the Noise responder if needed and returns the frames read until the peer closes,
/// with whether the connection was Noise. Reads in odd-sized pieces so frames split anywhere.
fn mixplane_ingress(listener: TcpListener) -> JoinHandle<(bool, Vec<Vec<u8>>)> {
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut link: Option<NoiseLink> = None;
        let mut first = true;
        let (mut buf, mut plain, mut wire_out) = (vec![0u8; 1237], Vec::new(), Vec::new());
        let mut frames = Vec::new();
        loop {
            let n = sock.read(&mut buf).expect("read before the timeout");
            if n == 0 {
                break;
            }
            if first && starts_noise(buf[0]) {
                link = Some(NoiseLink::responder(&MIXPLANE_SECRET).unwrap());
            }
            first = false;
            match link.as_mut() {
                Some(link) => {
                    link.receive(&buf[..n], &mut wire_out, &mut plain).unwrap();
                    sock.write_all(&wire_out).unwrap();
                    wire_out.clear();
                }
                None => plain.extend_from_slice(&buf[..n]),
            }
            split_frames(&mut plain, &mut frames);
        }
        assert!(
            plain.is_empty(),
            "{} bytes of a partial frame left",
            plain.len()
        );
        (link.is_some(), frames)
    })
}

/// Nym's egress: connects to `to`, upgrades with nym-noise as initiator and writes `frames`
/// through `NymCodec`; returns whether Noise was used.
async fn nym_egress(to: SocketAddr, config: &NoiseConfig, frames: &[TestFrame]) -> bool {
    let tcp = tokio::net::TcpStream::connect(to).await.unwrap();
    let conn = upgrade_noise_initiator(tcp, config).await.unwrap();
    let noise = conn.is_noise();
    let mut framed = Framed::new(conn, NymCodec);
    for f in frames {
        framed.feed(f.nym()).await.unwrap();
    }
    framed.close().await.unwrap();
    noise
}

async fn nym_to_mixplane(view_has_mixplane: bool) {
    let frames = test_frames(1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    let ours = mixplane_ingress(listener);
    let peer = view_has_mixplane.then(|| public_key(&MIXPLANE_SECRET));
    let config = nym_config(NYM_SECRET, peer);
    let nym_used_noise = nym_egress(to, &config, &frames).await;
    let (we_used_noise, got) = ours.join().unwrap();
    assert_eq!(nym_used_noise, view_has_mixplane);
    assert_eq!(we_used_noise, view_has_mixplane);
    let want: Vec<Vec<u8>> = frames.iter().map(TestFrame::bytes).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "frames differ");
}

#[tokio::test]
async fn nym_noise_initiator_to_mixplane_responder() {
    nym_to_mixplane(true).await;
}

#[tokio::test]
async fn nym_plain_tcp_to_mixplane_on_the_same_listener() {
    nym_to_mixplane(false).await;
}

/// mixplane's egress: connects to `to`, runs the Noise initiator against `responder_public`
/// (or writes plain frames when `None`), sends `frames` and closes its write side.
fn mixplane_egress(
    to: SocketAddr,
    responder_public: Option<[u8; 32]>,
    frames: Vec<Vec<u8>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut sock = TcpStream::connect(to).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let stream: Vec<u8> = frames.concat();
        let Some(remote) = responder_public else {
            sock.write_all(&stream).unwrap();
            sock.shutdown(Shutdown::Write).unwrap();
            return;
        };
        let mut wire = Vec::new();
        let mut link = NoiseLink::initiator(&MIXPLANE_SECRET, &remote, &mut wire).unwrap();
        sock.write_all(&wire).unwrap();
        let (mut buf, mut plain) = (vec![0u8; 512], Vec::new());
        while !link.is_established() {
            let n = sock
                .read(&mut buf)
                .expect("handshake reply before the timeout");
            assert!(n > 0, "responder closed during the handshake");
            wire.clear();
            link.receive(&buf[..n], &mut wire, &mut plain).unwrap();
            sock.write_all(&wire).unwrap();
        }
        assert!(plain.is_empty());
        // one send per 5000-byte piece, so Noise frames cut Nym frames anywhere
        for piece in stream.chunks(5000) {
            wire.clear();
            link.send(piece, &mut wire).unwrap();
            sock.write_all(&wire).unwrap();
        }
        sock.shutdown(Shutdown::Write).unwrap();
    })
}

/// Nym's ingress: accepts one connection, upgrades it with nym-noise as responder and decodes
/// frames with `NymCodec` until the peer closes; returns them as bytes, with whether Noise
/// was used.
async fn nym_ingress(
    listener: tokio::net::TcpListener,
    config: NoiseConfig,
) -> (bool, Vec<Vec<u8>>) {
    let (tcp, _) = listener.accept().await.unwrap();
    let conn = upgrade_noise_responder(tcp, &config).await.unwrap();
    let noise = conn.is_noise();
    let mut framed = Framed::new(conn, NymCodec);
    let mut frames = Vec::new();
    while let Some(frame) = tokio::time::timeout(IO_TIMEOUT, framed.next())
        .await
        .expect("a frame or the end before the timeout")
    {
        let frame = frame.expect("NymCodec decodes mixplane's frame");
        let h = frame.header();
        let mut bytes = vec![
            h.packet_version.as_u8(),
            h.packet_size as u8,
            h.packet_type as u8,
        ];
        if !h.packet_version.is_initial() {
            bytes.push(h.key_rotation as u8);
        }
        bytes.extend_from_slice(&frame.packet().to_bytes().unwrap());
        frames.push(bytes);
    }
    (noise, frames)
}

async fn mixplane_to_nym(view_has_mixplane: bool) {
    let frames = test_frames(2);
    let want: Vec<Vec<u8>> = frames.iter().map(TestFrame::bytes).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = listener.local_addr().unwrap();
    // nym-node's responder speaks Noise only to IPs its view lists (any key will do)
    let view = view_has_mixplane.then(|| public_key(&MIXPLANE_SECRET));
    let config = nym_config(NYM_SECRET, view);
    let nym_public = config_public(NYM_SECRET);
    let ours = mixplane_egress(to, view_has_mixplane.then_some(nym_public), want.clone());
    let (nym_used_noise, got) = nym_ingress(listener, config).await;
    ours.join().unwrap();
    assert_eq!(nym_used_noise, view_has_mixplane);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "frames differ");
}

/// Nym's own idea of the public key of `secret` (checks mixplane's derivation too).
fn config_public(secret: [u8; 32]) -> [u8; 32] {
    let nym = nym_keypair(secret).public_key().to_bytes();
    assert_eq!(nym, public_key(&secret));
    nym
}

#[tokio::test]
async fn mixplane_noise_initiator_to_nym_responder() {
    mixplane_to_nym(true).await;
}

#[tokio::test]
async fn mixplane_plain_tcp_to_nym_responder_fallback() {
    mixplane_to_nym(false).await;
}

#[tokio::test]
async fn wrong_responder_key_fails_against_nym() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = listener.local_addr().unwrap();
    let config = nym_config(NYM_SECRET, Some(public_key(&MIXPLANE_SECRET)));
    let ours = std::thread::spawn(move || {
        let mut sock = TcpStream::connect(to).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut wire = Vec::new();
        let wrong = public_key(&[0x77; 32]);
        NoiseLink::initiator(&MIXPLANE_SECRET, &wrong, &mut wire).unwrap();
        sock.write_all(&wire).unwrap();
        let mut buf = [0u8; 64];
        // Nym's responder fails the handshake and drops the connection: EOF or reset
        matches!(sock.read(&mut buf), Ok(0) | Err(_))
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let result = upgrade_noise_responder(tcp, &config).await;
    assert!(result.is_err(), "nym accepted a handshake for another key");
    drop(result);
    assert!(ours.join().unwrap(), "mixplane got a handshake reply");
}
