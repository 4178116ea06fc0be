//! What the TCP transport shares between workers and what it counts: admission limits, the peer
//! book (which transport and Noise key each next hop has) and per-worker counters.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub use mixplane_control::topology::{PeerInfo, PeerTransport};

/// Next hops by address, and the transport of those it does not know.
#[derive(Debug, Clone)]
pub struct PeerBook {
    peers: HashMap<SocketAddr, PeerInfo>,
    noise_by_ip: HashMap<IpAddr, [u8; 32]>,
    unknown: PeerTransport,
}

impl Default for PeerBook {
    /// Every next hop over UDP: mixplane nodes among themselves.
    fn default() -> Self {
        PeerBook::new(PeerTransport::Udp)
    }
}

impl PeerBook {
    /// A book where every next hop uses `unknown` and none has a Noise key.
    pub fn new(unknown: PeerTransport) -> PeerBook {
        PeerBook {
            peers: HashMap::new(),
            noise_by_ip: HashMap::new(),
            unknown,
        }
    }

    /// A book of a topology's nodes.
    pub fn from_topology(
        topology: &mixplane_control::topology::Topology,
        unknown: PeerTransport,
    ) -> PeerBook {
        let mut book = PeerBook::new(unknown);
        for (addr, info) in topology.peers() {
            book.insert(addr, info);
        }
        book
    }

    /// A book listing `nodes` (address, Noise key) as TCP peers (Noise where a key is given,
    /// numbered in order); every other next hop goes by UDP.
    pub fn tcp_peers(nodes: impl IntoIterator<Item = (SocketAddr, Option<[u8; 32]>)>) -> PeerBook {
        let mut book = PeerBook::new(PeerTransport::Udp);
        for (i, (addr, noise_key)) in nodes.into_iter().enumerate() {
            book.insert(
                addr,
                PeerInfo {
                    node_id: i as u32,
                    transport: PeerTransport::Tcp,
                    noise_key,
                    noise_version: noise_key.map(|_| 1),
                },
            );
        }
        book
    }

    /// The transport of next hops the book does not list.
    pub fn unknown(&self) -> PeerTransport {
        self.unknown
    }

    /// Adds or replaces a peer.
    pub fn insert(&mut self, addr: SocketAddr, info: PeerInfo) {
        let addr = canonical(addr);
        if let Some(k) = info.noise_key {
            self.noise_by_ip.insert(addr.ip(), k);
        }
        self.peers.insert(addr, info);
    }

    /// The transport to reach `to` by.
    pub fn transport(&self, to: SocketAddr) -> PeerTransport {
        self.peers
            .get(&canonical(to))
            .map_or(self.unknown, |p| p.transport)
    }

    /// The Noise key to use for `to`: its own, else the key published for its IP (nym-nodes
    /// have one key per host, as nym-noise looks them up).
    pub fn noise_key(&self, to: SocketAddr) -> Option<[u8; 32]> {
        let to = canonical(to);
        self.peers
            .get(&to)
            .and_then(|p| p.noise_key)
            .or_else(|| self.noise_by_ip.get(&to.ip()).copied())
    }

    /// Number of peers listed.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is listed.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Connection limits shared by every worker's listener.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnLimits {
    /// At most `max_total` inbound connections, `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnLimits {
        ConnLimits {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for a connection from `ip`, or says which limit refuses it. Called once
    /// per accepted connection, never per packet.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<(), TcpDrop> {
        let ip = ip.to_canonical();
        if self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .is_err()
        {
            return Err(TcpDrop::RefusedTotalLimit);
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            drop(per_ip);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(TcpDrop::RefusedIpLimit);
        }
        *n += 1;
        Ok(())
    }

