//! Verloc: the round-trip measurement Nym nodes run on each other (TCP, default port 1790),
//! in the packet format of Nym's `common/verloc` (nymtech/nym).
//!
//! * Echo (104 bytes): `seq u64 BE ‖ sender ed25519 public key (32) ‖ signature (64)`, the
//!   signature by the sender over the first 40 bytes.
//! * Reply (168 bytes): the echo ‖ the responder's signature over the whole 104-byte echo.
//!
//! Echoes follow each other on one connection with no framing; each is answered at once.
//!
//! The [`VerlocResponder`] checks each echo's signature: an echo whose key or signature is
//! bad is counted and its connection closed. It is bounded: at most
//! [`VerlocLimits::max_connections`] at once (more are closed at once and counted), an idle
//! timeout per echo, and a cap on echoes per connection. [`measure`] is the other side: it
//! sends echoes to a node and checks its replies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::metrics::PromText;

/// Length of an echo packet.
pub const ECHO_LEN: usize = 8 + 32 + 64;
/// Length of a reply packet.
pub const REPLY_LEN: usize = ECHO_LEN + 64;
/// The port nym-node listens on for verloc.
pub const DEFAULT_PORT: u16 = 1790;

/// Why a packet or an exchange was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerlocError {
    /// The sender's public key is not a valid ed25519 point.
    #[error("malformed sender identity")]
    MalformedSender,
    /// The echo's signature does not verify.
    #[error("invalid echo signature")]
    BadEchoSignature,
    /// The reply's signature does not verify with the responder's key.
    #[error("invalid reply signature")]
    BadReplySignature,
    /// The reply does not carry the echo that was sent.
    #[error("the reply does not echo the packet sent")]
    WrongEcho,
    /// A socket error.
    #[error("verloc on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Builds an echo packet with sequence number `seq`, signed by `key`.
pub fn echo_packet(seq: u64, key: &SigningKey) -> [u8; ECHO_LEN] {
    let mut p = [0u8; ECHO_LEN];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p[8..40].copy_from_slice(key.verifying_key().as_bytes());
    let sig = key.sign(&p[..40]);
    p[40..].copy_from_slice(&sig.to_bytes());
    p
}

/// Checks an echo packet's signature; returns its sequence number and sender.
pub fn check_echo(p: &[u8; ECHO_LEN]) -> Result<(u64, VerifyingKey), VerlocError> {
    let seq = u64::from_be_bytes(p[..8].try_into().unwrap_or_default());
    let sender_bytes: [u8; 32] = p[8..40].try_into().unwrap_or_default();
    let sender =
        VerifyingKey::from_bytes(&sender_bytes).map_err(|_| VerlocError::MalformedSender)?;
    let sig = Signature::from_slice(&p[40..]).map_err(|_| VerlocError::BadEchoSignature)?;
    sender
        .verify(&p[..40], &sig)
        .map_err(|_| VerlocError::BadEchoSignature)?;
    Ok((seq, sender))
}

/// The reply to a (checked) echo: the echo and `key`'s signature over it.
pub fn reply_packet(echo: &[u8; ECHO_LEN], key: &SigningKey) -> [u8; REPLY_LEN] {
    let mut r = [0u8; REPLY_LEN];
    r[..ECHO_LEN].copy_from_slice(echo);
    r[ECHO_LEN..].copy_from_slice(&key.sign(echo).to_bytes());
    r
}

/// Checks a reply from `responder`: the echo inside it and the responder's signature.
/// Returns the echo's sequence number.
pub fn check_reply(r: &[u8; REPLY_LEN], responder: &VerifyingKey) -> Result<u64, VerlocError> {
    let echo: &[u8; ECHO_LEN] = r[..ECHO_LEN]
        .try_into()
        .map_err(|_| VerlocError::WrongEcho)?;
    let (seq, _) = check_echo(echo)?;
    let sig = Signature::from_slice(&r[ECHO_LEN..]).map_err(|_| VerlocError::BadReplySignature)?;
    responder
        .verify(echo, &sig)
        .map_err(|_| VerlocError::BadReplySignature)?;
    Ok(seq)
}

/// How much the responder takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerlocLimits {
    /// Connections served at once. Default 64.
    pub max_connections: usize,
    /// How long a connection may wait for its next echo. Default 5 s (nym-node's measurer sends
    /// one every 50 ms).
    pub idle_timeout: Duration,
    /// Echoes answered per connection before it is closed. Default 1000 (nym-node sends 100).
    pub max_echoes_per_connection: u64,
}

