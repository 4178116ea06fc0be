//! The io_uring backend: one ring per worker socket.
//!
//! * Receive: one multishot `IORING_OP_RECVMSG` stays armed on the socket and picks buffers from
//!   a provided-buffer ring that this backend owns. Each completion is one datagram, or a GRO
//!   super-packet split into its segments, laid out as `io_uring_recvmsg_out | control | payload`
//!   in its buffer. A `recv` call hands out the payloads of the completions waiting (one
//!   `io_uring_enter` when none is), up to the cap of [`UdpIo::set_recv_limit`], and the next
//!   `recv` gives those buffers back to the ring: the worker copies the packets it holds in its
//!   wheel into its own slab slots while processing. A super-packet's segments past the cap
//!   are held in their buffer and come first in the next `recv`, which gives that buffer back
//!   only once none of them is left; so a buffer is held past one batch only while its
//!   segments wait, and the ring always has fresh buffers. When the ring runs dry the kernel
//!   ends the multishot request (`ENOBUFS`, the datagrams stay queued in the socket) and it is
//!   re-armed after the buffers come back.
//! * Send: one `IORING_OP_SENDMSG` per GSO run (datagrams to one next hop), submitted together
//!   with one `io_uring_enter`; `send` returns when all of them completed, so the caller's data
//!   only has to live for the call.
//!
//! The receive buffers are one allocation held only through a raw pointer ([`RxBuffers`]): the
//! kernel writes into the buffers published to the ring at any moment, so no Rust reference may
//! cover them. Slices are made only of buffers whose completion `recv` took (the kernel is done
//! with them and they are not published again before the next `recv`, which needs `&mut self`
//! and so cannot run while a slice lives): [`UdpIo::frames_mut`] and [`UdpIo::datagram`] check
//! every datagram against that set.
//!
//! [`UringIo::new`] fails (and `Auto` falls back to recvmmsg/sendmmsg) when the ring, the
//! buffer ring or multishot receive cannot be set up: seccomp-filtered containers, kernels
//! older than 6.0.

use std::collections::VecDeque;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::socket::{CmsgBuf, DropPoller, rx_control};
use super::tx::{GsoPolicy, TxMessages};
use super::{Datagram, MAX_DATAGRAM, Outgoing, SendStats, UdpIo, retry_if_interrupted, split_gro};

/// The buffer group id of the provided-buffer ring.
const BGID: u16 = 0;
/// `user_data` of the multishot receive.
const RECV: u64 = u64::MAX;
/// `user_data` of a cancellation.
const CANCEL: u64 = u64::MAX - 1;
/// Submission queue entries (the most sends in flight at once).
const SQ_ENTRIES: u32 = 256;
/// Completion queue entries: room for a full ring of receive completions and the sends.
const CQ_ENTRIES: u32 = 4096;
/// Control space in each buffer (UDP_GRO and SO_RXQ_OVFL messages).
const CONTROL_LEN: usize = std::mem::size_of::<CmsgBuf>();
/// `struct io_uring_recvmsg_out`: four u32s.
const RECVMSG_OUT_LEN: usize = 16;
/// One provided buffer: the recvmsg header, control data and the largest datagram, rounded up
/// to a cache line.
const BUF_LEN: usize = (RECVMSG_OUT_LEN + CONTROL_LEN + MAX_DATAGRAM).next_multiple_of(64);

/// The page-aligned memory of a provided-buffer ring (the `io_uring_buf` entries), shared with
/// the kernel once registered.
struct BufRingMem {
    ptr: *mut types::BufRingEntry,
    layout: std::alloc::Layout,
    entries: u16,
    /// Never free the memory (the kernel may still use it).
    leak: bool,
}

