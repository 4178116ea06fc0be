//! The `mixplane` command: run a node, or a local mixnet demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mixplane_control::admin::{self, AdminHandler, AdminServer};
use mixplane_control::config::{
    Config, EXAMPLE, IoBackendKind, OverCapChoice, RotationSource, TcpFrameVersion,
};
use mixplane_control::identity::{self, IDENTITY_FILE, Identity};
use mixplane_control::keys::{self, KeyLayout, KeyMaterial, KeyStore, Passphrase, StoredKeys};
use mixplane_control::metrics::PromText;
use mixplane_control::nym_http::{self, HostInfo, HostInfoHandle, NymApi, NymHttpServer};
use mixplane_control::topology::{self, FetchOptions, Parsed, Topology, TopologyHealth};
use mixplane_control::verloc::{VerlocCounters, VerlocLimits, VerlocResponder};
use mixplane_dataplane::cover::CoverConfig;
use mixplane_dataplane::demo::{self, DemoConfig, DemoTransport};
use mixplane_dataplane::egress::EgressPolicy;
use mixplane_dataplane::hostcheck;
use mixplane_dataplane::io::tcp::{PeerBook, TcpSettings};
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::plane::{Admin, ControlPlane};
use mixplane_dataplane::sphinx::{
    DropReason, FrameVersion, NodeKeys, OverCap, SizeClass, SphinxKey,
};
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "mixplane",
    version,
    about = "A fast, Nym-compatible Sphinx mix node"
)]
struct Cli {
    /// Log filter for commands without a config (tracing env-filter syntax).
    #[arg(long, global = true, default_value = "warn", env = "MIXPLANE_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a mix node from a config file.
    Run {
        /// The config file (see `mixplane init`).
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Write a commented config, a fresh Sphinx key, a Noise key and an ed25519 identity key
    /// into a directory.
    Init {
        /// Directory to create (node.toml, keys/, replay/).
        dir: PathBuf,
        /// Rotation id of the first key (default: the current one on Nym's default schedule).
        #[arg(long)]
        rotation_id: Option<u32>,
    },
    /// Show the node's Sphinx public keys (base58) with their rotation ids, its Noise key and
    /// its identity key.
    Keys {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Start a local mixnet on loopback (three mix layers and an exit node), send Nym packets
    /// through it and report what arrived. Exits 0 if every message and SURB-ACK arrived.
    Demo {
        /// Packets to send.
        #[arg(long, default_value_t = 2000)]
        packets: usize,
        /// Size class: ack, regular, ext8, ext16, ext32.
        #[arg(long, default_value = "regular", value_parser = parse_size)]
        size: SizeClass,
        /// Mean per-hop delay in milliseconds (exponentially distributed, as Loopix).
        #[arg(long, default_value_t = 5.0)]
        mean_delay_ms: f64,
        /// Worker threads per node.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Send rate in packets per second (0: as fast as possible).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// I/O backend: auto, io_uring, mmsg.
        #[arg(long, default_value = "auto")]
        io: IoBackendKind,
        /// Seed for keys, routes and delays.
        #[arg(long)]
        seed: Option<u64>,
        /// Transport between client and nodes: udp, tcp (Nym's framing) or noise (Nym's
        /// framing inside Noise XKpsk3).
        #[arg(long, default_value = "udp")]
        transport: DemoTransport,
        /// Loop cover traffic: loops per second per node (0: off). The summary shows what
        /// came back.
        #[arg(long, default_value_t = 0.0)]
        cover: f64,
    },
    /// Measure what this host takes from a busy core, before running a node on it: spins on
    /// each core in turn and reports the gaps (another thread, or the host: a hypervisor's
    /// steal or interrupts), the share of the time more than 0.5 / 1 / 2 ms into a gap (the
    /// share of packets those gaps alone make late by that much) and the core's speed
    /// steadiness. A release-error p99 of 2 ms needs the 2 ms share well under 1 % on the
    /// worker cores.
    CheckHost {
        /// Cores to probe, one after the other (e.g. 2,3); default every core.
        #[arg(long, value_delimiter = ',')]
        cores: Vec<usize>,
        /// Seconds per core.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// A unit of work (about 0.5 µs) that took longer than this is a gap, µs.
        #[arg(long, default_value_t = 50)]
        threshold_us: u64,
        /// Window for the speed figures, ms.
        #[arg(long, default_value_t = 100)]
        window_ms: u64,
    },
}

/// Where the keys are, overriding the config's `[nym]` section.
#[derive(clap::Args)]
struct KeyArgs {
    /// Use a nym-node data directory (`~/.nym/nym-nodes/<id>/data`) in place: its identity,
    /// Sphinx and Noise keys under nym-node's file names (overrides `[nym] data_dir`).
    #[arg(long)]
    nym_node_dir: Option<PathBuf>,
    /// File whose first line is the passphrase of encrypted key files (overrides
    /// `[nym] passphrase_file`; without either, MIXPLANE_KEY_PASSPHRASE is read).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

/// The node's key directory: a nym-node data directory (`--nym-node-dir`, `[nym] data_dir`)
/// or `[keys] dir`, with the passphrase for encrypted key files if one is given.
fn key_store(cfg: &Config, base: &Path, args: &KeyArgs) -> anyhow::Result<KeyStore> {
    let (nym_dir, pass_file) = cfg.nym_paths(base);
    let store = match args.nym_node_dir.clone().or(nym_dir) {
        Some(d) => {
            anyhow::ensure!(
                d.is_dir(),
                "nym-node data directory {} not found",
                d.display()
            );
            KeyStore::new(d, KeyLayout::NymNode)
        }
        None => KeyStore::new(cfg.keys_dir(base), KeyLayout::Mixplane),
    };
    let pass = match args.passphrase_file.clone().or(pass_file) {
        Some(f) => Some(Passphrase::from_file(&f)?),
        None => Passphrase::from_env(),
    };
    Ok(store.with_passphrase(pass))
}

/// Logs, on a nym-node data directory, that its replay filters are not carried over.
fn note_nym_replay_filters(store: &KeyStore, replay_dir: &Path) {
    if store.layout() != KeyLayout::NymNode {
        return;
    }
    let theirs = store.dir().join("replay-detection");
    tracing::warn!(
        nym_filters = %theirs.display(),
        mixplane_filters = %replay_dir.display(),
        "nym-node's replay filters (its .bloom files) are in a format mixplane cannot read: starting with empty filters. Packets nym-node saw before the move are not recognised as replays; nym-node's files are left untouched"
    );
}

fn parse_size(s: &str) -> Result<SizeClass, String> {
    SizeClass::ALL
        .into_iter()
        .find(|c| c.name() == s)
        .ok_or_else(|| format!("unknown size class `{s}` (ack, regular, ext8, ext16, ext32)"))
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

fn config_base(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn to_sphinx_key(k: &KeyMaterial) -> SphinxKey {
    SphinxKey::from_secret(*k.secret(), k.rotation_id())
}

fn node_keys(k: &StoredKeys) -> NodeKeys {
    NodeKeys {
        primary: to_sphinx_key(&k.primary),
        secondary: k.secondary.as_ref().map(to_sphinx_key),
    }
}

/// The dataplane settings a config asks for (`noise`: the node's Noise secret, if it has one).
fn node_config(c: &Config, base: &Path, noise: Option<&[u8; 32]>) -> NodeConfig {
    let t = &c.transport;
    let ms = Duration::from_millis;
    let tcp = t.tcp.then(|| TcpSettings {
        listen: Some(c.tcp_listen()),
        noise_secret: noise.map(|k| Zeroizing::new(*k)),
        noise: t.noise,
        batch: c.node.batch,
        handshake_timeout: ms(t.handshake_timeout_ms),
        frame_timeout: ms(t.frame_timeout_ms),
        egress_queue_frames: t.egress_queue_packets,
        frame_version: match t.tcp_frame_version {
            TcpFrameVersion::V7 => FrameVersion::V7,
            TcpFrameVersion::V8 => FrameVersion::V8,
        },
        connect_timeout: ms(t.connect_timeout_ms),
        backoff_initial: ms(t.reconnect_backoff_ms),
        backoff_max: ms(t.reconnect_backoff_max_ms),
        max_connections: t.max_connections,
        max_connections_per_ip: t.max_connections_per_ip,
    });
    NodeConfig {
        udp: t.udp,
        tcp,
        peers: PeerBook::new(t.unknown_peer_transport),
        listen: c.node.listen,
        workers: c.workers(),
        pin_cores: c.node.pin.then(|| c.node.cores.clone()),
        io: c.node.io,
        batch: c.node.batch,
        batch_budget_ns: c.node.batch_budget_us.saturating_mul(1000),
        max_delay_ns: c.sphinx.max_delay_ms * 1_000_000,
        over_cap: match c.sphinx.over_cap {
            OverCapChoice::Clamp => OverCap::Clamp,
            OverCapChoice::Drop => OverCap::Drop,
        },
        egress: EgressPolicy {
            allow_loopback: c.node.allow_loopback_next_hops,
            allow_private: c.node.allow_private_next_hops,
        },
        wheel_tick_ns: c.wheel.tick_us * 1000,
        wheel_capacity: c.wheel.capacity,
        slab_small: c.slab.small_slots,
        slab_large: c.slab.large_slots,
        replay_expected: c.replay_expected(),
        replay_fp_rate: c.replay.false_positive_rate,
        replay_key_lifetime: Duration::from_secs(c.replay.key_lifetime_hours.saturating_mul(3600)),
        replay_dir: Some(c.replay_dir(base)),
        replay_journal_entries: c.replay.journal_entries,
        sink: c.sink(base),
        cover: (c.cover.rate_per_second > 0.0).then(|| CoverConfig {
            rate_per_second: c.cover.rate_per_second,
            mean_delay_ms: c.cover.mean_delay_ms,
            timeout: ms(c.cover.timeout_ms),
            window: c.cover.window,
            max_core_share: c.cover.max_core_share,
            ..CoverConfig::default()
        }),
        fault_drop_per_mille: 0,
    }
}

fn run_node(path: &Path, key_args: &KeyArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(path)?;
    init_logging(&cfg.log.level)?;
    tracing::info!(cpu = %mixplane_crypto_simd::cpu::report(), paths = %mixplane_crypto_simd::paths(), "crypto paths chosen");
    if let Some(w) = mixplane_crypto_simd::cpu::warning() {
        tracing::warn!("{w}");
    }
    let base = config_base(path);
    let store = key_store(&cfg, &base, key_args)?;
    tracing::info!(dir = %store.dir().display(), layout = ?store.layout(), "key directory");
    let keys::KeyDir {
        sphinx: stored,
        noise,
    } = store.load_key_dir()?;
    let identity = node_identity(&store)?;
    note_nym_replay_filters(&store, &cfg.replay_dir(&base));
    match &noise {
        Some(k) => tracing::info!(public = %k.public_base58(), "noise key loaded"),
        None => tracing::warn!(
            "no noise key ({}): Nym peers cannot use Noise to this node",
            keys::NOISE_FILE
        ),
    }
    let nc = node_config(&cfg, &base, noise.as_ref().map(|k| k.secret_bytes()));
    let node = Node::start(nc.clone(), Arc::new(node_keys(&stored)))?;
    // The control plane's threads, all started below, run on the cores no worker has.
    match node.keep_off_worker_cores() {
        Ok(cores) if !cores.is_empty() => {
            tracing::info!(?cores, "control plane kept off the workers' cores")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not keep the control plane off the workers' cores")
        }
    }
    tracing::info!(
        listen = %node.local_addr(),
        workers = nc.workers,
        io = node.io_backend(),
        primary = %stored.primary.public_base58(),
        rotation = stored.primary.rotation_id(),
        "mixplane node running"
    );
    let schedule = cfg.scheduled_rotation().then(|| cfg.schedule());
    let plane = Arc::new(
        ControlPlane::new(node, nc.clone(), cfg.keys_dir(&base), stored, schedule)
            .with_key_store(store),
    );
    let nym = NymServices::start(
        &cfg,
        &plane,
        Arc::new(identity.signing_key().clone()),
        noise.as_ref().map(|k| k.public_bytes()),
    )?;
    let health = Arc::new(TopologyHealth::new());
    let guard = TopologyGuard {
        min_fraction: cfg.topology.min_node_fraction,
        health: health.clone(),
    };
    let admin = if cfg.admin.enabled {
        let token_file = cfg.admin_token_file(&base);
        let token = if token_file.exists() {
            Some(admin::read_token(&token_file)?)
        } else {
            tracing::warn!(file = %token_file.display(), "no admin token file: POST endpoints are disabled");
            None
        };
        let handler = NodeAdmin {
            inner: Admin(plane.clone()),
            topology: health.clone(),
            verloc: nym.verloc.as_ref().map(VerlocResponder::counters),
        };
        let srv = AdminServer::start(cfg.admin.listen, token, Arc::new(handler))?;
        tracing::info!(addr = %srv.local_addr(), "admin API listening");
        Some(srv)
    } else {
        None
    };
    plane.set_routing_filter(cfg.topology.drop_unknown_next_hop);
    let mut topo = TopologyFile::new(cfg.topology_file(&base), guard.clone());
    topo.reload(&plane, true);
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("installing the SIGHUP handler")?;
    let fetch_now = Arc::new(AtomicBool::new(true));
    let stop_fetcher = Arc::new(AtomicBool::new(false));
    let fetcher = cfg.topology.url.clone().map(|url| {
        let (plane, now, stop) = (plane.clone(), fetch_now.clone(), stop_fetcher.clone());
        let fetch = Fetcher {
            url,
            opts: cfg.topology_fetch(),
            every: Duration::from_secs(cfg.topology.refresh_secs),
            guard: guard.clone(),
        };
        std::thread::Builder::new()
            .name("mixplane-topology".into())
            .spawn(move || fetch.run(&plane, &now, &stop))
    });
    let fetcher = fetcher
        .transpose()
        .context("starting the topology fetcher")?;
    let rotation_poller = follow_nym_api(&cfg, &plane, &stop_fetcher)?;
    // First SIGTERM/SIGINT: stop receiving and drain the wheels; a second one: exit at once.
    let signals = Arc::new(AtomicUsize::new(0));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let s = signals.clone();
        // SAFETY: the handler only does an atomic increment and, on the second signal, calls
        // exit via signal-hook's async-signal-safe helper.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                if s.fetch_add(1, Ordering::SeqCst) >= 1 {
                    signal_hook::low_level::exit(130);
                }
            })
        }
        .context("installing signal handlers")?;
    }
    let mut last_tick = std::time::Instant::now() - Duration::from_secs(10);
    let sync_every = Duration::from_millis(cfg.replay.sync_interval_ms);
    let mut last_sync = std::time::Instant::now();
    while signals.load(Ordering::SeqCst) == 0 && !plane.node().is_finished() {
        if last_sync.elapsed() >= sync_every {
            last_sync = std::time::Instant::now();
            plane.sync_replay();
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = std::time::Instant::now();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Err(e) = plane.tick(now) {
                tracing::error!(error = %e, "key rotation failed; keeping the current keys");
            }
            plane.maintain_replay(std::time::SystemTime::now());
            topo.reload(&plane, false);
            nym.refresh(&plane);
        }
        if hup.swap(false, Ordering::SeqCst) {
            tracing::info!("SIGHUP: reloading the topology");
            topo.reload(&plane, true);
            fetch_now.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("shutting down: no new packets, releasing held ones at their deadlines");
    if let Some(a) = admin {
        a.stop();
    }
    nym.stop();
    stop_fetcher.store(true, Ordering::SeqCst);
    for f in fetcher.into_iter().chain(rotation_poller) {
        let _ = f.join();
    }
    let plane =
        Arc::try_unwrap(plane).map_err(|_| anyhow::anyhow!("control plane still shared"))?;
    let node = plane.into_node();
    let counters = node.counters().to_vec();
    node.shutdown()?;
    let total = |f: &dyn Fn(&mixplane_dataplane::counters::WorkerCounters) -> u64| -> u64 {
        counters.iter().map(|c| f(c)).sum()
    };
    tracing::info!(
        received = total(&|c| c.rx_datagrams.load(Ordering::Relaxed)),
        forwarded = total(&|c| c.forwarded.load(Ordering::Relaxed)),
        delivered = total(&|c| c.delivered.load(Ordering::Relaxed)),
        dropped = total(&|c| c.total_drops()),
        bad_mac = total(&|c| c.sphinx_drops(DropReason::BadMac)),
        replayed = total(&|c| c.sphinx_drops(DropReason::Replayed)),
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// The admin API of a running node: the control plane's, with the topology health series
/// added to the metrics page.
struct NodeAdmin {
    inner: Admin,
    topology: Arc<TopologyHealth>,
    verloc: Option<Arc<VerlocCounters>>,
}

impl AdminHandler for NodeAdmin {
    fn metrics(&self) -> String {
        let mut p = PromText::new();
        self.topology.write_metrics(&mut p);
        if let Some(v) = &self.verloc {
            v.write_metrics(&mut p);
        }
        self.inner.metrics() + &p.finish()
    }
    fn status(&self) -> String {
        self.inner.status()
    }
    fn rotate_keys(&self) -> Result<String, String> {
        self.inner.rotate_keys()
    }
    fn set_topology(&self, body: &[u8]) -> Result<String, String> {
        self.inner.set_topology(body)
    }
}

/// The node's ed25519 identity key (signs host-information and verloc replies). A mixplane
/// key directory made before mixplane kept one gets a new one, written next to the other keys;
/// a nym-node data directory must have its own.
fn node_identity(store: &KeyStore) -> anyhow::Result<Identity> {
    if let Some(id) = store.load_identity()? {
        tracing::info!(identity = %id.public_base58(), "identity key loaded");
        return Ok(id);
    }
    if store.layout() != KeyLayout::Mixplane {
        anyhow::bail!(
            "no identity key ({IDENTITY_FILE}) in {}: a nym-node data directory keeps one",
            store.dir().display()
        );
    }
    let id = Identity::generate();
    store.write_identity(&id)?;
    tracing::warn!(
        identity = %id.public_base58(),
        "no identity key ({IDENTITY_FILE}): created one"
    );
    Ok(id)
}

/// What the network asks of a mix node beside packets: nym-node's HTTP API and verloc.
struct NymServices {
    http: Option<NymHttpServer>,
    verloc: Option<VerlocResponder>,
    host: HostInfoHandle,
    ips: Vec<std::net::IpAddr>,
    hostname: Option<String>,
    noise: Option<[u8; 32]>,
}

impl NymServices {
    /// Starts the `[http]` and `[verloc]` listeners that are enabled, both signing with
    /// `identity`; `noise`: the node's Noise public key, if any.
    fn start(
        cfg: &Config,
        plane: &ControlPlane,
        identity: Arc<ed25519_dalek::SigningKey>,
        noise: Option<[u8; 32]>,
    ) -> anyhow::Result<NymServices> {
        let (primary, secondary) = plane.public_keys();
        let host = HostInfoHandle::new(HostInfo {
            ip_addresses: cfg.http.public_ips.clone(),
            hostname: cfg.http.hostname.clone(),
            primary,
            secondary,
            noise,
        });
        let http = if cfg.http.enabled {
            if cfg.http.public_ips.is_empty() {
                tracing::warn!("http.public_ips is empty: host-information announces no address");
            }
            let counters = plane.node().counters().to_vec();
            let api = NymApi {
                identity: identity.clone(),
                host: host.clone(),
                stats: Arc::new(move || mixplane_dataplane::counters::nym_packets_stats(&counters)),
            };
            let srv = NymHttpServer::start(cfg.http.listen, api, nym_http::DEFAULT_LIMITS)?;
            tracing::info!(addr = %srv.local_addr(), "nym-node HTTP API listening");
            Some(srv)
        } else {
            None
        };
        let verloc = if cfg.verloc.enabled {
            let r = VerlocResponder::start(cfg.verloc.listen, identity, VerlocLimits::default())?;
            tracing::info!(addr = %r.local_addr(), "verloc responder listening");
            Some(r)
        } else {
            None
        };
        Ok(NymServices {
            http,
            verloc,
            host,
            ips: cfg.http.public_ips.clone(),
            hostname: cfg.http.hostname.clone(),
            noise,
        })
    }

    /// Announces the live Sphinx keys again if they changed (a rotation).
    fn refresh(&self, plane: &ControlPlane) {
        let (primary, secondary) = plane.public_keys();
        let changed = self.host.set(HostInfo {
            ip_addresses: self.ips.clone(),
            hostname: self.hostname.clone(),
            primary,
            secondary,
            noise: self.noise,
        });
        if changed {
            tracing::info!(
                primary = primary.rotation_id,
                "host-information now announces the rotated keys"
            );
        }
    }

    fn stop(self) {
        if let Some(h) = self.http {
            h.stop();
        }
        if let Some(v) = self.verloc {
            v.stop();
        }
    }
}

/// Decides whether a parsed document replaces the current topology, and records what was
/// skipped or refused.
#[derive(Clone)]
struct TopologyGuard {
    min_fraction: f64,
    health: Arc<TopologyHealth>,
}

impl TopologyGuard {
    /// Publishes `parsed` unless it is empty or sharply shrunk, or unchanged and not
    /// `republish_unchanged`; `source` names the file or URL in logs. Returns whether a new
    /// version was published.
    fn offer(
        &self,
        plane: &ControlPlane,
        parsed: Parsed,
        source: &str,
        republish_unchanged: bool,
    ) -> bool {
        let Parsed {
            topology: t,
            skipped,
        } = parsed;
        self.health.record_skipped(skipped.len());
        for e in &skipped {
            tracing::warn!(source, error = %e, "topology node skipped");
        }
        let current = plane.topology().0;
        let verdict = topology::check_replacement(current.as_deref(), &t, self.min_fraction);
        self.health.record_replacement(&verdict);
        if let Err(e) = verdict {
            tracing::error!(source, error = %e, "topology refused; keeping the current one");
            return false;
        }
        if !republish_unchanged && current.is_some_and(|cur| *cur == t) {
            tracing::debug!(source, "topology unchanged");
            return false;
        }
        let nodes = t.nodes.len();
        let version = plane.set_topology(t);
        tracing::info!(
            source,
            nodes,
            version,
            skipped = skipped.len(),
            "topology updated"
        );
        true
    }
}

/// The `[topology] url` fetcher.
struct Fetcher {
    url: String,
    opts: FetchOptions,
    every: Duration,
    guard: TopologyGuard,
}

impl Fetcher {
    /// Fetches at start, every `every` and when `now` is set (SIGHUP), until `stop`. A failed
    /// fetch is logged and the current topology kept; an unchanged one is not republished.
    fn run(&self, plane: &ControlPlane, now: &AtomicBool, stop: &AtomicBool) {
        let mut last: Option<std::time::Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            let due = last.is_none_or(|t| t.elapsed() >= self.every);
            if now.swap(false, Ordering::SeqCst) || due {
                last = Some(std::time::Instant::now());
                match Topology::fetch(&self.url, &self.opts) {
                    Ok(p) => {
                        if self.guard.offer(plane, p, &self.url, false) {
                            tracing::info!(url = %self.url, "topology fetched");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "topology not fetched; keeping the current one")
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// With `[rotation] source = "nym-api"` (and scheduled rotation): the plane rotates on
/// nym-api's key-rotation-info, fetched now and every `rotation.refresh_secs` on a thread of its
/// own until `stop`; a failed fetch keeps the latest document. Otherwise nothing.
fn follow_nym_api(
    cfg: &Config,
    plane: &Arc<ControlPlane>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    if cfg.rotation.source != RotationSource::NymApi || !cfg.scheduled_rotation() {
        return Ok(None);
    }
    let url = cfg
        .rotation_api_url()
        .context("[rotation] source = \"nym-api\" without a nym-api URL")?;
    plane.follow_nym_api();
    let (plane, stop) = (plane.clone(), stop.clone());
    let (opts, every) = (
        cfg.rotation_fetch(),
        Duration::from_secs(cfg.rotation.refresh_secs),
    );
    let poll = move || {
        let mut last: Option<std::time::Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            if last.is_none_or(|t| t.elapsed() >= every) {
                last = Some(std::time::Instant::now());
                match plane.refresh_rotation(&url, &opts) {
                    Ok(i) => tracing::debug!(
                        epoch = i.current_epoch,
                        rotation = i.current_rotation(),
                        "key-rotation-info fetched"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "key-rotation-info not fetched; keeping the latest document"
                    ),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let h = std::thread::Builder::new()
        .name("mixplane-rotation".into())
        .spawn(poll)
        .context("starting the key-rotation-info poller")?;
    tracing::info!(nym_api = %cfg.rotation_api_url().unwrap_or_default(), "key rotation follows nym-api");
    Ok(Some(h))
}

/// The `[topology] file`, reloaded when its modification time changes or on SIGHUP.
struct TopologyFile {
    path: Option<PathBuf>,
    seen: Option<std::time::SystemTime>,
    guard: TopologyGuard,
}

impl TopologyFile {
    fn new(path: Option<PathBuf>, guard: TopologyGuard) -> Self {
        TopologyFile {
            path,
            seen: None,
            guard,
        }
    }

    /// Loads the file if `force` or it changed since the last load. A file that cannot be read
    /// or parsed, or that the guard refuses, is logged and the current topology kept.
    fn reload(&mut self, plane: &ControlPlane, force: bool) {
        let Some(path) = &self.path else { return };
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if !force && (mtime.is_none() || mtime == self.seen) {
            return;
        }
        self.seen = mtime;
        let loaded = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| Topology::parse_counted(&b).map_err(|e| e.to_string()));
        let source = path.display().to_string();
        match loaded {
            Ok(p) => {
                if self.guard.offer(plane, p, &source, true) {
                    tracing::info!(file = %source, "topology loaded");
                }
            }
            Err(e) => {
                tracing::error!(file = %source, error = %e, "topology not loaded; keeping the current one")
            }
        }
    }
}

fn init_dir(dir: &Path, rotation_id: Option<u32>) -> anyhow::Result<()> {
    // the key for the rotation Nym's default schedule says is current
    let rotation_id = rotation_id.unwrap_or_else(|| {
        let s = Config::default().schedule();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        s.rotation_of(s.epoch_at(now))
    });
    let cfg_path = dir.join("node.toml");
    anyhow::ensure!(!cfg_path.exists(), "{} already exists", cfg_path.display());
    let keys_dir = dir.join("keys");
    std::fs::create_dir_all(&keys_dir)
        .with_context(|| format!("creating {}", keys_dir.display()))?;
    std::fs::create_dir_all(dir.join("replay"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keys_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    std::fs::write(&cfg_path, EXAMPLE)?;
    let key = KeyMaterial::generate(rotation_id);
    keys::write_key(
        &keys_dir.join(keys::PRIMARY_FILE),
        key.secret(),
        rotation_id,
    )?;
    println!("wrote {}", cfg_path.display());
    println!(
        "wrote {} (rotation {rotation_id})",
        keys_dir.join(keys::PRIMARY_FILE).display()
    );
    println!("sphinx public key: {}", key.public_base58());
    let noise = keys::NoiseKey::generate();
    keys::write_noise_key(&keys_dir, &noise)?;
    println!(
        "wrote {} and {}",
        keys_dir.join(keys::NOISE_FILE).display(),
        keys_dir.join(keys::NOISE_PUBLIC_FILE).display()
    );
    println!("noise public key:  {}", noise.public_base58());
    let id = Identity::generate();
    identity::write_identity(&keys_dir, &id)?;
    println!(
        "wrote {} and {}",
        keys_dir.join(IDENTITY_FILE).display(),
        keys_dir.join(identity::IDENTITY_PUBLIC_FILE).display()
    );
    println!("identity key:      {}", id.public_base58());
    let token_path = dir.join("admin.token");
    let token: String = random_token();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_path)
            .with_context(|| format!("creating {}", token_path.display()))?;
        writeln!(f, "{token}")?;
    }
    println!(
        "wrote {} (bearer token for POST /keys/rotate and /topology)",
        token_path.display()
    );
    Ok(())
}

/// A random admin token: 32 bytes as hex.
fn random_token() -> String {
    let k = KeyMaterial::generate(0);
    k.secret().iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, keys } => return run_node(&config, &keys),
        Command::Init { dir, rotation_id } => {
            init_dir(&dir, rotation_id)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keys { config, keys } => {
            let cfg = Config::load(&config)?;
            let store = key_store(&cfg, &config_base(&config), &keys)?;
            let dir = store.load_key_dir()?;
            let stored = &dir.sphinx;
            println!(
                "primary   rotation {:>6}  {}",
                stored.primary.rotation_id(),
                stored.primary.public_base58()
            );
            if let Some(s) = &stored.secondary {
                println!(
                    "secondary rotation {:>6}  {}",
                    s.rotation_id(),
                    s.public_base58()
                );
            }
            match &dir.noise {
                Some(n) => println!("noise                     {}", n.public_base58()),
                None => println!(
                    "noise                     (none: {} is missing)",
                    keys::NOISE_FILE
                ),
            }
            match store.load_identity()? {
                Some(id) => println!("identity                  {}", id.public_base58()),
                None => println!("identity                  (none: {IDENTITY_FILE} is missing)"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::CheckHost {
            cores,
            seconds,
            threshold_us,
            window_ms,
        } => {
            let allowed = hostcheck::allowed_cores();
            let cores = if cores.is_empty() {
                allowed.clone()
            } else {
                cores
            };
            if let Some(c) = cores.iter().find(|c| !allowed.contains(c)) {
                anyhow::bail!(
                    "core {c} is not one this process may run on (it may use {allowed:?})"
                );
            }
            println!(
                "check-host: {seconds} s per core, gaps = units of work over {threshold_us} µs, speed per {window_ms} ms window"
            );
            let reports = hostcheck::check(
                &cores,
                seconds,
                threshold_us.saturating_mul(1000),
                window_ms.saturating_mul(1_000_000),
            )?;
            for r in &reports {
                print!("{r}");
            }
            let worst = reports.iter().map(|r| r.beyond_2ms()).fold(0.0, f64::max);
            println!(
                "worst core: {worst:.3} % of the time more than 2 ms into a gap; a release-error p99 <= 2 ms needs this well under 1 % on the worker cores"
            );
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    init_logging(&cli.log)?;
    match cli.command {
        Command::Run { .. }
        | Command::Init { .. }
        | Command::Keys { .. }
        | Command::CheckHost { .. } => {
            unreachable!("handled above")
        }
        Command::Demo {
            packets,
            size,
            mean_delay_ms,
            workers,
            rate,
            io,
            seed,
            transport,
            cover,
        } => {
            let cfg = DemoConfig {
                packets,
                size,
                mean_delay_ms,
                workers,
                rate,
                io,
                seed,
                transport,
                cover,
            };
            println!(
                "mixplane demo: 3 mix layers + exit node on loopback, {} {} packets, mean delay {} ms/hop, {} worker(s) per node",
                cfg.packets,
                cfg.size.name(),
                cfg.mean_delay_ms,
                cfg.workers
            );
            let r = demo::run(&cfg)?;
            println!("io backend:        {}", r.io_backend);
            if cfg.transport == DemoTransport::Udp {
                println!("transport:         udp");
            } else {
                println!(
                    "transport:         {} ({} frames received over TCP, {} Noise handshakes)",
                    cfg.transport.name(),
                    r.tcp_frames_in,
                    r.noise_handshakes
                );
            }
            println!("sent:              {}", r.sent);
            println!("delivered:         {} messages", r.delivered);
            println!("SURB-ACKs back:    {}", r.acks);
            if r.drops.is_empty() {
                println!("dropped:           0");
            } else {
                for (reason, n) in &r.drops {
                    println!("dropped:           {n} ({reason})");
                }
            }
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            println!(
                "throughput:        {:.0} messages/s over {:.2} s",
                r.delivered as f64 / secs,
                secs
            );
            let [p50, p90, p99, max] = r.latency_us;
            println!(
                "end-to-end latency: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (4 hops)",
                p50 as f64 / 1e3,
                p90 as f64 / 1e3,
                p99 as f64 / 1e3,
                max as f64 / 1e3
            );
            println!(
                "worst wheel release lateness: {:.2} ms",
                r.max_release_lateness_us as f64 / 1e3
            );
            for line in r.cover_lines() {
                println!("{line}");
            }
            if r.all_arrived() {
                println!("OK: every message and every SURB-ACK arrived");
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "FAIL: {} messages and {} acks missing",
                    r.sent - r.delivered,
                    r.sent - r.acks
                );
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
