//! The load generator end to end: a demo mixnet run, recording and reading back a capture,
//! replaying it (at a plain socket and at real nodes with their admin API), and a cross-check of
//! its packets against sphinx-packet 0.8.0.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mixplane_bench::loadgen::factory::{DESTINATION, Factory, Mix, Tag};
use mixplane_bench::loadgen::topology::{TopoNode, Topology};
use mixplane_bench::loadgen::{
    self, DemoOptions, ReplayConfig, Report, SendConfig, Target, Timing,
};
use mixplane_bench::pcap::{self, Capture, internet_checksum, parse_ip_udp};
use mixplane_control::admin::AdminServer;
use mixplane_control::keys::{self, KeyMaterial};
use mixplane_dataplane::demo::DemoTransport;
use mixplane_dataplane::io::{IoBackendKind, socket};
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::plane::{Admin, ControlPlane};
use mixplane_dataplane::sink::SinkAddr;
use mixplane_dataplane::sphinx::build::{Hop, SURB_ACK_LEN, public_key};
use mixplane_dataplane::sphinx::{
    FrameHeader, KeyRotation, NodeKeys, SizeClass, SphinxKey, address,
};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use sphinx_packet::{ProcessedPacketData, SphinxPacket};
use x25519_dalek::StaticSecret;

