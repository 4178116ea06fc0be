//! The tag journal of a file-backed filter.
//!
//! The filter's bits live in anonymous memory; every tag whose insert set a bit is also
//! appended here, to a ring of fixed-size entries in a file that is `mmap(MAP_SHARED)`ed. An
//! append is four stores to the page cache, which the kernel keeps when the process dies, so a
//! killed node loses no tag; a sync writes only the journal pages written since the last one
//! (32 bytes per new tag), not the filter. The filter's file gets the bits only from a
//! snapshot (`ReplayFilter::snapshot`), taken when the journal has filled to a quarter, and on
//! opening: the bits in the file plus the journal's entries are the whole filter.
//!
//! Layout, little-endian `u64` words: a header of [`ALIGN`] bytes (magic `MXPLJRNL`, format
//! version, key rotation id, capacity in entries, checksum of those four, then the epoch),
//! then `capacity` entries of four words: `h1`, `h2`, segment index + 1, epoch. An entry
//! counts only when its epoch is the header's: opening replays the current epoch's entries
//! into the bits, snapshots, and moves the header to the next epoch, which retires every
//! entry at once without rewriting them. Replaying an entry that is already in the bits (an
//! older lap of the ring in the same epoch) sets no new bit, so the ring needs no per-entry
//! sequence number; only entries newer than the last snapshot must never be overwritten,
//! which the cursor check in [`Journal::append`] ensures. (One case it does not cover: a
//! worker stopped between that check and its four stores while the others claim about a
//! ring's worth of slots and a snapshot passes could then overwrite a newer entry in that
//! slot. The newer tag is still in memory and goes to disk with the next snapshot; a kill
//! before it could lose that one tag. With the default ring that is millions of inserts
//! during one stop of a few instructions; the node's configuration allows no fewer than
//! 65,536 entries.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::ReplayError;
use super::file::{ALIGN, checksum};
use super::mapping::Mapping;

pub(super) const MAGIC: [u8; 8] = *b"MXPLJRNL";
pub(super) const VERSION: u64 = 1;
const W_CAP: usize = 3;
const W_SUM: usize = 4;
const W_EPOCH: usize = 5;
const ENTRY_WORDS: usize = 4;
const ENTRY_BYTES: u64 = 8 * ENTRY_WORDS as u64;
/// Fewest and most entries a journal may hold.
pub(super) const MIN_ENTRIES: u64 = 1 << 10;
pub(super) const MAX_ENTRIES: u64 = 1 << 28;

/// The journal next to the filter file at `path`.
pub(super) fn path_for(filter: &Path) -> PathBuf {
    let mut name = filter.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

fn header_sum(w: &[u64]) -> u64 {
    checksum(0x6a6f_7572_6e61_6c21, &w[..W_SUM])
}

/// Reserves the blocks of the first `len` bytes of `file` (`posix_fallocate`).
fn reserve(file: &File, len: u64) -> io::Result<()> {
    let n = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: a plain syscall on an open file descriptor that `file` owns.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, n) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// One journal file, mapped.
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    header: Mapping,
    entries: Mapping,
    cap: u64,
    epoch: u64,
    /// Entries claimed so far in this epoch.
    cursor: AtomicU64,
    /// Entries before this one are in the filter's file (the last snapshot's cursor).
    start: AtomicU64,
    /// Appends skipped because the ring held only entries newer than the last snapshot.
    overflow: AtomicU64,
    /// Set by a skipped append, cleared by a snapshot before it reads the cursor: the next
    /// sync must snapshot (the skipped tag's bits may have missed the last one).
    unjournaled: AtomicBool,
}

impl Journal {
    /// A new, empty journal of `cap` entries at `path` (replacing any file there), written
    /// to a temporary file and renamed into place, durably, so a crash leaves either the old
    /// file (or none) or the whole new one.
    pub(super) fn create(path: &Path, key_id: u64, cap: u64) -> io::Result<Journal> {
        let cap = cap.clamp(MIN_ENTRIES, MAX_ENTRIES);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let made = Self::write_new(&tmp, key_id, cap).and_then(|file| {
            std::fs::rename(&tmp, path)?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            File::open(dir)?.sync_all()?;
            Ok(file)
        });
        match made {
            Ok(file) => Self::map(path, file, cap, 1),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write_new(tmp: &Path, key_id: u64, cap: u64) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
            .open(tmp)?;
        reserve(&file, ALIGN + cap * ENTRY_BYTES)?;
        let mut head = [0u64; W_EPOCH + 1];
        head[0] = u64::from_le_bytes(MAGIC);
        head[1] = VERSION;
        head[2] = key_id;
        head[W_CAP] = cap;
        head[W_SUM] = header_sum(&head);
        head[W_EPOCH] = 1;
        let bytes: Vec<u8> = head.iter().flat_map(|w| w.to_le_bytes()).collect();
        file.write_all_at(&bytes, 0)?;
        file.sync_all()?;
        Ok(file)
    }

    /// The journal at `path` for key `key_id`, checked and mapped; `Ok(None)` when there is
    /// no file (a filter made by a build without journals).
    pub(super) fn open(path: &Path, key_id: u64) -> Result<Option<Journal>, ReplayError> {
        let io_err = |source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let len = file.metadata().map_err(io_err)?.len();
        let mut bytes = [0u8; 8 * (W_EPOCH + 1)];
        if len < ALIGN {
            return Err(ReplayError::LengthMismatch {
                path: path.to_path_buf(),
                expected: ALIGN,
                actual: len,
            });
        }
        file.read_exact_at(&mut bytes, 0).map_err(io_err)?;
        let w: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let corrupt = |what| ReplayError::CorruptHeader {
            path: path.to_path_buf(),
            what,
        };
        if w[0] != u64::from_le_bytes(MAGIC) {
            return Err(ReplayError::BadMagic {
                path: path.to_path_buf(),
            });
        }
        if w[1] != VERSION {
            return Err(ReplayError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: w[1] as u32,
            });
        }
        if w[W_SUM] != header_sum(&w) {
            return Err(corrupt("journal header checksum"));
        }
        if w[2] != key_id {
            return Err(ReplayError::KeyMismatch {
                path: path.to_path_buf(),
                expected: key_id,
                found: w[2],
            });
        }
        let cap = w[W_CAP];
        if !(MIN_ENTRIES..=MAX_ENTRIES).contains(&cap) {
            return Err(corrupt("journal capacity"));
        }
        if len != ALIGN + cap * ENTRY_BYTES {
            return Err(ReplayError::LengthMismatch {
                path: path.to_path_buf(),
                expected: ALIGN + cap * ENTRY_BYTES,
                actual: len,
            });
        }
        if w[W_EPOCH] == 0 || w[W_EPOCH] == u64::MAX {
            return Err(corrupt("journal epoch"));
        }
        // A copied (sparse) journal gets its blocks back: a full disk must not SIGBUS.
        reserve(&file, len).map_err(io_err)?;
        Self::map(path, file, cap, w[W_EPOCH])
            .map(Some)
            .map_err(io_err)
    }

