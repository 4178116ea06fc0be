use super::*;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

/// splitmix64: deterministic stand-in for uniformly random HKDF tags.
struct Tags(u64);

impl Tags {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn tag(&mut self) -> [u8; 32] {
        let mut t = [0u8; 32];
        for c in t.chunks_exact_mut(8) {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        t
    }
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mixplane-replay-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempFile(dir.join("filter.bin"))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn parameter_validation() {
    assert!(matches!(
        ReplayFilter::new(0, 1e-5),
        Err(ReplayError::ZeroItems)
    ));
    for p in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY, 1e-300] {
        assert!(
            matches!(
                ReplayFilter::new(1000, p),
                Err(ReplayError::BadFalsePositiveRate(_))
            ),
            "p = {p}"
        );
    }
    // 10^12 items at 1e-5 is about 3 TB: over the 16 GiB default.
    assert!(matches!(
        ReplayFilter::new(1_000_000_000_000, 1e-5),
        Err(ReplayError::TooLarge { .. })
    ));
    assert!(matches!(
        ReplayFilter::new(u64::MAX, 0.5),
        Err(ReplayError::TooLarge { .. })
    ));
    assert!(matches!(
        ReplayFilter::with_max_bytes(1_000_000, 1e-5, 1 << 20),
        Err(ReplayError::TooLarge { limit, .. }) if limit == 1 << 20
    ));
}

#[test]
fn sizing_matches_standard_formulas() {
    // Nym: p = 1e-5; 10M items -> ~23.96 bits per item, k = 17.
    let (m, k) = ReplayFilter::dimensions(10_000_000, 1e-5).unwrap();
    assert_eq!(k, 17);
    assert_eq!(m % 64, 0);
    assert!((239_626_000..239_627_000).contains(&m), "m = {m}");
    let (m, k) = ReplayFilter::dimensions(1, 0.5).unwrap();
    assert_eq!((m, k), (64, 44.min(MAX_K)));
    // The first segment gets half the budget: 1000 items at 0.005.
    let f = ReplayFilter::new(1000, 0.01).unwrap();
    assert_eq!(
        (f.bits(), f.hashes()),
        ReplayFilter::dimensions(1000, 0.005).unwrap()
    );
    assert_eq!(f.size_bytes(), f.bits() / 8);
    assert_eq!(f.segments(), 1);
    // capacity inverts dimensions.
    let (m, k) = ReplayFilter::dimensions(50_000, 1e-4).unwrap();
    assert!(capacity(m, k, 1e-4).abs_diff(50_000) < 500);
}

/// Fraction of `probes` fresh tags the filter claims to hold.
fn measured_fp(f: &ReplayFilter, rng: &mut Tags, probes: usize) -> f64 {
    (0..probes).filter(|_| f.contains(&rng.tag())).count() as f64 / probes as f64
}

#[test]
fn no_false_negatives_and_fpr_within_target() {
    let n = 50_000;
    let p = 2e-3;
    let f = ReplayFilter::new(n, p).unwrap();
    let mut rng = Tags(1);
    let tags: Vec<[u8; 32]> = (0..n).map(|_| rng.tag()).collect();
    let first_fp = tags.iter().filter(|t| f.check_and_set(t)).count();
    assert!(first_fp < 50, "{first_fp} false positives while filling");
    assert_eq!(f.inserted(), (n as usize - first_fp) as u64);
    for t in &tags {
        assert!(f.contains(t));
        assert!(f.check_and_set(t), "false negative");
    }
    // One segment at its design count: half the budget.
    let measured = measured_fp(&f, &mut rng, 200_000);
    assert!(measured <= p && measured >= p / 4.0, "measured {measured}");
    let est = f.false_positive_estimate();
    assert!(est <= p && est >= p / 4.0, "estimate {est}");
    let len = f.len_estimate();
    assert!(len.abs_diff(n) < n / 50, "len_estimate {len}");
    assert!((0.45..0.55).contains(&f.fill_ratio()));
    assert!(
        (0.95..1.05).contains(&f.bound_ratio()),
        "{}",
        f.bound_ratio()
    );
}

/// Inserts `per_sec` fresh tags per simulated second for `secs` seconds, calling `maintain`
/// every second when `grow`; returns the simulated end time.
fn drive(f: &ReplayFilter, rng: &mut Tags, per_sec: u64, secs: u64, grow: bool) -> SystemTime {
    let t0 = SystemTime::now();
    for s in 0..secs {
        if grow {
            f.maintain(t0 + Duration::from_secs(s)).unwrap();
        }
        for _ in 0..per_sec {
            f.check_and_set(&rng.tag());
        }
    }
    t0 + Duration::from_secs(secs)
}

#[test]
fn ten_times_the_configured_rate_keeps_the_target() {
    // Configured for 100/s over a 1000 s key lifetime; traffic is 1000/s.
    let p = 1e-3;
    let params = ReplayParams {
        initial_items: 100 * 1000,
        false_positive_rate: p,
        key_lifetime: Duration::from_secs(1000),
        ..ReplayParams::default()
    };
    let f = ReplayFilter::in_memory(&params).unwrap();
    let mut rng = Tags(11);
    let kept: Vec<[u8; 32]> = (0..1000).map(|_| rng.tag()).collect();
    for t in &kept {
        assert!(!f.check_and_set(t));
    }
    let mut worst: f64 = 0.0;
    for _ in 0..4 {
        drive(&f, &mut rng, 1000, 250, true);
        worst = worst.max(measured_fp(&f, &mut rng, 100_000));
    }
    assert!(f.segments() >= 2, "the filter grew");
    assert!(worst <= p, "measured false-positive rate {worst} above {p}");
    assert!(f.bound_ratio() <= 1.0, "bound ratio {}", f.bound_ratio());
    assert!(!f.near_bound());
    assert!(kept.iter().all(|t| f.check_and_set(t)), "old tags kept");
}

#[test]
fn without_growth_the_bound_is_reported() {
    let params = ReplayParams {
        initial_items: 10_000,
        false_positive_rate: 1e-3,
        key_lifetime: Duration::from_secs(100),
        ..ReplayParams::default()
    };
    let f = ReplayFilter::in_memory(&params).unwrap();
    let mut rng = Tags(12);
    drive(&f, &mut rng, 1000, 8, false);
    assert!(!f.near_bound());
    drive(&f, &mut rng, 1000, 4, false);
    assert!(f.bound_ratio() > 1.0);
    assert!(f.near_bound(), "an overfilled segment is near its bound");
    // Growth fixes it for what comes next: the overfilled segment still counts.
    assert!(f.maintain(SystemTime::now()).unwrap());
    assert_eq!(f.segments(), 2);
}

#[test]
fn segment_budgets_sum_below_the_target() {
    let p = 1e-5;
    let sum: f64 = (0..MAX_SEGMENTS).map(|i| segment_budget(p, i)).sum();
    assert!(sum < p);
    // Every segment's sizing stays within MAX_K at Nym's rate.
    for i in 0..MAX_SEGMENTS {
        ReplayFilter::dimensions(1_000_000, segment_budget(p, i)).unwrap();
    }
}

#[test]
#[allow(clippy::needless_range_loop)] // indexes results[thread][round][tag] across threads
fn concurrent_same_tags_at_most_one_new() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 100;
    const PER_ROUND: usize = 2000;
    let f = Arc::new(ReplayFilter::new(1_000_000, 1e-5).unwrap());
    let mut rng = Tags(7);
    let rounds: Arc<Vec<Vec<[u8; 32]>>> = Arc::new(
        (0..ROUNDS)
            .map(|_| (0..PER_ROUND).map(|_| rng.tag()).collect())
            .collect(),
    );
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (f, rounds, barrier) = (f.clone(), rounds.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut news = Vec::new();
                for round in rounds.iter() {
                    barrier.wait();
                    // Half the threads walk forwards, half backwards, so that they meet.
                    let mut v = vec![false; round.len()];
                    for i in 0..round.len() {
                        let i = if t % 2 == 0 { i } else { round.len() - 1 - i };
                        v[i] = !f.check_and_set(&round[i]);
                    }
                    news.push(v);
                }
                news
            })
        })
        .collect();
    let results: Vec<Vec<Vec<bool>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut total_new = 0;
    for r in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let n = (0..THREADS).filter(|&t| results[t][r][i]).count();
            assert!(n <= 1, "round {r} tag {i}: {n} threads saw it as new");
            total_new += n;
        }
    }
    // No lower bound on `total_new`: when two inserts of one tag overlap (both claimed before
    // either checked), both report "seen" and the packet is dropped as a replay -- which it
    // is. How often that happens depends on scheduling (it is common when 4 threads share 2
    // loaded cores), so only the security property is asserted here; that fresh tags are new
    // is checked without overlap in `concurrent_distinct_tags_no_false_negatives`.
    assert!(total_new > 0);
    for round in rounds.iter() {
        for t in round {
            assert!(f.contains(t));
        }
    }
}

