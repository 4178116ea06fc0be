//! `replay`: sends a preloaded capture's UDP payloads again, tcpreplay-style.
//!
//! Timing is the capture's own (scaled by a multiplier), a constant packet rate, or top speed;
//! the capture can be looped. Datagrams go to their captured destination or to one override
//! address, in batches (`sendmmsg`, GSO for runs of equal-sized datagrams to one address).
//!
//! With a sink, the replayer listens where the exit delivers and measures what arrives: a
//! loadgen recording holds message `i` in frame `i` (the sender sends in sequence order), so
//! the latency of message `i` is its arrival minus the time frame `i` was sent in the first
//! loop. With the node's metrics URL, it reads the node's drop counters before and after:
//! packets the node dropped as replays mean its replay filter has seen the capture, and the
//! report carries a warning that says how to replay repeatably.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mixplane_dataplane::io::{self, IoBackendKind, Outgoing};
use serde::Serialize;

use super::metrics;
use super::send::{ReceiverCtx, RecvShared, SendTimes, receive};
use super::{Latency, Progress, wait_until};
use crate::error::{Error, Result, io as io_err};
use crate::pcap::Capture;

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timing {
    /// The capture's inter-packet gaps divided by `multiplier` (1: as captured).
    Original {
        /// Speed-up factor (2: twice as fast).
        multiplier: f64,
    },
    /// A constant rate, packets per second.
    Pps(f64),
    /// As fast as possible.
    TopSpeed,
}

/// Replay settings.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Send everything here instead of each datagram's captured destination.
    pub to: Option<SocketAddr>,
    /// Timing.
    pub timing: Timing,
    /// Times through the capture (at least 1).
    pub loops: u32,
    /// Local address to send from (None: an ephemeral port on any address).
    pub bind: Option<SocketAddr>,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// Listen here for what the exit delivers, and measure it.
    pub sink: Option<SocketAddr>,
    /// The target node's admin metrics URL (`http://HOST:PORT/metrics`): read its drop
    /// counters before and after the replay.
    pub metrics: Option<String>,
    /// With a sink: stop waiting for arrivals after this long without one.
    pub drain: Duration,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            to: None,
            timing: Timing::Original { multiplier: 1.0 },
            loops: 1,
            bind: None,
            progress: false,
            sink: None,
            metrics: None,
            drain: Duration::from_secs(1),
        }
    }
}

/// What reached the sink during a replay.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    /// Where it listened.
    pub addr: SocketAddr,
    /// Messages a loadgen recording of this many frames delivers (one per frame).
    pub expected: u64,
    /// Distinct loadgen messages that arrived.
    pub received: u64,
    /// Distinct SURB-ACKs that arrived.
    pub acks: u64,
    /// Datagrams that were not loadgen messages.
    pub foreign: u64,
    /// Send (first loop) to sink, µs.
    pub latency_us: Latency,
    /// Send to SURB-ACK arrival, µs.
    pub ack_latency_us: Latency,
}

