//! The portable backend: the single-operation ladder of module `single`, one lane at a time.

pub(super) fn x25519(scalar: &[u8; 32], point: &[u8; 32]) -> [u8; 32] {
    super::single::x25519(scalar, point)
}

pub(super) fn x25519_batch(scalars: &[[u8; 32]], points: &[[u8; 32]], out: &mut [[u8; 32]]) {
    for ((s, p), o) in scalars.iter().zip(points).zip(out.iter_mut()) {
        *o = x25519(s, p);
    }
}
