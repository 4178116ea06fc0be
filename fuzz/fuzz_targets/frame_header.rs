//! Frame header and routing address parsers on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixplane_dataplane::sphinx::{FrameHeader, address};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = FrameHeader::parse(data) {
        assert_eq!(h.frame_len(), data.len());
        let mut again = data.to_vec();
        h.write(&mut again);
        assert_eq!(FrameHeader::parse(&again), Ok(h));
    }
    if let Ok(a) = address::parse(data) {
        assert_eq!(address::parse(&address::encode::<32>(a)), Ok(a));
    }
});
