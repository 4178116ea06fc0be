//! Splitting a TCP byte stream into Nym frames.
//!
//! Nym's `NymCodec` (crate `nym-sphinx-framing` 2.0.0) writes frames back to back with no length
//! prefix: the frame header's size class fixes the length of the Sphinx packet that follows, so
//! the header alone says where the next frame starts. The header itself is parsed by the
//! pieces of [`crate::sphinx::frame`]; this module only adds the "not enough bytes yet" answer
//! that a stream needs and the test that tells a Noise handshake from a Nym frame.

use crate::sphinx::frame::PACKET_TYPE_MIX;
use crate::sphinx::{DropReason, FrameHeader, FrameVersion, KeyRotation, SizeClass};

use super::noise::NOISE_VERSION;

/// Nym's packet type byte for Outfox packets (deprecated, never processed by mixplane).
const PACKET_TYPE_OUTFOX: u8 = 2;

/// Why a stream's bytes are not a Nym frame mixplane accepts. Each is fatal for the connection:
/// a stream without length prefixes cannot resynchronise after a bad header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The first header byte is neither 7 nor 8.
    #[error("unknown nym frame version {0}")]
    UnknownFrameVersion(u8),
    /// The size class byte is not one of the five Sphinx classes.
    #[error("unknown nym frame size class")]
    UnknownSizeClass,
    /// An Outfox size class (6 or 7).
    #[error("outfox size class")]
    OutfoxSizeClass,
    /// The Outfox packet type (2).
    #[error("outfox packet type")]
    OutfoxPacketType,
    /// A packet type other than Mix (0) or Outfox.
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// A v8 key rotation byte other than 0, 1 or 2.
    #[error("unknown key rotation")]
    UnknownKeyRotation,
}

impl StreamError {
    /// Short snake_case name, for metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            StreamError::UnknownFrameVersion(_) => "unknown_frame_version",
            StreamError::UnknownSizeClass => "unknown_size_class",
            StreamError::OutfoxSizeClass => "outfox_size_class",
            StreamError::OutfoxPacketType => "outfox_packet_type",
            StreamError::UnknownPacketType(_) => "unknown_packet_type",
            StreamError::UnknownKeyRotation => "unknown_key_rotation",
        }
    }

    /// The header errors that `SizeClass::from_byte` and `KeyRotation::from_byte` return.
    fn from_header_byte(reason: DropReason) -> StreamError {
        match reason {
            DropReason::OutfoxSizeClass => StreamError::OutfoxSizeClass,
            DropReason::UnknownKeyRotation => StreamError::UnknownKeyRotation,
            _ => StreamError::UnknownSizeClass,
        }
    }
}

/// The header of the Nym frame starting at `buf[0]`, once all of its bytes are buffered.
///
/// `Ok(None)`: more bytes are needed (`buf` is shorter than the header). Each header byte is
/// checked as soon as it is there, so garbage is refused at its first bad byte.
pub fn frame_header(buf: &[u8]) -> Result<Option<FrameHeader>, StreamError> {
    let version = match buf.first() {
        None => return Ok(None),
        Some(7) => FrameVersion::V7,
        Some(8) => FrameVersion::V8,
        Some(&v) => return Err(StreamError::UnknownFrameVersion(v)),
    };
    let size_class = buf
        .get(1)
        .map(|&b| SizeClass::from_byte(b).map_err(StreamError::from_header_byte))
        .transpose()?;
    match buf.get(2) {
        None | Some(&PACKET_TYPE_MIX) => {}
        Some(&PACKET_TYPE_OUTFOX) => return Err(StreamError::OutfoxPacketType),
        Some(&t) => return Err(StreamError::UnknownPacketType(t)),
    }
    let key_rotation = match version {
        FrameVersion::V7 => KeyRotation::Unknown,
        FrameVersion::V8 => match buf.get(3) {
            None => return Ok(None),
            Some(&b) => KeyRotation::from_byte(b).map_err(StreamError::from_header_byte)?,
        },
    };
    match size_class {
        Some(size_class) if buf.len() >= version.header_len() => Ok(Some(FrameHeader {
            version,
            size_class,
            key_rotation,
        })),
        _ => Ok(None),
    }
}

/// Length of the Nym frame (header and Sphinx packet) starting at `buf[0]`, once enough header
/// bytes are buffered.
///
/// `Ok(None)`: need more bytes. `Err`: not a frame we accept (unknown version, size class or
/// packet type, Outfox, bad key rotation byte): the caller closes the connection and counts
/// the reason.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, StreamError> {
    Ok(frame_header(buf)?.map(|h| h.frame_len()))
}

