//! Per-worker hashed timing wheel that holds packets until their release deadline.
//!
//! Each worker owns one [`DelayWheel`]; it is single-threaded, takes no locks and never
//! allocates after [`DelayWheel::new`]: every item lives in a preallocated slab of nodes that
//! are threaded onto intrusive singly-linked lists (one per slot, `u32` indices), so
//! [`insert`](DelayWheel::insert) is O(1) and [`expire`](DelayWheel::expire) is O(1) per
//! released item plus a bitmap scan over empty slots.
//!
//! # Time model
//!
//! Time is a caller-supplied monotonic clock in nanoseconds (`now_ns: u64`). It is divided into
//! ticks of `tick_ns`. An item with deadline `d` gets the *release tick* `r = ceil(d / tick_ns)`
//! (the first tick boundary at or after `d`), and `expire(now)` releases every item with
//! `r <= floor(now / tick_ns)`. Hence:
//!
//! * **never early**: a released item has `d <= r * tick_ns <= now`;
//! * **at most one tick late**: after `expire(now)` returns, every item still held has
//!   `d > now - tick_ns`. With `expire` called at least once per tick an item leaves the wheel
//!   less than one tick after its deadline (plus the caller's own polling slack);
//! * **tick order**: items are released in non-decreasing release tick; within one tick in no
//!   particular order.
//!
//! Deadlines at or before the time of the most recent `expire` call (or construction) are
//! *past*: they go to a separate list that the next `expire` releases first, whatever `now` it
//! is given, in insertion order. Deadlines beyond `wheel_now + max_delay_ns` (where `wheel_now`
//! is the time of the most recent `expire` call or construction) are **clamped** to that cap:
//! such an item is released at the cap, i.e. possibly before its deadline. The node never asks
//! for more than the cap (Nym's maximum delay), so this only bounds misbehaving input.
//! Clock values above `u64::MAX - tick_ns` (about 584 years) are saturated to it.
//!
//! # Levels
//!
//! The inner level has `slots` slots (a power of two), one per tick, covering
//! `slots * tick_ns` (4096 x 1 ms ≈ 4.1 s by default). Items further out than that go to an
//! overflow level whose buckets each cover one whole inner revolution ("epoch" =
//! `tick >> log2(slots)`); when the wheel reaches the first tick of an epoch, that epoch's
//! overflow bucket is cascaded into the inner slots. Every item cascades at most once. Large
//! clock jumps skip empty stretches using the slot-occupancy bitmap, so a jump costs
//! O(items released + slots/64 per epoch crossed with items) — never one step per tick.

use std::fmt;

/// Sentinel for "no node" in the intrusive lists.
const NIL: u32 = u32::MAX;
/// Largest supported capacity (node indices are `u32`, `u32::MAX` is the sentinel).
pub const MAX_CAPACITY: usize = (u32::MAX - 1) as usize;
/// Largest supported number of inner slots.
pub const MAX_SLOTS: usize = 1 << 24;
/// Largest supported number of overflow buckets (`max_delay / (slots * tick)`, rounded up).
pub const MAX_OVERFLOW_BUCKETS: u64 = 1 << 16;

/// Construction parameters of a [`DelayWheel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WheelConfig {
    /// Tick length in nanoseconds (default 1 ms).
    pub tick_ns: u64,
    /// Number of inner slots; a power of two (default 4096).
    pub slots: usize,
    /// Maximum number of items held at once (default 262 144).
    pub capacity: usize,
    /// Longest delay accepted; longer deadlines are clamped to it (default 10 s).
    pub max_delay_ns: u64,
}

impl Default for WheelConfig {
    fn default() -> Self {
        Self {
            tick_ns: 1_000_000,
            slots: 4096,
            capacity: 1 << 18,
            max_delay_ns: 10_000_000_000,
        }
    }
}

impl WheelConfig {
    /// The default configuration with the given capacity.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }
}

