//! The control plane around a real node: key rotation under continuous load loses no valid
//! packet, and the metrics endpoint is scraped and parsed over HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mixplane_control::admin::AdminServer;
use mixplane_control::keys::{self, KeyMaterial, StoredKeys};
use mixplane_control::metrics;
use mixplane_control::rotation::{Live, Schedule, Step};
use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::plane::{Admin, ControlPlane};
use mixplane_dataplane::sphinx::build::{self, FinalPadding, Hop, PacketSpec};
use mixplane_dataplane::sphinx::{
    DropReason, FrameHeader, KeyRotation, NodeKeys, SizeClass, SphinxKey,
};

/// The (rotation id, secret) pairs a client currently builds packets for.
type LiveKeys = Vec<(u32, [u8; 32])>;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mixplane-cp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A frame for the node holding `secret` (rotation `rot`), forwarding to `next`.
fn frame(secret: &[u8; 32], rot: u32, next: SocketAddr, seq: u64) -> Vec<u8> {
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
    // the sequence number goes in bytes 1..9: X25519 clamping clears the low bits of byte 0
    let mut x = [0u8; 32];
    x[1..9].copy_from_slice(&seq.to_le_bytes());
    x[10] = rot as u8;
    let spec = PacketSpec {
        route: &route,
        delays_ns: &[0, 0],
        destination: [0; 32],
        identifier: [0; 16],
        version: 258,
        payload_size: SizeClass::Regular.payload_len(),
        plaintext: b"rotation",
        initial_secret: x,
        padding: FinalPadding::Seed(x),
    };
    FrameHeader::v8(SizeClass::Regular, KeyRotation::of_rotation_id(rot))
        .frame(&build::build_packet(&spec).unwrap())
}

struct Setup {
    plane: Arc<ControlPlane>,
    keys_dir: PathBuf,
    cap: UdpSocket,
    cap_addr: SocketAddr,
}