/// The node's release lateness over a replay, read from its histogram: each quantile is the
/// upper end of the bucket that holds it, ms (infinite past the last finite bucket).
#[derive(Debug, Clone, Serialize)]
pub struct LatenessReport {
    /// Packets released.
    pub released: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Shares released within 1, 2 and 5 ms of their deadline (where the node's histogram
    /// has those bounds); lower bounds, since the node files a value under the first exported
    /// bound at or above the upper edge of its own, finer bucket.
    pub within_1_2_5_ms: [Option<f64>; 3],
}

impl LatenessReport {
    fn of(h: &metrics::Lateness) -> Option<LatenessReport> {
        let q = |q| h.quantile(q).map(|s| s * 1e3);
        Some(LatenessReport {
            released: h.count(),
            p50_ms: q(0.5)?,
            p99_ms: q(0.99)?,
            p999_ms: q(0.999)?,
            within_1_2_5_ms: [0.001, 0.002, 0.005].map(|le| h.share_within(le)),
        })
    }
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// UDP datagrams in the capture.
    pub capture_packets: u64,
    /// Records of the capture that were not UDP datagrams.
    pub capture_skipped: u64,
    /// Loops done.
    pub loops: u32,
    /// Datagrams handed to the kernel.
    pub packets_sent: u64,
    /// Their payload bytes.
    pub bytes_sent: u64,
    /// Datagrams the kernel refused.
    pub send_errors: u64,
    /// Seconds from the first send to the end of the last.
    pub elapsed_s: f64,
    /// Achieved rate, packets/s.
    pub achieved_pps: f64,
    /// Achieved rate, Mbit/s of payload.
    pub achieved_mbps: f64,
    /// The rate asked for (`--pps`, or the capture's mean rate times the multiplier; none for
    /// top speed).
    pub target_pps: Option<f64>,
    /// What reached the sink (with a sink).
    pub sink: Option<SinkReport>,
    /// What the node dropped during the replay, by reason (with a metrics URL).
    pub node_drops: Option<BTreeMap<String, u64>>,
    /// How late the node's delay wheel released packets during the replay (with a metrics URL).
    pub node_lateness: Option<LatenessReport>,
    /// Problems found: replayed packets, nothing delivered.
    pub warnings: Vec<String>,
}

impl ReplayReport {
    /// A human-readable summary.
    pub fn text(&self) -> String {
        let target = self
            .target_pps
            .map_or("top speed".to_string(), |t| format!("target {t:.0} pps"));
        let mut s = format!(
            "replayed {} datagrams ({} bytes) in {:.3} s over {} loop(s) of a {}-datagram capture ({} records skipped): {:.0} pps, {:.1} Mbit/s ({target}); {} send errors\n",
            self.packets_sent,
            self.bytes_sent,
            self.elapsed_s,
            self.loops,
            self.capture_packets,
            self.capture_skipped,
            self.achieved_pps,
            self.achieved_mbps,
            self.send_errors
        );
        if let Some(k) = &self.sink {
            s += &format!(
                "sink {}: {}/{} messages, {} acks, {} foreign\nlatency:  {}\nack rtt:  {}\n",
                k.addr,
                k.received,
                k.expected,
                k.acks,
                k.foreign,
                k.latency_us.line(),
                k.ack_latency_us.line()
            );
        }
        if let Some(l) = &self.node_lateness {
            let pct = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.2}%", 100.0 * s));
            let [w1, w2, w5] = l.within_1_2_5_ms.map(pct);
            s += &format!(
                "node release lateness during the replay: {} packets released, p50 <= {:.3} ms, p99 <= {:.3} ms, p99.9 <= {:.3} ms (bucket upper ends); within 1 ms {w1}, 2 ms {w2}, 5 ms {w5} (lower bounds: the node files a value under the first bound at or above its own, finer bucket)\n",
                l.released, l.p50_ms, l.p99_ms, l.p999_ms
            );
        }
        if let Some(d) = &self.node_drops {
            let d: Vec<String> = d.iter().map(|(k, v)| format!("{k} {v}")).collect();
            s += &format!(
                "node drops during the replay: {}\n",
                if d.is_empty() {
                    "none".to_string()
                } else {
                    d.join(", ")
                }
            );
        }
        s
    }
}

const BATCH: usize = 64;

