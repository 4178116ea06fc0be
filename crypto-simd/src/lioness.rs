//! Lioness wide-block cipher as Nym's Sphinx payloads use it: ChaCha20 (IETF, zero nonce) as the
//! stream cipher and keyed BLAKE2b-256 as the hash, over a 192-byte key split 32 | 64 | 32 | 64.
//!
//! A block is `left (32 bytes) || right (the rest)`. Encryption runs four rounds:
//! `R ^= S(k1 ^ L)`, `L ^= H(k2, R)`, `R ^= S(k3 ^ L)`, `L ^= H(k4, R)`; decryption runs them
//! backwards. BLAKE2b is [`crate::blake2b`] (AVX2 or AVX-512 multi-buffer where available); ChaCha20 is
//! [`crate::chacha20`] (sixteen blocks at a time on AVX-512, eight on AVX2, else the `chacha20` crate).

use zeroize::Zeroize;

/// Length of a Lioness key.
pub const KEY_LEN: usize = 192;
/// Length of the left half (the BLAKE2b-256 output size, also the ChaCha20 key size).
pub const LEFT_LEN: usize = 32;

/// The block is too short for Lioness (it must be longer than 32 bytes); holds its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lioness block of {0} bytes is too short (need more than {LEFT_LEN})")]
pub struct BlockTooShort(pub usize);

fn split_key(key: &[u8; KEY_LEN]) -> (&[u8; 32], &[u8; 64], &[u8; 32], &[u8; 64]) {
    let (k1, rest) = key.split_first_chunk::<32>().expect("192 > 32");
    let (k2, rest) = rest.split_first_chunk::<64>().expect("160 > 64");
    let (k3, rest) = rest.split_first_chunk::<32>().expect("96 > 32");
    let k4 = rest.first_chunk::<64>().expect("64 bytes left");
    (k1, k2, k3, k4)
}

fn stream_round(left: &[u8; 32], key_half: &[u8; 32], right: &mut [u8]) {
    let mut key = *key_half;
    for (k, l) in key.iter_mut().zip(left) {
        *k ^= l;
    }
    crate::chacha20::xor_keystream(&key, right);
    key.zeroize();
}

fn hash_round(left: &mut [u8; 32], key: &[u8; 64], right: &[u8]) {
    let tag = crate::blake2b::mac32(key, right);
    for (l, t) in left.iter_mut().zip(tag.iter()) {
        *l ^= t;
    }
}

fn halves(block: &mut [u8]) -> Result<(&mut [u8; 32], &mut [u8]), BlockTooShort> {
    if block.len() <= LEFT_LEN {
        return Err(BlockTooShort(block.len()));
    }
    let (l, r) = block.split_at_mut(LEFT_LEN);
    Ok((l.try_into().expect("split at 32"), r))
}

/// Encrypts `block` in place.
pub fn encrypt(key: &[u8; KEY_LEN], block: &mut [u8]) -> Result<(), BlockTooShort> {
    let (k1, k2, k3, k4) = split_key(key);
    let (left, right) = halves(block)?;
    stream_round(left, k1, right);
    hash_round(left, k2, right);
    stream_round(left, k3, right);
    hash_round(left, k4, right);
    Ok(())
}

/// Decrypts `block` in place.
pub fn decrypt(key: &[u8; KEY_LEN], block: &mut [u8]) -> Result<(), BlockTooShort> {
    let (k1, k2, k3, k4) = split_key(key);
    let (left, right) = halves(block)?;
    hash_round(left, k4, right);
    stream_round(left, k3, right);
    hash_round(left, k2, right);
    stream_round(left, k1, right);
    Ok(())
}

/// Decrypts many blocks in place: `blocks[i]` with `keys[i]`.
///
/// Blocks of equal length are decrypted in groups, eight at a time with the AVX-512 BLAKE2b
/// ([`crate::blake2b::Backend::Avx512`]), else four at a time, so their BLAKE2b rounds run as
/// one multi-buffer hash ([`crate::blake2b::mac32_x8`], [`crate::blake2b::mac32_x4`]); the rest
/// one by one. The result is the same as calling [`decrypt`] on each block. Blocks of 32 bytes
/// or less are left untouched (the others are still decrypted), and the error holds the length
/// of the first of them.
pub fn decrypt_batch(
    keys: &[&[u8; KEY_LEN]],
    blocks: &mut [&mut [u8]],
) -> Result<(), BlockTooShort> {
    match crate::blake2b::Backend::best() {
        crate::blake2b::Backend::Avx512 => decrypt_batch_in_groups::<8>(keys, blocks),
        crate::blake2b::Backend::Avx2 | crate::blake2b::Backend::Portable => {
            decrypt_batch_in_groups::<4>(keys, blocks)
        }
    }
}

