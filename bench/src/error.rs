//! The errors of the load generator's library (the binaries wrap them in `anyhow`).

use std::net::SocketAddr;

use mixplane_control::topology::TopologyError;
use mixplane_dataplane::node::NodeError;
use mixplane_dataplane::sphinx::build::BuildError;

/// Why a load-generator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The capture library failed to read or write.
    #[error("{what}: {source}")]
    Pcap {
        /// What was being done.
        what: String,
        /// The capture library's error.
        #[source]
        source: pcap_file::PcapError,
    },
    /// A capture's contents cannot be used.
    #[error("capture: {0}")]
    Capture(String),
    /// A datagram cannot be written as an IP/UDP record.
    #[error("cannot record {len} bytes from {src} to {dst}: {why}")]
    Record {
        /// Source.
        src: SocketAddr,
        /// Destination.
        dst: SocketAddr,
        /// Payload length.
        len: usize,
        /// Why.
        why: &'static str,
    },
    /// A topology document was rejected.
    #[error(transparent)]
    TopologyDocument(#[from] TopologyError),
    /// A topology cannot give routes.
    #[error("topology: {0}")]
    Topology(String),
    /// A packet could not be built.
    #[error("building packets: {0}")]
    Build(#[from] BuildError),
    /// A demo node did not start.
    #[error("starting a demo node: {0}")]
    Node(#[from] NodeError),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// A size-class mix does not parse.
    #[error("size-class mix: {0}")]
    Mix(String),
    /// The node's metrics could not be read.
    #[error("metrics at {url}: {message}")]
    Metrics {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A helper thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// The library's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an I/O error with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