fn setup(name: &str, schedule: Option<Schedule>, first_rotation: u32) -> Setup {
    let dir = tmpdir(name);
    let keys_dir = dir.join("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let k0 = KeyMaterial::generate(first_rotation);
    keys::write_key(
        &keys_dir.join(keys::PRIMARY_FILE),
        k0.secret(),
        k0.rotation_id(),
    )
    .unwrap();
    let stored = keys::load_keys(&keys_dir).unwrap();
    let config = NodeConfig {
        io: IoBackendKind::Mmsg,
        replay_expected: 200_000,
        replay_dir: Some(dir.join("replay")),
        slab_small: 8192,
        ..NodeConfig::default()
    };
    let node = Node::start(
        config.clone(),
        Arc::new(NodeKeys::single(SphinxKey::from_secret(
            *k0.secret(),
            k0.rotation_id(),
        ))),
    )
    .unwrap();
    let cap = UdpSocket::bind("127.0.0.1:0").unwrap();
    cap.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let cap_addr = cap.local_addr().unwrap();
    let plane = Arc::new(ControlPlane::new(
        node,
        config,
        keys_dir.clone(),
        stored,
        schedule,
    ));
    Setup {
        plane,
        keys_dir,
        cap,
        cap_addr,
    }
}

fn drain(cap: &UdpSocket, want: u64, within: Duration) -> u64 {
    let mut got = 0;
    let mut buf = vec![0u8; 4096];
    let end = Instant::now() + within;
    while got < want && Instant::now() < end {
        if cap.recv(&mut buf).is_ok() {
            got += 1;
        }
    }
    got
}

#[test]
fn rotation_under_continuous_load_loses_no_valid_packet() {
    // epochs of 60 s, keys valid 4 epochs; time is driven by hand through tick()
    let s = Schedule {
        genesis: 0,
        epoch_length: 60,
        validity_epochs: 4,
    };
    let t = |epoch: u64| epoch * 60 + 1;
    let su = setup("rot", Some(s), 0);
    let plane = su.plane.clone();
    assert_eq!(plane.tick(t(1)).unwrap(), Step::Nothing);
    let to = plane.node().local_addr();
    let key_of = |dir: &PathBuf, rot: u32| -> [u8; 32] {
        let k: StoredKeys = keys::load_keys(dir).unwrap();
        std::iter::once(k.primary)
            .chain(k.secondary)
            .find(|m| m.rotation_id() == rot)
            .map(|m| *m.secret())
            .unwrap()
    };
    let k0 = key_of(&su.keys_dir, 0);
    // count what the node forwards, concurrently (a plain socket's buffer would overflow)
    let received = Arc::new(AtomicU64::new(0));
    let stop_rx = Arc::new(AtomicBool::new(false));
    let cap = su.cap.try_clone().unwrap();
    let counter = {
        let (received, stop_rx) = (received.clone(), stop_rx.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stop_rx.load(Ordering::SeqCst) {
                if cap.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    // A sender keeps sending packets for the live keys while rotation steps happen.
    let live_keys: Arc<Mutex<LiveKeys>> = Arc::new(Mutex::new(vec![(0, k0)]));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (live_keys, sent, stop) = (live_keys.clone(), sent.clone(), stop.clone());
        let next = su.cap_addr;
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let keys = live_keys.lock().unwrap().clone();
                for (rot, secret) in keys {
                    seq += 1;
                    sock.send_to(&frame(&secret, rot, next, seq), to).unwrap();
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let settle = || std::thread::sleep(Duration::from_millis(150));
    settle();
    // epoch 3: pre-announce key 1; the sender starts using it too
    assert_eq!(plane.tick(t(3)).unwrap(), Step::PreAnnounce(1));
    assert_eq!(
        plane.live(),
        Live {
            primary: 0,
            secondary: Some(1)
        }
    );
    let k1 = key_of(&su.keys_dir, 1);
    live_keys.lock().unwrap().push((1, k1));
    settle();
    // epoch 4: swap; both keys still live
    assert_eq!(plane.tick(t(4)).unwrap(), Step::Swap);
    assert_eq!(
        plane.live(),
        Live {
            primary: 1,
            secondary: Some(0)
        }
    );
    settle();
    // before the purge, the sender stops using key 0 (as clients do once the old key is gone)
    live_keys.lock().unwrap().retain(|(r, _)| *r == 1);
    settle();
    assert_eq!(plane.tick(t(5)).unwrap(), Step::Purge);
    assert_eq!(
        plane.live(),
        Live {
            primary: 1,
            secondary: None
        }
    );
    settle();
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let total = sent.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::SeqCst) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop_rx.store(true, Ordering::SeqCst);
    counter.join().unwrap();
    let got = received.load(Ordering::SeqCst);
    let drops: u64 = plane
        .node()
        .counters()
        .iter()
        .map(|c| c.total_drops())
        .sum();
    assert!(total > 200, "load was continuous: {total} packets");
    assert_eq!(
        drops, 0,
        "no valid packet dropped across pre-announce, swap and purge"
    );
    assert_eq!(got, total, "every packet forwarded");

    // after the purge, packets for key 0 are dropped
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&frame(&k0, 0, su.cap_addr, 1_000_000), to)
        .unwrap(); // key 0 is gone
    let deadline = Instant::now() + Duration::from_secs(3);
    let dropped = || {
        plane
            .node()
            .counters()
            .iter()
            .map(|c| c.sphinx_drops(DropReason::NoKeyForRotation))
            .sum::<u64>()
    };
    while dropped() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(dropped(), 1);
    // the key files follow: only the primary is left
    assert!(!su.keys_dir.join(keys::SECONDARY_FILE).exists());
    assert_eq!(
        keys::load_keys(&su.keys_dir).unwrap().primary.rotation_id(),
        1
    );
    // schedule mode refuses manual rotation
    assert!(plane.rotate_now().is_err());
    drop(plane);
    let plane = Arc::try_unwrap(su.plane).ok().unwrap();
    plane.into_node().shutdown().unwrap();
}

fn http(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    (
        out[9..12].parse().unwrap(),
        out.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

/// The admin API over `su`'s plane with `token`, its address, the node's address, the node's
/// primary secret and a client socket.
fn admin_and_client(
    su: &Setup,
    token: &str,
) -> (AdminServer, SocketAddr, SocketAddr, [u8; 32], UdpSocket) {
    let srv = AdminServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Some(token.to_string()),
        Arc::new(Admin(su.plane.clone())),
    )
    .unwrap();
    let a = srv.local_addr();
    let to = su.plane.node().local_addr();
    let k = *keys::load_keys(&su.keys_dir).unwrap().primary.secret();
    (srv, a, to, k, UdpSocket::bind("127.0.0.1:0").unwrap())
}

#[test]
fn metrics_are_scraped_and_parsed_and_manual_rotation_works() {
    let su = setup("metrics", None, 7);
    let token = "test-token-0123456789".to_string();
    let (srv, a, to, k7, sock) = admin_and_client(&su, &token);
    for i in 0..30 {
        sock.send_to(&frame(&k7, 7, su.cap_addr, i), to).unwrap();
    }
    sock.send_to(b"garbage", to).unwrap();
    let got = drain(&su.cap, 30, Duration::from_secs(5));
    for r in DropReason::ALL {
        let n: u64 = su
            .plane
            .node()
            .counters()
            .iter()
            .map(|c| c.sphinx_drops(r))
            .sum();
        if n > 0 {
            eprintln!("drop {r:?}: {n}");
        }
    }
    for r in mixplane_dataplane::counters::NodeDrop::ALL {
        let n: u64 = su
            .plane
            .node()
            .counters()
            .iter()
            .map(|c| c.node_drops(r))
            .sum();
        if n > 0 {
            eprintln!("node drop {r:?}: {n}");
        }
    }
    assert_eq!(got, 30);
    std::thread::sleep(Duration::from_millis(100));

    let (code, body) = http(
        a,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200);
    let m = metrics::parse(&body).expect("valid Prometheus text");
    let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    assert_eq!(
        get("mixplane_packets_received_total{worker=\"0\"}"),
        Some(31.0)
    );
    assert_eq!(get("mixplane_packets_sent_total{worker=\"0\"}"), Some(30.0));
    assert_eq!(
        get("mixplane_packets_dropped_total{worker=\"0\",reason=\"unknown_frame_version\"}"),
        Some(1.0)
    );
    assert_eq!(get("mixplane_key_rotation_id{slot=\"primary\"}"), Some(7.0));
    assert_eq!(
        get("mixplane_residence_seconds_count{worker=\"0\"}"),
        Some(30.0)
    );
    assert!(get("mixplane_replay_filter_fill_ratio{rotation=\"7\"}").unwrap() > 0.0);
    assert!(get("mixplane_unwrap_seconds_per_packet_count{worker=\"0\"}").unwrap() >= 1.0);
    // the worker timed every phase it went through: receiving, processing, holding, sending
    for phase in ["receive", "process", "hold", "release"] {
        let k = format!("mixplane_worker_busy_seconds_total{{worker=\"0\",phase=\"{phase}\"}}");
        assert!(get(&k).unwrap() > 0.0, "{k}");
    }

    let (code, status) = http(
        a,
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200);
    assert!(status.contains("\"rotation_id\":7"), "{status}");

    // manual rotation through the API: the new key serves at once, the old one stays live
    let (code, body) = http(
        a,
        &format!(
            "POST /keys/rotate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        su.plane.live(),
        Live {
            primary: 8,
            secondary: Some(7)
        }
    );
    let k8 = *keys::load_keys(&su.keys_dir).unwrap().primary.secret();
    std::thread::sleep(Duration::from_millis(50)); // workers pick the snapshot up between batches
    for i in 100..110 {
        sock.send_to(&frame(&k8, 8, su.cap_addr, i), to).unwrap();
        sock.send_to(&frame(&k7, 7, su.cap_addr, i + 1000), to)
            .unwrap();
    }
    assert_eq!(drain(&su.cap, 20, Duration::from_secs(5)), 20);
    srv.stop();
    let plane = Arc::try_unwrap(su.plane).ok().unwrap();
    plane.into_node().shutdown().unwrap();
}

/// A one-node skimmed-nodes document whose node listens on `addr`.
fn topology_doc(addr: SocketAddr) -> String {
    format!(
        r#"{{"nodes":{{"pagination":{{}},"data":[{{"node_id":1,"ed25519_identity_pubkey":"x","ip_addresses":["{}"],"mix_port":{},"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":{{"Mixnode":{{"layer":2}}}}}}]}}}}"#,
        addr.ip(),
        addr.port()
    )
}

fn node_drops(plane: &ControlPlane, r: mixplane_dataplane::counters::NodeDrop) -> u64 {
    plane
        .node()
        .counters()
        .iter()
        .map(|c| c.node_drops(r))
        .sum()
}

#[test]
fn routing_filter_follows_topology_pushed_over_the_admin_api() {
    use mixplane_dataplane::counters::NodeDrop;
    let su = setup("topology", None, 3);
    let token = "topology-token-0123456789".to_string();
    let (srv, a, to, k, sock) = admin_and_client(&su, &token);
    su.plane.set_routing_filter(true);

    // filter on but no topology yet: nothing is filtered
    for i in 0..10 {
        sock.send_to(&frame(&k, 3, su.cap_addr, i), to).unwrap();
    }
    assert_eq!(drain(&su.cap, 10, Duration::from_secs(5)), 10);

    // a topology without the capture socket: its packets are dropped, counted by reason
    let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let body = topology_doc(elsewhere);
    let post = |body: &str| {
        http(
            a,
            &format!(
                "POST /topology HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let (code, reply) = post(&body);
    assert_eq!(code, 200, "{reply}");
    assert!(reply.contains("\"version\":1"), "{reply}");
    std::thread::sleep(Duration::from_millis(50));
    for i in 10..30 {
        sock.send_to(&frame(&k, 3, su.cap_addr, i), to).unwrap();
    }
    assert_eq!(drain(&su.cap, 1, Duration::from_millis(700)), 0);
    let end = Instant::now() + Duration::from_secs(5);
    while node_drops(&su.plane, NodeDrop::UnknownNextHop) < 20 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(node_drops(&su.plane, NodeDrop::UnknownNextHop), 20);

    // a malformed document is refused and the topology kept
    let (code, _) = post("{\"nodes\": 5}");
    assert_eq!(code, 400);
    assert_eq!(su.plane.topology().1, 1);

    // pushed while packets flow: once it lands, packets to the new node pass
    let (code, reply) = post(&topology_doc(su.cap_addr));
    assert_eq!(code, 200, "{reply}");
    std::thread::sleep(Duration::from_millis(50));
    for i in 30..50 {
        sock.send_to(&frame(&k, 3, su.cap_addr, i), to).unwrap();
    }
    assert_eq!(drain(&su.cap, 20, Duration::from_secs(5)), 20);
    assert_eq!(node_drops(&su.plane, NodeDrop::UnknownNextHop), 20);
    let (_, status) = http(
        a,
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(status.contains("\"routing_filter\":true"), "{status}");
    srv.stop();
    let plane = Arc::try_unwrap(su.plane).ok().unwrap();
    plane.into_node().shutdown().unwrap();
}
