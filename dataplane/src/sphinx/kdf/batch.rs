//! The key schedule of up to sixteen hops at once: the same HKDF and HMAC shapes as the
//! one-at-a-time code in [`super`], on the word-sliced multi-buffer SHA-256 of
//! [`mixplane_crypto_simd::sha256`] (AVX-512 where the CPU has it; AVX2, eight lanes per pass,
//! where it has AVX2 and no SHA-NI). Only the lanes holding packets are computed, in groups of
//! the backend's vector width.
//!
//! Only the inputs differ between the packets of a batch (shared secrets, MAC keys, beta, seeds);
//! the HKDF info strings, counters, padding and lengths are the same in every lane, so those
//! message words are written once as whole rows and only the per-packet words are transposed.
//! Every buffer holding key material is zeroized after use and on drop.

use mixplane_crypto_simd::sha256::{self, Backend, BlockX16, LANES, StateX16, splat_state};
use zeroize::Zeroize;

use super::{
    EXPANDED_LEN, EXPANDED_SECRET_INFO, ExpandedSecret, HmacState, MAX_INFO, PAYLOAD_KEY_INFO,
    PAYLOAD_KEY_LEN, pad_end,
};

/// One 32-bit word of every lane.
type Row = [u32; LANES];

/// Length of beta, the routing information the header MAC covers.
pub(crate) const BETA_LEN: usize = 300;
const _: () = assert!(BETA_LEN.is_multiple_of(4));
/// Blocks of the header MAC's inner message after the key block: beta and its padding.
const BETA_BLOCKS: usize = (BETA_LEN + 9).div_ceil(64);
/// Most blocks an HKDF expansion step needs: T(i-1) || info || counter, padded.
const MAX_STEP_BLOCKS: usize = (32 + MAX_INFO + 1 + 9).div_ceil(64);

/// Whether the batched schedule pays for `n` packets on this CPU: it needs a vector
/// compression. With AVX-512, below eight packets one call over sixteen lanes costs more than
/// the packets one by one (`sha256_timing`: 14.4 ns per lane and block against SHA-NI's
/// 34.3 ns on the AMD EPYC of bench/RESULTS.md, so sixteen lanes cost about seven single
/// blocks, plus the transposition). The AVX2 backend is only in force without SHA-NI, where
/// each packet one by one pays the `sha2` crate's scalar compression; one pass of eight lanes
/// cost about eight SHA-NI blocks on that EPYC, so from two packets on it is taken
/// (an estimate: no CPU without SHA-NI was at hand to measure the break-even).
pub(crate) fn pays(n: usize) -> bool {
    match sha256::Backend::best() {
        sha256::Backend::Avx512 => n >= 8,
        sha256::Backend::ShaNi | sha256::Backend::Avx2 => n >= 2,
        sha256::Backend::Portable => false,
    }
}

/// Which lanes a call computes, and on which backend.
#[derive(Debug, Clone, Copy)]
struct Lanes {
    backend: Backend,
    /// Lanes `0..live` hold packets; the others' results are garbage and never read.
    live: usize,
}

impl Lanes {
    fn compress(self, state: &mut StateX16, block: &BlockX16) {
        sha256::compress_live_on(self.backend, state, block, self.live);
    }
}

/// Sixteen HMAC-SHA256 keys with their pad blocks absorbed.
struct HmacX16 {
    inner: StateX16,
    outer: StateX16,
}

impl HmacX16 {
    /// The same key in every lane.
    fn splat(h: &HmacState) -> HmacX16 {
        HmacX16 {
            inner: splat_state(&h.inner),
            outer: splat_state(&h.outer),
        }
    }

    /// Keys given as rows of big-endian words (at most sixteen rows: a key of at most 64 bytes
    /// whose length is a multiple of four); only the live lanes are computed.
    fn from_rows(key: &[Row], lanes: Lanes) -> HmacX16 {
        let mut pad: BlockX16 = [[0x3636_3636; LANES]; 16];
        for (row, k) in pad.iter_mut().zip(key) {
            for (p, k) in row.iter_mut().zip(k) {
                *p ^= k;
            }
        }
        let mut h = HmacX16 {
            inner: splat_state(&sha256::IV),
            outer: splat_state(&sha256::IV),
        };
        lanes.compress(&mut h.inner, &pad);
        for v in pad.as_flattened_mut() {
            *v ^= 0x3636_3636 ^ 0x5c5c_5c5c;
        }
        lanes.compress(&mut h.outer, &pad);
        pad.zeroize();
        h
    }

