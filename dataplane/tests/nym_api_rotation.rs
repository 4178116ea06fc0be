//! Key rotation driven by nym-api: a local HTTP server plays nym-api's
//! `/v1/epoch/key-rotation-info`, the control plane polls it and takes nym-node's steps
//! (pre-announce, swap, purge) while a client keeps sending; no valid packet is lost, and a
//! hostile document is refused without disturbing the keys.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mixplane_control::keys::{self, KeyMaterial};
use mixplane_control::rotation::nym_api::RotationInfoError;
use mixplane_control::rotation::{Live, Step};
use mixplane_control::topology::FetchOptions;
use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::plane::ControlPlane;
use mixplane_dataplane::sphinx::build::{self, FinalPadding, Hop, PacketSpec};
use mixplane_dataplane::sphinx::{
    DropReason, FrameHeader, KeyRotation, NodeKeys, SizeClass, SphinxKey,
};

/// The (rotation id, secret) pairs a client currently builds packets for.
type LiveKeys = Vec<(u32, [u8; 32])>;

/// Validity 4 epochs of 60 s, rotation 0 starting at absolute epoch 100 at unix 1_000_000.
const INITIAL: u32 = 100;
const VALIDITY: u32 = 4;
const EPOCH_SECS: u64 = 60;
const GENESIS: u64 = 1_000_000;

/// Unix time a second into absolute epoch `e`.
fn at(e: u32) -> u64 {
    GENESIS + u64::from(e - INITIAL) * EPOCH_SECS + 1
}

/// nym-api's document for absolute epoch `e`, shaped as `KeyRotationInfoResponse`.
fn doc(e: u32) -> String {
    let r = (e - INITIAL) / VALIDITY;
    let start = GENESIS + u64::from(e - INITIAL) * EPOCH_SECS;
    // whole days and seconds of the day since 1970-01-01 (the test's times are in January 1970)
    let (day, sec) = (start / 86_400, start % 86_400);
    let t = format!(
        "1970-01-{:02}T{:02}:{:02}:{:02}Z",
        day + 1,
        sec / 3600,
        sec / 60 % 60,
        sec % 60
    );
    let first = INITIAL + r * VALIDITY;
    format!(
        r#"{{"key_rotation_state":{{"validity_epochs":{VALIDITY},"initial_epoch_id":{INITIAL}}},"current_absolute_epoch_id":{e},"current_epoch_start":"{t}","epoch_duration":{{"secs":{EPOCH_SECS},"nanos":0}},"progress":{{"current_key_rotation_id":{r},"current_rotation_starting_epoch":{first},"current_rotation_ending_epoch":{}}}}}"#,
        first + VALIDITY - 1
    )
}

