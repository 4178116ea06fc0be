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
//! # Persistence
//!
//! [`ReplayFilter::save_to`] writes (little-endian) magic `MXPLRPLY`, format version (u32),
//! `k` (u32), `m` in bits (u64), the estimated item count (u64), the caller's key id (u64), the
//! `m / 64` words, and a 64-bit checksum of everything before it; to a temporary file that is
//! fsynced and renamed over the target (then the directory is fsynced). Words are read while
//! other threads may keep inserting: bits set during the save may or may not be in the file.

use std::fs::{self, File};
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: [u8; 8] = *b"MXPLRPLY";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 40;
const TRAILER_LEN: u64 = 8;

/// Default limit on the filter's size in bytes (16 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;
/// Largest number of bit indices per tag (a false-positive rate of about 1e-19).
pub const MAX_K: u32 = 64;

const INFLIGHT_BUCKETS: usize = 512;
const INFLIGHT_SLOTS: usize = 8;
const INFLIGHT_SHIFT: u32 = 64 - INFLIGHT_BUCKETS.trailing_zeros();

/// Errors from sizing, saving and loading a [`ReplayFilter`].
#[derive(Debug, thiserror::Error)]
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
    /// Reading or writing the file failed.
    #[error("replay filter file {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the replay-filter magic bytes.
    #[error("{} is not a replay-filter file (bad magic)", .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file has a format version this build does not read.
    #[error("{}: unsupported replay-filter format version {found} (expected {VERSION})", .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// The file was saved for another key.
    #[error("{}: replay filter belongs to key {found:#018x}, expected {expected:#018x}", .path.display())]
    KeyMismatch {
        /// The file.
        path: PathBuf,
        /// The key id the caller asked for.
        expected: u64,
        /// The key id in the file.
        found: u64,
    },
    /// A header field is out of range.
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
    /// The contents do not match the stored checksum.
    #[error("{}: replay-filter checksum mismatch (corrupt file)", .path.display())]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
    },
}

/// Eight in-flight slots on one cache line.
#[repr(align(64))]
#[derive(Default)]
struct InflightBucket([AtomicU64; INFLIGHT_SLOTS]);