/// Replays `capture` per `cfg`.
pub fn replay(capture: &Capture, cfg: &ReplayConfig) -> Result<ReplayReport> {
    let n = capture.datagrams.len();
    if n == 0 {
        return Err(Error::Capture("it holds no UDP datagrams".into()));
    }
    if cfg.loops == 0 {
        return Err(Error::Config("loops must be at least 1".into()));
    }
    let step_ns = match cfg.timing {
        Timing::Pps(p) if p > 0.0 && p.is_finite() => 1e9 / p,
        Timing::Pps(_) => return Err(Error::Config("--pps must be positive".into())),
        Timing::Original { multiplier } if !(multiplier > 0.0 && multiplier.is_finite()) => {
            return Err(Error::Config("--multiplier must be positive".into()));
        }
        _ => 0.0,
    };
    let dest = |i: usize| cfg.to.unwrap_or(capture.datagrams[i].dst);
    let bind = cfg.bind.unwrap_or_else(|| {
        if dest(0).is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        }
    });
    let (mut tx, _) =
        io::open(IoBackendKind::Mmsg, bind, BATCH).map_err(io_err(format!("binding {bind}")))?;
    let before = cfg.metrics.as_deref().map(metrics::scrape).transpose()?;

    // the sink: send times of the first loop by frame index, read by the receiver
    let epoch = Instant::now();
    let table = Arc::new(SendTimes::new());
    let shared = Arc::new(RecvShared::default());
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = match cfg.sink {
        Some(addr) => {
            let (sink_io, local) = io::open(IoBackendKind::Mmsg, addr, BATCH)
                .map_err(io_err(format!("binding the sink {addr}")))?;
            let ctx = ReceiverCtx {
                run: None,
                epoch,
                table: table.clone(),
                shared: shared.clone(),
                stop: stop.clone(),
            };
            let t = std::thread::Builder::new()
                .name("replay-sink".into())
                .spawn(move || receive(sink_io, ctx))
                .map_err(io_err("starting the sink thread"))?;
            Some((t, local))
        }
        None => None,
    };

    // Offsets (ns from the start of a loop) of the capture's datagrams, and a loop's length:
    // the span of the capture plus one mean gap, so looped replays keep the capture's rate.
    let t0 = capture.datagrams[0].ts;
    let offsets: Vec<f64> = match cfg.timing {
        Timing::Original { multiplier } => capture
            .datagrams
            .iter()
            .map(|d| d.ts.saturating_sub(t0).as_nanos() as f64 / multiplier)
            .collect(),
        Timing::Pps(_) => (0..n).map(|i| i as f64 * step_ns).collect(),
        Timing::TopSpeed => vec![0.0; n],
    };
    let span = offsets.last().copied().unwrap_or(0.0);
    let loop_ns = match cfg.timing {
        Timing::Original { .. } if n > 1 => span + span / (n - 1) as f64,
        _ => n as f64 * step_ns,
    };
    let target_pps = match cfg.timing {
        Timing::TopSpeed => None,
        Timing::Pps(p) => Some(p),
        Timing::Original { .. } => (loop_ns > 0.0).then(|| n as f64 * 1e9 / loop_ns),
    };

    let mut progress = Progress::new(cfg.progress);
    let mut out: Vec<Outgoing<'_>> = Vec::with_capacity(BATCH);
    let (mut sent, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    for l in 0..cfg.loops {
        let base = l as f64 * loop_ns;
        let mut i = 0;
        while i < n {
            let due = |k: usize| start + Duration::from_nanos((base + offsets[k]) as u64);
            if step_ns > 0.0 || matches!(cfg.timing, Timing::Original { .. }) {
                wait_until(due(i));
            }
            let now = Instant::now();
            out.clear();
            let first = i;
            while i < n && out.len() < BATCH && due(i) <= now {
                out.push(Outgoing {
                    to: dest(i),
                    data: capture.payload(i),
                });
                i += 1;
            }
            if l == 0 && receiver.is_some() {
                let t = epoch.elapsed().as_nanos() as u64;
                for k in first..i {
                    table.set(k as u64, t);
                }
            }
            let st = tx.send(&out);
            sent += st.sent as u64;
            errors += st.failed as u64;
            bytes += out.iter().map(|o| o.data.len() as u64).sum::<u64>();
            progress.tick(|el| {
                format!(
                    "{:.0} s: loop {}/{}, sent {sent} ({:.0} pps)",
                    el.as_secs_f64(),
                    l + 1,
                    cfg.loops,
                    sent as f64 / el.as_secs_f64()
                )
            });
        }
    }
    let elapsed = start.elapsed().as_secs_f64();

    // drain: until every message arrived and nothing more has for a moment, or nothing has
    // for `cfg.drain`
    let sink = match receiver {
        Some((thread, addr)) => {
            let mut last = (0, 0);
            let mut changed = Instant::now();
            loop {
                let now = (shared.messages.load(Relaxed), shared.acks.load(Relaxed));
                if now != last {
                    last = now;
                    changed = Instant::now();
                }
                let idle = changed.elapsed();
                if idle >= cfg.drain
                    || (now.0 >= n as u64 && idle >= Duration::from_millis(100).min(cfg.drain))
                {
                    break;
                }
                progress.tick(|el| {
                    format!(
                        "{:.0} s: sent {sent}, draining: received {}, acks {}",
                        el.as_secs_f64(),
                        now.0,
                        now.1
                    )
                });
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Relaxed);
            let r = thread.join().map_err(|_| Error::Panicked("sink"))?;
            Some(SinkReport {
                addr,
                expected: n as u64,
                received: r.messages,
                acks: r.acks,
                foreign: r.foreign,
                latency_us: Latency::of(&r.hist),
                ack_latency_us: Latency::of(&r.ack_hist),
            })
        }
        None => None,
    };
    progress.finish();
    let (node_drops, node_lateness) = match (&before, cfg.metrics.as_deref()) {
        (Some(b), Some(url)) => {
            let after = metrics::scrape(url)?;
            (
                Some(b.drops.delta(&after.drops).0),
                LatenessReport::of(&b.lateness.delta(&after.lateness)),
            )
        }
        _ => (None, None),
    };
    let warnings = warnings(sent, sink.as_ref(), node_drops.as_ref());
    Ok(ReplayReport {
        capture_packets: n as u64,
        capture_skipped: capture.skipped,
        loops: cfg.loops,
        packets_sent: sent,
        bytes_sent: bytes,
        send_errors: errors,
        elapsed_s: elapsed,
        achieved_pps: sent as f64 / elapsed.max(1e-9),
        achieved_mbps: bytes as f64 * 8.0 / 1e6 / elapsed.max(1e-9),
        target_pps,
        sink,
        node_drops,
        node_lateness,
        warnings,
    })
}

