//! The overload phase: a fresh node (UDP) offered a multiple of its capacity for a few
//! seconds, to show what overload does to it (issue 14, item 12):
//!
//! * every packet is accounted for: sent = received by the node + dropped by the kernel
//!   (socket queue full, `SO_RXQ_OVFL`), and received = forwarded + dropped with a reason +
//!   still held;
//! * memory stays within the configured bounds: held packets never exceed the wheel and slab
//!   bound, and the process's resident memory grows by no more than that bound's bytes;
//! * packets already admitted leave on time: the wheel's release error (lateness) of what
//!   was forwarded during the phase.
//!
//! The load: a pool of fresh packets with exponential delays, as many as the node could
//! forward in the phase, sent round and round at the offered rate, so the node sees fresh
//! packets first and replays of them afterwards: both cost a full X25519 before the node can
//! tell them apart, as an attacker's replays would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mixplane_dataplane::counters::{NodeDrop, WorkerPhase};
use mixplane_dataplane::histogram::{AtomicHistogram, quantile_of};
use mixplane_dataplane::node::{Node, NodeConfig};
use mixplane_dataplane::sphinx::{DropReason, NodeKeys, SphinxKey};
use rand::{RngExt, SeedableRng};

use super::{Args, BATCH, build_frames, sum};

/// Bytes of one small (ack and regular packet) slab slot (`dataplane/src/slab.rs`).
const SMALL_SLOT_BYTES: f64 = 2432.0;

/// Resident memory of this process, bytes (`VmRSS`).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The host's UDP receive-buffer errors (`/proc/net/snmp`, `Udp: RcvbufErrors`) and the
/// packets its CPUs' input backlogs dropped (`/proc/net/softnet_stat`, second column): where
/// datagrams die before a socket sees them, so the node cannot count them itself.
fn host_drops() -> (u64, u64) {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let rcvbuf = match udp.as_slice() {
        [names, values, ..] => names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "RcvbufErrors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
    let backlog = softnet
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum();
    (rcvbuf, backlog)
}

fn lateness(node: &Node) -> Vec<u64> {
    let mut v = vec![0u64; AtomicHistogram::buckets()];
    for c in node.counters() {
        c.release_lateness.add_into(&mut v);
    }
    v
}

/// Samples resident memory and held packets until stopped; returns their maxima.
fn watch(node: Arc<Node>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut rss_max, mut held_max) = (0u64, 0u64);
        while !stop.load(Relaxed) {
            rss_max = rss_max.max(rss());
            held_max = held_max.max(sum(&node, |c| c.wheel_len.load(Relaxed)));
            std::thread::sleep(Duration::from_millis(10));
        }
        (rss_max, held_max)
    })
}

/// Offers `multiple` × `capacity` packets/s to a fresh node for `args.overload_seconds`.
pub(super) fn phase(
    args: &Args,
    secret: &[u8; 32],
    sink: SocketAddr,
    capacity: f64,
    multiple: f64,
) -> anyhow::Result<()> {
    let rate = capacity * multiple;
    let seconds = args.overload_seconds;
    let pool_len = ((capacity * seconds) as usize).max(BATCH);
    let mut rng = rand::rngs::StdRng::seed_from_u64(40 + multiple as u64);
    let mean_ns = args.overload_delay_ms * 1e6;
    let delays: Vec<u64> = (0..pool_len)
        .map(|_| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            ((-u.ln() * mean_ns) as u64).min(1_000_000_000)
        })
        .collect();
    println!(
        "overload {multiple}x: building {pool_len} fresh packets (mean delay {} ms)...",
        args.overload_delay_ms
    );
    let pool = build_frames(secret, sink, pool_len, |i| delays[i], 500 + multiple as u64)?;
    let cores = super::worker_cores(args.workers);
    let held_bound = args.overload_held;
    let node = Arc::new(Node::start(
        NodeConfig {
            workers: args.workers,
            batch: args.batch,
            batch_budget_ns: args.batch_budget_us * 1000,
            pin_cores: Some(cores),
            io: args.io,
            wheel_capacity: held_bound,
            wheel_tick_ns: args.tick_us * 1000,
            slab_small: held_bound,
            replay_expected: pool_len as u64 * 2,
            ..NodeConfig::default()
        },
        Arc::new(NodeKeys::single(SphinxKey::from_secret(*secret, 1))),
    )?);
    let to = node.local_addr();
    // one datagram per message, no GSO: the kernel's drop counters count socket buffers, and a
    // GSO super-packet dropped whole would count as one
    let tx = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let sender = Sender::new(args.overload_sender, &tx, to)?;
    let late0 = lateness(&node);
    let rss0 = rss();
    let host0 = host_drops();
    let cpu0 = cpu_times();
    let sched0 = thread_sched();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(node.clone(), stop.clone());

    let total = (rate * seconds) as usize;
    let (sent, failed, send_s) = send_all(sender, &pool, total, rate, !args.overload_sleep);
    let cpu = cpu_delta(&cpu0, &cpu_times());
    let sched = sched_delta(&sched0, &thread_sched());
    // let the node finish what it holds (the longest delay is capped at 1 s)
    let end = Instant::now() + Duration::from_secs(3);
    std::thread::sleep(Duration::from_millis(300));
    while sum(&node, |c| c.wheel_len.load(Relaxed)) > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Relaxed);
    let (rss_max, held_max) = watcher.join().expect("watcher");
    let host1 = host_drops();
    report(
        &node,
        Report {
            multiple,
            capacity,
            sent,
            failed,
            send_s,
            held_bound,
            held_max,
            rss0,
            rss_max,
            late0,
            host: (host1.0 - host0.0, host1.1 - host0.1),
        },
    );
    print_cpu(multiple, send_s, &cpu, &sched);
    match Arc::try_unwrap(node) {
        Ok(node) => node.shutdown()?,
        Err(_) => anyhow::bail!("node still shared"),
    }
    Ok(())
}

