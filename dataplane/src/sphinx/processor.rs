//! The batch processor: the staged pipeline described in the module docs.

use std::sync::Arc;

use mixplane_crypto_simd::{lioness, x25519};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::frame::{FrameHeader, SPHINX_HEADER_LEN, SizeClass};
use super::kdf::{self, ExpandedSecret, PAYLOAD_KEY_LEN, ROUTING_STREAM_LEN};
use super::keys::{KeySlot, NodeKeys};
use super::{
    Accepted, DEFAULT_MAX_DELAY_NS, Deliver, DropReason, Forward, KNOWN_SPHINX_VERSIONS,
    ReplayGuard, SurbAck, Verdict, address,
};

const ALPHA: usize = 0;
const GAMMA: usize = 32;
const BETA: usize = 48;
const BETA_LEN: usize = kdf::batch::BETA_LEN;
const SLOT_LEN: usize = 60;
/// Sphinx version whose SURB replies stay sealed until their creator opens them.
const SINGLE_SEED_SURB_VERSION: u16 = 260;
const FLAG_FORWARD: u8 = 1;
const FLAG_FINAL: u8 = 2;
/// Zero prefix of a final payload.
const PAYLOAD_ZERO_PREFIX: usize = 16;
/// A SURB-ACK: 19-byte first-hop address and a whole ack-class Sphinx packet.
const SURB_ACK_LEN: usize = address::MAX_UNPADDED_LEN + SizeClass::Ack.packet_len();

/// What the processor does with a forward hop whose delay is over the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverCap {
    /// Forward it with the delay cut to the cap and mark it ([`Forward::delay_clamped`]), as
    /// nym-node does (it counts such packets as `excessive_delay_packets`).
    #[default]
    Clamp,
    /// Drop it ([`DropReason::DelayTooLong`]).
    Drop,
}

/// Settings of the Sphinx core.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Cap on one forward hop's delay; [`Self::over_cap`] says what happens to longer ones.
    pub max_delay_ns: u64,
    /// Clamp (Nym's behaviour, the default) or drop delays over [`Self::max_delay_ns`].
    pub over_cap: OverCap,
    /// The X25519 implementation.
    pub backend: x25519::Backend,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            max_delay_ns: DEFAULT_MAX_DELAY_NS,
            over_cap: OverCap::Clamp,
            backend: x25519::Backend::best(),
        }
    }
}

/// What the routing slot said, kept between stages.
#[derive(Clone, Copy)]
enum Route {
    Forward {
        next_hop: std::net::SocketAddr,
        delay_ns: u64,
        delay_clamped: bool,
    },
    Final {
        destination: [u8; 32],
        identifier: [u8; 16],
    },
}

/// How far a frame has come through the stages of [`Processor::process_batch`].
#[derive(Clone, Copy)]
enum Progress {
    /// The frame header parsed; the shared secret and header MAC are being checked.
    Parsed,
    /// The header MAC verified under [`Slot::key`].
    Verified,
    /// Not a replay; this hop's routing slot was read and, for a forward hop, gamma and beta
    /// rewritten for the next hop.
    Routed(Route),
    /// Dropped; later stages skip the frame.
    Dropped(DropReason),
}

/// Per-frame state between stages.
#[derive(Clone)]
struct Slot {
    header: FrameHeader,
    key: KeySlot,
    rotation_id: u32,
    secret: ExpandedSecret,
    version: u16,
    progress: Progress,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            header: FrameHeader::v8(SizeClass::Regular, super::KeyRotation::Unknown),
            key: KeySlot::Primary,
            rotation_id: 0,
            secret: ExpandedSecret::default(),
            version: 0,
            progress: Progress::Dropped(DropReason::Truncated),
        }
    }
}

/// Reusable X25519 job lists.
#[derive(Default)]
struct DhJobs {
    index: Vec<usize>,
    scalars: Vec<[u8; 32]>,
    points: Vec<[u8; 32]>,
    out: Vec<[u8; 32]>,
}

impl DhJobs {
    fn clear(&mut self) {
        self.index.clear();
        self.scalars.zeroize();
        self.scalars.clear();
        self.points.clear();
        self.out.zeroize();
        self.out.clear();
    }

