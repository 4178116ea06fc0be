//! What the X25519 paths leave in dead stack memory, and that [`crate::wipe::scrub_stack`]
//! removes it.
//!
//! Each check runs in a helper thread of its own (a fresh stack of known size): it paints the
//! [`SPAN`] bytes below its frame with a pattern, runs one X25519 path, then copies the same
//! bytes out. Both steps are inline assembly that works below the stack pointer, which the
//! assembly rules allow when `nostack` is not given; no Rust reference ever covers that memory.
//! The copy shows how deep the path wrote (the lowest byte that is no longer the pattern) and
//! whether the scalars, or their clamped forms, are still there.

use super::*;
use crate::wipe::scrub_bytes;
use core::arch::asm;

/// Bytes below the helper thread's frame that each check paints and reads back.
const SPAN: usize = 128 * 1024;
/// The helper thread's stack: room for `SPAN` under the thread's own start-up frames.
const STACK: usize = 1024 * 1024;
/// The paint: a byte that no X25519 path is likely to write 8 times in a row.
const PAINT: u8 = 0xa5;

/// A path under test, `x25519_batch`'s signature.
type Path = fn(Backend, &[[u8; 32]], &[[u8; 32]], &mut [[u8; 32]]);

/// The dispatcher without the scrub.
fn unscrubbed(backend: Backend, s: &[[u8; 32]], p: &[[u8; 32]], o: &mut [[u8; 32]]) {
    batch_split(backend, backend.min_vector_lanes(), s, p, o);
}

/// The one-operation entry, as a batch path.
fn single_ops(_backend: Backend, s: &[[u8; 32]], p: &[[u8; 32]], o: &mut [[u8; 32]]) {
    for ((s, p), o) in s.iter().zip(p).zip(o.iter_mut()) {
        *o = x25519(s, p);
    }
}

/// Runs `path` in a fresh thread on a painted stack; returns the `SPAN` bytes below the
/// thread's frame afterwards, lowest address first, and the outputs.
fn residue(
    path: Path,
    backend: Backend,
    scalars: Vec<[u8; 32]>,
    points: Vec<[u8; 32]>,
) -> (Vec<u8>, Vec<[u8; 32]>) {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            // Allocate before painting: the allocator's frames must not land on the paint.
            let mut out = vec![[0u8; 32]; scalars.len()];
            let mut seen = vec![0u8; SPAN];
            // SAFETY: writes `SPAN` bytes below the stack pointer, inside this thread's stack
            // (`STACK` bytes, of which this thread's frames use far less than `STACK - SPAN`).
            // Without `nostack` the asm may use the memory below the stack pointer; it leaves
            // the stack pointer as it found it and the direction flag clear (the ABI's state).
            unsafe {
                asm!(
                    "mov rdi, rsp",
                    "sub rdi, rcx",
                    "rep stosb",
                    inout("rcx") SPAN => _,
                    in("al") PAINT,
                    out("rdi") _,
                );
            }
            path(backend, &scalars, &points, &mut out);
            // SAFETY: reads the same `SPAN` bytes below the stack pointer (this function's
            // stack pointer is the same as at the paint) into `seen`, a buffer of `SPAN` bytes
            // that this thread owns and no reference covers during the copy.
            unsafe {
                asm!(
                    "mov rsi, rsp",
                    "sub rsi, rcx",
                    "rep movsb",
                    inout("rcx") SPAN => _,
                    inout("rdi") seen.as_mut_ptr() => _,
                    out("rsi") _,
                );
            }
            (seen, out)
        })
        .expect("spawn")
        .join()
        .expect("helper thread")
}

/// How many bytes below the helper's frame `path` wrote: the paint's lowest change.
fn depth(seen: &[u8]) -> usize {
    let lowest = seen.iter().position(|&b| b != PAINT).unwrap_or(SPAN);
    SPAN - lowest
}

