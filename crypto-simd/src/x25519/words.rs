//! What every X25519 implementation does to its inputs and output outside the field
//! arithmetic: clamping the scalar, reading the point's u-coordinate, writing the result, all
//! as four little-endian 64-bit words (no secret-dependent branches or indices).

/// The 32 bytes as four little-endian 64-bit words.
#[inline(always)]
pub(super) fn le_words(b: &[u8; 32]) -> [u64; 4] {
    core::array::from_fn(|i| {
        let chunk: [u8; 8] = b[8 * i..8 * i + 8].try_into().expect("8 of 32 bytes");
        u64::from_le_bytes(chunk)
    })
}

/// The inverse of [`le_words`].
#[inline(always)]
pub(super) fn le_bytes(w: &[u64; 4]) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (chunk, word) in b.chunks_exact_mut(8).zip(w) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    b
}

/// The scalar clamped as RFC 7748 says (low three bits cleared, bit 255 cleared, bit 254 set),
/// as words.
#[inline(always)]
pub(super) fn clamped_scalar(scalar: &[u8; 32]) -> [u64; 4] {
    let mut w = le_words(scalar);
    w[0] &= !7;
    w[3] &= (1 << 63) - 1;
    w[3] |= 1 << 62;
    w
}

/// The u-coordinate with its top bit (bit 255) ignored, as RFC 7748 says, as words. The value
/// may still be non-canonical (in `[p, 2^255)`); the field arithmetic takes it as is.
#[inline(always)]
pub(super) fn u_coordinate(point: &[u8; 32]) -> [u64; 4] {
    let mut w = le_words(point);
    w[3] &= (1 << 63) - 1;
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamping_matches_the_rfc_byte_form() {
        for fill in [0x00u8, 0xff, 0x5a, 0xa5] {
            let s = [fill; 32];
            let mut want = s;
            want[0] &= 248;
            want[31] &= 127;
            want[31] |= 64;
            assert_eq!(le_bytes(&clamped_scalar(&s)), want);
        }
    }

    #[test]
    fn words_round_trip_and_top_bit_is_dropped() {
        let b: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(3));
        assert_eq!(le_bytes(&le_words(&b)), b);
        assert_eq!(
            le_words(&b)[0],
            u64::from_le_bytes(b[..8].try_into().unwrap())
        );
        let mut top = [0u8; 32];
        top[31] = 0xff;
        let mut want = top;
        want[31] = 0x7f;
        assert_eq!(le_bytes(&u_coordinate(&top)), want);
    }
}
