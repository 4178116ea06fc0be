//! Nym frame headers: the few bytes in front of every Sphinx packet on the wire.
//!
//! v8 (4 bytes): `[8][size class][packet type][key rotation]`.
//! v7 (3 bytes, legacy): `[7][size class][packet type]`; its key rotation is unknown.

use super::DropReason;

/// The Sphinx header length (alpha 32 | gamma 16 | beta 300).
pub const SPHINX_HEADER_LEN: usize = 348;
/// Bytes a payload carries on top of its plaintext: 16 zero bytes and the `0x01` padding marker.
pub const PAYLOAD_OVERHEAD: usize = 17;

/// A packet's size class, as the frame's second byte names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeClass {
    /// Regular packets (2 KiB of plaintext), byte 1.
    Regular,
    /// SURB-ACK packets, byte 2.
    Ack,
    /// Extended packets of 32 KiB, byte 3.
    Ext32,
    /// Extended packets of 8 KiB, byte 4.
    Ext8,
    /// Extended packets of 16 KiB, byte 5.
    Ext16,
}

impl SizeClass {
    /// Every class, smallest first.
    pub const ALL: [SizeClass; 5] = [
        SizeClass::Ack,
        SizeClass::Regular,
        SizeClass::Ext8,
        SizeClass::Ext16,
        SizeClass::Ext32,
    ];

    /// The wire byte.
    pub const fn byte(self) -> u8 {
        match self {
            SizeClass::Regular => 1,
            SizeClass::Ack => 2,
            SizeClass::Ext32 => 3,
            SizeClass::Ext8 => 4,
            SizeClass::Ext16 => 5,
        }
    }

    /// Parses the wire byte; Outfox classes (6, 7) and unknown values are rejected.
    pub const fn from_byte(b: u8) -> Result<SizeClass, DropReason> {
        Ok(match b {
            1 => SizeClass::Regular,
            2 => SizeClass::Ack,
            3 => SizeClass::Ext32,
            4 => SizeClass::Ext8,
            5 => SizeClass::Ext16,
            6 | 7 => return Err(DropReason::OutfoxSizeClass),
            _ => return Err(DropReason::UnknownSizeClass),
        })
    }

    /// Length of the Sphinx payload (after the 348-byte header).
    pub const fn payload_len(self) -> usize {
        PAYLOAD_OVERHEAD
            + match self {
                SizeClass::Ack => 21,
                SizeClass::Regular => 2048,
                SizeClass::Ext8 => 8192,
                SizeClass::Ext16 => 16384,
                SizeClass::Ext32 => 32768,
            }
    }

    /// Length of the whole Sphinx packet (header and payload).
    pub const fn packet_len(self) -> usize {
        SPHINX_HEADER_LEN + self.payload_len()
    }

    /// Short lowercase name, for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            SizeClass::Regular => "regular",
            SizeClass::Ack => "ack",
            SizeClass::Ext8 => "ext8",
            SizeClass::Ext16 => "ext16",
            SizeClass::Ext32 => "ext32",
        }
    }
}

/// Which key a packet was built for, by parity of the key's rotation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRotation {
    /// Not said (v7 frames, or byte 0): try the primary key, then the secondary.
    Unknown,
    /// The key with an odd rotation id (byte 1).
    Odd,
    /// The key with an even rotation id (byte 2).
    Even,
}

impl KeyRotation {
    /// The wire byte.
    pub const fn byte(self) -> u8 {
        match self {
            KeyRotation::Unknown => 0,
            KeyRotation::Odd => 1,
            KeyRotation::Even => 2,
        }
    }

    /// Parses the wire byte.
    pub const fn from_byte(b: u8) -> Result<KeyRotation, DropReason> {
        Ok(match b {
            0 => KeyRotation::Unknown,
            1 => KeyRotation::Odd,
            2 => KeyRotation::Even,
            _ => return Err(DropReason::UnknownKeyRotation),
        })
    }

    /// The rotation parity of a key with this rotation id.
    pub const fn of_rotation_id(id: u32) -> KeyRotation {
        if id % 2 == 1 {
            KeyRotation::Odd
        } else {
            KeyRotation::Even
        }
    }
}

/// The frame format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameVersion {
    /// Legacy 3-byte header.
    V7,
    /// 4-byte header with the key rotation byte.
    V8,
}

impl FrameVersion {
    /// Header length in bytes.
    pub const fn header_len(self) -> usize {
        match self {
            FrameVersion::V7 => 3,
            FrameVersion::V8 => 4,
        }
    }
}

/// The Sphinx packet type (the only one mixplane processes).
pub const PACKET_TYPE_MIX: u8 = 0;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Frame format version.
    pub version: FrameVersion,
    /// Size class of the Sphinx packet that follows.
    pub size_class: SizeClass,
    /// Key rotation parity (always [`KeyRotation::Unknown`] for v7).
    pub key_rotation: KeyRotation,
}

impl FrameHeader {
    /// A v8 header for a Mix packet.
    pub const fn v8(size_class: SizeClass, key_rotation: KeyRotation) -> FrameHeader {
        FrameHeader {
            version: FrameVersion::V8,
            size_class,
            key_rotation,
        }
    }

    /// Header length in bytes (a header is never empty).
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(&self) -> usize {
        self.version.header_len()
    }

    /// Length of the whole frame (header and Sphinx packet).
    pub const fn frame_len(&self) -> usize {
        self.len() + self.size_class.packet_len()
    }

