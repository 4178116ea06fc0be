//! One TCP connection's state: what its bytes mean (plain Nym frames or Noise), the partial frame
//! it holds, and what it still has to write. No sockets here: the reactor in `mod.rs` reads and
//! writes, this file decides.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::io::stream::{NoiseLink, frame_len, starts_noise};

use super::limits::TcpDrop;

/// The largest Nym frame (v8 header and an ext32 Sphinx packet).
pub(crate) const MAX_FRAME: usize = 4 + 33_133;

/// What an inbound connection's bytes are.
pub(crate) enum Link {
    /// Nothing received yet: the first byte says plain or Noise.
    Undecided,
    /// Nym frames back to back.
    Plain,
    /// Nym frames inside Noise transport messages (handshake first).
    Noise(Box<NoiseLink>),
}

/// Where an outbound connection stands.
pub(crate) enum Dial {
    /// Waiting for the TCP connect to finish (since then).
    Connecting(Instant),
    /// Connected (since then); with Noise, handshaking until the link says it is established.
    Open(Instant),
    /// The connection failed; a new one is tried after this instant if frames are waiting.
    Backoff(Instant),
}

/// The receive side: stream bytes (plaintext) not yet cut into frames.
#[derive(Default)]
pub(crate) struct RxBuf {
    bytes: Vec<u8>,
    start: usize,
    /// Since when a frame has been incomplete.
    partial_since: Option<Instant>,
}

impl RxBuf {
    pub(crate) fn extend(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
    }