/// A tiny nym-api: serves the document in `body` at the key-rotation-info path (404
/// elsewhere) until `stop`; returns its base URL and the number of requests served.
fn serve(body: Arc<Mutex<String>>, stop: Arc<AtomicBool>) -> (String, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let base = format!("http://{}/api", l.local_addr().unwrap());
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            let (code, b) = if line.starts_with("GET /api/v1/epoch/key-rotation-info ") {
                ("200 OK", body.lock().unwrap().clone())
            } else {
                ("404 Not Found", String::new())
            };
            count.fetch_add(1, Ordering::SeqCst);
            let _ = write!(
                s,
                "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                b.len()
            );
        }
    });
    (base, served)
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
    let mut x = [0u8; 32];
    x[1..9].copy_from_slice(&seq.to_le_bytes()); // byte 0's low bits are clamped away
    x[10] = rot as u8;
    let spec = PacketSpec {
        route: &route,
        delays_ns: &[0, 0],
        destination: [0; 32],
        identifier: [0; 16],
        version: 258,
        payload_size: SizeClass::Regular.payload_len(),
        plaintext: b"rotation from nym-api",
        initial_secret: x,
        padding: FinalPadding::Seed(x),
    };
    FrameHeader::v8(SizeClass::Regular, KeyRotation::of_rotation_id(rot))
        .frame(&build::build_packet(&spec).unwrap())
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mixplane-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A node whose one key is rotation 1, and its control plane (following nym-api).
fn start(dir: &std::path::Path) -> Arc<ControlPlane> {
    let keys_dir = dir.join("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let k = KeyMaterial::generate(1);
    keys::write_key(&keys_dir.join(keys::PRIMARY_FILE), k.secret(), 1).unwrap();
    let config = NodeConfig {
        io: IoBackendKind::Mmsg,
        replay_expected: 200_000,
        replay_dir: Some(dir.join("replay")),
        slab_small: 8192,
        ..NodeConfig::default()
    };
    let keys = Arc::new(NodeKeys::single(SphinxKey::from_secret(*k.secret(), 1)));
    let node = Node::start(config.clone(), keys).unwrap();
    let stored = keys::load_keys(&keys_dir).unwrap();
    let plane = Arc::new(ControlPlane::new(node, config, keys_dir, stored, None));
    plane.follow_nym_api();
    plane
}

fn secret_of(dir: &std::path::Path, rot: u32) -> [u8; 32] {
    let k = keys::load_keys(&dir.join("keys")).unwrap();
    std::iter::once(k.primary)
        .chain(k.secondary)
        .find(|m| m.rotation_id() == rot)
        .map(|m| *m.secret())
        .unwrap()
}

fn drops(plane: &ControlPlane, r: Option<DropReason>) -> u64 {
    let c = plane.node().counters();
    c.iter()
        .map(|c| r.map_or_else(|| c.total_drops(), |r| c.sphinx_drops(r)))
        .sum()
}

#[test]
fn nym_api_drives_pre_announce_swap_and_purge_without_losing_a_packet() {
    let dir = tmpdir("nymapi-rot");
    let plane = start(&dir);
    let body = Arc::new(Mutex::new(doc(105)));
    let stop = Arc::new(AtomicBool::new(false));
    let (base, served) = serve(body.clone(), stop.clone());
    let opts = FetchOptions {
        timeout: Duration::from_secs(5),
        allow_http: true,
        ..FetchOptions::default()
    };
    // no document yet: no step, whatever the clock says
    assert_eq!(plane.tick(at(107)).unwrap(), Step::Nothing);
    assert!(plane.rotate_now().is_err(), "nym-api drives rotation");

    // a client sends for every key it believes live; a receiver counts what the node forwards
    let cap = UdpSocket::bind("127.0.0.1:0").unwrap();
    cap.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let next = cap.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                if cap.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let k1 = secret_of(&dir, 1);
    let live: Arc<Mutex<LiveKeys>> = Arc::new(Mutex::new(vec![(1, k1)]));
    let sent = Arc::new(AtomicU64::new(0));
    let stop_tx = Arc::new(AtomicBool::new(false));
    let to = plane.node().local_addr();
    let sender = {
        let (live, sent, stop_tx) = (live.clone(), sent.clone(), stop_tx.clone());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut seq = 0;
            while !stop_tx.load(Ordering::SeqCst) {
                for (rot, secret) in live.lock().unwrap().clone() {
                    seq += 1;
                    sock.send_to(&frame(&secret, rot, next, seq), to).unwrap();
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let settle = || std::thread::sleep(Duration::from_millis(150));

    // epoch by epoch: nym-api reports the epoch, the node polls it, then its clock ticks
    let step_at = |e: u32| {
        *body.lock().unwrap() = doc(e);
        let info = plane.refresh_rotation(&base, &opts).unwrap();
        assert_eq!(info.current_epoch, e);
        plane.tick(at(e)).unwrap()
    };
    settle();
    assert_eq!(step_at(106), Step::Nothing);
    assert_eq!(step_at(107), Step::PreAnnounce(2));
    live.lock().unwrap().push((2, secret_of(&dir, 2)));
    settle();
    // nym-api is late: still epoch 107 when the clock is hours past it. The node swaps (both
    // keys stay live) but goes no further until nym-api reports the next epoch.
    let late = at(107) + 10 * 3600;
    assert_eq!(plane.tick(late).unwrap(), Step::Swap);
    assert_eq!(plane.tick(late).unwrap(), Step::Nothing);
    assert_eq!(
        plane.live(),
        Live {
            primary: 2,
            secondary: Some(1)
        }
    );
    settle();
    assert_eq!(step_at(108), Step::Nothing);
    // clients move off key 1 during the overlap epoch
    live.lock().unwrap().retain(|(r, _)| *r == 2);
    settle();
    // a hostile document is refused, typed; the latest good one (epoch 108) stays in force
    *body.lock().unwrap() = doc(109).replace("\"validity_epochs\":4", "\"validity_epochs\":0");
    let e = plane.refresh_rotation(&base, &opts).unwrap_err();
    assert!(matches!(e, RotationInfoError::Invalid { .. }), "{e}");
    assert_eq!(plane.tick(at(108) + 30).unwrap(), Step::Nothing);
    assert_eq!(step_at(109), Step::Purge);
    assert_eq!(
        plane.live(),
        Live {
            primary: 2,
            secondary: None
        }
    );
    settle();
    stop_tx.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let total = sent.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::SeqCst) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(total > 200, "load was continuous: {total} packets");
    assert_eq!(drops(&plane, None), 0, "no valid packet dropped");
    assert_eq!(
        received.load(Ordering::SeqCst),
        total,
        "every packet forwarded"
    );
    assert!(served.load(Ordering::SeqCst) >= 5);

    // key 1 is gone: a packet for it is dropped for want of its key, and only key 2 is on disk
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&frame(&k1, 1, next, 1 << 40), to).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while drops(&plane, Some(DropReason::NoKeyForRotation)) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(drops(&plane, Some(DropReason::NoKeyForRotation)), 1);
    assert!(!dir.join("keys").join(keys::SECONDARY_FILE).exists());
    stop.store(true, Ordering::SeqCst);
    counter.join().unwrap();
    let plane = Arc::try_unwrap(plane).ok().unwrap();
    plane.into_node().shutdown().unwrap();
}
