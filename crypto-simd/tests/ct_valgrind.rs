//! Constant time, checked with Valgrind memcheck (the "ctgrind" method): secret inputs are
//! marked undefined with a client request, so memcheck reports every conditional branch, and
//! every memory address, that depends on them ("Conditional jump or move depends on
//! uninitialised value(s)", "Use of uninitialised value of size 8"). Public results are marked
//! defined again before the test looks at them (declassified).
//!
//! Outside Valgrind the client requests do nothing and these are ordinary known-answer tests.
//! Under Valgrind (see `perf/README.md` and `.ci/run`):
//!
//! ```text
//! valgrind --error-exitcode=99 <test binary> --test-threads=1            # must exit 0
//! valgrind --error-exitcode=99 <test binary> --test-threads=1 --ignored  # must exit 99
//! ```
//!
//! The ignored test is the negative control: a deliberately leaky compare that memcheck must
//! catch, showing the harness can fail. Build with debug assertions and overflow checks off
//! (`subtle`'s debug assertions branch on secrets by design, and so do overflow checks).
//!
//! Valgrind does not emulate AVX-512, so under it the CPU looks to have at most AVX2 and the
//! IFMA kernel is not among the backends checked.

use mixplane_crypto_simd::x25519::{Backend, x25519_batch};
use subtle::ConstantTimeEq;

/// Valgrind client requests on x86_64 Linux; no-ops on a real CPU.
#[cfg(target_arch = "x86_64")]
mod valgrind {
    /// `VG_USERREQ__RUNNING_ON_VALGRIND`.
    const RUNNING_ON_VALGRIND: usize = 0x1001;
    /// Memcheck's requests: `VG_USERREQ_TOOL_BASE('M', 'C')` + 1 and + 2.
    const MAKE_MEM_UNDEFINED: usize = 0x4d43_0001;
    const MAKE_MEM_DEFINED: usize = 0x4d43_0002;