    /// The outer hash over inner states that absorbed their whole padded messages: the HMAC
    /// values of the live lanes, as eight rows of big-endian words.
    fn finish(&self, inner: &StateX16, lanes: Lanes) -> StateX16 {
        let mut block: BlockX16 = [[0; LANES]; 16];
        block[..8].copy_from_slice(inner);
        block[8] = [0x8000_0000; LANES];
        block[15] = [(64 + 32) * 8; LANES];
        let mut out = self.outer;
        lanes.compress(&mut out, &block);
        block.zeroize();
        out
    }
}

impl Drop for HmacX16 {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

/// Writes `bytes` (a whole number of 64-byte blocks, the same in every lane) into `out` as
/// word-sliced blocks; returns how many.
fn splat_blocks(bytes: &[u8], out: &mut [BlockX16]) -> usize {
    let (blocks, rest) = bytes.as_chunks::<64>();
    debug_assert!(rest.is_empty());
    for (b, o) in blocks.iter().zip(out.iter_mut()) {
        for (w, row) in b.as_chunks::<4>().0.iter().zip(o.iter_mut()) {
            *row = [u32::from_be_bytes(*w); LANES];
        }
    }
    blocks.len()
}

/// HKDF-SHA256 of sixteen input keys at once, like [`super::hkdf_fixed`] in every lane: the
/// salt's prepared states, input keys given as rows of big-endian words (at most 52 bytes),
/// `info` of at most [`MAX_INFO`] bytes, output written as rows of big-endian words (a whole
/// number of 32-byte blocks). Only the live lanes are computed; the others hold garbage.
fn hkdf_x16(salt: &HmacState, ikm: &[Row], info: &[u8], out: &mut [Row], lanes: Lanes) {
    let ikm_len = 4 * ikm.len();
    assert!(ikm_len <= 52 && info.len() <= MAX_INFO && out.len().is_multiple_of(8));
    assert!(out.len() <= 255 * 8, "HKDF-SHA256 output limit");
    // Extract: PRK = HMAC(salt, IKM), one block.
    let salt = HmacX16::splat(salt);
    let mut block: BlockX16 = [[0; LANES]; 16];
    block[..ikm.len()].copy_from_slice(ikm);
    block[ikm.len()] = [0x8000_0000; LANES];
    block[15] = [((64 + ikm_len) * 8) as u32; LANES];
    let mut inner = salt.inner;
    lanes.compress(&mut inner, &block);
    block.zeroize();
    let mut prk = salt.finish(&inner, lanes);
    let key = HmacX16::from_rows(&prk, lanes);
    prk.zeroize();

    // T(1) = HMAC(PRK, info || 1): the same message in every lane.
    let mut bytes = [0u8; 32 + MAX_INFO + 1 + 72];
    bytes[..info.len()].copy_from_slice(info);
    bytes[info.len()] = 1;
    let len = pad_end(&mut bytes, info.len() + 1, 64 + info.len() + 1);
    let mut first = [[[0u32; LANES]; 16]; MAX_STEP_BLOCKS];
    let n_first = splat_blocks(&bytes[..len], &mut first);
    // T(i) = HMAC(PRK, T(i-1) || info || i): T(i-1) fills rows 0..8 of the first block, and
    // the counter byte changes one row.
    bytes.fill(0);
    bytes[32..32 + info.len()].copy_from_slice(info);
    let at = 32 + info.len();
    let len = pad_end(&mut bytes, at + 1, 64 + at + 1);
    let mut next = [[[0u32; LANES]; 16]; MAX_STEP_BLOCKS];
    let n_next = splat_blocks(&bytes[..len], &mut next);
    let (cb, cw, shift) = (at / 64, at % 64 / 4, 8 * (3 - at % 4));
    let counter_row = next[cb][cw][0];

    for i in 0..out.len() / 8 {
        inner = key.inner;
        if i == 0 {
            for b in &first[..n_first] {
                lanes.compress(&mut inner, b);
            }
        } else {
            next[0][..8].copy_from_slice(&out[8 * (i - 1)..8 * i]);
            next[cb][cw] = [counter_row | ((i as u32 + 1) << shift); LANES];
            for b in &next[..n_next] {
                lanes.compress(&mut inner, b);
            }
        }
        let mut t = key.finish(&inner, lanes);
        out[8 * i..8 * i + 8].copy_from_slice(&t);
        t.zeroize();
    }
    inner.zeroize();
    next.zeroize();
}

/// The per-hop key schedule of up to sixteen packets: HKDF expansion of each shared secret and
/// the header MAC over each beta. Fill with [`HopKeysX16::push`], then [`HopKeysX16::run`], then
/// read each lane back. About 11 KiB; keep one per processor.
pub(crate) struct HopKeysX16 {
    n: usize,
    shared: [Row; 8],
    beta: [BlockX16; BETA_BLOCKS],
    expanded: [Row; EXPANDED_LEN / 4],
    mac: [Row; 4],
}

impl Default for HopKeysX16 {
    fn default() -> Self {
        HopKeysX16 {
            n: 0,
            shared: [[0; LANES]; 8],
            beta: [[[0; LANES]; 16]; BETA_BLOCKS],
            expanded: [[0; LANES]; EXPANDED_LEN / 4],
            mac: [[0; LANES]; 4],
        }
    }
}

impl HopKeysX16 {
    /// Adds a packet: its shared secret and its beta ([`BETA_LEN`] bytes). Panics when sixteen
    /// are already in.
    pub(crate) fn push(&mut self, shared: &[u8; 32], beta: &[u8]) {
        assert!(self.n < LANES, "sixteen lanes");
        assert_eq!(beta.len(), BETA_LEN, "beta length");
        let l = self.n;
        for (row, w) in self.shared.iter_mut().zip(shared.as_chunks::<4>().0) {
            row[l] = u32::from_be_bytes(*w);
        }
        for (k, w) in beta.as_chunks::<4>().0.iter().enumerate() {
            self.beta[k / 16][k % 16][l] = u32::from_be_bytes(*w);
        }
        self.n += 1;
    }

