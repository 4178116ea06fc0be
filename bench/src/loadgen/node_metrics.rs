//! Reads a mixplane node's drop counters from its admin API (`GET /metrics`), so that a replay
//! can tell whether the node took the packets or dropped them as replays (its replay filter has
//! seen the capture) or as built for another key.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

/// Packets dropped so far, summed over workers, by reason (`mixplane_packets_dropped_total`).
pub fn drops_by_reason(admin: SocketAddr) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(3))
        .with_context(|| format!("connecting to the node's admin API at {admin}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP reply from {admin}");
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "{admin}/metrics: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    let metrics = mixplane_control::metrics::parse(body).map_err(anyhow::Error::msg)?;
    let mut out = BTreeMap::new();
    for (name, v) in metrics {
        let Some(labels) = name.strip_prefix("mixplane_packets_dropped_total{") else {
            continue;
        };
        let Some(reason) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("reason=\""))
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        *out.entry(reason.to_string()).or_insert(0) += v as u64;
    }
    Ok(out)
}

/// What the node made of a replay, from its drop counters before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeVerdict {
    /// Drops by reason during the replay.
    pub drops: BTreeMap<String, u64>,
    /// Datagrams replayed.
    pub sent: u64,
}

impl NodeVerdict {
    /// The difference of two counter readings.
    pub fn between(
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
        sent: u64,
    ) -> NodeVerdict {
        let drops = after
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
            .filter(|(_, d)| *d > 0)
            .collect();
        NodeVerdict { drops, sent }
    }

    /// Packets the node dropped as replays.
    pub fn replayed(&self) -> u64 {
        self.drops.get("replayed").copied().unwrap_or(0)
    }

    /// Packets dropped because no live key opened them.
    pub fn wrong_key(&self) -> u64 {
        self.drops.get("bad_mac").copied().unwrap_or(0)
    }

    /// A warning for the operator, if the replay did not exercise the node as fresh traffic.
    pub fn warning(&self) -> Option<String> {
        if self.replayed() > 0 {
            Some(format!(
                "the node dropped {} of {} replayed packets as replays: its replay filter has seen this capture. \
                 For a repeatable replay, restart the node with the recorded key but without its replay directory (or a fresh `mixplane init` key and a new recording).",
                self.replayed(),
                self.sent
            ))
        } else if self.wrong_key() > 0 {
            Some(format!(
                "the node dropped {} of {} replayed packets for a bad MAC: they were built for another key (the node's key changed since the recording?).",
                self.wrong_key(),
                self.sent
            ))
        } else {
            None
        }
    }
}
