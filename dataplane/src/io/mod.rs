//! Batched UDP I/O for the workers: one socket per worker (`SO_REUSEPORT` on the shared listen
//! address), batched receive with UDP GRO and batched send with UDP GSO.
//!
//! Two backends sit behind [`UdpIo`]: io_uring ([`uring`]) and `recvmmsg`/`sendmmsg`
//! (`mmsg`), the fallback for hosts where io_uring is blocked (containers often block it).
//! Each backend receives into its own buffers; a received batch is a list of datagrams (GRO
//! super-packets are split into their segments) that the worker hands to the Sphinx core in
//! place. Sending takes datagrams already grouped by destination and uses one GSO message per
//! run of equal-sized datagrams to the same address.

pub mod memory;
pub(crate) mod mmsg;
pub mod socket;
pub mod stream;
pub mod tcp;
pub(crate) mod timer;
mod tx;
pub mod uring;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Which I/O backend a worker uses: defined once in the control crate (the config names it)
/// and re-exported here.
pub use mixplane_control::config::IoBackendKind;

/// One received datagram within the backend's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Offset in the backend's receive buffers (see [`UdpIo::frames_mut`]).
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// The largest UDP payload (and GRO super-packet) we receive.
pub const MAX_DATAGRAM: usize = 65_536;
/// At most this many segments in one GSO send (the kernel's UDP_MAX_SEGMENTS).
pub(crate) const MAX_GSO_SEGMENTS: usize = 64;
/// A GSO send carries at most this many bytes.
pub(crate) const MAX_GSO_BYTES: usize = 65_000;

/// A datagram to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Destination.
    pub to: SocketAddr,
    /// Bytes.
    pub data: &'a [u8],
}

/// Statistics of one `send` call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendStats {
    /// Datagrams handed to the kernel.
    pub sent: usize,
    /// Datagrams that failed (counted, dropped).
    pub failed: usize,
    /// Send syscalls or ring submissions made.
    pub calls: usize,
}

/// A worker's socket and its batched I/O.
pub trait UdpIo: Send {
    /// The backend's name, for logs and metrics.
    fn name(&self) -> &'static str;

    /// Waits up to `timeout` for datagrams and receives a batch of them into the backend's arena.
    /// Fills `out` (cleared first) with the datagrams; returns how many. Segments that an
    /// earlier receive held back (see [`Self::set_recv_limit`]) come first, and then it does
    /// not wait.
    fn recv(&mut self, timeout: Duration, out: &mut Vec<Datagram>) -> io::Result<usize>;

