//! Lock-free replay filter shared by all worker threads.
//!
//! A Bloom filter of `m` bits stored in `AtomicU64` words, keyed by the 32-byte Sphinx replay
//! tag. [`ReplayFilter::check_and_set`] reports whether a tag was (probably) seen before and
//! records it, from any number of threads at once (`&self`, `Send + Sync`, no locks).
//!
//! # Bit indices straight from the tag
//!
//! The replay tag is an HKDF-SHA256 output, indistinguishable from uniform random bits, so the
//! filter needs no hash function of its own: the `k` bit indices come from enhanced double
//! hashing (Kirsch & Mitzenmacher, "Less hashing, same performance") on two 64-bit words of the
//! tag, `g_i = h1 + i*h2 + (i^3 - i)/6` (mod 2^64), each mapped onto `[0, m)` with a
//! multiply-shift (`(g_i * m) >> 64`, no division, no power-of-two rounding of `m`). Double
//! hashing from two independent uniform words gives the standard Bloom false-positive rate
//! asymptotically. A packet's creator knows its own tags and could grind them, but that buys
//! nothing: the false-positive probability of someone else's (unknown, uniform) tag depends only
//! on how many bits are set, and grinding cannot set more than `k` bits per packet, which
//! random tags already (nearly) do. Flooding is bounded by sizing, as for any Bloom filter.
//!
//! # At most one "new" per tag, even under races
//!
//! Setting the `k` bits with one `fetch_or` each is not enough on its own: if two threads insert
//! the same tag concurrently, thread A can flip bit x while thread B flips bit y, and both would
//! see "a bit was clear, so the tag is new". No rule that looks only at which bits a thread
//! flipped can avoid this (the same flip pattern also occurs without a race when the other bits
//! were set by other tags). So `check_and_set` adds a tiny in-flight table: 512 cache-line
//! buckets of 8 `AtomicU64` slots. A thread that has clear bits to set first *claims* a slot in
//! the tag's bucket by CAS-ing a 64-bit fingerprint of the tag into an empty slot, then sets its
//! bits, and if it flipped any bit it *scans* the bucket's other slots for the same
//! fingerprint: found means "seen"; then it releases the slot. All these operations are
//! `SeqCst`, so they lie in one total order S. Suppose A and B both flipped a bit of the same
//! tag: A flipped x, so B's later access to x (a load or `fetch_or` that found it set) follows
//! A's flip, which follows A's claim; likewise B's claim precedes A's access to y; and each
//! access precedes that thread's scan. Of the two scan loads "A reads B's slot" and "B reads
//! A's slot", take the earlier in S, say A's: B claimed before it, and B releases only after its
//! own scan load, which is later; so A reads B's fingerprint and returns "seen". Hence at most
//! one of them returns "new". The converse does not hold: when two inserts of one tag overlap
//! (both claimed before either scanned), both may return "seen", and both copies are dropped.
//! That only happens to a tag that really is being inserted twice at once, i.e. a replay racing
//! its original; an on-path attacker who can race a packet could as well drop it. A thread that finds its bucket full (more than 8 concurrent
//! inserts hashing to one bucket) returns "seen" after setting its bits: a rare false positive,
//! never a second "new". The bucket index is the fingerprint hashed with a per-filter random
//! salt, so remote senders cannot aim many packets at one bucket.
//!
//! `check_and_set` first *loads* the `k` words (plain loads overlap their cache misses) and
//! only claims and `fetch_or`s when some bit is clear, so replayed and false-positive tags take
//! no locked operation at all.
//!
//!
//! # Segments: a filter that never saturates
//!
//! A filter is a chain of up to 32 Bloom segments. [`ReplayFilter::check_and_set`] tests the
//! tag in every segment and sets it only in the newest; older segments only ever answer. The
//! first segment is sized for the configured count (expected rate x key lifetime); when the
//! newest one nears its design count, [`ReplayFilter::maintain`] (a periodic call of the
//! control plane, every second in the `mixplane` binary) appends a new one sized for the
//! measured insert rate x 1.12 (at least 200 per second, as nym-node does) x the key's
//! remaining lifetime (at least ten minutes). Nothing that was recorded is lost.
//!
//! The false-positive budget `p` is split geometrically: segment `i` is sized for `p / 2^(i+1)`
//! at its design count, so a fresh tag that is checked against all of them is a false positive
//! with probability at most `p/2 + p/4 + ... < p` however many segments there are. `maintain`
//! switches segments early, when the newest one's count plus twice what the measured rate adds
//! between two calls would reach its design count, so workers never push a segment past its
//! design count while the control plane keeps calling. If it stops calling, or all segments
//! are used, or the size limit forbids another one, the newest segment fills past its design
//! count and [`ReplayFilter::near_bound`] turns true (the control plane exports
//! [`ReplayFilter::bound_ratio`] and warns).
//!
//! Growth is the control plane's job rather than the worker's that crosses a threshold: making
//! a segment is a file allocation and an `mmap`, which must not stall a worker, and the
//! headroom that a once-a-second check needs costs a few seconds of inserts per segment.
//! Workers only load one atomic (the newest segment's index) per call and bump a striped
//! counter on each new tag.
//!
//! # Segments and the race argument
//!
//! A thread that has set bits in its newest segment then re-reads the newest index and
//! checks the tag in every *other* published segment (`SeqCst` loads), before it scans the
//! in-flight bucket. If two threads A and B insert one tag into different segments, either one
//! of them sees all the other's bits in that re-check (and answers "seen"), or each read one
//! of the other's bits before it was set, which puts each thread's claim before the other's
//! scan, and the argument above applies unchanged. If A's re-read of the index came before B's
//! segment was published, B read the index later, so B's re-check (after its own flips) sees
//! all of A's bits.
//!
//! # Crash safety: bits in memory, tags in a journal, snapshots
//!
//! With a directory configured, each key's filter has a file (see [`ReplayFilter::open`]) and
//! a journal next to it (`<file>.journal`, see `journal.rs`). The bits live in anonymous
//! memory; every insert that sets a bit also appends the tag's two hash words and its segment
//! (32 bytes) to the journal, a ring in a `mmap(MAP_SHARED)`ed file: that append is in the
//! kernel's page cache at once, so a killed process (`kill -9`, OOM, panic) loses nothing.
//! Opening reads the file's bits, replays the journal's entries into them, writes the result
//! back (a snapshot) and retires those entries. The filter's file is `flock`ed exclusively
//! while open, and its journal is only opened under that lock, so two processes never share
//! them.
//!
//! What a **power loss or kernel crash** can lose is bounded by the sync interval:
//! [`ReplayFilter::sync`] writes the journal's new pages (`msync(MS_SYNC)`); the `mixplane`
//! binary calls it every `replay.sync_interval_ms` (default 1 s) and on clean shutdown, so at
//! most the tags of the last interval (plus the sync's own duration) can be lost. When a
//! quarter of the journal is in use, the sync also takes a [`snapshot`](ReplayFilter::snapshot):
//! it writes every segment's bits to the file (`pwrite`, `fdatasync`), after which the
//! entries before it may be overwritten. So the disk sees 32 bytes per new tag plus the whole
//! filter once per quarter journal (with the default 4M-entry journal, 280 MB per million new
//! tags), instead of every page the workers wrote in each interval, which at high rates was
//! the whole filter every second; and the workers never fault on pages a sync wrote, which a
//! shared mapping of the bits made them do once per page per sync. Should the journal fill
//! between two syncs (a million tags in one interval), further tags are counted
//! ([`ReplayFilter::journal_overflows`]) and go to disk with the next sync's snapshot; only a
//! kill before that could lose them.
//!
//! The thread that makes, grows or opens a filter (the control plane) faults every page of
//! the bits in (`MADV_POPULATE_WRITE`, or by reading them), so a worker's first bit-set in a
//! page does not stop for the allocation. The journal's pages fault once each as they are
//! first written (one per 128 tags).
//!
//! Segment and journal space is reserved with `posix_fallocate` when they are made, so a
//! snapshot or an append cannot hit a full disk (an append would be a `SIGBUS`). Truncating or rewriting the file
//! while a node has it open is not supported (the `flock` is advisory). The bit words are in
//! host byte order; header fields are little-endian.
//!
//! # File format
//!
//! Version 2: a 64 KiB header (magic `MXPLRPLY`, format version, key rotation id, target
//! false-positive rate, key creation time and lifetime, checksum, segment count, and per
//! segment its offset, `m`, `k`, design count and checksum), then the segments, each aligned
//! to 64 KiB. On open every field is checked: another key id, a truncated or extended file,
//! bad checksums or dimensions are refused with an error, never reused. A file of version 1
//! (the snapshot that earlier builds wrote on clean shutdown) is converted in place: its bits
//! become the first segment.