/// Why a [`WheelConfig`] was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WheelConfigError {
    /// `tick_ns` was zero.
    #[error("tick_ns must be greater than zero")]
    ZeroTick,
    /// `slots` was not a power of two in `2..=MAX_SLOTS`.
    #[error("slots must be a power of two between 2 and {MAX_SLOTS}, got {0}")]
    BadSlots(usize),
    /// `capacity` was zero or above [`MAX_CAPACITY`].
    #[error("capacity must be between 1 and {MAX_CAPACITY}, got {0}")]
    BadCapacity(usize),
    /// `max_delay_ns` was zero.
    #[error("max_delay_ns must be greater than zero")]
    ZeroMaxDelay,
    /// `max_delay_ns` spans too many inner revolutions for the overflow level.
    #[error(
        "max_delay_ns needs {0} overflow buckets (more than {MAX_OVERFLOW_BUCKETS}); \
         raise tick_ns or slots"
    )]
    DelayTooLong(u64),
}

/// [`DelayWheel::insert`] failed because the wheel holds `capacity` items; the item is handed
/// back so that the caller can recycle its buffer and count the drop.
pub struct WheelFull<T>(pub T);

impl<T> WheelFull<T> {
    /// The item that was not inserted.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for WheelFull<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WheelFull(..)")
    }
}

impl<T> fmt::Display for WheelFull<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("delay wheel is at capacity")
    }
}

impl<T> std::error::Error for WheelFull<T> {}

struct Node<T> {
    item: Option<T>,
    /// Next node in the same list (or in the free list), `NIL` at the end.
    next: u32,
    /// Release tick (for past items: irrelevant).
    tick: u64,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    /// Valid only while `head != NIL`.
    tail: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };
}

#[derive(Clone, Copy)]
enum Which {
    Due,
    Inner(usize),
    Over(usize),
}

/// A hashed timing wheel; see the [module documentation](self).
pub struct DelayWheel<T> {
    tick_ns: u64,
    /// Saturation point for clock values, `u64::MAX - tick_ns`.
    time_max: u64,
    slot_bits: u32,
    slot_mask: u64,
    /// `ceil(max_delay_ns / tick_ns)`.
    max_ticks: u64,
    capacity: usize,

    nodes: Vec<Node<T>>,
    free: u32,
    len: usize,

    /// Past-deadline items, released first by the next `expire`.
    due: List,
    /// Inner level: slot `tick & slot_mask` holds the items of release tick `tick`, for ticks in
    /// `[cur, cur + slots)`.
    inner: Box<[List]>,
    /// One bit per inner slot: set when the slot may be non-empty.
    occupied: Box<[u64]>,
    inner_len: usize,
    /// Overflow level: bucket `epoch & over_mask` holds the items of `epoch`, for epochs in
    /// `(cur >> slot_bits, (cur + max_ticks) >> slot_bits]`.
    over: Box<[List]>,
    over_epoch: Box<[u64]>,
    /// Smallest release tick in each non-empty overflow bucket.
    over_min: Box<[u64]>,
    over_mask: u64,
    over_len: usize,

    /// Next tick to process: all ticks `< cur` are done. Always `last_now / tick_ns + 1`.
    cur: u64,
    /// Clock value of the latest `expire` (or construction).
    last_now: u64,
}

impl<T> DelayWheel<T> {
    /// Builds a wheel whose clock starts at `now_ns`, preallocating `config.capacity` nodes.
    pub fn new(config: WheelConfig, now_ns: u64) -> Result<Self, WheelConfigError> {
        let WheelConfig {
            tick_ns,
            slots,
            capacity,
            max_delay_ns,
        } = config;
        if tick_ns == 0 {
            return Err(WheelConfigError::ZeroTick);
        }
        if !slots.is_power_of_two() || !(2..=MAX_SLOTS).contains(&slots) {
            return Err(WheelConfigError::BadSlots(slots));
        }
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(WheelConfigError::BadCapacity(capacity));
        }
        if max_delay_ns == 0 {
            return Err(WheelConfigError::ZeroMaxDelay);
        }
        let slot_bits = slots.trailing_zeros();
        let max_ticks = max_delay_ns.div_ceil(tick_ns);
        // Live overflow epochs lie in (cur >> bits, (cur + max_ticks) >> bits]: at most
        // max_ticks / slots + 1 of them, so that many + 1 buckets never collide.
        let over_needed = (max_ticks >> slot_bits) + 2;
        if over_needed > MAX_OVERFLOW_BUCKETS {
            return Err(WheelConfigError::DelayTooLong(over_needed));
        }
        let over_buckets = over_needed.next_power_of_two() as usize;
        let time_max = u64::MAX - tick_ns;
        let now = now_ns.min(time_max);