/// [`decrypt_batch`] with groups of `N` (4 or 8) blocks of one length.
fn decrypt_batch_in_groups<const N: usize>(
    keys: &[&[u8; KEY_LEN]],
    blocks: &mut [&mut [u8]],
) -> Result<(), BlockTooShort> {
    assert!(N == 4 || N == 8, "groups of 4 or 8");
    assert_eq!(keys.len(), blocks.len(), "one key per block");
    let mut err = None;
    // up to four open groups, each collecting up to N indices of one length
    const OPEN: usize = 4;
    let mut groups: [(usize, [usize; N], usize); OPEN] = [(0, [0; N], 0); OPEN];
    // A part-filled group still goes through the multi-buffer hash (its empty lanes repeat a
    // real one) once that beats hashing its blocks one by one: from three blocks (the
    // `lioness_timing` example: two blocks break even, three gain 1.37x with groups of eight
    // on the AMD EPYC of bench/RESULTS.md; the 4-way hash's per-message cost, from
    // `blake2b_timing`, puts its break-even between two and three blocks too).
    let min_vector = 3;
    let flush = |blocks: &mut [&mut [u8]], idx: &[usize]| {
        if idx.len() >= min_vector {
            decrypt_group::<N>(keys, blocks, idx);
        } else {
            for &i in idx {
                let _ = decrypt(keys[i], blocks[i]);
            }
        }
    };
    for i in 0..blocks.len() {
        let len = blocks[i].len();
        if len <= LEFT_LEN {
            err.get_or_insert(BlockTooShort(len));
            continue;
        }
        let slot = groups
            .iter()
            .position(|g| g.2 > 0 && g.0 == len)
            .or_else(|| groups.iter().position(|g| g.2 == 0));
        let Some(slot) = slot else {
            // more distinct lengths than open groups: this one goes alone
            let _ = decrypt(keys[i], blocks[i]);
            continue;
        };
        let g = &mut groups[slot];
        g.0 = len;
        g.1[g.2] = i;
        g.2 += 1;
        if g.2 == N {
            let idx = g.1;
            g.2 = 0;
            flush(blocks, &idx);
        }
    }
    for g in &groups {
        if g.2 > 0 {
            flush(blocks, &g.1[..g.2]);
        }
    }
    err.map_or(Ok(()), Err)
}

/// Keyed BLAKE2b of `N` (4 or 8) equal-length messages with the multi-buffer hash.
fn mac32_group<const N: usize>(keys: [&[u8; 64]; N], data: [&[u8]; N]) -> [[u8; 32]; N] {
    let mut out = [[0u8; 32]; N];
    if let (Ok(k), Ok(d)) = (
        <[&[u8; 64]; 8]>::try_from(&keys[..]),
        <[&[u8]; 8]>::try_from(&data[..]),
    ) {
        out.copy_from_slice(&crate::blake2b::mac32_x8(k, d));
    } else if let (Ok(k), Ok(d)) = (
        <[&[u8; 64]; 4]>::try_from(&keys[..]),
        <[&[u8]; 4]>::try_from(&data[..]),
    ) {
        out.copy_from_slice(&crate::blake2b::mac32_x4(k, d));
    } else {
        for (o, (k, d)) in out.iter_mut().zip(keys.iter().zip(data)) {
            *o = crate::blake2b::mac32(k, d);
        }
    }
    out
}