impl BufRingMem {
    fn new(entries: u16) -> io::Result<BufRingMem> {
        let bytes = usize::from(entries) * std::mem::size_of::<types::BufRingEntry>();
        let layout = std::alloc::Layout::from_size_align(bytes.max(4096), 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<types::BufRingEntry>();
        if ptr.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "buffer ring allocation",
            ));
        }
        Ok(BufRingMem {
            ptr,
            layout,
            entries,
            leak: false,
        })
    }

    /// The ring's tail, which the application advances to publish buffers.
    fn tail(&self) -> &AtomicU16 {
        // SAFETY: `BufRingEntry::tail` points at the `resv` field of the first entry, a u16
        // inside our allocation, 2-byte aligned; the kernel only reads it, so viewing it as
        // an atomic that we store to with release ordering is sound.
        unsafe { &*types::BufRingEntry::tail(self.ptr).cast::<AtomicU16>() }
    }

    /// Writes entry `slot` (taken modulo the ring size).
    fn set(&mut self, slot: u16, addr: *mut u8, len: usize, bid: u16) {
        let i = usize::from(slot & (self.entries - 1));
        // SAFETY: `i < entries`, so the entry is inside the allocation; the kernel reads entries
        // only between the head and the published tail, and `slot` is at or past the tail.
        let e = unsafe { &mut *self.ptr.add(i) };
        e.set_addr(addr as u64);
        e.set_len(len as u32);
        e.set_bid(bid);
    }
}

impl Drop for BufRingMem {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: allocated in `new` with this layout; `UringIo`'s Drop either saw the
        // multishot receive end (no request of the ring can pick a buffer any more) or set
        // `leak`.
        unsafe { std::alloc::dealloc(self.ptr.cast(), self.layout) }
    }
}

/// The receive buffers: `count` buffers of [`BUF_LEN`] bytes in one allocation that the
/// kernel writes into through the buffer ring. Held as a raw pointer, never as a Rust
/// reference, because the kernel owns every buffer published to the ring; a buffer becomes
/// ours when its completion is taken and stays ours until it is published again.
struct RxBuffers {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
    /// Which buffers are ours (taken from a completion and not published again), by id.
    ours: Vec<bool>,
    /// Never free the memory (the kernel may still write into it).
    leak: bool,
}

impl RxBuffers {
    fn new(count: usize) -> io::Result<RxBuffers> {
        let layout = std::alloc::Layout::from_size_align(count.max(1) * BUF_LEN, 64)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(ptr).ok_or_else(|| {
            io::Error::new(io::ErrorKind::OutOfMemory, "receive buffer allocation")
        })?;
        Ok(RxBuffers {
            ptr,
            layout,
            ours: vec![true; count],
            leak: false,
        })
    }

    /// The start of buffer `bid`, for publishing it to the ring (which makes it the kernel's).
    fn publish(&mut self, bid: u16) -> *mut u8 {
        let i = usize::from(bid);
        self.ours[i] = false;
        // SAFETY: `i < count` (the index above did not panic), so the offset stays inside the
        // allocation.
        unsafe { self.ptr.as_ptr().add(i * BUF_LEN) }
    }

    /// Takes buffer `bid` back from the kernel (its completion arrived); returns its first
    /// `len` bytes (at most `BUF_LEN`), or `None` for an id that is not ours to take.
    fn take(&mut self, bid: u16, len: usize) -> Option<&[u8]> {
        let i = usize::from(bid);
        let ours = self.ours.get_mut(i)?;
        *ours = true;
        // SAFETY: buffer `i` lies inside the allocation (`i < count`); its completion says the
        // kernel has finished writing it, and it is not published again while the returned
        // borrow of `self` lives (publishing needs `&mut self`).
        Some(unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(i * BUF_LEN), len.min(BUF_LEN))
        })
    }

    /// Where `d` starts, after checking that it lies within one buffer that is ours.
    ///
    /// # Panics
    ///
    /// If it does not.
    fn checked(&self, d: Datagram) -> *mut u8 {
        let i = d.offset / BUF_LEN;
        let end = d.offset.checked_add(d.len);
        assert!(
            self.ours.get(i) == Some(&true) && end.is_some_and(|e| e <= (i + 1) * BUF_LEN),
            "datagram {d:?} is not within a buffer the last recv completed"
        );
        // SAFETY: `d.offset < (i + 1) * BUF_LEN <= count * BUF_LEN`, inside the allocation.
        unsafe { self.ptr.as_ptr().add(d.offset) }
    }

    /// The allocation's address, for turning pointers into it into offsets.
    fn base(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
}

