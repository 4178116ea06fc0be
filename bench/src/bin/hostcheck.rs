//! `mixplane-hostcheck`: what this host takes from a busy core, before a node or a benchmark
//! is run on it.
//!
//! ```sh
//! mixplane-hostcheck                        # every core, 10 s each
//! mixplane-hostcheck --cores 2,3 --seconds 30
//! ```
//!
//! On each core in turn it spins on fixed units of work (a dependent multiply chain of about
//! 0.4 µs) and reads the clock after each. A unit that took longer than `--threshold-us` is a
//! gap: time in which a worker there would have released nothing. It reports, per core:
//!
//! - the gaps by length, and by kind: *switched out* (another thread ran: the kernel's, or any
//!   process's) or *held by the host or interrupts* (no other thread ran; on a VM, mostly the
//!   hypervisor running something else on the vCPU, which `/proc/stat` counts as steal);
//! - the share of the time that lies more than 0.5, 1 and 2 ms into a gap: the share of evenly
//!   spread deadlines that these gaps alone make later than that, whatever the node does;
//! - the core's speed outside gaps, per window: how far one benchmark run can move from the
//!   next on this host without any change in the code.
//!
//! See `mixplane_bench::hostcheck` for the accounting and README "Release times on a busy
//! host" for what to do about it.

use anyhow::{Context, bail};
use clap::Parser;
use mixplane_bench::hostcheck::{probe, steal_ms};

#[derive(Parser)]
#[command(about = "How much a host takes from a busy core: gaps, steal and speed steadiness")]
struct Cli {
    /// Cores to probe, one after the other (e.g. "1" or "2,3"); default every core.
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Seconds per core.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// A unit of work longer than this is a gap, µs.
    #[arg(long, default_value_t = 50)]
    threshold_us: u64,
    /// Window for the speed figures, ms.
    #[arg(long, default_value_t = 100)]
    window_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ids = core_affinity::get_core_ids().context("cannot list this process's cores")?;
    let cores: Vec<usize> = if cli.cores.is_empty() {
        ids.iter().map(|c| c.id).collect()
    } else {
        cli.cores.clone()
    };
    if cli.seconds.is_nan() || cli.seconds <= 0.0 {
        bail!("--seconds must be positive");
    }
    if let Some(c) = cores.iter().find(|&&c| !ids.iter().any(|i| i.id == c)) {
        bail!("core {c} is not one this process may run on");
    }
    println!(
        "mixplane-hostcheck: {} s per core, gaps = units of work over {} µs, speed per {} ms window",
        cli.seconds, cli.threshold_us, cli.window_ms
    );
    let mut worst_beyond_2ms = 0.0f64;
    for core in cores {
        let Some(id) = ids.iter().find(|c| c.id == core) else {
            bail!("core {core} is not one this process may run on");
        };
        let (window_ns, threshold_ns) = (cli.window_ms * 1_000_000, cli.threshold_us * 1000);
        let seconds = cli.seconds;
        let steal0 = steal_ms(core);
        let id = *id;
        let p = std::thread::spawn(move || {
            if !core_affinity::set_for_current(id) {
                return None;
            }
            Some(probe(seconds, threshold_ns, window_ns))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
        .with_context(|| format!("cannot pin to core {core}"))?;
        let steal = steal0.zip(steal_ms(core)).map(|(a, b)| b - a);
        let g = &p.gaps;
        let share = |ns: u64| 100.0 * ns as f64 / p.wall_ns as f64;
        println!(
            "core {core}: {:.1} s, {} units; gaps {} ({:.2} % of the time): switched out {:.2} %, held by the host or interrupts {:.2} %; longest {:.2} ms{}",
            p.wall_ns as f64 / 1e9,
            p.units,
            g.count.iter().sum::<u64>(),
            share(g.total()),
            share(g.total_ns[0]),
            share(g.total_ns[1]),
            g.longest_ns as f64 / 1e6,
            match steal {
                Some(ms) => format!("; steal in /proc/stat {ms} ms"),
                None => String::new(),
            }
        );
        println!(
            "  time more than 0.5 / 1 / 2 ms into a gap: {:.3} % / {:.3} % / {:.3} % (the share of evenly spread deadlines the gaps alone make later than that)",
            g.beyond_share(0, p.wall_ns),
            g.beyond_share(1, p.wall_ns),
            g.beyond_share(2, p.wall_ns)
        );
        worst_beyond_2ms = worst_beyond_2ms.max(g.beyond_share(2, p.wall_ns));
        match p.windows.spread() {
            Some((low, median, _)) => println!(
                "  speed outside gaps, per window: lowest {low:.1} %, median {median:.1} % of the fastest ({} windows)",
                p.windows.rates.len()
            ),
            None => println!("  speed outside gaps: too few windows"),
        }
        print!("  gaps by length:\n{}", g.histogram());
    }
    println!(
        "worst core: {worst_beyond_2ms:.3} % of the time more than 2 ms into a gap; a node's release error p99 <= 2 ms needs this well under 1 % on its worker cores"
    );
    Ok(())
}
