//! Loop cover traffic on a local mixnet: three mix layers of two nodes each on loopback, every
//! node sending loops. With no fault no loop is lost; when one node drops a share of what it
//! forwards (the test-only fault switch), the loop metrics of the nodes in the other layers
//! raise the alarm for that node and no other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mixplane_control::metrics::PromText;
use mixplane_control::topology::{PeerTransport, Role, Topology, TopologyNode};
use mixplane_dataplane::cover::{self, CoverConfig, CoverReport};
use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::plane::cover_routes;
use mixplane_dataplane::sphinx::{NodeKeys, SphinxKey};

struct Net {
    nodes: Vec<(Node, NodeKeys, u8)>,
    topology: Topology,
}

/// Six nodes, two per layer; node `faulty` (if any) drops `per_mille` of its forward hops.
fn start(faulty: Option<usize>, per_mille: u16, timeout: Duration) -> Net {
    let mut nodes = Vec::new();
    for i in 0..6 {
        let key = SphinxKey::from_secret(rand::random(), 1);
        let node = Node::start(
            NodeConfig {
                io: IoBackendKind::Mmsg,
                slab_small: 4096,
                slab_large: 16,
                wheel_capacity: 4096,
                replay_expected: 100_000,
                cover: Some(CoverConfig {
                    rate_per_second: 30.0,
                    mean_delay_ms: 2.0,
                    timeout,
                    max_core_share: 0.5,
                    ..CoverConfig::default()
                }),
                fault_drop_per_mille: if faulty == Some(i) { per_mille } else { 0 },
                ..NodeConfig::default()
            },
            Arc::new(NodeKeys::single(key.clone())),
        )
        .expect("node starts");
        nodes.push((node, NodeKeys::single(key), (i / 2 + 1) as u8));
    }
    let topology = Topology {
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, (n, k, layer))| TopologyNode {
                id: i as u32,
                identity: format!("n{i}"),
                addresses: vec![n.local_addr()],
                role: Role::Mix(*layer),
                sphinx_key: *k.primary.public(),
                noise: None,
                transport: PeerTransport::Udp,
            })
            .collect(),
    };
    for (n, k, _) in &nodes {
        let routes = cover_routes(&topology, k).expect("each node is in the topology");
        n.cover().expect("cover is on").set_routes(routes);
    }
    Net { nodes, topology }
}

impl Net {
    fn reports(&self) -> Vec<(u8, SocketAddr, CoverReport)> {
        self.nodes
            .iter()
            .map(|(n, _, l)| (*l, n.local_addr(), n.cover().unwrap().report()))
            .collect()
    }

    fn stop(self) {
        for (n, ..) in self.nodes {
            n.shutdown().unwrap();
        }
    }
}

#[test]
fn loops_measure_no_loss_without_a_fault_and_point_at_a_lossy_node() {
    // no fault: loops come back, none is lost
    let net = start(None, 0, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    for (n, ..) in &net.nodes {
        n.cover().unwrap().pause(true);
    }
    let end = Instant::now() + Duration::from_secs(12);
    std::thread::sleep(Duration::from_millis(300));
    while Instant::now() < end && net.reports().iter().any(|r| r.2.total.in_flight() > 0) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (layer, addr, r) in net.reports() {
        assert!(r.total.returned >= 20, "{layer} {addr}: {r:?}");
        assert_eq!(r.total.in_flight(), 0, "{layer} {addr}: {r:?}");
        assert_eq!(r.total.lost, 0, "{layer} {addr}: {r:?}");
        assert_eq!(r.loss.rate, 0.0);
        assert!(!r.any_alarm(), "{r:?}");
        // each node's loops cross the two other layers, both nodes of each
        assert_eq!(r.nodes.len(), 4, "{r:?}");
        assert!(r.nodes.iter().all(|n| n.layer != layer));
    }
    net.stop();

    // node 3 (layer 2) drops 60 % of what it forwards
    let net = start(Some(3), 600, Duration::from_secs(1));
    let bad = net.nodes[3].0.local_addr();
    let end = Instant::now() + Duration::from_secs(30);
    let watchers: Vec<usize> = vec![0, 1, 4, 5];
    loop {
        let reports = net.reports();
        let pointed = watchers.iter().all(|&i| {
            let alarmed: Vec<SocketAddr> = reports[i]
                .2
                .nodes
                .iter()
                .filter(|n| n.alarm)
                .map(|n| n.node)
                .collect();
            alarmed == vec![bad]
        });
        if pointed {
            break;
        }
        assert!(Instant::now() < end, "no alarm on {bad}: {reports:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let reports = net.reports();
    for &i in &watchers {
        let r = &reports[i].2;
        let b = r.nodes.iter().find(|n| n.node == bad).unwrap();
        let other = r
            .nodes
            .iter()
            .find(|n| n.layer == 2 && n.node != bad)
            .unwrap();
        assert!(b.loss.rate > other.loss.rate, "{r:#?}");
        // its loss is significant: the lower confidence bound is well above zero (the level
        // itself depends on how many loops were settled when the alarm rose)
        assert!(b.loss.low > 0.05, "{b:?}");
        // and it shows on the metrics page
        let mut p = PromText::new();
        cover::write_metrics(&mut p, r);
        let text = p.finish();
        let line = format!("mixplane_cover_node_loss_alarm{{layer=\"2\",node=\"{bad}\"}} 1");
        assert!(text.contains(&line), "{text}");
    }
    // layer-2 nodes do not cross layer 2: nothing to point at
    assert!(!reports[2].2.nodes.iter().any(|n| n.layer == 2));
    assert_eq!(net.topology.nodes.len(), 6);
    net.stop();
}

#[test]
fn the_build_budget_caps_the_share_of_a_core() {
    let key = SphinxKey::from_secret(rand::random(), 1);
    let node = Node::start(
        NodeConfig {
            io: IoBackendKind::Mmsg,
            replay_expected: 10_000,
            cover: Some(CoverConfig {
                // far more than 2 % of a core can build
                rate_per_second: 5000.0,
                max_core_share: 0.02,
                ..CoverConfig::default()
            }),
            ..NodeConfig::default()
        },
        Arc::new(NodeKeys::single(key.clone())),
    )
    .expect("node starts");
    // three layers of one node each at the discard port: the loops leave and never come back
    let hop = |i: u8| mixplane_dataplane::sphinx::Hop {
        address: SocketAddr::from(([127, 0, 0, i], 9)),
        public_key: *SphinxKey::from_secret([i; 32], 1).public(),
    };
    let cover = node.cover().unwrap();
    cover.set_routes(cover::CoverRoutes {
        layers: vec![vec![hop(2)], vec![hop(3)], vec![hop(4)]],
        me: mixplane_dataplane::sphinx::Hop {
            address: node.local_addr(),
            public_key: *key.public(),
        },
    });
    std::thread::sleep(Duration::from_secs(3));
    let r = cover.report();
    let share = r.build_seconds / r.running_seconds;
    assert!(r.total.sent > 0, "{r:?}");
    assert!(r.budget_skipped > r.total.sent, "{r:?}");
    // the budget, plus what the batches in progress when it ran out cost (up to two of 64
    // loops at this run's cost per loop): without the cap the thread would build flat out
    let per_loop = r.build_seconds / r.total.sent as f64;
    let slack = 2.0 * 64.0 * per_loop / r.running_seconds;
    assert!(share <= 0.02 + slack, "{share} > 0.02 + {slack} {r:?}");
    assert!(share < 0.2, "{share} {r:?}");
    node.shutdown().unwrap();
}
