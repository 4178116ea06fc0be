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

    /// Builds the messages for `batch`, with GSO runs if `gso`; returns how many.
    pub(crate) fn build(&mut self, batch: &[Outgoing<'_>], gso: bool) -> usize {
        self.runs.clear();
        let runs = &mut self.runs;
        gso_runs(batch, gso, |s, e, l| runs.push((s, e, l)));
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

/// Whether a send error on a multi-datagram message means the kernel refused GSO (the caller
/// then turns GSO off and sends the rest one by one).
pub(crate) fn is_gso_refusal(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EIO) | Some(libc::EINVAL))
}
