//! A running mix node: N pinned workers sharing a listen address, one snapshot of keys and
//! replay filters that the control plane can swap, and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::counters::WorkerCounters;
use crate::cover::{Cover, CoverConfig};
use crate::egress::{EgressFilter, EgressPolicy};
use crate::io::tcp::{ConnLimits, PeerBook, TcpCounters, TcpIo, TcpSettings};
use crate::io::{self, IoBackendKind, UdpIo};
use crate::replay::{ReplayFilter, ReplayParams};
use crate::sink::SinkAddr;
use crate::snapshot::{ReplaySet, Snapshot};
use crate::sphinx::{DEFAULT_MAX_DELAY_NS, NodeKeys, OverCap};
use crate::worker::{RunState, SharedRunState, Transports, Worker, WorkerSettings};

/// The delay wheel's default tick, 250 µs: a packet leaves at most one tick after its deadline
/// (plus the batch in progress). A shorter tick costs nothing at full load (the worker releases
/// once per batch either way) and at most one more wake-up and send call per tick at low load
/// (measured against 1 ms in `bench/RESULTS.md`, "Wheel tick").
pub const DEFAULT_WHEEL_TICK_NS: u64 = 250_000;

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Listen address shared by all workers.
    pub listen: SocketAddr,
    /// Number of worker threads.
    pub workers: usize,
    /// Pin worker `i` to `cores[i % cores.len()]`; empty: pin to cores 0..n in order; `None`: no pinning.
    pub pin_cores: Option<Vec<usize>>,
    /// I/O backend.
    pub io: IoBackendKind,
    /// Most datagrams per receive batch.
    pub batch: usize,
    /// Most time one batch's processing may take (ns; 0: no cap): a worker takes fewer
    /// datagrams per receive when packets cost more, so held packets are not late by more.
    pub batch_budget_ns: u64,
    /// Cap on one hop's delay (ns); `over_cap` says what happens to longer ones.
    pub max_delay_ns: u64,
    /// Delays over the cap: cut to the cap and counted (default, as Nym does) or dropped.
    pub over_cap: OverCap,
    /// Which next hops packets may go to. The default allows loopback next hops (nodes of
    /// tests, benchmarks and the demo share 127.0.0.1); a node on the Internet wants
    /// [`EgressPolicy::STRICT`], which the config file's defaults give.
    pub egress: EgressPolicy,
    /// Delay wheel tick (ns; default [`DEFAULT_WHEEL_TICK_NS`]).
    pub wheel_tick_ns: u64,
    /// Packets one worker may hold.
    pub wheel_capacity: usize,
    /// Small (ack/regular) slab slots per worker.
    pub slab_small: usize,
    /// Large (extended) slab slots per worker.
    pub slab_large: usize,
    /// Replay filter sizing: expected packets per key lifetime.
    pub replay_expected: u64,
    /// Replay filter false-positive rate.
    pub replay_fp_rate: f64,
    /// Key lifetime the replay filters are grown for (later segments cover what remains).
    pub replay_key_lifetime: std::time::Duration,
    /// Directory where replay filters are persisted (None: not persisted).
    pub replay_dir: Option<PathBuf>,
    /// Tags each persisted filter's journal holds.
    pub replay_journal_entries: u64,
    /// Where final-hop messages go.
    pub sink: Option<SinkAddr>,
    /// Receive and send UDP datagrams at `listen` (mixplane peers).
    pub udp: bool,
    /// Nym's TCP transport (`None`: off). Its `listen` with port 0 on the UDP listen IP means
    /// the port UDP got; `None` there: egress only.
    pub tcp: Option<TcpSettings>,
    /// Each next hop's transport and Noise key, until the control plane publishes a new book.
    pub peers: PeerBook,
    /// Loop cover traffic (`None`: off); loops need routes ([`Cover::set_routes`]).
    pub cover: Option<CoverConfig>,
    /// Test-only fault switch: drop this many of every 1000 forward hops (after processing,
    /// not counted anywhere), to play a lossy node. Not in the config file.
    #[doc(hidden)]
    pub fault_drop_per_mille: u16,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 1,
            pin_cores: None,
            io: IoBackendKind::Auto,
            batch: 64,
            batch_budget_ns: 1_000_000,
            max_delay_ns: DEFAULT_MAX_DELAY_NS,
            over_cap: OverCap::Clamp,
            egress: EgressPolicy::LOOPBACK,
            wheel_tick_ns: DEFAULT_WHEEL_TICK_NS,
            wheel_capacity: 1 << 16,
            slab_small: 1 << 16,
            slab_large: 256,
            replay_expected: 1_000_000,
            replay_fp_rate: 1e-5,
            replay_key_lifetime: std::time::Duration::from_secs(25 * 3600),
            replay_dir: None,
            replay_journal_entries: crate::replay::DEFAULT_JOURNAL_ENTRIES,
            sink: None,
            udp: true,
            tcp: None,
            peers: PeerBook::default(),
            cover: None,
            fault_drop_per_mille: 0,
        }
    }
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A socket or ring could not be set up.
    #[error("cannot open {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A replay filter could not be made or loaded.
    #[error("replay filter: {0}")]
    Replay(String),
}

