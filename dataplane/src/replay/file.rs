//! The on-disk layout of a filter file (format 2) and the reader of the old format 1 snapshot.
//!
//! Format 2, all fields little-endian `u64` words:
//!
//! | word | field |
//! |---|---|
//! | 0 | magic `MXPLRPLY` |
//! | 1 | format version (2) |
//! | 2 | key rotation id |
//! | 3 | target false-positive rate (`f64` bits) |
//! | 4 | key creation time (unix seconds) |
//! | 5 | key lifetime (seconds) |
//! | 6 | checksum of words 0..6 |
//! | 7 | segment count |
//! | 8 + 5i .. | segment i: file offset, bits `m`, hashes `k`, design count, checksum |
//!
//! The header takes [`ALIGN`] bytes; segment `i` starts at the end of segment `i - 1` (the
//! first right after the header) and takes `m / 8` bytes rounded up to [`ALIGN`], so every
//! segment can be mapped on its own at any page size up to 64 KiB.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{MAX_K, ReplayError};

pub(super) const MAGIC: [u8; 8] = *b"MXPLRPLY";
pub(super) const VERSION: u64 = 2;
/// Alignment of the header size and of every segment, in bytes.
pub(super) const ALIGN: u64 = 64 << 10;
/// Most segments a filter may chain.
pub(super) const MAX_SEGMENTS: usize = 32;
pub(super) const W_COUNT: usize = 7;
const W_TABLE: usize = 8;
const ENTRY_WORDS: usize = 5;
/// Words of the header that carry meaning (the rest of the first [`ALIGN`] bytes is zero).
pub(super) const HEADER_WORDS: usize = W_TABLE + ENTRY_WORDS * MAX_SEGMENTS;

/// What the fixed part of the header says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Meta {
    pub key_id: u64,
    pub fp_rate: f64,
    pub created_unix: u64,
    pub lifetime_secs: u64,
}

/// One segment's entry in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegmentDesc {
    pub offset: u64,
    pub m_bits: u64,
    pub k: u32,
    pub design: u64,
}

impl SegmentDesc {
    /// Bytes the segment takes in the file.
    pub(super) fn file_len(&self) -> u64 {
        (self.m_bits / 8).div_ceil(ALIGN) * ALIGN
    }

    pub(super) fn end(&self) -> u64 {
        self.offset + self.file_len()
    }
}

