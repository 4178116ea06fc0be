//! Nym's TCP stream splitter (`io::stream::frame_len`) on arbitrary bytes. The first byte picks
//! the size of the pieces the stream arrives in; splitting piece by piece must cut exactly the
//! frames that splitting the whole stream at once cuts, and stop at the same error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixplane_dataplane::io::stream::{StreamError, frame_header, frame_len};
use mixplane_dataplane::sphinx::FrameHeader;

/// Cuts frames off the front of `buf`; `Err` once a header is refused.
fn split(buf: &mut Vec<u8>, frames: &mut Vec<Vec<u8>>) -> Result<(), StreamError> {
    while let Some(len) = frame_len(buf)? {
        if buf.len() < len {
            break;
        }
        let frame: Vec<u8> = buf.drain(..len).collect();
        // a whole frame's header parses the same way as a datagram's
        let h = frame_header(&frame)?.expect("whole header");
        assert_eq!(FrameHeader::parse(&frame), Ok(h));
        frames.push(frame);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else { return };
    let piece = usize::from(piece).max(1);
    let (mut whole, mut whole_frames) = (stream.to_vec(), Vec::new());
    let whole_result = split(&mut whole, &mut whole_frames);

    let (mut buf, mut frames, mut result) = (Vec::new(), Vec::new(), Ok(()));
    for p in stream.chunks(piece) {
        buf.extend_from_slice(p);
        result = split(&mut buf, &mut frames);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, whole_result);
    assert_eq!(frames, whole_frames);
});
