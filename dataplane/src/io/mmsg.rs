//! The recvmmsg/sendmmsg backend: one syscall per received batch and one per sent batch, with
//! UDP GRO on receive and UDP GSO on send where the kernel supports them.
//!
//! The arena has one slot of [`MAX_DATAGRAM`] bytes per message of the largest batch. A
//! receive never hands out more datagrams than the cap (`set_recv_limit`): the segments of a
//! GRO super-packet past it are held where they are and come first in the next receive, and
//! the slots that hold them, or that the caller may still be reading, are not given to the
//! kernel until then.

use std::collections::VecDeque;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::socket::{CmsgBuf, DropPoller, rx_control};
use super::tx::{GsoPolicy, TxMessages};
use super::{Datagram, MAX_DATAGRAM, Outgoing, SendStats, UdpIo, retry_if_interrupted, split_gro};

/// recvmmsg/sendmmsg I/O on one socket.
pub(crate) struct MmsgIo {
    sock: UdpSocket,
    batch: usize,
    arena: Vec<u8>,
    rx_iov: Vec<libc::iovec>,
    rx_hdr: Vec<libc::mmsghdr>,
    rx_cmsg: Vec<CmsgBuf>,
    tx: TxMessages,
    gso: GsoPolicy,
    rx_overflows: u64,
    kernel_drops: DropPoller,
    /// Messages asked of the next `recvmmsg`: `batch` without GRO, fewer while GRO
    /// super-packets arrive.
    rx_vlen: usize,
    /// Most datagrams a receive hands out (`batch`, or less after `set_recv_limit`).
    limit: usize,
    /// Segments of GRO super-packets received but not handed out yet (a receive stopped at
    /// `limit`), in arrival order: the next receive hands them out first.
    held: VecDeque<Datagram>,
    /// Arena slots the next `recvmmsg` may fill, rebuilt before each one.
    free: Vec<usize>,
    /// Per slot: whether a held segment is in it.
    busy: Vec<bool>,
}

// SAFETY: the raw pointers inside the iovec/msghdr vectors are scratch: they are rewritten to
// point into `arena`, the control buffers or the caller's data immediately before every syscall
// and never dereferenced otherwise, so moving the struct to another thread is sound.
unsafe impl Send for MmsgIo {}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data (integers and raw pointers); all-zero is valid.
    unsafe { std::mem::zeroed() }
}

