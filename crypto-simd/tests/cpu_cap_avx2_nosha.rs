//! The `avx2-nosha` cap (a process of its own, with one test): AVX2 as under `avx2`, and the
//! SHA-256 dispatcher behaves as on a CPU without SHA-NI, so it takes the AVX2 multi-buffer
//! code wherever the CPU has AVX2, and the results still equal the `sha2` crate's.

use mixplane_crypto_simd::cpu::{self, Cap};
use mixplane_crypto_simd::sha256::{self, Backend};
use sha2::{Digest, Sha256};

#[test]
fn avx2_nosha_cap_hides_sha_ni_only() {
    cpu::set_cap(Some(Cap::Avx2NoSha)).expect("the first thing this process does");
    assert_eq!(cpu::cap(), Some(Cap::Avx2NoSha));
    assert_eq!(cpu::in_force(), cpu::detected().capped(Cap::Avx2));
    assert!(!cpu::sha_ni());
    let want = if cpu::in_force().avx2 {
        Backend::Avx2
    } else {
        Backend::Portable
    };
    assert_eq!(Backend::best(), want);
    assert!(!Backend::ShaNi.is_available());

    // One padded block per lane: lane l hashes 3·l bytes of value l.
    let mut block: sha256::BlockX16 = [[0; sha256::LANES]; 16];
    for (l, _) in block[0].into_iter().enumerate() {
        let mut b = [0u8; 64];
        b[..3 * l].fill(l as u8);
        b[3 * l] = 0x80;
        b[56..].copy_from_slice(&((3 * l as u64) * 8).to_be_bytes());
        for (t, row) in block.iter_mut().enumerate() {
            row[l] = u32::from_be_bytes(b[4 * t..4 * t + 4].try_into().unwrap());
        }
    }
    let mut s = sha256::splat_state(&sha256::IV);
    sha256::compress_x16(&mut s, &block);
    for l in 0..sha256::LANES {
        let got: Vec<u8> = s.iter().flat_map(|row| row[l].to_be_bytes()).collect();
        assert_eq!(
            got[..],
            Sha256::digest(vec![l as u8; 3 * l])[..],
            "lane {l}"
        );
    }
}