/// A running node.
pub struct Node {
    local_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    peers: Arc<ArcSwap<PeerBook>>,
    tcp_counters: Vec<Arc<TcpCounters>>,
    state: Arc<SharedRunState>,
    shared: Arc<ArcSwap<Snapshot>>,
    counters: Vec<Arc<WorkerCounters>>,
    cover: Option<Cover>,
    threads: Vec<JoinHandle<()>>,
    io_name: &'static str,
    config: NodeConfig,
    /// The cores the workers were pinned to.
    worker_cores: Vec<usize>,
}

fn replay_path(dir: &std::path::Path, rotation_id: u32) -> PathBuf {
    dir.join(format!("replay-{rotation_id}.bloom"))
}

/// Makes (or, when persisted, maps back) the replay filter for a key: file-backed in
/// `replay_dir`, so a crash loses no recorded tag.
pub fn replay_filter_for(
    config: &NodeConfig,
    rotation_id: u32,
) -> Result<Arc<ReplayFilter>, NodeError> {
    let params = ReplayParams {
        initial_items: config.replay_expected,
        false_positive_rate: config.replay_fp_rate,
        key_lifetime: config.replay_key_lifetime,
        journal_entries: config.replay_journal_entries,
        ..ReplayParams::default()
    };
    let filter = match &config.replay_dir {
        Some(dir) => {
            let p = replay_path(dir, rotation_id);
            std::fs::create_dir_all(dir)
                .map_err(|e| NodeError::Replay(format!("{}: {e}", dir.display())))?;
            ReplayFilter::open(&p, u64::from(rotation_id), &params).map_err(|e| {
                NodeError::Replay(format!(
                    "{e} (move {} away to start with an empty filter)",
                    p.display()
                ))
            })?
        }
        None => ReplayFilter::in_memory(&params).map_err(|e| NodeError::Replay(e.to_string()))?,
    };
    Ok(Arc::new(filter))
}

impl Node {
    /// Starts the workers: each binds the UDP listen address and, with TCP on, its own TCP
    /// listener on the TCP address (`SO_REUSEPORT`).
    pub fn start(config: NodeConfig, keys: Arc<NodeKeys>) -> Result<Node, NodeError> {
        if config.workers == 0 {
            return Err(NodeError::Config("workers must be at least 1".into()));
        }
        if !config.udp && config.tcp.is_none() {
            return Err(NodeError::Config("neither UDP nor TCP is on".into()));
        }
        let peers = Arc::new(ArcSwap::from_pointee(config.peers.clone()));
        let limits = config
            .tcp
            .as_ref()
            .map(|t| Arc::new(ConnLimits::new(t.max_connections, t.max_connections_per_ip)));
        let mut listen = config.listen;
        let mut tcp_listen = config.tcp.as_ref().and_then(|t| t.listen);
        let mut ios = Vec::with_capacity(config.workers);
        let mut tcp_counters = Vec::new();
        for _ in 0..config.workers {
            let udp = if config.udp {
                let (udp, local) =
                    io::open(config.io, listen, config.batch).map_err(|source| NodeError::Io {
                        addr: listen,
                        source,
                    })?;
                // later workers bind the port the first one got
                listen = local;
                if let Some(t) = tcp_listen.as_mut()
                    && t.port() == 0
                    && t.ip() == local.ip()
                {
                    t.set_port(local.port());
                }
                Some(udp)
            } else {
                None
            };
            let tcp = match (&config.tcp, &limits) {
                (Some(settings), Some(limits)) => {
                    let counters = Arc::new(TcpCounters::default());
                    tcp_counters.push(counters.clone());
                    let settings = TcpSettings {
                        listen: tcp_listen,
                        batch: config.batch,
                        ..settings.clone()
                    };
                    let addr = tcp_listen.unwrap_or(listen);
                    let fd = udp.as_ref().and_then(|u| u.readiness_fd());
                    let t = TcpIo::new(settings, limits.clone(), peers.clone(), counters, fd)
                        .map_err(|source| NodeError::Io { addr, source })?;
                    tcp_listen = t.local_addr();
                    Some(t)
                }
                _ => None,
            };
            ios.push(Transports { udp, tcp });
        }
        if !config.udp {
            listen = tcp_listen.unwrap_or(listen);
        }
        Self::start_workers(config, keys, ios, listen, peers, tcp_counters)
    }