    /// Makes room for `n` jobs before any is pushed: a vector that grew while holding scalars
    /// or shared secrets would leave a copy of them in the freed buffer. The old buffers are
    /// wiped (their whole capacity) before they are given back.
    fn reserve(&mut self, n: usize) {
        reserve_wiped(&mut self.scalars, n);
        reserve_wiped(&mut self.out, n);
        self.index.reserve(n.saturating_sub(self.index.len()));
        self.points.reserve(n.saturating_sub(self.points.len()));
    }

    fn push(&mut self, i: usize, scalar: &[u8; 32], point: &[u8; 32]) {
        self.index.push(i);
        self.scalars.push(*scalar);
        self.points.push(*point);
    }

    fn run(&mut self, backend: x25519::Backend) {
        self.out.resize(self.scalars.len(), [0u8; 32]);
        x25519::x25519_batch(backend, &self.scalars, &self.points, &mut self.out);
    }
}

/// Grows `v` to hold at least `n` items without leaving its contents in a freed buffer: the
/// items move to a new buffer and the old one is wiped, its whole capacity, before it is freed.
fn reserve_wiped<T: Zeroize + Copy>(v: &mut Vec<T>, n: usize) {
    if v.capacity() >= n {
        return;
    }
    let mut grown = Vec::with_capacity(n.max(v.capacity() * 2));
    grown.extend_from_slice(v);
    // `zeroize` on a Vec wipes its elements and then its spare capacity
    v.zeroize();
    *v = grown;
}

/// The Sphinx batch processor. One per worker; it owns its scratch space.
pub struct Processor {
    keys: Arc<NodeKeys>,
    config: ProcessorConfig,
    slots: Vec<Slot>,
    dh: DhJobs,
    retry: DhJobs,
    routing: [u8; ROUTING_STREAM_LEN],
    payload_keys: Vec<[u8; PAYLOAD_KEY_LEN]>,
    survivors: Vec<usize>,
    /// Scratch for the batched key schedule (about 11 KiB, boxed to keep `Processor` small).
    hop_keys: Box<kdf::batch::HopKeysX16>,
    /// Indices into `payload_keys` of the keys still to derive from seeds.
    seeded: Vec<usize>,
}

impl Processor {
    /// A processor for `keys`.
    pub fn new(keys: Arc<NodeKeys>, config: ProcessorConfig) -> Processor {
        Processor {
            keys,
            config,
            slots: Vec::new(),
            dh: DhJobs::default(),
            retry: DhJobs::default(),
            routing: [0; ROUTING_STREAM_LEN],
            payload_keys: Vec::new(),
            survivors: Vec::new(),
            hop_keys: Box::default(),
            seeded: Vec::new(),
        }
    }

    /// Replaces the keys (between batches: a rotation published by the control plane).
    pub fn set_keys(&mut self, keys: Arc<NodeKeys>) {
        self.keys = keys;
    }

    /// The keys in use.
    pub fn keys(&self) -> &Arc<NodeKeys> {
        &self.keys
    }

    /// The configuration.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    /// Processes one batch of frames in place and appends one verdict per frame to `out`
    /// (which is cleared first).
    ///
    /// Each `frames[i]` must hold exactly the bytes of one received datagram. Ranges in the
    /// verdicts index into that same buffer.
    pub fn process_batch<B, R>(&mut self, frames: &mut [B], replay: &R, out: &mut Vec<Verdict>)
    where
        B: AsMut<[u8]>,
        R: ReplayGuard + ?Sized,
    {
        if self.slots.len() < frames.len() {
            self.slots.resize_with(frames.len(), Slot::default);
        }
        let keys = Arc::clone(&self.keys);
        self.shared_secrets(frames, &keys);
        self.verify_header_macs(frames, &keys);
        self.check_replay_and_route(frames, replay);
        self.blind_alphas(frames);
        self.decrypt_payloads(frames);
        self.verdicts(frames, out);
    }

    /// Checks every frame header, picks the key it names and computes the shared secrets
    /// (one X25519 batch). Every frame is `Parsed` or `Dropped` afterwards.
    fn shared_secrets<B: AsMut<[u8]>>(&mut self, frames: &mut [B], keys: &NodeKeys) {
        self.dh.clear();
        self.dh.reserve(frames.len());
        self.retry.reserve(frames.len());
        for (i, frame) in frames.iter_mut().enumerate() {
            let frame = frame.as_mut();
            let s = &mut self.slots[i];
            s.progress = match FrameHeader::parse(frame) {
                Err(r) => Progress::Dropped(r),
                Ok(header) => match keys.first_choice(header.key_rotation) {
                    None => Progress::Dropped(DropReason::NoKeyForRotation),
                    Some(slot) => {
                        let key = keys.get(slot).expect("first_choice names a live key");
                        s.header = header;
                        s.key = slot;
                        s.rotation_id = key.rotation_id();
                        self.dh
                            .push(i, key.secret(), &alpha_of(frame, header.len()));
                        Progress::Parsed
                    }
                },
            };
        }
        self.dh.run(self.config.backend);
    }