/// The 8-byte words that give a scalar away: its own four and the first and last words of its
/// clamped form (the middle two are unchanged by clamping).
fn secret_words(scalar: &[u8; 32]) -> Vec<[u8; 8]> {
    let w = |i: usize| u64::from_le_bytes(scalar[8 * i..8 * i + 8].try_into().unwrap());
    let mut words: Vec<[u8; 8]> = (0..4).map(|i| w(i).to_le_bytes()).collect();
    words.push((w(0) & !7).to_le_bytes());
    words.push(((w(3) & !(1 << 63)) | (1 << 62)).to_le_bytes());
    words
}

/// How many times any secret word of `scalars` appears in `seen`, at any byte offset.
fn copies(seen: &[u8], scalars: &[[u8; 32]]) -> usize {
    let words: Vec<[u8; 8]> = scalars.iter().flat_map(secret_words).collect();
    seen.windows(8)
        .filter(|w| words.iter().any(|s| s == w))
        .count()
}

/// Scalars with no zero byte and no paint byte, so their words are easy to spot.
fn scalars(n: usize) -> Vec<[u8; 32]> {
    (0..n)
        .map(|k| core::array::from_fn(|i| 0x11 + ((k * 37 + i * 13) % 0x90) as u8))
        .collect()
}

/// Points for `scalars`: multiples of the base point, so every lane runs a real ladder.
fn points(n: usize) -> Vec<[u8; 32]> {
    (0..n)
        .map(|k| x25519_dalek::x25519([k as u8 + 1; 32], BASEPOINT))
        .collect()
}

/// Batch lengths that reach every path of `backend`: a lone operation, a tail below and at the
/// kernel threshold, a full kernel call, a full call plus a tail, and two full calls (for IFMA
/// the two-group kernel, whose frame is the deepest).
fn lengths(backend: Backend) -> Vec<usize> {
    let lanes = backend.lanes();
    let mut n = vec![
        1,
        backend.min_vector_lanes(),
        lanes,
        lanes + 1,
        2 * lanes - 1,
        2 * lanes,
    ];
    n.sort_unstable();
    n.dedup();
    n
}

#[test]
fn kernels_stay_within_the_scrub() {
    for backend in Backend::supported() {
        for n in lengths(backend) {
            let (seen, out) = residue(unscrubbed, backend, scalars(n), points(n));
            let mut expected = vec![[0u8; 32]; n];
            batch_split(backend, usize::MAX, &scalars(n), &points(n), &mut expected);
            assert_eq!(out, expected, "{backend:?} n={n}");
            let d = depth(&seen);
            eprintln!("{backend:?} n={n}: kernels wrote {d} bytes deep");
            // An eighth of the scrub is a margin for frames that grow.
            assert!(d > 0, "{backend:?} n={n}: the paint saw nothing");
            let scrub = scrub_bytes();
            assert!(d + scrub / 8 <= scrub, "{backend:?} n={n}: {d} bytes deep");
        }
    }
}

#[test]
fn unscrubbed_kernels_leave_scalars_and_the_scrub_removes_them() {
    for backend in Backend::supported() {
        for n in lengths(backend) {
            let (before, _) = residue(unscrubbed, backend, scalars(n), points(n));
            let (after, _) = residue(x25519_batch, backend, scalars(n), points(n));
            let (left, gone) = (copies(&before, &scalars(n)), copies(&after, &scalars(n)));
            eprintln!("{backend:?} n={n}: {left} secret words without the scrub, {gone} with");
            assert!(left > 0, "{backend:?} n={n}: the check cannot see copies");
            assert_eq!(gone, 0, "{backend:?} n={n}: copies left after the scrub");
        }
    }
}

#[test]
fn the_single_operation_entry_scrubs_too() {
    let (seen, out) = residue(single_ops, Backend::Portable, scalars(3), points(3));
    let mut expected = vec![[0u8; 32]; 3];
    batch_split(Backend::Portable, 1, &scalars(3), &points(3), &mut expected);
    assert_eq!(out, expected);
    assert_eq!(copies(&seen, &scalars(3)), 0);
}