    /// Expands every lane's shared secret and computes its header MAC, on the backend in force.
    pub(crate) fn run(&mut self) {
        self.run_on(Backend::best());
    }

    /// [`HopKeysX16::run`] on `backend`. Lanes past the packets pushed may or may not be
    /// computed, and are never read.
    fn run_on(&mut self, backend: Backend) {
        let lanes = Lanes {
            backend,
            live: self.n,
        };
        // the padding of the MAC's inner message (ipad block + beta), the same in every lane
        let w = BETA_LEN / 4;
        let last = &mut self.beta[BETA_BLOCKS - 1];
        last[w % 16] = [0x8000_0000; LANES];
        for row in &mut last[w % 16 + 1..] {
            *row = [0; LANES];
        }
        last[15] = [((64 + BETA_LEN) * 8) as u32; LANES];

        hkdf_x16(
            HmacState::empty_salt(),
            &self.shared,
            EXPANDED_SECRET_INFO,
            &mut self.expanded,
            lanes,
        );
        // the MAC key is bytes 16..32 of the expansion
        let key = HmacX16::from_rows(&self.expanded[4..8], lanes);
        let mut inner = key.inner;
        for b in &self.beta {
            lanes.compress(&mut inner, b);
        }
        let mut full = key.finish(&inner, lanes);
        self.mac.copy_from_slice(&full[..4]);
        full.zeroize();
        inner.zeroize();
    }

    /// Lane `l`'s expanded secret.
    pub(crate) fn expanded_into(&self, l: usize, out: &mut ExpandedSecret) {
        assert!(l < self.n);
        for (o, row) in out.0.as_chunks_mut::<4>().0.iter_mut().zip(&self.expanded) {
            *o = row[l].to_be_bytes();
        }
    }

    /// Lane `l`'s header MAC (HMAC-SHA256 truncated to 16 bytes).
    pub(crate) fn mac(&self, l: usize) -> [u8; 16] {
        assert!(l < self.n);
        let mut out = [0u8; 16];
        for (o, row) in out.as_chunks_mut::<4>().0.iter_mut().zip(&self.mac) {
            *o = row[l].to_be_bytes();
        }
        out
    }