struct Report {
    multiple: f64,
    capacity: f64,
    sent: usize,
    failed: usize,
    send_s: f64,
    held_bound: usize,
    held_max: u64,
    rss0: u64,
    rss_max: u64,
    late0: Vec<u64>,
    /// Host-wide drops during the phase: UDP receive-buffer errors, input-backlog drops.
    host: (u64, u64),
}

fn report(node: &Node, r: Report) {
    let rx = sum(node, |c| c.rx_datagrams.load(Relaxed));
    let kernel = sum(node, |c| c.node_drops(NodeDrop::KernelRxOverflow));
    let fwd = sum(node, |c| c.forwarded.load(Relaxed));
    let out = sum(node, |c| c.tx_datagrams.load(Relaxed));
    let held = sum(node, |c| c.wheel_len.load(Relaxed));
    let mut reasons = Vec::new();
    let mut dropped = 0;
    for reason in DropReason::ALL {
        let n = sum(node, |c| c.sphinx_drops(reason));
        if n > 0 {
            reasons.push(format!("{} {n}", reason.name()));
            dropped += n;
        }
    }
    for reason in NodeDrop::ALL {
        let n = sum(node, |c| c.node_drops(reason));
        if n > 0 && reason != NodeDrop::KernelRxOverflow {
            reasons.push(format!("{} {n}", reason.name()));
            dropped += n;
        }
    }
    let late: Vec<u64> = lateness(node)
        .iter()
        .zip(&r.late0)
        .map(|(a, b)| a - b)
        .collect();
    let batches = sum(node, |c| c.batch_size.count());
    let proc_ns = sum(node, |c| c.phase_ns(WorkerPhase::Process));
    println!(
        "overload {}x of {:.0} packets/s: offered {} at {:.0} packets/s ({} send errors); kernel dropped {kernel} (socket queue full, as the node counts it; the host counted {} UDP receive-buffer errors and {} input-backlog drops), node received {rx}: admitted {fwd} (sent on {out}, still held {held}), dropped {dropped} ({}); unaccounted: sent - received - kernel drops = {}, received - admitted - dropped = {}",
        r.multiple,
        r.capacity,
        r.sent,
        r.sent as f64 / r.send_s,
        r.failed,
        r.host.0,
        r.host.1,
        if reasons.is_empty() {
            "none".to_string()
        } else {
            reasons.join(", ")
        },
        r.sent as i64 - r.failed as i64 - rx as i64 - kernel as i64,
        rx as i64 - fwd as i64 - dropped as i64,
    );
    println!(
        "overload {}x: held at most {} packets (bound {} per worker); resident memory {:.1} MiB before, at most {:.1} MiB during (+{:.1} MiB; the bound's slab slots are {:.1} MiB); {batches} receive batches of {:.1} on average, process_batch {:.2} µs/packet",
        r.multiple,
        r.held_max,
        r.held_bound,
        r.rss0 as f64 / 1048576.0,
        r.rss_max as f64 / 1048576.0,
        r.rss_max.saturating_sub(r.rss0) as f64 / 1048576.0,
        r.held_bound as f64 * SMALL_SLOT_BYTES / 1048576.0,
        sum(node, |c| c.batch_size.sum()) as f64 / batches.max(1) as f64,
        proc_ns as f64 / sum(node, |c| c.batch_size.sum()).max(1) as f64 / 1e3,
    );
    let n: u64 = late.iter().sum();
    println!(
        "overload {}x: release error of the {n} packets released: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (target p99 <= 2 ms)",
        r.multiple,
        quantile_of(&late, 0.5) as f64 / 1e6,
        quantile_of(&late, 0.99) as f64 / 1e6,
        quantile_of(&late, 0.999) as f64 / 1e6,
        quantile_of(&late, 1.0) as f64 / 1e6,
    );
}