    /// Expands each shared secret (HKDF) and verifies the header MAC, sixteen packets at a time
    /// where the multi-buffer SHA-256 pays. A frame whose MAC fails under its first key and
    /// that does not name its key gets a second try with the other one. Every `Parsed` frame is
    /// `Verified` or `Dropped` afterwards.
    fn verify_header_macs<B: AsMut<[u8]>>(&mut self, frames: &mut [B], keys: &NodeKeys) {
        self.retry.clear();
        let jobs = self.dh.index.len();
        let mut j0 = 0;
        while j0 < jobs {
            let chunk = (jobs - j0).min(16);
            let batched = kdf::batch::pays(chunk);
            if batched {
                self.hop_keys_x16(frames, j0..j0 + chunk);
            }
            for (lane, j) in (j0..j0 + chunk).enumerate() {
                let i = self.dh.index[j];
                let frame = frames[i].as_mut();
                let s = &mut self.slots[i];
                let checked = if batched {
                    check_batched_lane(&self.dh.out[j], frame, s, &self.hop_keys, lane)
                } else {
                    check_secret_and_mac(&self.dh.out[j], frame, s)
                };
                s.progress = match checked {
                    Ok(()) => Progress::Verified,
                    Err(DropReason::BadMac) => queue_second_key(keys, i, frame, s, &mut self.retry),
                    Err(r) => Progress::Dropped(r),
                };
            }
            j0 += chunk;
        }
        self.hop_keys.clear();
        self.verify_with_second_key(frames);
    }

    /// Runs the key schedule and header MAC of the jobs `jobs` (at most sixteen) together.
    fn hop_keys_x16<B: AsMut<[u8]>>(&mut self, frames: &mut [B], jobs: std::ops::Range<usize>) {
        self.hop_keys.clear();
        for j in jobs {
            let i = self.dh.index[j];
            let frame = frames[i].as_mut();
            let h = self.slots[i].header.len();
            self.hop_keys
                .push(&self.dh.out[j], &frame[h + BETA..h + BETA + BETA_LEN]);
        }
        self.hop_keys.run();
    }

    /// The second try of [`Self::verify_header_macs`]: the frames queued with their other key.
    fn verify_with_second_key<B: AsMut<[u8]>>(&mut self, frames: &mut [B]) {
        if self.retry.index.is_empty() {
            return;
        }
        self.retry.run(self.config.backend);
        for (j, &i) in self.retry.index.iter().enumerate() {
            let s = &mut self.slots[i];
            s.progress = match check_secret_and_mac(&self.retry.out[j], frames[i].as_mut(), s) {
                Ok(()) => Progress::Verified,
                Err(r) => Progress::Dropped(r),
            };
        }
        self.retry.clear();
    }

    /// Records each verified frame's replay tag (dropping replays), decrypts its routing
    /// information and queues the blinding X25519 of each forward hop. Every `Verified` frame
    /// is `Routed` or `Dropped` afterwards.
    fn check_replay_and_route<B, R>(&mut self, frames: &mut [B], replay: &R)
    where
        B: AsMut<[u8]>,
        R: ReplayGuard + ?Sized,
    {
        self.dh.clear();
        self.dh.reserve(frames.len());
        for (i, frame) in frames.iter_mut().enumerate() {
            let s = &mut self.slots[i];
            if !matches!(s.progress, Progress::Verified) {
                continue;
            }
            if replay.check_and_set(s.rotation_id, s.secret.replay_tag()) {
                s.progress = Progress::Dropped(DropReason::Replayed);
                continue;
            }
            let frame = frame.as_mut();
            s.progress = match unwrap_routing(frame, s, &mut self.routing, &self.config) {
                Err(r) => Progress::Dropped(r),
                Ok(route) => {
                    if matches!(route, Route::Forward { .. }) {
                        let alpha = alpha_of(frame, s.header.len());
                        self.dh.push(i, s.secret.blinding_factor(), &alpha);
                    }
                    Progress::Routed(route)
                }
            };
        }
        self.routing.zeroize();
    }

