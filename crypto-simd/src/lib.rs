//! Batched, SIMD-accelerated cryptography for the mixplane dataplane.
//!
//! This crate owns every primitive on the per-packet path whose speed depends on the CPU:
//! X25519 over whole batches of packets ([`x25519`]), the Lioness wide-block cipher that
//! Sphinx payloads use ([`lioness`]) and the two primitives under it, multi-buffer keyed
//! BLAKE2b ([`blake2b`]) and ChaCha20 ([`chacha20`]), and multi-buffer SHA-256 compression
//! ([`sha256`]) for the key schedules of sixteen packets at once. Each primitive has a portable
//! implementation that always works and, where it pays, vector backends chosen once at run
//! time from the features in force ([`cpu::in_force`]: the CPU's own, lowered to the
//! `MIXPLANE_CPU` cap), each primitive's choice a `Backend` enum and its operations a `match` on
//! it. Vector code lives in a private module per backend; `#[target_feature]` functions are
//! only reached after detection said the features are there.
//!
//! Boundaries: no I/O, no packet formats, no allocation on the batch paths. Sphinx framing and
//! key schedules live in `mixplane-dataplane`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(unreachable_pub)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod blake2b;
pub mod chacha20;
pub mod cpu;
pub mod lioness;
pub mod sha256;
pub mod x25519;