/// Sends `total` datagrams from `pool` (round and round) at `rate` per second, in batches of
/// [`BATCH`], from a thread of its own pinned to the first core (away from the workers on the
/// last ones). Returns (sent, failed, seconds taken).
///
/// A thread of its own: pinning the calling thread instead would leave it pinned for the next
/// phase, whose node then sees one core (`available_parallelism` and `get_core_ids` follow
/// the calling thread's affinity) and pins its worker to the sender's core. Before
/// 2026-12-01 the 10× phase after the 2× one ran that way.
fn send_all(
    mut sender: Sender<'_>,
    pool: &[Vec<u8>],
    total: usize,
    rate: f64,
    spin: bool,
) -> (usize, usize, f64) {
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(first) = core_affinity::get_core_ids().and_then(|c| c.first().copied()) {
                core_affinity::set_for_current(first);
            }
            let t0 = Instant::now();
            let (mut sent, mut failed) = (0usize, 0usize);
            while sent < total {
                pace(t0 + Duration::from_secs_f64(sent as f64 / rate), spin);
                let n = BATCH.min(total - sent);
                let frames: Vec<&[u8]> = (sent..sent + n)
                    .map(|i| &pool[i % pool.len()][..])
                    .collect();
                failed += sender.send(&frames);
                sent += n;
            }
            (sent, failed, t0.elapsed().as_secs_f64())
        })
        .join()
        .expect("sender thread")
    })
}

/// Waits until `due`: spinning all the way (`spin`), or sleeping until shortly before it and
/// spinning the rest, which leaves the sender's CPU to other threads while it waits.
fn pace(due: Instant, spin: bool) {
    const SLACK: Duration = Duration::from_micros(100);
    if !spin {
        let left = due.saturating_duration_since(Instant::now());
        if left > 2 * SLACK {
            std::thread::sleep(left - SLACK);
        }
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

/// How the overload phase sends its datagrams.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(super) enum SenderKind {
    /// One `send_to` per datagram.
    Single,
    /// One `sendmmsg` per batch of datagrams (still one datagram per message, no GSO).
    Mmsg,
}

/// The overload phase's sending end: one socket, one destination.
struct Sender<'a> {
    kind: SenderKind,
    tx: &'a std::net::UdpSocket,
    to: SocketAddr,
    /// The destination as a `sockaddr_in`, for `sendmmsg`.
    addr: libc::sockaddr_in,
}

impl<'a> Sender<'a> {
    fn new(kind: SenderKind, tx: &'a std::net::UdpSocket, to: SocketAddr) -> anyhow::Result<Self> {
        let SocketAddr::V4(v4) = to else {
            anyhow::bail!("the overload sender expects an IPv4 node address, got {to}");
        };
        // SAFETY: `sockaddr_in` is plain data; all zeros is a valid value.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = v4.port().to_be();
        addr.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
        Ok(Sender { kind, tx, to, addr })
    }

    /// Sends every frame as one datagram; returns how many could not be sent.
    fn send(&mut self, frames: &[&[u8]]) -> usize {
        match self.kind {
            SenderKind::Single => frames
                .iter()
                .filter(|f| self.tx.send_to(f, self.to).is_err())
                .count(),
            SenderKind::Mmsg => self.send_mmsg(frames),
        }
    }

    fn send_mmsg(&mut self, frames: &[&[u8]]) -> usize {
        use std::os::fd::AsRawFd;
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        let addr_ptr = (&raw mut self.addr).cast::<libc::c_void>();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: `msghdr` is plain data; all zeros is a valid value (no control data).
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = addr_ptr;
                hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                hdr.msg_iov = v;
                hdr.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        let mut done = 0;
        let mut failed = 0;
        while done < msgs.len() {
            let rest = &mut msgs[done..];
            // SAFETY: `rest` holds `rest.len()` initialised headers, each naming `self.addr`
            // and one iovec of `iov` over a frame of `frames`; all of them outlive the call,
            // which only reads them (and writes `msg_len`).
            let n = unsafe {
                libc::sendmmsg(self.tx.as_raw_fd(), rest.as_mut_ptr(), rest.len() as _, 0)
            };
            if n <= 0 {
                // the first message of `rest` failed: count it and go on with the next
                done += 1;
                failed += 1;
            } else {
                done += n as usize;
            }
        }
        failed
    }
}

