//! The mixplane control plane: owns what changes slowly (config, keys and their rotation,
//! topology) and publishes immutable snapshots that the dataplane workers pick up between
//! batches. It also serves the admin API and metrics.
//!
//! * [`config`]: the node's TOML config file, every field documented with its default, strict
//!   validation that names the offending field.
//! * [`keys`]: Sphinx private keys in Nym's PEM format, public keys in base58, file permission
//!   checks, zeroization.
//!
//! Boundaries: nothing here runs per packet; the dataplane never waits on this crate.

pub mod admin;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod rotation;
pub mod topology;
