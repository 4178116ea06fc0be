//! Feeds arbitrary datagrams through the whole Sphinx batch path. After the first byte, which
//! picks the key rotation setup, the input is split into frames at every 0xfe byte (at most 16
//! frames) so that batches of several frames are exercised. Nothing may panic, and every frame gets a verdict whose
//! ranges lie inside its buffer.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mixplane_dataplane::sphinx::{NoReplay, NodeKeys, Processor, ProcessorConfig, SphinxKey, Verdict};

fuzz_target!(|data: &[u8]| {
    let Some((&setup, rest)) = data.split_first() else { return };
    let primary = SphinxKey::from_secret([7; 32], u32::from(setup & 1));
    let secondary = (setup & 2 != 0).then(|| SphinxKey::from_secret([9; 32], u32::from(!setup & 1)));
    let keys = Arc::new(NodeKeys { primary, secondary });
    let mut proc = Processor::new(keys, ProcessorConfig::default());
    let mut frames: Vec<Vec<u8>> = rest
        .split(|&b| b == 0xfe)
        .take(16)
        .map(|f| f.to_vec())
        .collect();
    let mut out = Vec::new();
    proc.process_batch(&mut frames, &NoReplay, &mut out);
    assert_eq!(out.len(), frames.len());
    for (v, f) in out.iter().zip(&frames) {
        match v {
            Verdict::Forward(fw) => assert!(fw.frame.end <= f.len()),
            Verdict::Deliver(d) => {
                assert!(d.message.end <= f.len() && d.payload.end <= f.len());
                if let Some(a) = &d.surb_ack {
                    assert!(a.frame.end <= f.len());
                }
            }
            Verdict::Drop(_) => {}
        }
    }
});
