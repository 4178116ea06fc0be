//! Loop cover traffic, as Loopix proposes for mix nodes: the node sends Sphinx packets through
//! the network back to itself at Poisson times, which adds cover and lets it notice when
//! packets on paths through some node go missing (an active attack or a broken neighbour).
//!
//! # Design
//!
//! * **Routes.** A loop crosses every mix layer but the node's own once, one node drawn at
//!   random per layer, in layer order starting after the node's own layer, and ends at the node
//!   ([`CoverRoutes::choose`]). The control plane derives [`CoverRoutes`] from the topology
//!   ([`Cover::set_routes`]); without them no loop is sent (counted as `no_route`).
//! * **Packets.** Each loop is a regular-class packet whose SURB-ACK is itself a loop (an
//!   ack-class packet over another route back to the node), so the node's final hop sends an
//!   ack on exactly as it does for a client's packet, and both size classes are covered. Both
//!   are built by the batched builder ([`crate::sphinx::build::build_batch`]); on the wire they
//!   are ordinary Sphinx packets of their class (v258, frame rotation byte "unknown", which a
//!   client that does not track rotations also sends).
//! * **Recognition.** A loop's message is [`stats::TAG_LEN`] bytes: sequence, send time and an
//!   HMAC over both with a key drawn at start ([`LoopKey`]). A worker checks every final-hop
//!   message against the key (one HMAC, only when cover is on); a loop is not delivered to the
//!   sink but reported to the cover thread. State is a window of the last `window` loops
//!   ([`LoopStats`]), nothing per loop beyond it.
//! * **Egress with the least new plumbing.** The cover thread hands each built frame, with its
//!   send time, to one worker (round robin) through a bounded channel. The worker puts it into
//!   its own slab and delay wheel with the send time as deadline, through the same egress check
//!   ([`crate::egress`], routing filter, transport choice) as any forward hop: loops leave by
//!   UDP or the Nym TCP transport, whichever the first hop speaks, share the queues and limits
//!   of other packets and are counted with them (`packets_sent`, drops by reason). The
//!   channel's receive is the only cost on the worker's path when nothing is due; the frame's
//!   buffer is freed on the worker after its copy into the slab (one free per loop).
//! * **Bounded cost.** The cover thread measures the CPU time it spends building (its thread's
//!   CPU clock) and keeps it under `max_core_share` of one core (a token bucket that fills at
//!   that share of wall time, at most one second's worth): loops that fall due while the
//!   budget is spent are skipped and counted (`budget_skipped`).
//!
//! The sans-IO part (tags, route choice, window, loss statistics) is [`stats`]; the thread is
//! `generator` (private).

mod generator;
pub mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use mixplane_control::metrics::PromText;

pub use stats::{CoverReport, CoverRoutes, LoopCounts, LoopKey, LoopStats, LossEstimate};

use crate::snapshot::Snapshot;
use generator::Generator;

/// Cover traffic settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CoverConfig {
    /// Loops per second (mean of a Poisson process); each loop also carries an ack loop.
    pub rate_per_second: f64,
    /// Mean per-hop delay of the loops' routes (exponential), ms.
    pub mean_delay_ms: f64,
    /// A loop not back this long after it was sent is lost (ack loops get twice this).
    pub timeout: Duration,
    /// Loops tracked at once (older ones are forgotten and counted as untracked).
    pub window: usize,
    /// The most of one core the cover thread may spend building loops (0 to 1).
    pub max_core_share: f64,
    /// Frames waiting per worker for the worker to pick them up.
    pub queue: usize,
}

impl Default for CoverConfig {
    fn default() -> Self {
        CoverConfig {
            rate_per_second: 1.0,
            mean_delay_ms: 50.0,
            timeout: Duration::from_secs(10),
            window: 1 << 16,
            max_core_share: 0.05,
            queue: 1024,
        }
    }
}

