//! The portable reference field for tests: GF(2^255 - 19) in radix 2^51 with `u128`
//! products, written for clarity, not speed. The vector backends' field operations are tested
//! against it (module `field_tests`), and it is itself checked by a Montgomery ladder built on
//! it against x25519-dalek.

use super::words::{clamped_scalar, le_bytes, u_coordinate};

const MASK51: u64 = (1 << 51) - 1;

/// A field element: five limbs of 51 bits (a little more between carries).
#[derive(Clone, Copy, Debug)]
pub(super) struct Fe51([u64; 5]);

impl Fe51 {
    pub(super) const ZERO: Fe51 = Fe51([0; 5]);
    pub(super) const ONE: Fe51 = Fe51([1, 0, 0, 0, 0]);

    /// The number with these little-endian words (any value below 2^256).
    pub(super) fn from_words(w: &[u64; 4]) -> Fe51 {
        let l = [
            w[0] & MASK51,
            ((w[0] >> 51) | (w[1] << 13)) & MASK51,
            ((w[1] >> 38) | (w[2] << 26)) & MASK51,
            ((w[2] >> 25) | (w[3] << 39)) & MASK51,
            w[3] >> 12,
        ];
        Fe51(l).carried()
    }

    pub(super) fn from_u64(x: u64) -> Fe51 {
        Fe51::from_words(&[x, 0, 0, 0])
    }

    /// `2^k` for `k` below 256.
    pub(super) fn pow2(k: u32) -> Fe51 {
        let mut w = [0u64; 4];
        w[(k / 64) as usize] = 1 << (k % 64);
        Fe51::from_words(&w)
    }

    /// Limbs below 2^51 except limb 0 (below 2^51 + 19 * 2^13), value unchanged mod p.
    fn carried(self) -> Fe51 {
        let mut l = self.0;
        for k in 0..4 {
            l[k + 1] += l[k] >> 51;
            l[k] &= MASK51;
        }
        l[0] += 19 * (l[4] >> 51);
        l[4] &= MASK51;
        Fe51(l)
    }

    pub(super) fn add(&self, b: &Fe51) -> Fe51 {
        Fe51(core::array::from_fn(|k| self.0[k] + b.0[k])).carried()
    }

    /// `self - b` as `self + 2p - b` (every limb of 2p exceeds a carried limb).
    pub(super) fn sub(&self, b: &Fe51) -> Fe51 {
        const TWO_P: [u64; 5] = [
            (1 << 52) - 38,
            (1 << 52) - 2,
            (1 << 52) - 2,
            (1 << 52) - 2,
            (1 << 52) - 2,
        ];
        let b = b.carried();
        Fe51(core::array::from_fn(|k| self.0[k] + TWO_P[k] - b.0[k])).carried()
    }

    pub(super) fn mul(&self, b: &Fe51) -> Fe51 {
        let (a, b) = (self.carried().0, b.carried().0);
        let m = |x: u64, y: u64| u128::from(x) * u128::from(y);
        let b19: [u64; 5] = b.map(|x| 19 * x);
        let mut c = [0u128; 5];
        for (i, &x) in a.iter().enumerate() {
            for j in 0..5 {
                // Weight 2^(51 (i + j)); at or above 2^255 it folds down with 19.
                let (k, y) = if i + j < 5 {
                    (i + j, b[j])
                } else {
                    (i + j - 5, b19[j])
                };
                c[k] += m(x, y);
            }
        }
        for k in 0..4 {
            c[k + 1] += c[k] >> 51;
            c[k] &= u128::from(MASK51);
        }
        let top = c[4] >> 51;
        c[4] &= u128::from(MASK51);
        c[0] += 19 * top;
        Fe51(c.map(|x| x as u64)).carried()
    }

    pub(super) fn sqr(&self) -> Fe51 {
        self.mul(self)
    }

    pub(super) fn sqr_n(&self, n: u32) -> Fe51 {
        (0..n).fold(*self, |t, _| t.sqr())
    }

    pub(super) fn invert(&self) -> Fe51 {
        invert_chain!(self, Fe51::sqr_n, Fe51::mul)
    }

    /// The canonical representative below p, as little-endian words.
    pub(super) fn canonical_words(&self) -> [u64; 4] {
        let mut l = self.carried().carried().0;
        // q = 1 exactly when the value (now below 2^255 + small) is at least p.
        let mut q = (l[0] + 19) >> 51;
        for limb in &l[1..] {
            q = (limb + q) >> 51;
        }
        l[0] += 19 * q;
        for k in 0..4 {
            l[k + 1] += l[k] >> 51;
            l[k] &= MASK51;
        }
        l[4] &= MASK51;
        [
            l[0] | (l[1] << 51),
            (l[1] >> 13) | (l[2] << 38),
            (l[2] >> 26) | (l[3] << 25),
            (l[3] >> 39) | (l[4] << 12),
        ]
    }
}

/// X25519 on [`Fe51`] (RFC 7748's ladder, branch-free swaps), to check the field against
/// x25519-dalek.
fn x25519(scalar: &[u8; 32], point: &[u8; 32]) -> [u8; 32] {
    let k = clamped_scalar(scalar);
    let x1 = Fe51::from_words(&u_coordinate(point));
    let (mut x2, mut z2, mut x3, mut z3) = (Fe51::ONE, Fe51::ZERO, x1, Fe51::ONE);
    let mut swap = 0u64;
    let cswap = |s: u64, a: &mut Fe51, b: &mut Fe51| {
        let mask = 0u64.wrapping_sub(s);
        for (x, y) in a.0.iter_mut().zip(b.0.iter_mut()) {
            let t = (*x ^ *y) & mask;
            *x ^= t;
            *y ^= t;
        }
    };
    for t in (0..255).rev() {
        let bit = (k[t / 64] >> (t % 64)) & 1;
        swap ^= bit;
        cswap(swap, &mut x2, &mut x3);
        cswap(swap, &mut z2, &mut z3);
        swap = bit;
        let (a, b) = (x2.add(&z2), x2.sub(&z2));
        let (c, d) = (x3.add(&z3), x3.sub(&z3));
        let (aa, bb) = (a.sqr(), b.sqr());
        let e = aa.sub(&bb);
        let (da, cb) = (d.mul(&a), c.mul(&b));
        x3 = da.add(&cb).sqr();
        z3 = x1.mul(&da.sub(&cb).sqr());
        x2 = aa.mul(&bb);
        z2 = e.mul(&aa.add(&Fe51::from_u64(121_665).mul(&e)));
    }
    cswap(swap, &mut x2, &mut x3);
    cswap(swap, &mut z2, &mut z3);
    le_bytes(&x2.mul(&z2.invert()).canonical_words())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_on_the_reference_field_matches_dalek() {
        let mut seed = 1u8;
        for _ in 0..40 {
            let s: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(seed) ^ seed);
            let u: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_add(seed).rotate_left(3));
            assert_eq!(x25519(&s, &u), x25519_dalek::x25519(s, u), "seed {seed}");
            seed = seed.wrapping_mul(5).wrapping_add(3);
        }
    }

    #[test]
    fn inverse_times_value_is_one() {
        for x in [1u64, 2, 19, 121_665, u64::MAX] {
            let a = Fe51::from_u64(x);
            assert_eq!(a.mul(&a.invert()).canonical_words(), [1, 0, 0, 0], "{x}");
        }
        assert_eq!(Fe51::ZERO.invert().canonical_words(), [0; 4]);
    }
}
