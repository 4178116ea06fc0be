//! The node's config file (TOML).
//!
//! Every field has a default, so an empty file is a valid config; unknown fields are rejected,
//! and invalid values are reported with the name of the field. [`EXAMPLE`] is the commented
//! config that `mixplane init` writes; a test keeps it in step with the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::topology::PeerTransport;

/// Which I/O backend the workers use (`[node] io`; the dataplane re-exports this type).
///
/// Parsed by serde from `"auto"`, `"io_uring"` (or `"uring"`) and `"mmsg"` (or `"recvmmsg"`);
/// [`FromStr`](std::str::FromStr) accepts the same names, for command lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoBackendKind {
    /// io_uring if it can be set up, else recvmmsg/sendmmsg.
    #[default]
    Auto,
    /// io_uring only (fail if unavailable).
    #[serde(rename = "io_uring", alias = "uring")]
    Uring,
    /// recvmmsg/sendmmsg.
    #[serde(alias = "recvmmsg")]
    Mmsg,
}

impl IoBackendKind {
    /// The config name of this backend.
    pub fn as_str(self) -> &'static str {
        match self {
            IoBackendKind::Auto => "auto",
            IoBackendKind::Uring => "io_uring",
            IoBackendKind::Mmsg => "mmsg",
        }
    }
}

impl std::fmt::Display for IoBackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IoBackendKind {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use serde::de::IntoDeserializer;
        let d: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            s.into_deserializer();
        IoBackendKind::deserialize(d).map_err(|_| ValueError::Unknown {
            value: s.to_string(),
            expected: "auto, io_uring, mmsg",
        })
    }
}

/// How keys rotate (`[keys] rotation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rotation {
    /// On Nym's epoch schedule.
    #[default]
    Schedule,
    /// Only through the admin API (`POST /keys/rotate`).
    Manual,
}

/// Where final-hop messages go (`[sink] address`; the dataplane re-exports this type).
///
/// Written `udp:IP:PORT` (or a bare `IP:PORT`) or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SinkAddr {
    /// A UDP address.
    Udp(SocketAddr),
    /// A Unix datagram socket path.
    Unix(PathBuf),
}

impl SinkAddr {
    /// This address with a relative Unix socket path resolved against `base`.
    pub fn resolved(&self, base: &Path) -> SinkAddr {
        match self {
            SinkAddr::Unix(p) => SinkAddr::Unix(base.join(p)),
            udp => udp.clone(),
        }
    }
}

impl std::str::FromStr for SinkAddr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(ValueError::EmptyUnixPath);
            }
            return Ok(SinkAddr::Unix(PathBuf::from(p)));
        }
        let a = s.strip_prefix("udp:").unwrap_or(s);
        a.parse()
            .map(SinkAddr::Udp)
            .map_err(|source| ValueError::Address {
                value: s.to_string(),
                source,
            })
    }
}

impl TryFrom<String> for SinkAddr {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A value given as text (on a command line or in the config) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not one of the names the setting takes.
    #[error("unknown value `{value}` (expected one of {expected})")]
    Unknown {
        /// The value given.
        value: String,
        /// The values accepted.
        expected: &'static str,
    },
    /// `unix:` with no path.
    #[error("`unix:` needs a path (unix:/path)")]
    EmptyUnixPath,
    /// Not a socket address.
    #[error("`{value}`: {source} (expected udp:IP:PORT or unix:/path)")]
    Address {
        /// The value given.
        value: String,
        /// The parser's error.
        source: std::net::AddrParseError,
    },
}

/// Bits and hash count of a Bloom filter for `n` items at false-positive rate `p`
/// (m = -n ln p / (ln 2)^2, k = m/n ln 2), the sizing the dataplane's replay filter uses.
pub fn bloom_dimensions(n: u64, p: f64) -> (f64, u32) {
    let ln2 = std::f64::consts::LN_2;
    let m = -(n as f64) * p.ln() / (ln2 * ln2);
    let k = ((m / n.max(1) as f64) * ln2).round().max(1.0) as u32;
    (m, k)
}

/// Errors reading or checking a config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown field, or a value of the wrong type or not one of those a
    /// setting takes.
    #[error("{path}: {}{source}", field.as_deref().map(|f| format!("`{f}`: ")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The field the parser stopped at, as `section.key`, when it can be told.
        field: Option<String>,
        /// The parser's error (its message also shows the line).
        source: Box<toml::de::Error>,
    },
    /// A value out of range.
    #[error("{path}: invalid value for `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, as `section.key`.
        field: &'static str,
        /// Why.
        message: String,
    },
}

