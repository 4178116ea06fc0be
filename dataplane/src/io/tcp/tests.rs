//! The TCP transport over real loopback sockets.

use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::atomic::Ordering;

use super::*;
use crate::sphinx::{KeyRotation, SizeClass};

fn frame(version: FrameVersion, class: SizeClass, fill: u8) -> Vec<u8> {
    let h = FrameHeader {
        version,
        size_class: class,
        key_rotation: if version == FrameVersion::V8 {
            KeyRotation::Even
        } else {
            KeyRotation::Unknown
        },
    };
    h.frame(&vec![fill; class.packet_len()])
}

struct Node {
    io: TcpIo,
    counters: Arc<TcpCounters>,
    limits: Arc<ConnLimits>,
}

fn node(settings: TcpSettings, limits: ConnLimits, book: PeerBook) -> Node {
    let counters = Arc::new(TcpCounters::default());
    let limits = Arc::new(limits);
    let settings = TcpSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..settings
    };
    let io = TcpIo::new(
        settings,
        limits.clone(),
        Arc::new(ArcSwap::from_pointee(book)),
        counters.clone(),
        None,
    )
    .unwrap();
    Node {
        io,
        counters,
        limits,
    }
}

fn plain_node() -> Node {
    node(
        TcpSettings::default(),
        ConnLimits::new(64, 16),
        PeerBook::new(PeerTransport::Tcp),
    )
}

/// Receives until `want` frames came or `ms` passed (at least one receive).
fn receive(io: &mut TcpIo, want: usize, ms: u64) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut dg = Vec::new();
    let end = Instant::now() + Duration::from_millis(ms);
    loop {
        io.recv(Duration::from_millis(20), &mut dg).unwrap();
        for d in &dg {
            got.push(io.datagram(*d).to_vec());
        }
        if got.len() >= want || Instant::now() >= end {
            return got;
        }
    }
}

/// Runs the poll for a while (timeouts, handshakes, flushes).
fn spin(io: &mut TcpIo, ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut dg = Vec::new();
    while Instant::now() < end {
        io.recv(Duration::from_millis(10), &mut dg).unwrap();
    }
}

#[test]
fn frames_split_anywhere_arrive_whole() {
    let mut n = plain_node();
    let to = n.io.local_addr().unwrap();
    let frames = vec![
        frame(FrameVersion::V7, SizeClass::Regular, 1),
        frame(FrameVersion::V8, SizeClass::Ack, 2),
        frame(FrameVersion::V8, SizeClass::Ext8, 3),
        frame(FrameVersion::V7, SizeClass::Ack, 4),
    ];
    let stream: Vec<u8> = frames.concat();
    let mut c = StdStream::connect(to).unwrap();
    c.set_nodelay(true).unwrap();
    // dribble the stream in odd-sized pieces
    for piece in stream.chunks(997) {
        c.write_all(piece).unwrap();
    }
    let got = receive(&mut n.io, frames.len(), 5000);
    assert_eq!(got, frames);
    assert_eq!(n.counters.frames_in.load(Ordering::Relaxed), 4);
    assert_eq!(n.counters.accepted.load(Ordering::Relaxed), 1);
}

