//! The request reader of the node's HTTP servers (nym-node API on 8080, admin API) on
//! arbitrary bytes: every input is answered with a request or a status code, never a panic,
//! and an accepted request respects the body cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixplane_control::fuzzing::parse_request;

const MAX_BODY: usize = 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok((_method, path, body)) = parse_request(data, MAX_BODY) {
        assert!(body.len() <= MAX_BODY);
        assert!(!path.contains('?'));
    }
});
