//! `--steer-loopback`: the loopback device's receive processing on the harness's core.
//!
//! A packet sent over loopback is received in the sender's own system call (the loopback
//! driver hands it straight to the receive path on the same CPU): the receiver's TCP or UDP
//! work, and waking the thread that waits on its socket, are charged to the sender. For a
//! node whose next hop is on another machine that work happens there, so on loopback it
//! overstates what a worker's send costs. Receive packet steering (RPS) on `lo` with a mask
//! of one core queues every received packet to that core's backlog instead, where a softirq
//! takes it up; the sender pays for queueing it and one inter-processor interrupt per burst.

use std::path::Path;

const RPS_CPUS: &str = "/sys/class/net/lo/queues/rx-0/rps_cpus";

/// The steering in force; the mask found before is written back on drop (on a return or a
/// panic; a run killed by a signal leaves the steering in place: the message printed at the
/// start names the mask to write back).
pub(super) struct Steered {
    old: String,
    core: usize,
}

impl Steered {
    /// Steers loopback's receive processing to `core`.
    pub(super) fn to_core(core: usize) -> anyhow::Result<Steered> {
        let path = Path::new(RPS_CPUS);
        let old = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--steer-loopback: cannot read {RPS_CPUS}: {e}"))?
            .trim()
            .to_string();
        std::fs::write(path, mask(core)).map_err(|e| {
            anyhow::anyhow!("--steer-loopback: cannot write {RPS_CPUS} (root needed): {e}")
        })?;
        Ok(Steered { old, core })
    }
}

impl std::fmt::Display for Steered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loopback receive steered to core {} (rps_cpus {}, was {})",
            self.core,
            mask(self.core),
            self.old
        )
    }
}

impl Drop for Steered {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(RPS_CPUS, &self.old) {
            eprintln!("could not put back {RPS_CPUS} = {}: {e}", self.old);
        }
    }
}

/// The CPU mask with only `core` set, in the kernel's format: hex words of 32 bits,
/// most significant first, separated by commas.
fn mask(core: usize) -> String {
    let words = core / 32 + 1;
    (0..words)
        .rev()
        .map(|w| {
            if w == core / 32 {
                format!("{:08x}", 1u32 << (core % 32))
            } else {
                "00000000".to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks_name_one_core() {
        assert_eq!(mask(0), "00000001");
        assert_eq!(mask(5), "00000020");
        assert_eq!(mask(31), "80000000");
        assert_eq!(mask(33), "00000002,00000000");
    }
}