    /// Issues a client request: `args[0]` is the request, the rest its arguments. On a real CPU
    /// the marker sequence (rotations of `rdi` by 128 bits in all, then `xchg rbx, rbx`)
    /// changes nothing and `default` comes back; Valgrind recognises it and answers in `rdx`.
    fn request(default: usize, args: &[usize; 6]) -> usize {
        let mut result = default;
        // SAFETY: the sequence only rotates `rdi` (declared clobbered) back to its value and
        // exchanges `rbx` with itself; Valgrind reads the six words at `rax`, which are live
        // for the call. Flags are clobbered, which `asm!` assumes by default.
        unsafe {
            core::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                inout("rdx") result,
                out("rdi") _,
            );
        }
        result
    }

    /// Whether the process runs under Valgrind.
    pub fn running() -> bool {
        request(0, &[RUNNING_ON_VALGRIND, 0, 0, 0, 0, 0]) != 0
    }

    /// Marks `bytes` secret: memcheck reports any branch or address that depends on them.
    pub fn secret(bytes: &[u8]) {
        request(
            0,
            &[
                MAKE_MEM_UNDEFINED,
                bytes.as_ptr() as usize,
                bytes.len(),
                0,
                0,
                0,
            ],
        );
    }

    /// Marks `bytes` public again (declassifies a result the protocol reveals anyway).
    pub fn public(bytes: &[u8]) {
        request(
            0,
            &[
                MAKE_MEM_DEFINED,
                bytes.as_ptr() as usize,
                bytes.len(),
                0,
                0,
                0,
            ],
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod valgrind {
    pub fn running() -> bool {
        false
    }
    pub fn secret(_: &[u8]) {}
    pub fn public(_: &[u8]) {}
}

/// Declassifies one byte: marks it public and reads it back from memory, so that the check
/// after it sees the public copy, not a register still holding the secret one.
fn declassify(v: u8) -> u8 {
    let cell = [v];
    valgrind::public(&cell);
    // SAFETY: a read of an initialised local through a reference to it.
    unsafe { core::ptr::read_volatile(&cell[0]) }
}

/// Deterministic, distinct test bytes.
fn bytes<const N: usize>(seed: u8) -> [u8; N] {
    core::array::from_fn(|i| {
        (i as u8)
            .wrapping_mul(37)
            .wrapping_add(seed.wrapping_mul(101))
    })
}

#[test]
fn x25519_kernels_do_not_branch_or_index_on_the_scalar_or_point() {
    eprintln!("under valgrind: {}", valgrind::running());
    for backend in Backend::supported() {
        // one full group of lanes: a few ladders, whatever the backend
        let n = backend.lanes();
        let scalars: Vec<[u8; 32]> = (0..n).map(|i| bytes(i as u8)).collect();
        let points: Vec<[u8; 32]> = (0..n).map(|i| bytes(200 - i as u8)).collect();
        secret_batch_matches_dalek(backend, &scalars, &points);
        eprintln!("{}: {n} ladders checked", backend.name());
    }
}

/// Several kernel calls in one batch, one lane with a small-order point (the order-4 point
/// u = 1, so a projective `Z` of zero): the AVX2 path's shared inversion (Montgomery's trick,
/// with the constant-time select that keeps the zero out of the product and the mask that
/// zeroes that lane's output) must not branch or index on which lane it is either.
#[test]
fn x25519_batch_inversion_does_not_branch_on_a_small_order_lane() {
    for backend in Backend::supported() {
        let n = 3 * backend.lanes();
        let scalars: Vec<[u8; 32]> = (0..n).map(|i| bytes(50 + i as u8)).collect();
        let mut points: Vec<[u8; 32]> = (0..n).map(|i| bytes(150 - i as u8)).collect();
        let victim = n / 2;
        points[victim] = [0u8; 32];
        points[victim][0] = 1;
        let out = secret_batch_matches_dalek(backend, &scalars, &points);
        assert_eq!(out[victim], [0u8; 32], "a small-order point gives zeros");
        eprintln!(
            "{}: {n} lanes, lane {victim} small-order, checked",
            backend.name()
        );
    }
}

/// Runs `x25519_batch` on `backend` with every scalar and point byte marked secret, marks the
/// outputs public again, and checks them against x25519-dalek; returns the outputs.
fn secret_batch_matches_dalek(
    backend: Backend,
    scalars: &[[u8; 32]],
    points: &[[u8; 32]],
) -> Vec<[u8; 32]> {
    let want: Vec<[u8; 32]> = scalars
        .iter()
        .zip(points)
        .map(|(s, p)| x25519_dalek::x25519(*s, *p))
        .collect();
    let (mut s, mut p) = (scalars.to_vec(), points.to_vec());
    for x in s.iter_mut().chain(p.iter_mut()) {
        valgrind::secret(x);
    }
    let mut out = vec![[0u8; 32]; s.len()];
    x25519_batch(backend, &s, &p, &mut out);
    for o in &out {
        valgrind::public(o);
    }
    assert_eq!(out, want, "{}", backend.name());
    out
}

/// The MAC check and the zero-secret check of `dataplane/src/sphinx/processor.rs`, on secret
/// inputs: `subtle`'s `ct_eq`, declassifying only the verdict.
#[test]
fn mac_compare_does_not_branch_on_the_mac() {
    for (mac, gamma, equal) in [
        (bytes::<16>(1), bytes::<16>(1), 1u8),
        (bytes::<16>(1), bytes::<16>(2), 0),
    ] {
        let gamma: &[u8] = &gamma;
        valgrind::secret(&mac);
        valgrind::secret(gamma);
        let verdict = declassify(mac.ct_eq(gamma).unwrap_u8());
        assert_eq!(verdict, equal);
        let shared: [u8; 32] = bytes(equal);
        valgrind::secret(&shared);
        let zero = declassify(shared.ct_eq(&[0u8; 32]).unwrap_u8());
        assert_eq!(zero, 0);
    }
}

/// A MAC compare that stops at the first differing byte: its running time tells an attacker
/// how many leading bytes of a forged MAC were right.
#[inline(never)]
fn leaky_mac_eq(mac: &[u8; 16], gamma: &[u8; 16]) -> u8 {
    for (a, b) in mac.iter().zip(gamma) {
        // black_box keeps the loop a loop of byte compares with an early exit
        if std::hint::black_box(*a) != std::hint::black_box(*b) {
            return 0;
        }
    }
    1
}

/// The negative control: memcheck must report the early exit inside the compare (the verdict
/// itself is declassified, as in the constant-time test). Run it alone under Valgrind
/// (`--ignored`); the run must fail. Outside Valgrind it only checks the compare's answer.
#[test]
#[ignore = "negative control: must FAIL under valgrind (see the module doc)"]
fn leaky_compare_is_caught() {
    let (mac, mut gamma) = (bytes::<16>(3), bytes::<16>(3));
    gamma[9] ^= 1;
    valgrind::secret(&mac);
    valgrind::secret(&gamma);
    let verdict = declassify(leaky_mac_eq(&mac, &gamma));
    assert_eq!(verdict, 0);
}
