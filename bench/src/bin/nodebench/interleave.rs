//! `--interleave ROUNDS`: the forwarding rate against the unwrap rate, measured in alternating
//! slices on the same core. On a VM whose speed moves by 10–50 % from one second to the next,
//! a phase of a second between two unwrap measurements compares different machines; here
//! each slice of forwarding (the node flat out, closed loop) sits between two slices of the
//! unwrap microbenchmark (the same `process_batch` over 64 frames, on a thread pinned to the
//! worker's core while the worker waits with nothing to do), every slice a fraction of a
//! second, and the share is read per round, then summarised over all rounds. One worker.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mixplane_dataplane::counters::{NodeDrop, WorkerPhase};
use mixplane_dataplane::hostcheck::{steal_ms, thread_cpu_ns};
use mixplane_dataplane::io::Outgoing;
use mixplane_dataplane::node::Node;
use mixplane_dataplane::sphinx::{NoReplay, NodeKeys, Processor, ProcessorConfig, SphinxKey};

use super::{Args, BATCH, Sender, Transport, open_phase, sched_ns, sum, worker_cores};

/// Packets between the sender and the node at most: enough to keep the worker busy, few
/// enough that a slice drains within milliseconds.
const IN_FLIGHT: u64 = 1024;
/// Sending before a forwarding slice's window opens (the worker's queue fills).
const WARM_UP: Duration = Duration::from_millis(20);

/// Packets, wall-clock seconds and CPU seconds of one slice, and the host's steal on the
/// core meanwhile.
#[derive(Clone, Copy, Default)]
struct Slice {
    packets: u64,
    wall: f64,
    cpu: f64,
    steal_ms: Option<u64>,
}

impl Slice {
    fn rate(&self) -> f64 {
        self.packets as f64 / self.wall
    }
    fn cpu_rate(&self) -> f64 {
        self.packets as f64 / self.cpu.max(f64::MIN_POSITIVE)
    }
    /// Two slices pooled: all their packets over all their time.
    fn pooled(&self, other: &Slice) -> Slice {
        Slice {
            packets: self.packets + other.packets,
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
            steal_ms: None,
        }
    }
}

/// The unwrap microbenchmark on its own thread, pinned to `core`, run for a slice on request.
struct Unwrapper {
    ask: mpsc::Sender<Duration>,
    answer: mpsc::Receiver<Slice>,
    thread: std::thread::JoinHandle<()>,
}

impl Unwrapper {
    fn start(core: usize, secret: [u8; 32], template: Vec<Vec<u8>>) -> Unwrapper {
        let (ask, asked) = mpsc::channel::<Duration>();
        let (answered, answer) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
            let mut proc = Processor::new(
                std::sync::Arc::new(NodeKeys::single(SphinxKey::from_secret(secret, 1))),
                ProcessorConfig::default(),
            );
            let mut work = template.clone();
            let mut out = Vec::new();
            while let Ok(len) = asked.recv() {
                let (t, steal0) = (Instant::now(), steal_ms(core));
                let (mut packets, mut wall, mut cpu) = (0u64, Duration::ZERO, 0u64);
                while t.elapsed() < len {
                    // the copy back from the template is not the unwrap's: not timed
                    for (w, f) in work.iter_mut().zip(&template) {
                        w.copy_from_slice(f);
                    }
                    let (t0, c0) = (Instant::now(), thread_cpu_ns());
                    proc.process_batch(&mut work, &NoReplay, &mut out);
                    cpu += thread_cpu_ns().saturating_sub(c0);
                    wall += t0.elapsed();
                    packets += work.len() as u64;
                }
                let s = Slice {
                    packets,
                    wall: wall.as_secs_f64(),
                    cpu: cpu as f64 / 1e9,
                    steal_ms: steal0.zip(steal_ms(core)).map(|(a, b)| b.saturating_sub(a)),
                };
                if answered.send(s).is_err() {
                    break;
                }
            }
        });
        Unwrapper {
            ask,
            answer,
            thread,
        }
    }

    fn slice(&self, len: Duration) -> anyhow::Result<Slice> {
        self.ask.send(len)?;
        Ok(self.answer.recv()?)
    }

    fn stop(self) {
        drop(self.ask);
        let _ = self.thread.join();
    }
}

