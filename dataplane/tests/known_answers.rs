//! Known-answer vectors from sphinx-packet 0.8.0's own tests that apply to processing, and
//! primitive-level differential checks of the hop key schedule against the crate's public
//! functions.

use mixplane_crypto_simd::x25519;
use mixplane_dataplane::sphinx::kdf::{
    ExpandedSecret, PAYLOAD_KEY_LEN, apply_routing_stream, header_mac, payload_key_from_seed,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// sphinx-packet `header::shared_secret::expanding_shared_secret::
/// results_in_same_values_as_old_implementation`: the shared secret is X25519 between two keys
/// drawn from ChaCha20Rng seeded with [1; 32]; the expected key material is the crate's.
#[test]
fn hkdf_expansion_matches_sphinx_packet_vector() {
    let mut rng = ChaCha20Rng::from_seed([1u8; 32]);
    // StaticSecret::random_from_rng fills 32 bytes from the generator
    let (mut sk1, mut sk2) = ([0u8; 32], [0u8; 32]);
    rand::Rng::fill_bytes(&mut rng, &mut sk1);
    rand::Rng::fill_bytes(&mut rng, &mut sk2);
    let pk1 = x25519::x25519(&sk1, &x25519::BASEPOINT);
    let ss = x25519::x25519(&sk2, &pk1);
    let e = ExpandedSecret::expand(&ss);

    let expected_sck = [
        186, 234, 152, 113, 202, 124, 191, 228, 173, 89, 91, 8, 127, 251, 214, 200,
    ];
    let expected_hihk = [
        28, 222, 17, 227, 46, 180, 170, 7, 34, 52, 177, 142, 150, 137, 142, 222,
    ];
    let expected_pk: [u8; 192] = [
        210, 209, 81, 241, 254, 123, 36, 81, 155, 85, 115, 40, 101, 210, 97, 8, 196, 104, 61, 23,
        165, 190, 191, 236, 203, 69, 15, 230, 70, 100, 161, 136, 53, 88, 116, 118, 81, 57, 58, 181,
        232, 102, 149, 93, 239, 255, 156, 205, 0, 146, 110, 117, 137, 59, 102, 170, 87, 250, 175,
        207, 193, 107, 112, 154, 247, 220, 110, 135, 32, 106, 20, 152, 14, 132, 89, 154, 249, 24,
        176, 40, 30, 182, 195, 209, 124, 59, 58, 201, 209, 255, 80, 151, 109, 226, 157, 232, 48,
        128, 56, 159, 90, 168, 229, 60, 106, 14, 50, 215, 198, 200, 168, 24, 159, 224, 240, 119,
        23, 242, 61, 129, 54, 36, 140, 245, 127, 159, 230, 5, 52, 142, 254, 52, 168, 171, 139, 100,
        206, 16, 94, 219, 68, 113, 141, 159, 4, 233, 189, 144, 164, 202, 180, 74, 214, 66, 96, 185,
        70, 191, 155, 18, 210, 52, 123, 71, 231, 225, 79, 0, 196, 25, 217, 231, 133, 191, 96, 119,
        103, 182, 200, 36, 215, 62, 203, 149, 214, 139, 32, 70, 66, 30, 63, 102,
    ];
    let expected_bf = [
        227, 64, 184, 235, 140, 62, 232, 172, 235, 42, 58, 169, 241, 253, 245, 2, 136, 149, 74, 48,
        6, 165, 145, 133, 190, 105, 222, 218, 248, 172, 49, 188,
    ];
    assert_eq!(e.stream_key(), &expected_sck);
    assert_eq!(e.mac_key(), &expected_hihk);
    assert_eq!(e.legacy_payload_key(), &expected_pk);
    assert_eq!(e.blinding_factor(), &expected_bf);
}

#[test]
fn payload_key_derivation_matches_sphinx_packet() {
    let mut rng = ChaCha20Rng::from_seed([2u8; 32]);
    for _ in 0..200 {
        let seed: [u8; 16] = rng.random();
        let mut ours = [0u8; PAYLOAD_KEY_LEN];
        payload_key_from_seed(&seed, &mut ours);
        assert_eq!(ours, sphinx_packet::payload::key::derive_payload_key(&seed));
    }
}

#[test]
fn routing_keystream_matches_sphinx_packet() {
    let mut rng = ChaCha20Rng::from_seed([3u8; 32]);
    for _ in 0..100 {
        let key: [u8; 16] = rng.random();
        let mut ours = [0u8; 360];
        apply_routing_stream(&key, &mut ours);
        let theirs = sphinx_packet::crypto::generate_pseudorandom_bytes(
            &key,
            &sphinx_packet::crypto::STREAM_CIPHER_INIT_VECTOR,
            360,
        );
        assert_eq!(&ours[..], &theirs[..]);
    }
}

#[test]
fn header_mac_matches_sphinx_packet() {
    let mut rng = ChaCha20Rng::from_seed([4u8; 32]);
    for _ in 0..100 {
        let key: [u8; 16] = rng.random();
        let data: Vec<u8> = (0..300).map(|_| rng.random()).collect();
        let theirs = sphinx_packet::crypto::compute_keyed_hmac::<sha2::Sha256>(&key, &data)
            .unwrap()
            .into_bytes();
        assert_eq!(header_mac(&key, &data), theirs[..16]);
    }
}