impl Drop for RxBuffers {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: allocated in `new` with this layout; `UringIo`'s Drop either saw the
        // multishot receive end (no request can pick a buffer any more) or set `leak`.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// io_uring I/O on one socket.
pub struct UringIo {
    // Field order matters: the ring is dropped (and the kernel lets go of the buffers) before
    // the buffer memory.
    ring: IoUring,
    sock: UdpSocket,
    bufs: RxBuffers,
    buf_ring: BufRingMem,
    /// Buffers handed out by the last `recv`, given back to the ring by the next (those that
    /// hold a `held` segment are kept).
    in_use: Vec<u16>,
    /// Segments of GRO super-packets taken from completions but not handed out yet (a `recv`
    /// stopped at `max_datagrams`), in arrival order: the next `recv` hands them out first.
    /// Their buffers stay ours (in `in_use`, not published) until then.
    held: VecDeque<Datagram>,
    /// The multishot receive's header: only `msg_namelen` and `msg_controllen` are read.
    rx_hdr: Box<libc::msghdr>,
    armed: bool,
    /// Receive completions not handed out yet: met while waiting for sends, or left over when
    /// a `recv` reached `max_datagrams`.
    pending: VecDeque<(i32, u32)>,
    /// A `recv` hands out at most this many datagrams (the `batch` given to [`UringIo::new`],
    /// or less after [`UdpIo::set_recv_limit`]): GRO completions carry up to 27 regular
    /// packets each, and a whole ring of them at once (~1,400 packets, 3.3 MB) would be
    /// processed from L3 instead of L2.
    max_datagrams: usize,
    /// The `batch` given to [`UringIo::new`].
    batch: usize,
    tx: TxMessages,
    /// Send completions of the current `send`, `(message, result)`.
    tx_done: Vec<(u64, i32)>,
    gso: GsoPolicy,
    rx_overflows: u64,
    kernel_drops: DropPoller,
    /// Receive completions with an error other than running out of buffers.
    rx_errors: u64,
}

// SAFETY: the raw pointers (receive buffers, buffer ring memory, the recv msghdr, the tx
// scratch) point into memory owned by this struct, not shared with other threads except the
// kernel; the struct moves to its worker thread before first use.
unsafe impl Send for UringIo {}

impl UringIo {
    /// Sets up the ring, registers a provided-buffer ring of `batch` (rounded up to a power of
    /// two, at least 8) buffers and arms multishot receive on `sock`.
    pub fn new(sock: UdpSocket, batch: usize) -> io::Result<UringIo> {
        let nbufs = batch.clamp(8, 4096).next_power_of_two();
        let ring = IoUring::<squeue::Entry, cqueue::Entry>::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_coop_taskrun()
            .build(SQ_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .build(SQ_ENTRIES)
            })?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::RecvMsgMulti::CODE)
            || !probe.is_supported(opcode::SendMsg::CODE)
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks recvmsg/sendmsg",
            ));
        }
        let buf_ring = BufRingMem::new(nbufs as u16)?;
        // SAFETY: the ring memory is page-aligned, holds `nbufs` entries and outlives the
        // registration (it is dropped after the ring, which unregisters it on close).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buf_ring.ptr as u64,
                nbufs as u16,
                BGID,
                0,
            )?;
        }
        // SAFETY: msghdr is plain old data; all-zero is valid.
        let mut rx_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        rx_hdr.msg_namelen = 0;
        rx_hdr.msg_controllen = CONTROL_LEN as _;
        let mut io = UringIo {
            ring,
            sock,
            bufs: RxBuffers::new(nbufs)?,
            buf_ring,
            in_use: (0..nbufs as u16).collect(),
            held: VecDeque::new(),
            rx_hdr,
            armed: false,
            pending: VecDeque::new(),
            max_datagrams: batch.max(1),
            batch: batch.max(1),
            tx: TxMessages::new(),
            tx_done: Vec::with_capacity(SQ_ENTRIES as usize),
            gso: GsoPolicy::default(),
            rx_overflows: 0,
            kernel_drops: DropPoller::default(),
            rx_errors: 0,
        };
        io.give_back_buffers();
        io.arm()?;
        io.ring.submit()?;
        // A kernel without multishot recvmsg fails the request at once.
        io.ring.completion().sync();
        if let Some(c) = io.ring.completion().next() {
            if c.user_data() == RECV && c.result() < 0 {
                // the request is over: nothing to cancel when `io` drops
                io.armed = false;
                return Err(io::Error::from_raw_os_error(-c.result()));
            }
            io.pending.push_back((c.result(), c.flags()));
            if !cqueue::more(c.flags()) {
                io.armed = false;
            }
        }
        Ok(io)
    }

    /// Publishes the buffers of the last batch to the buffer ring, except those that still
    /// hold a segment waiting to be handed out.
    fn give_back_buffers(&mut self) {
        if self.in_use.is_empty() {
            return;
        }
        let tail = self.buf_ring.tail().load(Ordering::Relaxed);
        let mut published: u16 = 0;
        let mut in_use = std::mem::take(&mut self.in_use);
        in_use.retain(|&bid| {
            if self
                .held
                .iter()
                .any(|d| d.offset / BUF_LEN == usize::from(bid))
            {
                return true;
            }
            let addr = self.bufs.publish(bid);
            self.buf_ring
                .set(tail.wrapping_add(published), addr, BUF_LEN, bid);
            published += 1;
            false
        });
        self.in_use = in_use;
        // release: the entries are written before the kernel can see the new tail
        self.buf_ring
            .tail()
            .store(tail.wrapping_add(published), Ordering::Release);
    }

    /// Queues the multishot receive if it is not running.
    fn arm(&mut self) -> io::Result<()> {
        if self.armed {
            return Ok(());
        }
        let e = opcode::RecvMsgMulti::new(
            types::Fd(self.sock.as_raw_fd()),
            &*self.rx_hdr as *const libc::msghdr,
            BGID,
        )
        .build()
        .user_data(RECV);
        // SAFETY: the msghdr is boxed in `self` and lives as long as the ring; the buffer group
        // is registered.
        unsafe { self.ring.submission().push(&e) }
            .map_err(|_| io::Error::other("submission queue full"))?;
        self.armed = true;
        Ok(())
    }

    /// Moves every completion waiting into `pending` and counts finished sends in `tx_done`
    /// as `(user_data, result)`.
    fn reap(&mut self, tx_done: &mut Vec<(u64, i32)>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for c in &mut cq {
            match c.user_data() {
                RECV => {
                    if !cqueue::more(c.flags()) {
                        self.armed = false;
                    }
                    self.pending.push_back((c.result(), c.flags()));
                }
                CANCEL => {}
                k => tx_done.push((k, c.result())),
            }
        }
    }

    /// Turns one receive completion into datagrams.
    fn take(&mut self, res: i32, flags: u32, out: &mut Vec<Datagram>) {
        let Some(bid) = cqueue::buffer_select(flags) else {
            if res < 0 && res != -libc::ENOBUFS {
                self.rx_errors += 1;
                tracing::debug!(error = %io::Error::from_raw_os_error(-res), "io_uring receive error");
            }
            return;
        };
        // the buffer is ours until we give it back, whatever the result
        let len = usize::try_from(res).unwrap_or(0);
        let base = self.bufs.base();
        let Some(buf) = self.bufs.take(bid, len) else {
            self.rx_errors += 1;
            return;
        };
        self.in_use.push(bid);
        if res < 0 {
            self.rx_errors += 1;
            return;
        }
        let Ok(msg) = types::RecvMsgOut::parse(buf, &self.rx_hdr) else {
            self.rx_errors += 1;
            return;
        };
        if msg.is_payload_truncated() {
            self.rx_errors += 1;
            return;
        }
        let control = msg.control_data();
        let (gso, ovfl) = if control.is_empty() {
            (0, None)
        } else {
            // the cmsg walk reads `cmsghdr` fields: give it an 8-byte aligned copy
            let mut aligned = CmsgBuf::default();
            let n = control.len().min(aligned.0.len());
            aligned.0[..n].copy_from_slice(&control[..n]);
            // SAFETY: msghdr is plain old data; all-zero is valid.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_control = aligned.0.as_mut_ptr().cast();
            h.msg_controllen = n as _;
            // SAFETY: `h` describes `aligned`, a copy of the bytes the kernel wrote.
            unsafe { rx_control(&h) }
        };
        if let Some(o) = ovfl {
            self.rx_overflows = self.rx_overflows.max(u64::from(o));
        }
        let payload = msg.payload_data();
        let offset = payload.as_ptr() as usize - base;
        split_gro(offset, payload.len(), gso, out);
    }

    /// Re-arms the multishot receive if it ended and moves waiting completions into
    /// `pending`, waiting up to `timeout` for one when none is there.
    fn poll_completions(&mut self, timeout: Duration) -> io::Result<()> {
        self.arm()?;
        let mut tx_done = Vec::new();
        self.reap(&mut tx_done);
        if self.pending.is_empty() {
            let ts = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&ts);
            let r = retry_if_interrupted(|| {
                if timeout.is_zero() {
                    self.ring.submit()
                } else {
                    self.ring.submitter().submit_with_args(1, &args)
                }
            });
            match r {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            self.reap(&mut tx_done);
        } else if !self.ring.submission().is_empty() {
            match retry_if_interrupted(|| self.ring.submit()) {
                Ok(_) => {}
                // the re-arm stays queued for the next call; the completions are handled now
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
        }
        debug_assert!(tx_done.is_empty(), "sends complete within send()");
        Ok(())
    }

    /// Moves held segments into `out`, oldest first, up to the cap.
    fn hand_out_held(&mut self, out: &mut Vec<Datagram>) {
        while out.len() < self.max_datagrams
            && let Some(d) = self.held.pop_front()
        {
            out.push(d);
        }
    }

    /// Takes waiting completions until `out` reaches the cap; holds the segments past it (the
    /// last completion's, when it was a super-packet) for the next `recv`.
    fn drain_pending(&mut self, out: &mut Vec<Datagram>) {
        while out.len() < self.max_datagrams
            && let Some((res, flags)) = self.pending.pop_front()
        {
            self.take(res, flags, out);
        }
        if out.len() > self.max_datagrams {
            self.held.extend(out.drain(self.max_datagrams..));
        }
    }

    /// Receive completions that carried an error (not counting running out of buffers).
    pub fn rx_errors(&self) -> u64 {
        self.rx_errors
    }
}

