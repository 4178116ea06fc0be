//! Captures of UDP datagrams: writing what the loadgen sends and reading captures back for
//! replay.
//!
//! Written captures use LINKTYPE_RAW (101): every record is an IPv4 (or IPv6) header, a UDP
//! header and the datagram, with the real source and destination addresses and ports, correct
//! lengths, a correct IPv4 header checksum and a zero UDP checksum (allowed over IPv4; over IPv6
//! the checksum is computed, as IPv6 requires). Timestamps are nanoseconds. A file whose name ends
//! in `.pcapng` is written as pcapng (one interface, `if_tsresol` = 9), anything else as classic
//! pcap with nanosecond timestamps; Wireshark, tshark and tcpreplay read both.
//!
//! Reading accepts pcap (either byte order, micro- or nanosecond) and pcapng (any `if_tsresol`),
//! with link types RAW, IPV4, IPV6, ETHERNET (with 802.1Q tags), LINUX_SLL and NULL/LOOP (BSD
//! loopback), so captures taken with `tcpdump -i lo` replay too. Records that are not complete,
//! unfragmented UDP datagrams are skipped and counted.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use crate::error::{Error, Result, io};

/// LINKTYPE_RAW: records start with an IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u32 = 101;
/// Snapshot length of written captures (every UDP datagram fits).
pub const SNAPLEN: u32 = 65_535;
/// IPv4 header length written (no options).
pub const IPV4_HEADER_LEN: usize = 20;
/// IPv6 header length written (no extension headers).
pub const IPV6_HEADER_LEN: usize = 40;
/// UDP header length.
pub const UDP_HEADER_LEN: usize = 8;
const PROTO_UDP: u8 = 17;

/// Capture file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap.
    Pcap,
    /// pcapng.
    PcapNg,
}

impl Format {
    /// pcapng for names ending in `.pcapng`, else pcap.
    pub fn for_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("pcapng") => Format::PcapNg,
            _ => Format::Pcap,
        }
    }
}

/// The one's-complement sum of 16-bit big-endian words (an odd last byte is padded with 0).
fn ones_sum(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum of `bytes`.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    fold(ones_sum(0, bytes))
}

/// Writes an IPv4 or IPv6 packet carrying `payload` in a UDP datagram from `src` to `dst` into
/// `out` (cleared first). Both addresses must be of one family; the datagram must fit.
pub fn write_ip_udp(
    src: SocketAddr,
    dst: SocketAddr,
    ip_id: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let err = |why| Error::Record {
        src,
        dst,
        len: payload.len(),
        why,
    };
    out.clear();
    let udp_len = UDP_HEADER_LEN + payload.len();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = IPV4_HEADER_LEN + udp_len;
            let Ok(total16) = u16::try_from(total) else {
                return Err(err("the datagram does not fit IPv4"));
            };
            out.extend_from_slice(&[0x45, 0]); // version 4, IHL 5; DSCP/ECN 0
            out.extend_from_slice(&total16.to_be_bytes());
            out.extend_from_slice(&ip_id.to_be_bytes());
            out.extend_from_slice(&[0, 0, 64, PROTO_UDP, 0, 0]); // flags/fragment 0, TTL, proto, checksum
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let c = internet_checksum(&out[..IPV4_HEADER_LEN]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
            write_udp(src.port(), dst.port(), udp_len as u16, 0, out);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let Ok(udp16) = u16::try_from(udp_len) else {
                return Err(err("the datagram does not fit UDP"));
            };
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&udp16.to_be_bytes());
            out.extend_from_slice(&[PROTO_UDP, 64]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            // pseudo-header: addresses, length, protocol; then the UDP header and payload
            let mut acc = ones_sum(0, &out[8..40]);
            acc += udp_len as u32 + u32::from(PROTO_UDP);
            acc = ones_sum(acc, &src.port().to_be_bytes());
            acc = ones_sum(acc, &dst.port().to_be_bytes());
            acc = ones_sum(acc, &udp16.to_be_bytes());
            acc = ones_sum(acc, payload);
            let c = match fold(acc) {
                0 => 0xffff,
                c => c,
            };
            write_udp(src.port(), dst.port(), udp16, c, out);
        }
        _ => return Err(err("the addresses are of different families")),
    }
    out.extend_from_slice(payload);
    Ok(())
}

fn write_udp(sport: u16, dport: u16, len: u16, checksum: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&checksum.to_be_bytes());
}

/// A UDP datagram found in an IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpUdp {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// The UDP payload within the packet.
    pub payload: Range<usize>,
    /// The IP header's length field: IPv4 total length, or IPv6 payload length + 40.
    pub ip_len: usize,
    /// The UDP header's length field.
    pub udp_len: usize,
}

