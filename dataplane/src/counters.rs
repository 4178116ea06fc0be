//! Per-worker counters: written by the worker alone (relaxed atomics, no contention), read by
//! the control plane's metrics and by the demo.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use mixplane_control::nym_http::{EgressMixingStats, IngressMixingStats, PacketsStats};

use crate::sphinx::DropReason;

/// Why the node (not the Sphinx core) dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeDrop {
    /// No free slab slot to hold the packet.
    SlabFull,
    /// The delay wheel is at capacity.
    WheelFull,
    /// The kernel refused the send.
    SendFailed,
    /// The final-hop sink could not take the message.
    SinkFailed,
    /// A final-hop message arrived but no sink is configured.
    NoSink,
    /// The kernel dropped it: the socket's receive queue was full (the node is overloaded).
    KernelRxOverflow,
    /// The next hop is not a node of the topology (routing filter on).
    UnknownNextHop,
    /// The next hop cannot be sent to: port 0, an unspecified, multicast, broadcast,
    /// link-local or reserved address (or an IPv6 form of one).
    UnroutableNextHop,
    /// The next hop is a loopback address and the egress policy does not allow those.
    LoopbackNextHop,
    /// The next hop is in a private range and the egress policy does not allow those.
    PrivateNextHop,
    /// The next hop is one of the node's own listen addresses.
    OwnAddressNextHop,
}

/// Where a worker's time goes, per batch (measured around each part of the loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerPhase {
    /// Receive calls that returned datagrams, including any wait inside them (calls that
    /// timed out empty are not counted).
    Receive,
    /// The Sphinx core over the batch (`process_batch`).
    Process,
    /// Acting on the verdicts: copying forward hops into the slab and the wheel, delivering
    /// final hops.
    Hold,
    /// Expiring the wheel, grouping by next hop and sending.
    Release,
}

impl WorkerPhase {
    /// Every phase, in counter order.
    pub const ALL: [WorkerPhase; 4] = [
        WorkerPhase::Receive,
        WorkerPhase::Process,
        WorkerPhase::Hold,
        WorkerPhase::Release,
    ];

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            WorkerPhase::Receive => "receive",
            WorkerPhase::Process => "process",
            WorkerPhase::Hold => "hold",
            WorkerPhase::Release => "release",
        }
    }
}

impl NodeDrop {
    /// Every reason, in counter order.
    pub const ALL: [NodeDrop; 11] = [
        NodeDrop::SlabFull,
        NodeDrop::WheelFull,
        NodeDrop::SendFailed,
        NodeDrop::SinkFailed,
        NodeDrop::NoSink,
        NodeDrop::KernelRxOverflow,
        NodeDrop::UnknownNextHop,
        NodeDrop::UnroutableNextHop,
        NodeDrop::LoopbackNextHop,
        NodeDrop::PrivateNextHop,
        NodeDrop::OwnAddressNextHop,
    ];