    /// Starts one worker per I/O backend given (`config.io`, `listen` and `workers` are not
    /// used): for benchmarks and tests of the worker loop over in-memory I/O
    /// ([`crate::io::memory`]). `local_addr` is what [`Node::local_addr`] reports.
    pub fn start_with_io(
        config: NodeConfig,
        keys: Arc<NodeKeys>,
        ios: Vec<Box<dyn UdpIo>>,
        local_addr: SocketAddr,
    ) -> Result<Node, NodeError> {
        let peers = Arc::new(ArcSwap::from_pointee(config.peers.clone()));
        let ios = ios
            .into_iter()
            .map(|udp| Transports {
                udp: Some(udp),
                tcp: None,
            })
            .collect();
        Self::start_workers(config, keys, ios, local_addr, peers, Vec::new())
    }

    fn start_workers(
        config: NodeConfig,
        keys: Arc<NodeKeys>,
        ios: Vec<Transports>,
        local_addr: SocketAddr,
        peers: Arc<ArcSwap<PeerBook>>,
        tcp_counters: Vec<Arc<TcpCounters>>,
    ) -> Result<Node, NodeError> {
        let tcp_addr = ios
            .first()
            .and_then(|t| t.tcp.as_ref())
            .and_then(|t| t.local_addr());
        if ios.is_empty() {
            return Err(NodeError::Config("workers must be at least 1".into()));
        }
        let mut filters = vec![(
            keys.primary.rotation_id(),
            replay_filter_for(&config, keys.primary.rotation_id())?,
        )];
        if let Some(k) = &keys.secondary {
            filters.push((
                k.rotation_id(),
                replay_filter_for(&config, k.rotation_id())?,
            ));
        }
        let shared = Arc::new(ArcSwap::from_pointee(Snapshot {
            keys,
            replay: ReplaySet::new(filters),
            next_hops: None,
        }));
        let own: Vec<SocketAddr> = std::iter::once(local_addr).chain(tcp_addr).collect();
        let egress = Arc::new(EgressFilter::new(config.egress, &own));
        let state = Arc::new(SharedRunState::new(RunState::Running));
        let epoch = Instant::now();
        let workers = ios.len();
        let (cover, mut cover_ends) = match &config.cover {
            Some(c) => {
                let (cover, ends) = Cover::start(c.clone(), workers, epoch, shared.clone())
                    .map_err(|source| NodeError::Io {
                        addr: local_addr,
                        source,
                    })?;
                (Some(cover), ends.into_iter().map(Some).collect())
            }
            None => (None, Vec::new()),
        };
        cover_ends.resize_with(workers, || None);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let listen = local_addr;
        let mut threads = Vec::new();
        let mut counters = Vec::new();
        let mut io_name = "";
        let mut worker_cores = Vec::new();
        for ((id, io), cover) in ios.into_iter().enumerate().zip(cover_ends) {
            io_name = io.udp.as_ref().map_or("tcp", |u| u.name());
            let c = Arc::new(WorkerCounters::default());
            counters.push(c.clone());
            let core = match &config.pin_cores {
                None => None,
                Some(list) if list.is_empty() => cores.get(id % cores.len().max(1)).copied(),
                // the core named, whatever the calling thread's own set is (a caller pinned
                // elsewhere, e.g. a benchmark's harness, must not pull the workers onto its
                // core); a core the process may not use fails the pinning, with a warning
                Some(list) => Some(core_affinity::CoreId {
                    id: list[id % list.len()],
                }),
            };
            worker_cores.extend(core.map(|c| c.id));
            let worker = Worker {
                id,
                io,
                peers: peers.clone(),
                shared: shared.clone(),
                state: state.clone(),
                counters: c,
                epoch,
                cover,
                settings: WorkerSettings {
                    batch: config.batch,
                    batch_budget_ns: config.batch_budget_ns,
                    max_delay_ns: config.max_delay_ns,
                    over_cap: config.over_cap,
                    egress: egress.clone(),
                    wheel_tick_ns: config.wheel_tick_ns,
                    wheel_capacity: config.wheel_capacity,
                    slab_small: config.slab_small,
                    slab_large: config.slab_large,
                    sink: config.sink.clone(),
                    fault_drop_per_mille: config.fault_drop_per_mille,
                },
            };
            let t = std::thread::Builder::new()
                .name(format!("mixplane-w{id}"))
                .spawn(move || {
                    if let Some(core) = core
                        && !core_affinity::set_for_current(core)
                    {
                        tracing::warn!(worker = id, core = core.id, "could not pin worker");
                    }
                    worker.run()
                })
                .map_err(|e| NodeError::Io {
                    addr: listen,
                    source: e,
                })?;
            threads.push(t);
        }
        tracing::info!(addr = %listen, workers, io = io_name, "node started");
        Ok(Node {
            local_addr: listen,
            tcp_addr,
            peers,
            tcp_counters,
            state,
            shared,
            counters,
            cover,
            threads,
            io_name,
            config,
            worker_cores,
        })
    }

