//! Batched, SIMD-accelerated cryptography for the mixplane dataplane.
//!
//! This crate owns every primitive on the per-packet path whose speed depends on the CPU:
//! X25519 over whole batches of packets ([`x25519`]), the Lioness wide-block cipher that
//! Sphinx payloads use ([`lioness`]) and the two primitives under it, multi-buffer keyed
//! BLAKE2b ([`blake2b`]) and ChaCha20 ([`chacha20`]), and multi-buffer SHA-256 compression
//! ([`sha256`]) for the key schedules of sixteen packets at once. Each primitive has a portable
//! implementation that always works and, where it pays, vector backends chosen once at run
//! time from the features in force ([`cpu::in_force`]: the CPU's own, lowered to the
//! `MIXPLANE_CPU` cap), each primitive's choice a `Backend` enum and its operations a `match` on
//! it. Vector code lives in a private module per backend; `#[target_feature]` functions are
//! only reached after detection said the features are there.
//!
//! Boundaries: no I/O, no packet formats, no allocation on the batch paths. Sphinx framing and
//! key schedules live in `mixplane-dataplane`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(unreachable_pub)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod blake2b;
pub mod chacha20;
pub mod cpu;
pub mod lioness;
pub mod sha256;
pub mod x25519;

mod wipe;

/// The backend each primitive uses in this process, as [`paths`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paths {
    /// X25519's backend ([`x25519::Backend::best`]).
    pub x25519: x25519::Backend,
    /// Multi-buffer SHA-256's backend.
    pub sha256: sha256::Backend,
    /// ChaCha20's backend.
    pub chacha20: chacha20::Backend,
    /// Keyed BLAKE2b's backend.
    pub blake2b: blake2b::Backend,
}

/// The backend every primitive picks from the features in force ([`cpu::in_force`]), for a
/// log line at start. Fixes the CPU feature cap, as [`cpu::in_force`] does.
pub fn paths() -> Paths {
    Paths {
        x25519: x25519::Backend::best(),
        sha256: sha256::Backend::best(),
        chacha20: chacha20::Backend::best(),
        blake2b: blake2b::Backend::best(),
    }
}

impl std::fmt::Display for Paths {
    /// Reads `x25519 avx2 (one at a time below 2 lanes), sha256 portable, chacha20 avx2,
    /// blake2b avx2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let x = self.x25519;
        write!(f, "x25519 {}", x.name())?;
        if x.min_vector_lanes() > 1 {
            write!(f, " (one at a time below {} lanes)", x.min_vector_lanes())?;
        }
        write!(
            f,
            ", sha256 {}, chacha20 {}, blake2b {}",
            self.sha256.name(),
            self.chacha20.name(),
            self.blake2b.name()
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_follow_the_features_in_force_and_read_well() {
        let p = super::paths();
        assert_eq!(p.x25519, super::x25519::Backend::best());
        let text = p.to_string();
        assert!(
            text.starts_with(&format!("x25519 {}", p.x25519.name())),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("blake2b {}", p.blake2b.name())),
            "{text}"
        );
        let lone = super::Paths {
            x25519: super::x25519::Backend::Avx2,
            ..p
        };
        assert!(
            lone.to_string()
                .contains("avx2 (one at a time below 2 lanes)")
        );
    }
}