impl MmsgIo {
    /// Wraps a bound socket; `batch` is the most messages per receive, fewer while GRO
    /// super-packets arrive (see `rx_vlen`).
    pub(crate) fn new(sock: UdpSocket, batch: usize) -> MmsgIo {
        let batch = batch.max(1);
        MmsgIo {
            sock,
            batch,
            arena: vec![0u8; batch * MAX_DATAGRAM],
            rx_iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                batch
            ],
            rx_hdr: vec![zeroed_mmsghdr(); batch],
            rx_cmsg: vec![CmsgBuf::default(); batch],
            tx: TxMessages::new(),
            gso: GsoPolicy::default(),
            rx_overflows: 0,
            kernel_drops: DropPoller::default(),
            rx_vlen: batch,
            limit: batch,
            held: VecDeque::new(),
            free: Vec::with_capacity(batch),
            busy: vec![false; batch],
        }
    }

    /// Marks the slots that hold a `held` segment busy (they are handed out by the receive
    /// under way, or later) and lists the others in `free`, in slot order: only these may be
    /// given to the kernel.
    fn find_free_slots(&mut self) {
        self.busy.fill(false);
        for d in &self.held {
            self.busy[d.offset / MAX_DATAGRAM] = true;
        }
        self.free.clear();
        self.free
            .extend((0..self.batch).filter(|&slot| !self.busy[slot]));
    }

    /// One `recvmmsg` of up to `vlen` messages (at most the free slots), without waiting:
    /// message `i` lands in slot `free[i]`.
    fn recv_now(&mut self, vlen: usize) -> io::Result<usize> {
        let vlen = vlen.min(self.free.len());
        if vlen == 0 {
            return Ok(0);
        }
        let base = self.arena.as_mut_ptr();
        for (i, &slot) in self.free[..vlen].iter().enumerate() {
            self.rx_iov[i] = libc::iovec {
                // SAFETY: slot < batch, so slot * MAX_DATAGRAM + MAX_DATAGRAM <= arena.len()
                // and the pointer stays in bounds.
                iov_base: unsafe { base.add(slot * MAX_DATAGRAM) }.cast(),
                iov_len: MAX_DATAGRAM,
            };
            let h = &mut self.rx_hdr[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.rx_iov[i];
            h.msg_iovlen = 1;
            h.msg_control = self.rx_cmsg[i].0.as_mut_ptr().cast();
            h.msg_controllen = self.rx_cmsg[i].0.len() as _;
            h.msg_flags = 0;
            self.rx_hdr[i].msg_len = 0;
        }
        retry_if_interrupted(|| {
            // SAFETY: the first `vlen` headers point at live, correctly sized buffers owned by
            // `self` for the duration of the call (free arena slots: no held segment lies in
            // them, and no slice of the last receive's datagrams lives, as this call holds
            // `&mut self`); the fd is open.
            let n = unsafe {
                libc::recvmmsg(
                    self.sock.as_raw_fd(),
                    self.rx_hdr.as_mut_ptr(),
                    vlen as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        })
    }

    /// [`Self::recv_now`], and when nothing is queued, once more after waiting up to `timeout`
    /// for the socket to turn readable. Returns how many messages came (0: none in time).
    fn recv_waiting(&mut self, timeout: Duration, vlen: usize) -> io::Result<usize> {
        match self.recv_now(vlen) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if timeout.is_zero() || !self.wait_readable(timeout)? {
                    return Ok(0);
                }
                match self.recv_now(vlen) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    r => r,
                }
            }
            r => r,
        }
    }

    /// Moves held segments into `out`, oldest first, up to the cap.
    fn hand_out_held(&mut self, out: &mut Vec<Datagram>) {
        while out.len() < self.limit
            && let Some(d) = self.held.pop_front()
        {
            out.push(d);
        }
    }

    /// Holds the datagrams of `out` past the cap for the next receive (they stay in their
    /// arena slots, which are not reused until they are handed out).
    fn hold_past_limit(&mut self, out: &mut Vec<Datagram>) {
        if out.len() > self.limit {
            self.held.extend(out.drain(self.limit..));
        }
    }

    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // `ppoll` takes the timeout to the nanosecond (`poll`'s milliseconds would turn a
        // wait for the delay wheel's next deadline into a spin below 1 ms, or wake late).
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        let r = retry_if_interrupted(|| {
            // SAFETY: one valid pollfd, a valid timespec, no signal mask.
            let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(r)
        })?;
        Ok(r > 0)
    }
}

