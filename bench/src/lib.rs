//! Shared helpers for mixplane's benchmarks, load generator and pcap replay.
//!
//! Boundaries: measurement tooling only; nothing here is linked into the node.
