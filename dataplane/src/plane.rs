//! The control plane as the running node sees it: carries out key rotation on the key files,
//! publishes each new set of keys (with one replay filter per key) to the workers, and answers
//! the admin API (metrics, status, rotation). It runs beside the workers, never on their path:
//! workers only load the published snapshot between batches.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mixplane_control::admin::AdminHandler;
use mixplane_control::keys::{KeyLayout, KeyMaterial, KeyStore, StoredKeys};
use mixplane_control::metrics::PromText;
use mixplane_control::nym_http::SphinxPublicKey;
use mixplane_control::rotation::nym_api::{KeyRotationInfo, RotationInfoError};
use mixplane_control::rotation::{self, Live, Schedule, Step};
use mixplane_control::topology::{FetchOptions, Role, Topology};

use crate::counters::{NodeDrop, WorkerCounters, WorkerPhase};
use crate::cover::CoverRoutes;
use crate::histogram::AtomicHistogram;
use crate::io::tcp::{PeerBook, TcpCounters, TcpDrop};
use crate::node::{Node, NodeConfig, replay_filter_for};
use crate::snapshot::{ReplaySet, Snapshot};
use crate::sphinx::{DropReason, Hop, NodeKeys, SphinxKey};

/// Key rotation and the admin API around a running node.
pub struct ControlPlane {
    node: Node,
    config: NodeConfig,
    key_store: KeyStore,
    driver: Mutex<Driver>,
    keys: Mutex<StoredKeys>,
    topology: Mutex<TopologyState>,
    /// Held around every read-modify-publish of the node's snapshot ([`Self::publish_with`]):
    /// without it a topology refresh that read the snapshot before a key rotation published
    /// could publish after it and put the removed keys back.
    publisher: Mutex<()>,
    started: Instant,
}

/// What decides the rotation steps.
#[derive(Debug, Clone, Copy)]
enum Driver {
    /// Only [`ControlPlane::rotate_now`].
    Manual,
    /// The config's schedule.
    Local(Schedule),
    /// nym-api's key-rotation-info: the latest document, none before the first fetch.
    NymApi(Option<KeyRotationInfo>),
}

/// The topology the node knows, and whether it filters next hops by it.
#[derive(Default)]
struct TopologyState {
    current: Option<Arc<Topology>>,
    version: u64,
    filter: bool,
}

fn live_of(k: &StoredKeys) -> Live {
    Live {
        primary: k.primary.rotation_id(),
        secondary: k.secondary.as_ref().map(|s| s.rotation_id()),
    }
}

fn to_sphinx(k: &KeyMaterial) -> SphinxKey {
    SphinxKey::from_secret(*k.secret(), k.rotation_id())
}

impl ControlPlane {
    /// Wraps a started node whose keys came from `keys_dir`. `schedule`: rotate on it (None:
    /// only [`Self::rotate_now`]); [`Self::follow_nym_api`] replaces it with nym-api's.
    pub fn new(
        node: Node,
        config: NodeConfig,
        keys_dir: PathBuf,
        stored: StoredKeys,
        schedule: Option<Schedule>,
    ) -> ControlPlane {
        ControlPlane {
            node,
            config,
            key_store: KeyStore::new(keys_dir, KeyLayout::Mixplane),
            driver: Mutex::new(schedule.map_or(Driver::Manual, Driver::Local)),
            keys: Mutex::new(stored),
            topology: Mutex::new(TopologyState::default()),
            publisher: Mutex::new(()),
            started: Instant::now(),
        }
    }

    /// Writes rotated keys through `store` (its directory, file names and passphrase: e.g. a
    /// nym-node data directory) instead of the mixplane key directory given to [`Self::new`].
    pub fn with_key_store(mut self, store: KeyStore) -> ControlPlane {
        self.key_store = store;
        self
    }

    /// Turns the routing filter on or off: with it on, forward hops and SURB-ACKs go only to
    /// nodes of the topology (none loaded yet: nothing is filtered).
    pub fn set_routing_filter(&self, on: bool) {
        let mut t = self.topology.lock().unwrap_or_else(|e| e.into_inner());
        t.filter = on;
        self.republish(&t);
    }