use std::fs::{self, File};
use std::hash::BuildHasher;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod file;
mod journal;
mod mapping;

use file::{ALIGN, MAX_SEGMENTS, Meta, SegmentDesc};
use journal::Journal;
use mapping::Mapping;

/// Default capacity of a file-backed filter's journal, in tags (128 MiB on disk).
pub const DEFAULT_JOURNAL_ENTRIES: u64 = 1 << 22;

/// Default limit on the filter's size in bytes, all segments together (16 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;
/// Largest number of bit indices per tag (a false-positive rate of about 1e-19).
pub const MAX_K: u32 = 64;
/// Above this [`ReplayFilter::bound_ratio`] a filter that cannot grow is [near its
/// bound](ReplayFilter::near_bound).
pub const NEAR_BOUND_RATIO: f64 = 0.9;

const INFLIGHT_BUCKETS: usize = 512;
const INFLIGHT_SLOTS: usize = 8;
const INFLIGHT_SHIFT: u32 = 64 - INFLIGHT_BUCKETS.trailing_zeros();
const COUNTER_STRIPES: usize = 16;
/// Bytes copied per read or write when loading or snapshotting bits.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// A new segment is sized for at least this much of the remaining lifetime.
const MIN_SEGMENT_SECS: f64 = 600.0;

/// Errors from sizing, opening, growing and syncing a [`ReplayFilter`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// `expected_items` was zero.
    #[error("expected_items must be greater than zero")]
    ZeroItems,
    /// The false-positive rate was not in (0, 1), or so small that it needs more than
    /// [`MAX_K`] bits per tag.
    #[error("false-positive rate must be in (0, 1) and need at most {MAX_K} bits per tag, got {0}")]
    BadFalsePositiveRate(f64),
    /// The filter would exceed the size limit.
    #[error("replay filter would need {needed} bytes, above the limit of {limit} bytes")]
    TooLarge {
        /// Bytes the filter needs.
        needed: u64,
        /// The limit in force.
        limit: u64,
    },
    /// Reading, writing, mapping or syncing the file (or an anonymous mapping) failed.
    #[error("replay filter file {}: {source}", .path.display())]
    Io {
        /// The file (empty for an in-memory filter).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another filter in this one) has the file open.
    #[error("{}: replay filter file is in use by another process", .path.display())]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// The file does not start with the replay-filter magic bytes.
    #[error("{} is not a replay-filter file (bad magic)", .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file has a format version this build does not read.
    #[error("{}: unsupported replay-filter format version {found}", .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// The file was made for another key.
    #[error("{}: replay filter belongs to key {found:#018x}, expected {expected:#018x}", .path.display())]
    KeyMismatch {
        /// The file.
        path: PathBuf,
        /// The key id the caller asked for.
        expected: u64,
        /// The key id in the file.
        found: u64,
    },
    /// A header field is out of range or fails its checksum.
    #[error("{}: corrupt replay-filter header: {what}", .path.display())]
    CorruptHeader {
        /// The file.
        path: PathBuf,
        /// Which field.
        what: &'static str,
    },
    /// The file is shorter or longer than its header says (e.g. truncated).
    #[error("{}: replay-filter file is {actual} bytes, its header implies {expected}", .path.display())]
    LengthMismatch {
        /// The file.
        path: PathBuf,
        /// Length implied by the header.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// A format-1 file's contents do not match its checksum.
    #[error("{}: replay-filter checksum mismatch (corrupt file)", .path.display())]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
    },
}

