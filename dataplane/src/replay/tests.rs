use super::*;
use std::sync::{Arc, Barrier};

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
    let f = ReplayFilter::new(1000, 0.01).unwrap();
    assert_eq!(f.size_bytes(), f.bits() / 8);
    assert_eq!(f.hashes(), 7);
}

#[test]
fn no_false_negatives_and_fpr_within_2x() {
    let n = 50_000;
    let p = 1e-3;
    let f = ReplayFilter::new(n, p).unwrap();
    let mut rng = Tags(1);
    let tags: Vec<[u8; 32]> = (0..n).map(|_| rng.tag()).collect();
    let mut first_fp = 0;
    for t in &tags {
        if f.check_and_set(t) {
            first_fp += 1; // false positive on first sight
        }
    }
    assert!(first_fp < 50, "{first_fp} false positives while filling");
    for t in &tags {
        assert!(f.contains(t));
        assert!(f.check_and_set(t), "false negative");
    }
    let probes = 200_000;
    let fp = (0..probes).filter(|_| f.contains(&rng.tag())).count();
    let measured = fp as f64 / probes as f64;
    assert!(
        measured <= 2.0 * p && measured >= p / 2.0,
        "measured {measured}"
    );
    let est = f.false_positive_estimate();
    assert!(est <= 1.5 * p && est >= p / 1.5, "estimate {est}");
    let len = f.len_estimate();
    assert!(len.abs_diff(n) < n / 50, "len_estimate {len}");
    assert!((0.45..0.55).contains(&f.fill_ratio()));

    f.clear();
    assert_eq!(f.bits_set(), 0);
    assert!(!f.contains(&tags[0]));
    assert!(!f.check_and_set(&tags[0]));
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

#[test]
fn persistence_round_trip() {
    let file = TempFile::new("roundtrip");
    let f = ReplayFilter::new(10_000, 1e-4).unwrap();
    let mut rng = Tags(3);
    let tags: Vec<[u8; 32]> = (0..10_000).map(|_| rng.tag()).collect();
    for t in &tags {
        f.check_and_set(t);
    }
    f.save_to(&file.0, 0xABCD).unwrap();
    let g = ReplayFilter::load_from(&file.0, 0xABCD).unwrap();
    assert_eq!((g.bits(), g.hashes()), (f.bits(), f.hashes()));
    assert!(tags.iter().all(|t| g.check_and_set(t)));
    assert_eq!(g.bits_set(), f.bits_set());
    // Saving again replaces the file atomically and leaves no temp files behind.
    g.save_to(&file.0, 0xABCD).unwrap();
    let entries = fs::read_dir(file.0.parent().unwrap()).unwrap().count();
    assert_eq!(entries, 1);
    // Wrong key.
    match ReplayFilter::load_from(&file.0, 0xABCE) {
        Err(ReplayError::KeyMismatch {
            expected: 0xABCE,
            found: 0xABCD,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // Size limit on load.
    assert!(matches!(
        ReplayFilter::load_from_with_max_bytes(&file.0, 0xABCD, 64),
        Err(ReplayError::TooLarge { .. })
    ));
}

#[test]
fn corrupt_files_are_errors_not_panics() {
    let file = TempFile::new("corrupt");
    let f = ReplayFilter::new(1000, 1e-3).unwrap();
    let mut rng = Tags(5);
    for _ in 0..1000 {
        f.check_and_set(&rng.tag());
    }
    f.save_to(&file.0, 1).unwrap();
    let good = fs::read(&file.0).unwrap();
    let load = |bytes: &[u8]| {
        fs::write(&file.0, bytes).unwrap();
        ReplayFilter::load_from(&file.0, 1)
    };
    assert!(load(&good).is_ok());

    // Every truncation.
    for len in 0..good.len() {
        let e = load(&good[..len]).unwrap_err();
        assert!(
            matches!(e, ReplayError::LengthMismatch { .. }),
            "len {len}: {e}"
        );
    }
    // Appended garbage.
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(
        load(&longer),
        Err(ReplayError::LengthMismatch { .. })
    ));
    // Header fields.
    let patched = |off: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[off..off + bytes.len()].copy_from_slice(bytes);
        b
    };
    assert!(matches!(
        load(&patched(0, b"XXXX")),
        Err(ReplayError::BadMagic { .. })
    ));
    assert!(matches!(
        load(&patched(8, &2u32.to_le_bytes())),
        Err(ReplayError::UnsupportedVersion { found: 2, .. })
    ));
    assert!(matches!(
        load(&patched(12, &0u32.to_le_bytes())),
        Err(ReplayError::CorruptHeader { .. })
    ));
    assert!(matches!(
        load(&patched(12, &65u32.to_le_bytes())),
        Err(ReplayError::CorruptHeader { .. })
    ));
    assert!(matches!(
        load(&patched(16, &100u64.to_le_bytes())),
        Err(ReplayError::CorruptHeader { .. })
    ));
    // A huge bit count is rejected before any allocation.
    assert!(matches!(
        load(&patched(16, &(1u64 << 60).to_le_bytes())),
        Err(ReplayError::TooLarge { .. })
    ));
    assert!(matches!(
        load(&patched(16, &(f.bits() * 2).to_le_bytes())),
        Err(ReplayError::LengthMismatch { .. })
    ));
    // Any single flipped byte after the magic/version/size fields is caught by the checksum
    // (or the key / k checks).
    for off in (12..good.len()).step_by(7) {
        let mut b = good.clone();
        b[off] ^= 0x10;
        assert!(load(&b).is_err(), "flip at {off} not detected");
    }
    // Garbage of the right length.
    let mut rng = Tags(9);
    let mut garbage = good.clone();
    for c in garbage.chunks_mut(8) {
        let v = rng.next_u64().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    assert!(load(&garbage).is_err());
    garbage[..8].copy_from_slice(&MAGIC);
    assert!(load(&garbage).is_err());
    // Missing file.
    fs::remove_file(&file.0).unwrap();
    assert!(matches!(
        ReplayFilter::load_from(&file.0, 1),
        Err(ReplayError::Io { .. })
    ));
}

#[test]
fn filter_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ReplayFilter>();
}