pub(super) fn checksum_step(h: u64, w: u64) -> u64 {
    (h.rotate_left(23) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

pub(super) fn checksum(seed: u64, words: &[u64]) -> u64 {
    // The final mix keeps an all-zero entry from having checksum zero.
    checksum_step(words.iter().fold(seed, |h, &w| checksum_step(h, w)), 0x5a5a)
}

/// The header words for `meta` with no segments.
pub(super) fn encode_meta(meta: &Meta) -> [u64; W_TABLE] {
    let mut w = [0u64; W_TABLE];
    w[0] = u64::from_le_bytes(MAGIC);
    w[1] = VERSION;
    w[2] = meta.key_id;
    w[3] = meta.fp_rate.to_bits();
    w[4] = meta.created_unix;
    w[5] = meta.lifetime_secs;
    w[6] = checksum(0x6d78_706c_616e_6521, &w[..6]);
    w
}

/// The table entry for segment `index`, and the word it starts at.
pub(super) fn encode_entry(index: usize, d: &SegmentDesc) -> (usize, [u64; ENTRY_WORDS]) {
    let mut e = [d.offset, d.m_bits, u64::from(d.k), d.design, 0];
    e[4] = checksum(index as u64, &e[..4]);
    (W_TABLE + ENTRY_WORDS * index, e)
}

fn decode_entry(words: &[u64], index: usize) -> Option<SegmentDesc> {
    let at = W_TABLE + ENTRY_WORDS * index;
    let e = &words[at..at + ENTRY_WORDS];
    let d = SegmentDesc {
        offset: e[0],
        m_bits: e[1],
        k: u32::try_from(e[2]).ok()?,
        design: e[3],
    };
    let sane = e[4] == checksum(index as u64, &e[..4])
        && d.m_bits > 0
        && d.m_bits.is_multiple_of(64)
        && d.m_bits < 1 << 62
        && (1..=MAX_K).contains(&d.k)
        && d.design > 0;
    sane.then_some(d)
}

/// Checks header `words` (at least [`HEADER_WORDS`], host order) of a file of `file_len`
/// bytes that should belong to `key_id`; returns its metadata and segments. A file that ends
/// exactly one valid, not yet counted segment later is a growth cut short by a crash (the
/// table entry and the file's length were written, the count not yet): that segment is kept.
pub(super) fn decode(
    path: &Path,
    words: &[u64],
    file_len: u64,
    key_id: u64,
    max_bytes: u64,
) -> Result<(Meta, Vec<SegmentDesc>), ReplayError> {
    let p = || path.to_path_buf();
    let corrupt = |what| ReplayError::CorruptHeader { path: p(), what };
    if words[0] != u64::from_le_bytes(MAGIC) {
        return Err(ReplayError::BadMagic { path: p() });
    }
    if words[1] != VERSION {
        return Err(ReplayError::UnsupportedVersion {
            path: p(),
            found: words[1] as u32,
        });
    }
    if words[6] != checksum(0x6d78_706c_616e_6521, &words[..6]) {
        return Err(corrupt("header checksum"));
    }
    let meta = Meta {
        key_id: words[2],
        fp_rate: f64::from_bits(words[3]),
        created_unix: words[4],
        lifetime_secs: words[5],
    };
    if meta.key_id != key_id {
        return Err(ReplayError::KeyMismatch {
            path: p(),
            expected: key_id,
            found: meta.key_id,
        });
    }
    let count = usize::try_from(words[W_COUNT]).unwrap_or(usize::MAX);
    if count == 0 || count > MAX_SEGMENTS {
        return Err(corrupt("segment count"));
    }
    let mut segs = Vec::with_capacity(count);
    let mut end = ALIGN;
    for i in 0..count {
        let d = decode_entry(words, i).ok_or(corrupt("segment entry"))?;
        if d.offset != end {
            return Err(corrupt("segment offset"));
        }
        end = d.end();
        segs.push(d);
    }
    if count < MAX_SEGMENTS
        && let Some(d) = decode_entry(words, count)
        && d.offset == end
        && d.end() == file_len
    {
        segs.push(d);
        end = d.end();
    }
    if end - ALIGN > max_bytes {
        return Err(ReplayError::TooLarge {
            needed: end - ALIGN,
            limit: max_bytes,
        });
    }
    if file_len != end {
        return Err(ReplayError::LengthMismatch {
            path: p(),
            expected: end,
            actual: file_len,
        });
    }
    Ok((meta, segs))
}

/// A format-1 snapshot (the single-array format saved on clean shutdown before format 2):
/// magic, version 1 (u32), `k` (u32), `m` (u64), item estimate (u64), key id (u64), `m / 64`
/// words, checksum. Returns `(m, k, words)`.
pub(super) fn read_v1(
    path: &Path,
    mut file: &File,
    key_id: u64,
    max_bytes: u64,
) -> Result<(u64, u32, Vec<u64>), ReplayError> {
    const HEADER: u64 = 40;
    let p = || path.to_path_buf();
    let io_err = |source| ReplayError::Io { path: p(), source };
    let actual = file.metadata().map_err(io_err)?.len();
    let mut h = [0u8; HEADER as usize];
    if actual < HEADER + 8 {
        return Err(ReplayError::LengthMismatch {
            path: p(),
            expected: HEADER + 8,
            actual,
        });
    }
    file.read_exact(&mut h).map_err(io_err)?;
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    let k = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
    let (m_bits, found) = (u64_at(16), u64_at(32));
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
    if found != key_id {
        return Err(ReplayError::KeyMismatch {
            path: p(),
            expected: key_id,
            found,
        });
    }
    let expected = HEADER + m_bits / 8 + 8;
    if actual != expected {
        return Err(ReplayError::LengthMismatch {
            path: p(),
            expected,
            actual,
        });
    }
    let mut sum = h.chunks_exact(8).fold(0x6d78_706c_616e_6521, |s, c| {
        checksum_step(s, u64::from_le_bytes(c.try_into().expect("8 bytes")))
    });
    let mut bytes = vec![0u8; (m_bits / 8 + 8) as usize];
    file.read_exact(&mut bytes).map_err(io_err)?;
    let (body, trailer) = bytes.split_at(bytes.len() - 8);
    let words: Vec<u64> = body
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .inspect(|&v| sum = checksum_step(sum, v))
        .collect();
    if u64::from_le_bytes(trailer.try_into().expect("8 bytes")) != sum {
        return Err(ReplayError::ChecksumMismatch { path: p() });
    }
    Ok((m_bits, k, words))
}
