//! A one-shot wake-up timer with nanosecond resolution (Linux `timerfd`), for waits that a
//! millisecond poll cannot express: `epoll_wait` (and so `mio`) rounds a 250 µs timeout up to
//! a whole millisecond, which would make every delay-wheel release up to a millisecond late.
//! The poll watches the timer's descriptor; arming it before the poll ends the wait on time.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A monotonic-clock `timerfd`, non-blocking, closed on drop.
#[derive(Debug)]
pub(crate) struct WakeTimer {
    fd: OwnedFd,
}

impl WakeTimer {
    /// Creates a disarmed timer.
    pub(crate) fn new() -> io::Result<WakeTimer> {
        // SAFETY: plain syscall with constant flags; the result is checked below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by `timerfd_create` and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(WakeTimer { fd })
    }

    /// Makes the descriptor readable `after` from now (replacing any earlier arming and
    /// forgetting expirations not yet read); a zero `after` disarms it.
    pub(crate) fn arm(&self, after: Duration) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `self.fd` is an open timerfd; `spec` is a valid itimerspec; the old value
        // pointer may be null.
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads and discards the expirations counted so far (so a level-triggered poll stops
    /// reporting the descriptor); returns whether there were any.
    pub(crate) fn clear(&self) -> bool {
        let mut n = [0u8; 8];
        // SAFETY: `n` is 8 writable bytes, the size a timerfd read requires; the descriptor is
        // non-blocking, so this returns at once (EAGAIN when nothing expired).
        let r = unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
        r == 8
    }

    /// The descriptor, for registering with a poll.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn readable_within(t: &WakeTimer, ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: t.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
    }

    #[test]
    fn fires_after_the_time_given_and_not_before() {
        let t = WakeTimer::new().expect("timerfd");
        assert!(!readable_within(&t, 0), "a new timer is disarmed");
        let start = Instant::now();
        t.arm(Duration::from_micros(300)).expect("arm");
        assert!(readable_within(&t, 1000), "armed timer fires");
        let took = start.elapsed();
        assert!(took >= Duration::from_micros(300), "fired early: {took:?}");
        assert!(t.clear(), "one expiration to read");
        assert!(!t.clear(), "nothing left to read");
        assert!(!readable_within(&t, 0), "cleared");
    }

    #[test]
    fn rearming_replaces_and_zero_disarms() {
        let t = WakeTimer::new().expect("timerfd");
        t.arm(Duration::from_millis(1)).expect("arm");
        t.arm(Duration::ZERO).expect("disarm");
        assert!(!readable_within(&t, 20), "disarmed timer stays quiet");
        t.arm(Duration::from_secs(60)).expect("arm far");
        t.arm(Duration::from_micros(100)).expect("arm near");
        assert!(readable_within(&t, 1000), "the later arming is in force");
    }
}
