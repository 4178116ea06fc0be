//! The mixplane control plane: owns what changes slowly (config, keys and their rotation,
//! topology) and publishes immutable snapshots that the dataplane workers pick up between
//! batches. It also serves the admin API and metrics.
//!
//! Boundaries: nothing here runs per packet; the dataplane never waits on this crate.