    /// The vector plaintext is appended to (Noise decrypts straight into it).
    pub(crate) fn tail(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Bytes held.
    pub(crate) fn held(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Cuts whole frames off the front and hands each to `take` until it returns false (the
    /// batch is full). Returns an error if the stream is not Nym frames.
    pub(crate) fn frames(
        &mut self,
        now: Instant,
        mut take: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), TcpDrop> {
        loop {
            let rest = &self.bytes[self.start..];
            let Some(n) = frame_len(rest).map_err(|_| TcpDrop::BadFrame)? else {
                break;
            };
            if rest.len() < n || !take(&rest[..n]) {
                break;
            }
            self.start += n;
            self.partial_since = None;
        }
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
            self.partial_since = None;
        } else {
            self.partial_since.get_or_insert(now);
            if self.start > 0 && self.bytes.len() > 2 * MAX_FRAME {
                self.bytes.drain(..self.start);
                self.start = 0;
            }
        }
        Ok(())
    }

    /// Whether a complete frame is waiting (the batch was full last time).
    pub(crate) fn has_frame(&self) -> bool {
        matches!(frame_len(&self.bytes[self.start..]), Ok(Some(n)) if self.held() >= n)
    }

    /// Whether a partial frame has been held for longer than `limit`.
    pub(crate) fn stalled(&self, now: Instant, limit: Duration) -> bool {
        self.partial_since
            .is_some_and(|t| now.saturating_duration_since(t) > limit)
    }
}

/// The send side: wire bytes to write, and how many frames each queued run holds.
#[derive(Default)]
pub(crate) struct TxBuf {
    bytes: Vec<u8>,
    off: usize,
    /// Stream offset (bytes ever queued) at which each run of frames ends, and its frame count.
    runs: VecDeque<(u64, u32)>,
    queued_total: u64,
    written_total: u64,
    frames: usize,
}

impl TxBuf {
    /// Wire bytes that carry no frames (Noise handshake messages).
    pub(crate) fn push_control(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let before = self.bytes.len();
        f(&mut self.bytes);
        self.queued_total += (self.bytes.len() - before) as u64;
    }

    /// Wire bytes carrying `frames` frames.
    pub(crate) fn push_frames<E>(
        &mut self,
        frames: u32,
        f: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let before = self.bytes.len();
        let r = f(&mut self.bytes);
        self.queued_total += (self.bytes.len() - before) as u64;
        if frames > 0 {
            self.runs.push_back((self.queued_total, frames));
            self.frames += frames as usize;
        }
        r
    }

    /// What is left to write.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.bytes[self.off..]
    }

    /// Records that `n` bytes were written; returns how many frames went out whole.
    pub(crate) fn advance(&mut self, n: usize) -> u64 {
        self.off += n;
        self.written_total += n as u64;
        let mut done = 0u64;
        while let Some(&(end, k)) = self.runs.front() {
            if end > self.written_total {
                break;
            }
            self.runs.pop_front();
            self.frames -= k as usize;
            done += u64::from(k);
        }
        if self.off == self.bytes.len() {
            self.bytes.clear();
            self.off = 0;
        } else if self.off > self.bytes.len() / 2 {
            self.bytes.drain(..self.off);
            self.off = 0;
        }
        done
    }

    /// Frames queued and not yet written whole.
    pub(crate) fn frames(&self) -> usize {
        self.frames
    }

    /// Forgets everything queued; returns the frames lost.
    pub(crate) fn clear(&mut self) -> usize {
        let lost = self.frames;
        *self = TxBuf::default();
        lost
    }
}

/// What one inbound connection's new bytes did.
pub(crate) enum Inbound {
    /// Keep reading.
    Ok,
    /// Close it, counting this reason.
    Close(TcpDrop),
}

/// Feeds newly read `wire` bytes of an inbound connection through its link into `rx`; handshake
/// replies go to `tx`. `noise_key` is the node's Noise secret (none: Noise is refused).
pub(crate) fn inbound_bytes(
    link: &mut Link,
    wire: &[u8],
    rx: &mut RxBuf,
    tx: &mut TxBuf,
    noise_key: Option<&[u8; 32]>,
    handshakes: &mut u64,
) -> Inbound {
    if let Link::Undecided = link {
        let Some(&first) = wire.first() else {
            return Inbound::Ok;
        };
        if starts_noise(first) {
            let Some(key) = noise_key else {
                return Inbound::Close(TcpDrop::NoiseUnavailable);
            };
            match NoiseLink::responder(key) {
                Ok(l) => *link = Link::Noise(Box::new(l)),
                Err(_) => return Inbound::Close(TcpDrop::NoiseFailed),
            }
        } else {
            *link = Link::Plain;
        }
    }
    match link {
        Link::Undecided => Inbound::Ok,
        Link::Plain => {
            rx.extend(wire);
            Inbound::Ok
        }
        Link::Noise(l) => {
            let was = l.is_established();
            let mut r = Ok(());
            tx.push_control(|out| r = l.receive(wire, out, rx.tail()));
            if r.is_err() {
                return Inbound::Close(TcpDrop::NoiseFailed);
            }
            if !was && l.is_established() {
                *handshakes += 1;
            }
            Inbound::Ok
        }
    }
}

/// Whether an inbound connection is still without a first byte or a finished handshake.
pub(crate) fn handshaking(link: &Link) -> bool {
    match link {
        Link::Undecided => true,
        Link::Plain => false,
        Link::Noise(l) => !l.is_established(),
    }
}

/// An outbound connection to one next hop, with the frames waiting for it.
pub(crate) struct Outbound {
    pub(crate) peer: SocketAddr,
    pub(crate) dial: Dial,
    /// The Noise link (present from the first handshake message on) when the peer has a key.
    pub(crate) noise: Option<Box<NoiseLink>>,
    /// Frames (with headers) waiting for the connection or its handshake: plaintext.
    pub(crate) waiting: Vec<u8>,
    pub(crate) waiting_frames: u32,
    pub(crate) attempts: u32,
}

impl Outbound {
    /// Whether frames can go straight to the wire (encrypted if Noise).
    pub(crate) fn ready(&self) -> bool {
        matches!(self.dial, Dial::Open(_)) && self.noise.as_ref().is_none_or(|l| l.is_established())
    }
}

/// Reconnection backoff after `attempts` failures: `initial` doubling up to `max`.
pub(crate) fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(version: u8, class: u8, fill: u8) -> Vec<u8> {
        let len = match class {
            1 => 2413,
            2 => 386,
            _ => unreachable!(),
        };
        let mut f = vec![version, class, 0];
        if version == 8 {
            f.push(0);
        }
        f.resize(f.len() + len, fill);
        f
    }

