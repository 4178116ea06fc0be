//! The io_uring backend (placeholder until written): reports itself unavailable so that
//! `Auto` falls back to recvmmsg/sendmmsg.

use std::io;
use std::net::UdpSocket;
use std::time::Duration;

use super::{Datagram, Outgoing, SendStats, UdpIo};

/// io_uring I/O on one socket.
pub struct UringIo {
    _sock: UdpSocket,
}

impl UringIo {
    /// Sets up the ring.
    pub fn new(_sock: UdpSocket, _batch: usize) -> io::Result<UringIo> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring backend not built yet",
        ))
    }
}

impl UdpIo for UringIo {
    fn name(&self) -> &'static str {
        "io_uring"
    }
    fn recv(&mut self, _timeout: Duration, out: &mut Vec<Datagram>) -> io::Result<usize> {
        out.clear();
        Ok(0)
    }
    fn arena_mut(&mut self) -> &mut [u8] {
        &mut []
    }
    fn send(&mut self, _batch: &[Outgoing<'_>]) -> SendStats {
        SendStats::default()
    }
}
