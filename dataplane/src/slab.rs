//! A worker's packet slab: fixed-size slots, preallocated, for frames held in the delay wheel.
//!
//! Two pools: small slots for ack and regular frames, large slots for extended ones, so a
//! worker can hold many regular packets without reserving 33 KiB for each. Allocation and
//! release are O(1) pushes and pops on a free list; nothing grows after construction, and a full
//! pool is reported so the caller can count a drop.

/// Bytes in a small slot: a v8 regular frame (4 + 2413), rounded up.
pub(crate) const SMALL_SLOT: usize = 2432;
/// Bytes in a large slot: a v8 ext32 frame (4 + 33133), rounded up.
pub(crate) const LARGE_SLOT: usize = 33_152;

/// A slot handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SlotId(u32);

const LARGE_BIT: u32 = 1 << 31;

struct Pool {
    slot: usize,
    data: Vec<u8>,
    free: Vec<u32>,
}

impl Pool {
    fn new(slot: usize, count: usize) -> Pool {
        Pool {
            slot,
            data: vec![0u8; slot * count],
            free: (0..count as u32).rev().collect(),
        }
    }
}

/// The slab.
pub(crate) struct Slab {
    small: Pool,
    large: Pool,
}

impl Slab {
    /// A slab with `small` small slots and `large` large slots.
    pub(crate) fn new(small: usize, large: usize) -> Slab {
        assert!(small < LARGE_BIT as usize && large < LARGE_BIT as usize);
        Slab {
            small: Pool::new(SMALL_SLOT, small),
            large: Pool::new(LARGE_SLOT, large),
        }
    }

    /// Allocates a slot for `len` bytes, or `None` when the pool for that size is exhausted
    /// (or `len` is larger than a large slot).
    pub(crate) fn alloc(&mut self, len: usize) -> Option<SlotId> {
        if len <= SMALL_SLOT {
            self.small.free.pop().map(SlotId)
        } else if len <= LARGE_SLOT {
            self.large.free.pop().map(|i| SlotId(i | LARGE_BIT))
        } else {
            None
        }
    }

    fn pool_index(&self, id: SlotId) -> (&Pool, usize) {
        if id.0 & LARGE_BIT != 0 {
            (&self.large, (id.0 & !LARGE_BIT) as usize)
        } else {
            (&self.small, id.0 as usize)
        }
    }

    /// The slot's bytes (its full size).
    pub(crate) fn get(&self, id: SlotId) -> &[u8] {
        let (p, i) = self.pool_index(id);
        &p.data[i * p.slot..(i + 1) * p.slot]
    }

    /// The slot's bytes, mutably.
    pub(crate) fn get_mut(&mut self, id: SlotId) -> &mut [u8] {
        let (large, i) = (id.0 & LARGE_BIT != 0, (id.0 & !LARGE_BIT) as usize);
        let p = if large {
            &mut self.large
        } else {
            &mut self.small
        };
        &mut p.data[i * p.slot..(i + 1) * p.slot]
    }

    /// Returns a slot to its pool.
    pub(crate) fn free(&mut self, id: SlotId) {
        if id.0 & LARGE_BIT != 0 {
            self.large.free.push(id.0 & !LARGE_BIT);
        } else {
            self.small.free.push(id.0);
        }
    }

    /// Slots in use (small, large).
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> (usize, usize) {
        (
            self.small.data.len() / self.small.slot - self.small.free.len(),
            self.large.data.len() / self.large.slot - self.large.free.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_bounded_and_reusable() {
        let mut s = Slab::new(2, 1);
        let a = s.alloc(100).unwrap();
        let b = s.alloc(SMALL_SLOT).unwrap();
        assert!(s.alloc(10).is_none(), "small pool exhausted");
        let c = s.alloc(SMALL_SLOT + 1).unwrap();
        assert!(s.alloc(LARGE_SLOT).is_none(), "large pool exhausted");
        assert!(s.alloc(LARGE_SLOT + 1).is_none(), "too large for any slot");
        s.get_mut(a)[..3].copy_from_slice(b"abc");
        s.get_mut(c)[..3].copy_from_slice(b"xyz");
        assert_eq!(&s.get(a)[..3], b"abc");
        assert_eq!(&s.get(c)[..3], b"xyz");
        assert_eq!(s.in_use(), (2, 1));
        s.free(b);
        assert_eq!(s.alloc(5), Some(b));
        s.free(a);
        s.free(b);
        s.free(c);
        assert_eq!(s.in_use(), (0, 0));
    }
}
