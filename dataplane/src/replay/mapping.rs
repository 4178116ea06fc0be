//! Memory mappings that hold filter bits: anonymous (in-memory filters) or a shared mapping of
//! a region of the filter's file, seen by Rust only as a slice of `AtomicU64`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// One `mmap`ed region, unmapped on drop.
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory owned by this value until drop; every access goes through
// `words()`, i.e. through `AtomicU64`, which is safe to share between threads.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only hands out `&[AtomicU64]`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// A zero-filled private anonymous region of `len` bytes (a positive multiple of 8); pages
    /// are only backed by memory once written.
    pub(super) fn anonymous(len: usize) -> io::Result<Mapping> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        Self::map(len, flags, -1, 0)
    }

    /// A shared mapping of `len` bytes of `file` at `offset` (a multiple of the page size):
    /// writes go to the page cache, so the kernel keeps them when the process dies.
    pub(super) fn shared(file: &File, offset: u64, len: usize) -> io::Result<Mapping> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        Self::map(len, libc::MAP_SHARED, file.as_raw_fd(), offset)
    }

    fn map(
        len: usize,
        flags: libc::c_int,
        fd: libc::c_int,
        offset: libc::off_t,
    ) -> io::Result<Mapping> {
        if len == 0 || !len.is_multiple_of(8) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mapping length must be a positive multiple of 8",
            ));
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a fresh mapping chosen by the kernel (null hint, no MAP_FIXED), so it cannot
        // overlap memory that Rust already uses; `fd` and `offset` are checked by the kernel.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// The region as 64-bit atomic words.
    pub(super) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` is page-aligned (so aligned for `AtomicU64`), the region is `len`
        // bytes (a multiple of 8) of readable and writable memory that stays mapped until
        // `drop`, which cannot run while this borrow of `self` lives. `AtomicU64` has the
        // layout of `u64` and allows shared mutation, so concurrent writers (other threads,
        // the kernel's writeback, which only reads) do not violate the reference's rules.
        // Another process writing the same file could; the filter's file is `flock`ed
        // exclusively while open.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU64>(), self.len / 8) }
    }

    /// Maps every page of the region writable now (`MADV_POPULATE_WRITE`, Linux 5.14), so
    /// the workers' first bit-sets do not each take a page fault: for a file-backed region
    /// each such fault runs the filesystem's `page_mkwrite` (on ext4 a journal handle,
    /// several µs) on the worker. Returns `Ok(false)` where the kernel does not know the
    /// advice; the pages are then faulted in on first write, as before.
    pub(super) fn populate_write(&self) -> io::Result<bool> {
        // SAFETY: the range is exactly this live mapping; the advice only faults pages in
        // (and, for a shared file mapping, marks them dirty), it changes no byte.
        let r = unsafe {
            libc::madvise(
                self.ptr.as_ptr().cast(),
                self.len,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINVAL) {
            Ok(false)
        } else {
            Err(e)
        }
    }

    /// Whether every page of the region is in memory (`mincore`): for a file-backed region,
    /// in the page cache.
    #[cfg(test)]
    pub(super) fn all_resident(&self) -> io::Result<bool> {
        // SAFETY: a plain query of a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(io::Error::other)?;
        let mut v = vec![0u8; self.len.div_ceil(page)];
        // SAFETY: the range is this live mapping; `v` has one byte per page of it.
        let r = unsafe { libc::mincore(self.ptr.as_ptr().cast(), self.len, v.as_mut_ptr()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v.iter().all(|b| b & 1 == 1))
    }

    /// Writes the region's dirty pages to its file and waits (`msync(MS_SYNC)`); a no-op in
    /// effect for anonymous mappings.
    pub(super) fn sync(&self) -> io::Result<()> {
        // SAFETY: the range is exactly this live mapping.
        let r = unsafe { libc::msync(self.ptr.as_ptr().cast(), self.len, libc::MS_SYNC) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `map`; `&mut self` proves no borrow
        // from `words()` is alive.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