#[test]
fn batches_are_cut_to_whole_lane_groups_and_the_tail_follows() {
    let mut n = plain_node();
    n.io.set_lane_width(4);
    let to = n.io.local_addr().unwrap();
    // 11 distinct frames in one write: a batch of 8, then the 3 held back (and nothing new
    // behind them: they go out alone rather than wait)
    let frames: Vec<Vec<u8>> = (0..11)
        .map(|k| frame(FrameVersion::V8, SizeClass::Regular, k as u8))
        .collect();
    let mut c = StdStream::connect(to).unwrap();
    c.write_all(&frames.concat()).unwrap();
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    let mut dg = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while got.len() < frames.len() && Instant::now() < end {
        n.io.recv(Duration::from_millis(20), &mut dg).unwrap();
        if !dg.is_empty() {
            sizes.push(dg.len());
        }
        got.extend(dg.iter().map(|d| n.io.datagram(*d).to_vec()));
    }
    assert_eq!(got, frames, "every frame once, in order");
    assert_eq!(sizes.first(), Some(&8), "batch sizes {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 11);
    // frames held back come first in the next batch, with the new ones behind them
    let more: Vec<Vec<u8>> = (0..7)
        .map(|k| frame(FrameVersion::V7, SizeClass::Regular, 100 + k as u8))
        .collect();
    c.write_all(&more[..6].concat()).unwrap();
    let got = receive(&mut n.io, 4, 5000);
    assert_eq!(got, more[..4], "the first group of the second write");
    c.write_all(&more[6]).unwrap();
    let got = receive(&mut n.io, 3, 5000);
    assert_eq!(got, more[4..], "the held-back pair, then the late frame");
    assert_eq!(n.counters.frames_in.load(Ordering::Relaxed), 18);
}

#[test]
fn frames_held_back_are_handed_out_alone_when_receiving_stops() {
    let mut n = plain_node();
    n.io.set_lane_width(4);
    let to = n.io.local_addr().unwrap();
    let frames: Vec<Vec<u8>> = (0..7)
        .map(|k| frame(FrameVersion::V8, SizeClass::Regular, k as u8))
        .collect();
    let mut c = StdStream::connect(to).unwrap();
    c.write_all(&frames.concat()).unwrap();
    let mut dg = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while dg.is_empty() && Instant::now() < end {
        n.io.recv(Duration::from_millis(20), &mut dg).unwrap();
    }
    assert_eq!(dg.len(), 4, "one whole lane group; three held back");
    let first: Vec<Vec<u8>> = dg.iter().map(|d| n.io.datagram(*d).to_vec()).collect();
    assert_eq!(first, frames[..4]);
    // a worker that stops receiving takes what was held back, and only that
    c.write_all(&frame(FrameVersion::V8, SizeClass::Regular, 99))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(n.io.take_held_back(&mut dg), 3);
    let rest: Vec<Vec<u8>> = dg.iter().map(|d| n.io.datagram(*d).to_vec()).collect();
    assert_eq!(rest, frames[4..], "the held-back frames, in order");
    assert_eq!(n.io.take_held_back(&mut dg), 0, "nothing is held twice");
}

#[test]
fn garbage_closes_the_connection_with_a_reason() {
    let mut n = plain_node();
    let to = n.io.local_addr().unwrap();
    for bad in [&[9u8, 1, 0][..], &[7, 6, 0], &[7, 1, 3], &[8, 9, 0, 0]] {
        let mut c = StdStream::connect(to).unwrap();
        c.write_all(bad).unwrap();
        c.write_all(&[0; 64]).unwrap();
        spin(&mut n.io, 50);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 8];
        // the node closed it: EOF (or a reset)
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)), "{bad:?}");
    }
    assert_eq!(n.counters.drops(TcpDrop::BadFrame), 4);
    assert_eq!(n.limits.open(), 0);
}

#[test]
fn connection_limits_refuse_and_count() {
    let mut n = node(
        TcpSettings::default(),
        ConnLimits::new(3, 2),
        PeerBook::default(),
    );
    let to = n.io.local_addr().unwrap();
    let keep: Vec<StdStream> = (0..3).map(|_| StdStream::connect(to).unwrap()).collect();
    spin(&mut n.io, 100);
    assert_eq!(n.limits.open(), 2);
    assert_eq!(n.counters.drops(TcpDrop::RefusedIpLimit), 1);
    drop(keep);
    spin(&mut n.io, 100);
    assert_eq!(n.limits.open(), 0);
    assert_eq!(n.counters.inbound_open.load(Ordering::Relaxed), 0);
}

#[test]
fn stalled_frames_and_silent_connections_time_out() {
    let mut n = node(
        TcpSettings {
            handshake_timeout: Duration::from_millis(200),
            frame_timeout: Duration::from_millis(200),
            ..TcpSettings::default()
        },
        ConnLimits::new(64, 16),
        PeerBook::default(),
    );
    let to = n.io.local_addr().unwrap();
    let _silent = StdStream::connect(to).unwrap();
    let mut slow = StdStream::connect(to).unwrap();
    let f = frame(FrameVersion::V7, SizeClass::Regular, 5);
    slow.write_all(&f).unwrap();
    slow.write_all(&f[..100]).unwrap();
    let got = receive(&mut n.io, 1, 2000);
    assert_eq!(got.len(), 1);
    spin(&mut n.io, 500);
    assert_eq!(n.counters.drops(TcpDrop::HandshakeTimeout), 1);
    assert_eq!(n.counters.drops(TcpDrop::StalledFrame), 1);
    assert_eq!(n.limits.open(), 0);
}

