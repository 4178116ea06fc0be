//! Nym's TCP transport for one worker: the mix port's stream connections, plain or Noise.
//!
//! Ingress: each worker has its own listening socket on the shared address (`SO_REUSEPORT`, so
//! the kernel spreads connections over the workers). Every connection is read in turn; its bytes
//! go through Noise when the first byte starts a Noise handshake, are cut into Nym frames
//! (`io::stream::frame_len`) and copied into this backend's arena, so the worker hands them to
//! the same `Processor::process_batch` as UDP datagrams. Admission is bounded (total and
//! per-address limits shared by all workers); a handshake that does not finish, or a partial
//! frame held too long, closes the connection; memory per connection is bounded (at most two
//! frames and one read of plaintext, one read of Noise input). Every refusal and close is counted
//! by reason ([`TcpDrop`]).
//!
//! Egress: one connection per next hop per worker, opened on the first frame for it, Noise
//! (XKpsk3) when the peer book has the peer's key, plain TCP otherwise. Frames are written with
//! the configured header version (Nym nodes still send v7 by default). Each peer's queue is
//! bounded; a full queue drops frames (counted) and never blocks the worker; a failed connection
//! drops what it held (counted) and is retried with exponential backoff while frames wait.
//!
//! Readiness comes from one `mio` poll per worker, which can also watch the worker's UDP socket,
//! so a worker with both transports waits in one place. The poll's own timeout has millisecond
//! resolution, so a wait also arms a `timerfd` (`io::timer`) that the poll
//! watches: the worker wakes for the delay wheel's next deadline to the microsecond.

mod conn;
mod limits;

pub use limits::{ConnLimits, PeerBook, PeerInfo, PeerTransport, TcpCounters, TcpDrop};

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use zeroize::Zeroizing;

use crate::io::stream::NoiseLink;
use crate::io::timer::WakeTimer;
use crate::io::{Datagram, Outgoing, SendStats, UdpIo};
use crate::sphinx::{FrameHeader, FrameVersion};

use conn::{Dial, Inbound, Link, MAX_FRAME, Outbound, RxBuf, TxBuf};

const LISTENER: Token = Token(usize::MAX);
const UDP: Token = Token(usize::MAX - 1);
const TIMER: Token = Token(usize::MAX - 2);
/// One read from a socket at most this many bytes.
const READ_CHUNK: usize = 64 * 1024;
/// A received batch holds at most this many bytes of frames (plus one frame).
const ARENA_BYTES: usize = 1 << 20;
/// Connections accepted per readiness event, so one listener cannot starve the rest.
const ACCEPTS_PER_WAKE: usize = 64;
/// How often timeouts are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Settings of a worker's TCP transport.
#[derive(Clone)]
pub struct TcpSettings {
    /// Where to listen (`None`: egress only).
    pub listen: Option<SocketAddr>,
    /// The node's x25519 Noise secret. Without one, inbound Noise is refused and outbound Noise
    /// uses a random static key of this process.
    pub noise_secret: Option<Zeroizing<[u8; 32]>>,
    /// Use Noise at all (responder and initiator).
    pub noise: bool,
    /// Most frames one receive returns.
    pub batch: usize,
    /// A connection without its first byte or a finished handshake after this long is closed.
    pub handshake_timeout: Duration,
    /// A partial frame held this long closes the connection.
    pub frame_timeout: Duration,
    /// Frames queued per next hop at most.
    pub egress_queue_frames: usize,
    /// Header version of the frames written to TCP peers.
    pub frame_version: FrameVersion,
    /// A connect that takes longer fails.
    pub connect_timeout: Duration,
    /// First reconnection delay, doubled per failure up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// Inbound connections the node accepts at once (all workers together).
    pub max_connections: usize,
    /// Inbound connections from one IP address at once.
    pub max_connections_per_ip: usize,
}