    /// Wipes every lane and empties the set.
    pub(crate) fn clear(&mut self) {
        self.n = 0;
        self.shared.zeroize();
        self.beta.zeroize();
        self.expanded.zeroize();
        self.mac.zeroize();
    }
}

impl Drop for HopKeysX16 {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Payload keys of up to sixteen v259/v260 hops at once, like [`super::payload_key_from_seed`]
/// per lane. `out[l]` gets the key of `seeds[l]`.
pub(crate) fn payload_keys_x16(seeds: &[&[u8; 16]], out: &mut [[u8; PAYLOAD_KEY_LEN]]) {
    payload_keys_on(Backend::best(), seeds, out);
}

/// [`payload_keys_x16`] on `backend`.
fn payload_keys_on(backend: Backend, seeds: &[&[u8; 16]], out: &mut [[u8; PAYLOAD_KEY_LEN]]) {
    assert!(seeds.len() <= LANES && out.len() >= seeds.len());
    let mut ikm: [Row; 4] = [[0; LANES]; 4];
    for (l, s) in seeds.iter().enumerate() {
        for (row, w) in ikm.iter_mut().zip(s.as_chunks::<4>().0) {
            row[l] = u32::from_be_bytes(*w);
        }
    }
    let mut keys: [Row; PAYLOAD_KEY_LEN / 4] = [[0; LANES]; PAYLOAD_KEY_LEN / 4];
    hkdf_x16(
        super::payload_salt(),
        &ikm,
        PAYLOAD_KEY_INFO,
        &mut keys,
        Lanes {
            backend,
            live: seeds.len(),
        },
    );
    for (l, o) in out.iter_mut().enumerate().take(seeds.len()) {
        for (o, row) in o.as_chunks_mut::<4>().0.iter_mut().zip(&keys) {
            *o = row[l].to_be_bytes();
        }
    }
    ikm.zeroize();
    keys.zeroize();
}

#[cfg(test)]
mod tests {
    use super::super::{header_mac, payload_key_from_seed};
    use super::*;

    /// Every SHA-256 backend the features in force allow.
    fn backends() -> impl Iterator<Item = Backend> {
        Backend::ALL.iter().copied().filter(|b| b.is_available())
    }

    #[test]
    fn every_lane_equals_the_one_at_a_time_schedule() {
        let mut hop = HopKeysX16::default();
        for (backend, round) in backends().flat_map(|b| (0..3u8).map(move |r| (b, r))) {
            for n in [1usize, 7, 8, 9, 15, 16] {
                hop.clear();
                let inputs: Vec<([u8; 32], Vec<u8>)> = (0..n)
                    .map(|l| {
                        let s = std::array::from_fn(|i| {
                            (i as u8).wrapping_mul(3) ^ (l as u8).wrapping_mul(29) ^ round
                        });
                        let beta = (0..BETA_LEN).map(|i| (i * 7 + l) as u8 ^ round).collect();
                        (s, beta)
                    })
                    .collect();
                for (s, b) in &inputs {
                    hop.push(s, b);
                }
                hop.run_on(backend);
                for (l, (s, b)) in inputs.iter().enumerate() {
                    let want = ExpandedSecret::expand(s);
                    let mut got = ExpandedSecret::default();
                    hop.expanded_into(l, &mut got);
                    let at = format!("lane {l} of {n}, {}", backend.name());
                    assert_eq!(got.0, want.0, "expansion, {at}");
                    assert_eq!(hop.mac(l), header_mac(want.mac_key(), b), "mac, {at}");
                }
            }
        }
    }

    #[test]
    fn payload_keys_equal_the_one_at_a_time_derivation() {
        for (backend, n) in backends().flat_map(|b| (1..=16usize).map(move |n| (b, n))) {
            let seeds: Vec<[u8; 16]> = (0..n)
                .map(|l| std::array::from_fn(|i| (i as u8).wrapping_mul(11) ^ (l as u8)))
                .collect();
            let refs: Vec<&[u8; 16]> = seeds.iter().collect();
            let mut got = vec![[0u8; PAYLOAD_KEY_LEN]; n];
            payload_keys_on(backend, &refs, &mut got);
            for (l, s) in seeds.iter().enumerate() {
                let mut want = [0u8; PAYLOAD_KEY_LEN];
                payload_key_from_seed(s, &mut want);
                assert_eq!(got[l], want, "lane {l} of {n}, {}", backend.name());
            }
        }
    }

