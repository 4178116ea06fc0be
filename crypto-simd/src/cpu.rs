//! The one place that reads the CPU: its vector features, detected once and cached, and the
//! feature cap that limits what every dispatcher in the process may use.
//!
//! Every primitive of this crate picks its backend from [`in_force`]: the features the CPU
//! has ([`detected`]), lowered to the cap. The cap comes from [`set_cap`] if the program called
//! it before the first use of any primitive, else from the environment variable [`CAP_ENV`]
//! (`MIXPLANE_CPU=portable|avx2|avx2-nosha|avx512`; unset, empty or `native` means no cap). A cap above
//! what the CPU has gives what it has. An invalid value means no cap, and the problem is kept
//! for [`warning`] (the library prints nothing; a binary logs it). The decision is made once,
//! on first use, and then holds for the life of the process, so all dispatchers agree.
//!
//! SHA-NI is not a vector feature and stays outside [`Features`]: [`sha_ni`] says whether the
//! SHA-256 dispatcher may count on it, which every cap allows but `portable` and `avx2-nosha` (AVX2 as
//! on an Intel Haswell..Skylake CPU, which lacks SHA-NI; on every other count the same as
//! `avx2`).
//!
//! The cap governs this crate's own vector dispatchers. The RustCrypto crates under the
//! portable paths (`chacha20`, `sha2`, `blake2`) detect the CPU on their own and may still use
//! its SIMD or SHA extensions, and the portable X25519 ladder uses the scalar BMI2/ADX
//! instructions (`mulx`) wherever the CPU has them.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The environment variable that caps the CPU features used (`portable`, `avx2`, `avx512`).
pub const CAP_ENV: &str = "MIXPLANE_CPU";

/// A set of vector features this crate can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features {
    /// AVX2 (256-bit integer vectors).
    pub avx2: bool,
    /// AVX-512 F (512-bit vectors, 64-bit rotates).
    pub avx512f: bool,
    /// AVX-512 F + VL + IFMA (52-bit multiply-add on 512-bit vectors).
    pub avx512ifma: bool,
}

impl Features {
    /// No vector features: what every portable path needs.
    pub const NONE: Features = Features {
        avx2: false,
        avx512f: false,
        avx512ifma: false,
    };

    /// These features lowered to `cap`: a cap never adds a feature the set lacks.
    pub fn capped(self, cap: Cap) -> Features {
        match cap {
            Cap::Portable => Features::NONE,
            Cap::Avx2 | Cap::Avx2NoSha => Features {
                avx2: self.avx2,
                ..Features::NONE
            },
            Cap::Avx512 => self,
        }
    }
}

impl fmt::Display for Features {
    /// The features' names separated by spaces, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.avx2, "avx2"),
            (self.avx512f, "avx512f"),
            (self.avx512ifma, "avx512ifma"),
        ];
        let mut any = false;
        for (_, name) in names.iter().filter(|(on, _)| *on) {
            f.write_str(if any { " " } else { "" })?;
            f.write_str(name)?;
            any = true;
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// A ceiling on the vector features the process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cap {
    /// No vector features: every primitive takes its portable path.
    Portable,
    /// At most AVX2.
    Avx2,
    /// At most AVX2, and no SHA-NI for SHA-256 ([`sha_ni`]): a CPU of the Haswell..Skylake
    /// class.
    Avx2NoSha,
    /// At most AVX-512 (F, VL, IFMA): everything this crate uses.
    Avx512,
}

impl Cap {
    /// The cap's name, as [`CAP_ENV`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Cap::Portable => "portable",
            Cap::Avx2 => "avx2",
            Cap::Avx2NoSha => "avx2-nosha",
            Cap::Avx512 => "avx512",
        }
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cap {
    type Err = CapError;

    /// Parses `portable`, `avx2`, `avx2-nosha` or `avx512` (any case, surrounding spaces ignored).
    fn from_str(s: &str) -> Result<Cap, CapError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" => Ok(Cap::Portable),
            "avx2" => Ok(Cap::Avx2),
            "avx2-nosha" => Ok(Cap::Avx2NoSha),
            "avx512" => Ok(Cap::Avx512),
            _ => Err(CapError::Invalid(s.to_string())),
        }
    }
}