    /// Replaces the alpha of every forward hop by its blinded value (one X25519 batch).
    fn blind_alphas<B: AsMut<[u8]>>(&mut self, frames: &mut [B]) {
        self.dh.run(self.config.backend);
        for (j, &i) in self.dh.index.iter().enumerate() {
            let frame = frames[i].as_mut();
            let h = self.slots[i].header.len();
            frame[h + ALPHA..h + ALPHA + 32].copy_from_slice(&self.dh.out[j]);
        }
        self.dh.clear();
    }

    /// Derives the payload keys of the routed frames and decrypts their payloads with Lioness,
    /// all at once (payloads of equal size go through the multi-buffer BLAKE2b in groups of
    /// eight with AVX-512, else four).
    fn decrypt_payloads<B: AsMut<[u8]>>(&mut self, frames: &mut [B]) {
        self.payload_keys.clear();
        reserve_wiped(&mut self.payload_keys, frames.len());
        self.survivors.clear();
        let mut payloads: Vec<&mut [u8]> = Vec::with_capacity(frames.len());
        for (i, frame) in frames.iter_mut().enumerate() {
            let s = &self.slots[i];
            if !matches!(s.progress, Progress::Routed(_)) {
                continue;
            }
            // copied in place (no stack temporary of the key); seeded keys are derived below
            self.payload_keys.push([0u8; PAYLOAD_KEY_LEN]);
            let k = self.payload_keys.len() - 1;
            if has_legacy_payload_key(s) {
                self.payload_keys[k].copy_from_slice(s.secret.legacy_payload_key());
            } else {
                self.seeded.push(k);
            }
            self.survivors.push(i);
            let at = s.header.len() + SPHINX_HEADER_LEN;
            payloads.push(&mut frame.as_mut()[at..]);
        }
        self.seeded_payload_keys();
        {
            let keys: Vec<&[u8; PAYLOAD_KEY_LEN]> = self.payload_keys.iter().collect();
            lioness::decrypt_batch(&keys, &mut payloads)
                .expect("every size class's payload is longer than 32 bytes");
        }
        drop(payloads);
        self.payload_keys.zeroize();
    }

    /// Derives the payload keys of versions 259 and 260 (listed in `seeded`) from their
    /// seeds, sixteen at a time where that pays.
    fn seeded_payload_keys(&mut self) {
        for chunk in self.seeded.chunks(16) {
            if kdf::batch::pays(chunk.len()) {
                let mut seeds = [&[0u8; 16]; 16];
                for (seed, &k) in seeds.iter_mut().zip(chunk) {
                    *seed = self.slots[self.survivors[k]].secret.payload_key_seed();
                }
                let mut derived = [[0u8; PAYLOAD_KEY_LEN]; 16];
                kdf::batch::payload_keys_x16(&seeds[..chunk.len()], &mut derived);
                for (&k, d) in chunk.iter().zip(&derived) {
                    self.payload_keys[k].copy_from_slice(d);
                }
                derived.zeroize();
            } else {
                for &k in chunk {
                    let seed = self.slots[self.survivors[k]].secret.payload_key_seed();
                    kdf::payload_key_from_seed(seed, &mut self.payload_keys[k]);
                }
            }
        }
        self.seeded.clear();
    }

    /// Writes one verdict per frame into `out` (cleared first) and wipes every frame's secrets.
    fn verdicts<B: AsMut<[u8]>>(&mut self, frames: &mut [B], out: &mut Vec<Verdict>) {
        out.clear();
        for (frame, s) in frames.iter_mut().zip(&mut self.slots) {
            out.push(match s.progress {
                Progress::Dropped(r) => Verdict::Drop(r),
                Progress::Routed(route) => verdict(frame.as_mut(), s, route),
                Progress::Parsed | Progress::Verified => {
                    unreachable!("the MAC and routing stages route or drop every frame")
                }
            });
            s.secret.zeroize();
        }
    }
}

/// After a header MAC failed under a frame's first key: queues the second try with the other
/// live key (when the frame does not name its key), else drops the frame.
fn queue_second_key(
    keys: &NodeKeys,
    i: usize,
    frame: &[u8],
    s: &mut Slot,
    retry: &mut DhJobs,
) -> Progress {
    match keys.fallback(s.header.key_rotation, s.key) {
        Some(next) => {
            let key = keys.get(next).expect("fallback names a live key");
            s.key = next;
            s.rotation_id = key.rotation_id();
            retry.push(i, key.secret(), &alpha_of(frame, s.header.len()));
            Progress::Parsed
        }
        None => Progress::Dropped(DropReason::BadMac),
    }
}

