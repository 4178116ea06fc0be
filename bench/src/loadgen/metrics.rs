//! Reads a mixplane node's drop counters and release-lateness histogram from its admin API
//! (`GET /metrics`), so that a replay can tell whether the node dropped the replayed packets as
//! replays, and how late the packets it admitted left its delay wheel.
//!
//! The counters are `mixplane_packets_dropped_total{worker="N",reason="R"}`; [`DropCounts`]
//! sums them over the workers by reason. The histogram is
//! `mixplane_release_lateness_seconds_bucket{worker="N",le="B"}`; [`Lateness`] sums it over the
//! workers by bucket.

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
            let Some(reason) = label(&series, DROPPED, "reason") else {
                continue;
            };
            if value.is_finite() && value >= 0.0 {
                *out.entry(reason.to_string()).or_insert(0) += value as u64;
            }
        }
        Ok(DropCounts(out))
    }
}

/// The value of label `name` of a series of family `family` (`family{…,name="value",…}`).
fn label<'a>(series: &'a str, family: &str, name: &str) -> Option<&'a str> {
    let labels = series.strip_prefix(family)?.strip_prefix('{')?;
    labels
        .split(',')
        .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix("=\""))?
        .split('"')
        .next()
}

/// The node's release-lateness histogram (wheel deadline to release).
pub const LATENESS: &str = "mixplane_release_lateness_seconds_bucket";

/// A cumulative histogram summed over the workers: (upper bound in seconds, count at or
/// below it), ascending; the last bound is `+Inf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lateness(pub Vec<(f64, u64)>);

impl Lateness {
    /// Sums the lateness buckets of a Prometheus text page.
    pub fn from_prometheus(text: &str) -> std::result::Result<Lateness, String> {
        let mut by_le: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
        for (series, value) in mixplane_control::metrics::parse(text)? {
            let Some(le) = label(&series, LATENESS, "le") else {
                continue;
            };
            // a bucket that is not a non-negative bound, or a count that is not a count, is
            // left out (it cannot come from a mixplane node)
            let le = match le {
                "+Inf" => f64::INFINITY,
                b => match b.parse::<f64>() {
                    Ok(b) if b >= 0.0 => b,
                    _ => continue,
                },
            };
            if !(value.is_finite() && value >= 0.0) {
                continue;
            }
            // keyed by the bound's bits: positive floats order as their bits do
            by_le.entry(le.to_bits()).or_insert((le, 0)).1 += value as u64;
        }
        Ok(Lateness(by_le.into_values().collect()))
    }

    /// What `later` counted beyond `self`, bucket by bucket (the buckets of `later`).
    pub fn delta(&self, later: &Lateness) -> Lateness {
        let before = |le: f64| self.0.iter().find(|(b, _)| *b == le).map_or(0, |&(_, c)| c);
        Lateness(
            later
                .0
                .iter()
                .map(|&(le, c)| (le, c.saturating_sub(before(le))))
                .collect(),
        )
    }

    /// Packets counted (the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.0.last().map_or(0, |&(_, c)| c)
    }

    /// The share of the packets counted at or below `le` seconds (the bucket with that exact
    /// bound; None if there is no such bucket or nothing was counted).
    pub fn share_within(&self, le: f64) -> Option<f64> {
        let n = self.count();
        let &(_, c) = self.0.iter().find(|(b, _)| *b == le)?;
        (n > 0).then(|| c as f64 / n as f64)
    }

    /// The upper bound of the bucket that holds quantile `q` (seconds; infinite if it is past
    /// the last finite bound), or None when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        self.0.iter().find(|&&(_, c)| c >= rank).map(|&(le, _)| le)
    }
}

/// What a scrape of the node's metrics page found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeMetrics {
    /// Drops by reason.
    pub drops: DropCounts,
    /// Release lateness.
    pub lateness: Lateness,
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

/// GETs the node's metrics page at `url` and sums its drop counters and lateness buckets.
pub fn scrape(url: &str) -> Result<NodeMetrics> {
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
    Ok(NodeMetrics {
        drops: DropCounts::from_prometheus(page).map_err(err)?,
        lateness: Lateness::from_prometheus(page).map_err(err)?,
    })
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

    #[test]
    fn lateness_buckets_sum_over_workers_and_give_quantiles() {
        let page = |a: [u64; 4], b: [u64; 4]| {
            let mut t = String::from("# TYPE mixplane_release_lateness_seconds histogram\n");
            for (w, v) in [(0, a), (1, b)] {
                for (le, c) in ["0.001", "0.002", "0.004", "+Inf"].iter().zip(v) {
                    t += &format!(
                        "mixplane_release_lateness_seconds_bucket{{worker=\"{w}\",le=\"{le}\"}} {c}\n"
                    );
                }
            }
            t
        };
        let before = Lateness::from_prometheus(&page([1, 1, 1, 1], [0, 0, 0, 0])).unwrap();
        let after =
            Lateness::from_prometheus(&page([50, 90, 99, 100], [41, 90, 100, 101])).unwrap();
        assert_eq!(after.count(), 201);
        let d = before.delta(&after);
        assert_eq!(
            d.0,
            vec![
                (0.001, 90),
                (0.002, 179),
                (0.004, 198),
                (f64::INFINITY, 200)
            ]
        );
        assert_eq!(d.quantile(0.5), Some(0.002));
        assert_eq!(d.quantile(0.4), Some(0.001));
        assert_eq!(d.quantile(0.99), Some(0.004));
        assert_eq!(d.quantile(1.0), Some(f64::INFINITY));
        assert_eq!(Lateness::default().quantile(0.5), None);
        assert_eq!(d.share_within(0.002), Some(179.0 / 200.0));
        assert_eq!(d.share_within(0.003), None);
    }

    #[test]
    fn hostile_lateness_pages_are_skipped_not_trusted() {
        let page = "mixplane_release_lateness_seconds_bucket{worker=\"0\",le=\"-1\"} 5\n\
            mixplane_release_lateness_seconds_bucket{worker=\"0\",le=\"abc\"} 5\n\
            mixplane_release_lateness_seconds_bucket{worker=\"0\",le=\"NaN\"} 5\n\
            mixplane_release_lateness_seconds_bucket{worker=\"0\",xle=\"0.001\"} 5\n\
            mixplane_release_lateness_seconds_bucket{worker=\"0\",le=\"0.001\"} -3\n\
            mixplane_release_lateness_seconds_bucket{worker=\"0\",le=\"0.002\"} 7\n\
            mixplane_release_lateness_seconds_bucket{worker=\"0\",le=\"+Inf\"} 9\n";
        let l = Lateness::from_prometheus(page).unwrap();
        assert_eq!(l.0, vec![(0.002, 7), (f64::INFINITY, 9)]);
        assert_eq!(l.quantile(0.5), Some(0.002));
        // an unparsable page is an error, not an empty histogram
        assert!(Lateness::from_prometheus("not { a metrics page").is_err());
    }

    proptest::proptest! {
        /// Arbitrary text never panics the page readers.
        #[test]
        fn arbitrary_pages_never_panic(text in "[a-z_{}=\",.0-9+Inf \n-]{0,300}") {
            let _ = Lateness::from_prometheus(&text).map(|l| (l.quantile(0.99), l.count()));
            let _ = DropCounts::from_prometheus(&text);
        }
    }
}