#[test]
fn egress_rewrites_headers_and_reaches_the_next_hop() {
    let mut rx = plain_node();
    let to = rx.io.local_addr().unwrap();
    let mut tx = node(
        TcpSettings {
            listen: None,
            frame_version: FrameVersion::V7,
            ..TcpSettings::default()
        },
        ConnLimits::new(1, 1),
        PeerBook::new(PeerTransport::Tcp),
    );
    let sent: Vec<Vec<u8>> = (0..50)
        .map(|i| frame(FrameVersion::V8, SizeClass::Regular, i as u8))
        .collect();
    let out: Vec<Outgoing<'_>> = sent.iter().map(|d| Outgoing { to, data: d }).collect();
    let st = tx.io.send(&out);
    assert_eq!(st.sent, 50);
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while got.len() < 50 && Instant::now() < end {
        spin(&mut tx.io, 5);
        got.extend(receive(&mut rx.io, 50 - got.len(), 5));
    }
    assert_eq!(got.len(), 50);
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(g[0], 7, "v7 header on the wire");
        assert_eq!(g.len() + 1, s.len());
        assert_eq!(&g[3..], &s[4..]);
    }
    assert_eq!(tx.counters.frames_out.load(Ordering::Relaxed), 50);
}

#[test]
fn a_full_queue_drops_and_never_blocks() {
    // a next hop that accepts but never reads: the queue fills, the rest is dropped
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to = stalled.local_addr().unwrap();
    let mut tx = node(
        TcpSettings {
            listen: None,
            egress_queue_frames: 100,
            ..TcpSettings::default()
        },
        ConnLimits::new(1, 1),
        PeerBook::new(PeerTransport::Tcp),
    );
    let f = frame(FrameVersion::V7, SizeClass::Ext32, 1);
    let out: Vec<Outgoing<'_>> = (0..40).map(|_| Outgoing { to, data: &f }).collect();
    let t = Instant::now();
    let (mut sent, mut failed) = (0, 0);
    for _ in 0..200 {
        let st = tx.io.send(&out);
        sent += st.sent;
        failed += st.failed;
        spin(&mut tx.io, 1);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "sending blocked");
    assert!(failed > 0, "the queue never filled");
    assert_eq!(sent + failed, 8000);
    assert_eq!(tx.counters.drops(TcpDrop::EgressQueueFull), failed as u64);
    drop(stalled);
}

#[test]
fn an_unreachable_next_hop_backs_off_and_counts() {
    // a port nobody listens on
    let to = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut tx = node(
        TcpSettings {
            listen: None,
            backoff_initial: Duration::from_millis(400),
            backoff_max: Duration::from_millis(800),
            ..TcpSettings::default()
        },
        ConnLimits::new(1, 1),
        PeerBook::new(PeerTransport::Tcp),
    );
    let f = frame(FrameVersion::V7, SizeClass::Ack, 1);
    assert_eq!(tx.io.send(&[Outgoing { to, data: &f }]).sent, 1);
    spin(&mut tx.io, 100);
    assert_eq!(tx.counters.drops(TcpDrop::EgressFailed), 1);
    // while backing off, frames wait (bounded) and go when a listener appears
    assert_eq!(tx.io.send(&[Outgoing { to, data: &f }]).sent, 1);
    let l = std::net::TcpListener::bind(to).unwrap();
    spin(&mut tx.io, 1000);
    l.set_nonblocking(true).unwrap();
    let (mut c, _) = l.accept().expect("the node reconnected");
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = vec![0u8; f.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, f);
}

fn public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

fn noise_pair(responder_secret: [u8; 32]) -> (Node, Node) {
    let rx = node(
        TcpSettings {
            noise_secret: Some(Zeroizing::new(responder_secret)),
            ..TcpSettings::default()
        },
        ConnLimits::new(64, 16),
        PeerBook::default(),
    );
    let to = rx.io.local_addr().unwrap();
    let mut book = PeerBook::new(PeerTransport::Tcp);
    book.insert(
        to,
        PeerInfo {
            node_id: 7,
            transport: PeerTransport::Tcp,
            noise_key: Some(public(&responder_secret)),
            noise_version: Some(1),
        },
    );
    let tx = node(
        TcpSettings {
            listen: None,
            noise_secret: Some(Zeroizing::new([3; 32])),
            ..TcpSettings::default()
        },
        ConnLimits::new(1, 1),
        book,
    );
    (rx, tx)
}

