//! Nym's own code against mixplane's nym-node surface: `nym-node-requests`' API client (what
//! nym-api uses to describe a node) queries a running node's HTTP API, host-information passes
//! `verify_host_information()`, and a verloc exchange built and checked with Nym's ed25519
//! (`nym-crypto`), following `common/verloc/src/measurements/packet.rs` of nymtech/nym (the
//! verloc code is not published as a crate).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use mixplane_control::keys::{self, KeyMaterial, StoredKeys};
use mixplane_control::nym_http::{self, HostInfo, HostInfoHandle, NymApi, NymHttpServer};
use mixplane_control::verloc::{self, VerlocLimits, VerlocResponder};
use mixplane_dataplane::counters::nym_packets_stats;
use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::plane::ControlPlane;
use mixplane_dataplane::sphinx::build::{self, FinalPadding, Hop, PacketSpec};
use mixplane_dataplane::sphinx::{FrameHeader, KeyRotation, NodeKeys, SizeClass, SphinxKey};
use nym_crypto::asymmetric::ed25519 as nym_ed25519;
use nym_http_api_client::ApiClient;
use nym_node_requests::api::Client;
use nym_node_requests::api::client::NymNodeApiClientExt;
use nym_node_requests::api::v1::metrics::models::packets::PacketsStats;
use nym_node_requests::routes::api::v1::metrics::packets_stats_absolute;

/// A forward frame for the node holding `secret` (rotation `rot`), on to `next`.
fn frame(secret: &[u8; 32], rot: u32, next: SocketAddr, seq: u8) -> Vec<u8> {
    let route = [
        Hop {
            address: "127.0.0.1:1".parse().unwrap(),
            public_key: build::public_key(secret),
        },
        Hop {
            address: next,
            public_key: build::public_key(&[9; 32]),
        },
    ];
    let mut x = [0u8; 32];
    x[1] = seq;
    let spec = PacketSpec {
        route: &route,
        delays_ns: &[0, 0],
        destination: [0; 32],
        identifier: [0; 16],
        version: 258,
        payload_size: SizeClass::Regular.payload_len(),
        plaintext: b"nym-http",
        initial_secret: x,
        padding: FinalPadding::Seed(x),
    };
    FrameHeader::v8(SizeClass::Regular, KeyRotation::of_rotation_id(rot))
        .frame(&build::build_packet(&spec).unwrap())
}

/// A node with a primary key (rotation 7) and the next rotation's key (8), and a socket that
/// takes what it forwards.
fn node() -> (ControlPlane, KeyMaterial, UdpSocket) {
    let dir = std::env::temp_dir().join(format!("mixplane-nymhttp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stored = StoredKeys {
        primary: KeyMaterial::generate(7),
        secondary: Some(KeyMaterial::generate(8)),
    };
    let config = NodeConfig {
        io: IoBackendKind::Mmsg,
        replay_expected: 10_000,
        replay_dir: Some(dir.join("replay")),
        ..NodeConfig::default()
    };
    let keys = NodeKeys {
        primary: SphinxKey::from_secret(*stored.primary.secret(), 7),
        secondary: Some(SphinxKey::from_secret(
            *stored.secondary.as_ref().unwrap().secret(),
            8,
        )),
    };
    let node = Node::start(config.clone(), Arc::new(keys)).unwrap();
    let primary = stored.primary.clone();
    let plane = ControlPlane::new(node, config, dir.join("keys"), stored, None);
    let cap = UdpSocket::bind("127.0.0.1:0").unwrap();
    cap.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    (plane, primary, cap)
}

/// Sends three packets, one of them twice, and a garbage datagram; waits for the two to come
/// out on `cap`.
fn traffic(plane: &ControlPlane, key: &KeyMaterial, cap: &UdpSocket) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = plane.node().local_addr();
    let next = cap.local_addr().unwrap();
    let frames: Vec<_> = (1..=3).map(|i| frame(key.secret(), 7, next, i)).collect();
    for f in frames.iter().chain([&frames[0]]) {
        sock.send_to(f, to).unwrap();
    }
    sock.send_to(&[8, 1, 0, 2, 0xde, 0xad], to).unwrap();
    let mut got = 0;
    let mut buf = [0u8; 4096];
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while got < 3 && std::time::Instant::now() < end {
        if cap.recv(&mut buf).is_ok() {
            got += 1;
        }
    }
    assert_eq!(got, 3, "forwarded packets");
}