impl std::fmt::Debug for TcpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // everything but the secret
        f.debug_struct("TcpSettings")
            .field("listen", &self.listen)
            .field(
                "noise_secret",
                &self.noise_secret.as_ref().map(|_| "<secret>"),
            )
            .field("noise", &self.noise)
            .field("batch", &self.batch)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("frame_timeout", &self.frame_timeout)
            .field("egress_queue_frames", &self.egress_queue_frames)
            .field("frame_version", &self.frame_version)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .finish_non_exhaustive()
    }
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings {
            listen: None,
            noise_secret: None,
            noise: true,
            batch: 64,
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            egress_queue_frames: 2000,
            frame_version: FrameVersion::V7,
            connect_timeout: Duration::from_millis(1500),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            max_connections: 4096,
            max_connections_per_ip: 64,
        }
    }
}

struct InConn {
    stream: TcpStream,
    ip: IpAddr,
    link: Link,
    rx: RxBuf,
    tx: TxBuf,
    opened: Instant,
}

struct OutConn {
    stream: Option<TcpStream>,
    out: Outbound,
    tx: TxBuf,
}

enum Conn {
    In(InConn),
    Out(OutConn),
}

/// One worker's TCP transport. See the module docs.
pub struct TcpIo {
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    local: Option<SocketAddr>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_peer: HashMap<SocketAddr, usize>,
    /// Connections that may have more to read or frames waiting.
    ready: Vec<usize>,
    /// Scratch: connections reported writable.
    writable: Vec<usize>,
    accept_pending: bool,
    udp_ready: bool,
    arena: Vec<u8>,
    scratch: Box<[u8]>,
    settings: TcpSettings,
    /// Most frames per receive: `settings.batch`, or less after `set_recv_limit`.
    limit: usize,
    /// A batch is cut to a multiple of this when it can be (see [`TcpIo::set_lane_width`]).
    lanes: usize,
    /// Frames of the last batch held back for the next one (the last frames in the arena, in
    /// order); fewer than `lanes`.
    carry: Vec<Datagram>,
    static_secret: Zeroizing<[u8; 32]>,
    limits: Arc<ConnLimits>,
    peers: Arc<ArcSwap<PeerBook>>,
    counters: Arc<TcpCounters>,
    last_sweep: Instant,
    /// Ends a wait shorter than the poll's millisecond resolution on time (`None`: the
    /// timerfd could not be created; waits then round up to whole milliseconds).
    timer: Option<WakeTimer>,
}

impl TcpIo {
    /// Opens the transport: a listener (if `settings.listen`) with `SO_REUSEPORT`, and a poll
    /// that also watches `udp_fd` when given.
    pub fn new(
        settings: TcpSettings,
        limits: Arc<ConnLimits>,
        peers: Arc<ArcSwap<PeerBook>>,
        counters: Arc<TcpCounters>,
        udp_fd: Option<RawFd>,
    ) -> io::Result<TcpIo> {
        let poll = Poll::new()?;
        let (listener, local) = match settings.listen {
            Some(addr) => {
                let mut l = TcpListener::from_std(bind_tcp(addr)?);
                poll.registry()
                    .register(&mut l, LISTENER, Interest::READABLE)?;
                let local = l.local_addr()?;
                (Some(l), Some(local))
            }
            None => (None, None),
        };
        if let Some(fd) = udp_fd {
            poll.registry()
                .register(&mut SourceFd(&fd), UDP, Interest::READABLE)?;
        }
        let timer = match WakeTimer::new() {
            Ok(t) => {
                poll.registry()
                    .register(&mut SourceFd(&t.raw_fd()), TIMER, Interest::READABLE)?;
                Some(t)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no timerfd: TCP waits round up to whole milliseconds");
                None
            }
        };
        let static_secret = match &settings.noise_secret {
            Some(s) => s.clone(),
            None => {
                let mut k = Zeroizing::new([0u8; 32]);
                rand::fill(&mut k[..]);
                k
            }
        };
        Ok(TcpIo {
            poll,
            events: Events::with_capacity(1024),
            listener,
            local,
            conns: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::new(),
            ready: Vec::new(),
            writable: Vec::new(),
            accept_pending: false,
            udp_ready: false,
            arena: vec![0; ARENA_BYTES + MAX_FRAME],
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            limit: settings.batch.max(1),
            lanes: 1,
            carry: Vec::new(),
            settings,
            static_secret,
            limits,
            peers,
            counters,
            last_sweep: Instant::now(),
            timer,
        })
    }