/// Frames the node has taken in (received, or dropped by the kernel for want of room).
fn handled(node: &Node) -> u64 {
    sum(node, |c| {
        c.rx_datagrams.load(Relaxed) + c.node_drops(NodeDrop::KernelRxOverflow)
    })
}

/// Frames the workers have handed to their transports (for TCP: queued on a connection).
fn forwarded(node: &Node) -> u64 {
    sum(node, |c| c.tx_datagrams.load(Relaxed))
}

/// Frames that have left the node: for UDP what the send calls took, for TCP what was
/// written to the connections (a frame queued behind a full socket is not counted yet).
fn sent_out(node: &Node, transport: Transport) -> u64 {
    match transport {
        Transport::Udp => forwarded(node),
        Transport::Tcp | Transport::Noise => node
            .tcp_counters()
            .iter()
            .map(|c| c.frames_out.load(Relaxed))
            .sum(),
    }
}

/// Where a forwarding window opened: the time, the node's forwarded count, the workers' CPU
/// time, their phase counters and the host's steal on the worker's core.
struct Window {
    at: Instant,
    forwarded: u64,
    cpu_ns: u64,
    phase_ns: [u64; 4],
    steal_ms: Option<u64>,
}

/// The sender stops: waits until the node has taken in all `sent` packets, forwarded what
/// it will and written all of it out (at most two seconds; false if it had not by then).
fn drain(node: &Node, tx: &mut Sender, sent: u64, transport: Transport) -> bool {
    tx.flush();
    let end = Instant::now() + Duration::from_secs(2);
    let mut last = (u64::MAX, Instant::now());
    while Instant::now() < end {
        tx.progress();
        std::thread::sleep(Duration::from_micros(500));
        let f = forwarded(node);
        if f != last.0 {
            last = (f, Instant::now());
        } else if handled(node) >= sent
            && sent_out(node, transport) >= f
            && last.1.elapsed() >= Duration::from_millis(3)
        {
            return true;
        }
    }
    false
}

/// What one transport's rounds gave: per round the forwarding share of the bracketing
/// unwrap rate, in wall-clock and in CPU time.
pub(super) struct Shares {
    pub wall: Vec<f64>,
    pub cpu: Vec<f64>,
    /// Packets sent over all rounds, and how many the node forwarded.
    pub sent: u64,
    pub forwarded: u64,
    /// Frames the TCP sink got (TCP and Noise).
    pub delivered: Option<u64>,
}