/// How a filter is sized and grown.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayParams {
    /// Design count of the first segment: the configured rate x key lifetime.
    pub initial_items: u64,
    /// Target false-positive rate of the whole filter, all segments together.
    pub false_positive_rate: f64,
    /// How long the key (and its filter) lives; later segments are sized for what remains.
    pub key_lifetime: Duration,
    /// Lowest insert rate (per second) a new segment is sized for. Default 200.
    pub min_rate: f64,
    /// Factor on the measured insert rate when sizing a new segment. Default 1.12.
    pub rate_margin: f64,
    /// Limit on the bytes of all segments together. Default [`DEFAULT_MAX_BYTES`].
    pub max_bytes: u64,
    /// Tags the journal of a file-backed filter holds (32 bytes each on disk); a snapshot
    /// of the bits is taken at each sync once a quarter of it is used. Default
    /// [`DEFAULT_JOURNAL_ENTRIES`].
    pub journal_entries: u64,
}

impl Default for ReplayParams {
    /// Nym's figures: 2000 packets/s x 25 h at 1e-5.
    fn default() -> Self {
        ReplayParams {
            initial_items: 2000 * 25 * 3600,
            false_positive_rate: 1e-5,
            key_lifetime: Duration::from_secs(25 * 3600),
            min_rate: 200.0,
            rate_margin: 1.12,
            max_bytes: DEFAULT_MAX_BYTES,
            journal_entries: DEFAULT_JOURNAL_ENTRIES,
        }
    }
}

/// Eight in-flight slots on one cache line.
#[repr(align(64))]
#[derive(Default)]
struct InflightBucket([AtomicU64; INFLIGHT_SLOTS]);

/// One counter on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Stripe(AtomicU64);

/// One Bloom segment: its bits, dimensions, design count and where its count starts.
struct Segment {
    map: Mapping,
    /// Where it lies in the file (laid out the same way for in-memory filters).
    desc: SegmentDesc,
    /// Value of the filter's insert counter when this segment became the newest.
    start: u64,
}

impl Segment {
    fn words(&self) -> &[AtomicU64] {
        &self.map.words()[..(self.desc.m_bits / 64) as usize]
    }

    /// Calls `f(word_index, bit_mask)` for the tag's `k` bits: enhanced double hashing,
    /// `g_0 = h1, d_0 = h2, g_{i+1} = g_i + d_i, d_{i+1} = d_i + i + 1`.
    #[inline]
    fn for_each_bit(&self, h1: u64, h2: u64, f: impl FnMut(usize, u64)) {
        bit_positions(&self.desc, h1, h2, f);
    }

    #[inline]
    fn contains(&self, h1: u64, h2: u64, order: Ordering) -> bool {
        let words = self.words();
        let mut all = true;
        self.for_each_bit(h1, h2, |w, mask| {
            all &= words[w].load(order) & mask != 0;
        });
        all
    }

    fn bits_set(&self) -> u64 {
        self.words()
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// `-(m / k) ln(1 - X / m)` for `X` set bits (Swamidass & Baldi).
    fn len_estimate(&self) -> u64 {
        let m = self.desc.m_bits as f64;
        let x = self.bits_set() as f64;
        if x >= m {
            return u64::MAX;
        }
        (-(m / f64::from(self.desc.k)) * (1.0 - x / m).ln()).round() as u64
    }
}

/// Calls `f(word_index, bit_mask)` for the `k` bits of `(h1, h2)` in a segment shaped `desc`.
#[inline]
fn bit_positions(desc: &SegmentDesc, h1: u64, h2: u64, mut f: impl FnMut(usize, u64)) {
    let (mut g, mut d) = (h1, h2);
    for i in 0..u64::from(desc.k) {
        let bit = reduce(g, desc.m_bits);
        f((bit >> 6) as usize, 1u64 << (bit & 63));
        g = g.wrapping_add(d);
        d = d.wrapping_add(i + 1);
    }
}

/// Reads segment `desc`'s bits from `file` into `map`.
fn load_bits(file: &File, desc: &SegmentDesc, map: &Mapping) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; SNAPSHOT_CHUNK];
    let words = &map.words()[..(desc.m_bits / 64) as usize];
    for (i, chunk) in words.chunks(SNAPSHOT_CHUNK / 8).enumerate() {
        let bytes = &mut buf[..chunk.len() * 8];
        file.read_exact_at(bytes, desc.offset + (i * SNAPSHOT_CHUNK) as u64)?;
        for (w, c) in chunk.iter().zip(bytes.chunks_exact(8)) {
            w.store(
                u64::from_ne_bytes(c.try_into().expect("8 bytes")),
                Ordering::Relaxed,
            );
        }
    }
    Ok(())
}

