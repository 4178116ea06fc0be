//! Nym's Noise layer (`io::stream::NoiseLink::receive`) as a responder fed arbitrary bytes,
//! either fresh (handshake state) or after a real handshake (transport state), in pieces whose
//! size the input picks. Nothing may panic, the reassembly buffer stays within its bound, and
//! random bytes never decrypt to anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixplane_dataplane::io::stream::NoiseLink;
use mixplane_dataplane::io::stream::noise::{
    MAX_HANDSHAKE_MESSAGE, MAX_NOISE_MESSAGE, NOISE_HEADER_LEN,
};
use mixplane_dataplane::sphinx::build::public_key;

const RESPONDER: [u8; 32] = [0x22; 32];

/// A responder that has finished a handshake with an in-memory initiator.
fn established() -> NoiseLink {
    let (mut to_r, mut to_i, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    let mut i = NoiseLink::initiator(&[0x11; 32], &public_key(&RESPONDER), &mut to_r).unwrap();
    let mut r = NoiseLink::responder(&RESPONDER).unwrap();
    r.receive(&to_r, &mut to_i, &mut plain).unwrap();
    to_r.clear();
    i.receive(&to_i, &mut to_r, &mut plain).unwrap();
    r.receive(&to_r, &mut to_i, &mut plain).unwrap();
    assert!(r.is_established());
    r
}

fuzz_target!(|data: &[u8]| {
    let Some((&setup, wire)) = data.split_first() else { return };
    let mut r = if setup & 1 == 1 {
        established()
    } else {
        NoiseLink::responder(&RESPONDER).unwrap()
    };
    let piece = usize::from(setup >> 1).max(1);
    let (mut out, mut plain) = (Vec::new(), Vec::new());
    for p in wire.chunks(piece) {
        if r.receive(p, &mut out, &mut plain).is_err() {
            break;
        }
        let bound = if r.is_established() { MAX_NOISE_MESSAGE } else { MAX_HANDSHAKE_MESSAGE };
        assert!(r.buffered() <= NOISE_HEADER_LEN + bound);
    }
    assert!(plain.is_empty());
});