/// The `section.key` at byte `at` of a TOML text: the key on that line under the last
/// `[section]` header above it.
fn field_at(text: &str, at: usize) -> Option<String> {
    let head = text.get(..at.min(text.len()))?;
    let line_start = head.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?.trim();
    let header = |l: &str| l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
    if line.starts_with('[') {
        return Some(header(line));
    }
    let section = head[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(header);
    let key = line.split_once('=').map(|(k, _)| k.trim());
    match (section, key) {
        (Some(s), Some(k)) => Some(format!("{s}.{k}")),
        (None, Some(k)) => Some(k.to_string()),
        (s, None) => s,
    }
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[node]`: sockets and workers.
    pub node: NodeSection,
    /// `[sphinx]`: packet processing limits.
    pub sphinx: SphinxSection,
    /// `[wheel]`: the per-worker delay wheels.
    pub wheel: WheelSection,
    /// `[slab]`: per-worker packet memory.
    pub slab: SlabSection,
    /// `[replay]`: replay protection.
    pub replay: ReplaySection,
    /// `[keys]`: key files and rotation schedule.
    pub keys: KeysSection,
    /// `[sink]`: where final-hop messages go.
    pub sink: SinkSection,
    /// `[admin]`: the admin API.
    pub admin: AdminSection,
    /// `[http]`: nym-node's self-described HTTP API.
    pub http: HttpSection,
    /// `[verloc]`: the verloc responder.
    pub verloc: VerlocSection,
    /// `[topology]`: the known nodes.
    pub topology: TopologySection,
    /// `[rotation]`: where the rotation schedule comes from.
    pub rotation: RotationSection,
    /// `[transport]`: UDP and TCP (Nym's framing, Noise) between nodes.
    pub transport: TransportSection,
    /// `[log]`: logging.
    pub log: LogSection,
    /// `[cover]`: loop cover traffic.
    pub cover: CoverSection,
    /// `[nym]`: a nym-node data directory used in place of `[keys] dir`.
    pub nym: NymSection,
}

/// `[node]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Address the workers listen on. Default `0.0.0.0:1789` (Nym's mixnet port).
    pub listen: SocketAddr,
    /// Worker threads; 0 means one per CPU core. Default 0.
    pub workers: usize,
    /// Pin each worker to a core. Default true.
    pub pin: bool,
    /// Cores to pin workers to, in order (empty: cores 0, 1, 2, ...). Default empty.
    pub cores: Vec<usize>,
    /// I/O backend: "auto" (io_uring, else recvmmsg), "io_uring" or "mmsg". Default "auto".
    pub io: IoBackendKind,
    /// Datagrams per receive batch (a receive of GRO super-packets stops at the first that
    /// reaches it). Default 64.
    pub batch: usize,
    /// Most time one batch's Sphinx processing may take, in µs: a worker takes fewer
    /// datagrams per receive when packets cost more (a slow CPU), so that held packets are not
    /// late by more than this at full load. 0: always `batch`. Default 1000.
    pub batch_budget_us: u64,
    /// Forward to next hops in private ranges (RFC 1918, 100.64.0.0/10, fc00::/7): for a
    /// mixnet on a private network. Default false.
    pub allow_private_next_hops: bool,
    /// Forward to loopback next hops (127.0.0.0/8, ::1): for nodes on one host (tests).
    /// Default false.
    pub allow_loopback_next_hops: bool,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            listen: SocketAddr::from(([0, 0, 0, 0], 1789)),
            workers: 0,
            pin: true,
            cores: Vec::new(),
            io: IoBackendKind::Auto,
            batch: 64,
            batch_budget_us: 1000,
            allow_private_next_hops: false,
            allow_loopback_next_hops: false,
        }
    }
}

/// `[sphinx]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SphinxSection {
    /// Cap on one hop's delay, in milliseconds. Default 10000 (Nym's cap).
    pub max_delay_ms: u64,
    /// What happens to a packet asking for a longer delay: "clamp" (sent after the cap and
    /// counted, as nym-node does) or "drop". Default "clamp".
    pub over_cap: OverCapChoice,
}

impl Default for SphinxSection {
    fn default() -> Self {
        SphinxSection {
            max_delay_ms: 10_000,
            over_cap: OverCapChoice::Clamp,
        }
    }
}

/// `[sphinx] over_cap`: what happens to a packet whose delay is over the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverCapChoice {
    /// Hold it for the cap and count it (`excessive_delay_packets`), as nym-node does.
    #[default]
    Clamp,
    /// Drop it and count it (`delay_too_long`).
    Drop,
}

/// `[wheel]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WheelSection {
    /// Tick length in microseconds: a packet leaves at most one tick after its deadline (plus
    /// the batch in progress). Default 250.
    pub tick_us: u64,
    /// Packets one worker may hold at once; more are dropped and counted. Default 262144.
    pub capacity: usize,
}

impl Default for WheelSection {
    fn default() -> Self {
        WheelSection {
            tick_us: 250,
            capacity: 1 << 18,
        }
    }
}

/// `[slab]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SlabSection {
    /// Slots for ack and regular packets per worker (2.4 KiB each). Default 65536.
    pub small_slots: usize,
    /// Slots for extended packets per worker (33 KiB each). Default 512.
    pub large_slots: usize,
}

impl Default for SlabSection {
    fn default() -> Self {
        SlabSection {
            small_slots: 1 << 16,
            large_slots: 512,
        }
    }
}

/// `[replay]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReplaySection {
    /// Expected packets per second, for sizing the first segment of each filter. Default
    /// 1000. A segment holds rate x lifetime packets at about 25 bits each for 1e-5: 1000
    /// pkt/s for 25 h is 280 MB per live key, in a file-backed mapping; filters grow by
    /// segments sized from the measured rate when traffic exceeds this.
    pub expected_packets_per_second: u64,
    /// How long a key (and its filter) lives, in hours. Default 25 (24 h + 1 h overlap).
    pub key_lifetime_hours: u64,
    /// Target false-positive rate. Default 1e-5 (Nym's).
    pub false_positive_rate: f64,
    /// Directory for persisted filters, relative to the config file. Default "replay".
    pub dir: PathBuf,
    /// How often the filters' files are synced to disk (`msync`), in milliseconds: what a
    /// power loss can lose (a killed process loses nothing). Default 1000. A sync writes the
    /// journal's new entries (32 bytes per new tag) and, once a quarter of the journal is in
    /// use, a snapshot of the filter's bits.
    pub sync_interval_ms: u64,
    /// Tags each filter's journal holds (32 bytes each on disk); a sync snapshots the
    /// filter's bits once a quarter of it is in use. Default 4,194,304 (128 MiB, a snapshot
    /// per million new packets); 65,536 to 268,435,456.
    pub journal_entries: u64,
}

impl Default for ReplaySection {
    fn default() -> Self {
        ReplaySection {
            expected_packets_per_second: 1_000,
            key_lifetime_hours: 25,
            false_positive_rate: 1e-5,
            dir: PathBuf::from("replay"),
            sync_interval_ms: 1000,
            journal_entries: 1 << 22,
        }
    }
}