impl UdpIo for UringIo {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn recv(&mut self, timeout: Duration, out: &mut Vec<Datagram>) -> io::Result<usize> {
        out.clear();
        self.give_back_buffers();
        // held segments make a batch already: no waiting for more
        let wait = if self.held.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        if let Err(e) = self.poll_completions(wait) {
            if self.held.is_empty() {
                return Err(e);
            }
            // the held segments are not lost to it; the error comes back on the next call
            tracing::debug!(error = %e, "io_uring receive failed; handing out held segments");
        }
        self.hand_out_held(out);
        self.drain_pending(out);
        Ok(out.len())
    }

    fn set_recv_limit(&mut self, max: usize) {
        self.max_datagrams = max.clamp(1, self.batch);
    }

    fn frames_mut<'a>(&'a mut self, datagrams: &[Datagram]) -> Vec<&'a mut [u8]> {
        let mut frames = Vec::with_capacity(datagrams.len());
        let mut end = 0;
        for &d in datagrams {
            assert!(
                d.offset >= end,
                "datagrams in ascending offset order, not overlapping"
            );
            let start = self.bufs.checked(d);
            end = d.offset + d.len;
            // SAFETY: `checked` put `d` inside one buffer whose completion the last `recv` took:
            // the kernel no longer writes it, and it is not published again before the next
            // `recv`, which needs `&mut self` and so waits for these slices to end. The
            // ascending, non-overlapping order makes the slices disjoint.
            frames.push(unsafe { std::slice::from_raw_parts_mut(start, d.len) });
        }
        frames
    }

    fn datagram(&self, d: Datagram) -> &[u8] {
        let start = self.bufs.checked(d);
        // SAFETY: as in `frames_mut`: a completed buffer that stays ours while `self` is
        // borrowed; no mutable slice of it can coexist with this `&self` borrow.
        unsafe { std::slice::from_raw_parts(start, d.len) }
    }

    fn rx_overflows(&self) -> u64 {
        self.rx_overflows.max(self.kernel_drops.get(&self.sock))
    }

    fn readiness_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.sock.as_raw_fd())
    }

    fn send(&mut self, batch: &[Outgoing<'_>]) -> SendStats {
        let mut stats = SendStats::default();
        if batch.is_empty() {
            return stats;
        }
        let now = std::time::Instant::now();
        let m = self.tx.build(batch, &self.gso, now);
        let fd = types::Fd(self.sock.as_raw_fd());
        let mut next = 0; // next message to queue
        let mut in_flight = 0;
        let mut refused: Vec<usize> = Vec::new(); // messages whose GSO the kernel refused
        // reused between calls: no allocation per send
        let mut tx_done = std::mem::take(&mut self.tx_done);
        while next < m || in_flight > 0 {
            {
                let mut sq = self.ring.submission();
                while next < m && !sq.is_full() {
                    let e = opcode::SendMsg::new(fd, self.tx.msghdr(next))
                        .build()
                        .user_data(next as u64);
                    // SAFETY: the msghdr, its iovecs, address and control buffer live in
                    // `self.tx` and point at `batch`, all untouched until every send queued
                    // here has completed (this loop waits for them).
                    unsafe { sq.push(&e) }.expect("checked not full");
                    next += 1;
                    in_flight += 1;
                }
            }
            stats.calls += 1;
            if let Err(e) = retry_if_interrupted(|| self.ring.submit_and_wait(1)) {
                match e.raw_os_error() {
                    Some(libc::EBUSY) => {}
                    Some(libc::EAGAIN) | Some(libc::ENOMEM) => {
                        std::thread::sleep(Duration::from_micros(50))
                    }
                    _ => {
                        // The ring itself is broken (a bad fd or address: a bug, not bad
                        // input). Sends already queued point at the caller's data and might
                        // still run, so returning would be unsound.
                        tracing::error!(error = %e, "io_uring_enter failed while sends were in flight");
                        std::process::abort();
                    }
                }
            }
            tx_done.clear();
            self.reap(&mut tx_done);
            for &(k, res) in &tx_done {
                let k = k as usize;
                in_flight -= 1;
                let n = self.tx.datagrams(k);
                let (first, _, seg) = self.tx.runs[k];
                if res >= 0 {
                    stats.sent += n;
                } else if n > 1 && self.gso.learn(batch[first].to, Some(-res), seg, now) {
                    refused.push(k);
                } else {
                    stats.failed += n;
                    tracing::debug!(error = %io::Error::from_raw_os_error(-res), "send failed");
                }
            }
        }
        tx_done.clear();
        self.tx_done = tx_done;
        if !refused.is_empty() {
            // resend just the refused messages' datagrams, under the updated policy (the
            // others went out or failed for their own reasons)
            let runs = self.tx.runs.clone();
            for k in refused {
                let (s, e, _) = runs[k];
                let more = self.send(&batch[s..e]);
                stats.sent += more.sent;
                stats.failed += more.failed;
                stats.calls += more.calls;
            }
        }
        stats
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        // Stop the multishot receive before the buffers go away; closing the ring would too,
        // but asynchronously.
        if self.armed {
            let e = opcode::AsyncCancel::new(RECV).build().user_data(CANCEL);
            // SAFETY: a cancellation refers to no memory of ours.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                let ts = types::Timespec::from(Duration::from_millis(100));
                let args = types::SubmitArgs::new().timespec(&ts);
                for _ in 0..4 {
                    let _ = self.ring.submitter().submit_with_args(1, &args);
                    let mut done = Vec::new();
                    self.reap(&mut done);
                    if !self.armed {
                        break;
                    }
                }
            }
        }
        if self.armed {
            // The receive may still be live when the ring closes (asynchronously): leak the
            // buffers and the buffer ring rather than let the kernel write into freed memory.
            tracing::warn!("io_uring receive not cancelled in time; leaking its buffers");
            self.bufs.leak = true;
            self.buf_ring.leak = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::socket::bind_udp;
    use std::time::Instant;

    fn uring(batch: usize) -> Option<(UringIo, std::net::SocketAddr)> {
        let sock = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sock.local_addr().unwrap();
        match UringIo::new(sock, batch) {
            Ok(u) => Some((u, addr)),
            Err(e) => {
                eprintln!("io_uring unavailable here ({e}); skipping");
                None
            }
        }
    }

    /// Receives until `want` datagrams arrived or 5 s passed; returns their bytes.
    fn recv_all(u: &mut UringIo, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut dg = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < end {
            u.recv(Duration::from_millis(50), &mut dg).unwrap();
            got.extend(dg.iter().map(|d| u.datagram(*d).to_vec()));
        }
        got
    }

    #[test]
    fn receives_more_datagrams_than_buffers_in_order() {
        let Some((mut u, addr)) = uring(8) else {
            return;
        };
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // 8 buffers, 300 datagrams queued before the first recv: the multishot receive runs
        // out of buffers and must be re-armed, losing nothing
        for i in 0..300u32 {
            let mut d = vec![(i % 251) as u8; 100 + (i as usize % 1500)];
            d[..4].copy_from_slice(&i.to_le_bytes());
            tx.send_to(&d, addr).unwrap();
        }
        let got = recv_all(&mut u, 300);
        assert_eq!(got.len(), 300);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.len(), 100 + i % 1500);
            assert_eq!(u32::from_le_bytes(d[..4].try_into().unwrap()), i as u32);
            assert!(d[4..].iter().all(|&b| b == (i % 251) as u8));
        }
        assert_eq!(u.rx_errors(), 0);
    }

    /// Sends `n` datagrams of 100 bytes to `addr` and receives them (one batch or more).
    fn one_batch(u: &mut UringIo, addr: std::net::SocketAddr, n: usize) -> Vec<Datagram> {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..n {
            tx.send_to(&[i as u8; 100], addr).unwrap();
        }
        let mut dg = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while dg.is_empty() && Instant::now() < end {
            u.recv(Duration::from_millis(50), &mut dg).unwrap();
        }
        dg
    }

    #[test]
    fn frames_are_writable_in_place_and_disjoint() {
        let Some((mut u, addr)) = uring(8) else {
            return;
        };
        let mut dg = one_batch(&mut u, addr, 3);
        assert!(!dg.is_empty());
        dg.sort_unstable_by_key(|d| d.offset);
        for (k, f) in u.frames_mut(&dg).into_iter().enumerate() {
            assert_eq!(f.len(), 100);
            f[0] = 0xa0 + k as u8;
        }
        for (k, d) in dg.iter().enumerate() {
            assert_eq!(u.datagram(*d)[0], 0xa0 + k as u8);
        }
    }

    /// Whether `f` panics (the backends refuse bad datagrams by panicking).
    fn panics(f: impl FnOnce()) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
    }

    #[test]
    fn a_buffer_the_kernel_owns_is_never_handed_out() {
        let Some((mut u, addr)) = uring(8) else {
            return;
        };
        let dg = one_batch(&mut u, addr, 1);
        assert_eq!(dg.len(), 1);
        // the next buffer is published to the ring: the kernel may be writing it
        let bid = dg[0].offset / BUF_LEN;
        let theirs = Datagram {
            offset: ((bid + 1) % 8) * BUF_LEN + 100,
            len: 10,
        };
        assert!(panics(|| {
            let _ = u.frames_mut(&[theirs]);
        }));
        assert!(panics(|| {
            let _ = u.datagram(theirs);
        }));
        // past the end of the buffer that is ours
        let past = Datagram {
            offset: dg[0].offset,
            len: BUF_LEN,
        };
        assert!(panics(|| {
            let _ = u.datagram(past);
        }));
        assert!(!panics(|| {
            let _ = u.frames_mut(&dg);
        }));
    }

    #[test]
    fn buffers_given_back_by_recv_are_no_longer_handed_out() {
        let Some((mut u, addr)) = uring(8) else {
            return;
        };
        let dg = one_batch(&mut u, addr, 1);
        let mut none = Vec::new();
        // this recv publishes the buffer again
        u.recv(Duration::ZERO, &mut none).unwrap();
        assert!(none.is_empty());
        assert!(panics(|| {
            let _ = u.datagram(dg[0]);
        }));
    }

    #[test]
    fn recv_times_out_empty() {
        let Some((mut u, _)) = uring(8) else { return };
        let mut dg = Vec::new();
        let t = Instant::now();
        assert_eq!(u.recv(Duration::from_millis(30), &mut dg).unwrap(), 0);
        assert!(t.elapsed() >= Duration::from_millis(25));
        assert_eq!(u.recv(Duration::ZERO, &mut dg).unwrap(), 0);
    }

    #[test]
    fn sends_gso_runs_to_several_destinations() {
        let Some((mut u, _)) = uring(8) else { return };
        // large receive buffers, no GRO: each datagram is read on its own
        let a = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        for s in [&a, &b] {
            crate::io::socket::set_gro(s, false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..200u32)
            .map(|i| {
                let mut d = vec![i as u8; 1200];
                d[..4].copy_from_slice(&i.to_le_bytes());
                d
            })
            .collect();
        // grouped by destination, as the worker does: 150 to a (GSO runs of 64), 50 to b
        let batch: Vec<Outgoing<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, d)| Outgoing {
                to: if i < 150 { aa } else { ba },
                data: d,
            })
            .collect();
        let st = u.send(&batch);
        assert_eq!(st.sent, 200, "{st:?}");
        assert_eq!(st.failed, 0);
        let mut buf = vec![0u8; 2048];
        for (sock, range) in [(&a, 0..150u32), (&b, 150..200)] {
            for i in range {
                let n = sock.recv(&mut buf).unwrap();
                assert_eq!(n, 1200);
                assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), i);
            }
        }
    }

    #[test]
    fn a_refused_gso_message_is_resent_alone_and_the_others_only_once() {
        let Some((mut u, _)) = uring(8) else { return };
        let rx = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        crate::io::socket::set_gro_off_for_test(&rx);
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let good = rx.local_addr().unwrap();
        // port 0: the kernel refuses a GSO send there (EINVAL), and a single one too
        let bad: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let d = [7u8; 1000];
        let batch = [
            Outgoing { to: bad, data: &d },
            Outgoing { to: bad, data: &d },
            Outgoing { to: good, data: &d },
            Outgoing { to: good, data: &d },
        ];
        let st = u.send(&batch);
        assert_eq!((st.sent, st.failed), (2, 2), "{st:?}");
        let now = Instant::now();
        assert_eq!(u.gso.max_seg(&bad, now), 0, "the refusal was taken as one");
        assert_eq!(
            u.gso.max_seg(&good, now),
            usize::MAX,
            "GSO stays on for the other destination"
        );
        let mut buf = [0u8; 2048];
        let mut got = 0;
        while rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        assert_eq!(
            got, 2,
            "the good run arrives once, not again after the refusal"
        );
    }

    #[test]
    fn send_and_receive_through_two_rings() {
        let Some((mut a, _)) = uring(16) else { return };
        let Some((mut b, baddr)) = uring(16) else {
            return;
        };
        let data: Vec<Vec<u8>> = (0..500u32).map(|i| i.to_be_bytes().repeat(300)).collect();
        for chunk in data.chunks(50) {
            let batch: Vec<Outgoing<'_>> = chunk
                .iter()
                .map(|d| Outgoing { to: baddr, data: d })
                .collect();
            assert_eq!(a.send(&batch).sent, 50);
        }
        let got = recv_all(&mut b, 500);
        assert_eq!(got, data);
    }
}
