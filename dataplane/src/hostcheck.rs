//! What a host takes from a busy core (`mixplane check-host`).
//!
//! A worker at full load never sleeps, so any time its core spends elsewhere (another thread,
//! an interrupt, or a hypervisor that runs another guest on the vCPU: "steal") is time in
//! which packets that fall due wait. The probe spins on one core doing fixed units of work and
//! reads the clock after each; a unit that took longer than a threshold is a *gap*. Two
//! figures follow from the gaps alone, with no node running:
//!
//! - the share of wall time that lies more than `d` into a gap: for deadlines spread evenly
//!   over time, the share of packets that such gaps alone make later than `d` (a packet due
//!   at `t` inside the gap `[a, b)` leaves at `b` at the earliest). If that share at 2 ms is
//!   near 1 %, no software on that core can keep the release error's p99 under 2 ms;
//! - how steady the core's speed is: the work done per millisecond *outside* gaps, window by
//!   window. A host whose speed moves by tens of percent within seconds cannot decide a
//!   benchmark margin of a few percent.
//!
//! [`Gaps`] and [`Windows`] are the pure accounting (unit-tested); [`probe`] spins on the
//! calling thread; [`check`] pins a thread to each core in turn and returns a [`CoreReport`]
//! per core, whose `Display` is what `mixplane check-host` prints.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Upper ends of the gap-length buckets, ns (the last bucket is open).
pub const BUCKETS_NS: [u64; 6] = [
    200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
];

/// Why the probe was not running during a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// The kernel switched the probe out for another thread (its context-switch count rose).
    SwitchedOut,
    /// No other thread ran: the hypervisor held the vCPU (steal) or interrupts ran.
    HeldByHostOrInterrupts,
}

/// The gaps one probe saw.
#[derive(Debug, Clone, Default)]
pub struct Gaps {
    /// Gaps per length bucket ([`BUCKETS_NS`], then the open one).
    pub count: [u64; 7],
    /// Total length of the gaps of each kind: `[switched out, held by host or interrupts]`, ns.
    pub total_ns: [u64; 2],
    /// The longest gap, ns.
    pub longest_ns: u64,
    /// For each delay in [`Gaps::DELAYS_NS`]: the time lying more than that delay into a gap,
    /// ns.
    pub beyond_ns: [u64; 3],
}

impl Gaps {
    /// The delays [`Gaps::beyond_ns`] is kept for: 0.5, 1 and 2 ms.
    pub const DELAYS_NS: [u64; 3] = [500_000, 1_000_000, 2_000_000];

    /// Records one gap of `len_ns`.
    pub fn record(&mut self, len_ns: u64, kind: GapKind) {
        let bucket = BUCKETS_NS
            .iter()
            .position(|&end| len_ns < end)
            .unwrap_or(BUCKETS_NS.len());
        self.count[bucket] += 1;
        self.total_ns[match kind {
            GapKind::SwitchedOut => 0,
            GapKind::HeldByHostOrInterrupts => 1,
        }] += len_ns;
        self.longest_ns = self.longest_ns.max(len_ns);
        for (beyond, d) in self.beyond_ns.iter_mut().zip(Self::DELAYS_NS) {
            *beyond += len_ns.saturating_sub(d);
        }
    }

    /// All gaps, ns.
    pub fn total(&self) -> u64 {
        self.total_ns.iter().sum()
    }

    /// Share of `wall_ns` lying more than `Gaps::DELAYS_NS[i]` into a gap, percent.
    pub fn beyond_share(&self, i: usize, wall_ns: u64) -> f64 {
        100.0 * self.beyond_ns[i] as f64 / wall_ns.max(1) as f64
    }

    /// The gaps, a line per bucket that has any.
    pub fn histogram(&self) -> String {
        let mut s = String::new();
        let mut lower = 0u64;
        for (i, n) in self.count.iter().enumerate() {
            let label = match BUCKETS_NS.get(i) {
                Some(&upper) => format!("{}-{} ms", ms(lower), ms(upper)),
                None => format!(">= {} ms", ms(lower)),
            };
            if *n > 0 {
                let _ = writeln!(s, "    {label:>12}: {n}");
            }
            lower = BUCKETS_NS.get(i).copied().unwrap_or(lower);
        }
        s
    }
}