/// Jiffies of each CPU (`/proc/stat`): user + nice, system, irq, softirq, steal, idle + iowait.
fn cpu_times() -> Vec<[u64; 6]> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            let f = |i: usize| v.get(i).copied().unwrap_or(0);
            [f(0) + f(1), f(2), f(5), f(6), f(7), f(3) + f(4)]
        })
        .collect()
}

fn cpu_delta(a: &[[u64; 6]], b: &[[u64; 6]]) -> Vec<[u64; 6]> {
    a.iter()
        .zip(b)
        .map(|(a, b)| core::array::from_fn(|i| b[i].saturating_sub(a[i])))
        .collect()
}

/// Each thread's scheduler figures (`/proc/self/task/*/schedstat` and `status`), by name and
/// thread id: ns on a CPU, ns waiting on a run queue, involuntary context switches.
fn thread_sched() -> Vec<(String, [u64; 3])> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        let comm = format!(
            "{} ({})",
            read("comm").trim(),
            t.file_name().to_string_lossy()
        );
        let ss: Vec<u64> = read("schedstat")
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let nvcsw = read("status")
            .lines()
            .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let f = |i: usize| ss.get(i).copied().unwrap_or(0);
        out.push((comm, [f(0), f(1), nvcsw]));
    }
    out.sort();
    out
}

fn sched_delta(a: &[(String, [u64; 3])], b: &[(String, [u64; 3])]) -> Vec<(String, [u64; 3])> {
    b.iter()
        .map(|(name, v)| {
            let before = a.iter().find(|(n, _)| n == name).map_or([0; 3], |x| x.1);
            (
                name.clone(),
                core::array::from_fn(|i| v[i].saturating_sub(before[i])),
            )
        })
        .collect()
}

/// Where each CPU's time went while the sender sent, and how much of it each thread of this
/// process that ran at least 1% of the time got.
fn print_cpu(multiple: f64, seconds: f64, cpu: &[[u64; 6]], sched: &[(String, [u64; 3])]) {
    for (i, c) in cpu.iter().enumerate() {
        let total = c.iter().sum::<u64>().max(1) as f64 / 100.0;
        println!(
            "overload {multiple}x: cpu{i} while sending: user {:.0}%, system {:.0}%, irq {:.0}%, softirq {:.0}%, steal {:.0}%, idle {:.0}%",
            c[0] as f64 / total,
            c[1] as f64 / total,
            c[2] as f64 / total,
            c[3] as f64 / total,
            c[4] as f64 / total,
            c[5] as f64 / total,
        );
    }
    for (name, [run, wait, nvcsw]) in sched {
        if (*run as f64) < seconds * 1e7 {
            continue;
        }
        println!(
            "overload {multiple}x: {name} while sending: on a CPU {:.0}% of the time, waiting for one {:.0}%, {nvcsw} involuntary switches",
            *run as f64 / seconds / 1e7,
            *wait as f64 / seconds / 1e7,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` distinct datagrams with `kind` through [`send_all`] and returns what a local
    /// socket received, in order.
    fn round_trip(kind: SenderKind, n: usize) -> Vec<Vec<u8>> {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let pool: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 100 + i]).collect();
        let sender = Sender::new(kind, &tx, rx.local_addr().unwrap()).unwrap();
        let (sent, failed, _) = send_all(sender, &pool, n, 1e6, false);
        assert_eq!((sent, failed), (n, 0));
        let mut buf = [0u8; 2048];
        (0..n)
            .map(|_| {
                let len = rx.recv(&mut buf).expect("datagram");
                buf[..len].to_vec()
            })
            .collect()
    }

    #[test]
    fn both_senders_send_each_frame_as_one_datagram() {
        for kind in [SenderKind::Single, SenderKind::Mmsg] {
            let n = BATCH + 5;
            let got = round_trip(kind, n);
            let want: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 100 + i]).collect();
            assert_eq!(got, want, "{kind:?}");
        }
    }

    #[test]
    fn sending_leaves_the_callers_cores_alone() {
        let before = std::thread::available_parallelism().map_or(1, |n| n.get());
        round_trip(SenderKind::Mmsg, 3);
        let after = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(before, after, "the sender pinned the calling thread");
    }
}
