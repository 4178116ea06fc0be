//! The verloc responder's echo check on arbitrary bytes: a 104-byte echo from the network
//! (`seq ‖ sender ed25519 key ‖ signature`) must be refused or accepted without panicking, and
//! an accepted one must round-trip through a signed reply.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use mixplane_control::verloc::{ECHO_LEN, check_echo, check_reply, reply_packet};

fuzz_target!(|data: &[u8]| {
    let Ok(echo) = <[u8; ECHO_LEN]>::try_from(data) else {
        return;
    };
    if let Ok((seq, _sender)) = check_echo(&echo) {
        let key = SigningKey::from_bytes(&[7; 32]);
        let reply = reply_packet(&echo, &key);
        assert_eq!(check_reply(&reply, &key.verifying_key()).ok(), Some(seq));
    }
});