/// A loop packet on its way from the cover thread to a worker.
pub(crate) struct CoverPacket {
    /// The first hop.
    pub(crate) to: SocketAddr,
    /// The framed packet.
    pub(crate) frame: Vec<u8>,
    /// When it is to leave (ns since the node's epoch).
    pub(crate) at_ns: u64,
}

/// What a worker and the cover thread share.
pub(crate) struct CoverShared {
    pub(crate) key: LoopKey,
    routes: ArcSwapOption<CoverRoutes>,
    report: Mutex<CoverReport>,
    stop: AtomicBool,
    paused: AtomicBool,
}

/// A worker's end of the cover channels.
pub(crate) struct WorkerCover {
    pub(crate) shared: Arc<CoverShared>,
    /// Loops to send.
    pub(crate) outbound: Receiver<CoverPacket>,
    /// (sequence, receive time) of loops that came back.
    pub(crate) returned: SyncSender<(u64, u64)>,
}

impl WorkerCover {
    /// Whether `message` (a final-hop message received at `rx_ns`) is one of this node's
    /// loops; if so it is reported to the cover thread (dropped if its queue is full).
    pub(crate) fn intercept(&self, message: &[u8], rx_ns: u64) -> bool {
        if message.len() != stats::TAG_LEN {
            return false;
        }
        match self.shared.key.check(message) {
            Some((seq, _sent)) => {
                let _ = self.returned.try_send((seq, rx_ns));
                true
            }
            None => false,
        }
    }
}

/// A node's cover traffic: the thread that sends loops and counts their return.
pub struct Cover {
    shared: Arc<CoverShared>,
    thread: Option<JoinHandle<()>>,
}

impl Cover {
    /// Starts the cover thread of a node with `workers` workers, whose clock starts at
    /// `epoch` and whose keys are in `snapshot`; returns it and one channel end per worker.
    pub(crate) fn start(
        config: CoverConfig,
        workers: usize,
        epoch: Instant,
        snapshot: Arc<ArcSwap<Snapshot>>,
    ) -> std::io::Result<(Cover, Vec<WorkerCover>)> {
        let shared = Arc::new(CoverShared {
            key: LoopKey::random(),
            routes: ArcSwapOption::empty(),
            report: Mutex::new(CoverReport::default()),
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
        });
        let (ret_tx, ret_rx) = std::sync::mpsc::sync_channel(config.queue.max(1) * 4);
        let mut senders = Vec::with_capacity(workers);
        let mut ends = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel(config.queue.max(1));
            senders.push(tx);
            ends.push(WorkerCover {
                shared: shared.clone(),
                outbound: rx,
                returned: ret_tx.clone(),
            });
        }
        let generator = Generator {
            config,
            shared: shared.clone(),
            snapshot,
            epoch,
            workers: senders,
            returned: ret_rx,
        };
        let thread = std::thread::Builder::new()
            .name("mixplane-cover".into())
            .spawn(move || generator.run())?;
        Ok((
            Cover {
                shared,
                thread: Some(thread),
            },
            ends,
        ))
    }

    /// Sets the layers loops are routed through and this node's own hop.
    pub fn set_routes(&self, routes: CoverRoutes) {
        self.shared.routes.store(Some(Arc::new(routes)));
    }

    /// What the loops have shown so far (updated by the cover thread about ten times a
    /// second).
    pub fn report(&self) -> CoverReport {
        self.shared
            .report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops or resumes sending loops; while paused the loops in flight are still tracked.
    pub fn pause(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Release);
    }

    /// Stops the cover thread and waits for it.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Cover {
    fn drop(&mut self) {
        self.stop();
    }
}

impl CoverShared {
    fn routes(&self) -> Option<Arc<CoverRoutes>> {
        self.routes.load_full()
    }

    fn publish(&self, report: CoverReport) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = report;
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }
}

/// A metric family: name part, help, and how to read its value from a `T`.
type Family<'a, T, R> = (&'a str, &'a str, fn(&T) -> R);

