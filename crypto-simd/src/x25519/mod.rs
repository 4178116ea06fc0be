//! X25519 (RFC 7748) over batches.
//!
//! [`x25519_batch`] computes `out[i] = X25519(scalars[i], points[i])` for every lane. Each lane
//! runs its own ladder. The AVX2 path then shares one field inversion between up to 64 lanes
//! (Montgomery's batch-inversion trick, `single::affine_batch`); a lane whose projective `Z`
//! is zero (a small-order point) enters that product as 1, selected in constant time, and its
//! output is masked to zero afterwards, so one attacker-chosen point of small order cannot
//! affect any other lane's result. The other backends share nothing between lanes.
//!
//! Backends: [`Backend::Portable`] always works. On x86_64, [`Backend::Ifma`] (AVX-512 IFMA,
//! eight lanes per vector) and [`Backend::Avx2`] (four lanes per vector) run that many
//! independent, constant-time Montgomery ladders side by side, one lane per vector element; each
//! lives in its own module and is only entered when the features in force allow it
//! ([`Backend::is_supported`]). The IFMA kernel runs two vectors' worth (sixteen lanes)
//! interleaved while the batch has them, so that one group's multiply-add chains overlap with
//! the other's work, then single groups of eight. Batches of any length go through the kernel
//! in full chunks; a tail that fills at least [`Backend::min_vector_lanes`] lanes is padded with
//! dummy lanes in stack buffers and goes through the kernel too, and a shorter tail (a lone
//! packet on an idle node, say) runs one operation at a time on the portable backend's
//! single-operation ladder (module `single`: radix 2^51, about 1.4× x25519-dalek's speed on
//! Zen 3), which is then cheaper than a kernel call that pays for every lane. [`Backend::best`]
//! picks the fastest backend that the features in force ([`crate::cpu::in_force`], which the
//! `MIXPLANE_CPU` cap can lower) allow. Every backend's output is bit-identical to
//! `x25519_dalek::x25519`.
//!
//! The backends share what is not vector arithmetic: clamping and the byte/word conversions
//! (module `words`) and the addition chain of the inversion (macro `invert_chain`).

/// `$z^(p-2) = $z^(2^255 - 21)`, the inverse of `$z` (zero for zero), by the usual fixed
/// addition chain: 254 squarings and 11 multiplications. Written once for every field
/// implementation: `$sqr_n(&a, n)` must compute `a^(2^n)` (n >= 1) and `$mul(&a, &b)` the
/// product, on whatever type `$z` is. Expanded in place, so the operations inline into the
/// caller's `#[target_feature]` context.
macro_rules! invert_chain {
    ($z:expr, $sqr_n:path, $mul:path) => {{
        let z = $z;
        let t0 = $sqr_n(z, 1); // 2
        let t1 = $sqr_n(&t0, 2); // 8
        let t1 = $mul(z, &t1); // 9
        let t0 = $mul(&t0, &t1); // 11
        let t2 = $sqr_n(&t0, 1); // 22
        let t1 = $mul(&t1, &t2); // 2^5 - 1
        let t2 = $sqr_n(&t1, 5);
        let t1 = $mul(&t2, &t1); // 2^10 - 1
        let t2 = $sqr_n(&t1, 10);
        let t2 = $mul(&t2, &t1); // 2^20 - 1
        let t3 = $sqr_n(&t2, 20);
        let t2 = $mul(&t3, &t2); // 2^40 - 1
        let t2 = $sqr_n(&t2, 10);
        let t1 = $mul(&t2, &t1); // 2^50 - 1
        let t2 = $sqr_n(&t1, 50);
        let t2 = $mul(&t2, &t1); // 2^100 - 1
        let t3 = $sqr_n(&t2, 100);
        let t2 = $mul(&t3, &t2); // 2^200 - 1
        let t2 = $sqr_n(&t2, 50);
        let t1 = $mul(&t2, &t1); // 2^250 - 1
        let t1 = $sqr_n(&t1, 5); // 2^255 - 32
        $mul(&t1, &t0) // 2^255 - 21
    }};
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(test)]
mod field51;
#[cfg(test)]
mod field_tests;
#[cfg(target_arch = "x86_64")]
mod ifma;
mod portable;
mod single;
mod words;

/// An X25519 implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Eight lanes per vector, sixteen per kernel call (two vectors interleaved), with AVX-512
    /// IFMA (radix 2^52); needs AVX-512 F, VL and IFMA.
    Ifma,
    /// Four lanes per vector and per kernel call with AVX2 (radix 2^25.5); needs AVX2.
    Avx2,
    /// One lane at a time on the crate's own single-operation ladder (radix 2^51, `u128`
    /// products, `mulx` where the CPU has BMI2 and ADX); always available.
    Portable,
}