/// Parses an IPv4 or IPv6 packet that carries a whole UDP datagram. Checks that the lengths
/// agree: the IP length fits the bytes given (trailing link padding is allowed) and the UDP
/// length is exactly what the IP length leaves. Fragments, other protocols and IPv6 extension
/// headers give `None`.
pub fn parse_ip_udp(p: &[u8]) -> Option<IpUdp> {
    let (src, dst, ip_len, udp_at) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if ihl < IPV4_HEADER_LEN || p.len() < ihl + UDP_HEADER_LEN {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            let frag = u16::from_be_bytes([p[6], p[7]]);
            if p[9] != PROTO_UDP || frag & 0x3fff != 0 || total < ihl || total > p.len() {
                return None;
            }
            let s = Ipv4Addr::from(<[u8; 4]>::try_from(&p[12..16]).ok()?);
            let d = Ipv4Addr::from(<[u8; 4]>::try_from(&p[16..20]).ok()?);
            (IpAddr::V4(s), IpAddr::V4(d), total, ihl)
        }
        6 => {
            if p.len() < IPV6_HEADER_LEN + UDP_HEADER_LEN || p[6] != PROTO_UDP {
                return None;
            }
            let total = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([p[4], p[5]]));
            if total > p.len() {
                return None;
            }
            let s = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?);
            let d = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?);
            (IpAddr::V6(s), IpAddr::V6(d), total, IPV6_HEADER_LEN)
        }
        _ => return None,
    };
    let u = &p[udp_at..];
    let udp_len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if udp_len < UDP_HEADER_LEN || udp_at + udp_len != ip_len {
        return None;
    }
    Some(IpUdp {
        src: SocketAddr::new(src, u16::from_be_bytes([u[0], u[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([u[2], u[3]])),
        payload: udp_at + UDP_HEADER_LEN..ip_len,
        ip_len,
        udp_len,
    })
}

/// Finds the IP packet in a record of link type `link` and parses its UDP datagram; the range
/// is relative to `data`.
pub fn parse_link(link: DataLink, data: &[u8]) -> Option<IpUdp> {
    let at = match link {
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => 0,
        DataLink::ETHERNET => {
            let mut at = 12;
            // skip 802.1Q / 802.1ad tags
            while matches!(data.get(at..at + 2)?, [0x81, 0x00] | [0x88, 0xa8]) {
                at += 4;
            }
            match data.get(at..at + 2)? {
                [0x08, 0x00] | [0x86, 0xdd] => at + 2,
                _ => return None,
            }
        }
        DataLink::LINUX_SLL => 16,
        DataLink::NULL | DataLink::LOOP => 4,
        _ => return None,
    };
    let mut r = parse_ip_udp(data.get(at..)?)?;
    r.payload = r.payload.start + at..r.payload.end + at;
    Some(r)
}

/// Writes sent datagrams to a capture.
pub struct PcapRecorder<W: Write> {
    out: Out<W>,
    buf: Vec<u8>,
    ip_id: u16,
    frames: u64,
}

enum Out<W: Write> {
    Pcap(PcapWriter<W>),
    PcapNg(PcapNgWriter<W>),
}

impl PcapRecorder<BufWriter<File>> {
    /// Creates `path` (pcapng if it ends in `.pcapng`, else pcap).
    pub fn create(path: &Path) -> Result<Self> {
        let f = File::create(path).map_err(io(format!("creating {}", path.display())))?;
        PcapRecorder::new(BufWriter::with_capacity(1 << 20, f), Format::for_path(path))
    }
}

impl<W: Write> PcapRecorder<W> {
    /// Writes the file header to `w`.
    pub fn new(w: W, format: Format) -> Result<Self> {
        let pe = |source| Error::Pcap {
            what: "writing the capture header".into(),
            source,
        };
        let out = match format {
            Format::Pcap => Out::Pcap(
                PcapWriter::with_header(
                    w,
                    PcapHeader {
                        snaplen: SNAPLEN,
                        datalink: DataLink::RAW,
                        ts_resolution: TsResolution::NanoSecond,
                        endianness: Endianness::native(),
                        ..PcapHeader::default()
                    },
                )
                .map_err(pe)?,
            ),
            Format::PcapNg => {
                let mut ng = PcapNgWriter::with_endianness(w, Endianness::native()).map_err(pe)?;
                let mut idb = InterfaceDescriptionBlock::new(DataLink::RAW, SNAPLEN);
                idb.options.push(InterfaceDescriptionOption::IfTsResol(9));
                ng.write_pcapng_block(idb).map_err(pe)?;
                Out::PcapNg(ng)
            }
        };
        Ok(PcapRecorder {
            out,
            buf: Vec::with_capacity(1 << 16),
            ip_id: 0,
            frames: 0,
        })
    }

    /// Records one datagram sent at `ts` (since the Unix epoch).
    pub fn record(
        &mut self,
        ts: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> Result<()> {
        write_ip_udp(src, dst, self.ip_id, payload, &mut self.buf)?;
        let pe = |source| Error::Pcap {
            what: "writing a capture record".into(),
            source,
        };
        self.ip_id = self.ip_id.wrapping_add(1);
        let len = self.buf.len() as u32;
        match &mut self.out {
            Out::Pcap(w) => {
                w.write_packet(&PcapPacket::new(ts, len, &self.buf))
                    .map_err(pe)?;
            }
            Out::PcapNg(w) => {
                w.write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: ts, // written as a count of nanoseconds: if_tsresol = 9
                    original_len: len,
                    data: std::borrow::Cow::Borrowed(&self.buf),
                    options: Vec::new(),
                })
                .map_err(pe)?;
            }
        }
        self.frames += 1;
        Ok(())
    }

    /// Datagrams recorded so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Flushes and returns the writer.
    pub fn finish(self) -> Result<W> {
        let mut w = match self.out {
            Out::Pcap(w) => w.into_writer(),
            Out::PcapNg(w) => w.into_inner(),
        };
        w.flush().map_err(io("flushing the capture"))?;
        Ok(w)
    }
}

/// One UDP datagram of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedDatagram {
    /// Capture time (since the Unix epoch).
    pub ts: Duration,
    /// Source.
    pub src: SocketAddr,
    /// Destination.
    pub dst: SocketAddr,
    /// The payload within [`Capture::data`].
    pub range: Range<usize>,
}