impl Default for VerlocLimits {
    fn default() -> Self {
        VerlocLimits {
            max_connections: 64,
            idle_timeout: Duration::from_secs(5),
            max_echoes_per_connection: 1000,
        }
    }
}

/// What the responder has done.
#[derive(Debug, Default)]
pub struct VerlocCounters {
    /// Echoes answered.
    pub echoes_answered: AtomicU64,
    /// Echoes refused for a bad key or signature (their connections closed).
    pub bad_echoes: AtomicU64,
    /// Connections closed at once because the limit was reached.
    pub connections_refused: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
}

impl VerlocCounters {
    /// Writes the counters as Prometheus series (`mixplane_verloc_*`).
    pub fn write_metrics(&self, p: &mut PromText) {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let series = [
            (
                "echoes_answered",
                "Verloc echoes answered.",
                &self.echoes_answered,
            ),
            (
                "bad_echoes",
                "Verloc echoes refused: bad key or signature.",
                &self.bad_echoes,
            ),
            (
                "connections",
                "Verloc connections accepted.",
                &self.connections,
            ),
            (
                "connections_refused",
                "Verloc connections closed at once: too many.",
                &self.connections_refused,
            ),
        ];
        for (name, help, v) in series {
            p.counter(
                &format!("mixplane_verloc_{name}_total"),
                help,
                &[(&[], c(v))],
            );
        }
    }
}

/// A running verloc responder.
#[derive(Debug)]
pub struct VerlocResponder {
    addr: SocketAddr,
    counters: Arc<VerlocCounters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    key: Arc<SigningKey>,
    limits: VerlocLimits,
    counters: Arc<VerlocCounters>,
    active: AtomicUsize,
}

/// Answers echoes on one connection until the peer closes, goes idle, sends a bad echo or
/// reaches the per-connection cap.
fn serve(mut s: TcpStream, sh: &Shared) {
    let t = sh.limits.idle_timeout;
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(t)).is_err()
        || s.set_write_timeout(Some(t)).is_err()
    {
        return;
    }
    let _ = s.set_nodelay(true);
    let mut echo = [0u8; ECHO_LEN];
    for _ in 0..sh.limits.max_echoes_per_connection {
        if s.read_exact(&mut echo).is_err() {
            return;
        }
        if let Err(e) = check_echo(&echo) {
            sh.counters.bad_echoes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "verloc echo refused; closing the connection");
            return;
        }
        if s.write_all(&reply_packet(&echo, &sh.key)).is_err() {
            return;
        }
        sh.counters.echoes_answered.fetch_add(1, Ordering::Relaxed);
    }
}

fn accept_loop(listener: TcpListener, sh: Arc<Shared>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::debug!(error = %e, "verloc accept failed");
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if sh.active.fetch_add(1, Ordering::AcqRel) >= sh.limits.max_connections {
            sh.active.fetch_sub(1, Ordering::AcqRel);
            sh.counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            continue; // dropped: closed
        }
        sh.counters.connections.fetch_add(1, Ordering::Relaxed);
        let sh2 = sh.clone();
        let spawned = std::thread::Builder::new()
            .name("mixplane-verloc-conn".into())
            .spawn(move || {
                serve(s, &sh2);
                sh2.active.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            sh.active.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(error = %e, "verloc connection thread not started");
        }
    }
}