fn demo(count: u64, rate: u64) -> SendConfig {
    SendConfig {
        target: Target::Demo(DemoOptions {
            workers: 1,
            io: IoBackendKind::Mmsg,
            cover: 0.0,
        }),
        rate,
        count: Some(count),
        mean_delay_ms: 1.0,
        seed: Some(count ^ rate),
        ..SendConfig::default()
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "mixplane-loadgen-{}-{}-{name}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ))
}

fn assert_ordered(r: &Report) {
    let l = r.latency_us;
    assert!(l.min > 0, "{l:?}");
    assert!(
        l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{l:?}"
    );
}

#[test]
fn demo_cover_loops_are_reported_apart_from_the_load() {
    let mut cfg = demo(400, 200);
    cfg.target = Target::Demo(DemoOptions {
        workers: 1,
        io: IoBackendKind::Mmsg,
        cover: 50.0,
    });
    let r = loadgen::run(&cfg).expect("run");
    // the loops never reach the sink: the load's own counts are exact
    assert!(r.all_arrived(), "{}", r.text());
    assert_eq!((r.received, r.foreign), (400, 0), "{}", r.text());
    let c = r.cover.clone().expect("cover summary");
    assert!(c.sent > 0 && c.returned > 0, "{}", r.text());
    assert_eq!(c.lost, 0, "{}", r.text());
    assert!(r.text().contains("cover:"), "{}", r.text());
    assert!(r.node_drops.is_empty(), "{:?}", r.node_drops);
}

#[test]
fn demo_run_delivers_everything_and_reports() {
    let r = loadgen::run(&demo(300, 2000)).expect("run");
    assert_eq!(r.sent, 300, "{}", r.text());
    assert_eq!(r.send_errors, 0);
    assert!(r.all_arrived(), "{}", r.text());
    assert_eq!((r.lost, r.loss_pct), (0, 0.0));
    assert_eq!(r.latency_us.count, 300);
    assert_ordered(&r);
    assert!(r.ack_latency_us.p50 >= r.latency_us.p50, "{}", r.text());
    assert!(r.send_rate_pps > 0.0 && r.recv_rate_pps > 0.0);
    assert!(r.node_drops.is_empty(), "{:?}", r.node_drops);
    let json = serde_json::to_value(&r).expect("report serializes");
    assert_eq!(json["sent"], 300);
    assert_eq!(json["received"], 300);
    assert!(json["latency_us"]["p99"].as_u64().unwrap() > 0);
    assert!(json["latency_us"]["p999"].is_u64());
    assert_eq!(json["classes"][0]["class"], "regular");
}

#[test]
fn the_load_enters_over_tcp_and_noise() {
    for transport in [DemoTransport::Tcp, DemoTransport::Noise] {
        let cfg = SendConfig {
            transport,
            ..demo(200, 2000)
        };
        let r = loadgen::run(&cfg).expect("run");
        assert!(r.all_arrived(), "{transport:?}: {}", r.text());
        assert!(r.node_drops.is_empty(), "{:?}", r.node_drops);
        // the loadgen's 200 into the entry, three node-to-node hops, and the acks' hops
        // between nodes: every frame but the exit's deliveries went over TCP
        assert!(
            r.demo_tcp_frames >= 200 * 4,
            "{transport:?}: {}",
            r.demo_tcp_frames
        );
    }
}

#[test]
fn a_mix_of_classes_and_poisson_arrivals_arrive() {
    let cfg = SendConfig {
        mix: "regular=60,ack=20,ext8=20".parse().unwrap(),
        poisson: true,
        ..demo(150, 3000)
    };
    let r = loadgen::run(&cfg).expect("run");
    assert!(r.all_arrived(), "{}", r.text());
    let ack = r.classes.iter().find(|c| c.class == "ack").unwrap();
    // ack-class packets carry no SURB-ACK
    assert_eq!(r.acks_expected, r.sent - ack.sent);
    assert!(r.classes.iter().all(|c| c.sent == c.received));
    assert_ordered(&r);
}

/// Records a demo run and reads it back.
fn record(count: u64, rate: u64, name: &str) -> (Report, Capture, PathBuf) {
    let path = temp_path(name);
    let cfg = SendConfig {
        pcap: Some(path.clone()),
        keep_sent: true,
        ..demo(count, rate)
    };
    let r = loadgen::run(&cfg).expect("record");
    assert!(r.all_arrived(), "{}", r.text());
    let cap = pcap::read_capture(&path).expect("read back");
    (r, cap, path)
}

#[test]
fn a_recording_reads_back_as_sent() {
    for name in ["run.pcap", "run.pcapng"] {
        let (r, cap, path) = record(200, 4000, name);
        assert_eq!(r.pcap.as_ref().unwrap().frames, 200);
        assert_eq!(
            cap.format,
            if name.ends_with("ng") {
                "pcapng"
            } else {
                "pcap"
            }
        );
        assert_eq!(cap.datagrams.len(), 200);
        assert_eq!(cap.skipped, 0);
        assert_eq!(r.sent_log.len(), 200);
        for (i, (d, s)) in cap.datagrams.iter().zip(&r.sent_log).enumerate() {
            assert_eq!(cap.payload(i), &s.frame[..], "frame {i}");
            assert_eq!(d.ts, s.ts, "timestamp of frame {i}");
            assert_eq!(d.dst, s.to);
            assert_eq!(d.src, r.sender);
            let h = FrameHeader::parse(&s.frame).expect("a v8 frame");
            assert_eq!(h.frame_len(), s.frame.len());
        }
        let ts: Vec<Duration> = cap.datagrams.iter().map(|d| d.ts).collect();
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "timestamps in send order"
        );
        let span = (ts[199] - ts[0]).as_secs_f64();
        assert!(
            span > 0.5 * 199.0 / 4000.0 && span < 5.0,
            "200 frames at 4000 pps span {span} s"
        );
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn recorded_ip_and_udp_headers_are_consistent() {
    let (r, _, path) = record(50, 4000, "headers.pcap");
    let mut reader = PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(reader.header().datalink, DataLink::RAW);
    let mut n = 0;
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        let data = &p.data;
        assert_eq!(data[0] >> 4, 4, "IPv4");
        assert_eq!(internet_checksum(&data[..20]), 0, "IPv4 header checksum");
        assert_eq!(p.orig_len as usize, data.len());
        let u = parse_ip_udp(data).expect("IPv4/UDP parses");
        assert_eq!(u.ip_len, data.len(), "IPv4 total length");
        assert_eq!(u.udp_len, data.len() - 20, "UDP length");
        assert_eq!(&data[u.payload.clone()], &r.sent_log[n].frame[..]);
        assert_eq!(u.src, r.sender);
        n += 1;
    }
    assert_eq!(n, 50);
    let _ = std::fs::remove_file(path);
}

/// A plain UDP socket with a large buffer and no GRO.
fn plain_socket() -> UdpSocket {
    let s = socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    socket::set_gro(&s, false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

fn receive_all(s: &UdpSocket, n: usize) -> Vec<(Instant, Vec<u8>)> {
    let mut buf = vec![0u8; 65_536];
    let mut got = Vec::new();
    while got.len() < n {
        match s.recv(&mut buf) {
            Ok(k) => got.push((Instant::now(), buf[..k].to_vec())),
            Err(_) => break, // timed out
        }
    }
    got
}

#[test]
fn topspeed_replay_delivers_every_datagram_byte_for_byte() {
    let (_, cap, path) = record(100, 5000, "replay.pcap");
    let sink = plain_socket();
    let to = sink.local_addr().unwrap();
    let n = cap.datagrams.len();
    let recv = std::thread::spawn(move || receive_all(&sink, 2 * n));
    let rep = loadgen::replay(
        &cap,
        &ReplayConfig {
            to: Some(to),
            timing: Timing::TopSpeed,
            loops: 2,
            ..ReplayConfig::default()
        },
    )
    .unwrap();
    let got = recv.join().unwrap();
    assert_eq!(rep.packets_sent, 2 * n as u64);
    assert_eq!(rep.bytes_sent, 2 * cap.data.len() as u64);
    assert_eq!(got.len(), 2 * n);
    for (i, (_, g)) in got.iter().enumerate() {
        assert_eq!(&g[..], cap.payload(i % n), "datagram {i}");
    }
    let _ = std::fs::remove_file(path);
}

#[test]
fn pps_replay_keeps_the_rate() {
    // a synthetic capture: 300 datagrams of assorted sizes
    let src: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let dst: SocketAddr = "127.0.0.1:10".parse().unwrap();
    let mut rec = pcap::PcapRecorder::new(Vec::new(), pcap::Format::Pcap).unwrap();
    for i in 0..300u32 {
        let len = 50 + (i as usize * 37) % 3000;
        rec.record(
            Duration::from_millis(u64::from(i)),
            src,
            dst,
            &vec![i as u8; len],
        )
        .unwrap();
    }
    let cap = pcap::read_capture_from(&rec.finish().unwrap()[..]).unwrap();
    let sink = plain_socket();
    let to = sink.local_addr().unwrap();
    let recv = std::thread::spawn(move || receive_all(&sink, 300));
    let target = 1500.0;
    let rep = loadgen::replay(
        &cap,
        &ReplayConfig {
            to: Some(to),
            timing: Timing::Pps(target),
            ..ReplayConfig::default()
        },
    )
    .unwrap();
    let got = recv.join().unwrap();
    assert_eq!(got.len(), 300);
    let ratio = rep.achieved_pps / target;
    assert!(
        (0.7..1.3).contains(&ratio),
        "achieved {} pps",
        rep.achieved_pps
    );
    let span = got[299].0.duration_since(got[0].0).as_secs_f64();
    let seen = 299.0 / span;
    assert!(
        (0.7..1.3).contains(&(seen / target)),
        "receiver saw {seen:.0} pps"
    );
}

/// Follows a packet through sphinx-packet along `secrets` (one per hop); returns the final
/// plaintext.
fn walk(packet: &[u8], route: &[TopoNode], secrets: &[[u8; 32]]) -> Vec<u8> {
    let mut bytes = packet.to_vec();
    for (hop, secret) in secrets.iter().enumerate() {
        let processed = SphinxPacket::from_bytes(&bytes)
            .unwrap()
            .process(&StaticSecret::from(*secret))
            .unwrap_or_else(|e| panic!("hop {hop}: sphinx-packet rejects the packet: {e:?}"));
        assert_eq!(processed.version.value(), 258);
        match processed.data {
            ProcessedPacketData::ForwardHop {
                next_hop_packet,
                next_hop_address,
                ..
            } => {
                assert_eq!(
                    address::parse(next_hop_address.as_bytes()),
                    Ok(route[hop + 1].hop.address)
                );
                bytes = next_hop_packet.to_bytes();
            }
            ProcessedPacketData::FinalHop {
                destination,
                payload,
                ..
            } => {
                assert_eq!(hop + 1, secrets.len(), "final hop too early");
                assert_eq!(destination.as_bytes_ref(), &DESTINATION);
                return payload.recover_plaintext().expect("plaintext");
            }
        }
    }
    panic!("no final hop")
}

#[test]
fn loadgen_packets_are_processed_by_sphinx_packet() {
    let secrets: Vec<[u8; 32]> = (1..=4u8).map(|i| [i * 17; 32]).collect();
    let route: Vec<TopoNode> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| TopoNode {
            hop: Hop {
                address: SocketAddr::from(([127, 0, 0, 1], 10_001 + i as u16)),
                public_key: public_key(s),
            },
            rotation: KeyRotation::Odd,
            noise_key: None,
        })
        .collect();
    let mix: Mix = "regular=50,ack=25,ext16=25".parse().unwrap();
    let run = 0xfeed_beef;
    let mut factory = Factory::new(Topology::fixed(&route), mix, 3.0, run, 258, 7);
    let built = factory.build(1000, 24).unwrap();
    let mut classes = std::collections::HashSet::new();
    for (k, b) in built.iter().enumerate() {
        assert_eq!(b.seq, 1000 + k as u64);
        assert_eq!(b.to, route[0].hop.address);
        let h = FrameHeader::parse(&b.frame).unwrap();
        assert_eq!(h, FrameHeader::v8(b.class, KeyRotation::Odd));
        assert_eq!(b.frame.len(), h.frame_len());
        classes.insert(b.class);
        let pt = walk(&b.frame[h.len()..], &route, &secrets);
        let want = Tag {
            ack: false,
            run,
            seq: b.seq,
            class: b.class,
        };
        if b.class == SizeClass::Ack {
            assert!(!b.has_ack);
            assert_eq!(Tag::parse(&pt), Some(want));
        } else {
            assert!(b.has_ack);
            assert_eq!(Tag::parse(&pt[SURB_ACK_LEN..]), Some(want));
            // the SURB-ACK: first hop, then an ack packet that comes back with the ack tag
            assert_eq!(address::parse(&pt[..19]), Ok(route[0].hop.address));
            let ack_pt = walk(&pt[19..SURB_ACK_LEN], &route, &secrets);
            assert_eq!(Tag::parse(&ack_pt), Some(Tag { ack: true, ..want }));
        }
    }
    assert_eq!(classes.len(), 3, "every class of the mix was built");
}

/// A real node on loopback with its admin API, delivering final hops to `sink`.
struct RealNode {
    plane: Arc<ControlPlane>,
    admin: AdminServer,
    addr: SocketAddr,
}

impl RealNode {
    /// Starts a node with `key` and an empty replay filter on `listen`.
    fn start(dir: &Path, key: &KeyMaterial, listen: SocketAddr, sink: SocketAddr) -> RealNode {
        let keys_dir = dir.join("keys");
        std::fs::create_dir_all(&keys_dir).unwrap();
        keys::write_key(
            &keys_dir.join(keys::PRIMARY_FILE),
            key.secret(),
            key.rotation_id(),
        )
        .unwrap();
        let stored = keys::load_keys(&keys_dir).unwrap();
        let config = NodeConfig {
            listen,
            io: IoBackendKind::Mmsg,
            replay_expected: 100_000,
            sink: Some(SinkAddr::Udp(sink)),
            ..NodeConfig::default()
        };
        let node = Node::start(
            config.clone(),
            Arc::new(NodeKeys::single(SphinxKey::from_secret(
                *key.secret(),
                key.rotation_id(),
            ))),
        )
        .unwrap();
        let addr = node.local_addr();
        let plane = Arc::new(ControlPlane::new(node, config, keys_dir, stored, None));
        let admin = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            None,
            Arc::new(Admin(plane.clone())),
        )
        .unwrap();
        RealNode { plane, admin, addr }
    }

    fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.admin.local_addr())
    }

    fn stop(self) {
        self.admin.stop();
        let plane = Arc::try_unwrap(self.plane)
            .ok()
            .expect("the admin server let go of the plane");
        plane.into_node().shutdown().unwrap();
    }
}

