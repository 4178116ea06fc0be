//! The load generator's parsers of outside bytes never panic on garbage: capture files (pcap
//! and pcapng readers, IP/UDP headers in each record) and a node's metrics text.

use mixplane_bench::loadgen::metrics::DropCounts;
use mixplane_bench::pcap::{Format, PcapRecorder, parse_ip_udp, read_capture_from};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_capture_bytes_are_rejected_or_read(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = read_capture_from(&b[..]);
    }

    #[test]
    fn captures_with_a_valid_header_and_garbage_records_never_panic(
        pcapng in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let format = if pcapng { Format::PcapNg } else { Format::Pcap };
        let mut file = PcapRecorder::new(Vec::new(), format).unwrap().finish().unwrap();
        file.extend_from_slice(&tail);
        let _ = read_capture_from(&file[..]);
    }

    #[test]
    fn arbitrary_ip_udp_headers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..120)) {
        if let Some(p) = parse_ip_udp(&b) {
            prop_assert!(p.payload.end <= b.len());
        }
    }

    #[test]
    fn arbitrary_metrics_text_never_panics(s in "\\PC{0,300}") {
        let _ = DropCounts::from_prometheus(&s);
    }
}