    /// The listening address, if any.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Waits up to `timeout` for anything to do (no wait if work is already pending). Returns
    /// whether the watched UDP socket was reported readable since the last call.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        let busy = !self.ready.is_empty() || self.accept_pending || !self.carry.is_empty();
        let timeout = if busy { Duration::ZERO } else { timeout };
        // `epoll_wait` counts whole milliseconds (mio rounds up): a wait with a fraction of one
        // is ended by the timer instead.
        if let Some(t) = &self.timer
            && timeout.subsec_nanos() % 1_000_000 != 0
        {
            t.arm(timeout)?;
        }
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let mut writable = std::mem::take(&mut self.writable);
        for ev in self.events.iter() {
            match ev.token() {
                LISTENER => self.accept_pending = true,
                UDP => self.udp_ready = true,
                TIMER => {
                    if let Some(t) = &self.timer {
                        t.clear();
                    }
                }
                Token(i) => {
                    if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                        writable.push(i);
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        self.ready.push(i);
                    }
                }
            }
        }
        for &i in &writable {
            self.flush_at(i);
        }
        writable.clear();
        self.writable = writable;
        // outbound connections carry no frames to us, only Noise handshake replies: read them
        // here, so a sender makes progress without taking frames
        let mut i = 0;
        while i < self.ready.len() {
            let c = self.ready[i];
            if let Some(Some(Conn::Out(_))) = self.conns.get(c) {
                self.ready.swap_remove(i);
                let mut none = Vec::new();
                let mut used = 0;
                // bounded: a next hop that streams bytes at us cannot keep the worker here
                for _ in 0..16 {
                    if !self.read_conn(c, &mut none, &mut used) {
                        break;
                    }
                }
            } else {
                i += 1;
            }
        }
        let now = Instant::now();
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.sweep(now);
        }
        Ok(std::mem::take(&mut self.udp_ready))
    }

    /// Accepts waiting connections and reads the ready ones, cutting at most `settings.batch`
    /// (or the cap `set_recv_limit` set) frames into the arena. Fills `out` (cleared first);
    /// returns how many. With a lane width set ([`Self::set_lane_width`]), a batch of more than
    /// one group of lanes whose last frames fill only part of a group hands those frames out
    /// with the next call instead (once: frames held back before are never held back again).
    pub fn take_frames(&mut self, out: &mut Vec<Datagram>) -> usize {
        out.clear();
        if self.accept_pending {
            self.accept();
        }
        let mut used = self.take_carry(out);
        let carried = out.len();
        let mut ready = std::mem::take(&mut self.ready);
        ready.sort_unstable();
        ready.dedup();
        let mut again = Vec::new();
        for i in ready {
            // read a connection until it has nothing more or the batch is full (a busy peer
            // fills the batch as a UDP burst would; the rest wait for the next batch)
            let mut more = true;
            while more && out.len() < self.limit && used < ARENA_BYTES {
                more = self.read_conn(i, out, &mut used);
            }
            if more {
                again.push(i);
            }
        }
        self.ready = again;
        self.hold_tail(out, carried);
        out.len()
    }

    /// Hands out only the frames the last batch held back (no reads, no accepts): for a worker
    /// that stops receiving, so frames it already took from their connections are processed,
    /// not lost. Fills `out` (cleared first); returns how many.
    pub fn take_held_back(&mut self, out: &mut Vec<Datagram>) -> usize {
        out.clear();
        self.take_carry(out);
        out.len()
    }

    /// Cuts batches to a multiple of `lanes` frames where [`Self::take_frames`] can (the X25519
    /// kernel's width: a part-filled group costs nearly a full one). 1, the default, cuts
    /// nothing.
    pub fn set_lane_width(&mut self, lanes: usize) {
        self.lanes = lanes.max(1);
    }

    /// Moves the frames held back by the last batch to the front of the arena and into `out`;
    /// returns the arena bytes they take.
    fn take_carry(&mut self, out: &mut Vec<Datagram>) -> usize {
        let (Some(first), Some(last)) = (self.carry.first(), self.carry.last()) else {
            return 0;
        };
        let (start, end) = (first.offset, last.offset + last.len);
        self.arena.copy_within(start..end, 0);
        out.extend(self.carry.drain(..).map(|d| Datagram {
            offset: d.offset - start,
            len: d.len,
        }));
        end - start
    }

    /// Holds back the part-filled last group of lanes of the batch in `out` (whose first
    /// `carried` frames were held back before) for the next batch, when it has more than one
    /// group and the part is made of new frames only.
    fn hold_tail(&mut self, out: &mut Vec<Datagram>, carried: usize) {
        let n = out.len();
        let part = n % self.lanes;
        if self.lanes > 1 && n > self.lanes && part > 0 && n - carried >= part {
            self.carry.extend(out.drain(n - part..));
        }
    }

    /// Reads one connection (once) and cuts frames; returns whether it may have more.
    fn read_conn(&mut self, i: usize, out: &mut Vec<Datagram>, used: &mut usize) -> bool {
        let now = Instant::now();
        let batch = self.limit;
        let before = out.len();
        let arena = &mut self.arena;
        let mut take = |f: &[u8]| {
            if out.len() >= batch || *used >= ARENA_BYTES {
                return false;
            }
            arena[*used..*used + f.len()].copy_from_slice(f);
            out.push(Datagram {
                offset: *used,
                len: f.len(),
            });
            *used += f.len();
            true
        };
        let noise_key = self
            .settings
            .noise
            .then_some(self.settings.noise_secret.as_deref())
            .flatten();
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return false;
        };
        let result = match conn {
            Conn::In(c) => read_inbound(c, &mut self.scratch, noise_key, now, &mut take),
            Conn::Out(c) => read_outbound(c, &mut self.scratch),
        };
        let got = (out.len() - before) as u64;
        TcpCounters::add(&self.counters.frames_in, got);
        match result {
            ReadOutcome::More => true,
            ReadOutcome::Drained => false,
            ReadOutcome::Handshaken => {
                TcpCounters::add(&self.counters.noise_handshakes, 1);
                if let Some(Some(Conn::Out(_))) = self.conns.get(i) {
                    TcpCounters::add(&self.counters.outbound_established, 1);
                }
                self.flush_at(i);
                true
            }
            ReadOutcome::Reply => {
                self.flush_at(i);
                true
            }
            ReadOutcome::Close(reason) => {
                if let Some(r) = reason {
                    self.counters.count(r, 1);
                }
                if let Some(Some(Conn::Out(_))) = self.conns.get(i) {
                    self.fail(i, now);
                } else {
                    self.close(i, now);
                }
                false
            }
        }
    }

    fn accept(&mut self) {
        if self.listener.is_none() {
            self.accept_pending = false;
            return;
        }
        for _ in 0..ACCEPTS_PER_WAKE {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // out of descriptors or memory: leave the rest queued in the kernel
                    tracing::warn!(error = %e, "accept failed");
                    self.accept_pending = false;
                    return;
                }
            };
            if let Err(reason) = self.limits.admit(peer.ip()) {
                self.counters.count(reason, 1);
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let i = self.slot();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(error = %e, "cannot watch an accepted connection");
                self.limits.release(peer.ip());
                self.free.push(i);
                continue;
            }
            self.conns[i] = Some(Conn::In(InConn {
                stream,
                ip: peer.ip(),
                link: Link::Undecided,
                rx: RxBuf::default(),
                tx: TxBuf::default(),
                opened: Instant::now(),
            }));
            TcpCounters::add(&self.counters.accepted, 1);
            TcpCounters::add(&self.counters.inbound_open, 1);
            // data may have arrived before registration: read it without waiting for an edge
            self.ready.push(i);
        }
        // more may be waiting: come back without blocking
    }

    fn slot(&mut self) -> usize {
        match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        }
    }

    /// Queues frames for their next hops (all of them TCP peers) and writes what the sockets take.
    pub fn send_frames(&mut self, batch: &[Outgoing<'_>]) -> SendStats {
        let mut stats = SendStats::default();
        let now = Instant::now();
        let mut i = 0;
        while i < batch.len() {
            let to = batch[i].to;
            let mut j = i + 1;
            while j < batch.len() && batch[j].to == to {
                j += 1;
            }
            let (queued, dropped) = self.queue(to, &batch[i..j], now);
            stats.sent += queued;
            stats.failed += dropped;
            // one write per next hop and batch (callers group frames by destination)
            if let Some(&c) = self.by_peer.get(&to) {
                stats.calls += 1;
                self.flush_at(c);
            }
            i = j;
        }
        stats
    }

    /// Queues `frames` (all to `to`); returns (queued, dropped).
    fn queue(&mut self, to: SocketAddr, frames: &[Outgoing<'_>], now: Instant) -> (usize, usize) {
        let i = match self.by_peer.get(&to) {
            Some(&i) => i,
            None => self.dial(to, now),
        };
        let limit = self.settings.egress_queue_frames;
        let version = self.settings.frame_version;
        let Some(Some(Conn::Out(c))) = self.conns.get_mut(i) else {
            return (0, frames.len());
        };
        let room = limit.saturating_sub(c.tx.frames() + c.out.waiting_frames as usize);
        let take = frames.len().min(room);
        let dropped = frames.len() - take;
        if dropped > 0 {
            self.counters
                .count(TcpDrop::EgressQueueFull, dropped as u64);
        }
        if take == 0 {
            return (0, dropped);
        }
        let encode = |buf: &mut Vec<u8>| {
            for f in &frames[..take] {
                push_frame(buf, f.data, version);
            }
        };
        if c.out.ready() {
            match c.out.noise.as_mut() {
                Some(link) => {
                    let mut plain = std::mem::take(&mut c.out.waiting);
                    plain.clear();
                    encode(&mut plain);
                    let r = c.tx.push_frames(take as u32, |w| link.send(&plain, w));
                    plain.clear();
                    c.out.waiting = plain;
                    if r.is_err() {
                        self.counters.count(TcpDrop::NoiseFailed, 1);
                        self.fail(i, now);
                        return (0, take);
                    }
                }
                None => {
                    let _ = c.tx.push_frames::<()>(take as u32, |w| {
                        encode(w);
                        Ok(())
                    });
                }
            }
        } else {
            encode(&mut c.out.waiting);
            c.out.waiting_frames += take as u32;
        }
        (take, dropped)
    }

    /// Creates the outbound connection state for `to` and starts connecting.
    fn dial(&mut self, to: SocketAddr, now: Instant) -> usize {
        let i = self.slot();
        self.conns[i] = Some(Conn::Out(OutConn {
            stream: None,
            out: Outbound {
                peer: to,
                dial: Dial::Backoff(now),
                noise: None,
                waiting: Vec::new(),
                waiting_frames: 0,
                attempts: 0,
            },
            tx: TxBuf::default(),
        }));
        self.by_peer.insert(to, i);
        self.connect(i, now);
        i
    }

    /// Starts a TCP connect (and the Noise handshake's first message) for outbound `i`.
    fn connect(&mut self, i: usize, now: Instant) {
        let noise_key = if self.settings.noise {
            let Some(Some(Conn::Out(c))) = self.conns.get(i) else {
                return;
            };
            self.peers.load().noise_key(c.out.peer)
        } else {
            None
        };
        let static_secret = self.static_secret.clone();
        let Some(Some(Conn::Out(c))) = self.conns.get_mut(i) else {
            return;
        };
        let mut stream = match TcpStream::connect(c.out.peer) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %c.out.peer, error = %e, "connect failed");
                self.fail(i, now);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.fail(i, now);
            return;
        }
        c.tx = TxBuf::default();
        c.out.noise = None;
        if let Some(remote) = noise_key {
            let mut first = Vec::new();
            match NoiseLink::initiator(&static_secret, &remote, &mut first) {
                Ok(link) => {
                    c.out.noise = Some(Box::new(link));
                    c.tx.push_control(|w| w.extend_from_slice(&first));
                }
                Err(_) => {
                    self.counters.count(TcpDrop::NoiseFailed, 1);
                    self.fail(i, now);
                    return;
                }
            }
        }
        c.stream = Some(stream);
        c.out.dial = Dial::Connecting(now);
        TcpCounters::add(&self.counters.outbound_open, 1);
    }

    /// Writes what connection `i` has pending; finishes a connect on its first writable event.
    fn flush_at(&mut self, i: usize) {
        let now = Instant::now();
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        match flush_conn(conn, &self.counters, now) {
            Flush::Ok => {}
            Flush::CloseInbound => self.close(i, now),
            Flush::FailOutbound(reason) => {
                if let Some(r) = reason {
                    self.counters.count(r, 1);
                }
                self.fail(i, now);
            }
        }
    }

    /// An outbound connection failed: drop what it held, back off.
    fn fail(&mut self, i: usize, now: Instant) {
        let (initial, max) = (self.settings.backoff_initial, self.settings.backoff_max);
        let Some(Some(Conn::Out(c))) = self.conns.get_mut(i) else {
            return;
        };
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
            TcpCounters::sub(&self.counters.outbound_open, 1);
        }
        let lost = c.tx.clear() + c.out.waiting_frames as usize;
        c.out.waiting.clear();
        c.out.waiting_frames = 0;
        c.out.noise = None;
        if lost > 0 {
            self.counters.count(TcpDrop::EgressFailed, lost as u64);
        }
        c.out.attempts = c.out.attempts.saturating_add(1);
        c.out.dial = Dial::Backoff(now + conn::backoff(c.out.attempts, initial, max));
        tracing::debug!(peer = %c.out.peer, attempts = c.out.attempts, "next hop connection failed");
    }

    /// Closes connection `i` for good.
    fn close(&mut self, i: usize, _now: Instant) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        match conn {
            Conn::In(mut c) => {
                let _ = self.poll.registry().deregister(&mut c.stream);
                self.limits.release(c.ip);
                TcpCounters::sub(&self.counters.inbound_open, 1);
            }
            Conn::Out(mut c) => {
                if let Some(mut s) = c.stream.take() {
                    let _ = self.poll.registry().deregister(&mut s);
                    TcpCounters::sub(&self.counters.outbound_open, 1);
                }
                self.by_peer.remove(&c.out.peer);
            }
        }
        self.free.push(i);
    }

    /// Timeouts: handshakes, stalled frames, connects; retries after backoff.
    fn sweep(&mut self, now: Instant) {
        let s = &self.settings;
        let mut close = Vec::new();
        let mut fail = Vec::new();
        let mut redial = Vec::new();
        let mut forget = Vec::new();
        for (i, c) in self.conns.iter().enumerate() {
            match c {
                Some(Conn::In(c)) => {
                    if conn::handshaking(&c.link)
                        && now.duration_since(c.opened) > s.handshake_timeout
                    {
                        close.push((i, TcpDrop::HandshakeTimeout));
                    } else if c.rx.stalled(now, s.frame_timeout) {
                        close.push((i, TcpDrop::StalledFrame));
                    }
                }
                Some(Conn::Out(c)) => match c.out.dial {
                    Dial::Connecting(t) if now.duration_since(t) > s.connect_timeout => {
                        fail.push(i)
                    }
                    Dial::Open(t)
                        if c.out.noise.as_ref().is_some_and(|l| !l.is_established())
                            && now.duration_since(t) > s.handshake_timeout =>
                    {
                        self.counters.count(TcpDrop::HandshakeTimeout, 1);
                        fail.push(i)
                    }
                    Dial::Backoff(t) if now >= t => {
                        if c.out.waiting_frames > 0 {
                            redial.push(i)
                        } else {
                            forget.push(i)
                        }
                    }
                    _ => {}
                },
                None => {}
            }
        }
        for (i, r) in close {
            self.counters.count(r, 1);
            self.close(i, now);
        }
        for i in fail {
            self.fail(i, now);
        }
        for i in redial {
            self.connect(i, now);
        }
        for i in forget {
            self.close(i, now);
        }
    }

    /// Frames queued on outbound connections and not yet written whole.
    pub fn queued_frames(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .map(|c| match c {
                Conn::Out(c) => c.tx.frames() + c.out.waiting_frames as usize,
                Conn::In(_) => 0,
            })
            .sum()
    }

    /// Connections open now: (inbound, outbound).
    pub fn open_connections(&self) -> (usize, usize) {
        let mut n = (0, 0);
        for c in self.conns.iter().flatten() {
            match c {
                Conn::In(_) => n.0 += 1,
                Conn::Out(c) if c.stream.is_some() => n.1 += 1,
                Conn::Out(_) => {}
            }
        }
        n
    }
}