/// Errors from backend selection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The name is not a backend this crate knows.
    #[error("unknown X25519 backend `{0}` (expected portable, avx2 or ifma)")]
    Unknown(String),
    /// The backend exists but the CPU lacks the features it needs.
    #[error("X25519 backend `{0}` is not supported by this CPU")]
    Unsupported(&'static str),
}

impl Backend {
    /// Every backend, fastest first.
    pub const ALL: &'static [Backend] = &[Backend::Ifma, Backend::Avx2, Backend::Portable];

    /// The backend's short name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ifma => "ifma",
            Backend::Avx2 => "avx2",
            Backend::Portable => "portable",
        }
    }

    /// Lanes processed together by one call of the backend's widest kernel.
    pub fn lanes(self) -> usize {
        match self {
            Backend::Ifma => 16,
            Backend::Avx2 => 4,
            Backend::Portable => 1,
        }
    }

    /// The fewest filled lanes for which one call of the backend's vector kernel is cheaper
    /// than running them one at a time on the portable single-operation ladder; a batch's tail
    /// with fewer lanes than this takes the single-operation ladder ([`x25519_batch`]).
    ///
    /// AVX2: on an AMD EPYC Zen 3 (2026-12-01, `ladder_timing`) one 4-lane kernel call (83 µs)
    /// costs 1.9 operations of the single-operation ladder (43 µs), so one lane goes alone and
    /// two or more take the kernel.
    /// IFMA: 3.2 µs (Zen 5) to 6.2 µs (Xeon) per lane, so 26 to 50 µs per 8-lane call, against
    /// 36 to 50 µs for one x25519-dalek operation (bench/RESULTS.md) and not yet measured
    /// against the single-operation ladder there: even one lane takes the kernel for now.
    pub fn min_vector_lanes(self) -> usize {
        match self {
            Backend::Ifma => 1,
            Backend::Avx2 => 2,
            Backend::Portable => 1,
        }
    }

    /// Whether `features` allow this backend.
    fn is_allowed_by(self, features: crate::cpu::Features) -> bool {
        match self {
            Backend::Ifma => cfg!(target_arch = "x86_64") && features.avx512ifma,
            Backend::Avx2 => cfg!(target_arch = "x86_64") && features.avx2,
            Backend::Portable => true,
        }
    }

    /// Whether this process may run this backend: the features in force
    /// ([`crate::cpu::in_force`]: the CPU's, lowered to the cap) allow it.
    pub fn is_supported(self) -> bool {
        self.is_allowed_by(crate::cpu::in_force())
    }

    /// The backends this process may run ([`Backend::is_supported`]), fastest first.
    pub fn supported() -> Vec<Backend> {
        Self::ALL
            .iter()
            .copied()
            .filter(|b| b.is_supported())
            .collect()
    }

    /// Parses a backend name and checks the CPU supports it.
    pub fn from_name(name: &str) -> Result<Backend, BackendError> {
        let backend = match name.trim().to_ascii_lowercase().as_str() {
            "ifma" | "avx512ifma" | "avx512" => Backend::Ifma,
            "avx2" => Backend::Avx2,
            "portable" | "serial" => Backend::Portable,
            other => return Err(BackendError::Unknown(other.to_string())),
        };
        if backend.is_supported() {
            Ok(backend)
        } else {
            Err(BackendError::Unsupported(backend.name()))
        }
    }

    /// The fastest backend that `features` allow.
    pub fn for_features(features: crate::cpu::Features) -> Backend {
        let allowed = Self::ALL
            .iter()
            .copied()
            .find(|b| b.is_allowed_by(features));
        allowed.unwrap_or(Backend::Portable)
    }

    /// The backend in use: the fastest one the features in force allow.
    #[inline]
    pub fn best() -> Backend {
        Self::for_features(crate::cpu::in_force())
    }
}

