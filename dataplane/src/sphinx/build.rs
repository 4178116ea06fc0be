//! The sender side: building Sphinx packets (what a Nym client does), so that the node's demo, the
//! load generator and the integration tests can make real packets without `sphinx-packet`.
//!
//! [`build_packet`] builds one packet from a [`PacketSpec`]; [`build_batch`] builds many and runs
//! each step of their key schedules as one [`x25519_batch`] call across the whole batch, so the
//! SIMD backends picked by [`Backend::best`] do the bulk of the work.
//!
//! # Compatibility
//!
//! The output is byte-compatible with `sphinx-packet` 0.8.0's
//! `SphinxPacketBuilder::build_packet` (the same algorithm, key schedule and layouts): given the
//! same initial secret and the same final-hop padding bytes ([`FinalPadding::Bytes`]) the packets
//! are identical, and any packet built here is processed by `sphinx-packet` (and by mixplane's
//! [`Processor`](super::Processor)) exactly like one built by the crate. `sphinx-packet` draws the
//! final-hop padding from its own RNG; [`FinalPadding::Seed`] derives it from a caller-given seed
//! instead, so this module needs no RNG of its own: the caller supplies all randomness (the
//! initial secret and the padding seed), which must be fresh, secret and uniformly random per
//! packet.
//!
//! # Layout
//!
//! Packet = alpha (32) | gamma (16) | beta (300) | payload. For a route of `n` hops with expanded
//! secrets `e_0 .. e_{n-1}`:
//!
//! * alpha_0 = X25519(x, 9); hop `i`'s shared secret is `X25519(b_{i-1}, ..X25519(b_0,
//!   X25519(x, pk_i)))` where `b_j` is hop `j`'s blinding factor.
//! * The filler is built from the routing keystreams of hops `0 .. n-2`.
//! * The final routing information `2 | version | destination | identifier | padding`, of
//!   `300 - 60 (n-1)` bytes, is encrypted with the last hop's keystream, followed by the filler and
//!   MAC'd with the last hop's MAC key.
//! * Each forward hop `i` (from `n-2` down to 0) gets the slot `1 | version | address of hop i+1 |
//!   delay of hop i | gamma_{i+1} | beta_{i+1}[..240]`, encrypted with its keystream and MAC'd.
//! * The payload `0^16 | plaintext | 0x01 | 0..` is Lioness-encrypted with the hops' payload keys,
//!   last hop first.

use std::net::SocketAddr;

use hkdf::Hkdf;
use mixplane_crypto_simd::lioness;
use mixplane_crypto_simd::x25519::{self, BASEPOINT, Backend, x25519_batch};
use sha2::Sha256;
use zeroize::Zeroize;

use super::address;
use super::frame::{PAYLOAD_OVERHEAD, SPHINX_HEADER_LEN, SizeClass};
use super::kdf::{self, ExpandedSecret, PAYLOAD_KEY_LEN, ROUTING_STREAM_LEN};
use super::{KNOWN_SPHINX_VERSIONS, address::MAX_UNPADDED_LEN};

/// The longest route a Sphinx header carries.
pub const MAX_ROUTE_LEN: usize = 5;
/// The most final-hop padding any route needs (a one-hop route): 300 - 52.
pub const MAX_FINAL_PADDING: usize = BETA_LEN - FINAL_META_LEN;
/// The smallest payload Lioness can encrypt (its block must be longer than 32 bytes).
pub const MIN_PAYLOAD_SIZE: usize = lioness::LEFT_LEN + 1;
/// The largest payload accepted: far above Nym's largest class (32 KiB), a bound against
/// absurd allocations and length overflow.
pub const MAX_PAYLOAD_SIZE: usize = 1 << 20;
/// Length of a SURB-ACK at the start of a regular packet's plaintext: the ack's first hop (19
/// bytes, zero-padded) and a whole ack-class Sphinx packet.
pub const SURB_ACK_LEN: usize = MAX_UNPADDED_LEN + SizeClass::Ack.packet_len();
/// HKDF info for final-hop padding derived from a [`FinalPadding::Seed`] (salt is empty).
pub const FINAL_PADDING_INFO: &[u8] = b"mixplane-sphinx-builder-final-hop-padding-v1";

const ALPHA_LEN: usize = 32;
const GAMMA_LEN: usize = 16;
const BETA_AT: usize = ALPHA_LEN + GAMMA_LEN;
const BETA_LEN: usize = 300;
/// One forward hop's slot: flag 1 | version 3 | address 32 | delay 8 | MAC 16.
const SLOT_LEN: usize = 60;
/// Final routing information before its padding: flag 1 | version 3 | destination 32 | id 16.
const FINAL_META_LEN: usize = 52;
const FLAG_FORWARD: u8 = 1;
const FLAG_FINAL: u8 = 2;
const ZERO_PREFIX: usize = 16;