fn alpha_of(frame: &[u8], h: usize) -> [u8; 32] {
    frame[h + ALPHA..h + ALPHA + 32]
        .try_into()
        .expect("frame length checked")
}

/// [`check_secret_and_mac`] for a packet whose schedule ran in lane `lane` of `hop_keys`.
fn check_batched_lane(
    shared: &[u8; 32],
    frame: &[u8],
    s: &mut Slot,
    hop_keys: &kdf::batch::HopKeysX16,
    lane: usize,
) -> Result<(), DropReason> {
    if bool::from(shared.ct_eq(&[0u8; 32])) {
        return Err(DropReason::ZeroSharedSecret);
    }
    hop_keys.expanded_into(lane, &mut s.secret);
    let h = s.header.len();
    let gamma = &frame[h + GAMMA..h + BETA];
    if bool::from(hop_keys.mac(lane).ct_eq(gamma)) {
        Ok(())
    } else {
        Err(DropReason::BadMac)
    }
}

/// Rejects a zero shared secret, expands it and verifies the header MAC.
fn check_secret_and_mac(shared: &[u8; 32], frame: &[u8], s: &mut Slot) -> Result<(), DropReason> {
    if bool::from(shared.ct_eq(&[0u8; 32])) {
        return Err(DropReason::ZeroSharedSecret);
    }
    s.secret.expand_into(shared);
    let h = s.header.len();
    let gamma = &frame[h + GAMMA..h + BETA];
    let beta = &frame[h + BETA..h + BETA + BETA_LEN];
    let mac = kdf::header_mac(s.secret.mac_key(), beta);
    if bool::from(mac.ct_eq(gamma)) {
        Ok(())
    } else {
        Err(DropReason::BadMac)
    }
}

/// Decrypts the routing information, parses this hop's slot (recording its Sphinx version in
/// `s`) and, for a forward hop, rewrites gamma and beta in place for the next hop.
fn unwrap_routing(
    frame: &mut [u8],
    s: &mut Slot,
    stream: &mut [u8; ROUTING_STREAM_LEN],
    config: &ProcessorConfig,
) -> Result<Route, DropReason> {
    let h = s.header.len();
    // stream = keystream XOR (beta || 0^60)
    stream[..BETA_LEN].copy_from_slice(&frame[h + BETA..h + BETA + BETA_LEN]);
    stream[BETA_LEN..].fill(0);
    kdf::apply_routing_stream(s.secret.stream_key(), stream);

    let flag = stream[0];
    if stream[1] != 0 {
        return Err(DropReason::UnknownSphinxVersion);
    }
    let version = u16::from_be_bytes([stream[2], stream[3]]);
    s.version = version;
    match flag {
        FLAG_FORWARD | FLAG_FINAL if !KNOWN_SPHINX_VERSIONS.contains(&version) => {
            Err(DropReason::UnknownSphinxVersion)
        }
        FLAG_FORWARD => {
            let next_hop = address::parse(&stream[4..36]).map_err(|_| DropReason::BadNextHop)?;
            let asked_ns = u64::from_be_bytes(stream[36..44].try_into().expect("8 bytes"));
            let delay_clamped = asked_ns > config.max_delay_ns;
            if delay_clamped && config.over_cap == OverCap::Drop {
                return Err(DropReason::DelayTooLong);
            }
            let delay_ns = asked_ns.min(config.max_delay_ns);
            // next gamma = slot[44..60]; next beta = stream[60..360]
            frame[h + GAMMA..h + BETA].copy_from_slice(&stream[44..SLOT_LEN]);
            frame[h + BETA..h + BETA + BETA_LEN].copy_from_slice(&stream[SLOT_LEN..]);
            Ok(Route::Forward {
                next_hop,
                delay_ns,
                delay_clamped,
            })
        }
        FLAG_FINAL => Ok(Route::Final {
            destination: stream[4..36].try_into().expect("32 bytes"),
            identifier: stream[36..52].try_into().expect("16 bytes"),
        }),
        _ => Err(DropReason::UnknownRoutingFlag),
    }
}