/// The three 64-bit values a tag provides: two index hashes and the in-flight fingerprint.
#[inline]
fn split_tag(tag: &[u8; 32]) -> (u64, u64, u64) {
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&tag[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    // Fingerprint 0 marks an empty in-flight slot.
    let fp = (word(2) ^ word(3).rotate_left(32)).max(1);
    (word(0), word(1), fp)
}

/// Maps a uniform `u64` onto `[0, m)` (Lemire's multiply-shift).
#[inline]
fn reduce(g: u64, m_bits: u64) -> u64 {
    ((u128::from(g) * u128::from(m_bits)) >> 64) as u64
}

/// The false-positive budget of segment `i`: `p / 2^(i+1)`.
fn segment_budget(p: f64, i: usize) -> f64 {
    p / 2f64.powi(i as i32 + 1)
}

/// Items a filter of `m` bits and `k` hashes holds at false-positive rate `p`:
/// `-(m / k) ln(1 - p^(1/k))`, at least 1.
pub fn capacity(m_bits: u64, k: u32, p: f64) -> u64 {
    let per = -(1.0 - p.powf(1.0 / f64::from(k))).ln() / f64::from(k);
    ((m_bits as f64 * per).floor() as u64).max(1)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The file behind a persistent filter, locked while open.
struct Backing {
    path: PathBuf,
    file: File,
    header: Mapping,
    journal: Journal,
}

/// The control plane's side of growth: the last rate sample and what went wrong.
#[derive(Default)]
struct GrowState {
    last: Option<(SystemTime, u64)>,
    rate: f64,
    window: Duration,
    stuck: bool,
}

/// A lock-free Bloom filter of replay tags made of growing segments; see the [module
/// documentation](self).
pub struct ReplayFilter {
    segments: Box<[OnceLock<Segment>]>,
    newest: AtomicUsize,
    inflight: Box<[InflightBucket]>,
    inserted: Box<[Stripe]>,
    salt_xor: u64,
    salt_mul: u64,
    params: ReplayParams,
    meta: Meta,
    backing: Option<Backing>,
    grow: Mutex<GrowState>,
}

impl ReplayFilter {
    /// An in-memory filter whose first segment holds `expected_items` tags; the whole filter
    /// stays within `false_positive_rate` as it grows. Other parameters are the defaults of
    /// [`ReplayParams`].
    pub fn new(expected_items: u64, false_positive_rate: f64) -> Result<Self, ReplayError> {
        Self::with_max_bytes(expected_items, false_positive_rate, DEFAULT_MAX_BYTES)
    }

    /// [`new`](Self::new) with an explicit size limit in bytes (all segments together).
    pub fn with_max_bytes(
        expected_items: u64,
        false_positive_rate: f64,
        max_bytes: u64,
    ) -> Result<Self, ReplayError> {
        Self::in_memory(&ReplayParams {
            initial_items: expected_items,
            false_positive_rate,
            max_bytes,
            ..ReplayParams::default()
        })
    }

    /// An in-memory (anonymously mapped) filter; lost when the process exits.
    pub fn in_memory(params: &ReplayParams) -> Result<Self, ReplayError> {
        let meta = Self::meta_for(0, params)?;
        let f = Self::empty(params, meta, None);
        let (m_bits, k) = f.first_dimensions()?;
        let design = capacity(m_bits, k, segment_budget(params.false_positive_rate, 0));
        f.add_segment(0, m_bits, k, design)?;
        Ok(f)
    }

    /// `(m_bits, k)` for `n` items at rate `p`, without allocating: `m = ceil(-n ln p /
    /// (ln 2)^2)` rounded up to a multiple of 64, `k = round(m / n * ln 2)` (at least 1).
    pub fn dimensions(
        expected_items: u64,
        false_positive_rate: f64,
    ) -> Result<(u64, u32), ReplayError> {
        let p = false_positive_rate;
        if expected_items == 0 {
            return Err(ReplayError::ZeroItems);
        }
        if !(p > 0.0 && p < 1.0) {
            return Err(ReplayError::BadFalsePositiveRate(p));
        }
        let ln2 = std::f64::consts::LN_2;
        let n = expected_items as f64;
        let m = (-n * p.ln() / (ln2 * ln2)).ceil();
        // Anything this large is rejected by any sane byte limit; avoid u64 overflow below.
        if m >= (1u64 << 62) as f64 {
            return Err(ReplayError::TooLarge {
                needed: u64::MAX,
                limit: DEFAULT_MAX_BYTES,
            });
        }
        let m_bits = (m as u64).max(64).div_ceil(64) * 64;
        let k = ((m_bits as f64 / n) * ln2).round().max(1.0);
        if k > f64::from(MAX_K) {
            return Err(ReplayError::BadFalsePositiveRate(p));
        }
        Ok((m_bits, k as u32))
    }

    fn meta_for(key_id: u64, params: &ReplayParams) -> Result<Meta, ReplayError> {
        let p = params.false_positive_rate;
        if !(p > 0.0 && p < 1.0) {
            return Err(ReplayError::BadFalsePositiveRate(p));
        }
        Ok(Meta {
            key_id,
            fp_rate: p,
            created_unix: unix_secs(SystemTime::now()),
            lifetime_secs: params.key_lifetime.as_secs(),
        })
    }

    fn first_dimensions(&self) -> Result<(u64, u32), ReplayError> {
        let (m_bits, k) = Self::dimensions(
            self.params.initial_items,
            segment_budget(self.params.false_positive_rate, 0),
        )?;
        if m_bits / 8 > self.params.max_bytes {
            return Err(ReplayError::TooLarge {
                needed: m_bits / 8,
                limit: self.params.max_bytes,
            });
        }
        Ok((m_bits, k))
    }

    fn empty(params: &ReplayParams, meta: Meta, backing: Option<Backing>) -> Self {
        let rs = std::collections::hash_map::RandomState::new();
        ReplayFilter {
            segments: (0..MAX_SEGMENTS).map(|_| OnceLock::new()).collect(),
            newest: AtomicUsize::new(0),
            inflight: (0..INFLIGHT_BUCKETS)
                .map(|_| InflightBucket::default())
                .collect(),
            inserted: (0..COUNTER_STRIPES).map(|_| Stripe::default()).collect(),
            salt_xor: rs.hash_one(0x5eed_u64),
            salt_mul: rs.hash_one(0xfeed_u64) | 1,
            params: params.clone(),
            meta,
            backing,
            grow: Mutex::new(GrowState::default()),
        }
    }

    fn path(&self) -> PathBuf {
        self.backing
            .as_ref()
            .map_or_else(PathBuf::new, |b| b.path.clone())
    }

    fn io_err(&self) -> impl Fn(io::Error) -> ReplayError + '_ {
        move |source| ReplayError::Io {
            path: self.path(),
            source,
        }
    }

    fn published(&self) -> impl Iterator<Item = &Segment> {
        let newest = self.newest.load(Ordering::Acquire);
        self.segments[..=newest].iter().filter_map(OnceLock::get)
    }

    /// Makes segment `index` (the next one), records it in the file's header, and makes it
    /// the newest. Only called with `index` = number of segments, by one thread at a time.
    fn add_segment(
        &self,
        index: usize,
        m_bits: u64,
        k: u32,
        design: u64,
    ) -> Result<&Segment, ReplayError> {
        let offset = match index.checked_sub(1) {
            None => ALIGN,
            Some(prev) => self.segments[prev].get().map_or(ALIGN, |s| s.desc.end()),
        };
        let desc = SegmentDesc {
            offset,
            m_bits,
            k,
            design,
        };
        let map = match &self.backing {
            None => Mapping::anonymous((m_bits / 8) as usize),
            Some(b) => b.map_new_segment(index, &desc),
        }
        .map_err(self.io_err())?;
        let seg = Segment {
            map,
            desc,
            start: self.inserted(),
        };
        let _ = self.segments[index].set(seg);
        self.newest.store(index, Ordering::SeqCst);
        Ok(self.segments[index].get().expect("just set"))
    }
}

impl Backing {
    /// Writes segment `index`'s table entry, extends the file for it (blocks reserved), makes
    /// its bits (anonymous memory: the file gets them from snapshots), then counts it in the
    /// header. A crash between the steps leaves either the old file
    /// or one whose extra length matches the entry, which [`file::decode`] accepts.
    fn map_new_segment(&self, index: usize, desc: &SegmentDesc) -> io::Result<Mapping> {
        let (at, entry) = file::encode_entry(index, desc);
        let words = self.header.words();
        for (w, v) in words[at..].iter().zip(entry) {
            w.store(v.to_le(), Ordering::SeqCst);
        }
        let len = desc.file_len();
        let (off, n) = (
            libc::off_t::try_from(desc.offset).map_err(io::Error::other)?,
            libc::off_t::try_from(len).map_err(io::Error::other)?,
        );
        // Reserve the blocks now: a full disk later would be a SIGBUS on a bit-set.
        // SAFETY: a plain syscall on our own open file descriptor.
        let r = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), off, n) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let map = Mapping::anonymous(len as usize)?;
        words[file::W_COUNT].store((index as u64 + 1).to_le(), Ordering::SeqCst);
        Ok(map)
    }

    /// Faults a segment's pages in writable ([`Mapping::populate_write`]) on this thread,
    /// which makes or maps back the filter (the control plane), so that the workers' first
    /// bit-sets in it do not each stop for a page fault. Failing only costs those faults.
    fn populate(&self, map: &Mapping) {
        match map.populate_write() {
            Ok(true) => {}
            Ok(false) => tracing::debug!(
                path = %self.path.display(),
                "MADV_POPULATE_WRITE not supported: the first write to each page faults"
            ),
            Err(e) => tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "could not fault the replay filter's pages in; the first write to each faults"
            ),
        }
    }
}

