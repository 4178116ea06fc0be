//! Runtime CPU feature detection, done once and cached.

use std::sync::OnceLock;

/// The vector features this crate can use, as detected on the running CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    /// AVX2 (256-bit integer vectors).
    pub avx2: bool,
    /// AVX-512 F + VL + IFMA (52-bit multiply-add on 512-bit vectors).
    pub avx512ifma: bool,
    /// AVX-512 F (512-bit vectors, 64-bit rotates).
    pub avx512f: bool,
}

/// Detects (once) and returns the CPU's features.
pub fn features() -> CpuFeatures {
    static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
    *FEATURES.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuFeatures {
    CpuFeatures {
        avx2: std::arch::is_x86_feature_detected!("avx2"),
        avx512ifma: std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512ifma"),
        avx512f: std::arch::is_x86_feature_detected!("avx512f"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> CpuFeatures {
    CpuFeatures {
        avx2: false,
        avx512ifma: false,
        avx512f: false,
    }
}
