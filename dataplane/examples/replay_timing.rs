//! What a file-backed replay filter of the default size costs the control plane and a
//! restart: making it, a sync, a snapshot, and opening it with a million journal entries to
//! replay. Prints the times; asserts nothing.
//!
//! `cargo run --release -p mixplane-dataplane --example replay_timing [DIR]` (DIR: where the
//! filter and its journal go, default the system's temporary directory; about 420 MB).

use std::time::Instant;

use mixplane_dataplane::replay::{ReplayFilter, ReplayParams};

/// splitmix64 tags: stand-ins for uniformly random HKDF outputs.
fn tag(state: &mut u64) -> [u8; 32] {
    let mut t = [0u8; 32];
    for c in t.chunks_exact_mut(8) {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        c.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    t
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(std::env::temp_dir, Into::into)
        .join(format!("mixplane-replay-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("replay-1.bloom");
    // The node's default: 1000 packets/s for a 25 h key at 1e-5.
    let params = ReplayParams {
        initial_items: 1000 * 25 * 3600,
        ..ReplayParams::default()
    };
    let mut s = 1u64;
    let t = Instant::now();
    let f = ReplayFilter::open(&path, 1, &params)?;
    println!(
        "made a {} MB filter and its journal: {:.2?}",
        f.size_bytes() >> 20,
        t.elapsed()
    );
    let t = Instant::now();
    for _ in 0..1_000_000 {
        f.check_and_set(&tag(&mut s));
    }
    println!("1,000,000 inserts (one thread): {:.2?}", t.elapsed());
    let t = Instant::now();
    f.sync()?;
    println!(
        "sync (the journal's 32 MB of new entries): {:.2?}",
        t.elapsed()
    );
    let t = Instant::now();
    f.snapshot()?;
    println!(
        "snapshot (every bit to the file, fdatasync): {:.2?}",
        t.elapsed()
    );
    for _ in 0..1_000_000 {
        f.check_and_set(&tag(&mut s));
    }
    drop(f); // as a kill would: the last million tags only in the journal
    let t = Instant::now();
    let g = ReplayFilter::open(&path, 1, &params)?;
    println!(
        "open after a kill: read the bits, replay 1,000,000 journal entries, snapshot: {:.2?}",
        t.elapsed()
    );
    drop(g);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