/// Runs `rounds` forwarding slices of `len` over `transport`, each between two unwrap slices
/// of the same length, with `frames` (each sent once; the rounds stop early when they run
/// out). Prints each round and the worker's time per packet over all forwarding windows.
pub(super) fn run(
    args: &Args,
    transport: Transport,
    secret: &[u8; 32],
    sink_addr: std::net::SocketAddr,
    frames: &[Vec<u8>],
    rounds: usize,
    len: Duration,
) -> anyhow::Result<Shares> {
    anyhow::ensure!(
        args.workers == 1,
        "--interleave measures one worker (--workers 1)"
    );
    let core = worker_cores(1)[0];
    let unwrapper = Unwrapper::start(core, *secret, frames[..BATCH].to_vec());
    let (node, tcp_sink, mut tx) = open_phase(args, transport, secret, sink_addr, frames)?;
    let to = node.local_addr();
    let phases = [
        WorkerPhase::Receive,
        WorkerPhase::Process,
        WorkerPhase::Hold,
        WorkerPhase::Release,
    ];
    let mut phase_ns = [0u64; 4];
    let mut window_packets = 0u64;
    // host steal on the worker's core over the forwarding windows: ms, and windows with any
    let mut steal = (0u64, 0u32);
    // the same over the unwrap slices around each window (each slice counted once per round
    // it brackets)
    let mut unwrap_steal = (0u64, 0u32);
    let mut shares = Shares {
        wall: Vec::new(),
        cpu: Vec::new(),
        sent: 0,
        forwarded: 0,
        delivered: None,
    };
    let (mut sent, mut next) = (0u64, 0usize);
    let mut before = unwrapper.slice(len)?;
    println!(
        "{transport:?}, interleaved on core {core}: {rounds} rounds, slices of {} ms (forwarding between two unwraps)",
        len.as_millis()
    );
    for round in 0..rounds {
        if next + BATCH > frames.len() {
            println!("{transport:?}: out of packets after {round} rounds (raise --packets)");
            break;
        }
        // forwarding: warm up, then count over a window of `len`
        let t_start = Instant::now();
        let mut window: Option<Window> = None;
        loop {
            let now = Instant::now();
            if window.is_none() && now.duration_since(t_start) >= WARM_UP {
                let ph = phases.map(|p| sum(&node, |c| c.phase_ns(p)));
                let stolen = steal_ms(core);
                window = Some(Window {
                    at: now,
                    forwarded: sent_out(&node, transport),
                    cpu_ns: sched_ns("mixplane-w").0,
                    phase_ns: ph,
                    steal_ms: stolen,
                });
            }
            if window
                .as_ref()
                .is_some_and(|w| now.duration_since(w.at) >= len)
            {
                break;
            }
            if next + BATCH > frames.len() {
                break;
            }
            if sent.saturating_sub(handled(&node)) > IN_FLIGHT {
                tx.progress();
                continue;
            }
            let out: Vec<Outgoing<'_>> = frames[next..next + BATCH]
                .iter()
                .map(|f| Outgoing { to, data: f })
                .collect();
            tx.send(&out);
            next += BATCH;
            sent += BATCH as u64;
        }
        let Some(Window {
            at: t0,
            forwarded: fwd0,
            cpu_ns: cpu0,
            phase_ns: ph0,
            steal_ms: steal0,
        }) = window
        else {
            println!(
                "{transport:?}: out of packets in round {} (raise --packets)",
                round + 1
            );
            drain(&node, &mut tx, sent, transport);
            break;
        };
        let (t1, fwd1, cpu1) = (
            Instant::now(),
            sent_out(&node, transport),
            sched_ns("mixplane-w").0,
        );
        // what the hypervisor took from the worker's core in the window (10 ms ticks)
        let stolen = steal0.zip(steal_ms(core)).map(|(a, b)| b.saturating_sub(a));
        if let Some(ms) = stolen {
            steal.0 += ms;
            steal.1 += u32::from(ms > 0);
        }
        for (acc, (p, p0)) in phase_ns.iter_mut().zip(phases.iter().zip(ph0)) {
            *acc += sum(&node, |c| c.phase_ns(*p)) - p0;
        }
        window_packets += fwd1 - fwd0;
        let fwd = Slice {
            packets: fwd1 - fwd0,
            wall: t1.duration_since(t0).as_secs_f64(),
            cpu: (cpu1 - cpu0) as f64 / 1e9,
            steal_ms: stolen,
        };
        if !drain(&node, &mut tx, sent, transport) {
            println!(
                "{transport:?} round {}: the node had not finished within 2 s of the window",
                round + 1
            );
        }
        let after = unwrapper.slice(len)?;
        // against the mean of the two unwraps around it (their time per packet averaged)
        let around = before.pooled(&after);
        let (unwrap_rate, unwrap_cpu) = (around.rate(), around.cpu_rate());
        for u in [&before, &after] {
            if let Some(ms) = u.steal_ms {
                unwrap_steal.0 += ms;
                unwrap_steal.1 += u32::from(ms > 0);
            }
        }
        let (w, c) = (fwd.rate() / unwrap_rate, fwd.cpu_rate() / unwrap_cpu);
        println!(
            "{transport:?} round {}: forwarding {:.0}/s ({:.2} µs/packet; {:.2} of CPU), unwrap {:.2} before and {:.2} after: {:.1}% of the unwrap rate, {:.1}% on CPU time; host steal {}",
            round + 1,
            fwd.rate(),
            1e6 / fwd.rate(),
            1e6 / fwd.cpu_rate(),
            1e6 / before.rate(),
            1e6 / after.rate(),
            100.0 * w,
            100.0 * c,
            stolen.map_or("unknown".to_string(), |ms| format!("{ms} ms"))
        );
        shares.wall.push(w);
        shares.cpu.push(c);
        before = after;
    }
    unwrapper.stop();
    let per = |ns: u64| ns as f64 / window_packets.max(1) as f64 / 1e3;
    println!(
        "{transport:?}: worker time per forwarded packet in the windows: receive {:.2} µs, process_batch {:.2} µs, hold {:.2} µs, release and send {:.2} µs",
        per(phase_ns[0]),
        per(phase_ns[1]),
        per(phase_ns[2]),
        per(phase_ns[3])
    );
    println!(
        "{transport:?}: host steal on core {core} in the forwarding windows: {} ms in all, in {} of {} windows (/proc/stat, 10 ms ticks)",
        steal.0,
        steal.1,
        shares.wall.len()
    );
    println!(
        "{transport:?}: host steal on core {core} in the unwrap slices around them: {} ms in all, in {} of {} (a slice between two windows counts twice)",
        unwrap_steal.0,
        unwrap_steal.1,
        2 * shares.wall.len()
    );
    println!(
        "batch sizes (packets: batches): {}",
        super::batch_size_list(&node)
    );
    shares.sent = sent;
    shares.forwarded = sent_out(&node, transport);
    node.shutdown()?;
    if let Some(s) = tcp_sink {
        let got = s.stop()?;
        println!("{transport:?}: the TCP sink got {got} of the {sent} frames sent");
        shares.delivered = Some(got);
    }
    Ok(shares)
}

