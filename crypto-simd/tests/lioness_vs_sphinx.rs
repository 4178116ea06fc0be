//! Lioness matches sphinx-packet 0.8.0's payload layer (lioness-rs with ChaCha20 and keyed
//! BLAKE2b-256) byte for byte, in both directions, for every Nym payload size.

use mixplane_crypto_simd::lioness;
use rand::{RngExt, SeedableRng};
use sphinx_packet::payload::Payload;

const PAYLOAD_LENS: [usize; 6] = [33, 38, 2065, 8209, 16401, 32785];

#[test]
fn decrypt_and_encrypt_match_sphinx_packet() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    for len in PAYLOAD_LENS {
        for _ in 0..8 {
            let key: [u8; lioness::KEY_LEN] = std::array::from_fn(|_| rng.random());
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();

            let theirs = Payload::from_bytes(&data).unwrap().unwrap(key).unwrap();
            let mut ours = data.clone();
            lioness::decrypt(&key, &mut ours).unwrap();
            assert_eq!(ours, theirs.as_bytes(), "decrypt, {len} bytes");

            let theirs = Payload::from_bytes(&data)
                .unwrap()
                .add_encryption_layer(key)
                .unwrap();
            let mut ours = data.clone();
            lioness::encrypt(&key, &mut ours).unwrap();
            assert_eq!(ours, theirs.as_bytes(), "encrypt, {len} bytes");
        }
    }
}