/// Opening and creating filter files.
impl ReplayFilter {
    /// The filter for key `key_id` in the file at `path`: mapped back with every bit it held
    /// (also after a crash) when the file exists, else created (in a temporary file renamed
    /// into place, so a crash during creation leaves no half-made file). A file for another
    /// key, of the wrong length, with a bad header, or open in another process is refused. A
    /// format-1 file is converted (its bits become the first segment).
    pub fn open(
        path: impl AsRef<Path>,
        key_id: u64,
        params: &ReplayParams,
    ) -> Result<Self, ReplayError> {
        let path = path.as_ref();
        let io_err = |source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        };
        match fs::OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => {
                lock(path, &file)?;
                if is_v1(&file).map_err(io_err)? {
                    let (m_bits, k, words) = file::read_v1(path, &file, key_id, params.max_bytes)?;
                    // The bits go into the new file before it replaces the old one.
                    let f = Self::create(path, key_id, params, Some((m_bits, k, &words)))?;
                    tracing::info!(path = %path.display(), "replay filter converted from format 1");
                    return Ok(f);
                }
                Self::map_existing(path, file, key_id, params)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Self::create(path, key_id, params, None)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    fn map_existing(
        path: &Path,
        mut file: File,
        key_id: u64,
        params: &ReplayParams,
    ) -> Result<Self, ReplayError> {
        use std::io::Read;
        let io_err = |source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = file.metadata().map_err(io_err)?.len();
        let mut bytes = vec![0u8; file::HEADER_WORDS * 8];
        let head = usize::try_from(len.min(bytes.len() as u64)).expect("small");
        file.read_exact(&mut bytes[..head]).map_err(io_err)?;
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if len < 16 || (words[0] == u64::from_le_bytes(file::MAGIC) && len < ALIGN) {
            return Err(ReplayError::LengthMismatch {
                path: path.to_path_buf(),
                expected: ALIGN,
                actual: len,
            });
        }
        let (meta, descs) = file::decode(path, &words, len, key_id, params.max_bytes)?;
        let header = Mapping::shared(&file, 0, ALIGN as usize).map_err(io_err)?;
        header.words()[file::W_COUNT].store((descs.len() as u64).to_le(), Ordering::SeqCst);
        let params = ReplayParams {
            false_positive_rate: meta.fp_rate,
            key_lifetime: Duration::from_secs(meta.lifetime_secs),
            ..params.clone()
        };
        // The bits of the last snapshot, in memory (which faults every page in)...
        let mut maps = Vec::with_capacity(descs.len());
        for desc in &descs {
            let map = Mapping::anonymous(desc.file_len() as usize).map_err(io_err)?;
            load_bits(&file, desc, &map).map_err(io_err)?;
            maps.push(map);
        }
        // ... plus every tag the journal recorded since.
        let jpath = journal::path_for(path);
        let mut replayed = 0u64;
        let journal = match Journal::open(&jpath, key_id)? {
            Some(j) => {
                j.for_each(|seg, h1, h2| {
                    let i = seg.min(maps.len() - 1);
                    let words = maps[i].words();
                    bit_positions(&descs[i], h1, h2, |w, mask| {
                        words[w].fetch_or(mask, Ordering::Relaxed);
                    });
                    replayed += 1;
                });
                j
            }
            None => Journal::create(&jpath, key_id, params.journal_entries).map_err(|source| {
                ReplayError::Io {
                    path: jpath.clone(),
                    source,
                }
            })?,
        };
        let backing = Backing {
            path: path.to_path_buf(),
            file,
            header,
            journal,
        };
        let mut f = Self::empty(&params, meta, Some(backing));
        for (i, (desc, map)) in descs.into_iter().zip(maps).enumerate() {
            let seg = Segment {
                map,
                desc,
                start: f.inserted(),
            };
            // The count is not stored: estimate it from the bits.
            let n = seg.len_estimate().min(u64::MAX / 4);
            f.inserted[0].0.fetch_add(n, Ordering::Relaxed);
            let _ = f.segments[i].set(seg);
            f.newest.store(i, Ordering::SeqCst);
        }
        if replayed > 0 {
            // Put the replayed tags into the file, then retire the journal's entries.
            f.snapshot()?;
            let b = f.backing.as_mut().expect("just set");
            b.journal.next_epoch().map_err(|source| ReplayError::Io {
                path: b.journal.path().to_path_buf(),
                source,
            })?;
        }
        tracing::info!(path = %path.display(), segments = f.segments(), items = f.inserted(), journal_tags = replayed, "replay filter mapped back");
        Ok(f)
    }

    /// A new file at `path` with one segment, `first` dimensions or the params' first ones.
    fn create(
        path: &Path,
        key_id: u64,
        params: &ReplayParams,
        first: Option<(u64, u32, &[u64])>,
    ) -> Result<Self, ReplayError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(
            ".{}.tmp-{}-{}",
            name.unwrap_or_default(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = Self::create_at(&tmp, path, key_id, params, first);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn create_at(
        tmp: &Path,
        path: &Path,
        key_id: u64,
        params: &ReplayParams,
        first: Option<(u64, u32, &[u64])>,
    ) -> Result<Self, ReplayError> {
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ReplayError::Io { path: p, source }
        };
        let meta = Self::meta_for(key_id, params)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(io_err(tmp))?;
        lock(tmp, &file)?;
        file.set_len(ALIGN).map_err(io_err(tmp))?;
        let header = Mapping::shared(&file, 0, ALIGN as usize).map_err(io_err(tmp))?;
        for (w, v) in header.words().iter().zip(file::encode_meta(&meta)) {
            w.store(v.to_le(), Ordering::Relaxed);
        }
        let jpath = journal::path_for(path);
        let journal =
            Journal::create(&jpath, key_id, params.journal_entries).map_err(io_err(&jpath))?;
        let backing = Backing {
            path: tmp.to_path_buf(),
            file,
            header,
            journal,
        };
        let mut f = Self::empty(params, meta, Some(backing));
        let (m_bits, k) = match first {
            Some((m, k, _)) => (m, k),
            None => f.first_dimensions()?,
        };
        let design = capacity(m_bits, k, segment_budget(params.false_positive_rate, 0));
        let seg = f.add_segment(0, m_bits, k, design)?;
        if let Some((_, _, bits)) = first {
            for (w, &v) in seg.words().iter().zip(bits) {
                w.store(v, Ordering::Relaxed);
            }
            f.snapshot()?;
        }
        f.sync()?;
        if let (Some(b), Some(seg)) = (&f.backing, f.segments[0].get()) {
            b.populate(&seg.map);
        }
        fs::rename(tmp, path).map_err(io_err(path))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        if let Some(b) = f.backing.as_mut() {
            b.path = path.to_path_buf();
        }
        tracing::info!(path = %path.display(), bytes = f.size_bytes(), "replay filter created");
        Ok(f)
    }

    /// Makes every tag recorded before the call durable: writes the journal's new entries
    /// and the header to disk and waits; once a quarter of the journal is in use (or it
    /// overflowed), also takes a [`snapshot`](Self::snapshot). After it returns, a power
    /// loss cannot lose the tags recorded before the call. A no-op for in-memory filters.
    pub fn sync(&self) -> Result<(), ReplayError> {
        let Some(b) = &self.backing else {
            return Ok(());
        };
        let jerr = |source| ReplayError::Io {
            path: b.journal.path().to_path_buf(),
            source,
        };
        b.journal.sync().map_err(jerr)?;
        b.header.sync().map_err(self.io_err())?;
        if b.journal.needs_snapshot() {
            self.snapshot()?;
        }
        Ok(())
    }

    /// Writes every segment's bits to the filter's file and waits (`fdatasync`), after
    /// which the journal's entries so far may be overwritten. Takes a few hundred
    /// milliseconds for a filter of a few hundred megabytes; [`sync`](Self::sync) calls it
    /// when the journal needs room. A no-op for in-memory filters.
    pub fn snapshot(&self) -> Result<(), ReplayError> {
        use std::os::unix::fs::FileExt;
        let Some(b) = &self.backing else {
            return Ok(());
        };
        // An append skipped from here on sets the flag again (its bits may miss the loads
        // below), so the next sync snapshots once more.
        let _ = b.journal.take_unjournaled();
        // Every entry before `at` was appended after its bits were set (`SeqCst` on both
        // sides), so the loads below see those bits.
        let at = b.journal.cursor();
        let mut buf = vec![0u8; SNAPSHOT_CHUNK];
        for s in self.published() {
            for (i, chunk) in s.words().chunks(SNAPSHOT_CHUNK / 8).enumerate() {
                let out = &mut buf[..chunk.len() * 8];
                for (w, c) in chunk.iter().zip(out.chunks_exact_mut(8)) {
                    c.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
                }
                b.file
                    .write_all_at(out, s.desc.offset + (i * SNAPSHOT_CHUNK) as u64)
                    .map_err(self.io_err())?;
            }
        }
        b.file.sync_data().map_err(self.io_err())?;
        b.header.sync().map_err(self.io_err())?;
        b.journal.snapshotted(at);
        Ok(())
    }

    /// Tags not journaled because the journal was full (each is in the next snapshot, but a
    /// process killed before it could lose them); zero unless syncs stop.
    pub fn journal_overflows(&self) -> u64 {
        self.backing.as_ref().map_or(0, |b| b.journal.overflowed())
    }

    /// Removes a filter's file and its journal (for a key that is gone).
    pub fn remove_files(path: &Path) {
        let _ = fs::remove_file(path);
        let _ = fs::remove_file(journal::path_for(path));
    }

    /// The file behind the filter, if any.
    pub fn file_path(&self) -> Option<&Path> {
        self.backing.as_ref().map(|b| b.path.as_path())
    }
}

/// Takes an exclusive `flock` on the file, failing at once if another holder has it.
fn lock(path: &Path, file: &File) -> Result<(), ReplayError> {
    // SAFETY: a plain syscall on our own open file descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Err(ReplayError::InUse {
            path: path.to_path_buf(),
        })
    } else {
        Err(ReplayError::Io {
            path: path.to_path_buf(),
            source: e,
        })
    }
}