    /// The bytes of `datagrams`, some or all of those the last `recv` returned, mutable so
    /// that the Sphinx core can process them in place: one slice per datagram, in the same
    /// order. `datagrams` must be in ascending offset order (sort what `recv` returned by
    /// offset). The slices cover only buffers that the last `recv` completed, never memory the
    /// kernel may still be writing; they live until the next call that takes `&mut self`.
    ///
    /// # Panics
    ///
    /// If `datagrams` are out of order or overlap, or one is not within what the last `recv`
    /// received.
    fn frames_mut<'a>(&'a mut self, datagrams: &[Datagram]) -> Vec<&'a mut [u8]>;

    /// The bytes of one datagram that the last `recv` returned.
    ///
    /// # Panics
    ///
    /// If `d` is not within what the last `recv` received.
    fn datagram(&self, d: Datagram) -> &[u8];

    /// Sends datagrams. Callers pass them grouped by destination so that runs of equal-sized
    /// datagrams to one address go out as one GSO message.
    fn send(&mut self, batch: &[Outgoing<'_>]) -> SendStats;

    /// Caps how many datagrams each `recv` hands out: at least one, at most the batch the
    /// backend was opened with (a worker lowers it on a slow CPU so that a batch is processed
    /// within its time budget). The segments of a GRO super-packet past the cap stay in the
    /// backend's buffers and come first in the next `recv`. The default ignores the cap.
    fn set_recv_limit(&mut self, _max: usize) {}

    /// Receive buffers the kernel dropped because the socket's receive queue was full, so far
    /// (as reported by `SO_RXQ_OVFL`; 0 where the backend cannot tell). Each is one datagram,
    /// except a GRO super-packet (a GSO sender's burst, coalesced on the way in), which the
    /// kernel drops and counts as one: under GRO the figure is a lower bound on datagrams.
    fn rx_overflows(&self) -> u64 {
        0
    }

    /// Waits up to `timeout` while queued output makes progress: a stream transport writes
    /// what it holds and finishes handshakes; a datagram backend, which queues nothing, sleeps.
    fn idle(&mut self, timeout: Duration) {
        std::thread::sleep(timeout);
    }

    /// A descriptor that polls readable when datagrams arrive (the socket), so a worker with a
    /// second transport can wait on both at once; `None` where there is none.
    fn readiness_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// Calls `f` again for as long as it fails with `EINTR` (a signal arrived before the system
/// call did anything): the one place where the backends handle interrupted calls.
pub(crate) fn retry_if_interrupted<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// Splits `arena` into one disjoint mutable slice per datagram, for backends whose whole arena
/// is theirs between calls (no kernel writes into it outside a system call).
///
/// # Panics
///
/// If `datagrams` are out of ascending offset order, overlap, or reach past `arena`.
pub(crate) fn carve<'a>(arena: &'a mut [u8], datagrams: &[Datagram]) -> Vec<&'a mut [u8]> {
    let mut frames = Vec::with_capacity(datagrams.len());
    let mut rest = arena;
    let mut base = 0usize;
    for d in datagrams {
        let skip = d
            .offset
            .checked_sub(base)
            .expect("datagrams in ascending offset order, not overlapping");
        let (_, tail) = rest.split_at_mut(skip);
        let (frame, tail) = tail.split_at_mut(d.len);
        frames.push(frame);
        rest = tail;
        base = d.offset + d.len;
    }
    frames
}

/// The bytes of `d` in `arena`. Panics if `d` reaches past `arena`.
pub(crate) fn slice_of(arena: &[u8], d: Datagram) -> &[u8] {
    &arena[d.offset..][..d.len]
}

/// Splits `len` bytes received with GRO segment size `gso` (0: not coalesced) into datagrams.
pub(crate) fn split_gro(offset: usize, len: usize, gso: usize, out: &mut Vec<Datagram>) {
    if gso == 0 || gso >= len {
        out.push(Datagram { offset, len });
        return;
    }
    let mut at = 0;
    while at < len {
        let l = gso.min(len - at);
        out.push(Datagram {
            offset: offset + at,
            len: l,
        });
        at += l;
    }
}

