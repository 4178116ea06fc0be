//! Outgoing message building shared by the backends: a send batch becomes one `msghdr` per GSO
//! run (consecutive datagrams to one address), each with its iovecs, destination and, for runs
//! of more than one datagram, a `UDP_SEGMENT` control message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::socket::{CmsgBuf, to_sockaddr, write_gso_cmsg};
use super::{MAX_GSO_SEGMENTS, Outgoing, gso_runs};

/// Scratch for the messages of one send call. The raw pointers it holds point into itself and
/// into the batch it was built from; they are valid until the next `build` or until the batch's
/// borrow ends, whichever is first, and are only handed to the kernel within that window.
pub(crate) struct TxMessages {
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
    addr: Vec<libc::sockaddr_storage>,
    cmsg: Vec<CmsgBuf>,
    /// `(first datagram, end, segment size)` of each message.
    pub(crate) runs: Vec<(usize, usize, usize)>,
}

// SAFETY: the raw pointers are scratch, rewritten by every `build` before use and never
// dereferenced by this type; moving it between threads is sound.
unsafe impl Send for TxMessages {}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data (integers and raw pointers); all-zero is valid.
    unsafe { std::mem::zeroed() }
}

impl TxMessages {
    pub(crate) fn new() -> TxMessages {
        TxMessages {
            iov: Vec::new(),
            hdr: Vec::new(),
            addr: Vec::new(),
            cmsg: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// Builds the messages for `batch`, with GSO runs to each destination as `policy` allows
    /// at `now`; returns how many.
    pub(crate) fn build(
        &mut self,
        batch: &[Outgoing<'_>],
        policy: &GsoPolicy,
        now: Instant,
    ) -> usize {
        self.runs.clear();
        let runs = &mut self.runs;
        gso_runs(
            batch,
            |to| policy.max_seg(to, now),
            |s, e, l| runs.push((s, e, l)),
        );
        let m = self.runs.len();
        self.iov.clear();
        self.iov.extend(batch.iter().map(|o| libc::iovec {
            iov_base: o.data.as_ptr() as *mut libc::c_void,
            iov_len: o.data.len(),
        }));
        self.hdr.resize(m, zeroed_mmsghdr());
        // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
        self.addr.resize(m, unsafe { std::mem::zeroed() });
        self.cmsg.resize(m, CmsgBuf::default());
        for (k, &(s, e, seg)) in self.runs.iter().enumerate() {
            let (sa, salen) = to_sockaddr(&batch[s].to);
            self.addr[k] = sa;
            let h = &mut self.hdr[k].msg_hdr;
            h.msg_name = (&mut self.addr[k] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = salen;
            h.msg_iov = self.iov[s..e].as_mut_ptr();
            h.msg_iovlen = (e - s) as _;
            if e - s > 1 {
                debug_assert!(e - s <= MAX_GSO_SEGMENTS);
                let len = write_gso_cmsg(&mut self.cmsg[k], seg as u16);
                h.msg_control = self.cmsg[k].0.as_mut_ptr().cast();
                h.msg_controllen = len as _;
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            h.msg_flags = 0;
            self.hdr[k].msg_len = 0;
        }
        m
    }

    /// The `mmsghdr`s from `from` on, for `sendmmsg`.
    pub(crate) fn mmsg_from(&mut self, from: usize) -> &mut [libc::mmsghdr] {
        &mut self.hdr[from..]
    }

    /// Message `k`'s header, for `IORING_OP_SENDMSG`.
    pub(crate) fn msghdr(&self, k: usize) -> *const libc::msghdr {
        &self.hdr[k].msg_hdr
    }

    /// How many datagrams message `k` carries.
    pub(crate) fn datagrams(&self, k: usize) -> usize {
        self.runs[k].1 - self.runs[k].0
    }
}

/// How long a destination's GSO restriction lasts before GSO is tried there again (a route's MTU
/// or egress device can change; one more refused message then costs one resend).
pub(crate) const GSO_RETRY_AFTER: Duration = Duration::from_secs(120);
/// The most destinations with a GSO restriction remembered at once; past it, the restriction
/// closest to expiring is forgotten (GSO is then tried there again, at the cost of one resend).
pub(crate) const GSO_MAX_DESTINATIONS: usize = 256;

/// What a refused GSO message taught about one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Restriction {
    /// Segments up to this many bytes still go in GSO messages there (0: none do).
    max_seg: usize,
    /// When the restriction lapses.
    until: Instant,
}

/// When to send a run of datagrams to one address as one GSO message: per destination, so that
/// one next hop's small path MTU or refusing route leaves GSO on for every other, and for a
/// limited time ([`GSO_RETRY_AFTER`]), in a bounded map ([`GSO_MAX_DESTINATIONS`]). Lookups
/// neither allocate nor take locks; only learning from an error inserts.
#[derive(Debug, Default)]
pub(crate) struct GsoPolicy {
    restricted: HashMap<SocketAddr, Restriction>,
}

impl GsoPolicy {
    /// The largest segment that may go in a GSO message to `to` at `now` (`usize::MAX`: no
    /// limit, 0: GSO off for `to`).
    pub(crate) fn max_seg(&self, to: &SocketAddr, now: Instant) -> usize {
        if self.restricted.is_empty() {
            return usize::MAX;
        }
        match self.restricted.get(to) {
            Some(r) if now < r.until => r.max_seg,
            _ => usize::MAX,
        }
    }

    /// Learns from a failed multi-datagram message of `seg`-byte segments to `to` at `now`;
    /// returns true if the error was about GSO (its datagrams should then be sent again under
    /// the policy in force, which is then stricter for `to` or already excludes such segments,
    /// so the resend forms no such message again and terminates).
    ///
    /// * `EMSGSIZE`: a segment plus headers exceeds the route's MTU (GSO cannot fragment; a
    ///   single datagram of that size is fragmented normally): no GSO for segments this large.
    /// * `EIO`, `EINVAL` from a multi-segment message: the kernel or the route's device refuses
    ///   GSO: none to `to`.
    pub(crate) fn learn(
        &mut self,
        to: SocketAddr,
        errno: Option<i32>,
        seg: usize,
        now: Instant,
    ) -> bool {
        let current = self.max_seg(&to, now);
        let limit = match errno {
            // a message built before an earlier one of the same send taught the limit (both
            // were in flight at once): nothing new to learn, but resend its datagrams under
            // the limit already in force, which excludes this segment size
            Some(libc::EMSGSIZE) if seg > current => return true,
            Some(libc::EIO) | Some(libc::EINVAL) if current == 0 => return true,
            Some(libc::EMSGSIZE) if seg > 0 && seg <= current => {
                tracing::info!(
                    %to,
                    segment = seg,
                    "UDP GSO segments this large exceed the path MTU; sending them one by one"
                );
                seg - 1
            }
            Some(libc::EIO) | Some(libc::EINVAL) if current > 0 => {
                tracing::warn!(%to, "UDP GSO refused on this route; sending datagrams one by one");
                0
            }
            _ => return false,
        };
        self.restrict(to, limit, now);
        true
    }

    /// Records `max_seg` for `to` until `now + GSO_RETRY_AFTER`, making room first if the map
    /// is full.
    fn restrict(&mut self, to: SocketAddr, max_seg: usize, now: Instant) {
        if !self.restricted.contains_key(&to) && self.restricted.len() >= GSO_MAX_DESTINATIONS {
            self.restricted.retain(|_, r| now < r.until);
            if self.restricted.len() >= GSO_MAX_DESTINATIONS
                && let Some(oldest) = self
                    .restricted
                    .iter()
                    .min_by_key(|(_, r)| r.until)
                    .map(|(a, _)| *a)
            {
                self.restricted.remove(&oldest);
            }
        }
        let until = now + GSO_RETRY_AFTER;
        self.restricted.insert(to, Restriction { max_seg, until });
    }

    /// Destinations with a restriction on record (live or lapsed but not yet swept).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.restricted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn policy_learns_from_gso_errors_only() {
        let mut p = GsoPolicy::default();
        let (a, t) = (addr(1), Instant::now());
        assert!(!p.learn(a, Some(libc::ECONNREFUSED), 2417, t));
        assert_eq!(p.max_seg(&a, t), usize::MAX);
        assert!(p.learn(a, Some(libc::EMSGSIZE), 2417, t));
        assert_eq!(p.max_seg(&a, t), 2416);
        // smaller segments still go in GSO messages
        assert!(p.learn(a, Some(libc::EMSGSIZE), 1600, t));
        assert_eq!(p.max_seg(&a, t), 1599);
        // a message built before the limit was learned (in flight beside the one that taught
        // it) fails the same way: resent under the limit, which does not change
        assert!(p.learn(a, Some(libc::EMSGSIZE), 2000, t));
        assert_eq!(p.max_seg(&a, t), 1599);
        assert!(p.learn(a, Some(libc::EIO), 500, t));
        assert_eq!(p.max_seg(&a, t), 0);
        assert!(p.learn(a, Some(libc::EINVAL), 500, t));
        assert_eq!(p.max_seg(&a, t), 0);
    }

    #[test]
    fn one_destinations_error_leaves_gso_on_for_others_and_expires() {
        let mut p = GsoPolicy::default();
        let (bad, good, t) = (addr(1), addr(2), Instant::now());
        assert!(p.learn(bad, Some(libc::EIO), 1000, t));
        assert!(p.learn(addr(3), Some(libc::EMSGSIZE), 2417, t));
        assert_eq!(p.max_seg(&bad, t), 0);
        assert_eq!(
            p.max_seg(&good, t),
            usize::MAX,
            "GSO stays on for another hop"
        );
        assert_eq!(p.max_seg(&addr(3), t), 2416);
        let later = t + GSO_RETRY_AFTER - Duration::from_millis(1);
        assert_eq!(p.max_seg(&bad, later), 0);
        let lapsed = t + GSO_RETRY_AFTER;
        assert_eq!(
            p.max_seg(&bad, lapsed),
            usize::MAX,
            "the restriction expires"
        );
        assert_eq!(p.max_seg(&addr(3), lapsed), usize::MAX);
        // after expiry the same error is learned afresh
        assert!(p.learn(bad, Some(libc::EIO), 1000, lapsed));
        assert_eq!(p.max_seg(&bad, lapsed), 0);
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut p = GsoPolicy::default();
        let t = Instant::now();
        for port in 0..(GSO_MAX_DESTINATIONS as u16 + 50) {
            let at = t + Duration::from_millis(u64::from(port));
            assert!(p.learn(addr(port), Some(libc::EIO), 1000, at));
        }
        assert_eq!(p.remembered(), GSO_MAX_DESTINATIONS);
        let end = t + Duration::from_secs(1);
        // the newest restrictions survive, the oldest were forgotten
        assert_eq!(p.max_seg(&addr(GSO_MAX_DESTINATIONS as u16 + 49), end), 0);
        assert_eq!(p.max_seg(&addr(0), end), usize::MAX);
        // lapsed entries make room before live ones are evicted
        let much_later = t + GSO_RETRY_AFTER * 2;
        assert!(p.learn(addr(9999), Some(libc::EIO), 1000, much_later));
        assert_eq!(p.remembered(), 1);
    }
}