    fn map(path: &Path, file: File, cap: u64, epoch: u64) -> io::Result<Journal> {
        let header = Mapping::shared(&file, 0, ALIGN as usize)?;
        let entries = Mapping::shared(&file, ALIGN, (cap * ENTRY_BYTES) as usize)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            header,
            entries,
            cap,
            epoch,
            cursor: AtomicU64::new(0),
            start: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            unjournaled: AtomicBool::new(false),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `f(segment, h1, h2)` for every entry of the current epoch, in slot order.
    pub(super) fn for_each(&self, mut f: impl FnMut(usize, u64, u64)) {
        let want = self.epoch.to_le();
        for e in self.entries.words().chunks_exact(ENTRY_WORDS) {
            if e[3].load(Ordering::Relaxed) != want {
                continue;
            }
            let seg = u64::from_le(e[2].load(Ordering::Relaxed));
            if let Some(seg) = seg.checked_sub(1).and_then(|s| usize::try_from(s).ok()) {
                f(
                    seg,
                    u64::from_le(e[0].load(Ordering::Relaxed)),
                    u64::from_le(e[1].load(Ordering::Relaxed)),
                );
            }
        }
    }

    /// Retires every entry (after the caller has put them all in a durable snapshot):
    /// the header moves to the next epoch, durably, and the ring starts empty.
    pub(super) fn next_epoch(&mut self) -> io::Result<()> {
        self.epoch += 1;
        self.header.words()[W_EPOCH].store(self.epoch.to_le(), Ordering::SeqCst);
        self.header.sync()?;
        self.file.sync_data()?;
        self.cursor.store(0, Ordering::SeqCst);
        self.start.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Records that a tag set bits in segment `seg`. Call after the bit-sets (so a snapshot
    /// that reads the cursor past this entry sees them) and before the insert returns.
    #[inline]
    pub(super) fn append(&self, seg: usize, h1: u64, h2: u64) {
        let at = self.cursor.fetch_add(1, Ordering::SeqCst);
        let start = self.start.load(Ordering::SeqCst);
        if at < start {
            // Claimed before a snapshot read the cursor: the bits are in that snapshot.
            return;
        }
        if at - start >= self.cap {
            // Every slot holds an entry newer than the last snapshot. The bits are in
            // memory and go into the next snapshot, which the next sync takes; until it, a
            // killed process could lose this tag. Counted.
            self.overflow.fetch_add(1, Ordering::Relaxed);
            self.unjournaled.store(true, Ordering::SeqCst);
            return;
        }
        let w = self.entries.words();
        let i = (at % self.cap) as usize * ENTRY_WORDS;
        w[i].store(h1.to_le(), Ordering::Relaxed);
        w[i + 1].store(h2.to_le(), Ordering::Relaxed);
        w[i + 2].store((seg as u64 + 1).to_le(), Ordering::Relaxed);
        w[i + 3].store(self.epoch.to_le(), Ordering::Release);
    }

    /// The cursor now: a snapshot that starts after this read covers every entry before it.
    pub(super) fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::SeqCst)
    }

    /// For a snapshot about to read the cursor: whether an append was skipped since the last
    /// one (and clears that; an append skipped from now on sets it again).
    pub(super) fn take_unjournaled(&self) -> bool {
        self.unjournaled.swap(false, Ordering::SeqCst)
    }

    /// Whether the next sync must snapshot: a quarter of the ring in use, or an append
    /// skipped.
    pub(super) fn needs_snapshot(&self) -> bool {
        self.pending() >= self.cap / 4 || self.unjournaled.load(Ordering::SeqCst)
    }

    /// A snapshot taken from cursor `at` is durable: those entries may be overwritten.
    pub(super) fn snapshotted(&self, at: u64) {
        self.start.fetch_max(at, Ordering::SeqCst);
    }

    /// Entries written since the last snapshot.
    pub(super) fn pending(&self) -> u64 {
        self.cursor()
            .saturating_sub(self.start.load(Ordering::SeqCst))
    }

    pub(super) fn overflowed(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Writes the journal's dirty pages to disk and waits.
    pub(super) fn sync(&self) -> io::Result<()> {
        self.entries.sync()
    }
}
