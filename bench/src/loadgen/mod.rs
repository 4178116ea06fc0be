//! `mixplane-loadgen`'s library: [`send::run`] builds real Nym packets for routes through a
//! topology (or a local demo mixnet), sends them at a given rate, optionally records them to a
//! pcap, and measures throughput, loss and end-to-end latency at the sink; [`replay::replay`]
//! replays a capture tcpreplay-style. The binary (`src/bin/loadgen.rs`) is a thin CLI over these;
//! the integration tests call them directly.

pub mod factory;
pub mod metrics;
pub mod replay;
pub mod send;
pub mod topology;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

pub use factory::{Built, Factory, Mix, Tag};
pub use replay::{ReplayConfig, ReplayReport, SinkReport, Timing, replay};
pub use send::{DemoOptions, Report, SendConfig, SentRecord, Target, run};
pub use topology::Topology;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Latency {
    /// Summarises a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// `p50 1.23 ms, p90 .., p99 .., p99.9 .., max ..`.
    pub fn line(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples)",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.count
        )
    }
}

/// A latency histogram: 1 µs to 10 minutes, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Waits until `deadline`: sleeps while it is far, then yields (a plain sleep overshoots by
/// ~50 µs of timer slack, which matters at high rates).
pub fn wait_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        let Some(left) = deadline.checked_duration_since(now) else {
            return;
        };
        if left > Duration::from_micros(300) {
            std::thread::sleep(left - Duration::from_micros(200));
        } else if left > Duration::from_micros(20) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// A progress line on stderr, redrawn at most once a second, only once a run has lasted a
/// second (short runs print nothing).
pub struct Progress {
    enabled: bool,
    start: Instant,
    last: Instant,
    drawn: bool,
}

impl Progress {
    /// A progress line (disabled: never prints).
    pub fn new(enabled: bool) -> Progress {
        let now = Instant::now();
        Progress {
            enabled,
            start: now,
            last: now,
            drawn: false,
        }
    }

    /// Redraws the line with `line()` if a second has passed since the last draw.
    pub fn tick(&mut self, line: impl FnOnce(Duration) -> String) {
        if !self.enabled || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        self.drawn = true;
        eprint!("\r\x1b[2K{}", line(self.start.elapsed()));
    }

    /// Ends the line (if one was drawn).
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}