    #[test]
    fn frames_are_cut_at_any_split_and_partials_are_timed() {
        let mut stream = frame(7, 1, 1);
        stream.extend(frame(8, 2, 2));
        stream.extend(frame(8, 1, 3));
        let t0 = Instant::now();
        for split in [1, 2, 3, 100, 2416, 2417, 2418, 2805, stream.len() - 1] {
            let mut rx = RxBuf::default();
            let mut got = Vec::new();
            rx.extend(&stream[..split]);
            rx.frames(t0, |f| {
                got.push(f.to_vec());
                true
            })
            .unwrap();
            assert!(!rx.stalled(t0 + Duration::from_millis(5), Duration::from_millis(10)));
            let partial = rx.held() > 0;
            assert_eq!(
                rx.stalled(t0 + Duration::from_millis(11), Duration::from_millis(10)),
                partial
            );
            rx.extend(&stream[split..]);
            rx.frames(t0, |f| {
                got.push(f.to_vec());
                true
            })
            .unwrap();
            assert_eq!(got.concat(), stream, "split {split}");
            assert_eq!(got.len(), 3);
            assert_eq!(rx.held(), 0);
            assert!(!rx.stalled(t0 + Duration::from_secs(60), Duration::from_millis(10)));
        }
    }

    #[test]
    fn a_full_batch_leaves_frames_for_later() {
        let mut rx = RxBuf::default();
        rx.extend(&frame(7, 2, 1));
        rx.extend(&frame(7, 2, 2));
        let mut n = 0;
        rx.frames(Instant::now(), |_| {
            n += 1;
            n < 2
        })
        .unwrap();
        assert_eq!(n, 2);
        assert!(rx.has_frame());
        rx.frames(Instant::now(), |f| {
            assert_eq!(f[3], 2);
            true
        })
        .unwrap();
        assert!(!rx.has_frame());
    }

    #[test]
    fn garbage_is_a_bad_frame() {
        let mut rx = RxBuf::default();
        rx.extend(&[9, 1, 0, 0, 0]);
        assert_eq!(rx.frames(Instant::now(), |_| true), Err(TcpDrop::BadFrame));
        let mut rx = RxBuf::default();
        rx.extend(&[7, 6, 0]); // outfox
        assert_eq!(rx.frames(Instant::now(), |_| true), Err(TcpDrop::BadFrame));
    }

    #[test]
    fn tx_counts_frames_written_whole() {
        let mut tx = TxBuf::default();
        tx.push_control(|b| b.extend_from_slice(&[0; 10]));
        tx.push_frames::<()>(2, |b| {
            b.extend_from_slice(&[1; 20]);
            Ok(())
        })
        .unwrap();
        tx.push_frames::<()>(1, |b| {
            b.extend_from_slice(&[2; 5]);
            Ok(())
        })
        .unwrap();
        assert_eq!(tx.frames(), 3);
        assert_eq!(tx.advance(29), 0);
        assert_eq!(tx.advance(1), 2);
        assert_eq!(tx.pending(), &[2; 5]);
        assert_eq!(tx.advance(5), 1);
        assert_eq!(tx.frames(), 0);
        assert!(tx.pending().is_empty());
        tx.push_frames::<()>(4, |b| {
            b.push(0);
            Ok(())
        })
        .unwrap();
        assert_eq!(tx.clear(), 4);
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let i = Duration::from_secs(10);
        let m = Duration::from_secs(300);
        assert_eq!(backoff(1, i, m), i);
        assert_eq!(backoff(2, i, m), 2 * i);
        assert_eq!(backoff(3, i, m), 4 * i);
        assert_eq!(backoff(9, i, m), m);
        assert_eq!(backoff(u32::MAX, i, m), m);
    }
}
