//! The mixplane control plane: owns what changes slowly (config, keys and their rotation,
//! topology) and publishes immutable snapshots that the dataplane workers pick up between
//! batches. It also serves the admin API and metrics.
//!
//! * [`config`]: the node's TOML config file, every field documented with its default, strict
//!   validation that names the offending field.
//! * [`keys`]: Sphinx and Noise private keys in Nym's PEM format (mixplane's key directory or a
//!   nym-node data directory, optionally passphrase-encrypted), public keys in base58, file
//!   permission checks, zeroization.
//! * [`identity`]: the node's ed25519 identity key, in nym-node's files.
//! * [`rotation`]: Nym's key-rotation schedule (local, or nym-api's key-rotation-info) and the
//!   steps from the keys on disk to it.
//! * [`topology`]: nym-api's skimmed-nodes document, from a file or a URL.
//! * [`admin`]: the admin HTTP API; [`metrics`]: Prometheus text.
//! * [`nym_http`]: nym-node's self-described HTTP API (what nym-api polls); [`verloc`]: the
//!   verloc echo responder and measurer.
//!
//! Types that name one concept for both planes live here and the dataplane re-exports them:
//! [`config::IoBackendKind`] and [`config::SinkAddr`].
//!
//! Boundaries: nothing here runs per packet; the dataplane never waits on this crate.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]
#![warn(missing_docs)]

pub mod admin;
pub mod config;
mod http_server;
pub mod identity;
pub mod keys;
pub mod metrics;
pub mod nym_http;
pub mod rotation;
pub mod topology;
pub mod verloc;

/// Entry points for the fuzz targets and property tests of parsers that are not public
/// otherwise (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::http_server::parse_request;
}