        let mut nodes = Vec::with_capacity(capacity);
        for i in 0..capacity {
            let next = if i + 1 < capacity {
                (i + 1) as u32
            } else {
                NIL
            };
            nodes.push(Node {
                item: None,
                next,
                tick: 0,
            });
        }
        Ok(Self {
            tick_ns,
            time_max,
            slot_bits,
            slot_mask: (slots - 1) as u64,
            max_ticks,
            capacity,
            nodes,
            free: 0,
            len: 0,
            due: List::EMPTY,
            inner: vec![List::EMPTY; slots].into_boxed_slice(),
            occupied: vec![0u64; slots.div_ceil(64)].into_boxed_slice(),
            inner_len: 0,
            over: vec![List::EMPTY; over_buckets].into_boxed_slice(),
            over_epoch: vec![0u64; over_buckets].into_boxed_slice(),
            over_min: vec![u64::MAX; over_buckets].into_boxed_slice(),
            over_mask: (over_buckets - 1) as u64,
            over_len: 0,
            cur: now / tick_ns + 1,
            last_now: now,
        })
    }

    /// Number of items held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no item is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of items held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tick length in nanoseconds.
    pub fn tick_ns(&self) -> u64 {
        self.tick_ns
    }

    /// The wheel's clock: the `now_ns` of the latest [`expire`](Self::expire) (or construction).
    pub fn now_ns(&self) -> u64 {
        self.last_now
    }

    /// Holds `item` until `deadline_ns`.
    ///
    /// A deadline at or before [`now_ns`](Self::now_ns) is released by the next `expire`; one
    /// beyond `now_ns() + max_delay_ns` is clamped to that cap (see the module docs). When the
    /// wheel already holds `capacity` items the item is returned in [`WheelFull`].
    pub fn insert(&mut self, deadline_ns: u64, item: T) -> Result<(), WheelFull<T>> {
        if self.len == self.capacity {
            return Err(WheelFull(item));
        }
        let idx = self.free;
        debug_assert_ne!(idx, NIL);
        let deadline = deadline_ns.min(self.time_max);
        let (which, tick) = if deadline <= self.last_now {
            (Which::Due, self.cur - 1)
        } else {
            // deadline > last_now implies ceil(deadline / tick) >= last_now / tick + 1 == cur.
            let tick = deadline
                .div_ceil(self.tick_ns)
                .min(self.cur.saturating_add(self.max_ticks));
            debug_assert!(tick >= self.cur);
            if tick - self.cur <= self.slot_mask {
                (Which::Inner((tick & self.slot_mask) as usize), tick)
            } else {
                let epoch = tick >> self.slot_bits;
                let b = (epoch & self.over_mask) as usize;
                if self.over[b].head == NIL {
                    self.over_epoch[b] = epoch;
                    self.over_min[b] = tick;
                } else {
                    debug_assert_eq!(self.over_epoch[b], epoch);
                    self.over_min[b] = self.over_min[b].min(tick);
                }
                (Which::Over(b), tick)
            }
        };
        let node = &mut self.nodes[idx as usize];
        self.free = node.next;
        node.item = Some(item);
        node.tick = tick;
        self.len += 1;
        match which {
            Which::Inner(s) => {
                self.inner_len += 1;
                self.occupied[s >> 6] |= 1 << (s & 63);
            }
            Which::Over(_) => self.over_len += 1,
            Which::Due => {}
        }
        self.push_back(which, idx);
        Ok(())
    }

    /// Releases, through `f`, every item whose release tick is at or before `now_ns` (plus
    /// every past item), in non-decreasing tick order, and advances the wheel's clock to
    /// `now_ns`. Returns the number of items released.
    ///
    /// A `now_ns` below the wheel's clock (a clock that went backwards) releases only past
    /// items and leaves the clock where it is. If `f` panics, the items not yet released stay
    /// in the wheel.
    pub fn expire(&mut self, now_ns: u64, mut f: impl FnMut(T)) -> usize {
        let mut released = self.release_list(Which::Due, &mut f);
        let now = now_ns.min(self.time_max);
        if now < self.last_now {
            return released;
        }
        self.last_now = now;
        let now_tick = now / self.tick_ns;
        while self.cur <= now_tick {
            if self.len == 0 {
                self.cur = now_tick + 1;
                break;
            }
            let cur = self.cur;
            let epoch = cur >> self.slot_bits;
            if cur & self.slot_mask == 0 {
                self.cascade(epoch);
            }
            let epoch_last = cur | self.slot_mask;
            let limit = epoch_last.min(now_tick);
            if self.inner_len == 0 {
                // Nothing in the inner level: jump to the next epoch start (or past now).
                self.cur = limit + 1;
                continue;
            }
            match self.next_occupied(cur, limit) {
                Some(t) => {
                    let slot = (t & self.slot_mask) as usize;
                    released += self.release_list(Which::Inner(slot), &mut f);
                    self.occupied[slot >> 6] &= !(1 << (slot & 63));
                    self.cur = t + 1;
                }
                None => self.cur = limit + 1,
            }
        }
        released
    }

    /// [`expire`](Self::expire) into a collection.
    pub fn expire_into(&mut self, now_ns: u64, out: &mut impl Extend<T>) -> usize {
        let mut n = 0;
        // Extend one at a time so that no intermediate buffer is needed.
        self.expire(now_ns, |item| {
            out.extend(std::iter::once(item));
            n += 1;
        });
        n
    }

    /// Clock value (ns) of the earliest tick boundary at which `expire` would release
    /// something, or `None` when the wheel is empty. Past items make it [`now_ns`](Self::now_ns).
    /// A worker can sleep until this time (it never lies later than the earliest release).
    /// Cost: O(slots / 64 + overflow buckets).
    pub fn next_deadline_hint(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        if self.due.head != NIL {
            return Some(self.last_now);
        }
        let mut best = u64::MAX;
        if self.inner_len > 0 {
            let start = self.cur & self.slot_mask;
            let slots = self.slot_mask + 1;
            let found = self
                .scan_bitmap(start, self.slot_mask)
                .map(|s| s - start)
                .or_else(|| {
                    (start > 0)
                        .then(|| self.scan_bitmap(0, start - 1))
                        .flatten()
                        .map(|s| slots - start + s)
                });
            if let Some(off) = found {
                best = self.cur + off;
            }
        }
        if self.over_len > 0 {
            for (b, list) in self.over.iter().enumerate() {
                if list.head != NIL {
                    best = best.min(self.over_min[b]);
                }
            }
        }
        (best != u64::MAX).then(|| best.saturating_mul(self.tick_ns))
    }

    /// Releases every held item through `f` (shutdown): past items first, then the inner level
    /// in tick order, then the overflow level in epoch order (unordered within an epoch).
    /// Returns the number released.
    pub fn drain_all(&mut self, mut f: impl FnMut(T)) -> usize {
        let mut released = self.release_list(Which::Due, &mut f);
        let slots = self.slot_mask + 1;
        for i in 0..slots {
            if self.inner_len == 0 {
                break;
            }
            let slot = (self.cur.wrapping_add(i) & self.slot_mask) as usize;
            released += self.release_list(Which::Inner(slot), &mut f);
        }
        self.occupied.fill(0);
        while self.over_len > 0 {
            let b = (0..self.over.len())
                .filter(|&b| self.over[b].head != NIL)
                .min_by_key(|&b| self.over_epoch[b])
                .expect("over_len > 0 implies a non-empty bucket");
            released += self.release_list(Which::Over(b), &mut f);
        }
        released
    }

    fn list_mut(&mut self, which: Which) -> &mut List {
        match which {
            Which::Due => &mut self.due,
            Which::Inner(s) => &mut self.inner[s],
            Which::Over(b) => &mut self.over[b],
        }
    }

    fn push_back(&mut self, which: Which, idx: u32) {
        self.nodes[idx as usize].next = NIL;
        let list = self.list_mut(which);
        if list.head == NIL {
            *list = List {
                head: idx,
                tail: idx,
            };
        } else {
            let tail = list.tail;
            list.tail = idx;
            self.nodes[tail as usize].next = idx;
        }
    }

    /// Pops and releases a whole list, keeping the wheel consistent at every step.
    fn release_list(&mut self, which: Which, f: &mut impl FnMut(T)) -> usize {
        let mut n = 0;
        loop {
            let list = self.list_mut(which);
            let idx = list.head;
            if idx == NIL {
                return n;
            }
            let node = &mut self.nodes[idx as usize];
            let next = node.next;
            let item = node.item.take().expect("listed node holds an item");
            node.next = self.free;
            self.free = idx;
            self.list_mut(which).head = next;
            self.len -= 1;
            match which {
                Which::Inner(_) => self.inner_len -= 1,
                Which::Over(_) => self.over_len -= 1,
                Which::Due => {}
            }
            n += 1;
            f(item);
        }
    }

    /// Moves the overflow bucket of `epoch` (whose first tick is `cur`) into the inner level.
    fn cascade(&mut self, epoch: u64) {
        let b = (epoch & self.over_mask) as usize;
        if self.over[b].head == NIL || self.over_epoch[b] != epoch {
            return;
        }
        let mut idx = std::mem::replace(&mut self.over[b], List::EMPTY).head;
        self.over_min[b] = u64::MAX;
        while idx != NIL {
            let node = &self.nodes[idx as usize];
            let next = node.next;
            debug_assert_eq!(node.tick >> self.slot_bits, epoch);
            let slot = (node.tick & self.slot_mask) as usize;
            self.over_len -= 1;
            self.inner_len += 1;
            self.occupied[slot >> 6] |= 1 << (slot & 63);
            self.push_back(Which::Inner(slot), idx);
            idx = next;
        }
    }

    /// First occupied tick in `[from, to]`; both in the same epoch.
    fn next_occupied(&self, from: u64, to: u64) -> Option<u64> {
        let base = from & !self.slot_mask;
        self.scan_bitmap(from & self.slot_mask, to & self.slot_mask)
            .map(|s| base | s)
    }

    /// First set bit of the occupancy bitmap in slot range `[lo, hi]`.
    fn scan_bitmap(&self, lo: u64, hi: u64) -> Option<u64> {
        if lo > hi {
            return None;
        }
        let (lw, hw) = ((lo >> 6) as usize, (hi >> 6) as usize);
        for w in lw..=hw {
            let mut bits = self.occupied[w];
            if w == lw {
                bits &= u64::MAX << (lo & 63);
            }
            if w == hw {
                bits &= u64::MAX >> (63 - (hi & 63));
            }
            if bits != 0 {
                return Some(((w as u64) << 6) | u64::from(bits.trailing_zeros()));
            }
        }
        None
    }
}

impl<T> fmt::Debug for DelayWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayWheel")
            .field("tick_ns", &self.tick_ns)
            .field("slots", &(self.slot_mask + 1))
            .field("capacity", &self.capacity)
            .field("len", &self.len)
            .field("now_ns", &self.last_now)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