/// Computes `out[i] = X25519(scalars[i], points[i])` for every `i` with `backend`.
///
/// A vector backend runs full chunks of its lanes through its kernel; a tail chunk goes through
/// the kernel too if it fills at least [`Backend::min_vector_lanes`] lanes, else its operations
/// run one at a time on the portable ladder. The choice depends on the batch length only
/// (public), and every path is constant time in the scalars and points.
///
/// Scalars are clamped and bit 255 of each point is ignored, as RFC 7748 says. The result of a
/// small-order point is all zeros, as the reference; rejecting it is the caller's job.
///
/// Before it returns, the stack below its frame, where the kernels kept copies of the scalars,
/// is zeroed (about 1.6 µs per call; `crate::wipe`). The outputs are the caller's to wipe.
///
/// # Panics
/// If the three slices differ in length, or `backend` is not supported in this process (check
/// with [`Backend::is_supported`]; [`Backend::best`] always is).
pub fn x25519_batch(
    backend: Backend,
    scalars: &[[u8; 32]],
    points: &[[u8; 32]],
    out: &mut [[u8; 32]],
) {
    batch_split(backend, backend.min_vector_lanes(), scalars, points, out);
    // The kernels' frames, with their copies of the scalars, lay below this one.
    crate::wipe::scrub_stack();
}

