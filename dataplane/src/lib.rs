//! The mixplane dataplane: everything between a UDP datagram arriving and the processed
//! packet leaving.
//!
//! * [`sphinx`] is the sans-IO Sphinx core: it takes batches of Nym frames in caller-owned
//!   buffers, unwraps them in place and returns a verdict per frame (forward, deliver, drop with
//!   a reason). It does no I/O and is tested without sockets against `sphinx-packet` 0.8.0.
//!
//! Boundaries: key files, topology, config and metrics export belong to `mixplane-control`;
//! vector crypto belongs to `mixplane-crypto-simd`.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod replay;
pub mod sphinx;
pub mod wheel;