/// Problems with the feature cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapError {
    /// The value of [`CAP_ENV`] (or a string parsed as a cap) names no cap.
    #[error(
        "invalid {CAP_ENV} value `{0}` (expected portable, avx2, avx2-nosha or avx512); using the CPU's own features"
    )]
    Invalid(String),
    /// [`set_cap`] came after the features in force were fixed, and asked for other ones.
    #[error("the CPU feature cap is already fixed at {}", display_cap(.0))]
    AlreadyFixed(Option<Cap>),
}

fn display_cap(cap: &Option<Cap>) -> &'static str {
    cap.map_or("native (no cap)", Cap::name)
}

/// What the process uses, fixed on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selection {
    cap: Option<Cap>,
    in_force: Features,
    warning: Option<CapError>,
}

impl Selection {
    /// The selection for a cap request (`None`: no cap) on a CPU with `detected`.
    fn new(detected: Features, cap: Option<Cap>, warning: Option<CapError>) -> Selection {
        let in_force = cap.map_or(detected, |c| detected.capped(c));
        Selection {
            cap,
            in_force,
            warning,
        }
    }

    /// The selection for a value of [`CAP_ENV`] (`None`: unset).
    fn from_env_value(detected: Features, value: Option<&str>) -> Selection {
        match value.map(str::trim) {
            None | Some("") => Selection::new(detected, None, None),
            Some(v) if v.eq_ignore_ascii_case("native") => Selection::new(detected, None, None),
            Some(v) => match v.parse() {
                Ok(cap) => Selection::new(detected, Some(cap), None),
                Err(e) => Selection::new(detected, None, Some(e)),
            },
        }
    }
}

static SELECTION: OnceLock<Selection> = OnceLock::new();

fn selection() -> &'static Selection {
    SELECTION.get_or_init(|| {
        let value = std::env::var_os(CAP_ENV).map(|v| v.to_string_lossy().into_owned());
        Selection::from_env_value(detected(), value.as_deref())
    })
}

/// The running CPU's own features (detected once), whatever the cap.
pub fn detected() -> Features {
    static DETECTED: OnceLock<Features> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

/// The features every dispatcher of this crate uses: [`detected`] lowered to the cap.
///
/// The first call (or the first use of any primitive) fixes the cap for the process.
#[inline]
pub fn in_force() -> Features {
    selection().in_force
}

/// Whether the SHA-256 dispatcher may use SHA-NI: the CPU has it (detected once) and the cap
/// is neither [`Cap::Portable`] nor [`Cap::Avx2NoSha`]. (The `sha2` crate under the portable
/// path detects SHA-NI on its own, whatever this says.)
pub fn sha_ni() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    let capped = matches!(cap(), Some(Cap::Portable | Cap::Avx2NoSha));
    *DETECTED.get_or_init(detect_sha_ni) && !capped
}

#[cfg(target_arch = "x86_64")]
fn detect_sha_ni() -> bool {
    use std::arch::is_x86_feature_detected as has;
    // the SHA-NI code uses SSSE3 and SSE4.1 beside it (every CPU with SHA-NI has them)
    has!("sha") && has!("ssse3") && has!("sse4.1")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_sha_ni() -> bool {
    false
}

/// The cap in force (`None`: no cap, the CPU's own features).
pub fn cap() -> Option<Cap> {
    selection().cap
}

/// Sets the cap (`None`: no cap) instead of [`CAP_ENV`].
///
/// Call it first thing, before any primitive of this crate runs: the cap is fixed on first
/// use, so that every dispatcher in the process makes the same choice. After that it returns
/// [`CapError::AlreadyFixed`], unless it asks for the cap already in force. Tests that need a
/// cap call it at the start of an integration-test binary of their own (one process); unit
/// tests that want one backend pass it explicitly where the primitive allows
/// ([`crate::x25519::x25519_batch`]).
pub fn set_cap(cap: Option<Cap>) -> Result<(), CapError> {
    let wanted = Selection::new(detected(), cap, None);
    match SELECTION.set(wanted) {
        Ok(()) => Ok(()),
        Err(_) if selection().cap == cap => Ok(()),
        Err(_) => Err(CapError::AlreadyFixed(selection().cap)),
    }
}

/// The problem with [`CAP_ENV`]'s value, if it had one (it was then ignored): for the binary
/// to log once at start. Fixes the cap, as [`in_force`] does.
pub fn warning() -> Option<&'static CapError> {
    selection().warning.as_ref()
}