/// `[keys]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KeysSection {
    /// Directory with the Sphinx key files and the Noise key, relative to the config file.
    /// Default "keys".
    pub dir: PathBuf,
    /// "schedule": rotate on Nym's epoch schedule; "manual": only through the admin API.
    /// Default "schedule".
    pub rotation: Rotation,
    /// Epoch length in seconds. Default 3600 (Nym's).
    pub epoch_length_secs: u64,
    /// Epochs a key is valid for. Default 24 (Nym's).
    pub validity_epochs: u64,
    /// Unix time at which epoch 0 starts. Default 0.
    pub genesis_unix: u64,
}

impl Default for KeysSection {
    fn default() -> Self {
        KeysSection {
            dir: PathBuf::from("keys"),
            rotation: Rotation::Schedule,
            epoch_length_secs: 3600,
            validity_epochs: 24,
            genesis_unix: 0,
        }
    }
}

/// `[topology]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TopologySection {
    /// A topology file (nym-api skimmed-nodes JSON), relative to the config file; reloaded
    /// when it changes and on SIGHUP. Default none (POST /topology can still set one).
    pub file: Option<PathBuf>,
    /// Or a nym-api skimmed-nodes URL (https, or http with `allow_http`), fetched at start,
    /// every `refresh_secs` and on SIGHUP, all pages. Default none.
    pub url: Option<String>,
    /// Allow an `http://` URL (the document decides where packets may go: https keeps others
    /// from rewriting it on the way). Default false.
    pub allow_http: bool,
    /// The most bytes a fetch may read, all pages together. Default 67108864 (64 MiB).
    pub max_document_bytes: u64,
    /// A new document listing fewer than this fraction of the current node count (or no node
    /// at all) is refused, the current topology kept and an alarm raised. Default 0.5.
    pub min_node_fraction: f64,
    /// Seconds between fetches of `url`. Default 300.
    pub refresh_secs: u64,
    /// Once a topology is loaded, drop packets whose next hop is not one of its nodes (as
    /// nym-node does); without a topology nothing is filtered. Default true.
    pub drop_unknown_next_hop: bool,
}

impl Default for TopologySection {
    fn default() -> Self {
        TopologySection {
            file: None,
            url: None,
            allow_http: false,
            max_document_bytes: 64 << 20,
            min_node_fraction: 0.5,
            refresh_secs: 300,
            drop_unknown_next_hop: true,
        }
    }
}

/// Where the rotation schedule comes from (`[rotation] source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum RotationSource {
    /// The `[keys]` schedule (epoch length, validity, genesis).
    #[default]
    #[serde(rename = "local")]
    Local,
    /// nym-api's `/v1/epoch/key-rotation-info`, polled.
    #[serde(rename = "nym-api")]
    NymApi,
}

/// `[rotation]` (used when `keys.rotation = "schedule"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RotationSection {
    /// "local": the `[keys]` schedule; "nym-api": nym-api's key-rotation-info. Default "local".
    pub source: RotationSource,
    /// nym-api's base URL (`https://validator.nymtech.net/api`). Default: the part of
    /// `topology.url` before `/v1/`.
    pub nym_api_url: Option<String>,
    /// Allow an `http://` nym-api URL. Default false.
    pub allow_http: bool,
    /// Seconds between polls of nym-api. Default 300.
    pub refresh_secs: u64,
}

impl Default for RotationSection {
    fn default() -> Self {
        RotationSection {
            source: RotationSource::Local,
            nym_api_url: None,
            allow_http: false,
            refresh_secs: 300,
        }
    }
}

/// The Nym frame version sent on TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u8")]
pub enum TcpFrameVersion {
    /// v7: 3-byte header without the key-rotation byte (what Nym nodes send by default).
    #[default]
    V7,
    /// v8: 4-byte header with the key-rotation byte.
    V8,
}

impl TryFrom<u8> for TcpFrameVersion {
    type Error = ValueError;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            7 => Ok(TcpFrameVersion::V7),
            8 => Ok(TcpFrameVersion::V8),
            other => Err(ValueError::Unknown {
                value: other.to_string(),
                expected: "7, 8",
            }),
        }
    }
}

impl From<TcpFrameVersion> for u8 {
    fn from(v: TcpFrameVersion) -> u8 {
        match v {
            TcpFrameVersion::V7 => 7,
            TcpFrameVersion::V8 => 8,
        }
    }
}

/// `[transport]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TransportSection {
    /// Receive and send UDP (mixplane peers). Default true.
    pub udp: bool,
    /// Accept and open TCP connections with Nym's framing (Nym peers). Default true.
    pub tcp: bool,
    /// Address of the TCP listener. Default none: the same as `[node] listen`.
    pub tcp_listen: Option<SocketAddr>,
    /// Noise: answer a Noise handshake when the node has a noise key, and start one to peers
    /// whose noise key the topology lists. Default true.
    pub noise: bool,
    /// TCP connections accepted at once; more are refused and counted. Default 4096.
    pub max_connections: usize,
    /// TCP connections accepted at once from one IP address. Default 64.
    pub max_connections_per_ip: usize,
    /// A Noise handshake must finish within this. Default 5000.
    pub handshake_timeout_ms: u64,
    /// A partial frame or handshake message older than this closes the connection. Default
    /// 10000.
    pub frame_timeout_ms: u64,
    /// Packets queued per outgoing connection; more are dropped and counted. Default 2000
    /// (Nym's).
    pub egress_queue_packets: usize,
    /// Frame version sent on TCP: 7 (Nym's default) or 8. Default 7.
    pub tcp_frame_version: TcpFrameVersion,
    /// Timeout of an outgoing TCP connect. Default 1500 (Nym's).
    pub connect_timeout_ms: u64,
    /// First wait before reconnecting to a peer, doubled after each failure. Default 10000.
    pub reconnect_backoff_ms: u64,
    /// The longest wait before reconnecting. Default 300000.
    pub reconnect_backoff_max_ms: u64,
    /// Transport for a next hop the topology does not list: "udp" or "tcp". Default "udp".
    pub unknown_peer_transport: PeerTransport,
}

