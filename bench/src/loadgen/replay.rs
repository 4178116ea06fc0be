//! `replay`: sends a preloaded capture's UDP payloads again, tcpreplay-style.
//!
//! Timing is the capture's own (scaled by a multiplier), a constant packet rate, or top speed;
//! the capture can be looped. Datagrams go to their captured destination or to one override
//! address, in batches (`sendmmsg`, GSO for runs of equal-sized datagrams to one address).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::bail;
use mixplane_dataplane::io::{self, IoBackendKind, Outgoing};
use serde::Serialize;

use super::{Progress, wait_until};
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
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            to: None,
            timing: Timing::Original { multiplier: 1.0 },
            loops: 1,
            bind: None,
            progress: false,
        }
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
}

impl ReplayReport {
    /// A human-readable summary.
    pub fn text(&self) -> String {
        let target = self
            .target_pps
            .map_or("top speed".to_string(), |t| format!("target {t:.0} pps"));
        format!(
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
        )
    }
}

const BATCH: usize = 64;

/// Replays `capture` per `cfg`.
pub fn replay(capture: &Capture, cfg: &ReplayConfig) -> anyhow::Result<ReplayReport> {
    let n = capture.datagrams.len();
    if n == 0 {
        bail!("the capture holds no UDP datagrams");
    }
    if cfg.loops == 0 {
        bail!("loops must be at least 1");
    }
    let step_ns = match cfg.timing {
        Timing::Pps(p) if p > 0.0 => 1e9 / p,
        Timing::Pps(_) => bail!("--pps must be positive"),
        Timing::Original { multiplier } if multiplier <= 0.0 => {
            bail!("--multiplier must be positive")
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
    let (mut tx, _) = io::open(IoBackendKind::Mmsg, bind, BATCH)?;

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
            while i < n && out.len() < BATCH && due(i) <= now {
                out.push(Outgoing {
                    to: dest(i),
                    data: capture.payload(i),
                });
                i += 1;
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
    progress.finish();
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
    })
}
