//! Reads a mixplane node's drop counters from its admin API (`GET /metrics`), so that a replay
//! can tell whether the node dropped the replayed packets as replays.
//!
//! The counters are `mixplane_packets_dropped_total{worker="N",reason="R"}`; [`DropCounts`]
//! sums them over the workers by reason.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::{Error, Result};

/// The counter a replay looks at.
pub const DROPPED: &str = "mixplane_packets_dropped_total";

/// Drops by reason, summed over the workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts(pub BTreeMap<String, u64>);

impl DropCounts {
    /// Drops counted for `reason` (0 if the node has no such series).
    pub fn get(&self, reason: &str) -> u64 {
        self.0.get(reason).copied().unwrap_or(0)
    }

    /// What `later` counted beyond `self`, by reason (reasons that did not grow left out).
    pub fn delta(&self, later: &DropCounts) -> DropCounts {
        DropCounts(
            later
                .0
                .iter()
                .filter_map(|(r, &v)| {
                    let d = v.saturating_sub(self.get(r));
                    (d > 0).then(|| (r.clone(), d))
                })
                .collect(),
        )
    }

    /// Sums the drop counters of a Prometheus text page.
    pub fn from_prometheus(text: &str) -> std::result::Result<DropCounts, String> {
        let mut out = BTreeMap::new();
        for (series, value) in mixplane_control::metrics::parse(text)? {
            let Some(labels) = series
                .strip_prefix(DROPPED)
                .and_then(|l| l.strip_prefix('{'))
            else {
                continue;
            };
            let Some(reason) = labels
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("reason=\""))
                .and_then(|r| r.split('"').next())
            else {
                continue;
            };
            if value.is_finite() && value >= 0.0 {
                *out.entry(reason.to_string()).or_insert(0) += value as u64;
            }
        }
        Ok(DropCounts(out))
    }
}

/// Splits `http://host:port/path` (or `host:port`, path `/metrics`) into address and path.
fn split_url(url: &str) -> std::result::Result<(String, String), String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.starts_with("https://") || url.starts_with("https://") {
        return Err("https is not supported; the admin API listens on plain HTTP".into());
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((host.to_string(), path.to_string()))
}

/// GETs the node's metrics page at `url` and sums its drop counters.
pub fn scrape(url: &str) -> Result<DropCounts> {
    let err = |message: String| Error::Metrics {
        url: url.to_string(),
        message,
    };
    let (host, path) = split_url(url).map_err(err)?;
    let addr = host
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))?;
    let timeout = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| err(e.to_string()))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| err(e.to_string()))?;
    let mut body = Vec::new();
    s.take(16 << 20)
        .read_to_end(&mut body)
        .map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&body);
    let (head, page) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| err("no HTTP header".into()))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(err(format!("answered `{status}`")));
    }
    DropCounts::from_prometheus(page).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_drops_over_workers_by_reason() {
        let page = "# HELP mixplane_packets_dropped_total Dropped packets by reason.\n\
            # TYPE mixplane_packets_dropped_total counter\n\
            mixplane_packets_dropped_total{worker=\"0\",reason=\"replayed\"} 3\n\
            mixplane_packets_dropped_total{worker=\"1\",reason=\"replayed\"} 4\n\
            mixplane_packets_dropped_total{worker=\"0\",reason=\"bad_mac\"} 1\n\
            mixplane_packets_received_total{worker=\"0\"} 99\n";
        let d = DropCounts::from_prometheus(page).unwrap();
        assert_eq!(d.get("replayed"), 7);
        assert_eq!(d.get("bad_mac"), 1);
        assert_eq!(d.get("expired"), 0);
        let later = DropCounts::from_prometheus(&page.replace("} 4", "} 10")).unwrap();
        assert_eq!(d.delta(&later).0, [("replayed".to_string(), 6)].into());
    }

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9100/metrics").unwrap(),
            ("127.0.0.1:9100".into(), "/metrics".into())
        );
        assert_eq!(
            split_url("127.0.0.1:9100").unwrap(),
            ("127.0.0.1:9100".into(), "/metrics".into())
        );
        assert!(split_url("https://x:1/metrics").is_err());
        assert!(scrape("127.0.0.1:1").is_err());
    }
}