#[test]
fn concurrent_distinct_tags_no_false_negatives() {
    let f = Arc::new(ReplayFilter::new(400_000, 1e-5).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                let mut rng = Tags(100 + t);
                let tags: Vec<[u8; 32]> = (0..50_000).map(|_| rng.tag()).collect();
                let fresh = tags.iter().filter(|t| !f.check_and_set(t)).count();
                (tags, fresh)
            })
        })
        .collect();
    for h in handles {
        let (tags, fresh) = h.join().unwrap();
        assert!(fresh >= 49_990);
        assert!(tags.iter().all(|t| f.check_and_set(t)));
    }
}

fn params(n: u64) -> ReplayParams {
    ReplayParams {
        initial_items: n,
        false_positive_rate: 1e-4,
        key_lifetime: Duration::from_secs(100),
        ..ReplayParams::default()
    }
}

#[test]
fn reopening_after_drop_without_sync_keeps_every_tag() {
    let file = TempFile::new("reopen");
    let mut rng = Tags(3);
    let tags: Vec<[u8; 32]> = (0..20_000).map(|_| rng.tag()).collect();
    let (bits, set) = {
        let f = ReplayFilter::open(&file.0, 0xABCD, &params(5_000)).unwrap();
        let t0 = SystemTime::now();
        for (i, t) in tags.iter().enumerate() {
            if i % 1000 == 0 {
                f.maintain(t0 + Duration::from_secs(i as u64 / 1000))
                    .unwrap();
            }
            assert!(!f.check_and_set(t));
        }
        assert!(f.segments() >= 2, "grew while filling");
        (f.bits(), f.bits_set())
        // dropped without sync: the bits are in the page cache
    };
    let g = ReplayFilter::open(&file.0, 0xABCD, &params(5_000)).unwrap();
    assert_eq!((g.bits(), g.bits_set()), (bits, set));
    assert!(tags.iter().all(|t| g.check_and_set(t)), "every tag kept");
    assert!(
        g.inserted().abs_diff(20_000) < 400,
        "count estimated from bits"
    );
    let mut names: Vec<String> = fs::read_dir(file.0.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["filter.bin", "filter.bin.journal"],
        "the filter and its journal, no temp files"
    );
}