/// Sends `frames` from `tx` to `rx`'s listener and collects what `rx` receives.
fn exchange(rx: &mut Node, tx: &mut Node, frames: &[Vec<u8>], want: usize) -> Vec<Vec<u8>> {
    let to = rx.io.local_addr().unwrap();
    let out: Vec<Outgoing<'_>> = frames.iter().map(|d| Outgoing { to, data: d }).collect();
    tx.io.send(&out);
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < end {
        spin(&mut tx.io, 2);
        got.extend(receive(&mut rx.io, want - got.len(), 5));
    }
    got
}

#[test]
fn noise_egress_reaches_a_noise_responder() {
    let (mut rx, mut tx) = noise_pair([5; 32]);
    let frames: Vec<Vec<u8>> = (0..40)
        .map(|i| frame(FrameVersion::V7, SizeClass::Regular, i as u8))
        .collect();
    let got = exchange(&mut rx, &mut tx, &frames, 40);
    assert_eq!(got, frames);
    assert_eq!(rx.counters.noise_handshakes.load(Ordering::Relaxed), 1);
    assert_eq!(tx.counters.noise_handshakes.load(Ordering::Relaxed), 1);
    // a second batch reuses the connection
    let got = exchange(&mut rx, &mut tx, &frames[..3], 3);
    assert_eq!(got, frames[..3].to_vec());
    assert_eq!(rx.counters.accepted.load(Ordering::Relaxed), 1);
}

#[test]
fn a_wrong_noise_key_fails_and_is_counted() {
    let (mut rx, mut tx) = noise_pair([5; 32]);
    // the initiator believes in another responder key
    let to = rx.io.local_addr().unwrap();
    let mut book = PeerBook::new(PeerTransport::Tcp);
    book.insert(
        to,
        PeerInfo {
            node_id: 7,
            transport: PeerTransport::Tcp,
            noise_key: Some(public(&[6; 32])),
            noise_version: Some(1),
        },
    );
    tx.io.peers.store(Arc::new(book));
    let frames = vec![frame(FrameVersion::V7, SizeClass::Ack, 1)];
    let got = exchange(&mut rx, &mut tx, &frames, 1);
    assert!(got.is_empty());
    spin(&mut rx.io, 50);
    assert_eq!(rx.counters.drops(TcpDrop::NoiseFailed), 1);
    assert_eq!(rx.limits.open(), 0);
}

#[test]
fn a_noise_node_still_takes_plain_tcp() {
    let (mut rx, _) = noise_pair([5; 32]);
    let to = rx.io.local_addr().unwrap();
    let f = frame(FrameVersion::V8, SizeClass::Regular, 9);
    let mut c = StdStream::connect(to).unwrap();
    c.write_all(&f).unwrap();
    assert_eq!(receive(&mut rx.io, 1, 2000), vec![f]);
    assert_eq!(rx.counters.noise_handshakes.load(Ordering::Relaxed), 0);
}

#[test]
fn noise_without_a_key_is_refused() {
    let mut rx = plain_node();
    let to = rx.io.local_addr().unwrap();
    let mut c = StdStream::connect(to).unwrap();
    // a Noise header: version 1, XKpsk3, handshake, length 48
    c.write_all(&[1, 1, 0, 0, 48, 0, 0, 0]).unwrap();
    c.write_all(&[0; 48]).unwrap();
    spin(&mut rx.io, 50);
    assert_eq!(rx.counters.drops(TcpDrop::NoiseUnavailable), 1);
    let (mut rx2, _) = noise_pair([5; 32]);
    let mut c = StdStream::connect(rx2.io.local_addr().unwrap()).unwrap();
    c.write_all(&[1, 1, 0, 0, 48, 0, 0, 0]).unwrap();
    c.write_all(&[0xaa; 48]).unwrap();
    spin(&mut rx2.io, 50);
    assert_eq!(rx2.counters.drops(TcpDrop::NoiseFailed), 1);
}

#[test]
fn a_wait_shorter_than_a_millisecond_ends_on_time() {
    // `epoll_wait` counts whole milliseconds: without the timer every one of these waits would
    // last at least 1 ms. Never early, and the shortest of twenty well under a millisecond
    // (a loaded machine may stretch some of them).
    let mut n = plain_node();
    let want = Duration::from_micros(250);
    let mut shortest = Duration::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        n.io.wait(want).unwrap();
        let took = t.elapsed();
        assert!(
            took >= want,
            "woke after {took:?}, before the {want:?} asked"
        );
        shortest = shortest.min(took);
    }
    assert!(
        shortest < Duration::from_micros(900),
        "shortest of twenty 250 µs waits took {shortest:?}"
    );
}