/// Whether this hop's payload (Lioness) key is the legacy 192 bytes of the expansion (versions
/// 1, 257 and 258); later versions derive it from the 16-byte seed.
fn has_legacy_payload_key(s: &Slot) -> bool {
    matches!(s.version, 1 | 257 | 258)
}

/// Builds the verdict of a packet routed by `route` whose payload has been decrypted.
fn verdict(frame: &mut [u8], s: &Slot, route: Route) -> Verdict {
    let h = s.header.len();
    let payload_at = h + SPHINX_HEADER_LEN;
    let accepted = Accepted {
        header: s.header,
        key_slot: s.key,
        rotation_id: s.rotation_id,
        replay_tag: *s.secret.replay_tag(),
    };
    match route {
        Route::Forward {
            next_hop,
            delay_ns,
            delay_clamped,
        } => Verdict::Forward(Forward {
            next_hop,
            delay_ns,
            delay_clamped,
            frame: 0..frame.len(),
            sphinx_version: s.version,
            accepted,
        }),
        Route::Final {
            destination,
            identifier,
        } => {
            let (message, surb_ack, sealed) = match final_hop(frame, payload_at, s.header) {
                Ok((message, surb_ack)) => (message, surb_ack, false),
                Err(DropReason::BadPadding) if s.version == SINGLE_SEED_SURB_VERSION => {
                    (payload_at..frame.len(), None, true)
                }
                Err(r) => return Verdict::Drop(r),
            };
            Verdict::Deliver(Deliver {
                destination,
                identifier,
                message,
                payload: payload_at..frame.len(),
                sealed,
                surb_ack,
                sphinx_version: s.version,
                accepted,
            })
        }
    }
}

/// What [`final_hop`] recovers: the message within the frame and the SURB-ACK, if any.
type FinalHop = (std::ops::Range<usize>, Option<SurbAck>);

/// Recovers the plaintext of a final-hop payload (Nym: 16 zero bytes, plaintext, `0x01`, zeros)
/// and splits off the SURB-ACK, framing it in place.
fn final_hop(
    frame: &mut [u8],
    payload_at: usize,
    header: FrameHeader,
) -> Result<FinalHop, DropReason> {
    let payload = &frame[payload_at..];
    if payload[..PAYLOAD_ZERO_PREFIX].iter().any(|&b| b != 0) {
        return Err(DropReason::BadPadding);
    }
    let body = &payload[PAYLOAD_ZERO_PREFIX..];
    let end = body
        .iter()
        .rposition(|&b| b == 1)
        .ok_or(DropReason::BadPadding)?;
    let start = payload_at + PAYLOAD_ZERO_PREFIX;
    if header.size_class == SizeClass::Ack {
        return Ok((start..start + end, None));
    }
    if end < SURB_ACK_LEN {
        return Err(DropReason::NoSurbAck);
    }
    let next_hop = address::parse(&frame[start..start + address::MAX_UNPADDED_LEN])
        .map_err(|_| DropReason::BadSurbAck)?;
    // The ack packet follows the 19-byte address; its frame header overwrites the address tail.
    let ack_header = FrameHeader {
        size_class: SizeClass::Ack,
        ..header
    };
    let packet_at = start + address::MAX_UNPADDED_LEN;
    let frame_at = packet_at - ack_header.len();
    ack_header.write(&mut frame[frame_at..packet_at]);
    Ok((
        start + SURB_ACK_LEN..start + end,
        Some(SurbAck {
            next_hop,
            frame: frame_at..packet_at + SizeClass::Ack.packet_len(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_holding_secrets_never_grows_while_full() {
        // a push that reallocates would leave the scalars in the freed buffer: once reserved,
        // a whole batch of pushes keeps the same buffers
        let mut dh = DhJobs::default();
        dh.push(0, &[1; 32], &[9; 32]);
        dh.clear();
        dh.reserve(64);
        let (scalars, out) = (dh.scalars.as_ptr(), dh.out.as_ptr());
        for i in 0..64 {
            dh.push(i, &[i as u8; 32], &[9; 32]);
        }
        dh.out.resize(64, [0; 32]);
        assert_eq!(dh.scalars.as_ptr(), scalars);
        assert_eq!(dh.out.as_ptr(), out);
        // growing keeps what was there
        let mut v: Vec<[u8; 4]> = vec![[1; 4], [2; 4]];
        reserve_wiped(&mut v, 100);
        assert!(v.capacity() >= 100);
        assert_eq!(v, [[1; 4], [2; 4]]);
    }
}