impl UdpIo for MmsgIo {
    fn name(&self) -> &'static str {
        "recvmmsg"
    }

    fn recv(&mut self, timeout: Duration, out: &mut Vec<Datagram>) -> io::Result<usize> {
        out.clear();
        if self.held.len() >= self.limit {
            self.hand_out_held(out);
            return Ok(out.len());
        }
        // every held segment goes out now: receive into the slots none of them is in, and
        // do not wait when they make a batch already
        self.find_free_slots();
        let wait = if self.held.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        let vlen = self.rx_vlen.min(self.limit - self.held.len());
        let n = match self.recv_waiting(wait, vlen) {
            Ok(n) => n,
            Err(e) if self.held.is_empty() => return Err(e),
            Err(e) => {
                // the held segments are not lost to it; the error comes back on the next call
                tracing::debug!(error = %e, "recvmmsg failed; handing out held segments");
                0
            }
        };
        self.hand_out_held(out);
        let first = out.len();
        for i in 0..n {
            let len = self.rx_hdr[i].msg_len as usize;
            // SAFETY: the kernel filled this header's control buffer in the call above.
            let (gso, ovfl) = unsafe { rx_control(&self.rx_hdr[i].msg_hdr) };
            if let Some(o) = ovfl {
                self.rx_overflows = self.rx_overflows.max(u64::from(o));
            }
            split_gro(self.free[i] * MAX_DATAGRAM, len, gso, out);
        }
        if n > 0 {
            // Ask for fewer messages next time when GRO packs many datagrams into each, so a
            // receive brings about `limit` datagrams rather than `limit` super-packets (up to
            // 27 regular packets each: 1,700 packets, 4 MB, processed from L3 instead of L2;
            // measured with mixplane-nodebench: 80-81% -> 84% of the unwrap rate). What comes
            // past `limit` all the same is held for the next receive.
            let per = (out.len() - first).div_ceil(n);
            self.rx_vlen = self.limit.div_ceil(per).clamp(1, self.limit);
        }
        self.hold_past_limit(out);
        Ok(out.len())
    }

    fn set_recv_limit(&mut self, max: usize) {
        self.limit = max.clamp(1, self.batch);
        self.rx_vlen = self.rx_vlen.min(self.limit);
    }

    fn frames_mut<'a>(&'a mut self, datagrams: &[Datagram]) -> Vec<&'a mut [u8]> {
        crate::io::carve(&mut self.arena, datagrams)
    }

    fn datagram(&self, d: Datagram) -> &[u8] {
        crate::io::slice_of(&self.arena, d)
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
        let now = Instant::now();
        let m = self.tx.build(batch, &self.gso, now);
        let mut done = 0;
        let mut gso_failed = false;
        while done < m {
            let hdrs = self.tx.mmsg_from(done);
            let fd = self.sock.as_raw_fd();
            let r = retry_if_interrupted(|| {
                stats.calls += 1;
                // SAFETY: the headers from `done` on point at iovecs, addresses and control
                // buffers owned by `self.tx` and at the caller's data, all valid for this call.
                let r =
                    unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as libc::c_uint, 0) };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(r as usize)
            });
            match r {
                Err(e) => {
                    let (first, _, seg) = self.tx.runs[done];
                    if self.tx.datagrams(done) > 1
                        && self.gso.learn(batch[first].to, e.raw_os_error(), seg, now)
                    {
                        gso_failed = true;
                        break;
                    }
                    // this message fails; count its datagrams and go on with the rest
                    stats.failed += self.tx.datagrams(done);
                    tracing::debug!(error = %e, "send failed");
                    done += 1;
                }
                Ok(r) => {
                    for k in done..done + r {
                        stats.sent += self.tx.datagrams(k);
                    }
                    done += r;
                }
            }
        }
        if gso_failed {
            // resend what has not gone out yet, under the updated policy
            let rest = self.tx.runs[done].0;
            let more = self.send(&batch[rest..]);
            stats.sent += more.sent;
            stats.failed += more.failed;
            stats.calls += more.calls;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::socket::{bind_udp, set_gro_off_for_test};

    fn dg(slot: usize, at: usize) -> Datagram {
        Datagram {
            offset: slot * MAX_DATAGRAM + at,
            len: 100,
        }
    }

    #[test]
    fn a_wait_shorter_than_a_millisecond_is_not_cut_short() {
        // `poll` counted whole milliseconds and turned 300 µs into no wait at all (a spin).
        let sock = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let io = MmsgIo::new(sock, 4);
        let want = Duration::from_micros(300);
        let t = std::time::Instant::now();
        assert!(!io.wait_readable(want).unwrap(), "nothing was sent");
        let took = t.elapsed();
        assert!(took >= want, "returned after {took:?}");
    }

    #[test]
    fn recvmmsg_gets_only_slots_without_held_segments() {
        let sock = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        set_gro_off_for_test(&sock);
        let to = sock.local_addr().unwrap();
        let mut io = MmsgIo::new(sock, 4);
        // slots 2 and 0 hold segments that the receive under way hands out
        io.held.extend([dg(2, 0), dg(2, 100), dg(0, 0)]);
        io.find_free_slots();
        assert_eq!(io.free, [1, 3]);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 1..=5u8 {
            tx.send_to(&[i; 100], to).unwrap();
        }
        // asked for more messages than there are free slots: only two come, into 1 and 3
        assert_eq!(io.recv_now(10).unwrap(), 2);
        for (slot, first) in [(0, 0u8), (1, 1), (2, 0), (3, 2)] {
            assert_eq!(io.arena[slot * MAX_DATAGRAM], first, "slot {slot}");
        }
    }
}
