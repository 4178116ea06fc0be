//! Where final-hop messages go.
//!
//! Datagram layout (both sink kinds): `destination (32 bytes) | SURB identifier (16 bytes) |
//! flags (1 byte: bit 0 = sealed v260 SURB reply) | message`. A UDP sink receives them through
//! the worker's batched send path; a Unix datagram sink gets one `send` per message.

use std::os::unix::net::UnixDatagram;

/// Bytes in front of the message in a sink datagram.
pub const SINK_HEADER_LEN: usize = 32 + 16 + 1;

/// Where to deliver final-hop messages: defined once in the control crate (the config names
/// it) and re-exported here.
pub use mixplane_control::config::SinkAddr;

/// Writes the sink datagram header.
pub(crate) fn write_header(
    out: &mut [u8],
    destination: &[u8; 32],
    identifier: &[u8; 16],
    sealed: bool,
) {
    out[..32].copy_from_slice(destination);
    out[32..48].copy_from_slice(identifier);
    out[48] = u8::from(sealed);
}

/// A parsed sink datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkMessage<'a> {
    /// Destination address bytes.
    pub destination: [u8; 32],
    /// SURB identifier.
    pub identifier: [u8; 16],
    /// A sealed v260 SURB reply.
    pub sealed: bool,
    /// The message.
    pub message: &'a [u8],
}

/// Parses a sink datagram (for sink readers, the demo and tests).
pub fn parse(datagram: &[u8]) -> Option<SinkMessage<'_>> {
    if datagram.len() < SINK_HEADER_LEN {
        return None;
    }
    Some(SinkMessage {
        destination: datagram[..32].try_into().ok()?,
        identifier: datagram[32..48].try_into().ok()?,
        sealed: datagram[48] & 1 != 0,
        message: &datagram[SINK_HEADER_LEN..],
    })
}

/// A connected Unix datagram sink.
pub(crate) struct UnixSink {
    sock: UnixDatagram,
    buf: Vec<u8>,
}

impl UnixSink {
    pub(crate) fn connect(path: &std::path::Path) -> std::io::Result<UnixSink> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        sock.set_nonblocking(true)?;
        Ok(UnixSink {
            sock,
            buf: Vec::with_capacity(SINK_HEADER_LEN + 33_000),
        })
    }

    pub(crate) fn send(
        &mut self,
        destination: &[u8; 32],
        identifier: &[u8; 16],
        sealed: bool,
        msg: &[u8],
    ) -> bool {
        self.buf.clear();
        self.buf.resize(SINK_HEADER_LEN, 0);
        write_header(&mut self.buf, destination, identifier, sealed);
        self.buf.extend_from_slice(msg);
        self.sock.send(&self.buf).is_ok()
    }
}