/// The CPU's features, the cap and the features in force, for a log line or a bench header.
pub fn report() -> Report {
    Report {
        detected: detected(),
        cap: cap(),
        in_force: in_force(),
    }
}

/// What [`report`] returns; its `Display` reads
/// `CPU features: avx2; cap: portable; in force: none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The CPU's own features.
    pub detected: Features,
    /// The cap in force (`None`: none).
    pub cap: Option<Cap>,
    /// The features the dispatchers use.
    pub in_force: Features,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU features: {}; cap: {}; in force: {}",
            self.detected,
            display_cap(&self.cap),
            self.in_force
        )
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    use std::arch::is_x86_feature_detected as has;
    Features {
        avx2: has!("avx2"),
        avx512f: has!("avx512f"),
        avx512ifma: has!("avx512f") && has!("avx512vl") && has!("avx512ifma"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Features {
    Features::NONE
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Features = Features {
        avx2: true,
        avx512f: true,
        avx512ifma: true,
    };
    const AVX2: Features = Features {
        avx2: true,
        ..Features::NONE
    };

    #[test]
    fn a_cap_lowers_and_never_raises() {
        assert_eq!(ALL.capped(Cap::Portable), Features::NONE);
        assert_eq!(ALL.capped(Cap::Avx2), AVX2);
        assert_eq!(ALL.capped(Cap::Avx2NoSha), AVX2);
        assert_eq!(ALL.capped(Cap::Avx512), ALL);
        // Above what the CPU has: what it has.
        assert_eq!(AVX2.capped(Cap::Avx512), AVX2);
        assert_eq!(Features::NONE.capped(Cap::Avx2), Features::NONE);
        let f512_only = Features {
            avx512f: true,
            ..Features::NONE
        };
        assert_eq!(f512_only.capped(Cap::Avx2), Features::NONE);
    }

    #[test]
    fn env_values() {
        let sel = |v| Selection::from_env_value(ALL, v);
        for v in [None, Some(""), Some("  "), Some("native"), Some("NATIVE")] {
            assert_eq!(sel(v), Selection::new(ALL, None, None), "{v:?}");
            assert_eq!(sel(v).in_force, ALL);
        }
        assert_eq!(sel(Some("portable")).in_force, Features::NONE);
        assert_eq!(sel(Some(" AVX2 ")).in_force, AVX2);
        assert_eq!(sel(Some("avx512")).cap, Some(Cap::Avx512));
        // An invalid value: the CPU's own features and a warning, no panic.
        let bad = sel(Some("avx1024"));
        assert_eq!(bad.in_force, ALL);
        assert_eq!(bad.cap, None);
        assert_eq!(bad.warning, Some(CapError::Invalid("avx1024".into())));
        assert!(bad.warning.unwrap().to_string().contains("MIXPLANE_CPU"));
        // A cap above what the CPU has is no error.
        let low = Selection::from_env_value(AVX2, Some("avx512"));
        assert_eq!((low.in_force, low.warning), (AVX2, None));
    }

    #[test]
    fn names_round_trip_and_display() {
        for cap in [Cap::Portable, Cap::Avx2, Cap::Avx2NoSha, Cap::Avx512] {
            assert_eq!(cap.name().parse(), Ok(cap));
            assert_eq!(cap.to_string(), cap.name());
        }
        assert_eq!(ALL.to_string(), "avx2 avx512f avx512ifma");
        assert_eq!(AVX2.to_string(), "avx2");
        assert_eq!(Features::NONE.to_string(), "none");
        let r = Report {
            detected: AVX2,
            cap: Some(Cap::Portable),
            in_force: Features::NONE,
        };
        assert_eq!(
            r.to_string(),
            "CPU features: avx2; cap: portable; in force: none"
        );
    }

    #[test]
    fn in_force_is_within_detected() {
        let (d, f) = (detected(), in_force());
        assert!(!f.avx2 || d.avx2);
        assert!(!f.avx512f || d.avx512f);
        assert!(!f.avx512ifma || d.avx512ifma);
        // Asking again for the cap already in force is accepted.
        assert_eq!(set_cap(cap()), Ok(()));
    }
}