/// Why a packet could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BuildError {
    /// The route has no hops.
    #[error("empty route")]
    EmptyRoute,
    /// The route has more than [`MAX_ROUTE_LEN`] hops.
    #[error("route of {hops} hops exceeds the maximum of {MAX_ROUTE_LEN}")]
    RouteTooLong {
        /// Hops given.
        hops: usize,
    },
    /// The route and the delays differ in length.
    #[error("route has {hops} hops but {delays} delays were given")]
    DelaysMismatch {
        /// Hops given.
        hops: usize,
        /// Delays given.
        delays: usize,
    },
    /// A Sphinx version mixplane (and Nym) does not know.
    #[error("unknown sphinx version {0}")]
    UnknownVersion(u16),
    /// The payload is too small for Lioness.
    #[error("payload size {size} is below the minimum of {MIN_PAYLOAD_SIZE}")]
    PayloadTooSmall {
        /// Payload size given.
        size: usize,
    },
    /// The payload is larger than [`MAX_PAYLOAD_SIZE`].
    #[error("payload size {size} is above the maximum of {MAX_PAYLOAD_SIZE}")]
    PayloadTooLarge {
        /// Payload size given.
        size: usize,
    },
    /// The plaintext does not fit the payload.
    #[error("plaintext of {len} bytes exceeds the {max} bytes the payload holds")]
    PlaintextTooLong {
        /// Plaintext length.
        len: usize,
        /// The most the payload holds ([`max_plaintext_len`]).
        max: usize,
    },
    /// [`FinalPadding::Bytes`] holds fewer bytes than the route needs.
    #[error("final-hop padding of {len} bytes, the route needs {needed}")]
    PaddingTooShort {
        /// Bytes given.
        len: usize,
        /// Bytes needed ([`final_padding_len`]).
        needed: usize,
    },
    /// A hop's public key yields an all-zero shared secret (a small-order point): the hop would
    /// drop the packet.
    #[error("hop {hop}'s public key gives an all-zero shared secret")]
    WeakPublicKey {
        /// Index of the hop in the route.
        hop: usize,
    },
    /// The X25519 backend given to [`build_batch_with`] does not run on this CPU.
    #[error("X25519 backend `{0}` is not supported by this CPU")]
    UnsupportedBackend(&'static str),
    /// A SURB-ACK packet that is not exactly one ack-class Sphinx packet long.
    #[error("SURB-ACK packet of {len} bytes, expected {}", SizeClass::Ack.packet_len())]
    BadSurbAck {
        /// Length given.
        len: usize,
    },
}

/// One hop of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The node's address (written, Nym-encoded, into the previous hop's routing slot).
    pub address: SocketAddr,
    /// The node's X25519 Sphinx public key.
    pub public_key: [u8; 32],
}

/// Where the random padding of the final routing information comes from.
#[derive(Clone)]
pub enum FinalPadding<'a> {
    /// Derived from a secret random seed with HKDF-SHA256 ([`FINAL_PADDING_INFO`]).
    Seed([u8; 32]),
    /// These bytes (at least [`final_padding_len`] of them; extra bytes are ignored). Lets tests
    /// reproduce `sphinx-packet`'s packets exactly.
    Bytes(&'a [u8]),
}

impl std::fmt::Debug for FinalPadding<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FinalPadding::Seed(_) => f.write_str("Seed(<redacted>)"),
            FinalPadding::Bytes(b) => write!(f, "Bytes(<{} bytes>)", b.len()),
        }
    }
}

/// Everything needed to build one packet.
#[derive(Clone)]
pub struct PacketSpec<'a> {
    /// The hops, first to last (1 to [`MAX_ROUTE_LEN`]).
    pub route: &'a [Hop],
    /// Each hop's delay in nanoseconds (the last hop's is not carried, as in Nym).
    pub delays_ns: &'a [u64],
    /// The destination address bytes for the final routing slot.
    pub destination: [u8; 32],
    /// The SURB identifier for the final routing slot.
    pub identifier: [u8; 16],
    /// The Sphinx version (one of [`KNOWN_SPHINX_VERSIONS`]).
    pub version: u16,
    /// The payload length (a [`SizeClass::payload_len`] for Nym packets; at least
    /// [`MIN_PAYLOAD_SIZE`], at most [`MAX_PAYLOAD_SIZE`]).
    pub payload_size: usize,
    /// The plaintext (at most [`max_plaintext_len`] bytes).
    pub plaintext: &'a [u8],
    /// The sender's secret X25519 scalar x (fresh and random per packet).
    pub initial_secret: [u8; 32],
    /// The final-hop padding.
    pub padding: FinalPadding<'a>,
}

