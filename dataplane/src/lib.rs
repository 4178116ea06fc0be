//! The mixplane dataplane: everything between a UDP datagram arriving and the processed
//! packet leaving.
//!
//! * [`sphinx`] is the sans-IO Sphinx core: it takes batches of Nym frames in caller-owned
//!   buffers, unwraps them in place and returns a verdict per frame (forward, deliver, drop with
//!   a reason). It does no I/O and is tested without sockets against `sphinx-packet` 0.8.0.
//!   [`sphinx::build`] is the sender side (packets for the demo, load generator and tests).
//! * [`io`] is batched UDP: io_uring or recvmmsg/sendmmsg, with GRO and GSO.
//! * [`wheel`] (per-worker delay wheel), [`replay`] (shared lock-free replay filter) and
//!   `slab` (per-worker packet slots, private) are the node's data structures.
//! * [`node`] puts them together: pinned workers (the private `worker` module) that receive,
//!   unwrap, hold and send (a receive takes only as many packets as the private `budget`
//!   lets one batch's processing take), reading the keys and filters the control plane ([`plane`])
//!   publishes as a snapshot (private `snapshot` module); [`counters`] are what they count;
//!   [`sink`] is where final-hop messages go; [`egress`] says which next hops are allowed;
//!   [`cover`] sends loop cover traffic and counts what comes back.
//! * [`hostcheck`] measures what the host takes from a busy core (`mixplane check-host`).
//!
//! Boundaries: key files, topology, config and metrics export belong to `mixplane-control`;
//! vector crypto belongs to `mixplane-crypto-simd`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(unreachable_pub)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod affinity;
mod budget;
pub mod counters;
pub mod cover;
pub mod demo;
pub mod egress;
pub mod histogram;
pub mod hostcheck;
pub mod io;
pub mod node;
pub mod plane;
pub mod replay;
pub mod sink;
mod slab;
mod snapshot;
pub mod sphinx;
pub mod wheel;
mod worker;
