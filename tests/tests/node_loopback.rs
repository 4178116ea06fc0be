//! Integration tests: real nodes on loopback with real sockets, fed packets built by
//! sphinx-packet 0.8.0.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use mixplane_dataplane::counters::WorkerCounters;
use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::sink::{self, SinkAddr};
use mixplane_dataplane::sphinx::{
    DropReason, FrameHeader, KeyRotation, NodeKeys, SizeClass, SphinxKey, address,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sphinx_packet::header::delays::Delay;
use sphinx_packet::route::{
    Destination, DestinationAddressBytes, Node as SpNode, NodeAddressBytes,
};
use sphinx_packet::version::Version;
use x25519_dalek::{PublicKey, StaticSecret};

/// The socket-overflow tests flood loopback with 40,000 datagrams and keep a worker busy for
/// seconds; the other tests expect every packet through, so they do not run beside a flood:
/// they share this lock, a flood takes it alone.
static LOOPBACK: RwLock<()> = RwLock::new(());

/// A share of loopback: held by every test that is not a flood.
fn quiet_loopback() -> RwLockReadGuard<'static, ()> {
    LOOPBACK.read().unwrap_or_else(|e| e.into_inner())
}

struct TestNode {
    node: Node,
    secret: [u8; 32],
    rotation: KeyRotation,
}

impl TestNode {
    fn start(rng: &mut StdRng, io: IoBackendKind, sink: Option<SinkAddr>) -> TestNode {
        Self::start_with(rng.random(), io, sink, None)
    }

    fn start_with(
        secret: [u8; 32],
        io: IoBackendKind,
        sink: Option<SinkAddr>,
        replay_dir: Option<std::path::PathBuf>,
    ) -> TestNode {
        let key = SphinxKey::from_secret(secret, 3);
        let rotation = key.parity();
        let node = Node::start(
            NodeConfig {
                io,
                sink,
                replay_dir,
                slab_small: 4096,
                slab_large: 64,
                wheel_capacity: 8192,
                replay_expected: 100_000,
                ..NodeConfig::default()
            },
            Arc::new(NodeKeys::single(key)),
        )
        .expect("node starts");
        TestNode {
            node,
            secret,
            rotation,
        }
    }

    fn sp(&self) -> SpNode {
        SpNode {
            address: NodeAddressBytes::from_bytes(address::encode::<32>(self.node.local_addr())),
            pub_key: PublicKey::from(&StaticSecret::from(self.secret)),
        }
    }

    fn frame(&self, class: SizeClass, packet: &[u8]) -> Vec<u8> {
        FrameHeader::v8(class, self.rotation).frame(packet)
    }

    fn counters(&self) -> &[Arc<WorkerCounters>] {
        self.node.counters()
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.counters().iter().map(|c| c.sphinx_drops(r)).sum()
    }

    fn wait_drops(&self, r: DropReason, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.drops(r) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.drops(r)
    }
}

/// A next hop we control: a plain socket that records what arrives and when.
fn capture() -> (UdpSocket, SocketAddr, SpNode) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let a = s.local_addr().unwrap();
    let n = SpNode {
        address: NodeAddressBytes::from_bytes(address::encode::<32>(a)),
        pub_key: PublicKey::from(&StaticSecret::from([42u8; 32])),
    };
    (s, a, n)
}

fn recv_until(sock: &UdpSocket, want: usize, within: Duration) -> Vec<(Instant, Vec<u8>)> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while got.len() < want && Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push((Instant::now(), buf[..n].to_vec()));
        }
    }
    got
}

fn build(
    route: &[SpNode],
    delays: &[Delay],
    class: SizeClass,
    plaintext: &[u8],
    rng: &mut StdRng,
) -> Vec<u8> {
    let dest = Destination::new(
        DestinationAddressBytes::from_bytes(rng.random()),
        rng.random(),
    );
    sphinx_packet::SphinxPacketBuilder::new()
        .with_version(Version::new(258))
        .with_payload_size(class.payload_len())
        .build_packet(plaintext, route, &dest, delays)
        .unwrap()
        .to_bytes()
}

/// SURB-ACK (first hop = `ack_to`, then a 386-byte ack packet) followed by the message.
fn plaintext(ack_to: SocketAddr, ack_packet: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut v = address::encode::<19>(ack_to).to_vec();
    v.extend_from_slice(ack_packet);
    v.extend_from_slice(msg);
    v
}