/// Writes the cover metrics of `r`: counts overall and per node (with its layer), loss
/// estimates with 95 % bounds, and the alarm gauge.
pub fn write_metrics(p: &mut PromText, r: &CoverReport) {
    let counts: [Family<'_, LoopCounts, u64>; 5] = [
        ("sent", "Loops handed to the egress", |c| c.sent),
        ("returned", "Loops back before their deadline", |c| {
            c.returned
        }),
        ("lost", "Loops not back by their deadline", |c| c.lost),
        (
            "late",
            "Loops back after their deadline or after the window forgot them",
            |c| c.late,
        ),
        (
            "untracked",
            "Loops the window forgot before their deadline",
            |c| c.untracked,
        ),
    ];
    let labels: Vec<(String, String)> = r
        .nodes
        .iter()
        .map(|n| (n.layer.to_string(), n.node.to_string()))
        .collect();
    let per_node = |f: &dyn Fn(&stats::NodeReport) -> f64| -> Vec<(Vec<(&str, &str)>, f64)> {
        r.nodes
            .iter()
            .zip(&labels)
            .map(|(n, (l, a))| (vec![("layer", l.as_str()), ("node", a.as_str())], f(n)))
            .collect()
    };
    for (what, help, f) in counts {
        let name = format!("mixplane_cover_loops_{what}_total");
        p.counter(
            &name,
            &format!("{help}, all loops."),
            &[(&[], f(&r.total) as f64)],
        );
        let v = per_node(&|n| f(&n.counts) as f64);
        let samples: Vec<(&[(&str, &str)], f64)> =
            v.iter().map(|(l, x)| (l.as_slice(), *x)).collect();
        let name = format!("mixplane_cover_node_loops_{what}_total");
        p.counter(&name, &format!("{help}, per node crossed."), &samples);
    }
    let est: [Family<'_, LossEstimate, f64>; 3] = [
        ("rate", "Loss of loops (lost / resolved)", |e| e.rate),
        ("low", "Lower 95 % Wilson bound of the loss", |e| e.low),
        ("high", "Upper 95 % Wilson bound of the loss", |e| e.high),
    ];
    for (what, help, f) in est {
        p.gauge(
            &format!("mixplane_cover_loss_{what}"),
            &format!("{help}, all loops."),
            &[(&[], f(&r.loss))],
        );
        let v = per_node(&|n| f(&n.loss));
        let samples: Vec<(&[(&str, &str)], f64)> =
            v.iter().map(|(l, x)| (l.as_slice(), *x)).collect();
        p.gauge(
            &format!("mixplane_cover_node_loss_{what}"),
            &format!("{help}, per node crossed."),
            &samples,
        );
    }
    let v = per_node(&|n| f64::from(u8::from(n.alarm)));
    let samples: Vec<(&[(&str, &str)], f64)> = v.iter().map(|(l, x)| (l.as_slice(), *x)).collect();
    p.gauge(
        "mixplane_cover_node_loss_alarm",
        "1 when loops through this node are lost significantly more often than through the other nodes of its layer.",
        &samples,
    );
    let misc: [(&str, &str, f64); 4] = [
        (
            "mixplane_cover_budget_skipped_total",
            "Loops skipped because building would exceed the configured share of a core.",
            r.budget_skipped as f64,
        ),
        (
            "mixplane_cover_no_route_total",
            "Loops not sent for want of a route (no topology, an empty layer).",
            r.no_route as f64,
        ),
        (
            "mixplane_cover_queue_full_total",
            "Loops not sent because a worker's cover queue was full.",
            r.queue_full as f64,
        ),
        (
            "mixplane_cover_build_seconds_total",
            "CPU time the cover thread spent building loops.",
            r.build_seconds,
        ),
    ];
    for (name, help, v) in misc {
        p.counter(name, help, &[(&[], v)]);
    }
}
