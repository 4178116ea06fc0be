//! An in-memory backend: serves preloaded frames a batch at a time and swallows what is sent,
//! counting it. It lets the worker loop run without the kernel, for the worker-loop benchmark
//! and for tests; a node never opens one on its own.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Datagram, Outgoing, SendStats, UdpIo};

/// What a [`MemoryIo`] has done, readable from other threads.
#[derive(Debug)]
pub struct MemoryProgress {
    epoch: Instant,
    received: AtomicU64,
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    /// Nanoseconds since `epoch` + 1 of the first receive that returned frames (0: none yet).
    first_recv: AtomicU64,
    /// Nanoseconds since `epoch` + 1 of the latest send.
    last_send: AtomicU64,
    /// Frames the backend may hand out in all (gated backends start at 0).
    limit: AtomicU64,
}

impl MemoryProgress {
    /// Frames handed to the worker so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    /// Datagrams the worker sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Bytes the worker sent so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.load(Ordering::Acquire)
    }

    /// Time from the first frames handed out to the latest send, once both happened.
    pub fn window(&self) -> Option<Duration> {
        let (a, b) = (
            self.first_recv.load(Ordering::Acquire),
            self.last_send.load(Ordering::Acquire),
        );
        (a > 0 && b >= a).then(|| Duration::from_nanos(b - a))
    }

    /// Lets `n` more frames through a gated backend and restarts [`MemoryProgress::window`]
    /// at the first of them.
    pub fn release(&self, n: u64) {
        self.first_recv.store(0, Ordering::Release);
        self.limit.fetch_add(n, Ordering::AcqRel);
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }
}

/// In-memory I/O over a fixed list of frames.
pub struct MemoryIo {
    frames: Arc<[Vec<u8>]>,
    next: usize,
    batch: usize,
    /// Frames per receive: `batch`, or less after `set_recv_limit`.
    limit: usize,
    slot: usize,
    arena: Vec<u8>,
    progress: Arc<MemoryProgress>,
}

impl MemoryIo {
    /// Serves `frames` in order, `batch` per receive; returns the backend and its progress.
    pub fn new(frames: Arc<[Vec<u8>]>, batch: usize) -> (MemoryIo, Arc<MemoryProgress>) {
        Self::with_limit(frames, batch, u64::MAX)
    }

    /// Like [`MemoryIo::new`], but hands out nothing until [`MemoryProgress::release`] is
    /// called: a benchmark times each released run on its own.
    pub fn gated(frames: Arc<[Vec<u8>]>, batch: usize) -> (MemoryIo, Arc<MemoryProgress>) {
        Self::with_limit(frames, batch, 0)
    }

    fn with_limit(
        frames: Arc<[Vec<u8>]>,
        batch: usize,
        limit: u64,
    ) -> (MemoryIo, Arc<MemoryProgress>) {
        let batch = batch.max(1);
        let slot = frames.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let progress = Arc::new(MemoryProgress {
            epoch: Instant::now(),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            first_recv: AtomicU64::new(0),
            last_send: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
        });
        let io = MemoryIo {
            frames,
            next: 0,
            batch,
            limit: batch,
            slot,
            arena: vec![0; batch * slot],
            progress: progress.clone(),
        };
        (io, progress)
    }
}

impl UdpIo for MemoryIo {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn recv(&mut self, timeout: Duration, out: &mut Vec<Datagram>) -> io::Result<usize> {
        out.clear();
        let limit = self.progress.limit.load(Ordering::Acquire);
        let allowed = usize::try_from(limit).unwrap_or(usize::MAX);
        let end = (self.next + self.limit)
            .min(self.frames.len())
            .min(allowed.max(self.next));
        if self.next == end {
            // nothing to hand out: behave like an idle socket (briefly, when gated, so that a
            // release is seen soon)
            let gated = limit != u64::MAX;
            std::thread::sleep(if gated {
                timeout.min(Duration::from_micros(20))
            } else {
                timeout
            });
            return Ok(0);
        }
        for (i, f) in self.frames[self.next..end].iter().enumerate() {
            let offset = i * self.slot;
            self.arena[offset..offset + f.len()].copy_from_slice(f);
            out.push(Datagram {
                offset,
                len: f.len(),
            });
        }
        let _ = self.progress.first_recv.compare_exchange(
            0,
            self.progress.now(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.progress
            .received
            .fetch_add((end - self.next) as u64, Ordering::AcqRel);
        self.next = end;
        Ok(out.len())
    }

    fn frames_mut<'a>(&'a mut self, datagrams: &[Datagram]) -> Vec<&'a mut [u8]> {
        crate::io::carve(&mut self.arena, datagrams)
    }

    fn datagram(&self, d: Datagram) -> &[u8] {
        crate::io::slice_of(&self.arena, d)
    }

    fn set_recv_limit(&mut self, max: usize) {
        self.limit = max.clamp(1, self.batch);
    }

    fn send(&mut self, batch: &[Outgoing<'_>]) -> SendStats {
        let bytes: usize = batch.iter().map(|o| o.data.len()).sum();
        self.progress
            .sent_bytes
            .fetch_add(bytes as u64, Ordering::AcqRel);
        self.progress
            .last_send
            .store(self.progress.now(), Ordering::Release);
        self.progress
            .sent
            .fetch_add(batch.len() as u64, Ordering::AcqRel);
        SendStats {
            sent: batch.len(),
            failed: 0,
            calls: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_frames_in_batches_and_counts_sends() {
        let frames: Arc<[Vec<u8>]> = (0..10u8).map(|i| vec![i; 3 + i as usize]).collect();
        let (mut io, p) = MemoryIo::new(frames.clone(), 4);
        let mut out = Vec::new();
        let mut got = Vec::new();
        while io.recv(Duration::ZERO, &mut out).unwrap() > 0 {
            got.extend(out.iter().map(|d| io.datagram(*d).to_vec()));
        }
        assert_eq!(got, frames.to_vec());
        assert_eq!(p.received(), 10);
        let to = "127.0.0.1:9".parse().unwrap();
        let st = io.send(&[Outgoing { to, data: &[1, 2] }, Outgoing { to, data: &[3] }]);
        assert_eq!(st.sent, 2);
        assert_eq!((p.sent(), p.sent_bytes()), (2, 3));
        assert!(p.window().is_some());
    }

    #[test]
    fn gated_backend_serves_only_what_was_released() {
        let frames: Arc<[Vec<u8>]> = (0..10u8).map(|i| vec![i; 4]).collect();
        let (mut io, p) = MemoryIo::gated(frames, 4);
        let mut out = Vec::new();
        assert_eq!(io.recv(Duration::ZERO, &mut out).unwrap(), 0);
        p.release(6);
        assert_eq!(io.recv(Duration::ZERO, &mut out).unwrap(), 4);
        assert_eq!(io.recv(Duration::ZERO, &mut out).unwrap(), 2);
        assert_eq!(io.recv(Duration::ZERO, &mut out).unwrap(), 0);
        p.release(100);
        assert_eq!(io.recv(Duration::ZERO, &mut out).unwrap(), 4);
        assert_eq!(io.recv(Duration::ZERO, &mut out).unwrap(), 0);
        assert_eq!(p.received(), 10);
    }
}