fn four_hop_route(io: IoBackendKind) {
    let mut rng = StdRng::seed_from_u64(1);
    let sink_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink_sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let sink_addr = sink_sock.local_addr().unwrap();
    let (ack_sock, ack_addr, _) = capture();
    let nodes: Vec<TestNode> = (0..4)
        .map(|i| TestNode::start(&mut rng, io, (i == 3).then_some(SinkAddr::Udp(sink_addr))))
        .collect();
    let route: Vec<SpNode> = nodes.iter().map(|n| n.sp()).collect();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let count = 40;
    let mut expected = Vec::new();
    let mut acks = Vec::new();
    for i in 0..count {
        let class = if i % 4 == 0 {
            SizeClass::Ext8
        } else {
            SizeClass::Regular
        };
        let delays: Vec<Delay> = (0..4)
            .map(|_| Delay::new_from_millis(rng.random_range(0..5)))
            .collect();
        let ack_packet: Vec<u8> = (0..SizeClass::Ack.packet_len())
            .map(|_| rng.random())
            .collect();
        let msg: Vec<u8> = format!("message {i} ").repeat(i + 1).into_bytes();
        let p = build(
            &route,
            &delays,
            class,
            &plaintext(ack_addr, &ack_packet, &msg),
            &mut rng,
        );
        client
            .send_to(&nodes[0].frame(class, &p), nodes[0].node.local_addr())
            .unwrap();
        expected.push(msg);
        acks.push(ack_packet);
    }
    let got = recv_until(&sink_sock, count, Duration::from_secs(10));
    let mut messages: Vec<Vec<u8>> = got
        .iter()
        .map(|(_, d)| sink::parse(d).expect("sink datagram").message.to_vec())
        .collect();
    messages.sort();
    expected.sort();
    if messages != expected {
        use std::sync::atomic::Ordering::Relaxed;
        let nodes: Vec<String> = nodes
            .iter()
            .map(|n| {
                let c = n.counters();
                let rx: u64 = c.iter().map(|w| w.rx_datagrams.load(Relaxed)).sum();
                let drops: u64 = c.iter().map(|w| w.total_drops()).sum();
                format!("received {rx}, dropped {drops}")
            })
            .collect();
        let intact = messages.iter().filter(|m| expected.contains(m)).count();
        panic!(
            "{intact} of {count} messages arrived intact, {} datagrams at the sink ({io:?}); nodes: {nodes:?}",
            got.len()
        );
    }
    // the SURB-ACKs were sent on, framed as ack packets, to their first hop
    let got_acks = recv_until(&ack_sock, count, Duration::from_secs(5));
    let mut ack_bodies: Vec<Vec<u8>> = got_acks
        .iter()
        .map(|(_, d)| {
            let h = FrameHeader::parse(d).expect("ack frame");
            assert_eq!(h.size_class, SizeClass::Ack);
            d[h.len()..].to_vec()
        })
        .collect();
    ack_bodies.sort();
    acks.sort();
    assert_eq!(ack_bodies, acks);
    for n in nodes {
        assert_eq!(n.counters().iter().map(|w| w.total_drops()).sum::<u64>(), 0);
        n.node.shutdown().unwrap();
    }
}

#[test]
fn sphinx_packet_packets_cross_four_real_nodes_mmsg() {
    let _loopback = quiet_loopback();
    four_hop_route(IoBackendKind::Mmsg);
}

/// Whether io_uring can be set up here (seccomp-filtered containers and kernels before 6.0
/// cannot); the io_uring tests say so and pass vacuously where it cannot.
fn uring_available() -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    match mixplane_dataplane::io::uring::UringIo::new(s, 8) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("io_uring unavailable ({e}): skipping");
            false
        }
    }
}

#[test]
fn sphinx_packet_packets_cross_four_real_nodes_io_uring() {
    let _loopback = quiet_loopback();
    if uring_available() {
        four_hop_route(IoBackendKind::Uring);
    }
}

#[test]
fn auto_backend_picks_io_uring_where_it_works() {
    let _loopback = quiet_loopback();
    let mut rng = StdRng::seed_from_u64(9);
    let node = TestNode::start(&mut rng, IoBackendKind::Auto, None);
    let want = if uring_available() {
        "io_uring"
    } else {
        "recvmmsg"
    };
    assert_eq!(node.node.io_backend(), want);
    node.node.shutdown().unwrap();
}

#[test]
fn per_hop_delays_follow_the_header_mmsg() {
    let _loopback = quiet_loopback();
    per_hop_delays_follow_the_header(IoBackendKind::Mmsg);
}