    /// Moves the calling thread (and so every thread it spawns later) onto the cores this
    /// process may use that no worker was pinned to, so that a control plane started after the
    /// node never takes a worker's core from it. Returns those cores; empty (nothing changed)
    /// when the workers are not pinned or have every core.
    pub fn keep_off_worker_cores(&self) -> std::io::Result<Vec<usize>> {
        if self.worker_cores.is_empty() {
            return Ok(Vec::new());
        }
        crate::affinity::move_off(&self.worker_cores)
    }

    /// The address the workers listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the TCP listeners share, when TCP ingress is on.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Per-worker TCP counters (empty when TCP is off).
    pub fn tcp_counters(&self) -> &[Arc<TcpCounters>] {
        &self.tcp_counters
    }

    /// Replaces the next hops' transports and Noise keys; workers use it from their next batch,
    /// new TCP connections from their next connect.
    pub fn set_peers(&self, peers: PeerBook) {
        self.peers.store(Arc::new(peers));
    }

    /// The next hops' transports and Noise keys in force.
    pub fn peers(&self) -> Arc<PeerBook> {
        self.peers.load_full()
    }

    /// The I/O backend in use.
    pub fn io_backend(&self) -> &'static str {
        self.io_name
    }

    /// The node's cover traffic, when on.
    pub fn cover(&self) -> Option<&Cover> {
        self.cover.as_ref()
    }

    /// Per-worker counters.
    pub fn counters(&self) -> &[Arc<WorkerCounters>] {
        &self.counters
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.load_full()
    }

    /// Publishes new keys and filters; workers pick them up before their next batch.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        self.shared.store(Arc::new(snapshot));
    }

    /// Stops receiving; workers release what they hold at its deadlines, then exit.
    pub fn begin_shutdown(&self) {
        // from Running only: an abort stays an abort
        self.state.transition(RunState::Running, RunState::Draining);
    }

    /// Makes workers exit at once.
    pub fn abort(&self) {
        self.state.store(RunState::Abort);
    }

    /// Whether every worker has exited.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops the cover thread, waits for the workers and persists the replay filters.
    pub fn join(mut self) -> Result<(), NodeError> {
        if let Some(c) = &mut self.cover {
            c.stop();
        }
        for t in self.threads {
            let _ = t.join();
        }
        if let Some(dir) = &self.config.replay_dir {
            persist(dir, &self.shared.load().replay)?;
        }
        Ok(())
    }

    /// Graceful stop: [`Self::begin_shutdown`] then [`Self::join`].
    pub fn shutdown(self) -> Result<(), NodeError> {
        self.begin_shutdown();
        self.join()
    }
}

/// Syncs every file-backed filter of `set` to disk (`dir` is where they live).
pub fn persist(dir: &std::path::Path, set: &ReplaySet) -> Result<(), NodeError> {
    for (_, f) in set.iter() {
        f.sync()
            .map_err(|e| NodeError::Replay(format!("{}: {e}", dir.display())))?;
    }
    Ok(())
}
