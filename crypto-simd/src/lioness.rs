//! Lioness wide-block cipher as Nym's Sphinx payloads use it: ChaCha20 (IETF, zero nonce) as the
//! stream cipher and keyed BLAKE2b-256 as the hash, over a 192-byte key split 32 | 64 | 32 | 64.
//!
//! A block is `left (32 bytes) || right (the rest)`. Encryption runs four rounds:
//! `R ^= S(k1 ^ L)`, `L ^= H(k2, R)`, `R ^= S(k3 ^ L)`, `L ^= H(k4, R)`; decryption runs them
//! backwards. ChaCha20 dispatches to its AVX2/AVX-512 backend at run time (the workspace builds
//! chacha20 with `--cfg chacha20_avx512`).

use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};
use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use zeroize::Zeroize;

/// Length of a Lioness key.
pub const KEY_LEN: usize = 192;
/// Length of the left half (the BLAKE2b-256 output size, also the ChaCha20 key size).
pub const LEFT_LEN: usize = 32;

/// The block is too short for Lioness (it must be longer than 32 bytes).
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
    let mut cipher = ChaCha20::new(&key.into(), &[0u8; 12].into());
    cipher.apply_keystream(right);
    key.zeroize();
}

fn hash_round(left: &mut [u8; 32], key: &[u8; 64], right: &[u8]) {
    let mut mac = <Blake2bMac<U32> as KeyInit>::new_from_slice(key).expect("64-byte key is valid");
    mac.update(right);
    let tag = mac.finalize().into_bytes();
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
    fn short_blocks_are_rejected() {
        let k = [7u8; KEY_LEN];
        for len in 0..=32 {
            let mut b = vec![0u8; len];
            assert_eq!(decrypt(&k, &mut b), Err(BlockTooShort(len)));
            assert_eq!(encrypt(&k, &mut b), Err(BlockTooShort(len)));
        }
    }
}