    /// Stable snake_case name for metrics.
    pub fn name(self) -> &'static str {
        match self {
            NodeDrop::SlabFull => "slab_full",
            NodeDrop::WheelFull => "wheel_full",
            NodeDrop::SendFailed => "send_failed",
            NodeDrop::SinkFailed => "sink_failed",
            NodeDrop::NoSink => "no_sink",
            NodeDrop::KernelRxOverflow => "kernel_rx_overflow",
            NodeDrop::UnknownNextHop => "unknown_next_hop",
            NodeDrop::UnroutableNextHop => "unroutable_next_hop",
            NodeDrop::LoopbackNextHop => "loopback_next_hop",
            NodeDrop::PrivateNextHop => "private_next_hop",
            NodeDrop::OwnAddressNextHop => "own_address_next_hop",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One worker's counters.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Datagrams received.
    pub rx_datagrams: AtomicU64,
    /// Receive batches handed to the Sphinx core.
    pub rx_batches: AtomicU64,
    /// Forward hops put into the delay wheel.
    pub forwarded: AtomicU64,
    /// Final-hop messages delivered to the sink.
    pub delivered: AtomicU64,
    /// SURB-ACKs sent on.
    pub surb_acks: AtomicU64,
    /// Datagrams sent.
    pub tx_datagrams: AtomicU64,
    /// Send syscalls / submissions.
    pub tx_calls: AtomicU64,
    /// Forward hops whose delay was over the cap and was cut to it (Nym's
    /// `excessive_delay_packets`).
    pub excessive_delay: AtomicU64,
    /// Packets held in the wheel right now.
    pub wheel_len: AtomicU64,
    /// Sum over released packets of (actual release time - deadline), ns.
    pub release_lateness_ns_sum: AtomicU64,
    /// Largest release lateness seen, ns.
    pub release_lateness_ns_max: AtomicU64,
    /// Released packets (for the lateness mean).
    pub released: AtomicU64,
    /// Release lateness (release time - deadline), ns.
    pub release_lateness: crate::histogram::AtomicHistogram,
    /// Time in the node (receive to send), ns.
    pub residence: crate::histogram::AtomicHistogram,
    /// Sphinx processing time per packet of each batch, ns.
    pub unwrap_per_packet: crate::histogram::AtomicHistogram,
    /// Datagrams per receive batch.
    pub batch_size: crate::histogram::AtomicHistogram,
    sphinx_drops: [AtomicU64; DropReason::ALL.len()],
    node_drops: [AtomicU64; NodeDrop::ALL.len()],
    phase_ns: [AtomicU64; WorkerPhase::ALL.len()],
}

impl WorkerCounters {
    /// Counts a Sphinx-level drop.
    pub(crate) fn drop_sphinx(&self, r: DropReason) {
        self.sphinx_drops[r.index()].fetch_add(1, Relaxed);
    }

    /// Counts a node-level drop.
    pub(crate) fn drop_node(&self, r: NodeDrop, n: u64) {
        self.node_drops[r.index()].fetch_add(n, Relaxed);
    }

    /// Drops for a Sphinx reason so far.
    pub fn sphinx_drops(&self, r: DropReason) -> u64 {
        self.sphinx_drops[r.index()].load(Relaxed)
    }

    /// Drops for a node reason so far.
    pub fn node_drops(&self, r: NodeDrop) -> u64 {
        self.node_drops[r.index()].load(Relaxed)
    }

    /// Adds time spent in a phase of the worker loop.
    pub(crate) fn add_phase(&self, phase: WorkerPhase, ns: u64) {
        self.phase_ns[phase as usize].fetch_add(ns, Relaxed);
    }

    /// Time spent in a phase of the worker loop so far, ns.
    pub fn phase_ns(&self, phase: WorkerPhase) -> u64 {
        self.phase_ns[phase as usize].load(Relaxed)
    }

