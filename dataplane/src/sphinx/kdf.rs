//! The symmetric key schedule of one Sphinx hop: HKDF expansion of the shared secret, the header
//! MAC, the routing-information keystream and the payload key.

use std::sync::OnceLock;

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use sha2::block_api::compress256;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub(crate) mod batch;

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
    ///
    /// HKDF-SHA256 with an empty salt and [`EXPANDED_SECRET_INFO`], written out for these fixed
    /// sizes on `sha2`'s raw compression function (SHA-NI when present): the empty salt's HMAC
    /// states are computed once per process, every message is laid out in padded blocks up
    /// front and each HMAC step is one compression call. That is 39 compressions per hop
    /// (the `hkdf` crate needs 43) and none of the generic buffering around them. Equal to
    /// the `hkdf` crate byte for byte (tested).
    pub fn expand_into(&mut self, shared_secret: &[u8; 32]) {
        let salt = HmacState::empty_salt();
        hkdf_fixed(salt, shared_secret, EXPANDED_SECRET_INFO, &mut self.0);
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
///
/// HKDF-SHA256 with [`PAYLOAD_KEY_SALT`] and [`PAYLOAD_KEY_INFO`], on the same fixed-size path
/// as [`ExpandedSecret::expand_into`] (the salt's HMAC states computed once per process).
pub fn payload_key_from_seed(seed: &[u8; 16], out: &mut [u8; PAYLOAD_KEY_LEN]) {
    hkdf_fixed(payload_salt(), seed, PAYLOAD_KEY_INFO, out);
}

/// The prepared [`PAYLOAD_KEY_SALT`], once per process.
fn payload_salt() -> &'static HmacState {
    static SALT: OnceLock<HmacState> = OnceLock::new();
    SALT.get_or_init(|| HmacState::new(PAYLOAD_KEY_SALT))
}

/// The longest `info` [`hkdf_fixed`] takes.
const MAX_INFO: usize = 128;

/// HKDF-SHA256 for the Sphinx key schedule's shapes: extract with a prepared salt from an input
/// key of at most 55 bytes, then expand `info` (at most [`MAX_INFO`] bytes) into `out` (a
/// whole number of 32-byte blocks).
///
/// Written out on `sha2`'s raw compression function: the salt's HMAC states are prepared by
/// the caller once, each expansion message is laid out in padded blocks up front, and each
/// HMAC step is one compression call. For the per-hop expansion (97-byte info, 288 bytes) that
/// is 39 compressions (the `hkdf` crate needs 43) and none of the generic buffering around
/// them. Equal to the `hkdf` crate byte for byte (tested).
fn hkdf_fixed(salt: &HmacState, ikm: &[u8], info: &[u8], out: &mut [u8]) {
    assert!(ikm.len() <= 55 && info.len() <= MAX_INFO && out.len().is_multiple_of(32));
    assert!(out.len() <= 255 * 32, "HKDF-SHA256 output limit");
    // Extract: PRK = HMAC(salt, IKM).
    let mut prk = salt.mac_short(ikm);
    let key = HmacState::new(&prk);
    prk.zeroize();
    // T(1) = HMAC(PRK, info || 1).
    let mut first = [0u8; MAX_INFO + 1 + 72];
    first[..info.len()].copy_from_slice(info);
    first[info.len()] = 1;
    let first_len = pad_end(&mut first, info.len() + 1, 64 + info.len() + 1);
    // T(i) = HMAC(PRK, T(i-1) || info || i).
    let mut next = [0u8; 32 + MAX_INFO + 1 + 72];
    next[32..32 + info.len()].copy_from_slice(info);
    let counter = 32 + info.len();
    let next_len = pad_end(&mut next, counter + 1, 64 + counter + 1);
    for i in 0..out.len() / 32 {
        let mut t = if i == 0 {
            key.mac_blocks(&first[..first_len])
        } else {
            next[..32].copy_from_slice(&out[32 * (i - 1)..32 * i]);
            next[counter] = (i + 1) as u8;
            key.mac_blocks(&next[..next_len])
        };
        out[32 * i..32 * i + 32].copy_from_slice(&t);
        t.zeroize();
    }
    next.zeroize();
}

/// HMAC-SHA256 of `data` truncated to 16 bytes.
///
/// On `sha2`'s raw compression function like [`ExpandedSecret::expand_into`]: the whole blocks
/// of `data` go straight from the frame into one compression call, the padded tail into
/// another. Equal to the `hmac` crate (tested).
pub fn header_mac(key: &[u8; 16], data: &[u8]) -> [u8; 16] {
    let k = HmacState::new(key);
    let mut inner = k.inner;
    let (whole, rest) = data.as_chunks::<64>();
    compress256(&mut inner, whole);
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    let n = pad_end(&mut tail, rest.len(), 64 + data.len());
    let (blocks, _) = tail[..n].as_chunks::<64>();
    compress256(&mut inner, blocks);
    let mut full = k.finish(&inner);
    let mac = full[..16].try_into().expect("32 >= 16");
    full.zeroize();
    inner.zeroize();
    tail.zeroize();
    mac
}

