//! Scrubbing the dead stack memory that secret computations leave behind.
//!
//! The X25519 kernels keep scalars, their clamped words and the ladder state in locals; the
//! compiler spills them to the stack, and when the kernel returns those bytes stay in dead stack
//! memory until something else happens to write over them. [`scrub_stack`], called by a
//! dispatcher right after the kernels return, overwrites the region below the dispatcher's own
//! frame, where the kernels' frames were: its own frame is one large buffer that it zeroes.

use core::mem::MaybeUninit;
use core::sync::atomic::{Ordering, compiler_fence};

/// Bytes of stack below its caller's frame that [`scrub_stack`] overwrites on CPUs without
/// the IFMA backend.
///
/// Sized from the deepest frame chain under the X25519 dispatcher, read from the disassembly on
/// x86_64 (2026-12-01, Zen 3). Optimised build: `batch_split` reserves 7.3 KiB (the batch
/// inversion's arrays for 64 lanes), `avx2::x25519_lanes_projective` 6.4 KiB (`sub rsp` 0xfe0 +
/// 0x9c0; 7.9 KiB before the ladder step's table shrank) and the field helpers it calls 0.4 KiB:
/// 14.1 KiB (the release-build paint test saw 14.3 KiB), so 24 KiB leaves 40 % spare.
/// A test build spills more: the test `kernels_stay_within_the_scrub`, which paints the stack,
/// checks the depth it sees against the size in force, so builds with debug assertions scrub
/// 32 KiB. One scrub costs about 1.6 µs per 16 KiB on that CPU, against 84 µs for one call of
/// the 4-lane kernel and 43 µs for one operation alone.
pub(crate) const SCRUB_BYTES: usize = if cfg!(debug_assertions) {
    32 * 1024
} else {
    24 * 1024
};

/// [`SCRUB_BYTES`] where the IFMA backend may run: its two-group kernel
/// (`ifma::x25519_lanes::<2, 16>`) reserves 18.6 KiB in an optimised build (`sub rsp` 0xfc0 +
/// 3 × 0x1000 + 0xac0; 26 KiB with `batch_split`'s frame) and 22.1 KiB plus 2.6 KiB for
/// `sqr_n` in a test build (read from the disassembly on the same date; this machine cannot run
/// it).
pub(crate) const SCRUB_BYTES_IFMA: usize = if cfg!(debug_assertions) {
    48 * 1024
} else {
    32 * 1024
};

/// How many bytes [`scrub_stack`] overwrites in this process: [`SCRUB_BYTES_IFMA`] when the
/// features in force allow the IFMA backend (whichever backend a call used), else
/// [`SCRUB_BYTES`].
pub(crate) fn scrub_bytes() -> usize {
    if crate::x25519::Backend::Ifma.is_supported() {
        SCRUB_BYTES_IFMA
    } else {
        SCRUB_BYTES
    }
}

/// Overwrites [`scrub_bytes`] of the stack just below the caller's frame with zeros.
///
/// Inlined into the caller, so the scrub it calls (never inlined: its frame is one buffer of
/// that size) starts where the caller's frame ends: the region that the functions the caller
/// called before used. The writes are volatile and followed by a compiler fence, so they are
/// not removed as dead stores.
#[inline(always)]
pub(crate) fn scrub_stack() {
    if scrub_bytes() == SCRUB_BYTES_IFMA {
        scrub_wide();
    } else {
        scrub_narrow();
    }
}

#[inline(never)]
fn scrub_narrow() {
    scrub::<{ SCRUB_BYTES / 8 }>();
}

#[inline(never)]
fn scrub_wide() {
    scrub::<{ SCRUB_BYTES_IFMA / 8 }>();
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

    /// Prints what one scrub costs (`--ignored --nocapture`), for every size
    /// [`super::SCRUB_BYTES`] and [`super::SCRUB_BYTES_IFMA`] take; its doc quotes the figures.
    #[test]
    #[ignore = "a timing, not a check"]
    fn scrub_cost() {
        #[inline(never)]
        fn kib24() {
            super::scrub::<3072>();
        }
        #[inline(never)]
        fn kib32() {
            super::scrub::<4096>();
        }
        #[inline(never)]
        fn kib48() {
            super::scrub::<6144>();
        }
        for (kib, f) in [(24, kib24 as fn()), (32, kib32), (48, kib48)] {
            let t = least(f);
            eprintln!("scrub of {kib} KiB: {t:?}");
            assert!(t < std::time::Duration::from_millis(1));
        }
    }
}
