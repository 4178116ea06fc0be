use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const MS: u64 = 1_000_000;

fn cfg(tick_ns: u64, slots: usize, capacity: usize, max_delay_ns: u64) -> WheelConfig {
    WheelConfig {
        tick_ns,
        slots,
        capacity,
        max_delay_ns,
    }
}

fn expire_vec<T>(w: &mut DelayWheel<T>, now: u64) -> Vec<T> {
    let mut out = Vec::new();
    let n = w.expire_into(now, &mut out);
    assert_eq!(n, out.len());
    out
}

#[test]
fn config_validation() {
    let ok = WheelConfig::default();
    assert!(DelayWheel::<u32>::new(ok, 0).is_ok());
    let e = |c| DelayWheel::<u32>::new(c, 0).unwrap_err();
    assert_eq!(
        e(WheelConfig { tick_ns: 0, ..ok }),
        WheelConfigError::ZeroTick
    );
    assert_eq!(
        e(WheelConfig { slots: 3000, ..ok }),
        WheelConfigError::BadSlots(3000)
    );
    assert_eq!(
        e(WheelConfig { slots: 1, ..ok }),
        WheelConfigError::BadSlots(1)
    );
    assert_eq!(
        e(WheelConfig { capacity: 0, ..ok }),
        WheelConfigError::BadCapacity(0)
    );
    assert_eq!(
        e(WheelConfig {
            max_delay_ns: 0,
            ..ok
        }),
        WheelConfigError::ZeroMaxDelay
    );
    assert!(matches!(
        e(WheelConfig { tick_ns: 1, ..ok }),
        WheelConfigError::DelayTooLong(_)
    ));
}

#[test]
fn releases_at_deadline_not_before() {
    let mut w = DelayWheel::new(WheelConfig::with_capacity(16), 0).unwrap();
    w.insert(5 * MS, 'a').unwrap();
    w.insert(5 * MS + 1, 'b').unwrap(); // rounds up to tick 6
    w.insert(3 * MS, 'c').unwrap();
    assert_eq!(w.next_deadline_hint(), Some(3 * MS));
    assert!(expire_vec(&mut w, 3 * MS - 1).is_empty());
    assert_eq!(expire_vec(&mut w, 3 * MS), vec!['c']);
    assert_eq!(expire_vec(&mut w, 5 * MS + 999_999), vec!['a']);
    assert_eq!(w.next_deadline_hint(), Some(6 * MS));
    assert_eq!(expire_vec(&mut w, 6 * MS), vec!['b']);
    assert!(w.is_empty());
    assert_eq!(w.next_deadline_hint(), None);
}

#[test]
fn past_and_now_deadlines_release_at_next_expire() {
    let start = 10 * MS + 123;
    let mut w = DelayWheel::new(WheelConfig::with_capacity(16), start).unwrap();
    w.insert(0, 1).unwrap();
    w.insert(start, 2).unwrap();
    w.insert(start + 1, 3).unwrap(); // future: tick 11
    assert_eq!(w.next_deadline_hint(), Some(start));
    // Same clock value: the past items come out, the future one does not.
    assert_eq!(expire_vec(&mut w, start), vec![1, 2]);
    assert_eq!(expire_vec(&mut w, 11 * MS), vec![3]);
    // Clock going backwards: nothing early, past items still flushed.
    w.insert(20 * MS, 4).unwrap();
    w.insert(5 * MS, 5).unwrap();
    assert_eq!(expire_vec(&mut w, 2 * MS), vec![5]);
    assert_eq!(w.now_ns(), 11 * MS);
    assert_eq!(expire_vec(&mut w, 20 * MS), vec![4]);
}

#[test]
fn slot_boundaries_and_wheel_span() {
    // 8 slots of 1 ms: span 8 ms, overflow beyond.
    let mut w = DelayWheel::new(cfg(MS, 8, 64, 100 * MS), 0).unwrap();
    for t in [7, 8, 9, 15, 16, 17, 63, 64, 100] {
        w.insert(t * MS, t).unwrap();
    }
    let mut got = Vec::new();
    for now in 0..=100 {
        let out = expire_vec(&mut w, now * MS);
        for &t in &out {
            assert_eq!(t, now, "released at the exact tick boundary");
        }
        got.extend(out);
    }
    assert_eq!(got, vec![7, 8, 9, 15, 16, 17, 63, 64, 100]);
}

