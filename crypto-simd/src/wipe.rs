//! Scrubbing the dead stack memory that secret computations leave behind.
//!
//! The X25519 kernels keep scalars, their clamped words and the ladder state in locals; the
//! compiler spills them to the stack, and when the kernel returns those bytes stay in dead stack
//! memory until something else happens to write over them. [`scrub_stack`], called by a
//! dispatcher right after the kernels return, overwrites the region below the dispatcher's own
//! frame, where the kernels' frames were: its own frame is one large buffer that it zeroes.

use core::mem::MaybeUninit;
use core::sync::atomic::{Ordering, compiler_fence};

/// Bytes of stack below its caller's frame that [`scrub_stack`] overwrites.
///
/// Sized from the deepest frame chain under the X25519 dispatcher, measured on x86_64
/// (2026-12-01, Zen 3). Optimised build: the kernels' frames are about 4 KiB (`sub rsp, 0xfe0`
/// in `avx2::x25519_lanes`, `0xfc0` in both `ifma::x25519_lanes`), plus at most 0.5 KiB for
/// the helpers they call and 0.8 KiB for the dispatcher: 16 KiB is three times that. A test
/// build at `opt-level = 1` spilled more: the test `kernels_stay_within_the_scrub`, which paints
/// the stack, saw the AVX2 path write 11.5 KiB deep, so builds with debug assertions scrub
/// 32 KiB. One scrub costs about 1.6 µs (16 KiB) or 3.2 µs (32 KiB) on that CPU, against
/// 84 µs for one call of the 4-lane kernel and 43 µs for one operation alone.
pub(crate) const SCRUB_BYTES: usize = if cfg!(debug_assertions) {
    32 * 1024
} else {
    16 * 1024
};

/// Overwrites [`SCRUB_BYTES`] of the stack just below the caller's frame with zeros.
///
/// Never inlined, so that its frame (one buffer of that size) starts where the caller's frame
/// ends: the region that the functions the caller called before used. The writes are volatile
/// and followed by a compiler fence, so they are not removed as dead stores.
#[inline(never)]
pub(crate) fn scrub_stack() {
    scrub::<{ SCRUB_BYTES / 8 }>();
}

/// Zeroes a local buffer of `WORDS` words with volatile writes.
#[inline(always)]
fn scrub<const WORDS: usize>() {
    let mut area = MaybeUninit::<[u64; WORDS]>::uninit();
    let words = area.as_mut_ptr().cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: `i < WORDS`, so `words.add(i)` stays inside `area`, a local that this
        // function owns; writing a `u64` to uninitialised memory is allowed.
        unsafe { words.add(i).write_volatile(0) };
    }
    compiler_fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    /// The least of many single timings of `f`: the machine's other load only adds to one.
    fn least(f: fn()) -> std::time::Duration {
        (0..20_000)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .expect("timings")
    }

    /// Prints what one scrub costs (`--ignored --nocapture`), for both sizes of
    /// [`super::SCRUB_BYTES`]; its doc quotes the figures.
    #[test]
    #[ignore = "a timing, not a check"]
    fn scrub_cost() {
        #[inline(never)]
        fn kib16() {
            super::scrub::<2048>();
        }
        #[inline(never)]
        fn kib32() {
            super::scrub::<4096>();
        }
        for (kib, f) in [(16, kib16 as fn()), (32, kib32)] {
            let t = least(f);
            eprintln!("scrub of {kib} KiB: {t:?}");
            assert!(t < std::time::Duration::from_millis(1));
        }
    }
}