    /// Parses the header at the start of `frame` and checks that the datagram carries exactly one
    /// packet of the announced size class.
    pub fn parse(frame: &[u8]) -> Result<FrameHeader, DropReason> {
        let version = match frame.first() {
            None => return Err(DropReason::Truncated),
            Some(7) => FrameVersion::V7,
            Some(8) => FrameVersion::V8,
            Some(_) => return Err(DropReason::UnknownFrameVersion),
        };
        if frame.len() < version.header_len() {
            return Err(DropReason::Truncated);
        }
        let size_class = SizeClass::from_byte(frame[1])?;
        if frame[2] != PACKET_TYPE_MIX {
            return Err(DropReason::UnsupportedPacketType);
        }
        let key_rotation = match version {
            FrameVersion::V7 => KeyRotation::Unknown,
            FrameVersion::V8 => KeyRotation::from_byte(frame[3])?,
        };
        let header = FrameHeader {
            version,
            size_class,
            key_rotation,
        };
        let want = header.frame_len();
        if frame.len() < want {
            return Err(DropReason::Truncated);
        }
        if frame.len() > want {
            return Err(DropReason::Oversized);
        }
        Ok(header)
    }

    /// Writes the header into the first [`Self::len`] bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than the header.
    pub fn write(&self, out: &mut [u8]) {
        match self.version {
            FrameVersion::V7 => {
                out[..3].copy_from_slice(&[7, self.size_class.byte(), PACKET_TYPE_MIX]);
            }
            FrameVersion::V8 => out[..4].copy_from_slice(&[
                8,
                self.size_class.byte(),
                PACKET_TYPE_MIX,
                self.key_rotation.byte(),
            ]),
        }
    }

    /// Builds a whole frame: this header followed by `sphinx_packet`.
    pub fn frame(&self, sphinx_packet: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; self.len() + sphinx_packet.len()];
        self.write(&mut v);
        v[self.len()..].copy_from_slice(sphinx_packet);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_match_nym() {
        let want = [
            (SizeClass::Ack, 386),
            (SizeClass::Regular, 2413),
            (SizeClass::Ext8, 8557),
            (SizeClass::Ext16, 16749),
            (SizeClass::Ext32, 33133),
        ];
        for (c, len) in want {
            assert_eq!(c.packet_len(), len, "{c:?}");
            assert_eq!(SizeClass::from_byte(c.byte()), Ok(c));
        }
    }

    #[test]
    fn header_round_trips() {
        for c in SizeClass::ALL {
            for r in [KeyRotation::Unknown, KeyRotation::Odd, KeyRotation::Even] {
                let h = FrameHeader::v8(c, r);
                let f = h.frame(&vec![0u8; c.packet_len()]);
                assert_eq!(FrameHeader::parse(&f), Ok(h));
            }
            let h = FrameHeader {
                version: FrameVersion::V7,
                size_class: c,
                key_rotation: KeyRotation::Unknown,
            };
            let f = h.frame(&vec![0u8; c.packet_len()]);
            assert_eq!(f.len(), 3 + c.packet_len());
            assert_eq!(FrameHeader::parse(&f), Ok(h));
        }
    }

    #[test]
    fn bad_headers_have_reasons() {
        let reg = SizeClass::Regular.packet_len();
        let mut f = vec![8, 1, 0, 1];
        f.resize(4 + reg, 0);
        assert!(FrameHeader::parse(&f).is_ok());
        let with = |i: usize, b: u8| {
            let mut g = f.clone();
            g[i] = b;
            FrameHeader::parse(&g)
        };
        assert_eq!(with(0, 9), Err(DropReason::UnknownFrameVersion));
        assert_eq!(with(0, 0), Err(DropReason::UnknownFrameVersion));
        assert_eq!(with(1, 0), Err(DropReason::UnknownSizeClass));
        assert_eq!(with(1, 6), Err(DropReason::OutfoxSizeClass));
        assert_eq!(with(1, 7), Err(DropReason::OutfoxSizeClass));
        assert_eq!(with(1, 200), Err(DropReason::UnknownSizeClass));
        assert_eq!(with(2, 2), Err(DropReason::UnsupportedPacketType));
        assert_eq!(with(3, 3), Err(DropReason::UnknownKeyRotation));
        assert_eq!(
            FrameHeader::parse(&f[..f.len() - 1]),
            Err(DropReason::Truncated)
        );
        let mut long = f.clone();
        long.push(0);
        assert_eq!(FrameHeader::parse(&long), Err(DropReason::Oversized));
        assert_eq!(FrameHeader::parse(&[]), Err(DropReason::Truncated));
        assert_eq!(FrameHeader::parse(&[8, 1]), Err(DropReason::Truncated));
        assert_eq!(
            FrameHeader::parse(&[8, 1, 0, 1]),
            Err(DropReason::Truncated)
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = FrameHeader::parse(&bytes);
        }

        #[test]
        fn parse_accepts_only_exact_lengths(v in 7u8..=8, class in 1u8..=5, extra in -3i64..3) {
            let c = SizeClass::from_byte(class).unwrap();
            let hl = if v == 7 { 3 } else { 4 };
            let len = (hl + c.packet_len()) as i64 + extra;
            let mut f = vec![0u8; len as usize];
            f[0] = v; f[1] = class;
            let r = FrameHeader::parse(&f);
            prop_assert_eq!(r.is_ok(), extra == 0);
        }
    }
}
