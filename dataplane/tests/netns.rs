//! A WAN-like run of a mixed route across network namespaces (issue 11, item 6).
//!
//! Three `mixplane run` processes, A, B and C, each in its own network namespace, each with one
//! veth link to a bridge in a fourth ("switch") namespace, on TEST-NET-1 (192.0.2.0/24) with no
//! route anywhere else. The topology file says A and B speak TCP (B publishes its Noise key, A
//! does not) and C speaks UDP, so a message on route A, B, C goes: test client -> A over plain
//! TCP (v7 frames, as a Nym node sends them), A -> B over Noise, B -> C over UDP, C -> the sink
//! (UDP, in C's namespace); its SURB-ACK goes C -> A over plain TCP, then A -> B -> C -> sink.
//!
//! Where the kernel has `sch_netem`, every node's link gets `delay 10ms loss 1%` on egress
//! (20 ms round trip between any two nodes, 1 % loss each way); where it has not, the test says
//! so and runs the same route without delay or loss. It is skipped (and passes) only where
//! namespaces cannot be made: not root, or no `ip`.
//!
//! Asserted: TCP hops lose nothing (the frames one node's TCP egress wrote are the frames its
//! next hop's TCP ingress read), no node drops a packet, and every message or SURB-ACK missing
//! at the sink is matched by a UDP datagram B sent that C never received. Without netem nothing
//! may be missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::local::get;
use mixplane_control::keys;
use mixplane_dataplane::sink;
use mixplane_dataplane::sphinx::build::{self, FinalPadding, Hop, PacketSpec};
use mixplane_dataplane::sphinx::{FrameHeader, FrameVersion, KeyRotation, SizeClass};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_mixplane");
/// Messages sent into A (each brings a SURB-ACK back to the sink too).
const MESSAGES: usize = 200;
/// The nodes' addresses on the shared link, A, B, C (TEST-NET-1).
const ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(192, 0, 2, 2),
    Ipv4Addr::new(192, 0, 2, 3),
];
const MIX_PORT: u16 = 1789;
/// The sink, on C's address in C's namespace.
const SINK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(ADDRS[2]), 9000);
/// Each node's admin API, on the loopback of its own namespace.
const ADMIN: &str = "127.0.0.1:8081";
const MSG_TAG: &[u8; 8] = b"netnsMSG";
const ACK_TAG: &[u8; 8] = b"netnsACK";
/// The sink gives up when nothing arrived for this long.
const SINK_IDLE: Duration = Duration::from_secs(5);
/// The whole test must finish within this.
const BUDGET: Duration = Duration::from_secs(60);