impl std::fmt::Debug for PacketSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketSpec")
            .field("route", &self.route)
            .field("delays_ns", &self.delays_ns)
            .field("version", &self.version)
            .field("payload_size", &self.payload_size)
            .field("plaintext_len", &self.plaintext.len())
            .field("initial_secret", &"<redacted>")
            .field("padding", &self.padding)
            .finish_non_exhaustive()
    }
}

impl PacketSpec<'_> {
    /// Checks the spec without doing any cryptography.
    pub fn validate(&self) -> Result<(), BuildError> {
        let hops = self.route.len();
        if hops == 0 {
            return Err(BuildError::EmptyRoute);
        }
        if hops > MAX_ROUTE_LEN {
            return Err(BuildError::RouteTooLong { hops });
        }
        if self.delays_ns.len() != hops {
            return Err(BuildError::DelaysMismatch {
                hops,
                delays: self.delays_ns.len(),
            });
        }
        if !KNOWN_SPHINX_VERSIONS.contains(&self.version) {
            return Err(BuildError::UnknownVersion(self.version));
        }
        if self.payload_size < MIN_PAYLOAD_SIZE {
            return Err(BuildError::PayloadTooSmall {
                size: self.payload_size,
            });
        }
        if self.payload_size > MAX_PAYLOAD_SIZE {
            return Err(BuildError::PayloadTooLarge {
                size: self.payload_size,
            });
        }
        let max = max_plaintext_len(self.payload_size);
        if self.plaintext.len() > max {
            return Err(BuildError::PlaintextTooLong {
                len: self.plaintext.len(),
                max,
            });
        }
        if let FinalPadding::Bytes(b) = &self.padding {
            let needed = final_padding_len(hops);
            if b.len() < needed {
                return Err(BuildError::PaddingTooShort {
                    len: b.len(),
                    needed,
                });
            }
        }
        Ok(())
    }

    /// Length of the packet this spec builds.
    pub fn packet_len(&self) -> usize {
        SPHINX_HEADER_LEN.saturating_add(self.payload_size)
    }
}

/// The most plaintext a payload of `payload_size` bytes carries (`payload_size - 17`).
pub const fn max_plaintext_len(payload_size: usize) -> usize {
    payload_size.saturating_sub(PAYLOAD_OVERHEAD)
}

/// Bytes of random padding in the final routing information of a `hops`-hop route
/// (`300 - 60 (hops - 1) - 52`); 0 outside 1..=5.
pub const fn final_padding_len(hops: usize) -> usize {
    if hops == 0 || hops > MAX_ROUTE_LEN {
        return 0;
    }
    BETA_LEN - SLOT_LEN * (hops - 1) - FINAL_META_LEN
}

/// A node's X25519 public key: X25519(secret, 9).
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    x25519::x25519(secret, &BASEPOINT)
}

/// The plaintext of a regular (non-ack) Nym packet: the SURB-ACK (the ack's first hop,
/// zero-padded to 19 bytes, then the 386-byte ack-class Sphinx packet) followed by `message`.
pub fn plaintext_with_surb_ack(
    ack_first_hop: SocketAddr,
    ack_packet: &[u8],
    message: &[u8],
) -> Result<Vec<u8>, BuildError> {
    if ack_packet.len() != SizeClass::Ack.packet_len() {
        return Err(BuildError::BadSurbAck {
            len: ack_packet.len(),
        });
    }
    let mut out = Vec::with_capacity(SURB_ACK_LEN + message.len());
    out.extend_from_slice(&address::encode::<MAX_UNPADDED_LEN>(ack_first_hop));
    out.extend_from_slice(ack_packet);
    out.extend_from_slice(message);
    Ok(out)
}

/// Builds one packet with [`Backend::best`].
pub fn build_packet(spec: &PacketSpec<'_>) -> Result<Vec<u8>, BuildError> {
    build_batch(std::slice::from_ref(spec))
        .pop()
        .expect("one result per spec")
}

