//! The `mixplane` command: run a node, or a local mixnet demo.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mixplane_dataplane::demo::{self, DemoConfig};
use mixplane_dataplane::io::IoBackendKind;
use mixplane_dataplane::sphinx::SizeClass;

#[derive(Parser)]
#[command(
    name = "mixplane",
    version,
    about = "A fast, Nym-compatible Sphinx mix node"
)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. info or mixplane_dataplane=debug.
    #[arg(long, global = true, default_value = "warn", env = "MIXPLANE_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    },
}

fn parse_size(s: &str) -> Result<SizeClass, String> {
    SizeClass::ALL
        .into_iter()
        .find(|c| c.name() == s)
        .ok_or_else(|| format!("unknown size class `{s}` (ack, regular, ext8, ext16, ext32)"))
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log)?)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Demo {
            packets,
            size,
            mean_delay_ms,
            workers,
            rate,
            io,
            seed,
        } => {
            let cfg = DemoConfig {
                packets,
                size,
                mean_delay_ms,
                workers,
                rate,
                io,
                seed,
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