    /// Gives back the place of a closed connection from `ip`.
    pub(crate) fn release(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
        drop(per_ip);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    /// Inbound connections open now, over all workers.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// Why a TCP connection was refused or closed early, or frames were dropped on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpDrop {
    /// Refused: the node's connection limit is reached.
    RefusedTotalLimit,
    /// Refused: this address has as many connections as it may.
    RefusedIpLimit,
    /// Closed: bytes that are not a Nym frame we accept (version, size class, packet type).
    BadFrame,
    /// Closed: the Noise handshake or a transport message failed.
    NoiseFailed,
    /// Closed: the peer started Noise and this node has no noise key (or Noise is off).
    NoiseUnavailable,
    /// Closed: no finished handshake (or first byte) within the handshake timeout.
    HandshakeTimeout,
    /// Closed: a partial frame was held past the frame timeout (slowloris).
    StalledFrame,
    /// Frames dropped: the next hop's queue was full.
    EgressQueueFull,
    /// Frames dropped: the connection to the next hop failed or closed with them queued.
    EgressFailed,
}

impl TcpDrop {
    /// Every reason, in metric order.
    pub const ALL: [TcpDrop; 9] = [
        TcpDrop::RefusedTotalLimit,
        TcpDrop::RefusedIpLimit,
        TcpDrop::BadFrame,
        TcpDrop::NoiseFailed,
        TcpDrop::NoiseUnavailable,
        TcpDrop::HandshakeTimeout,
        TcpDrop::StalledFrame,
        TcpDrop::EgressQueueFull,
        TcpDrop::EgressFailed,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            TcpDrop::RefusedTotalLimit => "refused_total_limit",
            TcpDrop::RefusedIpLimit => "refused_ip_limit",
            TcpDrop::BadFrame => "bad_frame",
            TcpDrop::NoiseFailed => "noise_failed",
            TcpDrop::NoiseUnavailable => "noise_unavailable",
            TcpDrop::HandshakeTimeout => "handshake_timeout",
            TcpDrop::StalledFrame => "stalled_frame",
            TcpDrop::EgressQueueFull => "egress_queue_full",
            TcpDrop::EgressFailed => "egress_failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One worker's TCP counters (read by the metrics exporter).
#[derive(Debug, Default)]
pub struct TcpCounters {
    /// Inbound connections accepted.
    pub accepted: AtomicU64,
    /// Inbound connections open now.
    pub inbound_open: AtomicU64,
    /// Outbound connections established (and, with Noise, handshaken).
    pub outbound_established: AtomicU64,
    /// Outbound connections open now (connecting or established).
    pub outbound_open: AtomicU64,
    /// Noise handshakes completed, both directions.
    pub noise_handshakes: AtomicU64,
    /// Frames received whole.
    pub frames_in: AtomicU64,
    /// Frames written to a connection in full.
    pub frames_out: AtomicU64,
    drops: [AtomicU64; TcpDrop::ALL.len()],
}

impl TcpCounters {
    /// Counts `n` events of `reason`.
    pub(crate) fn count(&self, reason: TcpDrop, n: u64) {
        self.drops[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// How many of `reason` so far.
    pub fn drops(&self, reason: TcpDrop) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_by_total_and_by_address() {
        let l = ConnLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(l.admit(a), Ok(()));
        assert_eq!(l.admit(a), Ok(()));
        assert_eq!(l.admit(a), Err(TcpDrop::RefusedIpLimit));
        // the IPv4-mapped form is the same address
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(l.admit(mapped), Err(TcpDrop::RefusedIpLimit));
        assert_eq!(l.admit(b), Ok(()));
        assert_eq!(l.admit(b), Err(TcpDrop::RefusedTotalLimit));
        assert_eq!(l.open(), 3);
        l.release(a);
        assert_eq!(l.admit(b), Ok(()));
        assert_eq!(l.open(), 3);
    }

    #[test]
    fn peer_book_finds_noise_keys_by_host() {
        let mut book = PeerBook::new(PeerTransport::Udp);
        let nym: SocketAddr = "192.0.2.1:1789".parse().unwrap();
        book.insert(
            nym,
            PeerInfo {
                node_id: 1,
                transport: PeerTransport::Tcp,
                noise_key: Some([9; 32]),
                noise_version: Some(1),
            },
        );
        assert_eq!(book.transport(nym), PeerTransport::Tcp);
        assert_eq!(book.noise_key(nym), Some([9; 32]));
        // another port on the same host: unknown peer, but the host's noise key applies
        let other: SocketAddr = "192.0.2.1:1790".parse().unwrap();
        assert_eq!(book.transport(other), PeerTransport::Udp);
        assert_eq!(book.noise_key(other), Some([9; 32]));
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:1789".parse().unwrap();
        assert_eq!(book.transport(mapped), PeerTransport::Tcp);
        assert_eq!(book.noise_key("192.0.2.9:1789".parse().unwrap()), None);
    }
}