/// Median, lower and upper quartile and range of `v` (sorted in place), as text.
pub(super) fn summary(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "no rounds".into();
    }
    v.sort_by(f64::total_cmp);
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    format!(
        "median {:.1}%, quartiles {:.1}-{:.1}%, range {:.1}-{:.1}% ({} rounds)",
        100.0 * q(0.5),
        100.0 * q(0.25),
        100.0 * q(0.75),
        100.0 * v[0],
        100.0 * v[v.len() - 1],
        v.len()
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::build_frames;

    #[test]
    fn every_packet_sent_in_the_rounds_is_forwarded_and_each_round_has_a_share() {
        let args = Args::parse_from(["mixplane-nodebench"]);
        let secret = [5u8; 32];
        for transport in [Transport::Tcp, Transport::Noise] {
            let sink_addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap();
            let frames = build_frames(&secret, sink_addr, 4000, |_| 0, 1).unwrap();
            let s = run(
                &args,
                transport,
                &secret,
                sink_addr,
                &frames,
                2,
                Duration::from_millis(30),
            )
            .unwrap();
            assert!(!s.wall.is_empty() && s.wall.len() <= 2, "{:?}", s.wall);
            assert!(
                s.wall
                    .iter()
                    .chain(&s.cpu)
                    .all(|&x| x > 0.0 && x.is_finite())
            );
            assert!(s.sent > 0);
            assert_eq!(s.forwarded, s.sent, "{transport:?}");
            assert_eq!(s.delivered, Some(s.sent), "{transport:?}");
        }
    }

    #[test]
    fn a_round_that_runs_out_of_packets_still_delivers_what_it_sent() {
        let args = Args::parse_from(["mixplane-nodebench"]);
        let secret = [5u8; 32];
        let sink_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        // fewer than the in-flight window: all are sent before the first window opens
        let frames = build_frames(&secret, sink_addr, 8 * BATCH, |_| 0, 2).unwrap();
        let s = run(
            &args,
            Transport::Tcp,
            &secret,
            sink_addr,
            &frames,
            2,
            Duration::from_millis(30),
        )
        .unwrap();
        assert!(s.wall.is_empty(), "{:?}", s.wall);
        assert_eq!(s.sent, frames.len() as u64);
        assert_eq!(s.forwarded, s.sent);
        assert_eq!(s.delivered, Some(s.sent));
    }
}