/// A capture's UDP datagrams, preloaded: payloads back to back in one buffer.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// All payloads.
    pub data: Vec<u8>,
    /// The datagrams, in file order.
    pub datagrams: Vec<CapturedDatagram>,
    /// Records that were not whole UDP datagrams (or of an unsupported link type).
    pub skipped: u64,
    /// `pcap` or `pcapng`.
    pub format: &'static str,
}

impl Capture {
    /// Datagram `i`'s payload.
    pub fn payload(&self, i: usize) -> &[u8] {
        &self.data[self.datagrams[i].range.clone()]
    }

    fn push(&mut self, ts: Duration, link: DataLink, record: &[u8]) {
        match parse_link(link, record) {
            Some(u) => {
                let at = self.data.len();
                self.data.extend_from_slice(&record[u.payload.clone()]);
                self.datagrams.push(CapturedDatagram {
                    ts,
                    src: u.src,
                    dst: u.dst,
                    range: at..self.data.len(),
                });
            }
            None => self.skipped += 1,
        }
    }
}

/// Reads a pcap or pcapng file (told apart by its magic number).
pub fn read_capture(path: &Path) -> Result<Capture> {
    let f = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    read_capture_from(BufReader::with_capacity(1 << 20, f)).map_err(|e| match e {
        Error::Pcap { what, source } => Error::Pcap {
            what: format!("{}: {what}", path.display()),
            source,
        },
        Error::Capture(m) => Error::Capture(format!("{}: {m}", path.display())),
        e => e,
    })
}

/// pcapng's Section Header Block type, the first four bytes of every pcapng file.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads a pcap or pcapng capture.
pub fn read_capture_from<R: Read>(r: R) -> Result<Capture> {
    let pe = |source: PcapError| Error::Pcap {
        what: "reading the capture".into(),
        source,
    };
    let mut r = PeekReader {
        head: [0; 4],
        head_len: 0,
        pos: 0,
        inner: r,
    };
    r.fill_head().map_err(io("reading the capture"))?;
    let mut cap = Capture::default();
    if r.head[..r.head_len] == PCAPNG_MAGIC {
        cap.format = "pcapng";
        let mut ng = PcapNgReader::new(r).map_err(pe)?;
        // per interface: link type and the length of one timestamp unit in ns (num / den)
        let mut ifaces: Vec<(DataLink, u128, u128)> = Vec::new();
        while let Some(block) = ng.next_block() {
            match block.map_err(pe)? {
                Block::SectionHeader(_) => ifaces.clear(),
                Block::InterfaceDescription(idb) => {
                    let mut unit = (1_000u128, 1u128); // default: microseconds
                    for o in &idb.options {
                        if let InterfaceDescriptionOption::IfTsResol(b) = o {
                            let e = u32::from(b & 0x7f);
                            unit = if b & 0x80 == 0 {
                                match e {
                                    0..=9 => (10u128.pow(9 - e), 1),
                                    _ => (1, 10u128.pow((e - 9).min(30))),
                                }
                            } else {
                                (1_000_000_000, 1u128 << e.min(100))
                            };
                        }
                    }
                    ifaces.push((idb.linktype, unit.0, unit.1));
                }
                Block::EnhancedPacket(epb) => {
                    let Some(&(link, num, den)) = ifaces.get(epb.interface_id as usize) else {
                        return Err(Error::Capture(format!(
                            "packet on undeclared interface {}",
                            epb.interface_id
                        )));
                    };
                    // pcap-file 2 reads the raw timestamp as a count of nanoseconds
                    let raw = epb.timestamp.as_nanos();
                    let ns = raw * num / den;
                    cap.push(nanos(ns), link, &epb.data);
                }
                Block::SimplePacket(spb) => match ifaces.first() {
                    Some(&(link, ..)) => cap.push(Duration::ZERO, link, &spb.data),
                    None => cap.skipped += 1,
                },
                _ => {}
            }
        }
    } else {
        cap.format = "pcap";
        let mut p = PcapReader::new(r).map_err(pe)?;
        let link = p.header().datalink;
        while let Some(pkt) = p.next_packet() {
            let pkt = pkt.map_err(pe)?;
            cap.push(pkt.timestamp, link, &pkt.data);
        }
    }
    Ok(cap)
}

