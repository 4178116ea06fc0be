//! Outgoing message building shared by the backends: a send batch becomes one `msghdr` per GSO
//! run (consecutive datagrams to one address), each with its iovecs, destination and, for runs
//! of more than one datagram, a `UDP_SEGMENT` control message.

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

    /// Builds the messages for `batch`, with GSO runs of segments up to `max_seg` bytes (0: no
    /// GSO); returns how many.
    pub(crate) fn build(&mut self, batch: &[Outgoing<'_>], max_seg: usize) -> usize {
        self.runs.clear();
        let runs = &mut self.runs;
        gso_runs(batch, max_seg, |s, e, l| runs.push((s, e, l)));
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

/// When to send a run of datagrams to one address as one GSO message.
#[derive(Debug)]
pub(crate) struct GsoPolicy {
    /// Segments up to this many bytes go in GSO messages (0: GSO off).
    pub(crate) max_seg: usize,
}

impl Default for GsoPolicy {
    fn default() -> Self {
        GsoPolicy {
            max_seg: usize::MAX,
        }
    }
}

impl GsoPolicy {
    /// Learns from a failed multi-datagram message of `seg`-byte segments; returns true if the
    /// error was about GSO (its datagrams should then be sent again one by one).
    ///
    /// * `EMSGSIZE`: a segment plus headers exceeds the route's MTU (GSO cannot fragment; a
    ///   single datagram of that size is fragmented normally): no GSO for segments this large.
    /// * `EIO`, `EINVAL` from a multi-segment message: the kernel or device refuses GSO.
    pub(crate) fn learn(&mut self, errno: Option<i32>, seg: usize) -> bool {
        match errno {
            Some(libc::EMSGSIZE) if seg > 0 && seg <= self.max_seg => {
                tracing::info!(
                    segment = seg,
                    "UDP GSO segments this large exceed the path MTU; sending them one by one"
                );
                self.max_seg = seg - 1;
                true
            }
            Some(libc::EIO) | Some(libc::EINVAL) if self.max_seg > 0 => {
                tracing::warn!("UDP GSO rejected by the kernel; sending datagrams one by one");
                self.max_seg = 0;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_learns_from_gso_errors_only() {
        let mut p = GsoPolicy::default();
        assert!(!p.learn(Some(libc::ECONNREFUSED), 2417));
        assert_eq!(p.max_seg, usize::MAX);
        assert!(p.learn(Some(libc::EMSGSIZE), 2417));
        assert_eq!(p.max_seg, 2416);
        // smaller segments still go in GSO messages
        assert!(p.learn(Some(libc::EMSGSIZE), 1600));
        assert_eq!(p.max_seg, 1599);
        assert!(p.learn(Some(libc::EIO), 500));
        assert_eq!(p.max_seg, 0);
        assert!(!p.learn(Some(libc::EINVAL), 500));
    }
}