/// [`x25519_batch`] with the tail threshold given: a tail chunk that fills fewer than
/// `min_vector_lanes` lanes runs one operation at a time on the portable ladder (`1`: every
/// tail takes the kernel; `usize::MAX`: every tail goes one at a time). Same panics.
fn batch_split(
    backend: Backend,
    min_vector_lanes: usize,
    scalars: &[[u8; 32]],
    points: &[[u8; 32]],
    out: &mut [[u8; 32]],
) {
    assert_eq!(scalars.len(), points.len(), "one point per scalar");
    assert_eq!(scalars.len(), out.len(), "one output per scalar");
    assert!(
        backend.is_supported(),
        "backend {} not supported",
        backend.name()
    );
    let min = min_vector_lanes;
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Ifma => {
            // Two groups of eight lanes at a time while there are sixteen, then one group.
            let split = scalars.len() / 16 * 16;
            let (s2, s1) = scalars.split_at(split);
            let (p2, p1) = points.split_at(split);
            let (o2, o1) = out.split_at_mut(split);
            // SAFETY: asserted above that the features in force, a subset of the CPU's, include
            // this backend's (AVX-512 F/VL/IFMA).
            unsafe {
                batch_lanes::<16>(s2, p2, o2, ifma::x25519_lanes::<2, 16>, min);
                batch_lanes::<{ ifma::LANES }>(s1, p1, o1, ifma::x25519_lanes::<1, 8>, min);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => {
            // SAFETY: asserted above that the features in force, a subset of the CPU's, include
            // AVX2.
            unsafe { avx2_batch(scalars, points, out, min) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Backend::Ifma | Backend::Avx2 => unreachable!("vector backends are x86_64 only"),
        Backend::Portable => portable::x25519_batch(scalars, points, out),
    }
}

/// A vector kernel: `N` independent X25519s.
#[cfg(target_arch = "x86_64")]
type Kernel<const N: usize> = unsafe fn(&[[u8; 32]; N], &[[u8; 32]; N], &mut [[u8; 32]; N]);

/// Runs `kernel` over full chunks of `N` lanes, then over the tail: once, padded with dummy
/// lanes in stack buffers (no allocation, no out-of-bounds access), if it fills at least
/// `min_vector_lanes` lanes, else one operation at a time on the portable ladder.
///
/// # Safety
/// The CPU must support the features `kernel` is compiled for.
#[cfg(target_arch = "x86_64")]
unsafe fn batch_lanes<const N: usize>(
    scalars: &[[u8; 32]],
    points: &[[u8; 32]],
    out: &mut [[u8; 32]],
    kernel: Kernel<N>,
    min_vector_lanes: usize,
) {
    let mut s_chunks = scalars.chunks_exact(N);
    let mut p_chunks = points.chunks_exact(N);
    let mut o_chunks = out.chunks_exact_mut(N);
    for ((s, p), o) in (&mut s_chunks).zip(&mut p_chunks).zip(&mut o_chunks) {
        let s: &[[u8; 32]; N] = s.try_into().expect("chunk of N");
        let p: &[[u8; 32]; N] = p.try_into().expect("chunk of N");
        let o: &mut [[u8; 32]; N] = o.try_into().expect("chunk of N");
        // SAFETY: the caller guarantees the CPU supports the kernel's features.
        unsafe { kernel(s, p, o) };
    }
    let (s, p, o) = (
        s_chunks.remainder(),
        p_chunks.remainder(),
        o_chunks.into_remainder(),
    );
    if s.len() < min_vector_lanes {
        portable::x25519_batch(s, p, o);
    } else if !s.is_empty() {
        let mut ts = [[0u8; 32]; N];
        let mut tp = [BASEPOINT; N];
        let mut to = [[0u8; 32]; N];
        ts[..s.len()].copy_from_slice(s);
        tp[..p.len()].copy_from_slice(p);
        // SAFETY: the caller guarantees the CPU supports the kernel's features.
        unsafe { kernel(&ts, &tp, &mut to) };
        o.copy_from_slice(&to[..o.len()]);
        // Scalars are secrets: do not leave copies on the stack.
        zeroize::Zeroize::zeroize(&mut ts);
        zeroize::Zeroize::zeroize(&mut to);
    }
}

/// The AVX2 path of [`batch_split`]: a tail of fewer than `min_vector_lanes` lanes beyond the
/// last full chunk of four runs one operation at a time on the portable ladder; the rest goes
/// through the kernel in groups of up to [`single::AFFINE_GROUP`] lanes ([`avx2_group`]).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
unsafe fn avx2_batch(
    scalars: &[[u8; 32]],
    points: &[[u8; 32]],
    out: &mut [[u8; 32]],
    min_vector_lanes: usize,
) {
    let tail = scalars.len() % avx2::LANES;
    let alone = if tail < min_vector_lanes { tail } else { 0 };
    let split = scalars.len() - alone;
    let (s, s_alone) = scalars.split_at(split);
    let (p, p_alone) = points.split_at(split);
    let (o, o_alone) = out.split_at_mut(split);
    const GROUP: usize = single::AFFINE_GROUP;
    for ((s, p), o) in s
        .chunks(GROUP)
        .zip(p.chunks(GROUP))
        .zip(o.chunks_mut(GROUP))
    {
        // SAFETY: the caller guarantees AVX2.
        unsafe { avx2_group(s, p, o) };
    }
    portable::x25519_batch(s_alone, p_alone, o_alone);
}

/// Up to [`single::AFFINE_GROUP`] lanes on the AVX2 kernel, which stops before the division
/// (`avx2::x25519_lanes_projective`), then one batch inversion for all of them
/// (`single::affine_batch`) instead of one vector inversion per kernel call. A last chunk of
/// fewer than four lanes is padded with dummy lanes (scalar zero, the base point) whose results
/// are dropped. A lane whose `Z` is zero (a small-order point) gives zero and changes no other
/// lane's result (`affine_batch` keeps zeros out of the product).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
unsafe fn avx2_group(scalars: &[[u8; 32]], points: &[[u8; 32]], out: &mut [[u8; 32]]) {
    const N: usize = avx2::LANES;
    const GROUP: usize = single::AFFINE_GROUP;
    // `GROUP` is a multiple of `N`, so the chunks of four below never straddle its end.
    const _: () = assert!(GROUP.is_multiple_of(N));
    let n = scalars.len();
    assert!(n <= GROUP && points.len() == n && out.len() == n);
    let mut xs = [[0u64; 4]; GROUP];
    let mut zs = [[0u64; 4]; GROUP];
    let chunks = xs.chunks_exact_mut(N).zip(zs.chunks_exact_mut(N));
    for ((s, p), (x, z)) in scalars.chunks(N).zip(points.chunks(N)).zip(chunks) {
        let x: &mut [[u64; 4]; N] = x.try_into().expect("chunk of N");
        let z: &mut [[u64; 4]; N] = z.try_into().expect("chunk of N");
        if let (Ok(s), Ok(p)) = (<&[[u8; 32]; N]>::try_from(s), <&[[u8; 32]; N]>::try_from(p)) {
            // SAFETY: the caller guarantees AVX2.
            unsafe { avx2::x25519_lanes_projective(s, p, x, z) };
        } else {
            let mut ts = [[0u8; 32]; N];
            let mut tp = [BASEPOINT; N];
            ts[..s.len()].copy_from_slice(s);
            tp[..p.len()].copy_from_slice(p);
            // SAFETY: the caller guarantees AVX2.
            unsafe { avx2::x25519_lanes_projective(&ts, &tp, x, z) };
            // Scalars are secrets: do not leave copies on the stack.
            zeroize::Zeroize::zeroize(&mut ts);
        }
    }
    single::affine_batch(&xs[..n], &zs[..n], out);
    // The projective coordinates are secret-derived.
    zeroize::Zeroize::zeroize(&mut xs);
    zeroize::Zeroize::zeroize(&mut zs);
}

/// One X25519 with the portable backend; like [`x25519_batch`], it zeroes the stack the ladder
/// used before it returns.
pub fn x25519(scalar: &[u8; 32], point: &[u8; 32]) -> [u8; 32] {
    let out = portable::x25519(scalar, point);
    crate::wipe::scrub_stack();
    out
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod stack_tests;
#[cfg(test)]
mod tests;

/// The X25519 base point (u = 9).
pub const BASEPOINT: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 9;
    b
};