#[test]
fn a_file_open_elsewhere_is_refused() {
    let file = TempFile::new("inuse");
    let f = ReplayFilter::open(&file.0, 1, &params(1000)).unwrap();
    assert!(matches!(
        ReplayFilter::open(&file.0, 1, &params(1000)),
        Err(ReplayError::InUse { .. })
    ));
    drop(f);
    ReplayFilter::open(&file.0, 1, &params(1000)).unwrap();
}

/// A synced file for key 1 with 1000 tags, and its bytes.
fn good_file(file: &TempFile) -> Vec<u8> {
    let f = ReplayFilter::open(&file.0, 1, &params(1000)).unwrap();
    let mut rng = Tags(5);
    for _ in 0..1000 {
        f.check_and_set(&rng.tag());
    }
    f.sync().unwrap();
    drop(f);
    fs::read(&file.0).unwrap()
}

fn load(file: &TempFile, bytes: &[u8]) -> Result<ReplayFilter, ReplayError> {
    fs::write(&file.0, bytes).unwrap();
    ReplayFilter::open(&file.0, 1, &params(1000))
}

#[test]
fn wrong_key_truncated_extended_or_corrupt_files_are_refused() {
    let file = TempFile::new("corrupt");
    let good = good_file(&file);
    assert!(load(&file, &good).is_ok());
    match ReplayFilter::open(&file.0, 2, &params(1000)) {
        Err(ReplayError::KeyMismatch {
            expected: 2,
            found: 1,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    for len in [
        0,
        7,
        8,
        100,
        ALIGN as usize - 1,
        ALIGN as usize,
        good.len() - 8,
        good.len() - 1,
    ] {
        let e = load(&file, &good[..len]).unwrap_err();
        assert!(
            matches!(e, ReplayError::LengthMismatch { .. }),
            "len {len}: {e}"
        );
    }
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 4096]);
    assert!(matches!(
        load(&file, &longer),
        Err(ReplayError::LengthMismatch { .. })
    ));
    let patched = |off: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[off..off + bytes.len()].copy_from_slice(bytes);
        b
    };
    assert!(matches!(
        load(&file, &patched(0, b"XXXX")),
        Err(ReplayError::BadMagic { .. })
    ));
    assert!(matches!(
        load(&file, &patched(8, &3u64.to_le_bytes())),
        Err(ReplayError::UnsupportedVersion { found: 3, .. })
    ));
    // The segment count, an entry's bit count, k.
    for (off, v) in [
        (56, 0u64),
        (56, 2),
        (56, 33),
        (64 + 8, 128),
        (64 + 16, 0),
        (64 + 16, 65),
    ] {
        assert!(
            load(&file, &patched(off, &v.to_le_bytes())).is_err(),
            "word at {off} = {v}"
        );
    }
    // A huge segment is refused before anything is mapped.
    let mut max = params(1000);
    max.max_bytes = 1024;
    fs::write(&file.0, &good).unwrap();
    assert!(matches!(
        ReplayFilter::open(&file.0, 1, &max),
        Err(ReplayError::TooLarge { .. })
    ));
    // Nothing was reused or rewritten by the refusals.
    assert!(load(&file, &good).is_ok());
}