#[test]
fn per_hop_delays_follow_the_header_io_uring() {
    let _loopback = quiet_loopback();
    if uring_available() {
        per_hop_delays_follow_the_header(IoBackendKind::Uring);
    }
}

fn per_hop_delays_follow_the_header(io: IoBackendKind) {
    let mut rng = StdRng::seed_from_u64(2);
    let node = TestNode::start(&mut rng, io, None);
    let (cap, _, cap_node) = capture();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for delay_ms in [0u64, 15, 60, 150] {
        let route = [node.sp(), cap_node.clone()];
        let delays = [Delay::new_from_millis(delay_ms), Delay::new_from_millis(0)];
        let p = build(&route, &delays, SizeClass::Regular, b"x", &mut rng);
        let sent = Instant::now();
        client
            .send_to(&node.frame(SizeClass::Regular, &p), node.node.local_addr())
            .unwrap();
        let got = recv_until(&cap, 1, Duration::from_secs(3));
        assert_eq!(got.len(), 1);
        let took = got[0].0.duration_since(sent);
        let want = Duration::from_millis(delay_ms);
        assert!(took >= want, "released early: {took:?} < {want:?}");
        // one 1 ms tick plus scheduling slack on a loaded 2-core CI machine
        assert!(
            took <= want + Duration::from_millis(40),
            "released late: {took:?} for {want:?}"
        );
    }
    node.node.shutdown().unwrap();
}

#[test]
fn replays_wrong_keys_and_garbage_are_counted_not_fatal_mmsg() {
    let _loopback = quiet_loopback();
    replays_wrong_keys_and_garbage_are_counted_not_fatal(IoBackendKind::Mmsg);
}

#[test]
fn replays_wrong_keys_and_garbage_are_counted_not_fatal_io_uring() {
    let _loopback = quiet_loopback();
    if uring_available() {
        replays_wrong_keys_and_garbage_are_counted_not_fatal(IoBackendKind::Uring);
    }
}

fn replays_wrong_keys_and_garbage_are_counted_not_fatal(io: IoBackendKind) {
    let mut rng = StdRng::seed_from_u64(3);
    let node = TestNode::start(&mut rng, io, None);
    let (cap, _, cap_node) = capture();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = node.node.local_addr();
    let route = [node.sp(), cap_node];
    let delays = [Delay::new_from_millis(0), Delay::new_from_millis(0)];
    let p = build(&route, &delays, SizeClass::Regular, b"once", &mut rng);
    let frame = node.frame(SizeClass::Regular, &p);
    client.send_to(&frame, to).unwrap();
    client.send_to(&frame, to).unwrap(); // replay
    // a packet built for another key
    let other = SpNode {
        address: route[0].address,
        pub_key: PublicKey::from(&StaticSecret::from(rng.random::<[u8; 32]>())),
    };
    let wrong = build(
        &[other, route[1].clone()],
        &delays,
        SizeClass::Regular,
        b"no",
        &mut rng,
    );
    client
        .send_to(&node.frame(SizeClass::Regular, &wrong), to)
        .unwrap();
    // garbage of every shape
    for len in [0usize, 1, 3, 4, 100, 2417, 2418, 9000] {
        let g: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        client.send_to(&g, to).unwrap();
    }
    let mut framed_garbage: Vec<u8> = (0..2417).map(|_| rng.random()).collect();
    FrameHeader::v8(SizeClass::Regular, node.rotation).write(&mut framed_garbage);
    client.send_to(&framed_garbage, to).unwrap();

    let got = recv_until(&cap, 2, Duration::from_secs(2));
    assert_eq!(got.len(), 1, "exactly one copy forwarded");
    assert_eq!(node.wait_drops(DropReason::Replayed, 1), 1);
    assert!(
        node.wait_drops(DropReason::BadMac, 2) >= 2,
        "wrong key and framed garbage"
    );
    let total: u64 = node.counters().iter().map(|c| c.total_drops()).sum();
    assert!(total >= 11, "every bad datagram counted: {total}");
    // still alive: a fresh packet goes through
    let p = build(&route, &delays, SizeClass::Regular, b"after", &mut rng);
    client
        .send_to(&node.frame(SizeClass::Regular, &p), to)
        .unwrap();
    assert_eq!(recv_until(&cap, 1, Duration::from_secs(2)).len(), 1);
    node.node.shutdown().unwrap();
}

#[test]
fn shutdown_drains_held_packets_mmsg() {
    let _loopback = quiet_loopback();
    shutdown_drains_held_packets(IoBackendKind::Mmsg);
}

