//! The symmetric key schedule of one Sphinx hop: HKDF expansion of the shared secret, the header
//! MAC, the routing-information keystream and the payload key.

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HKDF info for the per-hop expansion (sphinx-packet's fixed legacy string); the salt is empty.
pub const EXPANDED_SECRET_INFO: &[u8] =
    b"Dwste mou enan moxlo arketa makru kai ena upomoxlio gia na ton topothetisw kai tha kinisw thn gh.";
/// HKDF salt for payload keys derived from a seed (versions 259 and 260).
pub const PAYLOAD_KEY_SALT: &[u8] = b"sphinx-payload-key-V01-CS01-HKDF:SHA256-SALT";
/// HKDF info for payload keys derived from a seed.
pub const PAYLOAD_KEY_INFO: &[u8] = b"sphinx-payload-key-V01-CS01-HKDF:SHA256-INFO";

/// Length of the expanded secret.
pub const EXPANDED_LEN: usize = 288;
/// Length of a payload (Lioness) key.
pub const PAYLOAD_KEY_LEN: usize = 192;
/// Length of the routing keystream: the 300-byte beta plus one 60-byte slot of padding.
pub const ROUTING_STREAM_LEN: usize = 360;

/// The 288-byte HKDF output of one hop: AES key 16 | MAC key 16 | payload key 192 (its first 16
/// bytes are the seed for v>=259) | blinding factor 32 | replay tag 32. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ExpandedSecret(pub(crate) [u8; EXPANDED_LEN]);

impl Default for ExpandedSecret {
    fn default() -> Self {
        ExpandedSecret([0u8; EXPANDED_LEN])
    }
}

impl ExpandedSecret {
    /// Expands a shared secret.
    pub fn expand(shared_secret: &[u8; 32]) -> ExpandedSecret {
        let mut e = ExpandedSecret::default();
        e.expand_into(shared_secret);
        e
    }

    /// Expands a shared secret into `self`, reusing its storage.
    pub fn expand_into(&mut self, shared_secret: &[u8; 32]) {
        let hk = Hkdf::<Sha256>::new(Some(b""), shared_secret);
        hk.expand(EXPANDED_SECRET_INFO, &mut self.0)
            .expect("288 bytes is within HKDF-SHA256's limit");
    }

    fn part<const N: usize>(&self, at: usize) -> &[u8; N] {
        self.0[at..at + N].try_into().expect("fixed layout")
    }

    /// AES-128 key for the routing information.
    pub fn stream_key(&self) -> &[u8; 16] {
        self.part(0)
    }
    /// HMAC-SHA256 key for the header MAC.
    pub fn mac_key(&self) -> &[u8; 16] {
        self.part(16)
    }
    /// The full payload key (versions 1, 257, 258).
    pub fn legacy_payload_key(&self) -> &[u8; PAYLOAD_KEY_LEN] {
        self.part(32)
    }
    /// The payload key seed (versions 259, 260).
    pub fn payload_key_seed(&self) -> &[u8; 16] {
        self.part(32)
    }
    /// The blinding factor for the next alpha.
    pub fn blinding_factor(&self) -> &[u8; 32] {
        self.part(224)
    }
    /// The replay tag.
    pub fn replay_tag(&self) -> &[u8; 32] {
        self.part(256)
    }
}

/// Derives a 192-byte payload key from a seed (versions 259 and 260).
pub fn payload_key_from_seed(seed: &[u8; 16], out: &mut [u8; PAYLOAD_KEY_LEN]) {
    let hk = Hkdf::<Sha256>::new(Some(PAYLOAD_KEY_SALT), seed);
    hk.expand(PAYLOAD_KEY_INFO, out)
        .expect("192 bytes is within HKDF-SHA256's limit");
}

/// HMAC-SHA256 of `data` truncated to 16 bytes.
pub fn header_mac(key: &[u8; 16], data: &[u8]) -> [u8; 16] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    let full = mac.finalize().into_bytes();
    full[..16].try_into().expect("32 >= 16")
}

/// XORs the routing keystream (AES-128-CTR, 64-bit big-endian counter, zero IV) into `data`.
pub fn apply_routing_stream(key: &[u8; 16], data: &mut [u8]) {
    let mut c = ctr::Ctr64BE::<Aes128>::new(key.into(), &[0u8; 16].into());
    c.apply_keystream(data);
}
