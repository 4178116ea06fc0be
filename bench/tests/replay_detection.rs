//! Replaying a capture at a node whose replay filter has seen it is detected: the replayer
//! reads the node's drop counters over its admin API before and after.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use mixplane_bench::loadgen::factory::{Factory, Mix};
use mixplane_bench::loadgen::node_metrics::drops_by_reason;
use mixplane_bench::loadgen::topology::{TopoNode, Topology};
use mixplane_bench::loadgen::{self, NodeVerdict, ReplayConfig, Timing};
use mixplane_bench::pcap::{Capture, CapturedDatagram};
use mixplane_control::admin::AdminServer;
use mixplane_control::keys::{self, KeyMaterial};
use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::plane::{Admin, ControlPlane};
use mixplane_dataplane::sphinx::build::{Hop, public_key};
use mixplane_dataplane::sphinx::{KeyRotation, NodeKeys, SphinxKey};

#[test]
fn a_second_replay_of_a_capture_is_reported_as_replayed() {
    let dir = std::env::temp_dir().join(format!("mixplane-replay-detect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keys_dir = dir.join("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let k = KeyMaterial::generate(5);
    keys::write_key(&keys_dir.join(keys::PRIMARY_FILE), k.secret(), 5).unwrap();
    let stored = keys::load_keys(&keys_dir).unwrap();
    let config = NodeConfig {
        io: IoBackendKind::Mmsg,
        replay_expected: 100_000,
        ..NodeConfig::default()
    };
    let node = Node::start(
        config.clone(),
        Arc::new(NodeKeys::single(SphinxKey::from_secret(*k.secret(), 5))),
    )
    .unwrap();
    let node_addr = node.local_addr();
    let plane = Arc::new(ControlPlane::new(node, config, keys_dir, stored, None));
    let admin = AdminServer::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        Arc::new(Admin(plane.clone())),
    )
    .unwrap();

    // 200 packets for a route through the node to a socket that swallows them
    let next = UdpSocket::bind("127.0.0.1:0").unwrap();
    let route = [
        TopoNode {
            hop: Hop {
                address: node_addr,
                public_key: public_key(k.secret()),
            },
            rotation: KeyRotation::of_rotation_id(5),
        },
        TopoNode {
            hop: Hop {
                address: next.local_addr().unwrap(),
                public_key: public_key(&[3; 32]),
            },
            rotation: KeyRotation::Odd,
        },
    ];
    let mut factory = Factory::new(Topology::fixed(&route), Mix::default(), 0.0, 1, 258, 9);
    let built = factory.build(0, 200).unwrap();
    let mut cap = Capture::default();
    for b in &built {
        let start = cap.data.len();
        cap.data.extend_from_slice(&b.frame);
        cap.datagrams.push(CapturedDatagram {
            ts: Duration::ZERO,
            src: "127.0.0.1:9".parse::<SocketAddr>().unwrap(),
            dst: b.to,
            range: start..cap.data.len(),
        });
    }

    let replay_once = || {
        let before = drops_by_reason(admin.local_addr()).unwrap();
        let rep = loadgen::replay(
            &cap,
            &ReplayConfig {
                timing: Timing::Pps(20_000.0),
                ..ReplayConfig::default()
            },
        )
        .unwrap();
        assert_eq!(rep.packets_sent, 200);
        std::thread::sleep(Duration::from_millis(500));
        let after = drops_by_reason(admin.local_addr()).unwrap();
        NodeVerdict::between(&before, &after, rep.packets_sent)
    };
    let first = replay_once();
    assert_eq!(first.replayed(), 0, "{first:?}");
    assert_eq!(first.warning(), None);
    let second = replay_once();
    assert_eq!(second.replayed(), 200, "{second:?}");
    assert!(second.warning().unwrap().contains("replay filter has seen"));

    admin.stop();
    let plane = Arc::try_unwrap(plane).ok().unwrap();
    plane.into_node().shutdown().unwrap();
}