fn ms(ns: u64) -> String {
    let v = ns as f64 / 1e6;
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Work done per window of wall time, outside gaps.
#[derive(Debug, Clone)]
pub struct Windows {
    window_ns: u64,
    start_ns: u64,
    units: u64,
    gap_ns: u64,
    /// Units per ms of running time, one per closed window.
    pub rates: Vec<f64>,
}

impl Windows {
    /// Windows of `window_ns`, the first starting at `start_ns`.
    pub fn new(window_ns: u64, start_ns: u64) -> Windows {
        Windows {
            window_ns: window_ns.max(1),
            start_ns,
            units: 0,
            gap_ns: 0,
            rates: Vec::new(),
        }
    }

    /// One unit of work ended at `now_ns`; `gap_ns` of its time was a gap (0 if none). The
    /// window closes when `now_ns` passes its end; its rate is the units over the running
    /// time (wall time less gaps).
    pub fn unit(&mut self, now_ns: u64, gap_ns: u64) {
        self.units += 1;
        self.gap_ns += gap_ns;
        let elapsed = now_ns.saturating_sub(self.start_ns);
        if elapsed >= self.window_ns {
            let running = elapsed.saturating_sub(self.gap_ns);
            // a window that was nearly all gap says nothing about the core's speed
            if running >= elapsed / 2 {
                self.rates.push(self.units as f64 / (running as f64 / 1e6));
            }
            self.start_ns = now_ns;
            self.units = 0;
            self.gap_ns = 0;
        }
    }

    /// `(lowest, median, highest)` window rate as a percentage of the highest; `None` with
    /// fewer than two windows.
    pub fn spread(&self) -> Option<(f64, f64, f64)> {
        if self.rates.len() < 2 {
            return None;
        }
        let mut r = self.rates.clone();
        r.sort_by(|a, b| a.total_cmp(b));
        let top = r[r.len() - 1];
        Some((100.0 * r[0] / top, 100.0 * r[r.len() / 2] / top, 100.0))
    }
}

/// One unit of work: a dependent chain the compiler cannot fold (about 1,300 cycles).
#[inline(never)]
fn unit(mut x: u64) -> u64 {
    for _ in 0..256 {
        x = (x.wrapping_mul(0x9e37_79b9_7f4a_7c15)).rotate_left(7) ^ 1;
    }
    x
}

/// Context switches of the calling thread so far (voluntary and involuntary).
fn switches() -> i64 {
    // SAFETY: an all-zero rusage is a valid value of the plain-integer C struct.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a valid, writable rusage for the call's duration.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) } != 0 {
        return 0;
    }
    r.ru_nvcsw + r.ru_nivcsw
}

/// CPU time the calling thread has used, ns (`CLOCK_THREAD_CPUTIME_ID`; 0 if the clock
/// fails). Unlike wall time it leaves out the time the thread waited for a core, and with
/// paravirtual steal accounting the time the host took the vCPU away.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The steal column of `/proc/stat` for `cpu`, ms (None where there is none).
pub fn steal_ms(cpu: usize) -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&name))?;
    let ticks: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks * 1000 / hz as u64)
}

/// What one probe saw.
pub struct Probe {
    /// The gaps.
    pub gaps: Gaps,
    /// The speed outside gaps, per window.
    pub windows: Windows,
    /// How long it ran, ns.
    pub wall_ns: u64,
    /// Units of work done.
    pub units: u64,
}

