//! The node's config file (TOML).
//!
//! Every field has a default, so an empty file is a valid config; unknown fields are rejected,
//! and invalid values are reported with the name of the field. [`EXAMPLE`] is the commented
//! config that `mixplane init` writes; a test keeps it in step with the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The I/O backend a config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoChoice {
    /// io_uring, else recvmmsg/sendmmsg.
    Auto,
    /// io_uring only.
    IoUring,
    /// recvmmsg/sendmmsg.
    Mmsg,
}

/// Where final-hop messages go, as a config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// A UDP address.
    Udp(SocketAddr),
    /// A Unix datagram socket.
    Unix(PathBuf),
}

impl std::str::FromStr for SinkSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(SinkSpec::Unix(PathBuf::from(p)));
        }
        let a = s.strip_prefix("udp:").unwrap_or(s);
        a.parse()
            .map(SinkSpec::Udp)
            .map_err(|e| format!("`{s}`: {e} (expected udp:IP:PORT or unix:/path)"))
    }
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
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown field, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the field and line).
        message: String,
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
    /// `[topology]`: the known nodes.
    pub topology: TopologySection,
    /// `[log]`: logging.
    pub log: LogSection,
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
    pub io: String,
    /// Datagrams per receive batch (a receive of GRO super-packets stops at the first that
    /// reaches it). Default 64.
    pub batch: usize,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            listen: SocketAddr::from(([0, 0, 0, 0], 1789)),
            workers: 0,
            pin: true,
            cores: Vec::new(),
            io: "auto".into(),
            batch: 64,
        }
    }
}

/// `[sphinx]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SphinxSection {
    /// Packets asking for a longer per-hop delay are dropped. Default 10000 (Nym's cap).
    pub max_delay_ms: u64,
}

impl Default for SphinxSection {
    fn default() -> Self {
        SphinxSection {
            max_delay_ms: 10_000,
        }
    }
}

/// `[wheel]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WheelSection {
    /// Tick length in microseconds. Default 1000 (1 ms).
    pub tick_us: u64,
    /// Packets one worker may hold at once; more are dropped and counted. Default 262144.
    pub capacity: usize,
}

impl Default for WheelSection {
    fn default() -> Self {
        WheelSection {
            tick_us: 1000,
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
    /// power loss can lose (a killed process loses nothing). Default 1000.
    pub sync_interval_ms: u64,
}

impl Default for ReplaySection {
    fn default() -> Self {
        ReplaySection {
            expected_packets_per_second: 1_000,
            key_lifetime_hours: 25,
            false_positive_rate: 1e-5,
            dir: PathBuf::from("replay"),
            sync_interval_ms: 1000,
        }
    }
}

/// `[keys]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KeysSection {
    /// Directory with the Sphinx key files, relative to the config file. Default "keys".
    pub dir: PathBuf,
    /// "schedule": rotate on Nym's epoch schedule; "manual": only through the admin API.
    /// Default "schedule".
    pub rotation: String,
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
            rotation: "schedule".into(),
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
    /// Or a nym-api skimmed-nodes URL (http or https), fetched at start, every
    /// `refresh_secs` and on SIGHUP, all pages. Default none.
    pub url: Option<String>,
    /// Seconds between fetches of `url`. Default 300.
    pub refresh_secs: u64,
    /// Drop packets whose next hop is not a node of the topology. Default false.
    pub drop_unknown_next_hop: bool,
}

impl Default for TopologySection {
    fn default() -> Self {
        TopologySection {
            file: None,
            url: None,
            refresh_secs: 300,
            drop_unknown_next_hop: false,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Serve the admin API. Default true.
    pub enabled: bool,
    /// Address of the admin API (keep it local). Default "127.0.0.1:8080".
    pub listen: SocketAddr,
    /// File with the bearer token for POST endpoints, relative to the config file; without it
    /// they are disabled. Default "admin.token".
    pub token_file: PathBuf,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_file: PathBuf::from("admin.token"),
        }
    }
}

/// `[sink]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SinkSection {
    /// Where final-hop messages go: "udp:IP:PORT" or "unix:/path". Default none (final-hop
    /// messages are counted as dropped with reason no_sink).
    pub address: Option<String>,
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

/// The largest replay filter (per key) a config may ask for.
pub const MAX_REPLAY_FILTER_BYTES: u64 = 16 << 30;

/// The commented config `mixplane init` writes (every field at its default).
pub const EXAMPLE: &str = include_str!("../ops/node.toml");

impl Config {
    /// Parses and validates a config file's text. `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
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
        self.io_backend().map_err(|m| bad("node.io", m))?;
        if let Some(u) = &self.topology.url {
            if self.topology.file.is_some() {
                return Err(bad(
                    "topology.url",
                    "set either topology.file or topology.url, not both".into(),
                ));
            }
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(bad(
                    "topology.url",
                    format!("`{u}` is not an http:// or https:// URL"),
                ));
            }
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
        self.sink_spec().map_err(|m| bad("sink.address", m))?;
        if !matches!(self.keys.rotation.as_str(), "schedule" | "manual") {
            return Err(bad(
                "keys.rotation",
                format!("`{}` is not schedule or manual", self.keys.rotation),
            ));
        }
        if self.keys.epoch_length_secs == 0 {
            return Err(bad("keys.epoch_length_secs", "must be at least 1".into()));
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

    /// The I/O backend named by `node.io`.
    pub fn io_backend(&self) -> Result<IoChoice, String> {
        match self.node.io.as_str() {
            "auto" => Ok(IoChoice::Auto),
            "io_uring" => Ok(IoChoice::IoUring),
            "mmsg" => Ok(IoChoice::Mmsg),
            other => Err(format!("unknown backend `{other}` (auto, io_uring, mmsg)")),
        }
    }

    /// The sink named by `sink.address`.
    pub fn sink_spec(&self) -> Result<Option<SinkSpec>, String> {
        self.sink.address.as_deref().map(str::parse).transpose()
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
        self.keys.rotation == "schedule"
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
            ("[sink]\naddress = \"tcp:1.2.3.4\"", "sink.address"),
            ("[keys]\nrotation = \"daily\"", "keys.rotation"),
            ("[keys]\nvalidity_epochs = 1", "keys.validity_epochs"),
            ("[keys]\nepoch_length_secs = 0", "keys.epoch_length_secs"),
            ("[topology]\nurl = \"ftp://x\"", "topology.url"),
            (
                "[topology]\nurl = \"http://x/\"\nfile = \"t.json\"",
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
        assert_eq!(c.io_backend(), Ok(IoChoice::Mmsg));
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
            c.sink_spec(),
            Ok(Some(SinkSpec::Udp("127.0.0.1:9".parse().unwrap())))
        );
        let u = parse("[sink]\naddress = \"unix:/run/mix.sock\"").unwrap();
        assert_eq!(
            u.sink_spec(),
            Ok(Some(SinkSpec::Unix("/run/mix.sock".into())))
        );
        // Nym's figures: 1e-5 needs ~24 bits and 17 hashes per item
        let (m, k) = bloom_dimensions(1_000_000, 1e-5);
        assert!((m / 1e6 - 23.96).abs() < 0.05, "{m}");
        assert_eq!(k, 17);
    }
}
