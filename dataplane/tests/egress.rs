//! A running node applies its egress policy to every next hop and clamps (and counts) delays
//! over the cap, as nym-node does.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use mixplane_dataplane::counters::{NodeDrop, WorkerCounters};
use mixplane_dataplane::egress::EgressPolicy;
use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::sphinx::SizeClass;
use sphinx_packet::header::delays::Delay;

fn start(me: &TestNode, egress: EgressPolicy) -> Node {
    Node::start(
        NodeConfig {
            io: IoBackendKind::Mmsg,
            egress,
            slab_small: 1024,
            slab_large: 16,
            wheel_capacity: 1024,
            replay_expected: 10_000,
            ..NodeConfig::default()
        },
        me.keys(),
    )
    .expect("node starts")
}

/// Sends the node one packet whose next hop is `next` after `delay_ns`.
fn send_via(node: &Node, me: &TestNode, next: SocketAddr, delay_ns: u64, seed: u64) {
    let mut rng = rng(seed);
    let mut route = random_route(&mut rng, 2, 1);
    route.nodes[0] = TestNode {
        addr: node.local_addr(),
        ..me.clone()
    };
    route.nodes[1].addr = next;
    route.delays[0] = Delay::new_from_nanos(delay_ns);
    let pt = random_plaintext(&mut rng, SizeClass::Regular);
    let p = build_packet(&route, SizeClass::Regular, 258, &pt.bytes);
    let frame = me.v8_header(SizeClass::Regular).frame(&p.to_bytes());
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(&frame, node.local_addr()).unwrap();
}

/// Waits (up to 5 s) until `f` of the node's only worker reaches `want`.
fn wait_for(node: &Node, what: &str, want: u64, f: impl Fn(&WorkerCounters) -> u64) {
    let end = Instant::now() + Duration::from_secs(5);
    while f(&node.counters()[0]) < want {
        assert!(Instant::now() < end, "{what}: {}", f(&node.counters()[0]));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(f(&node.counters()[0]), want, "{what}");
}

#[test]
fn next_hops_outside_the_policy_are_dropped_and_counted() {
    let me = TestNode::random(&mut rng(1));
    let node = start(&me, EgressPolicy::LOOPBACK);
    let peer = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cases: [(SocketAddr, NodeDrop); 5] = [
        ("10.1.2.3:1789".parse().unwrap(), NodeDrop::PrivateNextHop),
        (
            "[::ffff:192.168.0.1]:53".parse().unwrap(),
            NodeDrop::PrivateNextHop,
        ),
        (
            "169.254.169.254:80".parse().unwrap(),
            NodeDrop::UnroutableNextHop,
        ),
        (
            "255.255.255.255:9".parse().unwrap(),
            NodeDrop::UnroutableNextHop,
        ),
        (node.local_addr(), NodeDrop::OwnAddressNextHop),
    ];
    let mut want = std::collections::HashMap::new();
    for (i, (to, why)) in cases.iter().enumerate() {
        send_via(&node, &me, *to, 0, 10 + i as u64);
        *want.entry(*why).or_insert(0u64) += 1;
        wait_for(&node, why.name(), want[why], |c| c.node_drops(*why));
    }
    // a loopback peer is allowed by this policy
    send_via(&node, &me, peer, 0, 20);
    wait_for(&node, "forwarded", 1, |c| {
        c.forwarded.load(std::sync::atomic::Ordering::Relaxed)
    });
    node.abort();
    node.join().unwrap();

    let strict = start(&me, EgressPolicy::STRICT);
    send_via(&strict, &me, peer, 0, 21);
    wait_for(&strict, "loopback_next_hop", 1, |c| {
        c.node_drops(NodeDrop::LoopbackNextHop)
    });
    strict.abort();
    strict.join().unwrap();
}

#[test]
fn delays_over_the_cap_are_clamped_and_counted() {
    let me = TestNode::random(&mut rng(2));
    let node = start(&me, EgressPolicy::LOOPBACK);
    let peer = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    send_via(&node, &me, peer, 10_000_000_000, 30);
    send_via(&node, &me, peer, 60_000_000_000, 31);
    let load = |c: &WorkerCounters| c.forwarded.load(std::sync::atomic::Ordering::Relaxed);
    wait_for(&node, "forwarded", 2, load);
    let excessive =
        |c: &WorkerCounters| c.excessive_delay.load(std::sync::atomic::Ordering::Relaxed);
    // the one at the cap is not over it
    wait_for(&node, "excessive_delay", 1, excessive);
    assert_eq!(node.counters()[0].total_drops(), 0);
    node.abort();
    node.join().unwrap();
}