/// A loopback address nothing listens on (just now).
fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn replays_at_a_real_node_deliver_and_a_second_replay_is_detected() {
    let dir = temp_path("nodes");
    let key = KeyMaterial::generate(1);
    let sink = free_addr();
    let n = 200u64;

    // record against node A: one-hop routes, the node delivering to the loadgen's sink
    let a = RealNode::start(&dir.join("a"), &key, "127.0.0.1:0".parse().unwrap(), sink);
    let listen = a.addr;
    let hop = TopoNode {
        hop: Hop {
            address: a.addr,
            public_key: public_key(key.secret()),
        },
        rotation: KeyRotation::of_rotation_id(key.rotation_id()),
        noise_key: None,
    };
    let path = temp_path("real.pcap");
    let rec = loadgen::run(&SendConfig {
        target: Target::Topology {
            topology: Topology::fixed(&[hop]),
            sink,
        },
        rate: 4000,
        count: Some(n),
        mean_delay_ms: 0.2,
        pcap: Some(path.clone()),
        seed: Some(99),
        ..SendConfig::default()
    })
    .expect("record");
    // one-hop routes: each SURB-ACK's first hop is the node itself, which its egress policy
    // refuses (own address, counted); the messages are what this test follows
    assert_eq!(rec.received, n, "{}", rec.text());
    assert_eq!(rec.acks_received, 0, "{}", rec.text());
    a.stop();
    let cap = pcap::read_capture(&path).unwrap();
    assert_eq!(cap.datagrams.len() as u64, n);

    // the same key on the same address with an empty replay filter, as after deleting replay/
    let b = RealNode::start(&dir.join("b"), &key, listen, sink);
    let cfg = |timing, metrics: String| ReplayConfig {
        timing,
        sink: Some(sink),
        metrics: Some(metrics),
        drain: Duration::from_millis(700),
        ..ReplayConfig::default()
    };
    let r = loadgen::replay(&cap, &cfg(Timing::TopSpeed, b.metrics_url())).unwrap();
    let k = r.sink.as_ref().expect("sink report");
    assert_eq!(r.packets_sent, n);
    assert_eq!((k.expected, k.received, k.acks), (n, n, 0), "{}", r.text());
    assert_eq!(k.latency_us.count, n, "a latency sample per message");
    assert!(k.latency_us.min > 0 && k.latency_us.p50 <= k.latency_us.max);
    assert_eq!(
        r.node_drops,
        Some(BTreeMap::from([("own_address_next_hop".to_string(), n)])),
        "{}",
        r.text()
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // again at the node that has now seen it: nothing arrives, the replay drops are counted
    let again = loadgen::replay(&cap, &cfg(Timing::Pps(4000.0), b.metrics_url())).unwrap();
    let k = again.sink.as_ref().unwrap();
    assert_eq!(again.packets_sent, n);
    assert_eq!((k.received, k.acks), (0, 0), "{}", again.text());
    let drops = again.node_drops.as_ref().unwrap();
    assert_eq!(drops.get("replayed"), Some(&n), "{}", again.text());
    assert_eq!(again.warnings.len(), 2, "{:?}", again.warnings);
    assert!(again.warnings[0].contains("dropped 200 of the 200 datagrams as replayed"));
    assert!(again.warnings[1].contains("nothing reached the sink"));
    assert!(again.warnings.iter().all(|w| w.contains("mixplane init")));
    b.stop();

    // --pps at a fresh node keeps the rate and delivers everything
    let c = RealNode::start(&dir.join("c"), &key, listen, sink);
    let target = 1000.0;
    let r = loadgen::replay(&cap, &cfg(Timing::Pps(target), c.metrics_url())).unwrap();
    let k = r.sink.as_ref().unwrap();
    assert_eq!((k.received, k.acks), (n, 0), "{}", r.text());
    assert_eq!(k.latency_us.count, n);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let ratio = r.achieved_pps / target;
    assert!((0.8..1.2).contains(&ratio), "{}", r.text());
    c.stop();
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn builders_out_of_order_still_send_in_sequence() {
    // several builders with small chunks finish out of order; the capture must hold message i
    // in frame i (a replay's sink relies on it)
    let path = temp_path("order.pcap");
    let cfg = SendConfig {
        builders: 3,
        chunk: 4,
        rate: 0,
        pcap: Some(path.clone()),
        keep_sent: true,
        ..demo(240, 0)
    };
    let r = loadgen::run(&cfg).expect("run");
    assert!(r.all_arrived(), "{}", r.text());
    let seqs: Vec<u64> = r.sent_log.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (0..240).collect::<Vec<u64>>());
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_run_behind_its_schedule_still_ends_on_time() {
    // far more than the builders can make: the run must stop at --duration, not when the
    // schedule's packets are all sent
    let cfg = SendConfig {
        count: None,
        duration: Some(Duration::from_millis(500)),
        ..demo(0, 1_000_000)
    };
    let t = Instant::now();
    let r = loadgen::run(&cfg).expect("run");
    assert!(r.sent > 0);
    assert!(r.send_secs < 0.8, "sent for {} s", r.send_secs);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(r.text().contains("could not keep up"), "{}", r.text());
}