/// Runs `cmd` with `args`; the error names the command and holds what it printed.
fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("`{cmd}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd} {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Runs a command inside network namespace `ns` (`ip netns exec`).
fn ns_exec(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Network namespaces made by this test; deleted on drop (even on a panic), which takes their
/// veth links and the bridge with them.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// The test's network: the three nodes' namespaces (A, B, C) and the switch's.
struct Net {
    names: Namespaces,
    netem: bool,
}

impl Net {
    fn node(&self, i: usize) -> &str {
        &self.names.0[i]
    }
}

enum Setup {
    Skip(String),
    Ready(Net),
}

/// Makes the namespaces and links, and netem where the kernel has it. Skips only when a
/// namespace cannot be made; any later failure is a failed test.
fn make_net() -> Setup {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Setup::Skip("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    if let Err(e) = ip(&["-V"]) {
        return Setup::Skip(format!("no usable `ip` command ({e})"));
    }
    let tag = format!("mpx{}", std::process::id());
    let mut names = Namespaces(Vec::new());
    for part in ["a", "b", "c", "sw"] {
        let ns = format!("{tag}{part}");
        if let Err(e) = ip(&["netns", "add", &ns]) {
            if names.0.is_empty() {
                return Setup::Skip(format!("cannot create a network namespace ({e})"));
            }
            panic!("{e}");
        }
        names.0.push(ns);
    }
    link(&names.0[3], &names.0[..3]).expect("bridge and veth links");
    let netem = apply_netem(&names.0[..3]);
    Setup::Ready(Net { names, netem })
}

/// A bridge in `sw`, and for each node namespace a veth pair: `eth0` with the node's address in
/// the node's namespace, the other end on the bridge. Only 192.0.2.0/24 is routed.
fn link(sw: &str, nodes: &[String]) -> Result<(), String> {
    ip(&["-n", sw, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", sw, "link", "set", "br0", "up"])?;
    for (i, (ns, addr)) in nodes.iter().zip(ADDRS).enumerate() {
        let port = format!("p{i}");
        ip(&[
            "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", sw, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// `tc netem delay 10ms loss 1%` on each node's link, if the kernel has netem; says which.
fn apply_netem(nodes: &[String]) -> bool {
    let netem = [
        "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "10ms", "loss", "1%",
    ];
    for (i, ns) in nodes.iter().enumerate() {
        match ns_exec(ns, &netem) {
            Ok(_) => {}
            Err(e) if i == 0 => {
                println!("netem unavailable here: running without delay/loss ({e})");
                return false;
            }
            Err(e) => panic!("netem took on one link but not on the next: {e}"),
        }
    }
    println!("netem on: delay 10ms loss 1% on each node's egress (20 ms RTT between nodes)");
    true
}

/// Starts `f` on a new thread that has first entered the network namespace `ns`. Sockets it
/// opens stay in that namespace wherever they are used afterwards.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: `file` is an open namespace file for the whole call; setns changes only this
        // thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// One node's directory (made by `mixplane init`), namespace, address and public keys.
struct NodeDir {
    ns: String,
    addr: SocketAddr,
    dir: PathBuf,
    sphinx: [u8; 32],
    sphinx_b58: String,
    noise_b58: String,
}

fn init_node(ns: &str, addr: Ipv4Addr, dir: PathBuf) -> NodeDir {
    let out = Command::new(BIN).arg("init").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key_dir = dir.join("keys");
    let sphinx = keys::load_keys(&key_dir).expect("init wrote a Sphinx key");
    let noise = keys::load_noise_key(&key_dir)
        .expect("a readable noise key")
        .expect("init wrote a noise key");
    NodeDir {
        ns: ns.to_string(),
        addr: SocketAddr::new(addr.into(), MIX_PORT),
        dir,
        sphinx: sphinx.primary.public(),
        sphinx_b58: sphinx.primary.public_base58(),
        noise_b58: noise.public_base58(),
    }
}

/// The skimmed-nodes document every node loads: A and B speak TCP, C UDP. B lists its Noise
/// key (so A -> B is Noise); A does not (so C -> A is plain TCP).
fn topology(nodes: &[NodeDir]) -> String {
    let entry = |i: usize, transport: &str, with_noise: bool| {
        let n = &nodes[i];
        let noise = if with_noise {
            format!(
                r#","x25519_noise_versioned_key":{{"supported_version":1,"x25519_pubkey":"{}"}}"#,
                n.noise_b58
            )
        } else {
            String::new()
        };
        format!(
            r#"{{"node_id":{id},"ip_addresses":["{ip}"],"mix_port":{port},"x25519_sphinx_pubkey":"{key}","role":{{"Mixnode":{{"layer":{id}}}}},"mixplane_transport":"{transport}"{noise}}}"#,
            id = i + 1,
            ip = n.addr.ip(),
            port = n.addr.port(),
            key = n.sphinx_b58,
        )
    };
    format!(
        "[{},{},{}]",
        entry(0, "tcp", false),
        entry(1, "tcp", true),
        entry(2, "udp", false)
    )
}

/// A small node's config: one unpinned worker, small slabs and replay filter, manual key
/// rotation (no swap mid-test), a quick reconnect, the topology file and an optional sink.
fn config(n: &NodeDir, sink: Option<SocketAddr>) -> String {
    let sink = sink
        .map(|s| format!("[sink]\naddress = \"udp:{s}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[node]
listen = "{listen}"
workers = 1
pin = false

[wheel]
capacity = 8192

[slab]
small_slots = 4096
large_slots = 16

[replay]
expected_packets_per_second = 10

[keys]
rotation = "manual"

[topology]
file = "topology.json"

[transport]
udp = true
tcp = true
noise = true
reconnect_backoff_ms = 200
reconnect_backoff_max_ms = 2000

[admin]
listen = "{ADMIN}"

{sink}"#,
        listen = n.addr
    )
}

/// The node processes; any still running on drop (a failed test) are killed.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `mixplane run` in the node's namespace (`ip netns exec` execs it: the child is the node),
/// logging to `node.log` in its directory.
fn spawn(n: &NodeDir) -> Child {
    let log = File::create(n.dir.join("node.log")).unwrap();
    Command::new("ip")
        .args(["netns", "exec", &n.ns, BIN, "run", "--config"])
        .arg(n.dir.join("node.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// SIGTERM to every node, then waits (10 s each at most) for clean exits; returns each node's
/// exit report (its "stopped" log line).
fn stop(procs: &mut Procs, nodes: &[NodeDir]) -> Vec<String> {
    for c in &procs.0 {
        // SAFETY: signalling our own child process, which has not been reaped yet.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    let mut reports = Vec::new();
    for (c, n) in procs.0.iter_mut().zip(nodes) {
        let end = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < end, "{} did not exit on SIGTERM", n.ns);
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default();
        assert!(status.success(), "{} exited with {status}: {log}", n.ns);
        let report = log.lines().find(|l| l.contains("stopped")).unwrap_or("");
        reports.push(without_ansi(report));
    }
    reports
}

/// `s` without ANSI escape sequences (the node colours its log even into a file).
fn without_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // up to and including the sequence's final letter
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits (until `end`) for the node in `ns` to report the three-node topology loaded.
fn wait_ready(ns: &str, end: Instant) -> JoinHandle<Result<(), String>> {
    in_ns(ns, move || {
        let mut last = String::new();
        while Instant::now() < end {
            if let Some(s) = get(ADMIN, "/status") {
                if s.contains("\"nodes\":3") {
                    return Ok(());
                }
                last = s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("not ready; last status: {last}"))
    })
}

/// One node's `/metrics` page.
struct Metrics(String);

impl Metrics {
    fn of(ns: &str) -> Metrics {
        let page = in_ns(ns, || get(ADMIN, "/metrics"))
            .join()
            .unwrap()
            .unwrap_or_else(|| panic!("no /metrics from {ns}"));
        Metrics(page)
    }

    /// `(labels, value)` of every sample of `name`.
    fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0.lines().filter_map(move |l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            (metric == name).then_some(())?;
            Some((labels, value.parse().ok()?))
        })
    }

    /// The sum of every series of `name`.
    fn sum(&self, name: &str) -> u64 {
        self.samples(name).map(|(_, v)| v).sum::<f64>() as u64
    }

    /// `name` summed by its `reason` label, non-zero reasons only.
    fn by_reason(&self, name: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (labels, v) in self.samples(name) {
            let Some((_, rest)) = labels.split_once("reason=\"") else {
                continue;
            };
            let reason = rest.split('"').next().unwrap_or("").to_string();
            *out.entry(reason).or_insert(0) += v as u64;
        }
        out.retain(|_, v| *v > 0);
        out
    }
}

/// What one node's metrics say about the run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts {
    /// Frames received: UDP datagrams and TCP frames.
    received: u64,
    /// Frames sent: UDP datagrams (to next hops and the UDP sink) and TCP frames.
    sent: u64,
    tcp_in: u64,
    tcp_out: u64,
    delivered: u64,
    surb_acks: u64,
    handshakes: u64,
    dropped: BTreeMap<String, u64>,
    tcp_events: BTreeMap<String, u64>,
    held: u64,
}

impl Counts {
    fn of(m: &Metrics) -> Counts {
        Counts {
            received: m.sum("mixplane_packets_received_total"),
            sent: m.sum("mixplane_packets_sent_total"),
            tcp_in: m.sum("mixplane_tcp_frames_received_total"),
            tcp_out: m.sum("mixplane_tcp_frames_sent_total"),
            delivered: m.sum("mixplane_packets_delivered_total"),
            surb_acks: m.sum("mixplane_surb_acks_total"),
            handshakes: m.sum("mixplane_tcp_noise_handshakes_total"),
            dropped: m.by_reason("mixplane_packets_dropped_total"),
            tcp_events: m.by_reason("mixplane_tcp_events_total"),
            held: m.sum("mixplane_wheel_packets"),
        }
    }

    fn udp_in(&self) -> u64 {
        self.received.saturating_sub(self.tcp_in)
    }

    /// UDP datagrams sent to next hops (the UDP sink's are counted in `sent` too).
    fn udp_out(&self) -> u64 {
        self.sent
            .saturating_sub(self.tcp_out)
            .saturating_sub(self.delivered)
    }
}

/// Reads every node's metrics until nothing is held and two reads agree (3 s at most).
fn settled(nodes: &[NodeDir]) -> Vec<Counts> {
    let read = || -> Vec<Counts> {
        nodes
            .iter()
            .map(|n| Counts::of(&Metrics::of(&n.ns)))
            .collect()
    };
    let end = Instant::now() + Duration::from_secs(3);
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = read();
        let idle = now.iter().all(|c| c.held == 0);
        if (idle && now == last) || Instant::now() > end {
            return now;
        }
        last = now;
    }
}

/// The random material of one packet.
struct Material {
    delays_ns: Vec<u64>,
    initial_secret: [u8; 32],
    padding_seed: [u8; 32],
    identifier: [u8; 16],
}

impl Material {
    /// Per-hop delays of 0 to 5 ms.
    fn random(rng: &mut StdRng, hops: usize) -> Material {
        Material {
            delays_ns: (0..hops).map(|_| rng.random_range(0..5_000_000)).collect(),
            initial_secret: rng.random(),
            padding_seed: rng.random(),
            identifier: rng.random(),
        }
    }

    fn spec<'a>(
        &'a self,
        route: &'a [Hop],
        class: SizeClass,
        destination: [u8; 32],
        plaintext: &'a [u8],
    ) -> PacketSpec<'a> {
        PacketSpec {
            route,
            delays_ns: &self.delays_ns,
            destination,
            identifier: self.identifier,
            version: 258,
            payload_size: class.payload_len(),
            plaintext,
            initial_secret: self.initial_secret,
            padding: FinalPadding::Seed(self.padding_seed),
        }
    }
}

fn tagged(tag: &[u8; 8], seq: usize) -> Vec<u8> {
    let mut v = tag.to_vec();
    v.extend_from_slice(&(seq as u64).to_be_bytes());
    v
}

/// `n` regular packets on `route`, message `seq` carrying `MSG_TAG ‖ seq` and a SURB-ACK (an
/// ack-class packet on the same route) carrying `ACK_TAG ‖ seq`; each as a v7 frame.
fn frames(route: &[Hop], n: usize, rng: &mut StdRng) -> Vec<Vec<u8>> {
    let ack_mats: Vec<Material> = (0..n).map(|_| Material::random(rng, route.len())).collect();
    let msg_mats: Vec<Material> = (0..n).map(|_| Material::random(rng, route.len())).collect();
    let ack_texts: Vec<Vec<u8>> = (0..n).map(|s| tagged(ACK_TAG, s)).collect();
    let ack_specs: Vec<PacketSpec<'_>> = ack_mats
        .iter()
        .zip(&ack_texts)
        .map(|(m, t)| m.spec(route, SizeClass::Ack, [0xAC; 32], t))
        .collect();
    let plaintexts: Vec<Vec<u8>> = build::build_batch(&ack_specs)
        .into_iter()
        .enumerate()
        .map(|(s, ack)| {
            let ack = ack.expect("ack packet");
            build::plaintext_with_surb_ack(route[0].address, &ack, &tagged(MSG_TAG, s))
                .expect("plaintext")
        })
        .collect();
    let specs: Vec<PacketSpec<'_>> = msg_mats
        .iter()
        .zip(&plaintexts)
        .map(|(m, t)| m.spec(route, SizeClass::Regular, [0xDE; 32], t))
        .collect();
    let v7 = FrameHeader {
        version: FrameVersion::V7,
        size_class: SizeClass::Regular,
        key_rotation: KeyRotation::Unknown,
    };
    build::build_batch(&specs)
        .into_iter()
        .map(|p| v7.frame(&p.expect("packet")))
        .collect()
}

/// Sequence numbers of the messages and SURB-ACKs that reached the sink.
#[derive(Default)]
struct Arrived {
    messages: BTreeSet<u64>,
    acks: BTreeSet<u64>,
    other: usize,
}

impl Arrived {
    fn record(&mut self, datagram: &[u8]) {
        let seq = |m: &[u8], tag: &[u8; 8]| -> Option<u64> {
            let rest = m.strip_prefix(tag.as_slice())?;
            Some(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?))
        };
        let Some(m) = sink::parse(datagram) else {
            self.other += 1;
            return;
        };
        if let Some(s) = seq(m.message, MSG_TAG) {
            self.messages.insert(s);
        } else if let Some(s) = seq(m.message, ACK_TAG) {
            self.acks.insert(s);
        } else {
            self.other += 1;
        }
    }
}

/// Receives at the sink until every message and SURB-ACK came, nothing came for
/// [`SINK_IDLE`], or `end`.
fn collect(sock: &UdpSocket, n: usize, end: Instant) -> Arrived {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Arrived::default();
    let mut buf = vec![0u8; 65536];
    let mut last = Instant::now();
    while (got.messages.len() < n || got.acks.len() < n)
        && Instant::now() < end
        && last.elapsed() < SINK_IDLE
    {
        if let Ok(k) = sock.recv(&mut buf) {
            last = Instant::now();
            got.record(&buf[..k]);
        }
    }
    got
}

/// Kernel counters that explain losses no node can see: the Udp line of `/proc/net/snmp` (it
/// counts GSO/GRO batches and the sink's datagrams too, so it is shown, not compared) and,
/// with netem, the qdisc's drops on the node's link.
fn kernel_view(ns: &str, netem: bool) -> String {
    let snmp = ns_exec(ns, &["cat", "/proc/net/snmp"]).unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    let wanted = ["InDatagrams", "RcvbufErrors", "InErrors", "OutDatagrams"];
    let mut out: Vec<String> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(k, _)| wanted.contains(k))
        .map(|(k, v)| format!("udp {k} {v}"))
        .collect();
    if netem {
        let q = ns_exec(ns, &["tc", "-s", "qdisc", "show", "dev", "eth0"]).unwrap_or_default();
        if let Some(l) = q.lines().find(|l| l.contains("dropped")) {
            out.push(format!("netem:{}", l.trim()));
        }
    }
    out.join(", ")
}

fn print_report(nodes: &[NodeDir], counts: &[Counts], netem: bool) {
    for ((n, c), name) in nodes.iter().zip(counts).zip(["A", "B", "C"]) {
        println!(
            "node {name} ({}): in tcp {} udp {}, out tcp {} udp {}, delivered {}, SURB-ACKs {}, noise handshakes {}",
            n.addr,
            c.tcp_in,
            c.udp_in(),
            c.tcp_out,
            c.udp_out(),
            c.delivered,
            c.surb_acks,
            c.handshakes
        );
        println!("  packet drops by reason: {:?}", c.dropped);
        println!("  tcp events by reason: {:?}", c.tcp_events);
        println!("  kernel: {}", kernel_view(&n.ns, netem));
    }
}

/// How the route did: what the sink got against what the nodes counted.
fn check(counts: &[Counts], got: &Arrived, netem: bool) {
    let (a, b, c) = (&counts[0], &counts[1], &counts[2]);
    let n = MESSAGES as u64;
    // TCP hops lose nothing: client -> A and C -> A (plain), A -> B (Noise)
    assert_eq!(
        a.tcp_in,
        n + c.tcp_out,
        "client/C -> A over TCP lost frames"
    );
    assert_eq!(b.tcp_in, a.tcp_out, "A -> B over Noise lost frames");
    assert_eq!(a.tcp_out, a.tcp_in, "A did not forward everything it got");
    assert!(b.handshakes >= 1, "A -> B did not use Noise");
    assert_eq!(b.udp_out(), b.tcp_in, "B did not forward everything it got");
    assert_eq!(c.tcp_out, c.surb_acks, "C's SURB-ACKs go to A over TCP");
    for (name, x) in ["A", "B", "C"].iter().zip(counts) {
        assert!(x.dropped.is_empty(), "node {name} dropped {:?}", x.dropped);
    }
    // the one UDP hop, B -> C: what B sent and C never read was lost on the way
    assert!(c.udp_in() <= b.udp_out(), "C read more UDP than B sent");
    let wire_lost = b.udp_out() - c.udp_in();
    let (msgs, acks) = (got.messages.len() as u64, got.acks.len() as u64);
    println!(
        "sink: {msgs}/{n} messages, {acks}/{n} SURB-ACKs ({} other); UDP B -> C lost on the wire: {wire_lost}",
        got.other
    );
    assert_eq!(got.other, 0, "unexpected datagrams at the sink");
    assert_eq!(c.delivered, msgs + acks, "C delivered what the sink got");
    // a message lost on B -> C also loses its SURB-ACK; an ack lost there loses only itself
    assert_eq!(
        n - acks,
        wire_lost,
        "missing SURB-ACKs = UDP datagrams lost"
    );
    assert!(n - msgs <= wire_lost, "a message went missing on a TCP hop");
    if !netem {
        assert_eq!(wire_lost, 0, "no netem, yet UDP B -> C lost datagrams");
        assert_eq!((msgs, acks), (n, n));
    }
}

#[test]
fn mixed_route_across_namespaces() {
    let start = Instant::now();
    let net = match make_net() {
        Setup::Skip(why) => {
            println!("SKIPPED netns route test: {why}");
            return;
        }
        Setup::Ready(net) => net,
    };
    let root = std::env::temp_dir().join(format!("mixplane-netns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    println!("node directories (and logs) under {}", root.display());
    let nodes: Vec<NodeDir> = (0..3)
        .map(|i| init_node(net.node(i), ADDRS[i], root.join(["a", "b", "c"][i])))
        .collect();
    write_configs(&nodes);
    let sink_sock = in_ns(&nodes[2].ns, || {
        UdpSocket::bind(SINK).expect("bind the sink")
    })
    .join()
    .unwrap();

    let mut procs = Procs(nodes.iter().map(spawn).collect());
    let ready_by = Instant::now() + Duration::from_secs(15);
    let waits: Vec<_> = nodes.iter().map(|n| wait_ready(&n.ns, ready_by)).collect();
    for (w, n) in waits.into_iter().zip(&nodes) {
        let r = w.join().unwrap();
        let log = std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default();
        r.unwrap_or_else(|e| panic!("{}: {e}\n{log}", n.ns));
    }

    let route: Vec<Hop> = nodes
        .iter()
        .map(|n| Hop {
            address: n.addr,
            public_key: n.sphinx,
        })
        .collect();
    let wire = frames(&route, MESSAGES, &mut StdRng::seed_from_u64(11));
    let a_addr = nodes[0].addr;
    let client = in_ns(&nodes[0].ns, move || {
        let mut s = TcpStream::connect(a_addr).expect("connect to A");
        for f in &wire {
            s.write_all(f).expect("send to A");
        }
        s
    });
    let got = collect(
        &sink_sock,
        MESSAGES,
        start + BUDGET - Duration::from_secs(12),
    );
    let _conn = client.join().expect("client thread");

    let counts = settled(&nodes);
    print_report(&nodes, &counts, net.netem);
    println!(
        "UDP losses on the wire are counted as B's UDP sends minus C's UDP receives (both from \
         the nodes' metrics); the kernel lines above show where (netem's qdisc drops on a link, \
         which also count lost TCP segments; C's receive-buffer errors). Neither end can tell \
         which datagram was lost, and across a real WAN the two counters sit on machines of \
         different operators: a lost UDP datagram shows only as that difference, or end to end \
         as a missing SURB-ACK."
    );
    for (name, r) in ["A", "B", "C"].iter().zip(stop(&mut procs, &nodes)) {
        println!("node {name} exit report: {r}");
    }
    check(&counts, &got, net.netem);
    let took = start.elapsed();
    println!("took {took:?}");
    assert!(took < BUDGET, "took {took:?}");
    drop(procs);
    drop(net);
    let _ = std::fs::remove_dir_all(&root);
}

/// Each node's config (C with the sink) and the shared topology file.
fn write_configs(nodes: &[NodeDir]) {
    let topo = topology(nodes);
    for (i, n) in nodes.iter().enumerate() {
        let sink = (i == 2).then_some(SINK);
        std::fs::write(n.dir.join("node.toml"), config(n, sink)).unwrap();
        std::fs::write(n.dir.join("topology.json"), &topo).unwrap();
    }
}
