//! The sans-IO Sphinx core: Nym frames in, verdicts out.
//!
//! [`Processor::process_batch`] takes a batch of received datagrams in caller-owned buffers and
//! processes each exactly as a Nym node would (sphinx-packet 0.8.0 semantics, Nym's framing),
//! rewriting packets in place and returning one [`Verdict`] per frame: forward the bytes in
//! `frame` to `next_hop` after `delay_ns`, deliver a final-hop message, or drop it for a
//! [`DropReason`]. It performs no I/O and allocates nothing per packet once its scratch space
//! has grown to the batch size.
//!
//! Per packet, cheap rejections come first: frame checks, then the X25519 shared secret (batched
//! across the whole batch), HKDF, header MAC, replay check, routing information; only survivors
//! pay for the blinding X25519 (batched again) and the Lioness payload decryption. On CPUs with
//! AVX-512 the HKDF and header MAC of sixteen packets run together on a multi-buffer SHA-256
//! (`kdf::batch`), as do the seeded payload keys of versions 259 and 260.

pub mod address;
pub mod build;
pub mod frame;
pub mod kdf;
pub mod keys;
mod processor;

pub use build::{BuildError, FinalPadding, Hop, PacketSpec};
pub use frame::{FrameHeader, FrameVersion, KeyRotation, SizeClass};
pub use keys::{KeySlot, NodeKeys, SphinxKey};
pub use processor::{OverCap, Processor, ProcessorConfig};

use std::net::SocketAddr;
use std::ops::Range;

/// Sphinx versions mixplane processes (as carried in each routing slot).
pub const KNOWN_SPHINX_VERSIONS: [u16; 5] = [1, 257, 258, 259, 260];

/// Nym's cap on one hop's delay, the default for [`ProcessorConfig::max_delay_ns`].
pub const DEFAULT_MAX_DELAY_NS: u64 = 10_000_000_000;

/// Why a frame was dropped. Every variant is counted by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// The datagram is shorter than its frame header or its size class needs.
    #[error("truncated frame")]
    Truncated,
    /// The datagram is longer than one packet of its size class.
    #[error("oversized frame")]
    Oversized,
    /// Frame version other than 7 or 8.
    #[error("unknown frame version")]
    UnknownFrameVersion,
    /// Size class byte not known.
    #[error("unknown size class")]
    UnknownSizeClass,
    /// An Outfox size class (not processed by mixplane).
    #[error("outfox size class")]
    OutfoxSizeClass,
    /// A packet type other than Mix (Sphinx).
    #[error("unsupported packet type")]
    UnsupportedPacketType,
    /// Key rotation byte other than 0, 1, 2.
    #[error("unknown key rotation")]
    UnknownKeyRotation,
    /// No live key has the parity the frame names (an expired or future key).
    #[error("no live key for the frame's key rotation")]
    NoKeyForRotation,
    /// The shared secret is all zeros (alpha of small order).
    #[error("all-zero shared secret (small-order alpha)")]
    ZeroSharedSecret,
    /// The header MAC does not verify (wrong key, tampering, alpha on the twist).
    #[error("bad header MAC")]
    BadMac,
    /// The replay tag was seen before under this key.
    #[error("replayed packet")]
    Replayed,
    /// The routing flag is neither forward nor final hop.
    #[error("unknown routing flag")]
    UnknownRoutingFlag,
    /// A Sphinx version mixplane does not know.
    #[error("unknown sphinx version")]
    UnknownSphinxVersion,
    /// The next hop address does not parse.
    #[error("malformed next-hop address")]
    BadNextHop,
    /// The delay is over the configured cap (with [`OverCap::Drop`]).
    #[error("delay over the cap")]
    DelayTooLong,
    /// The final hop's payload lacks the zero prefix or the padding marker.
    #[error("bad final-hop padding")]
    BadPadding,
    /// The final hop's plaintext is too short to carry a SURB-ACK.
    #[error("final hop without SURB-ACK")]
    NoSurbAck,
    /// The SURB-ACK's first-hop address does not parse.
    #[error("malformed SURB-ACK")]
    BadSurbAck,
}