#[test]
fn nym_apis_client_describes_a_mixplane_node() {
    let (plane, primary, cap) = node();
    traffic(&plane, &primary, &cap);
    let identity = Arc::new(ed25519_dalek::SigningKey::from_bytes(&[42; 32]));
    let (p, s) = plane.public_keys();
    let noise = keys::NoiseKey::generate();
    let host = HostInfoHandle::new(HostInfo {
        ip_addresses: vec!["203.0.113.7".parse().unwrap()],
        hostname: Some("mix.example.net".into()),
        primary: p,
        secondary: s,
        noise: Some(noise.public_bytes()),
    });
    let counters = plane.node().counters().to_vec();
    let api = NymApi {
        identity: identity.clone(),
        host,
        stats: Arc::new(move || nym_packets_stats(&counters)),
    };
    let srv = NymHttpServer::start(
        "127.0.0.1:0".parse().unwrap(),
        api,
        nym_http::DEFAULT_LIMITS,
    )
    .unwrap();
    let url = format!("http://{}", srv.local_addr());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new_url(url.as_str(), Some(Duration::from_secs(5))).unwrap();
        let health = client.get_health().await.unwrap();
        assert!(health.status.is_up());

        let info = client.get_host_information().await.unwrap();
        assert!(
            info.verify_host_information(),
            "signature over host information"
        );
        let id = nym_ed25519::PublicKey::from_bytes(identity.verifying_key().as_bytes()).unwrap();
        assert_eq!(info.keys.ed25519_identity, id);
        assert_eq!(info.keys.primary_x25519_sphinx_key.rotation_id, 7);
        assert_eq!(
            info.keys.primary_x25519_sphinx_key.public_key.to_bytes(),
            primary.public()
        );
        let pre = info.keys.pre_announced_x25519_sphinx_key.clone().unwrap();
        assert_eq!(
            (pre.rotation_id, pre.public_key.to_bytes()),
            (8, s.unwrap().public_key)
        );
        let nk = info.keys.x25519_versioned_noise.unwrap();
        assert_eq!(nk.x25519_pubkey.to_bytes(), noise.public_bytes());
        assert!(info.check_ips());
        assert_eq!(info.hostname.as_deref(), Some("mix.example.net"));
        // the check can fail: a changed field no longer verifies
        let mut forged = info.clone();
        forged.data.hostname = Some("other.example.net".into());
        assert!(!forged.verify_host_information());

        let build = client.get_build_information().await.unwrap();
        assert_eq!(build.binary_name, "mixplane");
        assert_eq!(build.build_version, env!("CARGO_PKG_VERSION"));

        let roles = client.get_roles().await.unwrap();
        assert!(roles.mixnode_enabled && !roles.gateway_enabled);
        assert!(!roles.can_operate_exit_gateway());

        let ws = client.get_mixnet_websockets().await.unwrap();
        assert_eq!((ws.ws_port, ws.wss_port), (9000, None));
        let aux = client.get_auxiliary_details().await.unwrap();
        assert!(aux.location.is_none());

        let stats: PacketsStats = client
            .get_json_from(packets_stats_absolute())
            .await
            .unwrap();
        let i = stats.ingress_mixing;
        assert_eq!(i.forward_hop_packets_received, 3);
        assert_eq!(i.replayed_packets_received, 1);
        assert_eq!(i.malformed_packets_received, 1);
        assert_eq!(stats.egress_mixing.forward_hop_packets_sent, 3);
    });
    srv.stop();
    plane.into_node().shutdown().unwrap();
}

#[test]
fn verloc_exchange_checks_both_signatures_with_nyms_ed25519() {
    let node_key = Arc::new(ed25519_dalek::SigningKey::from_bytes(&[11; 32]));
    let r = VerlocResponder::start(
        "127.0.0.1:0".parse().unwrap(),
        node_key.clone(),
        VerlocLimits::default(),
    )
    .unwrap();
    // the measuring node, with Nym's key types
    let nym_key = nym_ed25519::PrivateKey::from_bytes(&[12; 32]).unwrap();
    let nym_pub = nym_key.public_key();
    let responder =
        nym_ed25519::PublicKey::from_bytes(node_key.verifying_key().as_bytes()).unwrap();
    let mut s = TcpStream::connect(r.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for seq in [1u64, 2, u64::MAX - 1] {
        // EchoPacket::new: sign seq || sender
        let mut echo: Vec<u8> = seq.to_be_bytes().to_vec();
        echo.extend_from_slice(&nym_pub.to_bytes());
        let sig = nym_key.sign(&echo);
        echo.extend_from_slice(&sig.to_bytes());
        assert_eq!(echo.len(), verloc::ECHO_LEN);
        s.write_all(&echo).unwrap();
        let mut reply = [0u8; verloc::REPLY_LEN];
        s.read_exact(&mut reply).unwrap();
        // ReplyPacket::try_from_bytes: the echo inside, then the responder's signature over it
        assert_eq!(&reply[..verloc::ECHO_LEN], &echo[..]);
        let inner = nym_ed25519::Signature::from_bytes(&reply[40..104]).unwrap();
        nym_pub.verify(&reply[..40], &inner).unwrap();
        let outer = nym_ed25519::Signature::from_bytes(&reply[104..]).unwrap();
        responder.verify(&reply[..104], &outer).unwrap();
        // and it is not some other key's signature
        assert!(nym_pub.verify(&reply[..104], &outer).is_err());
    }
    // an echo signed by a different key than the one it names: no reply, connection closed
    let other = nym_ed25519::PrivateKey::from_bytes(&[13; 32]).unwrap();
    let mut echo: Vec<u8> = 5u64.to_be_bytes().to_vec();
    echo.extend_from_slice(&nym_pub.to_bytes());
    let sig = other.sign(&echo);
    echo.extend_from_slice(&sig.to_bytes());
    s.write_all(&echo).unwrap();
    let mut buf = [0u8; verloc::REPLY_LEN];
    assert!(matches!(s.read(&mut buf), Ok(0)));
    let c = r.counters();
    assert_eq!(c.bad_echoes.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        c.echoes_answered.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    r.stop();
}