/// Whether the first byte of an inbound connection starts a Noise handshake (Nym's Noise
/// version byte, 1) rather than a Nym frame (version 7 or 8).
///
/// A byte that is neither starts nothing mixplane speaks; [`frame_len`] refuses it.
pub fn starts_noise(first: u8) -> bool {
    first == NOISE_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header_bytes(version: FrameVersion, class: SizeClass, rotation: KeyRotation) -> Vec<u8> {
        let h = FrameHeader {
            version,
            size_class: class,
            key_rotation: rotation,
        };
        let mut b = vec![0u8; h.len()];
        h.write(&mut b);
        b
    }

    #[test]
    fn every_class_and_version_split_at_every_byte() {
        for class in SizeClass::ALL {
            for (version, rotation) in [
                (FrameVersion::V7, KeyRotation::Unknown),
                (FrameVersion::V8, KeyRotation::Unknown),
                (FrameVersion::V8, KeyRotation::Odd),
                (FrameVersion::V8, KeyRotation::Even),
            ] {
                let hdr = header_bytes(version, class, rotation);
                let want = hdr.len() + class.packet_len();
                let mut frame = hdr.clone();
                frame.resize(want, 0xa5);
                for cut in 0..=frame.len() {
                    let got = frame_len(&frame[..cut]).unwrap();
                    if cut < hdr.len() {
                        assert_eq!(got, None, "{class:?} {version:?} cut {cut}");
                    } else {
                        assert_eq!(got, Some(want), "{class:?} {version:?} cut {cut}");
                    }
                }
                let parsed = frame_header(&frame).unwrap().unwrap();
                assert_eq!(FrameHeader::parse(&frame), Ok(parsed));
            }
        }
    }

    #[test]
    fn lengths_are_nyms() {
        // v7 regular: 3 + 2413; v8 ext32: 4 + 33133 (nym-sphinx-params packet sizes)
        assert_eq!(frame_len(&[7, 1, 0]), Ok(Some(2416)));
        assert_eq!(frame_len(&[8, 3, 0, 2]), Ok(Some(33137)));
        assert_eq!(frame_len(&[8, 2, 0, 1]), Ok(Some(390)));
    }

    #[test]
    fn bad_bytes_are_refused_at_the_first_bad_byte() {
        assert_eq!(frame_len(&[]), Ok(None));
        for v in [0u8, 1, 6, 9, 0xff] {
            assert_eq!(frame_len(&[v]), Err(StreamError::UnknownFrameVersion(v)));
        }
        assert_eq!(frame_len(&[7, 0]), Err(StreamError::UnknownSizeClass));
        assert_eq!(frame_len(&[8, 6]), Err(StreamError::OutfoxSizeClass));
        assert_eq!(frame_len(&[7, 7]), Err(StreamError::OutfoxSizeClass));
        assert_eq!(frame_len(&[8, 8]), Err(StreamError::UnknownSizeClass));
        assert_eq!(frame_len(&[7, 1, 2]), Err(StreamError::OutfoxPacketType));
        assert_eq!(
            frame_len(&[8, 1, 1]),
            Err(StreamError::UnknownPacketType(1))
        );
        assert_eq!(
            frame_len(&[8, 1, 0, 3]),
            Err(StreamError::UnknownKeyRotation)
        );
        // v7 has no rotation byte: the fourth byte belongs to the packet
        assert_eq!(frame_len(&[7, 1, 0, 3]), Ok(Some(2416)));
    }

    #[test]
    fn noise_and_frames_are_told_apart() {
        assert!(starts_noise(1));
        for b in (0..=255u8).filter(|&b| b != 1) {
            assert!(!starts_noise(b));
        }
        assert!(frame_len(&[1]).is_err());
    }

    proptest! {
        #[test]
        fn frame_len_never_panics_and_is_prefix_stable(
            version in prop_oneof![Just(7u8), Just(8u8), any::<u8>()],
            class in prop_oneof![1u8..=7, any::<u8>()],
            kind in prop_oneof![Just(0u8), any::<u8>()],
            rest in proptest::collection::vec(prop_oneof![0u8..=3, any::<u8>()], 0..8),
        ) {
            let bytes = [&[version, class, kind][..], &rest].concat();
            let full = frame_len(&bytes);
            // a longer buffer never changes an answer once one is given
            for cut in 0..=bytes.len() {
                match frame_len(&bytes[..cut]) {
                    Ok(None) => {}
                    other => prop_assert_eq!(other, full),
                }
            }
            if let Ok(Some(len)) = full {
                prop_assert!(len >= 3 + SizeClass::Ack.packet_len());
                prop_assert!(len <= 4 + SizeClass::Ext32.packet_len());
            }
        }
    }
}
