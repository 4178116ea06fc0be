//! nym-api's key-rotation-info parser on arbitrary bytes: the document comes over HTTP and
//! drives key rotation, so anything must be refused or accepted without panicking, and an
//! accepted document must give a schedule that can be evaluated at any time without overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixplane_control::rotation::nym_api::KeyRotationInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = KeyRotationInfo::parse(data) {
        for now in [0u64, 1_700_000_000, u64::MAX / 2, u64::MAX] {
            let _ = info.desired_at(now);
            let _ = info.epoch_at(now);
        }
        let _ = info.schedule();
        let _ = info.current_rotation();
    }
});
