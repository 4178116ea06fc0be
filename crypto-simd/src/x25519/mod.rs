//! X25519 (RFC 7748) over batches.
//!
//! [`x25519_batch`] computes `out[i] = X25519(scalars[i], points[i])` for every lane. Lanes are
//! independent: no work is shared between them (in particular no batch inversion), so one
//! attacker-chosen point of small order cannot affect any other lane's result.
//!
//! Backends: [`Backend::Portable`] always works. Vector backends are added per CPU family and
//! picked by [`Backend::best`], which can be overridden with the `MIXPLANE_X25519_BACKEND`
//! environment variable (`portable`, `avx2`, `ifma`) for tests and benchmarks.

mod portable;

use std::sync::OnceLock;

/// The environment variable that forces a backend (`portable`, `avx2`, `ifma`).
pub const BACKEND_ENV: &str = "MIXPLANE_X25519_BACKEND";

/// An X25519 implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// One lane at a time through x25519-dalek; always available.
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
    pub const ALL: &'static [Backend] = &[Backend::Portable];

    /// The backend's short name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Portable => "portable",
        }
    }

    /// Lanes processed together by one call of the backend's kernel.
    pub fn lanes(self) -> usize {
        match self {
            Backend::Portable => 1,
        }
    }

    /// Whether the running CPU can execute this backend.
    pub fn is_supported(self) -> bool {
        match self {
            Backend::Portable => true,
        }
    }

    /// The backends the running CPU supports, fastest first.
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
            "portable" | "serial" => Backend::Portable,
            other => return Err(BackendError::Unknown(other.to_string())),
        };
        if backend.is_supported() {
            Ok(backend)
        } else {
            Err(BackendError::Unsupported(backend.name()))
        }
    }

    /// The backend to use: `MIXPLANE_X25519_BACKEND` if set and valid, else the fastest the CPU
    /// supports. Decided once per process.
    pub fn best() -> Backend {
        static BEST: OnceLock<Backend> = OnceLock::new();
        *BEST.get_or_init(|| {
            if let Ok(name) = std::env::var(BACKEND_ENV) {
                match Backend::from_name(&name) {
                    Ok(b) => return b,
                    Err(e) => eprintln!("mixplane: ignoring {BACKEND_ENV}: {e}"),
                }
            }
            Self::supported()[0]
        })
    }
}

/// Computes `out[i] = X25519(scalars[i], points[i])` for every `i` with `backend`.
///
/// Scalars are clamped and bit 255 of each point is ignored, as RFC 7748 says. The result of a
/// small-order point is all zeros, as the reference; rejecting it is the caller's job.
///
/// # Panics
/// If the three slices differ in length, or `backend` is not supported by this CPU (check with
/// [`Backend::is_supported`]; [`Backend::best`] always is).
pub fn x25519_batch(
    backend: Backend,
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
    match backend {
        Backend::Portable => portable::x25519_batch(scalars, points, out),
    }
}

/// One X25519 with the portable backend.
pub fn x25519(scalar: &[u8; 32], point: &[u8; 32]) -> [u8; 32] {
    portable::x25519(scalar, point)
}

/// The X25519 base point (u = 9).
pub const BASEPOINT: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 9;
    b
};