    /// Replaces the topology; returns its version (1 for the first).
    pub fn set_topology(&self, topology: Topology) -> u64 {
        let mut t = self.topology.lock().unwrap_or_else(|e| e.into_inner());
        let book = PeerBook::from_topology(&topology, self.node.peers().unknown());
        self.node.set_peers(book);
        if let Some(cover) = self.node.cover() {
            match cover_routes(&topology, &self.node.snapshot().keys) {
                Some(r) => cover.set_routes(r),
                None => tracing::warn!(
                    "this node's Sphinx key is not in the topology: no cover loops until it is"
                ),
            }
        }
        t.current = Some(Arc::new(topology));
        t.version += 1;
        self.republish(&t);
        tracing::info!(
            version = t.version,
            nodes = t.current.as_ref().map_or(0, |c| c.nodes.len()),
            "topology updated"
        );
        t.version
    }

    /// The current topology and its version.
    pub fn topology(&self) -> (Option<Arc<Topology>>, u64) {
        let t = self.topology.lock().unwrap_or_else(|e| e.into_inner());
        (t.current.clone(), t.version)
    }

    fn next_hops(
        t: &TopologyState,
    ) -> Option<Arc<std::collections::HashSet<std::net::SocketAddr>>> {
        match (&t.current, t.filter) {
            (Some(c), true) => Some(Arc::new(c.addresses())),
            _ => None,
        }
    }

    /// Publishes the current keys and filters with a new routing filter.
    fn republish(&self, t: &TopologyState) {
        let next_hops = Self::next_hops(t);
        let _: Result<(), ()> = self.publish_with(|old| {
            Ok(Snapshot {
                keys: old.keys.clone(),
                replay: old.replay.clone(),
                next_hops,
            })
        });
    }