#[test]
fn a_growth_cut_short_by_a_crash_is_kept() {
    let file = TempFile::new("torn");
    let f = ReplayFilter::open(&file.0, 1, &params(1000)).unwrap();
    let mut rng = Tags(6);
    drive(&f, &mut rng, 1000, 2, true);
    assert_eq!(f.segments(), 2);
    f.sync().unwrap();
    drop(f);
    // The header's count as it was before the growth: entry and length already written.
    let mut b = fs::read(&file.0).unwrap();
    b[56..64].copy_from_slice(&1u64.to_le_bytes());
    let g = load(&file, &b).unwrap();
    assert_eq!(g.segments(), 2);
}

#[test]
fn format_1_files_are_converted() {
    let file = TempFile::new("v1");
    let (m_bits, k) = ReplayFilter::dimensions(1000, 1e-3).unwrap();
    let mut rng = Tags(8);
    let words: Vec<u64> = (0..m_bits / 64)
        .map(|_| rng.next_u64() & rng.next_u64())
        .collect();
    let mut b = Vec::new();
    b.extend_from_slice(&file::MAGIC);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&k.to_le_bytes());
    b.extend_from_slice(&m_bits.to_le_bytes());
    b.extend_from_slice(&1000u64.to_le_bytes());
    b.extend_from_slice(&7u64.to_le_bytes());
    let mut sum = b.chunks_exact(8).fold(0x6d78_706c_616e_6521, |s, c| {
        file::checksum_step(s, u64::from_le_bytes(c.try_into().unwrap()))
    });
    for w in &words {
        sum = file::checksum_step(sum, *w);
        b.extend_from_slice(&w.to_le_bytes());
    }
    b.extend_from_slice(&sum.to_le_bytes());
    fs::write(&file.0, &b).unwrap();
    let set: u64 = words.iter().map(|w| u64::from(w.count_ones())).sum();
    assert!(matches!(
        ReplayFilter::open(&file.0, 8, &params(1000)),
        Err(ReplayError::KeyMismatch { .. })
    ));
    let f = ReplayFilter::open(&file.0, 7, &params(1000)).unwrap();
    assert_eq!((f.bits(), f.hashes(), f.bits_set()), (m_bits, k, set));
    drop(f);
    let g = ReplayFilter::open(&file.0, 7, &params(1000)).unwrap();
    assert_eq!(g.bits_set(), set, "converted to format 2 on disk");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any changed byte of the header's meaningful part is refused.
    #[test]
    fn garbage_headers_are_refused(at in 0..(64usize + 40), x in 1u8..=255) {
        let file = TempFile::new("prop");
        let mut b = good_file(&file);
        b[at] ^= x;
        proptest::prop_assert!(load(&file, &b).is_err());
    }

    /// Any changed byte of the journal header's checked words is refused.
    #[test]
    fn garbage_journal_headers_are_refused(at in 0usize..40, x in 1u8..=255) {
        let file = TempFile::new("prop-journal");
        drop(ReplayFilter::open(&file.0, 13, &small_journal(1_000)).unwrap());
        let jpath = journal::path_for(&file.0);
        let mut b = fs::read(&jpath).unwrap();
        b[at] ^= x;
        fs::write(&jpath, &b).unwrap();
        proptest::prop_assert!(ReplayFilter::open(&file.0, 13, &small_journal(1_000)).is_err());
    }

    /// Random entries of the current epoch (any segment index) are replayed without a panic,
    /// and what the filter held before stays.
    #[test]
    fn random_journal_entries_are_replayed_safely(seed in 0u64..u64::MAX, n in 1usize..1024) {
        let file = TempFile::new("prop-entries");
        let mut rng = Tags(seed);
        let kept = rng.tag();
        {
            let f = ReplayFilter::open(&file.0, 14, &small_journal(1_000)).unwrap();
            f.check_and_set(&kept);
            f.snapshot().unwrap();
        }
        let jpath = journal::path_for(&file.0);
        let mut b = fs::read(&jpath).unwrap();
        let epoch = b[40..48].to_vec();
        for e in b[ALIGN as usize..].chunks_exact_mut(32).take(n) {
            for w in e[..24].chunks_exact_mut(8) {
                w.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            e[24..].copy_from_slice(&epoch);
        }
        fs::write(&jpath, &b).unwrap();
        let g = ReplayFilter::open(&file.0, 14, &small_journal(1_000)).unwrap();
        proptest::prop_assert!(g.contains(&kept));
    }

    /// Random bytes behind a valid magic and version are refused.
    #[test]
    fn random_files_are_refused(seed in 0u64..u64::MAX, words in 2usize..20_000) {
        let file = TempFile::new("rand");
        let mut rng = Tags(seed);
        let mut b: Vec<u8> = (0..words).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
        b[..8].copy_from_slice(&file::MAGIC);
        b[8..16].copy_from_slice(&2u64.to_le_bytes());
        proptest::prop_assert!(load(&file, &b).is_err());
    }
}

