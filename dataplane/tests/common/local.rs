//! Loopback helpers for the tests that run the `mixplane` binary: free ports and the admin
//! API's pages read with a bare HTTP/1.1 GET.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

/// A UDP port on loopback that was free a moment ago.
pub fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// GET `path` from a local HTTP server; the body, or None if it did not answer in 2 s.
pub fn get(addr: impl ToSocketAddrs, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// The sum of a metric's samples whose line contains `filter`, from the admin API.
pub fn metric(admin: SocketAddr, name: &str, filter: &str) -> Option<u64> {
    let text = get(admin, "/metrics")?;
    let sum = text
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(sum as u64)
}

/// Waits (15 s at most) until the metric reaches `want`; returns the last value.
pub fn wait_metric(admin: SocketAddr, name: &str, filter: &str, want: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(15);
    let mut last = 0;
    while Instant::now() < end {
        if let Some(v) = metric(admin, name, filter) {
            last = v;
            if v >= want {
                return v;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    last
}