#[test]
fn exactly_max_delay_and_beyond_is_clamped() {
    let max = 10_000 * MS;
    let start = 123_456_789;
    let mut w = DelayWheel::new(WheelConfig::with_capacity(8), start).unwrap();
    w.insert(start + max, "max").unwrap();
    w.insert(start + max + 5_000 * MS, "beyond").unwrap();
    w.insert(u64::MAX, "far").unwrap();
    assert!(expire_vec(&mut w, start + max - 1).is_empty());
    // The cap is ceil((start + max) / tick): all three come out there, none earlier.
    let cap = (start + max).div_ceil(MS) * MS;
    assert!(expire_vec(&mut w, cap - 1).is_empty());
    let mut out = expire_vec(&mut w, cap);
    out.sort();
    assert_eq!(out, vec!["beyond", "far", "max"]);
}

#[test]
fn capacity_returns_the_item() {
    let mut w = DelayWheel::new(cfg(MS, 8, 2, 10 * MS), 0).unwrap();
    w.insert(MS, 1).unwrap();
    w.insert(2 * MS, 2).unwrap();
    let err = w.insert(3 * MS, 3).unwrap_err();
    assert_eq!(err.into_inner(), 3);
    assert_eq!(w.len(), 2);
    assert_eq!(w.capacity(), 2);
    assert_eq!(expire_vec(&mut w, MS), vec![1]);
    w.insert(3 * MS, 3).unwrap(); // the freed node is reused
    assert_eq!(expire_vec(&mut w, 10 * MS), vec![2, 3]);
}

#[test]
fn near_u64_overflow() {
    let tick = MS;
    let start = u64::MAX - 20_000 * MS;
    let mut w = DelayWheel::new(WheelConfig::with_capacity(8), start).unwrap();
    w.insert(start.saturating_add(5 * MS), 1).unwrap();
    w.insert(start.saturating_add(30_000 * MS), 2).unwrap(); // saturates, then clamps
    w.insert(u64::MAX, 3).unwrap();
    assert!(expire_vec(&mut w, start + 4 * MS).is_empty());
    assert_eq!(expire_vec(&mut w, start + 6 * MS), vec![1]);
    let out = expire_vec(&mut w, u64::MAX);
    assert_eq!(out.len(), 2);
    assert!(w.is_empty());
    // The clock saturates at u64::MAX - tick; further calls are no-ops and do not panic.
    assert_eq!(w.now_ns(), u64::MAX - tick);
    w.insert(u64::MAX, 4).unwrap();
    assert_eq!(expire_vec(&mut w, u64::MAX), vec![4]);

    // A 1 ns tick at the very top of the range.
    let mut w = DelayWheel::new(cfg(1, 8, 8, 100), u64::MAX - 50).unwrap();
    w.insert(u64::MAX - 10, 1).unwrap();
    w.insert(u64::MAX, 2).unwrap();
    assert!(expire_vec(&mut w, u64::MAX - 11).is_empty());
    assert_eq!(expire_vec(&mut w, u64::MAX - 10), vec![1]);
    assert_eq!(expire_vec(&mut w, u64::MAX), vec![2]);
}

#[test]
fn huge_jump_releases_everything_in_order() {
    let mut w = DelayWheel::new(WheelConfig::with_capacity(1024), 0).unwrap();
    let mut expected = Vec::new();
    for i in 0..1000u64 {
        let d = (i * 7919) % 10_000 * MS + 1;
        w.insert(d, d).unwrap();
        expected.push(d);
    }
    let out = expire_vec(&mut w, 1_000_000_000 * MS);
    assert_eq!(out.len(), 1000);
    let ticks: Vec<u64> = out.iter().map(|d| d.div_ceil(MS)).collect();
    assert!(ticks.windows(2).all(|p| p[0] <= p[1]));
    expected.sort();
    let mut sorted = out.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
}