/// The SHA-256 initial state.
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Pads a message in `buf`: `len` bytes of it are in place, `total` bytes (including any
/// blocks already compressed) in all. Writes 0x80, zeros and the bit length; returns the length
/// of the padded part of `buf` (a whole number of blocks).
fn pad_end(buf: &mut [u8], len: usize, total: usize) -> usize {
    let n = (len + 9).div_ceil(64) * 64;
    buf[len] = 0x80;
    buf[len + 1..n - 8].fill(0);
    buf[n - 8..n].copy_from_slice(&((total as u64) * 8).to_be_bytes());
    n
}

/// The big-endian digest of a SHA-256 state.
fn digest(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, w) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// An HMAC-SHA256 key (of at most 64 bytes) with its inner and outer pad blocks absorbed.
#[derive(Zeroize, ZeroizeOnDrop)]
struct HmacState {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl HmacState {
    fn new(key: &[u8]) -> HmacState {
        assert!(key.len() <= 64, "Sphinx HMAC keys are short");
        let mut pads = [[0x36u8; 64], [0x5cu8; 64]];
        for (i, &k) in key.iter().enumerate() {
            pads[0][i] ^= k;
            pads[1][i] ^= k;
        }
        let mut s = HmacState {
            inner: SHA256_IV,
            outer: SHA256_IV,
        };
        compress256(&mut s.inner, &pads[..1]);
        compress256(&mut s.outer, &pads[1..]);
        pads.zeroize();
        s
    }

    /// The empty salt of the per-hop HKDF, prepared once per process.
    fn empty_salt() -> &'static HmacState {
        static SALT: OnceLock<HmacState> = OnceLock::new();
        SALT.get_or_init(|| HmacState::new(b""))
    }

    /// The outer hash over an inner state that has absorbed its whole padded message.
    fn finish(&self, inner: &[u32; 8]) -> [u8; 32] {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&digest(inner));
        pad_end(&mut block, 32, 64 + 32);
        let mut outer = self.outer;
        compress256(&mut outer, std::slice::from_ref(&block));
        block.zeroize();
        let out = digest(&outer);
        outer.zeroize();
        out
    }

    /// HMAC of a message already laid out in padded blocks (see [`pad_end`]).
    fn mac_blocks(&self, padded: &[u8]) -> [u8; 32] {
        let (blocks, rest) = padded.as_chunks::<64>();
        debug_assert!(rest.is_empty());
        let mut inner = self.inner;
        compress256(&mut inner, blocks);
        let out = self.finish(&inner);
        inner.zeroize();
        out
    }

    /// HMAC of a message of at most 55 bytes.
    fn mac_short(&self, msg: &[u8]) -> [u8; 32] {
        let mut block = [0u8; 64];
        block[..msg.len()].copy_from_slice(msg);
        pad_end(&mut block, msg.len(), 64 + msg.len());
        let out = self.mac_blocks(&block);
        block.zeroize();
        out
    }
}

/// XORs the routing keystream (AES-128-CTR, 64-bit big-endian counter, zero IV) into `data`.
pub fn apply_routing_stream(key: &[u8; 16], data: &mut [u8]) {
    let mut c = ctr::Ctr64BE::<Aes128>::new(key.into(), &[0u8; 16].into());
    c.apply_keystream(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hkdf::Hkdf;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    #[test]
    fn expansion_equals_the_hkdf_crate() {
        for seed in 0..200u32 {
            let shared: [u8; 32] = std::array::from_fn(|i| (seed as u8).wrapping_mul(31) ^ i as u8);
            let mut want = [0u8; EXPANDED_LEN];
            Hkdf::<Sha256>::new(Some(b""), &shared)
                .expand(EXPANDED_SECRET_INFO, &mut want)
                .unwrap();
            assert_eq!(ExpandedSecret::expand(&shared).0, want, "seed {seed}");
        }
    }

    #[test]
    fn payload_keys_from_seeds_equal_the_hkdf_crate() {
        for seed in 0..200u32 {
            let s: [u8; 16] = std::array::from_fn(|i| (seed as u8).wrapping_mul(17) ^ i as u8);
            let mut want = [0u8; PAYLOAD_KEY_LEN];
            Hkdf::<Sha256>::new(Some(PAYLOAD_KEY_SALT), &s)
                .expand(PAYLOAD_KEY_INFO, &mut want)
                .unwrap();
            let mut got = [0u8; PAYLOAD_KEY_LEN];
            payload_key_from_seed(&s, &mut got);
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn fixed_hkdf_equals_the_hkdf_crate_for_every_info_length() {
        for info_len in 0..=MAX_INFO {
            let info: Vec<u8> = (0..info_len).map(|i| (i * 5) as u8).collect();
            let salt: Vec<u8> = (0..(info_len % 65)).map(|i| i as u8).collect();
            let ikm: Vec<u8> = (0..(info_len % 56)).map(|i| (i * 3) as u8).collect();
            let mut want = [0u8; 96];
            Hkdf::<Sha256>::new(Some(&salt), &ikm)
                .expand(&info, &mut want)
                .unwrap();
            let mut got = [0u8; 96];
            hkdf_fixed(&HmacState::new(&salt), &ikm, &info, &mut got);
            assert_eq!(got, want, "info {info_len}");
        }
    }

    #[test]
    fn header_mac_equals_the_hmac_crate_at_every_length() {
        for len in 0..400usize {
            let key: [u8; 16] = std::array::from_fn(|i| (i * 3 + len) as u8);
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
            m.update(&data);
            let full = m.finalize().into_bytes();
            assert_eq!(header_mac(&key, &data)[..], full[..16], "len {len}");
        }
    }
}
