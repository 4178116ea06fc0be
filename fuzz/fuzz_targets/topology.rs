//! The topology parser on arbitrary bytes: it reads documents fetched over HTTP from nym-api
//! and pushed to the admin API, so it must reject anything without panicking, and every node it
//! accepts must be well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixplane_control::topology::{Role, Topology};

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Topology::parse(data) {
        for n in &t.nodes {
            assert!(!n.addresses.is_empty());
            if let Role::Mix(l) = n.role {
                assert!((1..=3).contains(&l));
            }
        }
        let _ = t.addresses();
    }
});
