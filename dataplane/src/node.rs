//! A running mix node: N pinned workers sharing a listen address, one snapshot of keys and
//! replay filters that the control plane can swap, and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::counters::WorkerCounters;
use crate::io::{self, IoBackendKind, UdpIo};
use crate::replay::{ReplayFilter, ReplayParams};
use crate::sink::SinkAddr;
use crate::snapshot::{ReplaySet, Snapshot};
use crate::sphinx::{DEFAULT_MAX_DELAY_NS, NodeKeys};
use crate::worker::{RunState, SharedRunState, Worker, WorkerSettings};

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
    /// Cap on one hop's delay (ns); longer ones are dropped.
    pub max_delay_ns: u64,
    /// Delay wheel tick (ns).
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
    /// Where final-hop messages go.
    pub sink: Option<SinkAddr>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 1,
            pin_cores: None,
            io: IoBackendKind::Auto,
            batch: 64,
            max_delay_ns: DEFAULT_MAX_DELAY_NS,
            wheel_tick_ns: 1_000_000,
            wheel_capacity: 1 << 16,
            slab_small: 1 << 16,
            slab_large: 256,
            replay_expected: 1_000_000,
            replay_fp_rate: 1e-5,
            replay_key_lifetime: std::time::Duration::from_secs(25 * 3600),
            replay_dir: None,
            sink: None,
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
    state: Arc<SharedRunState>,
    shared: Arc<ArcSwap<Snapshot>>,
    counters: Vec<Arc<WorkerCounters>>,
    threads: Vec<JoinHandle<()>>,
    io_name: &'static str,
    config: NodeConfig,
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
    /// Starts the workers.
    pub fn start(config: NodeConfig, keys: Arc<NodeKeys>) -> Result<Node, NodeError> {
        if config.workers == 0 {
            return Err(NodeError::Config("workers must be at least 1".into()));
        }
        let mut listen = config.listen;
        let mut ios = Vec::with_capacity(config.workers);
        for _ in 0..config.workers {
            let (udp, local) =
                io::open(config.io, listen, config.batch).map_err(|source| NodeError::Io {
                    addr: listen,
                    source,
                })?;
            // later workers bind the port the first one got
            listen = local;
            ios.push(udp);
        }
        Self::start_with_io(config, keys, ios, listen)
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
        let state = Arc::new(SharedRunState::new(RunState::Running));
        let epoch = Instant::now();
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let listen = local_addr;
        let mut threads = Vec::new();
        let mut counters = Vec::new();
        let mut io_name = "";
        let workers = ios.len();
        for (id, udp) in ios.into_iter().enumerate() {
            io_name = udp.name();
            let c = Arc::new(WorkerCounters::default());
            counters.push(c.clone());
            let core = match &config.pin_cores {
                None => None,
                Some(list) if list.is_empty() => cores.get(id % cores.len().max(1)).copied(),
                Some(list) => {
                    let want = list[id % list.len()];
                    cores.iter().find(|c| c.id == want).copied()
                }
            };
            let worker = Worker {
                id,
                io: udp,
                shared: shared.clone(),
                state: state.clone(),
                counters: c,
                epoch,
                settings: WorkerSettings {
                    batch: config.batch,
                    max_delay_ns: config.max_delay_ns,
                    wheel_tick_ns: config.wheel_tick_ns,
                    wheel_capacity: config.wheel_capacity,
                    slab_small: config.slab_small,
                    slab_large: config.slab_large,
                    sink: config.sink.clone(),
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
            state,
            shared,
            counters,
            threads,
            io_name,
            config,
        })
    }

    /// The address the workers listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The I/O backend in use.
    pub fn io_backend(&self) -> &'static str {
        self.io_name
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

    /// Waits for the workers and persists the replay filters.
    pub fn join(self) -> Result<(), NodeError> {
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