/// Builds every packet in `specs` with [`Backend::best`]; one result per spec, in order.
pub fn build_batch(specs: &[PacketSpec<'_>]) -> Vec<Result<Vec<u8>, BuildError>> {
    build_batch_with(Backend::best(), specs)
}

/// Builds every packet in `specs` with `backend`; one result per spec, in order. Every result
/// is [`BuildError::UnsupportedBackend`] when this CPU cannot run `backend` ([`Backend::best`]
/// always can).
///
/// The key schedules run in [`MAX_ROUTE_LEN`] rounds, each one [`x25519_batch`] call over all
/// packets: round `r` multiplies every hop `i >= r` of every packet by the scalar of step `r`
/// (x for `r = 0`, else the blinding factor of hop `r - 1`, known from the round before), after
/// which hop `r`'s shared secret is complete. Round 0 also computes the alphas.
pub fn build_batch_with(
    backend: Backend,
    specs: &[PacketSpec<'_>],
) -> Vec<Result<Vec<u8>, BuildError>> {
    if !backend.is_supported() {
        return vec![Err(BuildError::UnsupportedBackend(backend.name())); specs.len()];
    }
    let mut results: Vec<Result<Vec<u8>, BuildError>> = specs
        .iter()
        .map(|s| s.validate().map(|()| Vec::new()))
        .collect();
    let mut jobs: Vec<Job> = specs
        .iter()
        .enumerate()
        .filter(|(i, _)| results[*i].is_ok())
        .map(|(i, s)| Job::new(i, s))
        .collect();

    // The key schedules, one batched X25519 per round.
    let mut lanes = Lanes::default();
    for r in 0..MAX_ROUTE_LEN {
        lanes.clear();
        for (j, job) in jobs.iter().enumerate() {
            if job.failed || job.hops <= r {
                continue;
            }
            let spec = &specs[job.spec];
            let scalar = if r == 0 {
                lanes.push(j, ALPHA_LANE, &spec.initial_secret, &BASEPOINT);
                &spec.initial_secret
            } else {
                job.secrets[r - 1].blinding_factor()
            };
            for hop in r..job.hops {
                lanes.push(j, hop, scalar, &job.accs[hop]);
            }
        }
        if lanes.jobs.is_empty() {
            break;
        }
        lanes.run(backend);
        for k in 0..lanes.jobs.len() {
            let job = &mut jobs[lanes.jobs[k]];
            match lanes.hops[k] {
                ALPHA_LANE => job.alpha = lanes.out[k],
                hop => job.accs[hop] = lanes.out[k],
            }
        }
        for job in jobs.iter_mut() {
            if job.failed || job.hops <= r {
                continue;
            }
            if job.accs[r] == [0u8; 32] {
                job.failed = true;
                results[job.spec] = Err(BuildError::WeakPublicKey { hop: r });
                continue;
            }
            job.secrets[r].expand_into(&job.accs[r]);
        }
    }
    lanes.clear();

    // Headers and payloads.
    let mut streams = [[0u8; ROUTING_STREAM_LEN]; MAX_ROUTE_LEN];
    for job in jobs.iter_mut().filter(|j| !j.failed) {
        results[job.spec] = Ok(assemble(&specs[job.spec], job, &mut streams));
        job.accs.zeroize();
    }
    streams.zeroize();
    results
}

/// One packet's key schedule in progress.
struct Job {
    spec: usize,
    hops: usize,
    failed: bool,
    alpha: [u8; 32],
    /// Per hop: the public key, multiplied by one more scalar each round.
    accs: [[u8; 32]; MAX_ROUTE_LEN],
    secrets: [ExpandedSecret; MAX_ROUTE_LEN],
}

impl Job {
    fn new(spec: usize, s: &PacketSpec<'_>) -> Job {
        let mut accs = [[0u8; 32]; MAX_ROUTE_LEN];
        for (acc, hop) in accs.iter_mut().zip(s.route) {
            *acc = hop.public_key;
        }
        Job {
            spec,
            hops: s.route.len(),
            failed: false,
            alpha: [0; 32],
            accs,
            secrets: std::array::from_fn(|_| ExpandedSecret::default()),
        }
    }
}

/// The lane that computes a packet's alpha rather than advancing a hop.
const ALPHA_LANE: usize = usize::MAX;

/// One round's X25519 lanes.
#[derive(Default)]
struct Lanes {
    jobs: Vec<usize>,
    /// The hop whose accumulator the lane advances, or [`ALPHA_LANE`].
    hops: Vec<usize>,
    scalars: Vec<[u8; 32]>,
    points: Vec<[u8; 32]>,
    out: Vec<[u8; 32]>,
}

impl Lanes {
    fn clear(&mut self) {
        self.jobs.clear();
        self.hops.clear();
        self.scalars.zeroize();
        self.scalars.clear();
        self.points.zeroize();
        self.points.clear();
        self.out.zeroize();
        self.out.clear();
    }

    fn push(&mut self, job: usize, hop: usize, scalar: &[u8; 32], point: &[u8; 32]) {
        self.jobs.push(job);
        self.hops.push(hop);
        self.scalars.push(*scalar);
        self.points.push(*point);
    }

    fn run(&mut self, backend: Backend) {
        self.out.resize(self.scalars.len(), [0u8; 32]);
        x25519_batch(backend, &self.scalars, &self.points, &mut self.out);
    }
}

/// Writes the header and payload of a packet whose key schedule is done.
fn assemble(
    spec: &PacketSpec<'_>,
    job: &Job,
    streams: &mut [[u8; ROUTING_STREAM_LEN]; MAX_ROUTE_LEN],
) -> Vec<u8> {
    let n = job.hops;
    let secrets = &job.secrets[..n];
    for (stream, secret) in streams.iter_mut().zip(secrets) {
        stream.fill(0);
        kdf::apply_routing_stream(secret.stream_key(), stream);
    }
    let version = [0, (spec.version >> 8) as u8, spec.version as u8];

    let mut packet = vec![0u8; SPHINX_HEADER_LEN + spec.payload_size];
    packet[..ALPHA_LEN].copy_from_slice(&job.alpha);

    // The innermost beta: encrypted final routing information, then the filler.
    let mut beta = [0u8; BETA_LEN];
    let final_len = BETA_LEN - SLOT_LEN * (n - 1);
    beta[0] = FLAG_FINAL;
    beta[1..4].copy_from_slice(&version);
    beta[4..36].copy_from_slice(&spec.destination);
    beta[36..FINAL_META_LEN].copy_from_slice(&spec.identifier);
    let padding = &mut beta[FINAL_META_LEN..final_len];
    match &spec.padding {
        FinalPadding::Bytes(b) => padding.copy_from_slice(&b[..padding.len()]),
        FinalPadding::Seed(seed) => Hkdf::<Sha256>::new(Some(b""), seed)
            .expand(FINAL_PADDING_INFO, padding)
            .expect("at most 248 bytes is within HKDF-SHA256's limit"),
    }
    for (b, k) in beta[..final_len].iter_mut().zip(&streams[n - 1]) {
        *b ^= k;
    }
    // Filler: hop i (1-based step) XORs the last 60 i bytes of its keystream over the filler
    // extended by 60 zero bytes; the result ends beta.
    let filler = &mut beta[final_len..];
    for (i, stream) in streams[..n - 1].iter().enumerate() {
        let len = SLOT_LEN * (i + 1);
        for (f, k) in filler[..len]
            .iter_mut()
            .zip(&stream[ROUTING_STREAM_LEN - len..])
        {
            *f ^= k;
        }
    }
    let mut gamma = kdf::header_mac(secrets[n - 1].mac_key(), &beta);

    // Wrap outward, hop n-2 down to hop 0.
    for i in (0..n - 1).rev() {
        let mut slot = [0u8; BETA_LEN];
        slot[0] = FLAG_FORWARD;
        slot[1..4].copy_from_slice(&version);
        slot[4..36].copy_from_slice(&address::encode::<32>(spec.route[i + 1].address));
        slot[36..44].copy_from_slice(&spec.delays_ns[i].to_be_bytes());
        slot[44..SLOT_LEN].copy_from_slice(&gamma);
        slot[SLOT_LEN..].copy_from_slice(&beta[..BETA_LEN - SLOT_LEN]);
        for (b, k) in slot.iter_mut().zip(&streams[i][..BETA_LEN]) {
            *b ^= k;
        }
        beta = slot;
        gamma = kdf::header_mac(secrets[i].mac_key(), &beta);
    }
    packet[ALPHA_LEN..BETA_AT].copy_from_slice(&gamma);
    packet[BETA_AT..SPHINX_HEADER_LEN].copy_from_slice(&beta);

    // The payload, encrypted last hop first.
    let payload = &mut packet[SPHINX_HEADER_LEN..];
    payload[ZERO_PREFIX..ZERO_PREFIX + spec.plaintext.len()].copy_from_slice(spec.plaintext);
    payload[ZERO_PREFIX + spec.plaintext.len()] = 1;
    let mut key = [0u8; PAYLOAD_KEY_LEN];
    for secret in secrets.iter().rev() {
        if matches!(spec.version, 1 | 257 | 258) {
            key.copy_from_slice(secret.legacy_payload_key());
        } else {
            kdf::payload_key_from_seed(secret.payload_key_seed(), &mut key);
        }
        lioness::encrypt(&key, payload).expect("payload size validated above 32 bytes");
    }
    key.zeroize();
    packet
}