fn nanos(ns: u128) -> Duration {
    Duration::new((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u32)
}

/// A reader that looks at its first four bytes and then yields them again.
struct PeekReader<R> {
    head: [u8; 4],
    head_len: usize,
    pos: usize,
    inner: R,
}

impl<R: Read> PeekReader<R> {
    fn fill_head(&mut self) -> std::io::Result<()> {
        while self.head_len < 4 {
            let n = self.inner.read(&mut self.head[self.head_len..])?;
            if n == 0 {
                break;
            }
            self.head_len += n;
        }
        Ok(())
    }
}

impl<R: Read> Read for PeekReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < self.head_len {
            let n = (self.head_len - self.pos).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6_headers_round_trip() {
        let mut buf = Vec::new();
        let payload = b"hello, mixnet";
        for (s, d) in [
            ("10.1.2.3:1000", "192.168.0.9:1789"),
            ("[::1]:5", "[fe80::1]:1789"),
        ] {
            let (s, d): (SocketAddr, SocketAddr) = (s.parse().unwrap(), d.parse().unwrap());
            write_ip_udp(s, d, 7, payload, &mut buf).unwrap();
            let u = parse_ip_udp(&buf).unwrap();
            assert_eq!((u.src, u.dst), (s, d));
            assert_eq!(&buf[u.payload.clone()], payload);
            assert_eq!(u.ip_len, buf.len());
            if s.is_ipv4() {
                assert_eq!(internet_checksum(&buf[..20]), 0, "header checksum verifies");
            }
        }
        let v4: SocketAddr = "1.2.3.4:5".parse().unwrap();
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        assert!(write_ip_udp(v4, v6, 0, payload, &mut buf).is_err());
        assert!(write_ip_udp(v4, v4, 0, &[0; 70_000], &mut buf).is_err());
    }

    #[test]
    fn both_formats_write_and_read() {
        let s: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let d: SocketAddr = "127.0.0.2:1789".parse().unwrap();
        for format in [Format::Pcap, Format::PcapNg] {
            let mut rec = PcapRecorder::new(Vec::new(), format).unwrap();
            let t0 = Duration::new(1_700_000_000, 123_456_789);
            for i in 0..3u8 {
                let ts = t0 + Duration::from_micros(u64::from(i) * 1500);
                rec.record(ts, s, d, &vec![i; 100 + usize::from(i)])
                    .unwrap();
            }
            let bytes = rec.finish().unwrap();
            let cap = read_capture_from(&bytes[..]).unwrap();
            assert_eq!(cap.datagrams.len(), 3);
            assert_eq!(cap.skipped, 0);
            for i in 0..3 {
                assert_eq!(cap.payload(i), &vec![i as u8; 100 + i][..]);
                assert_eq!(
                    cap.datagrams[i].ts,
                    t0 + Duration::from_micros(i as u64 * 1500)
                );
                assert_eq!((cap.datagrams[i].src, cap.datagrams[i].dst), (s, d));
            }
        }
    }

    #[test]
    fn ethernet_records_parse() {
        let s: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let d: SocketAddr = "10.0.0.2:2".parse().unwrap();
        let mut ip = Vec::new();
        write_ip_udp(s, d, 0, b"xyz", &mut ip).unwrap();
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
        eth.extend_from_slice(&ip);
        eth.extend_from_slice(&[0; 6]); // link padding
        let u = parse_link(DataLink::ETHERNET, &eth).unwrap();
        assert_eq!(&eth[u.payload], b"xyz");
    }
}
