//! Replay protection survives `kill -9`: the `mixplane` binary forwards N packets, is killed
//! with SIGKILL right after (its filter files never synced: the sync interval is an hour),
//! restarts, and drops all N when they come again, while fresh packets still pass.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::local::{free_tcp, free_udp, get, metric, wait_metric};
use common::{Route, TestNode, build_packet, random_plaintext, rng};
use mixplane_dataplane::sphinx::{FrameHeader, KeyRotation, SizeClass};
use rand::rngs::StdRng;
use sphinx_packet::header::delays::Delay;
use sphinx_packet::route::{Destination, DestinationAddressBytes};

const BIN: &str = env!("CARGO_BIN_EXE_mixplane");

/// Writes the config for one worker on `listen` with the admin API on `admin`, a small first
/// filter segment and syncs an hour apart (so only the kernel's page cache keeps the bits).
fn configure(dir: &Path, listen: SocketAddr, admin: SocketAddr) {
    let cfg = dir.join("node.toml");
    let template = dir.join("node.toml.orig");
    if !template.exists() {
        std::fs::copy(&cfg, &template).unwrap();
    }
    let text = std::fs::read_to_string(&template)
        .unwrap()
        .replace(
            "listen = \"0.0.0.0:1789\"",
            &format!("listen = \"{listen}\""),
        )
        .replace(
            "listen = \"127.0.0.1:8081\"",
            &format!("listen = \"{admin}\""),
        )
        // the nym-node HTTP API and verloc on free ports
        .replace("listen = \"0.0.0.0:8080\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"0.0.0.0:1790\"", "listen = \"127.0.0.1:0\"")
        .replace("workers = 0", "workers = 1")
        // every node of the test runs on 127.0.0.1
        .replace(
            "allow_loopback_next_hops = false",
            "allow_loopback_next_hops = true",
        )
        .replace(
            "expected_packets_per_second = 1000",
            "expected_packets_per_second = 10",
        )
        .replace("sync_interval_ms = 1000", "sync_interval_ms = 3600000");
    assert!(text.contains("sync_interval_ms = 3600000"), "{text}");
    std::fs::write(&cfg, text).unwrap();
}

fn start(dir: &Path) -> (Child, SocketAddr, SocketAddr) {
    let (listen, admin) = (free_udp(), free_tcp());
    configure(dir, listen, admin);
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(dir.join("node.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(15);
    while get(admin, "/status").is_none() {
        assert!(Instant::now() < end, "node did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, listen, admin)
}

/// `n` regular frames through the node (`secret`, `rotation_id`) to `sink`, no delays.
fn frames(rng: &mut StdRng, node: &TestNode, sink: SocketAddr, n: usize) -> Vec<Vec<u8>> {
    let last = TestNode {
        addr: sink,
        ..TestNode::random(rng)
    };
    let route = Route {
        nodes: vec![node.clone(), last],
        delays: vec![Delay::new_from_nanos(0); 2],
        destination: Destination::new(DestinationAddressBytes::from_bytes([7; 32]), [1; 16]),
    };
    let header = FrameHeader::v8(
        SizeClass::Regular,
        KeyRotation::of_rotation_id(node.rotation_id),
    );
    (0..n)
        .map(|_| {
            let pt = random_plaintext(rng, SizeClass::Regular);
            let p = build_packet(&route, SizeClass::Regular, 258, &pt.bytes);
            header.frame(&p.to_bytes())
        })
        .collect()
}

fn send(to: SocketAddr, frames: &[Vec<u8>]) {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, f) in frames.iter().enumerate() {
        client.send_to(f, to).unwrap();
        if i % 16 == 15 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn kill9(mut child: Child) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
}

#[test]
fn replays_are_dropped_after_kill_9() {
    const N: usize = 300;
    let dir = std::env::temp_dir().join(format!("mixplane-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        Command::new(BIN)
            .arg("init")
            .arg(&dir)
            .status()
            .unwrap()
            .success()
    );
    let keys = mixplane_control::keys::load_keys(&dir.join("keys")).unwrap();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = rng(14);
    let node = TestNode {
        secret: *keys.primary.secret(),
        rotation_id: keys.primary.rotation_id(),
        addr: "127.0.0.1:1789".parse().unwrap(),
    };
    let batch = frames(&mut rng, &node, sink.local_addr().unwrap(), N);

    let (child, listen, admin) = start(&dir);
    send(listen, &batch);
    let fwd = wait_metric(admin, "mixplane_packets_forwarded_total", "", N as u64);
    let sent_at = Instant::now();
    assert_eq!(
        fwd, N as u64,
        "every fresh packet forwarded before the kill"
    );
    kill9(child);
    assert!(
        sent_at.elapsed() < Duration::from_secs(1),
        "killed within a second"
    );

    let (child, listen, admin) = start(&dir);
    send(listen, &batch);
    let replayed = wait_metric(
        admin,
        "mixplane_packets_dropped_total",
        "reason=\"replayed\"",
        N as u64,
    );
    assert_eq!(
        replayed, N as u64,
        "every packet seen before the kill is a replay"
    );
    assert_eq!(
        metric(admin, "mixplane_packets_forwarded_total", ""),
        Some(0)
    );

    let fresh = frames(&mut rng, &node, sink.local_addr().unwrap(), 20);
    send(listen, &fresh);
    assert_eq!(
        wait_metric(admin, "mixplane_packets_forwarded_total", "", 20),
        20,
        "fresh packets still pass"
    );
    kill9(child);
    let _ = std::fs::remove_dir_all(&dir);
}