impl VerlocResponder {
    /// Starts answering echoes on `addr`, signing replies with `key` (the node's identity).
    pub fn start(
        addr: SocketAddr,
        key: Arc<SigningKey>,
        limits: VerlocLimits,
    ) -> Result<VerlocResponder, VerlocError> {
        let io = |source| VerlocError::Io { addr, source };
        let listener = TcpListener::bind(addr).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let local = listener.local_addr().map_err(io)?;
        let counters = Arc::new(VerlocCounters::default());
        let sh = Arc::new(Shared {
            key,
            limits,
            counters: counters.clone(),
            active: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mixplane-verloc".into())
            .spawn(move || accept_loop(listener, sh, s2))
            .map_err(io)?;
        Ok(VerlocResponder {
            addr: local,
            counters,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn counters(&self) -> Arc<VerlocCounters> {
        self.counters.clone()
    }

    /// Stops accepting and waits for the accept thread (open connections end on their own,
    /// within the idle timeout).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VerlocResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Round-trip times of one measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rtt {
    /// Fastest.
    pub min: Duration,
    /// Mean.
    pub mean: Duration,
    /// Slowest.
    pub max: Duration,
}

/// Measures the round trip to the verloc responder at `addr` whose identity is `responder`:
/// sends `packets` echoes (consecutive sequence numbers from `first_seq`, signed by `key`),
/// one at a time, each reply checked. `timeout` bounds the connect and each round trip.
pub fn measure(
    addr: SocketAddr,
    responder: &VerifyingKey,
    key: &SigningKey,
    first_seq: u64,
    packets: usize,
    timeout: Duration,
) -> Result<Rtt, VerlocError> {
    let io = |source| VerlocError::Io { addr, source };
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let _ = s.set_nodelay(true);
    let mut rtts = Vec::with_capacity(packets);
    let mut reply = [0u8; REPLY_LEN];
    for i in 0..packets as u64 {
        let echo = echo_packet(first_seq.wrapping_add(i), key);
        let t = Instant::now();
        s.write_all(&echo).map_err(io)?;
        s.read_exact(&mut reply).map_err(io)?;
        rtts.push(t.elapsed());
        check_reply(&reply, responder)?;
        if reply[..ECHO_LEN] != echo {
            return Err(VerlocError::WrongEcho);
        }
    }
    let n = rtts.len().max(1) as u32;
    Ok(Rtt {
        min: rtts.iter().copied().min().unwrap_or_default(),
        mean: rtts.iter().sum::<Duration>() / n,
        max: rtts.iter().copied().max().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn packets_have_nyms_layout_and_signatures() {
        let (a, b) = (key(1), key(2));
        let echo = echo_packet(0x0102_0304_0506_0708, &a);
        assert_eq!(&echo[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&echo[8..40], a.verifying_key().as_bytes());
        let sig = Signature::from_slice(&echo[40..]).unwrap();
        a.verifying_key().verify(&echo[..40], &sig).unwrap();
        let (seq, sender) = check_echo(&echo).unwrap();
        assert_eq!((seq, sender), (0x0102_0304_0506_0708, a.verifying_key()));
        let reply = reply_packet(&echo, &b);
        assert_eq!(&reply[..ECHO_LEN], &echo);
        assert_eq!(check_reply(&reply, &b.verifying_key()).unwrap(), seq);
        assert!(matches!(
            check_reply(&reply, &a.verifying_key()),
            Err(VerlocError::BadReplySignature)
        ));
        let mut bad = echo;
        bad[3] ^= 1; // the sequence number is signed
        assert!(matches!(
            check_echo(&bad),
            Err(VerlocError::BadEchoSignature)
        ));
    }

    #[test]
    fn the_responder_answers_and_closes_on_a_bad_echo() {
        let node = Arc::new(key(7));
        let limits = VerlocLimits {
            max_connections: 2,
            idle_timeout: Duration::from_secs(2),
            max_echoes_per_connection: 10,
        };
        let r =
            VerlocResponder::start("127.0.0.1:0".parse().unwrap(), node.clone(), limits).unwrap();
        let a = r.local_addr();
        let me = key(8);
        let t = Duration::from_secs(2);
        let rtt = measure(a, &node.verifying_key(), &me, 5, 10, t).unwrap();
        assert!(rtt.min <= rtt.mean && rtt.mean <= rtt.max);
        // the per-connection cap: the 11th echo gets no answer
        assert!(measure(a, &node.verifying_key(), &me, 5, 11, t).is_err());
        // a wrong responder key is noticed
        assert!(matches!(
            measure(a, &me.verifying_key(), &me, 1, 1, t),
            Err(VerlocError::BadReplySignature)
        ));
        // a forged echo: counted, and the connection closed without a reply
        let mut s = TcpStream::connect(a).unwrap();
        let mut forged = echo_packet(1, &me);
        forged[0] ^= 0x80;
        s.write_all(&forged).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; REPLY_LEN];
        assert!(matches!(s.read(&mut buf), Ok(0)));
        let c = r.counters();
        assert_eq!(c.bad_echoes.load(Ordering::Relaxed), 1);
        assert_eq!(c.echoes_answered.load(Ordering::Relaxed), 10 + 10 + 1);
        r.stop();
    }
}
