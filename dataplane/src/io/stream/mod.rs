//! Sans-IO pieces of Nym's TCP transport between nodes: what a TCP backend needs to speak to
//! real nym-nodes on the mix port (1789).
//!
//! * [`frames`] splits a plaintext byte stream into Nym frames (`nym-sphinx-framing`'s
//!   `NymCodec`: frames back to back, no length prefix, the size class fixes the length) and
//!   tells a Noise handshake from a plain Nym frame by an inbound connection's first byte.
//! * [`noise`] is Nym's Noise layer (`nym-noise`: `Noise_XKpsk3_25519_AESGCM_SHA256` in 8-byte
//!   framed messages) as a state machine fed with wire bytes split anywhere.
//!
//! Neither does I/O, keeps a clock or allocates per message once its buffers have grown: the
//! backend owns sockets, timeouts (a stalled handshake, a frame held forever) and limits.
//! Both are tested against Nym's own crates in `tests/tests/noise_interop.rs`.

pub mod frames;
pub mod noise;

pub use frames::{StreamError, frame_header, frame_len, starts_noise};
pub use noise::{NOISE_HEADER_LEN, NoiseError, NoiseLink, noise_psk};