/// A lock-free Bloom filter of replay tags; see the [module documentation](self).
pub struct ReplayFilter {
    words: Box<[AtomicU64]>,
    m_bits: u64,
    k: u32,
    inflight: Box<[InflightBucket]>,
    salt_xor: u64,
    salt_mul: u64,
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

fn checksum_step(h: u64, w: u64) -> u64 {
    (h.rotate_left(23) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl ReplayFilter {
    /// A filter for `expected_items` tags at `false_positive_rate`, limited to
    /// [`DEFAULT_MAX_BYTES`]. `m = ceil(-n ln p / (ln 2)^2)` rounded up to a multiple of 64,
    /// `k = round(m / n * ln 2)` (at least 1).
    pub fn new(expected_items: u64, false_positive_rate: f64) -> Result<Self, ReplayError> {
        Self::with_max_bytes(expected_items, false_positive_rate, DEFAULT_MAX_BYTES)
    }

    /// [`new`](Self::new) with an explicit size limit in bytes.
    pub fn with_max_bytes(
        expected_items: u64,
        false_positive_rate: f64,
        max_bytes: u64,
    ) -> Result<Self, ReplayError> {
        let (m_bits, k) = Self::dimensions(expected_items, false_positive_rate)?;
        let needed = m_bits / 8;
        if needed > max_bytes {
            return Err(ReplayError::TooLarge {
                needed,
                limit: max_bytes,
            });
        }
        Ok(Self::with_dimensions(m_bits, k))
    }

    /// `(m_bits, k)` for `n` items at rate `p`, without allocating.
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

    fn with_dimensions(m_bits: u64, k: u32) -> Self {
        debug_assert!(m_bits > 0 && m_bits.is_multiple_of(64) && (1..=MAX_K).contains(&k));
        let words = (0..m_bits / 64).map(|_| AtomicU64::new(0)).collect();
        let inflight = (0..INFLIGHT_BUCKETS)
            .map(|_| InflightBucket::default())
            .collect();
        let rs = std::collections::hash_map::RandomState::new();
        Self {
            words,
            m_bits,
            k,
            inflight,
            salt_xor: rs.hash_one(0x5eed_u64),
            salt_mul: rs.hash_one(0xfeed_u64) | 1,
        }
    }

    /// Number of bits `m`.
    pub fn bits(&self) -> u64 {
        self.m_bits
    }

    /// Number of bit indices per tag `k`.
    pub fn hashes(&self) -> u32 {
        self.k
    }

    /// Size of the bit array in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.m_bits / 8
    }

    /// Calls `f(word_index, bit_mask)` for the tag's `k` bits: enhanced double hashing,
    /// `g_0 = h1, d_0 = h2, g_{i+1} = g_i + d_i, d_{i+1} = d_i + i + 1`.
    #[inline]
    fn for_each_bit(&self, h1: u64, h2: u64, mut f: impl FnMut(usize, u64)) {
        let (mut g, mut d) = (h1, h2);
        for i in 0..u64::from(self.k) {
            let bit = reduce(g, self.m_bits);
            f((bit >> 6) as usize, 1u64 << (bit & 63));
            g = g.wrapping_add(d);
            d = d.wrapping_add(i + 1);
        }
    }

    /// Whether the tag is (probably) present, without recording it.
    pub fn contains(&self, tag: &[u8; 32]) -> bool {
        let (h1, h2, _) = split_tag(tag);
        let mut all = true;
        self.for_each_bit(h1, h2, |w, mask| {
            all &= self.words[w].load(Ordering::Relaxed) & mask != 0;
        });
        all
    }

    /// Records the tag and returns `true` when it was (probably) already present: a replay,
    /// or a false positive with probability about the configured rate. Of any number of
    /// concurrent calls with the same tag at most one returns `false` (see the module docs).
    pub fn check_and_set(&self, tag: &[u8; 32]) -> bool {
        let (h1, h2, fp) = split_tag(tag);
        let mut pending = [(0usize, 0u64); MAX_K as usize];
        let mut n = 0;
        self.for_each_bit(h1, h2, |w, mask| {
            if self.words[w].load(Ordering::SeqCst) & mask == 0 {
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
            flipped |= self.words[w].fetch_or(mask, Ordering::SeqCst) & mask == 0;
        }
        let Some(mine) = claimed else {
            // Bucket full: cannot rule out a concurrent insert of the same tag.
            return true;
        };
        let seen = !flipped
            || bucket
                .iter()
                .enumerate()
                .any(|(i, slot)| i != mine && slot.load(Ordering::SeqCst) == fp);
        bucket[mine].store(0, Ordering::SeqCst);
        seen
    }

    #[inline]
    fn inflight_bucket(&self, fp: u64) -> usize {
        ((fp ^ self.salt_xor).wrapping_mul(self.salt_mul) >> INFLIGHT_SHIFT) as usize
    }

    /// Number of set bits (O(m / 64) loads).
    pub fn bits_set(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Fraction of bits set, in [0, 1] (O(m / 64)).
    pub fn fill_ratio(&self) -> f64 {
        self.bits_set() as f64 / self.m_bits as f64
    }

    /// Estimated number of distinct tags recorded, `-(m / k) ln(1 - X / m)` for `X` set bits
    /// (Swamidass & Baldi); saturates when the filter is full. O(m / 64).
    pub fn len_estimate(&self) -> u64 {
        let m = self.m_bits as f64;
        let x = self.bits_set() as f64;
        if x >= m {
            return u64::MAX;
        }
        (-(m / f64::from(self.k)) * (1.0 - x / m).ln()).round() as u64
    }

    /// Current false-positive probability for a fresh tag, `(X / m)^k`. O(m / 64).
    pub fn false_positive_estimate(&self) -> f64 {
        self.fill_ratio().powi(self.k as i32)
    }

    /// Clears every bit. Concurrent `check_and_set` calls may leave some of their bits set.
    pub fn clear(&self) {
        for w in self.words.iter() {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// Saves the filter for key `key_id` atomically (temp file, fsync, rename, fsync of the
    /// directory); see the module docs for the format.
    pub fn save_to(&self, path: impl AsRef<Path>, key_id: u64) -> Result<(), ReplayError> {
        let path = path.as_ref();
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ReplayError::Io { path: p, source }
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| ReplayError::Io {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
            })?
            .to_string_lossy();
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_file_name(format!(
            ".{file_name}.tmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self
            .write_file(&tmp, key_id)
            .map_err(io_err(&tmp))
            .and_then(|()| {
                fs::rename(&tmp, path).map_err(io_err(path))?;
                #[cfg(unix)]
                if let Some(dir) = path.parent() {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io_err(dir))?;
                }
                Ok(())
            });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_file(&self, tmp: &Path, key_id: u64) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&self.k.to_le_bytes());
        header.extend_from_slice(&self.m_bits.to_le_bytes());
        header.extend_from_slice(&self.len_estimate().to_le_bytes());
        header.extend_from_slice(&key_id.to_le_bytes());
        debug_assert_eq!(header.len() as u64, HEADER_LEN);
        let mut sum = header_checksum(&header);
        file.write_all(&header)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in self.words.chunks(1 << 13) {
            buf.clear();
            for w in chunk {
                let v = w.load(Ordering::Relaxed);
                sum = checksum_step(sum, v);
                buf.extend_from_slice(&v.to_le_bytes());
            }
            file.write_all(&buf)?;
        }
        file.write_all(&sum.to_le_bytes())?;
        file.sync_all()
    }

    /// Loads a filter saved by [`save_to`](Self::save_to) for `expected_key_id`, refusing files
    /// above [`DEFAULT_MAX_BYTES`]. Every inconsistency is an error, never a panic.
    pub fn load_from(path: impl AsRef<Path>, expected_key_id: u64) -> Result<Self, ReplayError> {
        Self::load_from_with_max_bytes(path, expected_key_id, DEFAULT_MAX_BYTES)
    }

    /// [`load_from`](Self::load_from) with an explicit size limit in bytes.
    pub fn load_from_with_max_bytes(
        path: impl AsRef<Path>,
        expected_key_id: u64,
        max_bytes: u64,
    ) -> Result<Self, ReplayError> {
        let path = path.as_ref();
        let p = || path.to_path_buf();
        let io_err = |source| ReplayError::Io { path: p(), source };
        let mut file = File::open(path).map_err(io_err)?;
        let actual = file.metadata().map_err(io_err)?.len();
        let mut header = [0u8; HEADER_LEN as usize];
        if actual < HEADER_LEN + TRAILER_LEN {
            return Err(ReplayError::LengthMismatch {
                path: p(),
                expected: HEADER_LEN + TRAILER_LEN,
                actual,
            });
        }
        file.read_exact(&mut header).map_err(io_err)?;
        let u32_at = |o: usize| u32::from_le_bytes(header[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(header[o..o + 8].try_into().expect("8 bytes"));
        if header[..8] != MAGIC {
            return Err(ReplayError::BadMagic { path: p() });
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(ReplayError::UnsupportedVersion {
                path: p(),
                found: version,
            });
        }
        let (k, m_bits, key_id) = (u32_at(12), u64_at(16), u64_at(32));
        let corrupt = |what| ReplayError::CorruptHeader { path: p(), what };
        if !(1..=MAX_K).contains(&k) {
            return Err(corrupt("k out of range"));
        }
        if m_bits == 0 || !m_bits.is_multiple_of(64) {
            return Err(corrupt("bit count not a positive multiple of 64"));
        }
        if m_bits / 8 > max_bytes {
            return Err(ReplayError::TooLarge {
                needed: m_bits / 8,
                limit: max_bytes,
            });
        }
        if key_id != expected_key_id {
            return Err(ReplayError::KeyMismatch {
                path: p(),
                expected: expected_key_id,
                found: key_id,
            });
        }
        let expected = HEADER_LEN + m_bits / 8 + TRAILER_LEN;
        if actual != expected {
            return Err(ReplayError::LengthMismatch {
                path: p(),
                expected,
                actual,
            });
        }
        let filter = Self::with_dimensions(m_bits, k);
        let mut sum = header_checksum(&header);
        let mut buf = vec![0u8; 1 << 16];
        for chunk in filter.words.chunks(1 << 13) {
            let bytes = &mut buf[..chunk.len() * 8];
            file.read_exact(bytes).map_err(io_err)?;
            for (w, b) in chunk.iter().zip(bytes.chunks_exact(8)) {
                let v = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                sum = checksum_step(sum, v);
                w.store(v, Ordering::Relaxed);
            }
        }
        let mut trailer = [0u8; 8];
        file.read_exact(&mut trailer).map_err(io_err)?;
        if u64::from_le_bytes(trailer) != sum {
            return Err(ReplayError::ChecksumMismatch { path: p() });
        }
        Ok(filter)
    }
}

fn header_checksum(header: &[u8]) -> u64 {
    header.chunks_exact(8).fold(0x6d78_706c_616e_6521, |h, c| {
        checksum_step(h, u64::from_le_bytes(c.try_into().expect("8 bytes")))
    })
}

impl std::fmt::Debug for ReplayFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayFilter")
            .field("bits", &self.m_bits)
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