enum Flush {
    Ok,
    CloseInbound,
    FailOutbound(Option<TcpDrop>),
}

/// Finishes a connect or handshake step if due, then writes what the socket takes.
fn flush_conn(conn: &mut Conn, counters: &TcpCounters, now: Instant) -> Flush {
    let (stream, tx) = match conn {
        Conn::In(c) => (&mut c.stream, &mut c.tx),
        Conn::Out(c) => {
            let Some(s) = c.stream.as_mut() else {
                return Flush::Ok;
            };
            if let Dial::Connecting(_) = c.out.dial {
                match s.peer_addr() {
                    Ok(_) => {
                        c.out.dial = Dial::Open(now);
                        if c.out.noise.is_none() {
                            TcpCounters::add(&counters.outbound_established, 1);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        // not yet, unless the connect failed
                        return match s.take_error() {
                            Ok(None) => Flush::Ok,
                            _ => Flush::FailOutbound(None),
                        };
                    }
                    Err(_) => return Flush::FailOutbound(None),
                }
            }
            if c.out.ready()
                && c.out.waiting_frames > 0
                && established(&mut c.out, &mut c.tx).is_err()
            {
                return Flush::FailOutbound(Some(TcpDrop::NoiseFailed));
            }
            (s, &mut c.tx)
        }
    };
    let mut written = 0u64;
    let mut failed = false;
    while !tx.pending().is_empty() {
        match stream.write(tx.pending()) {
            Ok(0) => {
                failed = true;
                break;
            }
            Ok(n) => written += tx.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    TcpCounters::add(&counters.frames_out, written);
    match (failed, conn) {
        (false, _) => Flush::Ok,
        (true, Conn::In(_)) => Flush::CloseInbound,
        (true, Conn::Out(_)) => Flush::FailOutbound(None),
    }
}

enum ReadOutcome {
    More,
    Drained,
    /// A Noise handshake finished (its last message, if ours, is queued).
    Handshaken,
    /// A handshake message to send back.
    Reply,
    Close(Option<TcpDrop>),
}

fn read_inbound(
    c: &mut InConn,
    scratch: &mut [u8],
    noise_key: Option<&[u8; 32]>,
    now: Instant,
    take: &mut impl FnMut(&[u8]) -> bool,
) -> ReadOutcome {
    // frames left from last time first; read more only when none is waiting (bounds memory)
    if let Err(r) = c.rx.frames(now, &mut *take) {
        return ReadOutcome::Close(Some(r));
    }
    if c.rx.has_frame() {
        return ReadOutcome::More;
    }
    let n = match c.stream.read(scratch) {
        Ok(0) => return ReadOutcome::Close(None),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return ReadOutcome::More,
        Err(_) => return ReadOutcome::Close(None),
    };
    let mut handshakes = 0;
    match conn::inbound_bytes(
        &mut c.link,
        &scratch[..n],
        &mut c.rx,
        &mut c.tx,
        noise_key,
        &mut handshakes,
    ) {
        Inbound::Close(r) => return ReadOutcome::Close(Some(r)),
        Inbound::Ok => {}
    }
    if let Err(r) = c.rx.frames(now, take) {
        return ReadOutcome::Close(Some(r));
    }
    if handshakes > 0 {
        return ReadOutcome::Handshaken;
    }
    if !c.tx.pending().is_empty() {
        return ReadOutcome::Reply;
    }
    ReadOutcome::More
}

fn read_outbound(c: &mut OutConn, scratch: &mut [u8]) -> ReadOutcome {
    let Some(stream) = c.stream.as_mut() else {
        return ReadOutcome::Drained;
    };
    let n = match stream.read(scratch) {
        Ok(0) => return ReadOutcome::Close(None),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return ReadOutcome::More,
        Err(_) => return ReadOutcome::Close(None),
    };
    match c.out.noise.as_mut() {
        Some(link) => {
            let was = link.is_established();
            let mut discard = Vec::new();
            let mut r = Ok(());
            c.tx.push_control(|w| r = link.receive(&scratch[..n], w, &mut discard));
            if r.is_err() {
                return ReadOutcome::Close(Some(TcpDrop::NoiseFailed));
            }
            if !was && link.is_established() {
                return ReadOutcome::Handshaken;
            }
            if !c.tx.pending().is_empty() {
                return ReadOutcome::Reply;
            }
            ReadOutcome::More
        }
        // a plain next hop has nothing to say to us: ignore it
        None => ReadOutcome::More,
    }
}

/// The connection (and its Noise handshake) is up: frames that waited go to the wire.
fn established(out: &mut Outbound, tx: &mut TxBuf) -> Result<(), crate::io::stream::NoiseError> {
    out.attempts = 0;
    if out.waiting_frames == 0 {
        return Ok(());
    }
    let frames = std::mem::take(&mut out.waiting_frames);
    let plain = std::mem::take(&mut out.waiting);
    let r = match out.noise.as_mut() {
        Some(link) => tx.push_frames(frames, |w| link.send(&plain, w)),
        None => tx.push_frames(frames, |w| {
            w.extend_from_slice(&plain);
            Ok(())
        }),
    };
    out.waiting = plain;
    out.waiting.clear();
    r
}

/// Appends `frame` to `buf` with its header rewritten to `version`.
fn push_frame(buf: &mut Vec<u8>, frame: &[u8], version: FrameVersion) {
    let Ok(h) = FrameHeader::parse(frame) else {
        return;
    };
    let header = FrameHeader { version, ..h };
    let at = buf.len();
    buf.resize(at + header.len(), 0);
    header.write(&mut buf[at..]);
    buf.extend_from_slice(&frame[h.len()..]);
}

/// A non-blocking listening socket on `addr` with `SO_REUSEPORT`.
fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

impl UdpIo for TcpIo {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn recv(&mut self, timeout: Duration, out: &mut Vec<Datagram>) -> io::Result<usize> {
        self.wait(timeout)?;
        Ok(self.take_frames(out))
    }

    fn frames_mut<'a>(&'a mut self, datagrams: &[Datagram]) -> Vec<&'a mut [u8]> {
        crate::io::carve(&mut self.arena, datagrams)
    }

    fn datagram(&self, d: Datagram) -> &[u8] {
        crate::io::slice_of(&self.arena, d)
    }

    fn set_recv_limit(&mut self, max: usize) {
        self.limit = max.clamp(1, self.settings.batch.max(1));
    }

    fn send(&mut self, batch: &[Outgoing<'_>]) -> SendStats {
        // a caller that only sends (a load generator) still needs connects and handshakes to
        // progress; the worker calls `send_frames` and polls in its own loop
        let _ = self.wait(Duration::ZERO);
        self.send_frames(batch)
    }

    fn idle(&mut self, timeout: Duration) {
        let _ = self.wait(timeout);
    }
}

#[cfg(test)]
mod tests;