#[test]
fn drain_all_returns_everything() {
    let mut w = DelayWheel::new(cfg(MS, 16, 64, 1000 * MS), 0).unwrap();
    for i in 0..50u64 {
        w.insert((i * 37) % 1000 * MS, i).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(w.drain_all(|x| out.push(x)), 50);
    out.sort();
    assert_eq!(out, (0..50).collect::<Vec<_>>());
    assert!(w.is_empty());
    assert_eq!(w.next_deadline_hint(), None);
    // Usable afterwards.
    w.insert(5 * MS, 99).unwrap();
    assert_eq!(expire_vec(&mut w, 5 * MS), vec![99]);
}

#[test]
fn no_allocation_growth() {
    // Nodes are recycled: a long run never needs more than `capacity` nodes.
    let mut w = DelayWheel::new(cfg(MS, 64, 32, 500 * MS), 0).unwrap();
    let mut now = 0;
    let mut id = 0u64;
    for _ in 0..10_000 {
        while w.len() < w.capacity() {
            w.insert(now + (id * 13) % 400 * MS, id).unwrap();
            id += 1;
        }
        now += 3 * MS;
        w.expire(now, |_| {});
    }
    assert_eq!(w.nodes.len(), 32);
}

// ---------------------------------------------------------------------------------------------
// Property test against a model that predicts the exact release set.

#[derive(Clone, Debug)]
enum Op {
    /// Insert with deadline `now + offset` (offset may be negative).
    Insert(i64),
    /// Advance the clock by this much and expire.
    Advance(u64),
    /// Expire without advancing.
    ExpireSame,
}

fn op_strategy(tick: u64, span: u64, max_delay: u64) -> impl Strategy<Value = Op> {
    let t = tick as i64;
    let s = span as i64;
    let m = max_delay as i64;
    prop_oneof![
        4 => (-3 * t..=3 * t).prop_map(Op::Insert),
        4 => (0..=s + 2 * t).prop_map(Op::Insert),
        3 => (0..=m + 3 * t).prop_map(Op::Insert),
        1 => (m..=4 * m + 10).prop_map(Op::Insert),
        1 => (-(1i64 << 40)..0).prop_map(Op::Insert),
        4 => (0..=2 * tick).prop_map(Op::Advance),
        2 => (0..=span + tick).prop_map(Op::Advance),
        1 => (span..=3 * max_delay + span).prop_map(Op::Advance),
        1 => (1u64 << 30..1u64 << 45).prop_map(Op::Advance),
        1 => Just(Op::ExpireSame),
    ]
}

struct Held {
    deadline: u64,
    /// Release tick predicted by the model.
    tick: u64,
    /// Deadline was at or before the wheel clock when inserted.
    past: bool,
    /// Deadline was clamped to the cap.
    clamped: bool,
}

fn run_model(config: WheelConfig, start: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let tick = config.tick_ns;
    let max_ticks = config.max_delay_ns.div_ceil(tick);
    let time_max = u64::MAX - tick;
    let mut w = DelayWheel::new(config, start).unwrap();
    let mut held: BTreeMap<u64, Held> = BTreeMap::new();
    let mut now = start;
    let mut wheel_now = start;
    let mut next_id = 0u64;
    let mut last_future_tick = 0u64;
    let mut out = Vec::new();

    for op in ops {
        let advance = match *op {
            Op::Insert(off) => {
                let deadline = if off >= 0 {
                    now.saturating_add(off as u64)
                } else {
                    now.saturating_sub(off.unsigned_abs())
                }
                .min(time_max);
                let id = next_id;
                next_id += 1;
                let res = w.insert(deadline, id);
                if held.len() == config.capacity {
                    prop_assert_eq!(res.map_err(|e| e.into_inner()), Err(id));
                    continue;
                }
                prop_assert!(res.is_ok());
                let cur = wheel_now / tick + 1;
                let past = deadline <= wheel_now;
                let natural = deadline.div_ceil(tick);
                let cap = cur + max_ticks;
                let clamped = !past && natural > cap;
                let t = if past { 0 } else { natural.min(cap) };
                held.insert(
                    id,
                    Held {
                        deadline,
                        tick: t,
                        past,
                        clamped,
                    },
                );
                prop_assert_eq!(w.len(), held.len());
                continue;
            }
            Op::Advance(dt) => dt,
            Op::ExpireSame => 0,
        };
        now = now.saturating_add(advance).min(time_max);
        // The hint never lies later than the earliest release.
        if let Some(h) = w.next_deadline_hint() {
            let earliest = held
                .values()
                .map(|h| if h.past { wheel_now } else { h.tick * tick })
                .min()
                .unwrap();
            prop_assert_eq!(h, earliest);
        } else {
            prop_assert!(held.is_empty());
        }
        out.clear();
        w.expire_into(now, &mut out);
        wheel_now = wheel_now.max(now);
        let now_tick = now / tick;
        let mut expected: Vec<u64> = held
            .iter()
            .filter(|(_, h)| h.past || h.tick <= now_tick)
            .map(|(&id, _)| id)
            .collect();
        let mut got = out.clone();
        got.sort();
        expected.sort();
        prop_assert_eq!(&got, &expected, "release set at now={}", now);
        // Order: past items first, then non-decreasing tick, also across calls.
        let mut seen_future = false;
        for id in &out {
            let h = held.remove(id).unwrap();
            if h.past {
                prop_assert!(!seen_future, "past item after a future one");
                prop_assert!(h.deadline <= now);
            } else {
                seen_future = true;
                prop_assert!(h.tick >= last_future_tick, "tick order");
                last_future_tick = h.tick;
                if !h.clamped {
                    prop_assert!(h.deadline <= now, "released early");
                }
            }
        }
        // At most one tick late: everything still held is due after now - tick.
        for h in held.values() {
            prop_assert!(!h.past);
            if h.clamped {
                prop_assert!(h.tick * tick > now);
            } else {
                prop_assert!(h.deadline + tick > now, "held too long");
            }
        }
        prop_assert_eq!(w.len(), held.len());
    }
    let mut rest = Vec::new();
    w.drain_all(|x| rest.push(x));
    rest.sort();
    let expected: Vec<u64> = held.keys().copied().collect();
    prop_assert_eq!(rest, expected);
    prop_assert!(w.is_empty());
    Ok(())
}

fn config_strategy() -> impl Strategy<Value = (WheelConfig, u64)> {
    (
        prop_oneof![Just(1u64), Just(7), Just(1000), Just(MS)],
        prop_oneof![Just(2usize), Just(8), Just(64), Just(4096)],
        prop_oneof![1 => 1usize..8, 3 => Just(1 << 12)],
        1u64..=40,
        prop_oneof![Just(0u64), 0..u64::MAX / 2, Just(u64::MAX - (1 << 50))],
    )
        .prop_map(|(tick, slots, capacity, revs, start)| {
            // max_delay: a few inner revolutions, within the overflow bucket limit.
            let max_delay = tick * slots as u64 * revs / 4 + 1;
            (cfg(tick, slots, capacity, max_delay), start)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn wheel_matches_model(
        (config, start, ops) in config_strategy().prop_flat_map(|(config, start)| {
            let span = config.tick_ns * config.slots as u64;
            let ops = prop::collection::vec(
                op_strategy(config.tick_ns, span, config.max_delay_ns),
                1..300,
            );
            (Just(config), Just(start), ops)
        }),
    ) {
        run_model(config, start, &ops)?;
    }

    #[test]
    fn default_wheel_matches_model(
        ops in prop::collection::vec(op_strategy(MS, 4096 * MS, 10_000 * MS), 1..400),
        start in 0u64..1 << 50,
    ) {
        run_model(WheelConfig::with_capacity(256), start, &ops)?;
    }
}