    /// All drops so far.
    pub fn total_drops(&self) -> u64 {
        self.sphinx_drops
            .iter()
            .chain(&self.node_drops)
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// Sets the kernel-overflow count from the socket's cumulative figure.
    pub(crate) fn set_kernel_overflows(&self, total: u64) {
        self.node_drops[NodeDrop::KernelRxOverflow.index()].store(total, Relaxed);
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn record_lateness(&self, late_ns: u64) {
        self.released.fetch_add(1, Relaxed);
        self.release_lateness_ns_sum.fetch_add(late_ns, Relaxed);
        self.release_lateness_ns_max.fetch_max(late_ns, Relaxed);
        self.release_lateness.record(late_ns);
    }
}

/// Sums a counter over workers.
pub fn sum(
    workers: &[std::sync::Arc<WorkerCounters>],
    f: impl Fn(&WorkerCounters) -> &AtomicU64,
) -> u64 {
    workers.iter().map(|w| f(w).load(Relaxed)).sum()
}

/// The workers' counters in nym-node's `packets-stats` shape (`/api/v1/metrics/packets-stats`).
///
/// mixplane counts what became of a packet, not its kind at arrival, so: a forward hop
/// received is one forwarded or dropped after unwrapping (routing refused, slab or wheel full,
/// delay over the cap with `over_cap = "drop"`); a final hop received is one delivered or
/// dropped for want of a sink. Malformed: every Sphinx drop but replays and over-cap delays.
/// Forward hops sent: datagrams sent less SURB-ACKs (an ACK still held is briefly counted
/// short). Kernel receive-queue overflows are in none of these (their kind is unknown).
pub fn nym_packets_stats(workers: &[std::sync::Arc<WorkerCounters>]) -> PacketsStats {
    let node = |r: NodeDrop| workers.iter().map(|w| w.node_drops(r)).sum::<u64>();
    let sphinx = |r: DropReason| workers.iter().map(|w| w.sphinx_drops(r)).sum::<u64>();
    let total = |f: fn(&WorkerCounters) -> &AtomicU64| sum(workers, f);
    let over_cap = sphinx(DropReason::DelayTooLong);
    let forward_dropped = [
        NodeDrop::SlabFull,
        NodeDrop::WheelFull,
        NodeDrop::UnknownNextHop,
        NodeDrop::UnroutableNextHop,
        NodeDrop::LoopbackNextHop,
        NodeDrop::PrivateNextHop,
        NodeDrop::OwnAddressNextHop,
    ]
    .into_iter()
    .map(node)
    .sum::<u64>()
        + over_cap;
    let final_dropped = node(NodeDrop::SinkFailed) + node(NodeDrop::NoSink);
    let replayed = sphinx(DropReason::Replayed);
    let all_sphinx: u64 = DropReason::ALL.into_iter().map(sphinx).sum();
    let acks = total(|w| &w.surb_acks);
    PacketsStats {
        ingress_mixing: IngressMixingStats {
            forward_hop_packets_received: total(|w| &w.forwarded) + forward_dropped,
            final_hop_packets_received: total(|w| &w.delivered) + final_dropped,
            malformed_packets_received: all_sphinx - replayed - over_cap,
            replayed_packets_received: replayed,
            test_packets_received: 0,
            excessive_delay_packets: total(|w| &w.excessive_delay) + over_cap,
            forward_hop_packets_dropped: forward_dropped,
            final_hop_packets_dropped: final_dropped,
        },
        egress_mixing: EgressMixingStats {
            forward_hop_packets_sent: total(|w| &w.tx_datagrams).saturating_sub(acks),
            forward_hop_packets_dropped: node(NodeDrop::SendFailed),
            ack_packets_sent: acks,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn packets_stats_sort_counters_into_nym_nodes_fields() {
        let (a, b) = (WorkerCounters::default(), WorkerCounters::default());
        WorkerCounters::add(&a.forwarded, 10);
        WorkerCounters::add(&b.forwarded, 5);
        WorkerCounters::add(&a.delivered, 3);
        WorkerCounters::add(&a.surb_acks, 2);
        WorkerCounters::add(&b.tx_datagrams, 14);
        WorkerCounters::add(&a.excessive_delay, 1);
        a.drop_sphinx(DropReason::Replayed);
        a.drop_sphinx(DropReason::BadMac);
        b.drop_sphinx(DropReason::BadMac);
        b.drop_sphinx(DropReason::DelayTooLong);
        a.drop_node(NodeDrop::WheelFull, 4);
        b.drop_node(NodeDrop::NoSink, 6);
        a.drop_node(NodeDrop::SendFailed, 7);
        let s = nym_packets_stats(&[Arc::new(a), Arc::new(b)]);
        let i = s.ingress_mixing;
        assert_eq!(i.forward_hop_packets_received, 15 + 4 + 1);
        assert_eq!(i.forward_hop_packets_dropped, 5);
        assert_eq!(i.final_hop_packets_received, 3 + 6);
        assert_eq!(i.final_hop_packets_dropped, 6);
        assert_eq!(i.malformed_packets_received, 2);
        assert_eq!(i.replayed_packets_received, 1);
        assert_eq!(i.excessive_delay_packets, 2);
        let e = s.egress_mixing;
        assert_eq!(e.forward_hop_packets_sent, 12);
        assert_eq!(e.ack_packets_sent, 2);
        assert_eq!(e.forward_hop_packets_dropped, 7);
    }
}