impl DropReason {
    /// Every reason, in a fixed order (for counters indexed by reason).
    pub const ALL: [DropReason; 18] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::UnknownFrameVersion,
        DropReason::UnknownSizeClass,
        DropReason::OutfoxSizeClass,
        DropReason::UnsupportedPacketType,
        DropReason::UnknownKeyRotation,
        DropReason::NoKeyForRotation,
        DropReason::ZeroSharedSecret,
        DropReason::BadMac,
        DropReason::Replayed,
        DropReason::UnknownRoutingFlag,
        DropReason::UnknownSphinxVersion,
        DropReason::BadNextHop,
        DropReason::DelayTooLong,
        DropReason::BadPadding,
        DropReason::NoSurbAck,
        DropReason::BadSurbAck,
    ];

    /// Position in [`Self::ALL`].
    pub fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|&r| r == self)
            .expect("ALL lists every variant")
    }

    /// A stable snake_case name for metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::UnknownFrameVersion => "unknown_frame_version",
            DropReason::UnknownSizeClass => "unknown_size_class",
            DropReason::OutfoxSizeClass => "outfox_size_class",
            DropReason::UnsupportedPacketType => "unsupported_packet_type",
            DropReason::UnknownKeyRotation => "unknown_key_rotation",
            DropReason::NoKeyForRotation => "no_key_for_rotation",
            DropReason::ZeroSharedSecret => "zero_shared_secret",
            DropReason::BadMac => "bad_mac",
            DropReason::Replayed => "replayed",
            DropReason::UnknownRoutingFlag => "unknown_routing_flag",
            DropReason::UnknownSphinxVersion => "unknown_sphinx_version",
            DropReason::BadNextHop => "bad_next_hop",
            DropReason::DelayTooLong => "delay_too_long",
            DropReason::BadPadding => "bad_padding",
            DropReason::NoSurbAck => "no_surb_ack",
            DropReason::BadSurbAck => "bad_surb_ack",
        }
    }
}

/// Replay protection consulted by the processor after a packet's MAC verified.
///
/// `check_and_set` records `tag` under the key with `rotation_id` and returns whether it was
/// (probably) seen before. The node's lock-free filter implements it; tests use [`NoReplay`] or a
/// set.
pub trait ReplayGuard {
    /// Records the tag; `true` means it was already present (a replay).
    fn check_and_set(&self, rotation_id: u32, tag: &[u8; 32]) -> bool;
}

/// A guard that never reports a replay.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReplay;

impl ReplayGuard for NoReplay {
    fn check_and_set(&self, _rotation_id: u32, _tag: &[u8; 32]) -> bool {
        false
    }
}

impl ReplayGuard for std::sync::Mutex<std::collections::HashSet<(u32, [u8; 32])>> {
    fn check_and_set(&self, rotation_id: u32, tag: &[u8; 32]) -> bool {
        let mut set = self.lock().unwrap_or_else(|e| e.into_inner());
        !set.insert((rotation_id, *tag))
    }
}

/// What the processor decided for one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send `frame` on after the delay.
    Forward(Forward),
    /// The packet ended here: hand the message to the local sink.
    Deliver(Deliver),
    /// Drop the frame.
    Drop(DropReason),
}

/// A forward hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Where to send the frame.
    pub next_hop: SocketAddr,
    /// How long to hold it, in nanoseconds (at most the cap: see `delay_clamped`).
    pub delay_ns: u64,
    /// The packet asked for a delay over the cap and `delay_ns` is the cap
    /// ([`OverCap::Clamp`]); the node counts such packets.
    pub delay_clamped: bool,
    /// The outgoing frame (frame header and rewritten Sphinx packet) within the input buffer.
    pub frame: Range<usize>,
    /// The Sphinx version from the routing slot.
    pub sphinx_version: u16,
    /// Facts common to accepted packets.
    pub accepted: Accepted,
}

/// A final hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The destination address bytes from the final routing slot.
    pub destination: [u8; 32],
    /// The SURB identifier from the final routing slot.
    pub identifier: [u8; 16],
    /// The message (plaintext after the SURB-ACK, padding stripped) within the input buffer.
    pub message: Range<usize>,
    /// The decrypted Sphinx payload as a whole (zero prefix, plaintext, padding). When a
    /// SURB-ACK was split off, the last bytes of its zero-padded address were overwritten by the
    /// ack's frame header.
    pub payload: Range<usize>,
    /// A version-260 payload that is not plaintext at this hop: a single-seed SURB reply, which
    /// only the SURB's creator can open. `message` is then the whole payload and there is no
    /// SURB-ACK.
    pub sealed: bool,
    /// The SURB-ACK to send on at once (all classes but ack carry one).
    pub surb_ack: Option<SurbAck>,
    /// The Sphinx version from the routing slot.
    pub sphinx_version: u16,
    /// Facts common to accepted packets.
    pub accepted: Accepted,
}

/// A SURB-ACK recovered at a final hop, framed and ready to send with no delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurbAck {
    /// The ack's first hop.
    pub next_hop: SocketAddr,
    /// The framed ack packet within the input buffer.
    pub frame: Range<usize>,
}

/// Facts about a packet that passed the MAC and replay checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The frame header it arrived with.
    pub header: FrameHeader,
    /// The key that opened it.
    pub key_slot: KeySlot,
    /// That key's rotation id.
    pub rotation_id: u32,
    /// The packet's replay tag.
    pub replay_tag: [u8; 32],
}