/// Spins on the calling thread (pin it first) for `seconds`; a unit of work over
/// `threshold_ns` is a gap; speed is taken per `window_ns`.
pub fn probe(seconds: f64, threshold_ns: u64, window_ns: u64) -> Probe {
    // the unit's own time: the fastest of a few thousand
    let mut x = 1u64;
    let mut own_ns = u64::MAX;
    for _ in 0..5000 {
        let t = Instant::now();
        x = black_box(unit(x));
        own_ns = own_ns.min(t.elapsed().as_nanos() as u64);
    }
    let base = Instant::now();
    let end = Duration::from_secs_f64(seconds).as_nanos() as u64;
    let mut gaps = Gaps::default();
    let mut windows = Windows::new(window_ns, 0);
    let mut sw = switches();
    let mut prev = 0u64;
    let mut units = 0u64;
    loop {
        x = black_box(unit(x));
        let now = base.elapsed().as_nanos() as u64;
        units += 1;
        let took = now - prev;
        let mut gap = 0;
        if took > threshold_ns {
            gap = took.saturating_sub(own_ns);
            let s = switches();
            let kind = if s != sw {
                GapKind::SwitchedOut
            } else {
                GapKind::HeldByHostOrInterrupts
            };
            sw = s;
            gaps.record(gap, kind);
        }
        windows.unit(now, gap);
        // the clock and the syscalls above are part of the next unit's time
        prev = base.elapsed().as_nanos() as u64;
        if prev >= end {
            return Probe {
                gaps,
                windows,
                wall_ns: prev,
                units,
            };
        }
    }
}

/// The cores the calling thread may run on (empty if the kernel will not say).
pub fn allowed_cores() -> Vec<usize> {
    crate::affinity::allowed().unwrap_or_default()
}

/// What [`check`] found on one core.
pub struct CoreReport {
    /// The core.
    pub core: usize,
    /// The probe's figures.
    pub probe: Probe,
    /// Steal `/proc/stat` counted on the core meanwhile, ms (None where it has none).
    pub steal_ms: Option<u64>,
}

impl CoreReport {
    /// Share of the time more than 2 ms into a gap, percent.
    pub fn beyond_2ms(&self) -> f64 {
        self.probe.gaps.beyond_share(2, self.probe.wall_ns)
    }
}

impl std::fmt::Display for CoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (p, g) = (&self.probe, &self.probe.gaps);
        let share = |ns: u64| 100.0 * ns as f64 / p.wall_ns.max(1) as f64;
        write!(
            f,
            "core {}: {:.1} s, {} units; gaps {} ({:.2} % of the time): switched out {:.2} %, held by the host or interrupts {:.2} %; longest {:.2} ms",
            self.core,
            p.wall_ns as f64 / 1e9,
            p.units,
            g.count.iter().sum::<u64>(),
            share(g.total()),
            share(g.total_ns[0]),
            share(g.total_ns[1]),
            g.longest_ns as f64 / 1e6,
        )?;
        if let Some(ms) = self.steal_ms {
            write!(f, "; steal in /proc/stat {ms} ms")?;
        }
        writeln!(
            f,
            "\n  time more than 0.5 / 1 / 2 ms into a gap: {:.3} % / {:.3} % / {:.3} % (the share of evenly spread deadlines the gaps alone make later than that)",
            g.beyond_share(0, p.wall_ns),
            g.beyond_share(1, p.wall_ns),
            g.beyond_share(2, p.wall_ns)
        )?;
        match p.windows.spread() {
            Some((low, median, _)) => writeln!(
                f,
                "  speed outside gaps, per window: lowest {low:.1} %, median {median:.1} % of the fastest ({} windows)",
                p.windows.rates.len()
            )?,
            None => writeln!(f, "  speed outside gaps: too few windows")?,
        }
        write!(f, "  gaps by length:\n{}", g.histogram())
    }
}

