//! Arbitrary bytes never panic the frame parser or the batch API.

mod common;

use common::*;
use mixplane_dataplane::sphinx::{NoReplay, SizeClass, Verdict};
use proptest::prelude::*;

fn class_strategy() -> impl Strategy<Value = SizeClass> {
    prop::sample::select(SizeClass::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_datagrams_never_panic(frames in prop::collection::vec(
        prop::collection::vec(any::<u8>(), 0..3000), 1..8)) {
        let node = TestNode::random(&mut rng(1));
        let mut proc = node.processor();
        let mut frames = frames;
        let mut out = Vec::new();
        proc.process_batch(&mut frames, &NoReplay, &mut out);
        prop_assert_eq!(out.len(), frames.len());
    }

    /// Well-framed datagrams of the exact length with random contents: they reach the crypto
    /// stages, and all must be dropped (a random MAC verifies with probability 2^-128).
    #[test]
    fn random_packets_with_valid_frames_are_dropped(
        class in class_strategy(), seed in any::<u64>(), rotation in 0u8..3, v7 in any::<bool>()) {
        use rand::{RngExt, SeedableRng};
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        let node = TestNode::random(&mut rng(2));
        let mut proc = node.processor();
        let body: Vec<u8> = (0..class.packet_len()).map(|_| r.random()).collect();
        let mut f = if v7 { v7_header(class).frame(&body) } else {
            let mut f = node.v8_header(class).frame(&body);
            f[3] = rotation;
            f
        };
        let mut out = Vec::new();
        proc.process_batch(std::slice::from_mut(&mut f), &NoReplay, &mut out);
        prop_assert!(matches!(out[0], Verdict::Drop(_)));
    }

    /// Valid packets with a few flipped bytes anywhere: never a panic; flips in the Sphinx header are
    /// always caught.
    #[test]
    fn flipped_bytes_never_panic(class in class_strategy(), version in prop::sample::select(VERSIONS.to_vec()),
                                 hops in 1usize..=5, flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let mut r = rng(3);
        let mut route = random_route(&mut r, hops, 1_000_000_000);
        let node = route.nodes[0].clone();
        route.nodes[0] = node.clone();
        let pt = random_plaintext(&mut r, class);
        let p = build_packet(&route, class, version, &pt.bytes).to_bytes();
        let mut f = node.v8_header(class).frame(&p);
        let mut header_touched = false;
        for (at, x) in &flips {
            let i = at.index(f.len());
            header_touched |= (4..4 + 348).contains(&i);
            f[i] ^= x;
        }
        let mut proc = node.processor();
        let mut out = Vec::new();
        proc.process_batch(std::slice::from_mut(&mut f), &NoReplay, &mut out);
        if header_touched {
            prop_assert!(matches!(out[0], Verdict::Drop(_)), "{:?}", out[0]);
        }
    }
}