#[test]
fn shutdown_drains_held_packets_io_uring() {
    let _loopback = quiet_loopback();
    if uring_available() {
        shutdown_drains_held_packets(IoBackendKind::Uring);
    }
}

fn shutdown_drains_held_packets(io: IoBackendKind) {
    let mut rng = StdRng::seed_from_u64(4);
    let node = TestNode::start(&mut rng, io, None);
    let (cap, _, cap_node) = capture();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let route = [node.sp(), cap_node];
    let delays = [Delay::new_from_millis(300), Delay::new_from_millis(0)];
    for i in 0..10u8 {
        let p = build(&route, &delays, SizeClass::Regular, &[i], &mut rng);
        client
            .send_to(&node.frame(SizeClass::Regular, &p), node.node.local_addr())
            .unwrap();
    }
    let held = || {
        node.counters()
            .iter()
            .map(|c| c.forwarded.load(std::sync::atomic::Ordering::Relaxed))
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while held() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(held(), 10);
    let t = Instant::now();
    node.node.shutdown().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "drain is bounded by the delays"
    );
    let got = recv_until(&cap, 10, Duration::from_secs(1));
    assert_eq!(got.len(), 10, "held packets were released before exit");
}

#[test]
fn replay_filter_survives_a_restart() {
    let _loopback = quiet_loopback();
    let mut rng = StdRng::seed_from_u64(5);
    let dir = std::env::temp_dir().join(format!("mixplane-replay-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let secret: [u8; 32] = rng.random();
    let node = TestNode::start_with(secret, IoBackendKind::Mmsg, None, Some(dir.clone()));
    let (cap, _, cap_node) = capture();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let route = [node.sp(), cap_node];
    let delays = [Delay::new_from_millis(0), Delay::new_from_millis(0)];
    let p = build(&route, &delays, SizeClass::Regular, b"once", &mut rng);
    let frame = node.frame(SizeClass::Regular, &p);
    client.send_to(&frame, node.node.local_addr()).unwrap();
    assert_eq!(recv_until(&cap, 1, Duration::from_secs(2)).len(), 1);
    node.node.shutdown().unwrap();
    assert!(
        std::fs::read_dir(&dir).unwrap().count() >= 1,
        "filter persisted"
    );

    // same key, reloaded filter: the old packet is a replay
    let node = TestNode::start_with(secret, IoBackendKind::Mmsg, None, Some(dir.clone()));
    client.send_to(&frame, node.node.local_addr()).unwrap();
    assert_eq!(node.wait_drops(DropReason::Replayed, 1), 1);
    assert!(recv_until(&cap, 1, Duration::from_millis(300)).is_empty());
    node.node.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Under a burst the socket overflows; every datagram is either received or counted as a
/// kernel drop, including drops at the end of the burst (no later datagram reports them).
fn overflow_is_accounted(io: IoBackendKind) {
    use mixplane_dataplane::counters::NodeDrop;
    use std::sync::atomic::Ordering::Relaxed;
    let mut rng = StdRng::seed_from_u64(8);
    let node = TestNode::start(&mut rng, io, None);
    let to = node.node.local_addr();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    // framed garbage: each one costs the node an X25519 before its MAC fails
    let mut g: Vec<u8> = (0..2417).map(|_| rng.random()).collect();
    FrameHeader::v8(SizeClass::Regular, node.rotation).write(&mut g);
    let sent = 40_000u64;
    for _ in 0..sent {
        client.send_to(&g, to).unwrap();
    }
    let accounted = || {
        node.counters()
            .iter()
            .map(|c| c.rx_datagrams.load(Relaxed) + c.node_drops(NodeDrop::KernelRxOverflow))
            .sum::<u64>()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while accounted() < sent && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let drops: u64 = node
        .counters()
        .iter()
        .map(|c| c.node_drops(NodeDrop::KernelRxOverflow))
        .sum();
    eprintln!("{io:?}: {drops} of {sent} dropped by the kernel");
    assert_eq!(accounted(), sent, "received + kernel drops = sent");
    node.node.shutdown().unwrap();
}

#[test]
fn socket_overflow_is_accounted_mmsg() {
    let _flood = LOOPBACK.write().unwrap_or_else(|e| e.into_inner());
    overflow_is_accounted(IoBackendKind::Mmsg);
}

#[test]
fn socket_overflow_is_accounted_io_uring() {
    let _flood = LOOPBACK.write().unwrap_or_else(|e| e.into_inner());
    if uring_available() {
        overflow_is_accounted(IoBackendKind::Uring);
    }
}