/// How to replay repeatably (part of the replay warnings).
pub const REPEATABLE: &str = "for a repeatable replay, replay at a node whose replay filter has not seen the capture: \
    `mixplane init` a new directory and record against that node (a fresh key), or stop the node, delete its replay/ \
    directory and start it again (same key, empty filter) before each replay";

fn warnings(
    sent: u64,
    sink: Option<&SinkReport>,
    drops: Option<&BTreeMap<String, u64>>,
) -> Vec<String> {
    let mut w = Vec::new();
    let drop = |r: &str| drops.and_then(|d| d.get(r)).copied().unwrap_or(0);
    let replayed = drop("replayed");
    if replayed > 0 {
        w.push(format!(
            "the node dropped {replayed} of the {sent} datagrams as replayed packets: its replay filter has already seen them; {REPEATABLE}"
        ));
    }
    let bad_mac = drop("bad_mac");
    if bad_mac > 0 {
        w.push(format!(
            "the node dropped {bad_mac} datagrams with a bad MAC: they were built for another key (another node's capture, or a --demo run's, whose keys are new on every start)"
        ));
    }
    if let Some(k) = sink {
        if sent > 0 && k.received == 0 {
            w.push(format!(
                "nothing reached the sink {}: the node has most likely processed these packets before and dropped them as replays (or they were built for another key, or its exit delivers elsewhere); {REPEATABLE}",
                k.addr
            ));
        } else if k.received < k.expected {
            w.push(format!(
                "only {} of {} messages reached the sink {}",
                k.received, k.expected, k.addr
            ));
        }
    }
    w
}
