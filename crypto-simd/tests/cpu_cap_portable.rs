//! The feature cap at work: with the cap set to portable before anything runs (this file is a
//! process of its own, with one test, so nothing runs before it), every dispatcher of the crate
//! picks its portable path and the results still equal the references.

// Lanes of word-sliced state are indexed by lane number.
#![allow(clippy::needless_range_loop)]

use mixplane_crypto_simd::cpu::{self, Cap, CapError};
use mixplane_crypto_simd::{blake2b, chacha20, lioness, sha256, x25519};

#[test]
fn portable_cap_takes_every_portable_path() {
    cpu::set_cap(Some(Cap::Portable)).expect("the first thing this process does");
    assert_eq!(cpu::cap(), Some(Cap::Portable));
    assert_eq!(cpu::in_force(), cpu::Features::NONE);
    // Asking again for the same is fine; asking for another is refused, nothing changes.
    assert_eq!(cpu::set_cap(Some(Cap::Portable)), Ok(()));
    assert_eq!(
        cpu::set_cap(None),
        Err(CapError::AlreadyFixed(Some(Cap::Portable)))
    );
    assert_eq!(cpu::in_force(), cpu::Features::NONE);
    let report = cpu::report().to_string();
    assert!(report.contains("cap: portable; in force: none"), "{report}");
    assert_eq!(cpu::warning(), None);

    assert_eq!(x25519::Backend::best(), x25519::Backend::Portable);
    assert_eq!(
        x25519::Backend::supported(),
        vec![x25519::Backend::Portable]
    );
    assert_eq!(blake2b::Backend::best(), blake2b::Backend::Portable);
    assert_eq!(chacha20::Backend::best(), chacha20::Backend::Portable);
    assert_eq!(sha256::Backend::best(), sha256::Backend::Portable);

    x25519_equals_dalek();
    blake2b_equals_single();
    chacha20_equals_the_crate();
    sha256_equals_sha2();
    lioness_batch_equals_one_by_one();
}

fn bytes32(seed: u8) -> [u8; 32] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
}

fn x25519_equals_dalek() {
    let scalars: Vec<_> = (0..9).map(bytes32).collect();
    let points: Vec<_> = (40..49).map(bytes32).collect();
    let mut out = vec![[0u8; 32]; 9];
    x25519::x25519_batch(x25519::Backend::best(), &scalars, &points, &mut out);
    for i in 0..9 {
        assert_eq!(
            out[i],
            x25519_dalek::x25519(scalars[i], points[i]),
            "lane {i}"
        );
    }
}

fn blake2b_equals_single() {
    let keys: [[u8; 64]; 8] = std::array::from_fn(|j| std::array::from_fn(|i| (i * 3 + j) as u8));
    let data: Vec<Vec<u8>> = (0..8).map(|j| vec![j as u8; 300]).collect();
    let k8 = std::array::from_fn(|j| &keys[j]);
    let d8 = std::array::from_fn(|j| data[j].as_slice());
    let got = blake2b::mac32_x8(k8, d8);
    let got4 = blake2b::mac32_x4(
        std::array::from_fn(|j| &keys[j]),
        std::array::from_fn(|j| data[j].as_slice()),
    );
    for j in 0..8 {
        assert_eq!(got[j], blake2b::mac32(&keys[j], &data[j]), "x8 lane {j}");
    }
    assert_eq!(got4[..], got[..4]);
}

fn chacha20_equals_the_crate() {
    use ::chacha20::ChaCha20;
    use ::chacha20::cipher::{KeyIvInit, StreamCipher};
    let key = bytes32(7);
    let data: Vec<u8> = (0..2033).map(|i| (i * 13) as u8).collect();
    let mut ours = data.clone();
    chacha20::xor_keystream(&key, &mut ours);
    let mut theirs = data;
    ChaCha20::new((&key).into(), &[0u8; 12].into()).apply_keystream(&mut theirs);
    assert_eq!(ours, theirs);
}

fn sha256_equals_sha2() {
    use sha2::{Digest, Sha256};
    // One padded block per lane: message of lane l = l bytes of value l.
    let mut block: sha256::BlockX16 = [[0; sha256::LANES]; 16];
    for l in 0..sha256::LANES {
        let mut b = [0u8; 64];
        b[..l].fill(l as u8);
        b[l] = 0x80;
        b[56..].copy_from_slice(&((l as u64) * 8).to_be_bytes());
        for t in 0..16 {
            block[t][l] = u32::from_be_bytes(b[4 * t..4 * t + 4].try_into().unwrap());
        }
    }
    let mut s = sha256::splat_state(&sha256::IV);
    sha256::compress_x16(&mut s, &block);
    for l in 0..sha256::LANES {
        let got: Vec<u8> = (0..8).flat_map(|w| s[w][l].to_be_bytes()).collect();
        assert_eq!(got[..], Sha256::digest(vec![l as u8; l])[..], "lane {l}");
    }
}

fn lioness_batch_equals_one_by_one() {
    let keys: Vec<[u8; lioness::KEY_LEN]> = (0..6)
        .map(|j| std::array::from_fn(|i| (i as u8) ^ (j as u8).wrapping_mul(29)))
        .collect();
    let data: Vec<Vec<u8>> = (0..6).map(|j| vec![j as u8; 2065]).collect();
    let mut want = data.clone();
    for (w, k) in want.iter_mut().zip(&keys) {
        lioness::decrypt(k, w).unwrap();
    }
    let mut got = data;
    let key_refs: Vec<&[u8; lioness::KEY_LEN]> = keys.iter().collect();
    let mut views: Vec<&mut [u8]> = got.iter_mut().map(|v| v.as_mut_slice()).collect();
    lioness::decrypt_batch(&key_refs, &mut views).unwrap();
    assert_eq!(got, want);
}