    /// The one way a new snapshot is published: `make` builds it from the one in force, and
    /// no other publish can come between that read and the store. `make` may fail, and then
    /// nothing is published. Callers may hold the keys or topology lock; nothing holding this
    /// lock takes those.
    fn publish_with<E>(
        &self,
        make: impl FnOnce(&Snapshot) -> Result<Snapshot, E>,
    ) -> Result<(), E> {
        let _one = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.node.snapshot();
        let new = make(&old)?;
        self.node.publish(new);
        Ok(())
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Gives the node back (to shut it down).
    pub fn into_node(self) -> Node {
        self.node
    }

    /// The live keys' rotation ids.
    pub fn live(&self) -> Live {
        live_of(&self.lock_keys())
    }

    /// The live Sphinx public keys with their rotation ids: the primary and the secondary.
    pub fn public_keys(&self) -> (SphinxPublicKey, Option<SphinxPublicKey>) {
        let k = self.lock_keys();
        let public = |m: &KeyMaterial| SphinxPublicKey {
            rotation_id: m.rotation_id(),
            public_key: m.public(),
        };
        (public(&k.primary), k.secondary.as_ref().map(public))
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, StoredKeys> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rotates on nym-api's schedule from now on: no step until the first document
    /// ([`Self::set_rotation_info`], [`Self::refresh_rotation`]).
    pub fn follow_nym_api(&self) {
        *self.lock_driver() = Driver::NymApi(None);
    }

    /// Rotates on the schedule of `info`, nym-api's latest key-rotation-info.
    pub fn set_rotation_info(&self, info: KeyRotationInfo) {
        *self.lock_driver() = Driver::NymApi(Some(info));
    }

    /// Fetches key-rotation-info from nym-api at `base_url` and rotates on it; on an error
    /// the previous document (if any) stays in force.
    pub fn refresh_rotation(
        &self,
        base_url: &str,
        opts: &FetchOptions,
    ) -> Result<KeyRotationInfo, RotationInfoError> {
        let info = KeyRotationInfo::fetch(base_url, opts)?;
        self.set_rotation_info(info);
        Ok(info)
    }

    fn lock_driver(&self) -> std::sync::MutexGuard<'_, Driver> {
        self.driver.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the step the schedule (local or nym-api's) asks for at unix time `now`
    /// (seconds), if any.
    pub fn tick(&self, now_unix: u64) -> Result<Step, String> {
        let want = match *self.lock_driver() {
            Driver::Manual | Driver::NymApi(None) => return Ok(Step::Nothing),
            Driver::Local(s) => rotation::desired(&s, s.epoch_at(now_unix)),
            Driver::NymApi(Some(info)) => info.desired_at(now_unix),
        };
        let mut k = self.lock_keys();
        let step = rotation::plan(live_of(&k), want);
        if step != Step::Nothing {
            self.apply(&mut k, step)?;
        }
        Ok(step)
    }

    /// A manual rotation (only when no schedule drives rotation): a fresh key becomes primary; the old primary stays as secondary (so
    /// packets already built for it are still served) and the old secondary, if any, goes.
    pub fn rotate_now(&self) -> Result<Live, String> {
        if !matches!(*self.lock_driver(), Driver::Manual) {
            return Err("keys rotate on the schedule (keys.rotation = \"schedule\"); set keys.rotation = \"manual\" to rotate through the admin API".into());
        }
        let mut k = self.lock_keys();
        let next = live_of(&k)
            .secondary
            .map_or(k.primary.rotation_id(), |s| s.max(k.primary.rotation_id()))
            + 1;
        let old = k.primary.clone();
        let new = StoredKeys {
            primary: KeyMaterial::generate(next),
            secondary: Some(old),
        };
        self.install(&mut k, new)?;
        Ok(live_of(&k))
    }

    fn apply(&self, k: &mut StoredKeys, step: Step) -> Result<(), String> {
        let new = match step {
            Step::Nothing => return Ok(()),
            Step::PreAnnounce(n) => StoredKeys {
                primary: k.primary.clone(),
                secondary: Some(KeyMaterial::generate(n)),
            },
            Step::Swap => StoredKeys {
                primary: k.secondary.clone().ok_or("swap without a secondary key")?,
                secondary: Some(k.primary.clone()),
            },
            Step::Purge => StoredKeys {
                primary: k.primary.clone(),
                secondary: None,
            },
            Step::Reset(l) => {
                tracing::warn!(
                    ?l,
                    "keys on disk are not next to the schedule's: installing fresh keys"
                );
                StoredKeys {
                    primary: KeyMaterial::generate(l.primary),
                    secondary: l.secondary.map(KeyMaterial::generate),
                }
            }
        };
        tracing::info!(?step, primary = new.primary.rotation_id(), secondary = ?new.secondary.as_ref().map(|s| s.rotation_id()), "key rotation");
        self.install(k, new)
    }

    /// Writes `new` to the key directory (durably, in an order a crash cannot spoil:
    /// [`KeyStore::install_keys`]) and publishes it (with filters) to the workers.
    fn install(&self, k: &mut StoredKeys, new: StoredKeys) -> Result<(), String> {
        self.key_store
            .install_keys(k, &new)
            .map_err(|e| e.to_string())?;
        // filters: keep the running one of a key that stays, make one for a new key
        let mut replaced = ReplaySet::default();
        self.publish_with(|old| {
            let mut filters = Vec::new();
            for m in std::iter::once(&new.primary).chain(new.secondary.as_ref()) {
                let id = m.rotation_id();
                let f = match old.replay.get(id) {
                    Some(f) => f.clone(),
                    None => replay_filter_for(&self.config, id).map_err(|e| e.to_string())?,
                };
                filters.push((id, f));
            }
            replaced = old.replay.clone();
            Ok::<_, String>(Snapshot {
                keys: Arc::new(NodeKeys {
                    primary: to_sphinx(&new.primary),
                    secondary: new.secondary.as_ref().map(to_sphinx),
                }),
                replay: ReplaySet::new(filters),
                next_hops: old.next_hops.clone(),
            })
        })?;
        // a purged key's persisted filter is of no further use
        if let Some(dir) = &self.config.replay_dir {
            for (id, _) in replaced.iter() {
                if new.primary.rotation_id() != *id
                    && new
                        .secondary
                        .as_ref()
                        .is_none_or(|s| s.rotation_id() != *id)
                {
                    crate::replay::ReplayFilter::remove_files(
                        &dir.join(format!("replay-{id}.bloom")),
                    );
                }
            }
        }
        *k = new;
        Ok(())
    }

    /// Grows the replay filters that need it (call about once a second) and warns about any
    /// that is near its false-positive bound.
    pub fn maintain_replay(&self, now: std::time::SystemTime) {
        for (id, f) in self.node.snapshot().replay.iter() {
            if let Err(e) = f.maintain(now) {
                tracing::error!(rotation = id, error = %e, "replay filter could not grow");
            }
            if f.near_bound() {
                tracing::warn!(
                    rotation = id,
                    bound_ratio = f.bound_ratio(),
                    "replay filter near its false-positive bound"
                );
            }
        }
    }

    /// Syncs the replay filters' files to disk (bounds what a power loss can lose).
    pub fn sync_replay(&self) {
        for (id, f) in self.node.snapshot().replay.iter() {
            if let Err(e) = f.sync() {
                tracing::error!(rotation = id, error = %e, "replay filter sync failed");
            }
        }
    }

    /// The metrics page.
    pub(crate) fn metrics_text(&self) -> String {
        let mut text = metrics(self.node.counters(), &self.node.snapshot(), self.started);
        if !self.node.tcp_counters().is_empty() {
            text.push_str(&tcp_metrics(self.node.tcp_counters()));
        }
        if let Some(c) = self.node.cover() {
            let mut p = PromText::new();
            crate::cover::write_metrics(&mut p, &c.report());
            text.push_str(&p.finish());
        }
        text
    }

    /// The status document.
    pub(crate) fn status_json(&self) -> String {
        let snap = self.node.snapshot();
        let k = self.lock_keys();
        let key = |m: &KeyMaterial| {
            serde_json::json!({
                "rotation_id": m.rotation_id(),
                "public_key": m.public_base58(),
                "replay_filter_fill_ratio": snap.replay.get(m.rotation_id()).map(|f| f.fill_ratio()),
            })
        };
        serde_json::json!({
            "listen": self.node.local_addr().to_string(),
            "tcp_listen": self.node.tcp_local_addr().map(|a| a.to_string()),
            "io_backend": self.node.io_backend(),
            "workers": self.node.counters().len(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "rotation": match *self.lock_driver() {
                Driver::Manual => "manual",
                Driver::Local(_) => "schedule",
                Driver::NymApi(_) => "nym-api",
            },
            "topology": {
                "version": self.topology().1,
                "nodes": self.topology().0.map_or(0, |t| t.nodes.len()),
                "routing_filter": self.topology.lock().unwrap_or_else(|e| e.into_inner()).filter,
            },
            "keys": {
                "primary": key(&k.primary),
                "secondary": k.secondary.as_ref().map(key),
            },
        })
        .to_string()
    }
}

/// The routes for cover loops: the topology's mix layers, and this node found by one of its
/// live Sphinx keys (`None` when the topology does not list it).
pub fn cover_routes(topology: &Topology, keys: &NodeKeys) -> Option<CoverRoutes> {
    let hop = |n: &mixplane_control::topology::TopologyNode| {
        n.addresses.first().map(|a| Hop {
            address: *a,
            public_key: n.sphinx_key,
        })
    };
    let mine = |k: &[u8; 32]| {
        k == keys.primary.public() || keys.secondary.as_ref().is_some_and(|s| k == s.public())
    };
    let me = topology
        .nodes
        .iter()
        .find(|n| mine(&n.sphinx_key))
        .and_then(hop)?;
    let layers = (1..=3u8)
        .map(|l| topology.with_role(Role::Mix(l)).filter_map(hop).collect())
        .collect();
    Some(CoverRoutes { layers, me })
}

/// The TCP transport's metrics, per worker.
fn tcp_metrics(workers: &[Arc<TcpCounters>]) -> String {
    let mut p = PromText::new();
    let ids: Vec<String> = (0..workers.len()).map(|i| i.to_string()).collect();
    let series = |f: &dyn Fn(&TcpCounters) -> u64| -> Vec<(Vec<(&str, &str)>, f64)> {
        workers
            .iter()
            .zip(&ids)
            .map(|(w, id)| (vec![("worker", id.as_str())], f(w) as f64))
            .collect()
    };
    /// Metric name, help, whether a counter (else a gauge), and its value.
    type Family<'a> = (&'a str, &'a str, bool, &'a dyn Fn(&TcpCounters) -> u64);
    let plain: [Family<'_>; 7] = [
        (
            "mixplane_tcp_accepted_total",
            "Inbound TCP connections accepted.",
            true,
            &|w| w.accepted.load(Relaxed),
        ),
        (
            "mixplane_tcp_inbound_connections",
            "Inbound TCP connections open.",
            false,
            &|w| w.inbound_open.load(Relaxed),
        ),
        (
            "mixplane_tcp_outbound_connections",
            "Outbound TCP connections open (connecting or up).",
            false,
            &|w| w.outbound_open.load(Relaxed),
        ),
        (
            "mixplane_tcp_outbound_established_total",
            "Outbound TCP connections established (with Noise: handshaken).",
            true,
            &|w| w.outbound_established.load(Relaxed),
        ),
        (
            "mixplane_tcp_noise_handshakes_total",
            "Noise handshakes completed, both directions.",
            true,
            &|w| w.noise_handshakes.load(Relaxed),
        ),
        (
            "mixplane_tcp_frames_received_total",
            "Frames received whole over TCP.",
            true,
            &|w| w.frames_in.load(Relaxed),
        ),
        (
            "mixplane_tcp_frames_sent_total",
            "Frames written whole to TCP next hops.",
            true,
            &|w| w.frames_out.load(Relaxed),
        ),
    ];
    for (name, help, counter, f) in plain {
        let v = series(f);
        let samples: Vec<(&[(&str, &str)], f64)> =
            v.iter().map(|(l, x)| (l.as_slice(), *x)).collect();
        if counter {
            p.counter(name, help, &samples);
        } else {
            p.gauge(name, help, &samples);
        }
    }
    let mut drops: Vec<(Vec<(&str, &str)>, f64)> = Vec::new();
    for (w, id) in workers.iter().zip(&ids) {
        for r in TcpDrop::ALL {
            drops.push((
                vec![("worker", id.as_str()), ("reason", r.name())],
                w.drops(r) as f64,
            ));
        }
    }
    let samples: Vec<(&[(&str, &str)], f64)> =
        drops.iter().map(|(l, x)| (l.as_slice(), *x)).collect();
    p.counter(
        "mixplane_tcp_events_total",
        "TCP connections refused or closed early, and frames dropped on TCP, by reason.",
        &samples,
    );
    p.finish()
}

/// Latency histogram bounds for the metrics, in nanoseconds.
const BOUNDS_NS: [u64; 16] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    10_000_000_000,
];

/// One histogram family with a series per worker; `bounds` are bucket upper bounds in the
/// histogram's unit and `unit` converts them (and the sum) to the exported unit.
fn histogram(
    p: &mut PromText,
    name: &str,
    help: &str,
    workers: &[Arc<WorkerCounters>],
    h: impl Fn(&WorkerCounters) -> &AtomicHistogram,
    bounds: &[u64],
    unit: f64,
) {
    for (i, w) in workers.iter().enumerate() {
        let hist = h(w);
        let cum = hist.cumulative(bounds);
        let buckets: Vec<(f64, u64)> = bounds
            .iter()
            .zip(cum)
            .map(|(b, c)| (*b as f64 * unit, c))
            .collect();
        let id = i.to_string();
        let l = [("worker", id.as_str())];
        let sum = hist.sum() as f64 * unit;
        if i == 0 {
            p.histogram(name, help, &l, &buckets, sum, hist.count());
        } else {
            p.histogram_series(name, &l, &buckets, sum, hist.count());
        }
    }
}

/// Renders the node's metrics in Prometheus text format.
pub(crate) fn metrics(
    workers: &[Arc<WorkerCounters>],
    snap: &Snapshot,
    started: Instant,
) -> String {
    let mut p = PromText::new();
    let ids: Vec<String> = (0..workers.len()).map(|i| i.to_string()).collect();
    let per = |f: &dyn Fn(&WorkerCounters) -> u64| -> Vec<(Vec<(&str, &str)>, f64)> {
        workers
            .iter()
            .zip(&ids)
            .map(|(w, id)| (vec![("worker", id.as_str())], f(w) as f64))
            .collect()
    };
    let emit =
        |p: &mut PromText, kind: &str, name: &str, help: &str, v: Vec<(Vec<(&str, &str)>, f64)>| {
            let samples: Vec<(&[(&str, &str)], f64)> =
                v.iter().map(|(l, x)| (l.as_slice(), *x)).collect();
            if kind == "counter" {
                p.counter(name, help, &samples)
            } else {
                p.gauge(name, help, &samples)
            }
        };
    emit(
        &mut p,
        "counter",
        "mixplane_packets_received_total",
        "Datagrams received.",
        per(&|w| w.rx_datagrams.load(Relaxed)),
    );
    emit(
        &mut p,
        "counter",
        "mixplane_packets_forwarded_total",
        "Forward hops accepted into the delay wheel.",
        per(&|w| w.forwarded.load(Relaxed)),
    );
    emit(
        &mut p,
        "counter",
        "mixplane_packets_delivered_total",
        "Final-hop messages delivered to the sink.",
        per(&|w| w.delivered.load(Relaxed)),
    );
    emit(
        &mut p,
        "counter",
        "mixplane_surb_acks_total",
        "SURB-ACKs sent on.",
        per(&|w| w.surb_acks.load(Relaxed)),
    );
    emit(
        &mut p,
        "counter",
        "mixplane_packets_sent_total",
        "Datagrams sent.",
        per(&|w| w.tx_datagrams.load(Relaxed)),
    );
    emit(
        &mut p,
        "counter",
        "mixplane_send_calls_total",
        "Send syscalls or ring submissions.",
        per(&|w| w.tx_calls.load(Relaxed)),
    );
    emit(
        &mut p,
        "counter",
        "mixplane_excessive_delay_packets_total",
        "Forward hops that asked for a delay over the cap and were held for the cap (nym-node's excessive_delay_packets).",
        per(&|w| w.excessive_delay.load(Relaxed)),
    );
    emit(
        &mut p,
        "gauge",
        "mixplane_wheel_packets",
        "Packets held in the delay wheel.",
        per(&|w| w.wheel_len.load(Relaxed)),
    );
    let mut drops: Vec<(Vec<(&str, &str)>, f64)> = Vec::new();
    for (w, id) in workers.iter().zip(&ids) {
        for r in DropReason::ALL {
            drops.push((
                vec![("worker", id.as_str()), ("reason", r.name())],
                w.sphinx_drops(r) as f64,
            ));
        }
        for r in NodeDrop::ALL {
            drops.push((
                vec![("worker", id.as_str()), ("reason", r.name())],
                w.node_drops(r) as f64,
            ));
        }
    }
    emit(
        &mut p,
        "counter",
        "mixplane_packets_dropped_total",
        "Dropped packets by reason.",
        drops,
    );
    let mut busy: Vec<(Vec<(&str, &str)>, f64)> = Vec::new();
    for (w, id) in workers.iter().zip(&ids) {
        for ph in WorkerPhase::ALL {
            busy.push((
                vec![("worker", id.as_str()), ("phase", ph.name())],
                w.phase_ns(ph) as f64 * 1e-9,
            ));
        }
    }
    emit(
        &mut p,
        "counter",
        "mixplane_worker_busy_seconds_total",
        "Worker time by loop phase: receive calls that returned data, Sphinx processing, holding verdicts, releasing and sending.",
        busy,
    );
    let rot: Vec<String> = snap.replay.iter().map(|(r, _)| r.to_string()).collect();
    let fill: Vec<(Vec<(&str, &str)>, f64)> = snap
        .replay
        .iter()
        .zip(&rot)
        .map(|((_, f), r)| (vec![("rotation", r.as_str())], f.fill_ratio()))
        .collect();
    emit(
        &mut p,
        "gauge",
        "mixplane_replay_filter_fill_ratio",
        "Fraction of the replay filter's bits set.",
        fill,
    );
    let fp: Vec<(Vec<(&str, &str)>, f64)> = snap
        .replay
        .iter()
        .zip(&rot)
        .map(|((_, f), r)| (vec![("rotation", r.as_str())], f.false_positive_estimate()))
        .collect();
    emit(
        &mut p,
        "gauge",
        "mixplane_replay_filter_false_positive_estimate",
        "Estimated false-positive rate of the replay filter.",
        fp,
    );
    let bound: Vec<(Vec<(&str, &str)>, f64)> = snap
        .replay
        .iter()
        .zip(&rot)
        .map(|((_, f), r)| (vec![("rotation", r.as_str())], f.bound_ratio()))
        .collect();
    emit(
        &mut p,
        "gauge",
        "mixplane_replay_filter_bound_ratio",
        "Largest ratio of a replay filter segment's tags to its design count (above 1: over its false-positive target).",
        bound,
    );
    let near: Vec<(Vec<(&str, &str)>, f64)> = snap
        .replay
        .iter()
        .zip(&rot)
        .map(|((_, f), r)| {
            (
                vec![("rotation", r.as_str())],
                f64::from(u8::from(f.near_bound())),
            )
        })
        .collect();
    emit(
        &mut p,
        "gauge",
        "mixplane_replay_filter_near_bound",
        "1 when a replay filter is near its false-positive bound and cannot grow.",
        near,
    );
    let overflows: Vec<(Vec<(&str, &str)>, f64)> = snap
        .replay
        .iter()
        .zip(&rot)
        .map(|((_, f), r)| (vec![("rotation", r.as_str())], f.journal_overflows() as f64))
        .collect();
    emit(
        &mut p,
        "counter",
        "mixplane_replay_journal_overflows_total",
        "New tags not journaled because the replay journal was full between two syncs (each is in the next snapshot; a kill before it could lose them).",
        overflows,
    );
    let mut keys = vec![(
        vec![("slot", "primary")],
        f64::from(snap.keys.primary.rotation_id()),
    )];
    if let Some(s) = &snap.keys.secondary {
        keys.push((vec![("slot", "secondary")], f64::from(s.rotation_id())));
    }
    emit(
        &mut p,
        "gauge",
        "mixplane_key_rotation_id",
        "Rotation id of each live Sphinx key.",
        keys,
    );
    emit(
        &mut p,
        "gauge",
        "mixplane_uptime_seconds",
        "Seconds since the control plane started.",
        vec![(vec![], started.elapsed().as_secs_f64())],
    );
    let ns = 1e-9;
    histogram(
        &mut p,
        "mixplane_unwrap_seconds_per_packet",
        "Sphinx processing time per packet of a batch.",
        workers,
        |w| &w.unwrap_per_packet,
        &BOUNDS_NS,
        ns,
    );
    histogram(
        &mut p,
        "mixplane_residence_seconds",
        "Time from receive to send (the hop's delay plus queueing).",
        workers,
        |w| &w.residence,
        &BOUNDS_NS,
        ns,
    );
    histogram(
        &mut p,
        "mixplane_release_lateness_seconds",
        "Delay wheel release time minus deadline.",
        workers,
        |w| &w.release_lateness,
        &BOUNDS_NS,
        ns,
    );
    histogram(
        &mut p,
        "mixplane_batch_size",
        "Datagrams per receive batch.",
        workers,
        |w| &w.batch_size,
        &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
        1.0,
    );
    p.finish()
}

/// The admin API's view of a control plane.
pub struct Admin(pub Arc<ControlPlane>);

impl AdminHandler for Admin {
    fn metrics(&self) -> String {
        self.0.metrics_text()
    }
    fn status(&self) -> String {
        self.0.status_json()
    }
    fn rotate_keys(&self) -> Result<String, String> {
        let l = self.0.rotate_now()?;
        Ok(serde_json::json!({ "primary": l.primary, "secondary": l.secondary }).to_string())
    }
    fn set_topology(&self, body: &[u8]) -> Result<String, String> {
        let t = Topology::parse(body).map_err(|e| e.to_string())?;
        let nodes = t.nodes.len();
        let version = self.0.set_topology(t);
        Ok(serde_json::json!({ "version": version, "nodes": nodes }).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixplane_control::keys;
    use mixplane_control::topology::{PeerTransport, Role, TopologyNode};
    use std::sync::atomic::{AtomicBool, AtomicU64};

    /// A topology of `n` nodes (big enough that building its address set takes a while).
    fn topology(n: u32) -> Topology {
        let nodes = (0..n)
            .map(|i| TopologyNode {
                id: i,
                identity: format!("node{i}"),
                addresses: vec![std::net::SocketAddr::from(([192, 0, 2, 1], i as u16 + 1))],
                role: Role::Mix(1),
                sphinx_key: [0; 32],
                noise: None,
                transport: PeerTransport::Udp,
            })
            .collect();
        Topology { nodes }
    }

    fn plane(name: &str) -> (ControlPlane, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("mixplane-plane-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let k0 = KeyMaterial::generate(1);
        keys::write_key(&dir.join(keys::PRIMARY_FILE), k0.secret(), 1).unwrap();
        let stored = keys::load_keys(&dir).unwrap();
        let config = NodeConfig {
            replay_expected: 1000,
            ..NodeConfig::default()
        };
        let node = Node::start(
            config.clone(),
            Arc::new(NodeKeys::single(to_sphinx(&stored.primary))),
        )
        .unwrap();
        (
            ControlPlane::new(node, config, dir.clone(), stored, None),
            dir,
        )
    }

    /// The live rotation ids in the published snapshot.
    fn published(p: &ControlPlane) -> Live {
        let s = p.node.snapshot();
        Live {
            primary: s.keys.primary.rotation_id(),
            secondary: s.keys.secondary.as_ref().map(|k| k.rotation_id()),
        }
    }

    #[test]
    fn topology_refreshes_never_put_back_keys_a_rotation_removed() {
        let (p, dir) = plane("race");
        let stop = AtomicBool::new(false);
        let (rotations, refreshes) = (AtomicU64::new(0), AtomicU64::new(0));
        let big = Arc::new(topology(4000));
        std::thread::scope(|sc| {
            // one thread rotates, so the installed keys only change when it says so: before
            // each rotation the published keys must be the ones it installed last
            sc.spawn(|| {
                let end = Instant::now() + std::time::Duration::from_millis(2000);
                while Instant::now() < end {
                    let want = p.rotate_now().unwrap();
                    rotations.fetch_add(1, Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    assert_eq!(published(&p), want, "a refresh put back older keys");
                }
                stop.store(true, Relaxed);
            });
            for i in 0..2 {
                let (p, stop, refreshes, big) = (&p, &stop, &refreshes, big.clone());
                sc.spawn(move || {
                    while !stop.load(Relaxed) {
                        if i == 0 {
                            p.set_topology((*big).clone());
                        } else {
                            p.set_routing_filter(true);
                        }
                        refreshes.fetch_add(1, Relaxed);
                    }
                });
            }
        });
        assert_eq!(published(&p), p.live());
        assert!(rotations.load(Relaxed) > 10, "{rotations:?}");
        assert!(refreshes.load(Relaxed) > 10, "{refreshes:?}");
        p.into_node().shutdown().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
