//! Socket setup: UDP, `SO_REUSEPORT`, large buffers, UDP GRO.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a UDP socket to `addr` with `SO_REUSEPORT` (so every worker can bind the same address),
/// 8 MiB buffers (best effort) and UDP GRO enabled (best effort).
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    let sock: UdpSocket = s.into();
    // SO_*BUFFORCE needs CAP_NET_ADMIN; without it the kernel caps at net.core.[rw]mem_max.
    if set_int_option(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_BUFFER).is_err() {
        let _ = set_int_option(&sock, libc::SOL_SOCKET, libc::SO_RCVBUF, SOCKET_BUFFER);
    }
    if set_int_option(&sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCKET_BUFFER).is_err() {
        let _ = set_int_option(&sock, libc::SOL_SOCKET, libc::SO_SNDBUF, SOCKET_BUFFER);
    }
    // the kernel reports its receive-queue drops in every message's control data
    let _ = set_int_option(&sock, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
    let s2: Socket = sock.into();
    s2.bind(&addr.into())?;
    let sock: UdpSocket = s2.into();
    let _ = set_gro(&sock, true);
    Ok(sock)
}

/// Socket buffer size asked for (the kernel doubles it for bookkeeping).
pub(crate) const SOCKET_BUFFER: libc::c_int = 16 << 20;

/// Sets an integer socket option (`setsockopt` with a `c_int` value) on any socket.
pub fn set_int_option(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid pointer to `v`; the fd is
    // open for the lifetime of `sock`.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns UDP GRO on or off.
pub fn set_gro(sock: &UdpSocket, on: bool) -> io::Result<()> {
    set_int_option(sock, libc::SOL_UDP, libc::UDP_GRO, on.into())
}

/// Converts a socket address into a `sockaddr_storage` and its length.
pub(crate) fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let sa: socket2::SockAddr = (*addr).into();
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut out: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = sa.len() as usize;
    // SAFETY: `sa.as_ptr()` points to `len` valid bytes, `len <= size_of::<sockaddr_storage>()`,
    // and the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr().cast::<u8>(),
            (&mut out as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        );
    }
    (out, sa.len())
}

/// Reads the UDP GRO segment size from a received message's control data (0 if absent).
///
/// # Safety
/// `hdr` must describe a control buffer that the kernel filled (its `msg_control` points to
/// `msg_controllen` readable bytes).
#[allow(dead_code)] // for backends that only need the segment size
pub(crate) unsafe fn gro_segment_size(hdr: &libc::msghdr) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { rx_control(hdr) }.0
}

/// Reads the UDP GRO segment size (0 if absent) and the socket's cumulative receive-queue drop
/// count (`SO_RXQ_OVFL`, if present) from a received message's control data.
///
/// # Safety
/// As [`gro_segment_size`].
pub(crate) unsafe fn rx_control(hdr: &libc::msghdr) -> (usize, Option<u32>) {
    let mut size = 0usize;
    let mut ovfl = None;
    // SAFETY: the caller guarantees the control buffer is valid; CMSG_* walk it within
    // `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let p = libc::CMSG_DATA(c).cast::<libc::c_int>();
                size = std::ptr::read_unaligned(p).max(0) as usize;
            } else if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                ovfl = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    (size, ovfl)
}

/// An aligned control-message buffer, big enough for one UDP_GRO or UDP_SEGMENT cmsg.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct CmsgBuf(pub [u8; 64]);

impl Default for CmsgBuf {
    fn default() -> Self {
        CmsgBuf([0; 64])
    }
}

/// Writes a UDP_SEGMENT cmsg (GSO segment size) into `buf`; returns the control length.
pub(crate) fn write_gso_cmsg(buf: &mut CmsgBuf, seg: u16) -> usize {
    let buf = &mut buf.0;
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize,
            libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize,
        )
    };
    debug_assert!(space <= buf.len());
    buf.fill(0);
    // SAFETY: `buf` holds at least `space` bytes, enough for one cmsghdr with a u16 payload.
    unsafe {
        let hdr = libc::cmsghdr {
            cmsg_len: len as _,
            cmsg_level: libc::SOL_UDP,
            cmsg_type: libc::UDP_SEGMENT,
        };
        std::ptr::write_unaligned(buf.as_mut_ptr().cast::<libc::cmsghdr>(), hdr);
        let data_off = libc::CMSG_LEN(0) as usize;
        std::ptr::write_unaligned(buf.as_mut_ptr().add(data_off).cast::<u16>(), seg);
    }
    space
}

/// The socket's receive drops so far as the kernel counts them (`sk_drops`, read with
/// `SO_MEMINFO`); `None` where the kernel does not say.
pub(crate) fn kernel_drops(sock: &UdpSocket) -> Option<u64> {
    let mut info = [0u32; 16]; // SK_MEMINFO_VARS is 9 today; room for more
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info` and updates `len`; the fd is
    // open for the lifetime of `sock`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let drops = libc::SK_MEMINFO_DROPS as usize;
    (r == 0 && len as usize >= (drops + 1) * 4).then(|| u64::from(info[drops]))
}

/// Reads [`kernel_drops`] at most every 100 ms, so a worker can ask every batch: the drop count
/// carried in received messages' control data (`SO_RXQ_OVFL`) only moves when a datagram
/// arrives after the drops, which misses drops at the end of a burst.
#[derive(Debug, Default)]
pub(crate) struct DropPoller {
    last: std::cell::Cell<Option<std::time::Instant>>,
    /// The kernel's last reading (a u32 that wraps).
    raw: std::cell::Cell<u32>,
    value: std::cell::Cell<u64>,
}

impl DropPoller {
    pub(crate) fn get(&self, sock: &UdpSocket) -> u64 {
        let due = self
            .last
            .get()
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(100));
        if due {
            let first = self.last.get().is_none();
            self.last.set(Some(std::time::Instant::now()));
            if let Some(d) = kernel_drops(sock) {
                let d = d as u32;
                // the kernel's counter is 32 bits: add what it moved since the last reading
                let moved = if first {
                    d
                } else {
                    d.wrapping_sub(self.raw.get())
                };
                self.raw.set(d);
                self.value.set(self.value.get() + u64::from(moved));
            }
        }
        self.value.get()
    }
}

/// Turns GRO off on a test receiver, so it reads datagrams one by one.
#[cfg(test)]
pub(crate) fn set_gro_off_for_test(sock: &UdpSocket) {
    set_gro(sock, false).unwrap();
}

#[cfg(test)]
mod drop_tests {
    use super::*;

    #[test]
    fn kernel_drops_are_read_without_receiving() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // a small receive buffer (the kernel doubles it and enforces a minimum)
        set_int_option(&rx, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096).unwrap();
        let to = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = kernel_drops(&rx).expect("SO_MEMINFO works on Linux");
        for _ in 0..500 {
            tx.send_to(&[0u8; 1200], to).unwrap();
        }
        let after = kernel_drops(&rx).unwrap();
        assert!(after >= before + 400, "{before} -> {after}");
        let p = DropPoller::default();
        assert_eq!(p.get(&rx), after);
    }
}