/// Whether the file starts with the magic and format version 1 (a `u32` then `k`).
fn is_v1(file: &File) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; 12];
    match file.read_exact_at(&mut h, 0) {
        Ok(()) => Ok(h[..8] == file::MAGIC && h[8..12] == 1u32.to_le_bytes()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The hot path.
impl ReplayFilter {
    /// Whether the tag is (probably) present, without recording it.
    pub fn contains(&self, tag: &[u8; 32]) -> bool {
        let (h1, h2, _) = split_tag(tag);
        self.published()
            .any(|s| s.contains(h1, h2, Ordering::Relaxed))
    }

    /// Records the tag and returns `true` when it was (probably) already present: a replay,
    /// or a false positive with probability at most the configured rate. Of any number of
    /// concurrent calls with the same tag at most one returns `false` (see the module docs).
    pub fn check_and_set(&self, tag: &[u8; 32]) -> bool {
        let (h1, h2, fp) = split_tag(tag);
        let top = self.newest.load(Ordering::SeqCst);
        let Some(newest) = self.segments[top].get() else {
            return true; // unreachable: a segment is published before its index
        };
        let older = || self.segments[..top].iter().filter_map(OnceLock::get);
        if older().any(|s| s.contains(h1, h2, Ordering::Relaxed)) {
            return true;
        }
        let words = newest.words();
        let mut pending = [(0usize, 0u64); MAX_K as usize];
        let mut n = 0;
        newest.for_each_bit(h1, h2, |w, mask| {
            if words[w].load(Ordering::SeqCst) & mask == 0 {
                pending[n] = (w, mask);
                n += 1;
            }
        });
        if n == 0 {
            return true;
        }
        let bucket = &self.inflight[self.inflight_bucket(fp)].0;
        let claimed = bucket.iter().position(|slot| {
            slot.compare_exchange(0, fp, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        let mut flipped = false;
        for &(w, mask) in &pending[..n] {
            flipped |= words[w].fetch_or(mask, Ordering::SeqCst) & mask == 0;
        }
        if flipped && let Some(b) = &self.backing {
            b.journal.append(top, h1, h2);
        }
        let Some(mine) = claimed else {
            // Bucket full: cannot rule out a concurrent insert of the same tag.
            return true;
        };
        let seen = !flipped
            || self.in_other_segment(top, h1, h2)
            || bucket
                .iter()
                .enumerate()
                .any(|(i, slot)| i != mine && slot.load(Ordering::SeqCst) == fp);
        bucket[mine].store(0, Ordering::SeqCst);
        if !seen {
            self.inserted[(fp >> 3) as usize % COUNTER_STRIPES]
                .0
                .fetch_add(1, Ordering::Relaxed);
        }
        seen
    }

    /// After setting bits in segment `mine`: whether another published segment (one made
    /// meanwhile included) holds the tag; `SeqCst` loads, see the module docs.
    fn in_other_segment(&self, mine: usize, h1: u64, h2: u64) -> bool {
        let now = self.newest.load(Ordering::SeqCst);
        self.segments[..=now]
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != mine)
            .filter_map(|(_, s)| s.get())
            .any(|s| s.contains(h1, h2, Ordering::SeqCst))
    }

    #[inline]
    fn inflight_bucket(&self, fp: u64) -> usize {
        ((fp ^ self.salt_xor).wrapping_mul(self.salt_mul) >> INFLIGHT_SHIFT) as usize
    }
}

/// Growth, done by the control plane.
impl ReplayFilter {
    /// The periodic call (about once a second) that grows the filter: measures the insert
    /// rate since the last call and, when the newest segment would reach its design count
    /// within two such periods, appends a segment sized for the measured rate x
    /// [`ReplayParams::rate_margin`] (at least [`ReplayParams::min_rate`]) x the key's
    /// remaining lifetime. Returns whether it grew. An error (or running out of segments,
    /// which is logged) leaves the filter working and [`near_bound`](Self::near_bound) turns
    /// true once the newest segment fills.
    pub fn maintain(&self, now: SystemTime) -> Result<bool, ReplayError> {
        let mut g = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.inserted();
        match g.last {
            Some((t0, c0)) => {
                if let Ok(dt) = now.duration_since(t0)
                    && dt >= Duration::from_millis(250)
                {
                    g.rate = total.saturating_sub(c0) as f64 / dt.as_secs_f64();
                    g.window = dt;
                    g.last = Some((now, total));
                }
            }
            None => g.last = Some((now, total)),
        }
        let rate = (g.rate * self.params.rate_margin).max(self.params.min_rate);
        let top = self.newest.load(Ordering::SeqCst);
        let Some(newest) = self.segments[top].get() else {
            return Ok(false);
        };
        let headroom = rate * 2.0 * g.window.max(Duration::from_secs(1)).as_secs_f64();
        let used = total.saturating_sub(newest.start);
        if (used as f64) + headroom < newest.desc.design as f64 {
            return Ok(false);
        }
        if top + 1 >= MAX_SEGMENTS {
            if !g.stuck {
                tracing::warn!(path = %self.path().display(), "replay filter has used all its segments");
            }
            g.stuck = true;
            return Ok(false);
        }
        let grown = self.grow_once(top + 1, rate, headroom, now);
        g.stuck = grown.is_err();
        grown.map(|()| true)
    }

    fn grow_once(
        &self,
        index: usize,
        rate: f64,
        headroom: f64,
        now: SystemTime,
    ) -> Result<(), ReplayError> {
        let age = unix_secs(now).saturating_sub(self.meta.created_unix);
        let remaining = self.meta.lifetime_secs.saturating_sub(age) as f64;
        let design = (rate * remaining.max(MIN_SEGMENT_SECS))
            .max(4.0 * headroom)
            .ceil() as u64;
        let p = segment_budget(self.params.false_positive_rate, index);
        let (m_bits, k) = Self::dimensions(design, p)?;
        let needed = self.size_bytes() + m_bits / 8;
        if needed > self.params.max_bytes {
            return Err(ReplayError::TooLarge {
                needed,
                limit: self.params.max_bytes,
            });
        }
        let design = capacity(m_bits, k, p);
        let seg = self.add_segment(index, m_bits, k, design)?;
        if let Some(b) = &self.backing {
            b.populate(&seg.map);
        }
        tracing::info!(
            path = %self.path().display(),
            segment = index,
            design,
            bytes = m_bits / 8,
            rate,
            "replay filter grew"
        );
        Ok(())
    }
}

/// Sizes and metrics.
impl ReplayFilter {
    /// Number of bits `m`, all segments together.
    pub fn bits(&self) -> u64 {
        self.published().map(|s| s.desc.m_bits).sum()
    }

    /// Number of bit indices per tag `k` of the newest segment.
    pub fn hashes(&self) -> u32 {
        self.published().last().map_or(0, |s| s.desc.k)
    }

    /// Size of the bit arrays in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.bits() / 8
    }

    /// Number of segments.
    pub fn segments(&self) -> usize {
        self.published().count()
    }

    /// Tags recorded as new (estimated from the bits for segments mapped back from a file).
    pub fn inserted(&self) -> u64 {
        self.inserted
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::saturating_add)
    }

    /// The largest ratio of a segment's recorded tags to its design count: at most about 1
    /// while the filter grows in time; above 1 the false-positive rate exceeds its target.
    pub fn bound_ratio(&self) -> f64 {
        let segs: Vec<&Segment> = self.published().collect();
        let total = self.inserted();
        segs.iter()
            .enumerate()
            .map(|(i, s)| {
                let end = segs.get(i + 1).map_or(total, |n| n.start);
                end.saturating_sub(s.start) as f64 / s.desc.design as f64
            })
            .fold(0.0, f64::max)
    }

    /// Whether the filter is near its false-positive bound and cannot grow out of it: a
    /// segment is past its design count, or the newest is past [`NEAR_BOUND_RATIO`] and the
    /// last growth failed or no segment is left. The control plane warns on it.
    pub fn near_bound(&self) -> bool {
        let ratio = self.bound_ratio();
        let stuck = self.grow.lock().unwrap_or_else(|e| e.into_inner()).stuck
            || self.segments() >= MAX_SEGMENTS;
        ratio > 1.0 || (stuck && ratio >= NEAR_BOUND_RATIO)
    }

    /// Number of set bits (O(m / 64) loads).
    pub fn bits_set(&self) -> u64 {
        self.published().map(Segment::bits_set).sum()
    }

    /// Fraction of bits set, in [0, 1] (O(m / 64)).
    pub fn fill_ratio(&self) -> f64 {
        self.bits_set() as f64 / self.bits() as f64
    }

    /// Estimated number of distinct tags recorded, from the set bits of each segment
    /// (Swamidass & Baldi); saturates when a segment is full. O(m / 64).
    pub fn len_estimate(&self) -> u64 {
        self.published()
            .map(Segment::len_estimate)
            .fold(0, u64::saturating_add)
    }

    /// Current false-positive probability for a fresh tag, the sum over segments of
    /// `(X / m)^k` (an upper bound of the union). O(m / 64).
    pub fn false_positive_estimate(&self) -> f64 {
        self.published()
            .map(|s| (s.bits_set() as f64 / s.desc.m_bits as f64).powi(s.desc.k as i32))
            .sum::<f64>()
            .min(1.0)
    }
}

impl std::fmt::Debug for ReplayFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayFilter")
            .field("key_id", &self.meta.key_id)
            .field("segments", &self.segments())
            .field("bits", &self.bits())
            .field("file", &self.file_path())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