#[test]
fn filter_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ReplayFilter>();
}

/// Minor page faults this thread has taken so far.
fn thread_minor_faults() -> i64 {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is the calling thread.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

/// Inserts `tags` and returns the minor faults it took.
fn faults_while_inserting(f: &ReplayFilter, tags: &[[u8; 32]]) -> i64 {
    let before = thread_minor_faults();
    for t in tags {
        f.check_and_set(t);
    }
    thread_minor_faults() - before
}

/// Pages of journal that `tags` new tags write (32 bytes each), plus one partly written.
fn journal_pages(tags: usize) -> i64 {
    (tags * 32 / 4096 + 1) as i64
}

#[test]
fn file_backed_segments_are_faulted_in_before_the_workers_write() {
    let file = TempFile::new("populate");
    let mut rng = Tags(11);
    let tags: Vec<[u8; 32]> = (0..60_000).map(|_| rng.tag()).collect();
    let f = ReplayFilter::open(&file.0, 7, &params(1_000_000)).unwrap();
    let seg = f.segments[0].get().unwrap();
    let pages = seg.desc.file_len() / 4096;
    assert!(pages > 500, "{pages} pages");
    assert!(
        seg.map.all_resident().unwrap(),
        "made: every page in memory"
    );
    // ~15 bits per tag over ~630 pages: every page of bits is written; only the journal's
    // pages (one per 128 tags) may fault.
    let made = faults_while_inserting(&f, &tags[..20_000]);
    // A sync writes the journal, not the bits: writing on takes no new fault in them.
    f.sync().unwrap();
    let synced = faults_while_inserting(&f, &tags[20_000..40_000]);
    drop(f);
    // Mapped back: the bits are read into memory by the thread that opens the filter.
    let g = ReplayFilter::open(&file.0, 7, &params(1_000_000)).unwrap();
    let reopened = faults_while_inserting(&g, &tags[40_000..]);
    let bound = journal_pages(20_000) + 20;
    assert!(
        made < bound && synced < bound && reopened < bound,
        "{made}, {synced} and {reopened} page faults while writing {pages} pages of bits \
         (at most {bound} expected, for the journal)"
    );
    assert!(tags.iter().all(|t| g.contains(t)));
}

#[test]
fn a_grown_segment_is_faulted_in_before_the_workers_write() {
    let file = TempFile::new("populate-grow");
    let mut rng = Tags(12);
    let f = ReplayFilter::open(&file.0, 8, &params(2_000)).unwrap();
    let t0 = SystemTime::now();
    let mut second = 0;
    while !f.maintain(t0 + Duration::from_secs(second)).unwrap() {
        assert!(second < 10, "did not grow");
        for _ in 0..1000 {
            f.check_and_set(&rng.tag());
        }
        second += 1;
    }
    let seg = f.segments[1].get().unwrap();
    let pages = seg.desc.file_len() / 4096;
    assert!(
        seg.map.all_resident().unwrap(),
        "grown: every page in memory"
    );
    let tags: Vec<[u8; 32]> = (0..5_000).map(|_| rng.tag()).collect();
    let faults = faults_while_inserting(&f, &tags);
    assert!(
        pages > 40 && faults < journal_pages(5_000) + 10,
        "{faults} page faults while writing {pages} pages"
    );
}

fn small_journal(n: u64) -> ReplayParams {
    ReplayParams {
        journal_entries: 1024,
        ..params(n)
    }
}

#[test]
fn tags_survive_snapshots_and_a_kill_after_the_journal_wrapped() {
    let file = TempFile::new("journal-wrap");
    let mut rng = Tags(21);
    let tags: Vec<[u8; 32]> = (0..10_100).map(|_| rng.tag()).collect();
    {
        let f = ReplayFilter::open(&file.0, 9, &small_journal(100_000)).unwrap();
        // Syncs every 200 tags: each snapshot (a quarter of 1024 in use) lets the ring
        // wrap about ten times over without losing an entry.
        for (i, t) in tags.iter().enumerate() {
            assert!(!f.check_and_set(t));
            if i % 200 == 199 {
                f.sync().unwrap();
            }
        }
        assert_eq!(f.journal_overflows(), 0);
        // Killed: the last 100 tags are only in the journal (and the page cache), whose
        // cursor has gone round the ring nearly ten times.
    }
    {
        // The file alone (without the journal) lacks the last 100: the journal is needed.
        let jpath = journal::path_for(&file.0);
        let saved = fs::read(&jpath).unwrap();
        fs::remove_file(&jpath).unwrap();
        let bare = ReplayFilter::open(&file.0, 9, &small_journal(100_000)).unwrap();
        let missing = tags[10_000..].iter().filter(|t| !bare.contains(t)).count();
        assert!(
            missing > 90,
            "{missing} of the last 100 missing without the journal"
        );
        drop(bare);
        fs::write(&jpath, saved).unwrap();
    }
    let g = ReplayFilter::open(&file.0, 9, &small_journal(100_000)).unwrap();
    assert!(tags.iter().all(|t| g.contains(t)), "every tag kept");
    // Opening retired the journal's entries into the file: a second crash keeps them too.
    drop(g);
    let h = ReplayFilter::open(&file.0, 9, &small_journal(100_000)).unwrap();
    assert!(tags.iter().all(|t| h.check_and_set(t)), "every tag kept");
}

#[test]
fn a_full_journal_is_counted_and_the_next_sync_snapshots() {
    let file = TempFile::new("journal-full");
    let mut rng = Tags(22);
    let tags: Vec<[u8; 32]> = (0..3_000).map(|_| rng.tag()).collect();
    {
        let f = ReplayFilter::open(&file.0, 10, &small_journal(100_000)).unwrap();
        for t in &tags {
            f.check_and_set(t);
        }
        assert_eq!(f.journal_overflows(), 3_000 - 1024);
        f.sync().unwrap();
    }
    let g = ReplayFilter::open(&file.0, 10, &small_journal(100_000)).unwrap();
    assert!(tags.iter().all(|t| g.contains(t)), "every tag kept");
}

#[test]
fn a_journal_for_another_key_or_of_the_wrong_length_is_refused() {
    let file = TempFile::new("journal-bad");
    drop(ReplayFilter::open(&file.0, 11, &small_journal(1_000)).unwrap());
    let jpath = journal::path_for(&file.0);
    let good = fs::read(&jpath).unwrap();
    let other = TempFile::new("journal-other");
    drop(ReplayFilter::open(&other.0, 12, &small_journal(1_000)).unwrap());
    fs::copy(journal::path_for(&other.0), &jpath).unwrap();
    assert!(matches!(
        ReplayFilter::open(&file.0, 11, &small_journal(1_000)),
        Err(ReplayError::KeyMismatch { .. })
    ));
    fs::write(&jpath, &good[..good.len() - 32]).unwrap();
    assert!(matches!(
        ReplayFilter::open(&file.0, 11, &small_journal(1_000)),
        Err(ReplayError::LengthMismatch { .. })
    ));
    let mut bad = good.clone();
    bad[0] ^= 1;
    fs::write(&jpath, &bad).unwrap();
    assert!(matches!(
        ReplayFilter::open(&file.0, 11, &small_journal(1_000)),
        Err(ReplayError::BadMagic { .. })
    ));
    let mut bad = good.clone();
    bad[3 * 8] ^= 1; // the capacity, under the checksum
    fs::write(&jpath, &bad).unwrap();
    assert!(matches!(
        ReplayFilter::open(&file.0, 11, &small_journal(1_000)),
        Err(ReplayError::CorruptHeader { .. })
    ));
    // Without a journal (a filter from a build before journals) one is made.
    fs::remove_file(&jpath).unwrap();
    ReplayFilter::open(&file.0, 11, &small_journal(1_000)).unwrap();
    assert_eq!(fs::read(&jpath).unwrap().len(), good.len());
}

#[test]
fn an_append_skipped_while_a_snapshot_runs_makes_the_next_sync_snapshot() {
    let file = TempFile::new("journal-race");
    let j = journal::Journal::create(&journal::path_for(&file.0), 15, 1024).unwrap();
    for i in 0..1024 {
        j.append(0, i, i);
    }
    assert!(j.needs_snapshot());
    // A snapshot starts: clears the flag, reads the cursor...
    assert!(!j.take_unjournaled());
    let at = j.cursor();
    // ... an insert finds the ring full (its bits may miss the snapshot's loads) ...
    j.append(0, 7, 7);
    assert_eq!(j.overflowed(), 1);
    // ... and the snapshot ends: one entry pending, but the next sync must snapshot again.
    j.snapshotted(at);
    assert!(j.needs_snapshot());
    assert!(j.take_unjournaled());
    j.snapshotted(j.cursor());
    assert!(!j.needs_snapshot());
}