/// The blocks at `idx` (one to `N` distinct indices, all of one length above 32 bytes), with the
/// hash rounds of all of them in one `N`-way multi-buffer hash. Lanes beyond `idx.len()` hash the
/// first block again and their tags are dropped, so the result equals [`decrypt`] per block.
fn decrypt_group<const N: usize>(keys: &[&[u8; KEY_LEN]], blocks: &mut [&mut [u8]], idx: &[usize]) {
    let n = idx.len();
    assert!((1..=N).contains(&n), "one to N blocks per group");
    let ks: [_; N] = std::array::from_fn(|j| split_key(keys[idx[if j < n { j } else { 0 }]]));
    // take the blocks out of the slice so they can be borrowed together; unused lanes stay empty
    let mut taken: [&mut [u8]; N] = std::array::from_fn(|j| {
        if j < n {
            std::mem::take(&mut blocks[idx[j]])
        } else {
            &mut []
        }
    });
    {
        let mut halves = taken.each_mut().map(|b| {
            if b.is_empty() {
                (Default::default(), Default::default())
            } else {
                b.split_at_mut(LEFT_LEN)
            }
        });
        let hash = |halves: &mut [(&mut [u8], &mut [u8]); N], k: [&[u8; 64]; N]| {
            let data = std::array::from_fn(|j| &*halves[if j < n { j } else { 0 }].1);
            let tags = mac32_group(k, data);
            // an unused lane's left half is empty, so its tag goes nowhere
            for (h, t) in halves.iter_mut().zip(tags) {
                for (l, x) in h.0.iter_mut().zip(t) {
                    *l ^= x;
                }
            }
        };
        let stream = |halves: &mut [(&mut [u8], &mut [u8]); N], k: [&[u8; 32]; N]| {
            for (h, k) in halves.iter_mut().zip(k).take(n) {
                let left: &[u8; 32] = (&*h.0).try_into().expect("32-byte left half");
                stream_round(left, k, h.1);
            }
        };
        hash(&mut halves, ks.map(|k| k.3));
        stream(&mut halves, ks.map(|k| k.2));
        hash(&mut halves, ks.map(|k| k.1));
        stream(&mut halves, ks.map(|k| k.0));
    }
    for (&i, b) in idx.iter().zip(taken) {
        blocks[i] = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decrypt_inverts_encrypt(key in proptest::array::uniform32(any::<u8>()),
                                   data in proptest::collection::vec(any::<u8>(), 33..600)) {
            let mut k = [0u8; KEY_LEN];
            for (i, b) in k.iter_mut().enumerate() { *b = key[i % 32].wrapping_add(i as u8); }
            let mut block = data.clone();
            encrypt(&k, &mut block).unwrap();
            prop_assert_ne!(&block, &data);
            decrypt(&k, &mut block).unwrap();
            prop_assert_eq!(block, data);
        }
    }

    #[test]
    fn batch_equals_one_by_one() {
        // mixed lengths (two Nym payload sizes, odd ones, more distinct lengths than groups)
        // (enough of two lengths to fill groups of 8 twice, and leftovers)
        let lens = [
            2065usize, 38, 2065, 2065, 100, 38, 2065, 2065, 38, 38, 33, 2065, 500, 501, 502, 503,
            38, 2065, 2065, 2065, 2065, 38, 38, 38, 2065, 2065, 2065, 2065, 2065, 38, 38, 38, 2065,
            2065,
        ];
        let keys: Vec<[u8; KEY_LEN]> = (0..lens.len())
            .map(|j| std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(j as u8)))
            .collect();
        let data: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(j, &l)| {
                (0..l)
                    .map(|i| (i as u8) ^ (j as u8).wrapping_mul(7))
                    .collect()
            })
            .collect();
        let mut want = data.clone();
        for (w, k) in want.iter_mut().zip(&keys) {
            decrypt(k, w).unwrap();
        }
        let mut got = data.clone();
        let key_refs: Vec<&[u8; KEY_LEN]> = keys.iter().collect();
        let mut views: Vec<&mut [u8]> = got.iter_mut().map(|v| v.as_mut_slice()).collect();
        decrypt_batch(&key_refs, &mut views).unwrap();
        assert_eq!(got, want);
        assert_groups_equal(&key_refs, &data, &want, "mixed lengths");
        // a short block is reported and left alone; the others are still decrypted
        let mut got = data.clone();
        got[1] = vec![9u8; 20];
        let mut views: Vec<&mut [u8]> = got.iter_mut().map(|v| v.as_mut_slice()).collect();
        assert_eq!(decrypt_batch(&key_refs, &mut views), Err(BlockTooShort(20)));
        assert_eq!(got[1], vec![9u8; 20]);
        assert_eq!(got[0], want[0]);
        assert_eq!(got[17], want[17]);
    }

    #[test]
    fn part_filled_groups_equal_one_by_one() {
        // every count of one length from 1 to 17: full groups plus a remainder of each size,
        // so both the padded multi-buffer path and the one-by-one path run, for both widths
        for count in 1..=17usize {
            let keys: Vec<[u8; KEY_LEN]> = (0..count)
                .map(|j| std::array::from_fn(|i| (i as u8) ^ (j as u8).wrapping_mul(13)))
                .collect();
            let data: Vec<Vec<u8>> = (0..count)
                .map(|j| (0..301).map(|i| (i as u8).wrapping_add(j as u8)).collect())
                .collect();
            let mut want = data.clone();
            for (w, k) in want.iter_mut().zip(&keys) {
                decrypt(k, w).unwrap();
            }
            let key_refs: Vec<&[u8; KEY_LEN]> = keys.iter().collect();
            assert_groups_equal(&key_refs, &data, &want, &format!("{count} blocks"));
        }
    }

    /// Decrypts `data` in groups of four and of eight; both must give `want`.
    fn assert_groups_equal(
        keys: &[&[u8; KEY_LEN]],
        data: &[Vec<u8>],
        want: &[Vec<u8>],
        what: &str,
    ) {
        for groups in [4, 8] {
            let mut got = data.to_vec();
            let mut views: Vec<&mut [u8]> = got.iter_mut().map(|v| v.as_mut_slice()).collect();
            if groups == 4 {
                decrypt_batch_in_groups::<4>(keys, &mut views).unwrap();
            } else {
                decrypt_batch_in_groups::<8>(keys, &mut views).unwrap();
            }
            assert_eq!(got, want, "{what}, groups of {groups}");
        }
    }

    #[test]
    fn short_blocks_are_rejected() {
        let k = [7u8; KEY_LEN];
        for len in 0..=32 {
            let mut b = vec![0u8; len];
            assert_eq!(decrypt(&k, &mut b), Err(BlockTooShort(len)));
            assert_eq!(encrypt(&k, &mut b), Err(BlockTooShort(len)));
        }
    }
}