/// Probes each of `cores` in turn for `seconds` on a thread pinned there (see [`probe`]).
/// Fails on a core this process may not run on, before probing any.
pub fn check(
    cores: &[usize],
    seconds: f64,
    threshold_ns: u64,
    window_ns: u64,
) -> std::io::Result<Vec<CoreReport>> {
    use std::io::{Error, ErrorKind};
    let allowed = allowed_cores();
    if let Some(c) = cores.iter().find(|c| !allowed.contains(c)) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("core {c} is not one this process may run on (it may use {allowed:?})"),
        ));
    }
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "seconds must be positive",
        ));
    }
    let mut out = Vec::new();
    for &core in cores {
        let steal0 = steal_ms(core);
        let probe = std::thread::spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: core })
                .then(|| probe(seconds, threshold_ns, window_ns))
        })
        .join()
        .map_err(|_| Error::other("the probe thread panicked"))?
        .ok_or_else(|| Error::other(format!("cannot pin a thread to core {core}")))?;
        out.push(CoreReport {
            core,
            probe,
            steal_ms: steal0.zip(steal_ms(core)).map(|(a, b)| b.saturating_sub(a)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_fill_buckets_and_the_share_beyond_each_delay() {
        let mut g = Gaps::default();
        g.record(150_000, GapKind::HeldByHostOrInterrupts); // < 0.2 ms
        g.record(1_500_000, GapKind::SwitchedOut); // 1-2 ms
        g.record(12_000_000, GapKind::HeldByHostOrInterrupts); // >= 10 ms
        assert_eq!(g.count, [1, 0, 0, 1, 0, 0, 1]);
        assert_eq!(g.total_ns, [1_500_000, 12_150_000]);
        assert_eq!(g.longest_ns, 12_000_000);
        // beyond 0.5 ms: 1.0 + 11.5 ms; beyond 1 ms: 0.5 + 11 ms; beyond 2 ms: 10 ms
        assert_eq!(g.beyond_ns, [12_500_000, 11_500_000, 10_000_000]);
        // 10 ms of one second lies more than 2 ms into a gap: 1 %
        assert!((g.beyond_share(2, 1_000_000_000) - 1.0).abs() < 1e-9);
        let h = g.histogram();
        assert!(h.contains("0-0.2 ms: 1"), "{h}");
        assert!(h.contains("1-2 ms: 1"), "{h}");
        assert!(h.contains(">= 10 ms: 1"), "{h}");
        assert!(!h.contains("2-5 ms"), "{h}");
    }

    #[test]
    fn window_rates_leave_out_the_gaps() {
        let mut w = Windows::new(1_000_000, 0);
        // window 1: 100 units in 1 ms, no gap: 100 units/ms
        for i in 1..=100 {
            w.unit(i * 10_000, 0);
        }
        // window 2: 50 units over 1 ms of which 0.5 ms was a gap: still 100 units/ms
        for i in 1..=50 {
            let gap = if i == 25 { 500_000 } else { 0 };
            w.unit(1_000_000 + i * 20_000, gap);
        }
        // window 3: 80 units in 1 ms, no gap: a core 20 % slower
        for i in 1..=80 {
            w.unit(2_000_000 + i * 12_500, 0);
        }
        assert_eq!(w.rates.len(), 3);
        assert!((w.rates[0] - 100.0).abs() < 1e-9);
        assert!((w.rates[1] - 100.0).abs() < 1e-9);
        assert!((w.rates[2] - 80.0).abs() < 1e-9);
        let (low, median, high) = w.spread().unwrap();
        assert!((low - 80.0).abs() < 1e-9 && (median - 100.0).abs() < 1e-9 && high == 100.0);
    }

    #[test]
    fn a_short_probe_does_work_and_accounts_its_time() {
        let p = probe(0.2, 50_000, 20_000_000);
        assert!(p.wall_ns >= 200_000_000, "{}", p.wall_ns);
        assert!(p.units > 1000, "{}", p.units);
        // gaps are part of the wall time, never more than it (no claim on their number: the
        // tests beside this one share the cores)
        assert!(p.gaps.total() <= p.wall_ns);
    }

    #[test]
    fn steal_is_read_for_a_cpu_that_exists_and_not_for_one_that_does_not() {
        // every Linux /proc/stat has the steal column (0 on bare metal)
        assert!(steal_ms(0).is_some());
        assert!(steal_ms(1 << 20).is_none());
    }

    #[test]
    fn a_check_reports_each_core_and_refuses_one_it_may_not_use() {
        let cores = allowed_cores();
        let first = cores[0];
        let r = check(&[first], 0.1, 50_000, 20_000_000).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].core, first);
        let text = r[0].to_string();
        assert!(text.starts_with(&format!("core {first}: ")), "{text}");
        assert!(text.contains("into a gap"), "{text}");
        assert!(check(&[1 << 20], 0.1, 50_000, 20_000_000).is_err());
        assert!(check(&[first], 0.0, 50_000, 20_000_000).is_err());
    }

    #[test]
    fn a_window_that_was_mostly_gap_gives_no_rate() {
        let mut w = Windows::new(1_000_000, 0);
        w.unit(100_000, 0);
        w.unit(1_200_000, 1_000_000);
        assert!(w.rates.is_empty());
        assert!(w.spread().is_none());
    }
}