    #[test]
    fn hkdf_x16_equals_hkdf_fixed_for_every_info_length() {
        for (backend, info_len) in
            backends().flat_map(|b| (0..=MAX_INFO).step_by(7).map(move |i| (b, i)))
        {
            let info: Vec<u8> = (0..info_len).map(|i| (i * 5) as u8).collect();
            let salt = HmacState::new(&info[..info_len.min(40)]);
            let ikm: [Row; 8] = std::array::from_fn(|w| {
                std::array::from_fn(|l| (w * 977 + l * 31 + info_len) as u32)
            });
            let mut out = [[0u32; LANES]; 24];
            let lanes = Lanes {
                backend,
                live: LANES,
            };
            hkdf_x16(&salt, &ikm, &info, &mut out, lanes);
            for l in 0..LANES {
                let ikm_bytes: Vec<u8> = ikm.iter().flat_map(|r| r[l].to_be_bytes()).collect();
                let mut want = [0u8; 96];
                super::super::hkdf_fixed(&salt, &ikm_bytes, &info, &mut want);
                let got: Vec<u8> = out.iter().flat_map(|r| r[l].to_be_bytes()).collect();
                assert_eq!(got, want, "info {info_len}, lane {l}, {}", backend.name());
            }
        }
    }
}

/// What the per-hop key schedule of sixteen packets costs per packet, one at a time (`sha2`,
/// SHA-NI where the CPU has it) and on every multi-buffer backend the CPU allows, rounds
/// interleaved, least of each (`cargo test -p mixplane-dataplane --lib
/// schedule_cost -- --ignored --nocapture`). bench/RESULTS.md quotes the figures.
#[cfg(test)]
mod timing {
    use super::super::header_mac;
    use super::*;
    use mixplane_crypto_simd::cpu;
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    const PACKETS: usize = 16;
    const REPS: u32 = 200;

    fn inputs() -> Vec<([u8; 32], Vec<u8>)> {
        (0..PACKETS)
            .map(|l| {
                let s = std::array::from_fn(|i| (i * 13 + l * 101) as u8);
                (s, (0..BETA_LEN).map(|i| (i * 7 + l) as u8).collect())
            })
            .collect()
    }

    /// Per packet, one round of `REPS` batches; `None`: one at a time.
    fn round(backend: Option<Backend>, inputs: &[([u8; 32], Vec<u8>)]) -> Duration {
        let mut hop = HopKeysX16::default();
        let mut e = ExpandedSecret::default();
        let t = Instant::now();
        for _ in 0..REPS {
            match backend {
                Some(b) => {
                    hop.clear();
                    for (s, beta) in inputs {
                        hop.push(s, beta);
                    }
                    hop.run_on(b);
                    for l in 0..inputs.len() {
                        hop.expanded_into(l, &mut e);
                        black_box(hop.mac(l));
                    }
                }
                None => {
                    for (s, beta) in inputs {
                        e.expand_into(black_box(s));
                        black_box(header_mac(e.mac_key(), beta));
                    }
                }
            }
        }
        t.elapsed() / (REPS * inputs.len() as u32)
    }

    #[test]
    #[ignore = "a timing, not a check"]
    fn schedule_cost() {
        let inputs = inputs();
        let mut ways: Vec<Option<Backend>> = vec![None];
        ways.extend(
            Backend::ALL
                .iter()
                .filter(|b| **b != Backend::Portable && b.is_available())
                .map(|b| Some(*b)),
        );
        let mut least = vec![Duration::MAX; ways.len()];
        for _ in 0..30 {
            for (w, l) in ways.iter().zip(&mut least) {
                *l = (*l).min(round(*w, &inputs));
            }
        }
        eprintln!("{}; SHA-NI: {}", cpu::report(), cpu::sha_ni());
        for (w, l) in ways.iter().zip(&least) {
            let name = w.map_or("one at a time (sha2)", |b| b.name());
            eprintln!("HKDF 288 B + header MAC, {PACKETS} packets, {name}: {l:?} per packet");
            assert!(*l < Duration::from_millis(1));
        }
    }
}