/// Groups a send batch into GSO runs: consecutive datagrams to the same address where all but
/// the last have the same length, within the kernel's limits, for segments of at most
/// `max_seg(destination)` bytes (0: no GSO to that destination). Calls `f(start, end, seg_len)`.
pub(crate) fn gso_runs(
    batch: &[Outgoing<'_>],
    max_seg: impl Fn(&SocketAddr) -> usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let mut i = 0;
    while i < batch.len() {
        let seg = batch[i].data.len();
        let mut j = i + 1;
        let mut bytes = seg;
        if i + 1 < batch.len() && batch[i + 1].to == batch[i].to && seg <= max_seg(&batch[i].to) {
            while j < batch.len()
                && j - i < MAX_GSO_SEGMENTS
                && batch[j].to == batch[i].to
                && batch[j].data.len() <= seg
                && bytes + batch[j].data.len() <= MAX_GSO_BYTES
            {
                bytes += batch[j].data.len();
                let last = batch[j].data.len() < seg;
                j += 1;
                if last {
                    break;
                }
            }
        }
        f(i, j, seg);
        i = j;
    }
}

/// Opens the backend `kind` on a fresh socket bound to `addr`.
pub fn open(
    kind: IoBackendKind,
    addr: SocketAddr,
    batch: usize,
) -> io::Result<(Box<dyn UdpIo>, SocketAddr)> {
    let sock = socket::bind_udp(addr)?;
    let local = sock.local_addr()?;
    let io: Box<dyn UdpIo> = match kind {
        IoBackendKind::Mmsg => Box::new(mmsg::MmsgIo::new(sock, batch)),
        IoBackendKind::Uring => Box::new(uring::UringIo::new(sock, batch)?),
        IoBackendKind::Auto => match uring::UringIo::new(sock.try_clone()?, batch) {
            Ok(u) => Box::new(u),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable, falling back to recvmmsg/sendmmsg");
                Box::new(mmsg::MmsgIo::new(sock, batch))
            }
        },
    };
    Ok((io, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receives until `want` datagrams came or 5 s passed; returns the size of each receive.
    fn receive_sizes(io: &mut dyn UdpIo, want: usize) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut dg = Vec::new();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while sizes.iter().sum::<usize>() < want && std::time::Instant::now() < end {
            let n = io
                .recv(std::time::Duration::from_millis(50), &mut dg)
                .unwrap();
            if n > 0 {
                sizes.push(n);
            }
        }
        sizes
    }

    #[test]
    fn gro_receives_stop_at_the_batch_size() {
        for kind in [IoBackendKind::Mmsg, IoBackendKind::Uring] {
            let Ok((mut rx, to)) = open(kind, "127.0.0.1:0".parse().unwrap(), 8) else {
                eprintln!("{kind:?} unavailable here; skipping it");
                continue;
            };
            let (mut tx, _) =
                open(IoBackendKind::Mmsg, "127.0.0.1:0".parse().unwrap(), 64).unwrap();
            let data = [7u8; 100];
            let run: Vec<Outgoing<'_>> = (0..20).map(|_| Outgoing { to, data: &data }).collect();
            let gso_runs = |tx: &mut Box<dyn UdpIo>| {
                for _ in 0..4 {
                    assert_eq!(tx.send(&run).sent, 20);
                }
            };
            // four GSO messages of 20 reach the GRO socket as four super-packets; no receive
            // hands out more than 8, the first (before recvmmsg learns the packing) included
            for _ in 0..2 {
                gso_runs(&mut tx);
                let sizes = receive_sizes(rx.as_mut(), 80);
                assert_eq!(sizes.iter().sum::<usize>(), 80, "{kind:?}");
                assert!(sizes.iter().all(|&n| n <= 8), "{kind:?}: {sizes:?}");
            }
            // plain datagrams: the receives grow back to the batch
            let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for _ in 0..40 {
                plain.send_to(&data, to).unwrap();
            }
            let sizes = receive_sizes(rx.as_mut(), 40);
            assert_eq!(sizes.iter().sum::<usize>(), 40, "{kind:?}");
            assert!(sizes.contains(&8), "{kind:?}: {sizes:?}");
        }
    }

    /// A receiver of `kind` with GRO on, opened for batches of `batch` and capped at `cap`;
    /// `None` (with the reason printed) where the backend or UDP GRO is unavailable.
    fn gro_receiver(
        kind: IoBackendKind,
        batch: usize,
        cap: usize,
    ) -> Option<(Box<dyn UdpIo>, SocketAddr)> {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Err(e) = socket::set_gro(&probe, true) {
            eprintln!("UDP GRO unavailable here ({e}); skipping");
            return None;
        }
        match open(kind, "127.0.0.1:0".parse().unwrap(), batch) {
            Ok((mut rx, to)) => {
                rx.set_recv_limit(cap);
                Some((rx, to))
            }
            Err(e) => {
                eprintln!("{kind:?} unavailable here ({e}); skipping it");
                None
            }
        }
    }

    /// Datagram `i` of GSO burst `b`: 1000 bytes, `b` and `i` in the first four, then a fill
    /// that differs from burst to burst.
    fn burst_datagram(b: u16, i: u16) -> Vec<u8> {
        let mut d = vec![(b as u8).wrapping_mul(31) ^ i as u8; 1000];
        d[..2].copy_from_slice(&b.to_be_bytes());
        d[2..4].copy_from_slice(&i.to_be_bytes());
        d
    }

    /// Sends bursts `bursts` of 27 datagrams to `to`, each as one GSO message (loopback hands
    /// it to a GRO receiver as one super-packet); returns what was sent, in order.
    fn send_bursts(
        tx: &mut dyn UdpIo,
        to: SocketAddr,
        bursts: std::ops::Range<u16>,
    ) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for b in bursts {
            let data: Vec<Vec<u8>> = (0..27).map(|i| burst_datagram(b, i)).collect();
            let run: Vec<Outgoing<'_>> = data.iter().map(|d| Outgoing { to, data: d }).collect();
            assert_eq!(tx.send(&run).sent, 27);
            all.extend(data);
        }
        all
    }

    /// One receive, checked: at most `cap` datagrams, each also reachable through
    /// `frames_mut` (the worker's path) with the same bytes. Returns their bytes in the order
    /// `recv` gave them and how many of them directly follow the one before in the arena
    /// (segments of one super-packet).
    fn recv_checked(
        rx: &mut dyn UdpIo,
        cap: usize,
        timeout: std::time::Duration,
    ) -> (Vec<Vec<u8>>, usize) {
        let mut dg = Vec::new();
        let n = rx.recv(timeout, &mut dg).unwrap();
        assert_eq!(n, dg.len());
        assert!(n <= cap, "a receive handed out {n}, past the cap of {cap}");
        let got: Vec<Vec<u8>> = dg.iter().map(|d| rx.datagram(*d).to_vec()).collect();
        let adjacent = dg
            .windows(2)
            .filter(|w| w[1].offset == w[0].offset + w[0].len)
            .count();
        let mut sorted = dg.clone();
        sorted.sort_unstable_by_key(|d| d.offset);
        for (d, f) in sorted.iter().zip(rx.frames_mut(&sorted)) {
            let k = dg.iter().position(|x| x == d).unwrap();
            assert_eq!(&*f, &got[k][..]);
        }
        (got, adjacent)
    }

    #[test]
    fn gro_receives_never_pass_the_cap_and_lose_nothing() {
        for kind in [IoBackendKind::Mmsg, IoBackendKind::Uring] {
            // an arena larger than the cap (the worker's case) and one just as large
            for batch in [32, 8] {
                let Some((mut rx, to)) = gro_receiver(kind, batch, 8) else {
                    continue;
                };
                let (mut tx, _) =
                    open(IoBackendKind::Mmsg, "127.0.0.1:0".parse().unwrap(), 64).unwrap();
                // the first receive meets full super-packets at once (recvmmsg has not
                // learnt the packing), then bursts keep coming while tails are held
                let mut sent = send_bursts(tx.as_mut(), to, 0..6);
                let mut got = Vec::new();
                let mut coalesced = 0;
                let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
                let mut next_burst = 6;
                while got.len() < sent.len() && std::time::Instant::now() < end {
                    let (batch_got, adjacent) =
                        recv_checked(rx.as_mut(), 8, std::time::Duration::from_millis(50));
                    got.extend(batch_got);
                    coalesced += adjacent;
                    if next_burst < 12 {
                        sent.extend(send_bursts(tx.as_mut(), to, next_burst..next_burst + 1));
                        next_burst += 1;
                    }
                }
                assert!(coalesced > 0, "{kind:?}: loopback coalesced nothing");
                assert_eq!(got.len(), sent.len(), "{kind:?}, batch {batch}");
                // nothing lost, duplicated, reordered or overwritten while held
                assert!(got == sent, "{kind:?}, batch {batch}: bytes differ");
            }
        }
    }

    #[test]
    fn a_held_tail_comes_out_without_new_traffic_or_waiting() {
        for kind in [IoBackendKind::Mmsg, IoBackendKind::Uring] {
            let Some((mut rx, to)) = gro_receiver(kind, 32, 8) else {
                continue;
            };
            let (mut tx, _) =
                open(IoBackendKind::Mmsg, "127.0.0.1:0".parse().unwrap(), 64).unwrap();
            let sent = send_bursts(tx.as_mut(), to, 0..1);
            std::thread::sleep(std::time::Duration::from_millis(20));
            let (mut got, _) = recv_checked(rx.as_mut(), 8, std::time::Duration::from_secs(2));
            assert_eq!(got.len(), 8, "{kind:?}");
            // nothing new arrives: each receive hands out held segments at once, not after
            // its (long) timeout
            let mut sizes = Vec::new();
            for _ in 0..3 {
                let t = std::time::Instant::now();
                let (more, _) = recv_checked(rx.as_mut(), 8, std::time::Duration::from_secs(2));
                assert!(
                    t.elapsed() < std::time::Duration::from_secs(1),
                    "{kind:?}: a receive with held segments waited"
                );
                sizes.push(more.len());
                got.extend(more);
            }
            assert_eq!(sizes, [8, 8, 3], "{kind:?}");
            assert!(got == sent, "{kind:?}: bytes differ");
            let (rest, _) = recv_checked(rx.as_mut(), 8, std::time::Duration::from_millis(30));
            assert!(rest.is_empty(), "{kind:?}");
        }
    }

    #[test]
    fn carve_hands_out_each_datagram_once() {
        let mut arena: Vec<u8> = (0..32).collect();
        let dg = [
            Datagram { offset: 2, len: 3 },
            Datagram { offset: 5, len: 0 },
            Datagram { offset: 10, len: 4 },
        ];
        let frames = carve(&mut arena, &dg);
        assert_eq!(frames.len(), 3);
        assert_eq!(&*frames[0], &[2, 3, 4]);
        assert!(frames[1].is_empty());
        assert_eq!(&*frames[2], &[10, 11, 12, 13]);
        assert_eq!(slice_of(&arena, dg[2]), &[10, 11, 12, 13]);
    }

    #[test]
    #[should_panic(expected = "ascending offset order")]
    fn carve_refuses_overlapping_datagrams() {
        let mut arena = [0u8; 16];
        let dg = [
            Datagram { offset: 2, len: 4 },
            Datagram { offset: 4, len: 4 },
        ];
        let _ = carve(&mut arena, &dg);
    }

    #[test]
    fn gro_split() {
        let mut v = Vec::new();
        split_gro(100, 10, 0, &mut v);
        split_gro(200, 10, 4, &mut v);
        assert_eq!(
            v,
            vec![
                Datagram {
                    offset: 100,
                    len: 10
                },
                Datagram {
                    offset: 200,
                    len: 4
                },
                Datagram {
                    offset: 204,
                    len: 4
                },
                Datagram {
                    offset: 208,
                    len: 2
                },
            ]
        );
    }

    #[test]
    fn runs_group_by_address_and_size() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let big = [0u8; 100];
        let small = [0u8; 50];
        let batch = [
            Outgoing { to: a, data: &big },
            Outgoing { to: a, data: &big },
            Outgoing {
                to: a,
                data: &small,
            },
            Outgoing { to: a, data: &big },
            Outgoing { to: b, data: &big },
        ];
        let mut runs = Vec::new();
        gso_runs(&batch, |_| usize::MAX, |s, e, l| runs.push((s, e, l)));
        assert_eq!(runs, vec![(0, 3, 100), (3, 4, 100), (4, 5, 100)]);
        runs.clear();
        gso_runs(&batch, |_| 0, |s, e, l| runs.push((s, e, l)));
        assert_eq!(runs.len(), 5);
        // GSO off for `b` only: `a`'s runs are unchanged
        runs.clear();
        gso_runs(
            &batch,
            |to| if *to == b { 0 } else { usize::MAX },
            |s, e, l| runs.push((s, e, l)),
        );
        assert_eq!(runs, vec![(0, 3, 100), (3, 4, 100), (4, 5, 100)]);
        runs.clear();
        gso_runs(
            &batch,
            |to| if *to == a { 99 } else { usize::MAX },
            |s, e, l| runs.push((s, e, l)),
        );
        assert_eq!(runs.len(), 5);
        let many: Vec<_> = (0..70)
            .map(|_| Outgoing {
                to: a,
                data: &small[..],
            })
            .collect();
        runs.clear();
        gso_runs(&many, |_| usize::MAX, |s, e, l| runs.push((s, e, l)));
        assert_eq!(runs, vec![(0, 64, 50), (64, 70, 50)]);
    }
}