impl Default for TransportSection {
    fn default() -> Self {
        TransportSection {
            udp: true,
            tcp: true,
            tcp_listen: None,
            noise: true,
            max_connections: 4096,
            max_connections_per_ip: 64,
            handshake_timeout_ms: 5000,
            frame_timeout_ms: 10_000,
            egress_queue_packets: 2000,
            tcp_frame_version: TcpFrameVersion::V7,
            connect_timeout_ms: 1500,
            reconnect_backoff_ms: 10_000,
            reconnect_backoff_max_ms: 300_000,
            unknown_peer_transport: PeerTransport::Udp,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Serve the admin API. Default true.
    pub enabled: bool,
    /// Address of the admin API (keep it local). Default "127.0.0.1:8081" (8080 is the
    /// nym-node HTTP API's).
    pub listen: SocketAddr,
    /// File with the bearer token for POST endpoints, relative to the config file; without it
    /// they are disabled. Default "admin.token".
    pub token_file: PathBuf,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token_file: PathBuf::from("admin.token"),
        }
    }
}

/// `[http]`: nym-node's self-described HTTP API (see `nym_http`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Serve it. Default true.
    pub enabled: bool,
    /// Its address. Default "0.0.0.0:8080" (where nym-api looks).
    pub listen: SocketAddr,
    /// Public IP addresses announced in host-information. Default none.
    pub public_ips: Vec<std::net::IpAddr>,
    /// Hostname announced in host-information. Default none.
    pub hostname: Option<String>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_ips: Vec::new(),
            hostname: None,
        }
    }
}

/// `[verloc]`: the verloc echo responder (see `verloc`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VerlocSection {
    /// Serve it. Default true.
    pub enabled: bool,
    /// Its address. Default "0.0.0.0:1790".
    pub listen: SocketAddr,
}

impl Default for VerlocSection {
    fn default() -> Self {
        VerlocSection {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], crate::verloc::DEFAULT_PORT)),
        }
    }
}

/// Whether two listeners would take the same port (equal addresses, or one unspecified).
fn listeners_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `[sink]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SinkSection {
    /// Where final-hop messages go: "udp:IP:PORT" or "unix:/path" (relative to the config
    /// file). Default none (final-hop messages are counted as dropped with reason no_sink).
    pub address: Option<SinkAddr>,
}

/// `[cover]`: loops the node sends through the mix layers back to itself (Loopix), which add
/// cover and measure loss per node.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CoverSection {
    /// Loops per second, Poisson (each carries an ack loop as its SURB-ACK). Default 0: off.
    pub rate_per_second: f64,
    /// Mean delay per hop of the loops, ms. Default 50.
    pub mean_delay_ms: f64,
    /// A loop not back within this many ms is lost. Default 10000.
    pub timeout_ms: u64,
    /// Loops tracked at once. Default 65536.
    pub window: usize,
    /// The most of one core spent building loops (0 to 1). Default 0.05.
    pub max_core_share: f64,
}

impl Default for CoverSection {
    fn default() -> Self {
        CoverSection {
            rate_per_second: 0.0,
            mean_delay_ms: 50.0,
            timeout_ms: 10_000,
            window: 1 << 16,
            max_core_share: 0.05,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Log filter: error, warn, info, debug, trace, or a tracing env-filter. Default "info".
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
        }
    }
}

/// `[nym]`: running on a nym-node's data directory (see the README, "Moving from nym-node").
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NymSection {
    /// A nym-node data directory (`~/.nym/nym-nodes/<id>/data`) whose identity, Sphinx and
    /// Noise keys are used in place, under nym-node's file names, instead of `[keys] dir`.
    /// Relative to the config file. Default: none.
    pub data_dir: Option<PathBuf>,
    /// A file (mode 0600) whose first line is the passphrase of encrypted key files, relative
    /// to the config file. Default: none (then MIXPLANE_KEY_PASSPHRASE is read).
    pub passphrase_file: Option<PathBuf>,
}

/// The largest replay filter (per key) a config may ask for.
pub const MAX_REPLAY_FILTER_BYTES: u64 = 16 << 30;

/// The commented config `mixplane init` writes (every field at its default).
pub const EXAMPLE: &str = include_str!("../ops/node.toml");

impl Config {
    /// Parses and validates a config file's text. `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            field: e.span().and_then(|r| field_at(text, r.start)),
            source: Box::new(e),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        if let Some(u) = &self.topology.url {
            if self.topology.file.is_some() {
                return Err(bad(
                    "topology.url",
                    "set either topology.file or topology.url, not both".into(),
                ));
            }
            let http_ok = self.topology.allow_http && u.starts_with("http://");
            if !(u.starts_with("https://") || http_ok) {
                return Err(bad(
                    "topology.url",
                    format!(
                        "`{u}` is not an https:// URL (http:// needs topology.allow_http = true)"
                    ),
                ));
            }
        }
        if self.topology.max_document_bytes < 1024 {
            return Err(bad(
                "topology.max_document_bytes",
                "must be at least 1024".into(),
            ));
        }
        let f = self.topology.min_node_fraction;
        if !(0.0..=1.0).contains(&f) {
            return Err(bad(
                "topology.min_node_fraction",
                format!("{f} is not in 0..=1"),
            ));
        }
        self.validate_transport(path)?;
        self.validate_rotation(path)?;
        let c = &self.cover;
        if !(c.rate_per_second >= 0.0 && c.rate_per_second <= 10_000.0) {
            return Err(bad("cover.rate_per_second", "is not in 0..=10000".into()));
        }
        if !(c.mean_delay_ms >= 0.0 && c.mean_delay_ms <= 10_000.0) {
            return Err(bad("cover.mean_delay_ms", "is not in 0..=10000".into()));
        }
        if !(c.max_core_share > 0.0 && c.max_core_share <= 1.0) {
            return Err(bad("cover.max_core_share", "is not in (0, 1]".into()));
        }
        if c.timeout_ms == 0 || c.window == 0 {
            return Err(bad(
                "cover.window",
                "window and timeout_ms must be at least 1".into(),
            ));
        }
        if self.http.enabled
            && self.admin.enabled
            && listeners_clash(self.http.listen, self.admin.listen)
        {
            return Err(bad(
                "http.listen",
                format!("{} clashes with admin.listen", self.http.listen),
            ));
        }
        if self.topology.refresh_secs == 0 {
            return Err(bad("topology.refresh_secs", "must be at least 1".into()));
        }
        if self.node.batch == 0 || self.node.batch > 1024 {
            return Err(bad(
                "node.batch",
                format!("{} is not in 1..=1024", self.node.batch),
            ));
        }
        if self.node.workers > 1024 {
            return Err(bad(
                "node.workers",
                format!("{} workers is too many", self.node.workers),
            ));
        }
        if self.sphinx.max_delay_ms == 0 || self.sphinx.max_delay_ms > 3_600_000 {
            return Err(bad(
                "sphinx.max_delay_ms",
                format!("{} is not in 1..=3600000", self.sphinx.max_delay_ms),
            ));
        }
        if self.wheel.tick_us == 0 || self.wheel.tick_us > 1_000_000 {
            return Err(bad(
                "wheel.tick_us",
                format!("{} is not in 1..=1000000", self.wheel.tick_us),
            ));
        }
        if self.wheel.capacity == 0 {
            return Err(bad("wheel.capacity", "must be at least 1".into()));
        }
        if self.slab.small_slots == 0 {
            return Err(bad("slab.small_slots", "must be at least 1".into()));
        }
        if self.replay.expected_packets_per_second == 0 {
            return Err(bad(
                "replay.expected_packets_per_second",
                "must be at least 1".into(),
            ));
        }
        if self.replay.key_lifetime_hours == 0 {
            return Err(bad(
                "replay.key_lifetime_hours",
                "must be at least 1".into(),
            ));
        }
        let p = self.replay.false_positive_rate;
        if !(p > 0.0 && p < 1.0) {
            return Err(bad(
                "replay.false_positive_rate",
                format!("{p} is not in (0, 1)"),
            ));
        }
        // the filter's own limits (size) are checked here too, so start-up cannot fail later
        let (bits, _) = bloom_dimensions(self.replay_expected(), p);
        if bits / 8.0 > MAX_REPLAY_FILTER_BYTES as f64 {
            return Err(bad(
                "replay.expected_packets_per_second",
                format!(
                    "a filter for {} packets at {p} needs {:.0} MiB, more than the {} MiB limit",
                    self.replay_expected(),
                    bits / 8.0 / f64::from(1 << 20),
                    MAX_REPLAY_FILTER_BYTES / (1 << 20)
                ),
            ));
        }
        if self.keys.epoch_length_secs == 0 {
            return Err(bad("keys.epoch_length_secs", "must be at least 1".into()));
        }
        if !(1 << 16..=1 << 28).contains(&self.replay.journal_entries) {
            return Err(bad(
                "replay.journal_entries",
                format!(
                    "{} is not in 65536..=268435456",
                    self.replay.journal_entries
                ),
            ));
        }
        if self.keys.validity_epochs < 3 {
            return Err(bad(
                "keys.validity_epochs",
                format!(
                    "{} is below 3 (the overlaps before and after a boundary would touch)",
                    self.keys.validity_epochs
                ),
            ));
        }
        Ok(())
    }

    fn validate_transport(&self, path: &Path) -> Result<(), ConfigError> {
        let t = &self.transport;
        let bad = |field: &'static str, message: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message: message.to_string(),
        };
        if !t.udp && !t.tcp {
            return Err(bad("transport.tcp", "udp and tcp cannot both be off"));
        }
        let at_least_one = [
            ("transport.max_connections", t.max_connections as u64),
            (
                "transport.max_connections_per_ip",
                t.max_connections_per_ip as u64,
            ),
            ("transport.handshake_timeout_ms", t.handshake_timeout_ms),
            ("transport.frame_timeout_ms", t.frame_timeout_ms),
            (
                "transport.egress_queue_packets",
                t.egress_queue_packets as u64,
            ),
            ("transport.connect_timeout_ms", t.connect_timeout_ms),
            ("transport.reconnect_backoff_ms", t.reconnect_backoff_ms),
        ];
        if let Some((field, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(bad(field, "must be at least 1"));
        }
        if t.max_connections_per_ip > t.max_connections {
            return Err(bad(
                "transport.max_connections_per_ip",
                "is above transport.max_connections",
            ));
        }
        if t.reconnect_backoff_max_ms < t.reconnect_backoff_ms {
            return Err(bad(
                "transport.reconnect_backoff_max_ms",
                "is below transport.reconnect_backoff_ms",
            ));
        }
        Ok(())
    }

    fn validate_rotation(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        if self.rotation.source != RotationSource::NymApi {
            return Ok(());
        }
        if self.keys.rotation == Rotation::Manual {
            let m = "\"nym-api\" needs keys.rotation = \"schedule\"";
            return Err(bad("rotation.source", m.into()));
        }
        let Some(u) = self.rotation_api_url() else {
            let m = "needed for source = \"nym-api\" (unless topology.url has /v1/ in it)";
            return Err(bad("rotation.nym_api_url", m.into()));
        };
        if !(u.starts_with("https://") || (self.rotation.allow_http && u.starts_with("http://"))) {
            let m = format!("`{u}` is not https:// (http:// needs rotation.allow_http = true)");
            return Err(bad("rotation.nym_api_url", m));
        }
        if self.rotation.refresh_secs == 0 {
            return Err(bad("rotation.refresh_secs", "must be at least 1".into()));
        }
        Ok(())
    }

    /// nym-api's base URL for the rotation: `rotation.nym_api_url`, else `topology.url` up to
    /// its `/v1/`.
    pub fn rotation_api_url(&self) -> Option<String> {
        let from_topology = || {
            let u = self.topology.url.as_deref()?;
            u.find("/v1/").map(|i| u[..i].to_string())
        };
        self.rotation.nym_api_url.clone().or_else(from_topology)
    }

    /// How key-rotation-info is fetched.
    pub fn rotation_fetch(&self) -> crate::topology::FetchOptions {
        crate::topology::FetchOptions {
            allow_http: self.rotation.allow_http,
            ..crate::topology::FetchOptions::default()
        }
    }

    /// The address of the TCP listener: `transport.tcp_listen`, else `node.listen`.
    pub fn tcp_listen(&self) -> SocketAddr {
        self.transport.tcp_listen.unwrap_or(self.node.listen)
    }

    /// How the topology is fetched from `topology.url`.
    pub fn topology_fetch(&self) -> crate::topology::FetchOptions {
        crate::topology::FetchOptions {
            timeout: std::time::Duration::from_secs(10),
            allow_http: self.topology.allow_http,
            max_bytes: self.topology.max_document_bytes,
        }
    }

    /// The sink named by `sink.address`, a Unix socket path resolved against `base`.
    pub fn sink(&self, base: &Path) -> Option<SinkAddr> {
        self.sink.address.as_ref().map(|a| a.resolved(base))
    }

    /// Worker threads: `node.workers`, or one per core when 0.
    pub fn workers(&self) -> usize {
        if self.node.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.node.workers
        }
    }

    /// The replay filter directory, resolved against `base`.
    pub fn replay_dir(&self, base: &Path) -> PathBuf {
        base.join(&self.replay.dir)
    }

    /// Packets one replay filter must hold: rate x lifetime.
    pub fn replay_expected(&self) -> u64 {
        self.replay
            .expected_packets_per_second
            .saturating_mul(self.replay.key_lifetime_hours.saturating_mul(3600))
    }

    /// The rotation schedule.
    pub fn schedule(&self) -> crate::rotation::Schedule {
        crate::rotation::Schedule {
            genesis: self.keys.genesis_unix,
            epoch_length: self.keys.epoch_length_secs,
            validity_epochs: self.keys.validity_epochs,
        }
    }

    /// Whether keys rotate on the schedule (else only through the admin API).
    pub fn scheduled_rotation(&self) -> bool {
        self.keys.rotation == Rotation::Schedule
    }

    /// The topology file, resolved against `base`.
    pub fn topology_file(&self, base: &Path) -> Option<PathBuf> {
        self.topology.file.as_ref().map(|f| base.join(f))
    }

    /// The admin token file, resolved against `base`.
    pub fn admin_token_file(&self, base: &Path) -> PathBuf {
        base.join(&self.admin.token_file)
    }

    /// The key directory, resolved against `base`.
    pub fn keys_dir(&self, base: &Path) -> PathBuf {
        base.join(&self.keys.dir)
    }

    /// `[nym] data_dir` and `[nym] passphrase_file`, resolved against `base`.
    pub fn nym_paths(&self, base: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
        let n = &self.nym;
        (
            n.data_dir.as_ref().map(|d| base.join(d)),
            n.passphrase_file.as_ref().map(|f| base.join(f)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("node.toml"))
    }

    #[test]
    fn empty_file_is_the_defaults_and_example_matches_them() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse(EXAMPLE).unwrap(), Config::default());
    }

    #[test]
    fn cover_is_off_by_default_and_checked() {
        assert_eq!(Config::default().cover.rate_per_second, 0.0);
        let c = parse("[cover]\nrate_per_second = 2.5\nmax_core_share = 0.1\n").unwrap();
        assert_eq!(
            (c.cover.rate_per_second, c.cover.max_core_share),
            (2.5, 0.1)
        );
        for (text, field) in [
            ("[cover]\nrate_per_second = -1.0", "cover.rate_per_second"),
            ("[cover]\nmax_core_share = 0.0", "cover.max_core_share"),
            ("[cover]\nmax_core_share = 1.5", "cover.max_core_share"),
            ("[cover]\nmean_delay_ms = -2.0", "cover.mean_delay_ms"),
            ("[cover]\nwindow = 0", "cover.window"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn the_nym_http_api_may_not_share_the_admin_port() {
        let clash = "[admin]\nlisten = \"127.0.0.1:8080\"\n";
        let e = parse(clash).unwrap_err().to_string();
        assert!(e.contains("http.listen"), "{e}");
        assert!(parse(&format!("{clash}[http]\nenabled = false\n")).is_ok());
        let c = parse("[http]\nlisten = \"127.0.0.1:0\"\npublic_ips = [\"1.2.3.4\"]\nhostname = \"a.b\"\n[verloc]\nenabled = false\n").unwrap();
        assert_eq!(
            c.http.public_ips,
            vec!["1.2.3.4".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(!c.verloc.enabled);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let e = parse("[node]\nlisten = \"127.0.0.1:1\"\nworkerz = 3\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("workerz"), "{m}");
        let e = parse("[nodes]\n").unwrap_err().to_string();
        assert!(e.contains("nodes"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let cases = [
            ("[node]\nio = \"dpdk\"", "node.io"),
            ("[node]\nbatch = 0", "node.batch"),
            ("[sphinx]\nmax_delay_ms = 0", "sphinx.max_delay_ms"),
            ("[wheel]\ntick_us = 0", "wheel.tick_us"),
            ("[wheel]\ncapacity = 0", "wheel.capacity"),
            (
                "[replay]\nfalse_positive_rate = 1.5",
                "replay.false_positive_rate",
            ),
            (
                "[replay]\nexpected_packets_per_second = 0",
                "replay.expected_packets_per_second",
            ),
            (
                "[replay]\nexpected_packets_per_second = 100000000000",
                "replay.expected_packets_per_second",
            ),
            ("[replay]\njournal_entries = 1024", "replay.journal_entries"),
            ("[sink]\naddress = \"tcp:1.2.3.4\"", "sink.address"),
            ("[keys]\nrotation = \"daily\"", "keys.rotation"),
            ("[keys]\nvalidity_epochs = 1", "keys.validity_epochs"),
            ("[keys]\nepoch_length_secs = 0", "keys.epoch_length_secs"),
            ("[topology]\nurl = \"ftp://x\"", "topology.url"),
            ("[topology]\nurl = \"http://x/\"", "topology.url"),
            (
                "[topology]\nallow_http = true\nurl = \"ftp://x/\"",
                "topology.url",
            ),
            (
                "[topology]\nmin_node_fraction = 1.5",
                "topology.min_node_fraction",
            ),
            (
                "[topology]\nmax_document_bytes = 10",
                "topology.max_document_bytes",
            ),
            ("[transport]\nudp = false\ntcp = false", "transport.tcp"),
            (
                "[transport]\nmax_connections = 0",
                "transport.max_connections",
            ),
            (
                "[transport]\nmax_connections = 10\nmax_connections_per_ip = 11",
                "transport.max_connections_per_ip",
            ),
            (
                "[transport]\nframe_timeout_ms = 0",
                "transport.frame_timeout_ms",
            ),
            (
                "[transport]\nreconnect_backoff_max_ms = 5",
                "transport.reconnect_backoff_max_ms",
            ),
            (
                "[transport]\ntcp_frame_version = 9",
                "transport.tcp_frame_version",
            ),
            (
                "[transport]\nunknown_peer_transport = \"quic\"",
                "transport.unknown_peer_transport",
            ),
            (
                "[topology]\nurl = \"https://x/\"\nfile = \"t.json\"",
                "topology.url",
            ),
            ("[topology]\nrefresh_secs = 0", "topology.refresh_secs"),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
        // wrong types name the field too
        let e = parse("[node]\nworkers = \"many\"").unwrap_err().to_string();
        assert!(e.contains("workers"), "{e}");
        let e = parse("[node]\nlisten = \"not an address\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn derived_values_resolve_paths_and_units() {
        let c = parse("[node]\nworkers = 3\nio = \"mmsg\"\n[sink]\naddress = \"udp:127.0.0.1:9\"")
            .unwrap();
        assert_eq!(c.workers(), 3);
        assert_eq!(c.node.io, IoBackendKind::Mmsg);
        assert_eq!(
            c.replay_dir(Path::new("/etc/mixplane")),
            Path::new("/etc/mixplane/replay")
        );
        assert_eq!(
            c.keys_dir(Path::new("/etc/mixplane")),
            Path::new("/etc/mixplane/keys")
        );
        assert_eq!(c.replay_expected(), 1_000 * 25 * 3600);
        assert_eq!(
            c.sink(Path::new("/etc/mixplane")),
            Some(SinkAddr::Udp("127.0.0.1:9".parse().unwrap()))
        );
        let u = parse("[sink]\naddress = \"unix:/run/mix.sock\"").unwrap();
        assert_eq!(
            u.sink(Path::new("/etc")),
            Some(SinkAddr::Unix("/run/mix.sock".into()))
        );
        let rel = parse("[sink]\naddress = \"unix:mix.sock\"").unwrap();
        assert_eq!(
            rel.sink(Path::new("/etc/mixplane")),
            Some(SinkAddr::Unix("/etc/mixplane/mix.sock".into()))
        );
        // Nym's figures: 1e-5 needs ~24 bits and 17 hashes per item
        let (m, k) = bloom_dimensions(1_000_000, 1e-5);
        assert!((m / 1e6 - 23.96).abs() < 0.05, "{m}");
        assert_eq!(k, 17);
    }

    #[test]
    fn closed_sets_are_serde_enums_with_field_named_errors() {
        let c = parse("[node]\nio = \"io_uring\"\n[keys]\nrotation = \"manual\"").unwrap();
        assert_eq!(c.node.io, IoBackendKind::Uring);
        assert_eq!(c.keys.rotation, Rotation::Manual);
        assert!(!c.scheduled_rotation());
        for (text, field, value) in [
            ("[node]\nio = \"dpdk\"", "node.io", "dpdk"),
            ("[keys]\nrotation = \"daily\"", "keys.rotation", "daily"),
            ("[sink]\naddress = \"unix:\"", "sink.address", "unix:"),
        ] {
            match parse(text) {
                Err(e @ ConfigError::Parse { .. }) => {
                    let ConfigError::Parse { field: f, .. } = &e else {
                        unreachable!()
                    };
                    assert_eq!(f.as_deref(), Some(field), "{text}");
                    let m = e.to_string();
                    assert!(m.contains(field) && m.contains(value), "{m}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn command_line_names_parse_to_the_same_values() {
        for (s, k) in [
            ("auto", IoBackendKind::Auto),
            ("io_uring", IoBackendKind::Uring),
            ("uring", IoBackendKind::Uring),
            ("mmsg", IoBackendKind::Mmsg),
            ("recvmmsg", IoBackendKind::Mmsg),
        ] {
            assert_eq!(s.parse::<IoBackendKind>(), Ok(k));
            assert_eq!(k.as_str().parse::<IoBackendKind>(), Ok(k));
        }
        assert!(matches!(
            "dpdk".parse::<IoBackendKind>(),
            Err(ValueError::Unknown { .. })
        ));
        assert_eq!(
            "udp:192.0.2.1:9".parse::<SinkAddr>(),
            Ok(SinkAddr::Udp("192.0.2.1:9".parse().unwrap()))
        );
        assert_eq!(
            "192.0.2.1:9".parse::<SinkAddr>(),
            Ok(SinkAddr::Udp("192.0.2.1:9".parse().unwrap()))
        );
        assert_eq!("unix:".parse::<SinkAddr>(), Err(ValueError::EmptyUnixPath));
        assert!(matches!(
            "tcp:1.2.3.4".parse::<SinkAddr>(),
            Err(ValueError::Address { .. })
        ));
    }

    #[test]
    fn field_at_finds_section_and_key() {
        let t = "[node]\nworkers = 3\n\n[keys]\nrotation = \"x\"\n";
        assert_eq!(
            field_at(t, t.find("\"x").unwrap()).as_deref(),
            Some("keys.rotation")
        );
        assert_eq!(
            field_at(t, t.find('3').unwrap()).as_deref(),
            Some("node.workers")
        );
        assert_eq!(field_at(t, 1).as_deref(), Some("node"));
        assert_eq!(field_at("a = 1", 4).as_deref(), Some("a"));
    }

    #[test]
    fn transport_section_and_topology_fetch_options() {
        let d = Config::default();
        assert_eq!(d.tcp_listen(), d.node.listen);
        assert_eq!(d.transport.tcp_frame_version, TcpFrameVersion::V7);
        let c = parse(
            "[node]\nlisten = \"192.0.2.1:1789\"\n[transport]\ntcp_listen = \"192.0.2.1:1790\"\n\
             tcp_frame_version = 8\nunknown_peer_transport = \"tcp\"\nnoise = false\n\
             [topology]\nurl = \"http://127.0.0.1/x\"\nallow_http = true\nmax_document_bytes = 4096",
        )
        .unwrap();
        assert_eq!(c.tcp_listen(), "192.0.2.1:1790".parse().unwrap());
        assert_eq!(u8::from(c.transport.tcp_frame_version), 8);
        assert_eq!(c.transport.unknown_peer_transport, PeerTransport::Tcp);
        assert!(!c.transport.noise);
        let f = c.topology_fetch();
        assert!(f.allow_http);
        assert_eq!(f.max_bytes, 4096);
        assert!(!d.topology_fetch().allow_http);
    }

    #[test]
    fn rotation_from_nym_api() {
        let c = parse("[rotation]\nsource = \"nym-api\"\nnym_api_url = \"https://a/api\"").unwrap();
        assert_eq!(c.rotation.source, RotationSource::NymApi);
        assert_eq!(c.rotation_api_url().as_deref(), Some("https://a/api"));
        // the base URL from the topology URL
        let c = parse(
            "[rotation]\nsource = \"nym-api\"\n[topology]\nurl = \"https://v.example/api/v1/unstable/nym-nodes/skimmed\"",
        )
        .unwrap();
        assert_eq!(
            c.rotation_api_url().as_deref(),
            Some("https://v.example/api")
        );
        assert!(!c.rotation_fetch().allow_http);
        let c = parse("[rotation]\nsource = \"nym-api\"\nallow_http = true\nnym_api_url = \"http://127.0.0.1:1\"").unwrap();
        assert!(c.rotation_fetch().allow_http);
        for (bad, field) in [
            ("[rotation]\nsource = \"nym-api\"", "rotation.nym_api_url"),
            (
                "[rotation]\nsource = \"nym-api\"\nnym_api_url = \"http://a/api\"",
                "rotation.nym_api_url",
            ),
            (
                "[rotation]\nsource = \"nym-api\"\nnym_api_url = \"https://a\"\nrefresh_secs = 0",
                "rotation.refresh_secs",
            ),
            (
                "[rotation]\nsource = \"nym-api\"\nnym_api_url = \"https://a\"\n[keys]\nrotation = \"manual\"",
                "rotation.source",
            ),
            ("[rotation]\nsource = \"chain\"", "rotation.source"),
        ] {
            let got = match parse(bad).unwrap_err() {
                ConfigError::Invalid { field, .. } => Some(field.to_string()),
                ConfigError::Parse { field, .. } => field,
                e => panic!("{bad}: {e}"),
            };
            assert_eq!(got.as_deref(), Some(field), "{bad}");
        }
    }

    #[test]
    fn example_documents_the_transport_and_topology_settings() {
        let keys = [
            "udp",
            "tcp",
            "tcp_listen",
            "noise",
            "max_connections",
            "max_connections_per_ip",
            "handshake_timeout_ms",
            "frame_timeout_ms",
            "egress_queue_packets",
            "tcp_frame_version",
            "connect_timeout_ms",
            "reconnect_backoff_ms",
            "reconnect_backoff_max_ms",
            "unknown_peer_transport",
        ];
        let transport = EXAMPLE.split("[transport]").nth(1).unwrap();
        let transport = transport.split("\n[").next().unwrap();
        for k in keys {
            let set = |l: &str| l.trim_start_matches("# ").starts_with(&format!("{k} = "));
            assert!(
                transport.lines().any(set),
                "[transport] {k} is not in EXAMPLE"
            );
        }
        for k in [
            "allow_http = ",
            "max_document_bytes = ",
            "min_node_fraction = ",
        ] {
            assert!(EXAMPLE.lines().any(|l| l.starts_with(k)), "{k}");
        }
    }

    #[test]
    fn nym_section_resolves_against_the_config_and_rejects_unknown_fields() {
        let c = parse("[nym]\ndata_dir = \"nym/data\"\npassphrase_file = \"/etc/pass\"").unwrap();
        let (d, p) = c.nym_paths(Path::new("/etc/mixplane"));
        assert_eq!(d.unwrap(), Path::new("/etc/mixplane/nym/data"));
        assert_eq!(p.unwrap(), Path::new("/etc/pass"));
        assert_eq!(Config::default().nym_paths(Path::new("/x")), (None, None));
        assert!(parse("[nym]\ndatadir = \"x\"").is_err());
        assert!(EXAMPLE.contains("# data_dir = ") && EXAMPLE.contains("# passphrase_file = "));
    }
}
