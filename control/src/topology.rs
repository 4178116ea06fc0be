//! The network topology: which nodes exist, their mix addresses, roles, Sphinx keys, Noise keys
//! and the transport each speaks.
//!
//! The format is nym-api's "skimmed nodes" JSON (`/v1/unstable/nym-nodes/skimmed`): a list of
//! nodes, each with `node_id`, `ed25519_identity_pubkey`, `ip_addresses`, `mix_port`,
//! `x25519_sphinx_pubkey` (base58) and `role` (or `epoch_role`): `"EntryGateway"`,
//! `"ExitGateway"`, `{"Mixnode": {"layer": 1..3}}`, `"Standby"` or `"Inactive"`. nym-api's
//! "semi-skimmed" nodes are accepted too: `{"basic": <skimmed node>, "x25519_noise_versioned_key":
//! {"supported_version": 1, "x25519_pubkey": "<base58>"}}` (or the key under `noise_key`, as
//! nym-api's v3 documents have it); a flat node may carry the same optional field. A node may
//! also carry mixplane's extension `"mixplane_transport": "udp" | "tcp"` (absent: `"tcp"`, what
//! Nym nodes speak).
//!
//! The list may be the document itself or sit under `nodes`, `data` or `nodes.data` (nym-api's
//! paginated envelope). A topology file uses the same format. A malformed node is skipped and
//! reported (with its index and field) in [`Parsed::skipped`]; a document whose every node is
//! malformed is rejected with the first node's error.
//!
//! [`check_replacement`] refuses a document that would empty or sharply shrink the current
//! topology, and [`TopologyHealth`] counts what was skipped and refused, for the metrics page.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::metrics::PromText;

/// A node's role in the current epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A mix node in layer 1, 2 or 3.
    Mix(u8),
    /// An entry gateway.
    Entry,
    /// An exit gateway.
    Exit,
    /// In the rewarded set but not active.
    Standby,
    /// Not active.
    Inactive,
}

/// The transport a node speaks to other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerTransport {
    /// UDP datagrams, one frame each (mixplane nodes).
    Udp,
    /// Nym's TCP stream framing, with Noise when the node has a Noise key (Nym nodes).
    #[default]
    Tcp,
}

/// A node's Noise key with the Noise protocol version it supports, as nym-api publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NoiseKeyInfo {
    /// `supported_version` (1: Nym's Noise XKpsk3 as of nym-node 1.14).
    pub version: u8,
    /// The x25519 public key.
    pub key: [u8; 32],
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyNode {
    /// nym-api node id.
    pub id: u32,
    /// Ed25519 identity key (base58, as published).
    pub identity: String,
    /// Mix addresses (each IP with the mix port).
    pub addresses: Vec<SocketAddr>,
    /// Role.
    pub role: Role,
    /// X25519 Sphinx public key.
    pub sphinx_key: [u8; 32],
    /// The Noise key, if the document lists one.
    pub noise: Option<NoiseKeyInfo>,
    /// The transport it speaks (`mixplane_transport`; default TCP).
    pub transport: PeerTransport,
}

/// How to reach one node's address: what [`Topology::peers`] yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// nym-api node id.
    pub node_id: u32,
    /// The transport it speaks.
    pub transport: PeerTransport,
    /// Its Noise public key, if known (then initiate Noise to it).
    pub noise_key: Option<[u8; 32]>,
    /// The Noise version of that key.
    pub noise_version: Option<u8>,
}

/// A parsed topology.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    /// The nodes.
    pub nodes: Vec<TopologyNode>,
}

/// A parsed document: the topology and the node entries that were skipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// The well-formed nodes.
    pub topology: Topology,
    /// Why each skipped node was skipped ([`TopologyError::Node`]).
    pub skipped: Vec<TopologyError>,
}

/// Why a topology document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// Not JSON, or not the expected shape.
    #[error("topology is not valid JSON: {0}")]
    Json(String),
    /// No node list found.
    #[error(
        "topology has no node list (expected a list, or one under `nodes`, `data` or `nodes.data`)"
    )]
    NoNodes,
    /// Fetching from a URL failed.
    #[error("fetching the topology from {url}: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A plain-http URL without `allow_http`.
    #[error("{url}: not an https:// URL (set [topology] allow_http = true to allow http)")]
    InsecureUrl {
        /// The URL.
        url: String,
    },
    /// The document (all pages together) is larger than allowed.
    #[error("the topology from {url} is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap on total bytes.
        limit: u64,
    },
    /// The document lists no node.
    #[error("the new topology lists no node; keeping the current one")]
    Empty,
    /// The document lists far fewer nodes than the current topology.
    #[error(
        "the new topology lists {new} nodes, too few beside the current {current} (see [topology] min_node_fraction); keeping the current one"
    )]
    Shrunk {
        /// Nodes in the current topology.
        current: usize,
        /// Nodes in the new document.
        new: usize,
    },
    /// A node is malformed.
    #[error("topology node {index}: {field}: {message}")]
    Node {
        /// Position in the list.
        index: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct RawNode {
    node_id: u32,
    #[serde(default)]
    ed25519_identity_pubkey: String,
    ip_addresses: Vec<String>,
    mix_port: u16,
    x25519_sphinx_pubkey: String,
    #[serde(alias = "epoch_role")]
    role: serde_json::Value,
}

#[derive(Deserialize)]
struct RawNoise {
    supported_version: u8,
    x25519_pubkey: String,
}

/// What is wrong with a role value.
#[derive(Debug, thiserror::Error)]
enum RoleError {
    #[error("unknown role `{0}`")]
    Unknown(String),
    #[error("expected {{\"Mixnode\": {{\"layer\": N}}}}")]
    NoLayer,
    #[error("mix layer {0} is not 1, 2 or 3")]
    BadLayer(u64),
    #[error("expected a string or {{\"Mixnode\": {{...}}}}")]
    Shape,
}

fn role_of(v: &serde_json::Value) -> Result<Role, RoleError> {
    match v {
        serde_json::Value::String(s) => match s.as_str() {
            "EntryGateway" | "entry" | "gateway" => Ok(Role::Entry),
            "ExitGateway" | "exit" => Ok(Role::Exit),
            "Standby" => Ok(Role::Standby),
            "Inactive" => Ok(Role::Inactive),
            other => Err(RoleError::Unknown(other.to_string())),
        },
        serde_json::Value::Object(m) => {
            let layer = m
                .get("Mixnode")
                .and_then(|x| x.get("layer"))
                .and_then(|l| l.as_u64())
                .ok_or(RoleError::NoLayer)?;
            if (1..=3).contains(&layer) {
                Ok(Role::Mix(layer as u8))
            } else {
                Err(RoleError::BadLayer(layer))
            }
        }
        _ => Err(RoleError::Shape),
    }
}

/// A base58 x25519 key.
fn key_of(b58: &str) -> Result<[u8; 32], String> {
    let k = bs58::decode(b58).into_vec().map_err(|e| e.to_string())?;
    k.try_into()
        .map_err(|k: Vec<u8>| format!("{} bytes, expected 32", k.len()))
}

/// Parses one node entry (flat, or semi-skimmed with `basic`).
fn node_of(index: usize, item: &serde_json::Value) -> Result<TopologyNode, TopologyError> {
    let bad = |field: &'static str, message: String| TopologyError::Node {
        index,
        field,
        message,
    };
    let basic = item.get("basic").unwrap_or(item);
    let raw: RawNode =
        serde_json::from_value(basic.clone()).map_err(|e| bad("node", e.to_string()))?;
    let sphinx_key =
        key_of(&raw.x25519_sphinx_pubkey).map_err(|m| bad("x25519_sphinx_pubkey", m))?;
    let mut addresses = Vec::with_capacity(raw.ip_addresses.len());
    for ip in &raw.ip_addresses {
        let ip: IpAddr = ip
            .parse()
            .map_err(|e| bad("ip_addresses", format!("`{ip}`: {e}")))?;
        addresses.push(SocketAddr::new(ip, raw.mix_port));
    }
    if addresses.is_empty() {
        return Err(bad("ip_addresses", "no address".into()));
    }
    let role = role_of(&raw.role).map_err(|e| bad("role", e.to_string()))?;
    // the optional fields, on the outer object or (flat documents) the node itself
    let field = |name: &str| {
        item.get(name)
            .or_else(|| basic.get(name))
            .filter(|v| !v.is_null())
    };
    let noise = match field("x25519_noise_versioned_key").or_else(|| field("noise_key")) {
        None => None,
        Some(v) => {
            let n: RawNoise = serde_json::from_value(v.clone())
                .map_err(|e| bad("x25519_noise_versioned_key", e.to_string()))?;
            let key = key_of(&n.x25519_pubkey).map_err(|m| bad("x25519_noise_versioned_key", m))?;
            Some(NoiseKeyInfo {
                version: n.supported_version,
                key,
            })
        }
    };
    let transport = match field("mixplane_transport") {
        None => PeerTransport::default(),
        Some(v) => {
            PeerTransport::deserialize(v).map_err(|e| bad("mixplane_transport", e.to_string()))?
        }
    };
    Ok(TopologyNode {
        id: raw.node_id,
        identity: raw.ed25519_identity_pubkey,
        addresses,
        role,
        sphinx_key,
        noise,
        transport,
    })
}

/// Where a fetch may go and how much it may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Each request (each page of a paginated document) must finish within this.
    pub timeout: Duration,
    /// Allow `http://` URLs (and redirects to them). Otherwise https only.
    pub allow_http: bool,
    /// The cap on bytes read, all pages together.
    pub max_bytes: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(10),
            allow_http: false,
            max_bytes: 64 << 20,
        }
    }
}

/// Why [`get`] failed.
#[derive(Debug)]
pub(crate) enum GetError {
    /// Not https, or http without `allow_http`.
    Insecure,
    /// The body is longer than the limit.
    TooLarge,
    /// Connecting, the status or reading failed.
    Other(String),
}

/// Whether `opts` allow fetching `url`: https, or http with `allow_http`.
fn url_allowed(url: &str, opts: &FetchOptions) -> bool {
    url.starts_with("https://") || (opts.allow_http && url.starts_with("http://"))
}

/// GETs a JSON document from nym-api (the one HTTP client of the control plane): https only
/// unless `opts.allow_http` (redirects too), finished within `opts.timeout`, reading at most
/// `limit` bytes of the body.
pub(crate) fn get(url: &str, opts: &FetchOptions, limit: u64) -> Result<Vec<u8>, GetError> {
    if !url_allowed(url, opts) {
        return Err(GetError::Insecure);
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(opts.timeout))
        .https_only(!opts.allow_http)
        .build()
        .into();
    agent
        .get(url)
        .header("Accept", "application/json")
        .call()
        .map_err(|e| GetError::Other(e.to_string()))?
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => GetError::TooLarge,
            e => GetError::Other(e.to_string()),
        })
}

impl Topology {
    /// Parses a topology document, skipping malformed nodes (see [`Topology::parse_counted`]).
    pub fn parse(text: &[u8]) -> Result<Topology, TopologyError> {
        Self::parse_counted(text).map(|p| p.topology)
    }

    /// Parses a topology document; malformed nodes are skipped and returned in
    /// [`Parsed::skipped`]. Fails if there is no node list, or if every node is malformed.
    pub fn parse_counted(text: &[u8]) -> Result<Parsed, TopologyError> {
        let doc: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| TopologyError::Json(e.to_string()))?;
        let list = if doc.is_array() {
            &doc
        } else if let Some(l) = doc
            .get("nodes")
            .and_then(|n| if n.is_array() { Some(n) } else { n.get("data") })
        {
            l
        } else if let Some(l) = doc.get("data") {
            l
        } else {
            return Err(TopologyError::NoNodes);
        };
        let items = list.as_array().ok_or(TopologyError::NoNodes)?;
        let mut out = Parsed::default();
        for (index, item) in items.iter().enumerate() {
            match node_of(index, item) {
                Ok(n) => out.topology.nodes.push(n),
                Err(e) => out.skipped.push(e),
            }
        }
        if out.topology.nodes.is_empty()
            && let Some(first) = out.skipped.first()
        {
            return Err(first.clone());
        }
        Ok(out)
    }

    /// Fetches nym-api's skimmed nodes from `url` (https, or http when `opts.allow_http`),
    /// following its pagination (`?page=N` while fewer nodes than `pagination.total` have
    /// come, at most 100 pages), reading at most `opts.max_bytes` in all, and parses them. A
    /// document without pagination is taken as it is.
    pub fn fetch(url: &str, opts: &FetchOptions) -> Result<Parsed, TopologyError> {
        let fail = |message: String| TopologyError::Fetch {
            url: url.to_string(),
            message,
        };
        if !url_allowed(url, opts) {
            return Err(TopologyError::InsecureUrl {
                url: url.to_string(),
            });
        }
        let mut out = Parsed::default();
        let mut budget = opts.max_bytes;
        for page in 0..100u32 {
            let page_url = if page == 0 {
                url.to_string()
            } else {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}page={page}")
            };
            let body = get(&page_url, opts, budget).map_err(|e| match e {
                GetError::TooLarge => TopologyError::TooLarge {
                    url: url.to_string(),
                    limit: opts.max_bytes,
                },
                GetError::Insecure => TopologyError::InsecureUrl {
                    url: url.to_string(),
                },
                GetError::Other(m) => fail(m),
            })?;
            budget = budget.saturating_sub(body.len() as u64);
            let p = Topology::parse_counted(&body)?;
            let got = p.topology.nodes.len() + p.skipped.len();
            out.topology.nodes.extend(p.topology.nodes);
            out.skipped.extend(p.skipped);
            let total = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|d| {
                    d.pointer("/nodes/pagination/total")
                        .and_then(|v| v.as_u64())
                });
            let seen = (out.topology.nodes.len() + out.skipped.len()) as u64;
            match total {
                Some(total) if seen < total && got > 0 => continue,
                _ => return Ok(out),
            }
        }
        Err(fail("more than 100 pages".into()))
    }

    /// Every mix address of every node (the routing filter's allowed next hops).
    pub fn addresses(&self) -> HashSet<SocketAddr> {
        self.nodes
            .iter()
            .flat_map(|n| n.addresses.iter().copied())
            .collect()
    }

    /// Every mix address of every node with how to reach it: the transport the node speaks
    /// and its Noise key.
    pub fn peers(&self) -> impl Iterator<Item = (SocketAddr, PeerInfo)> + '_ {
        self.nodes.iter().flat_map(|n| {
            let info = PeerInfo {
                node_id: n.id,
                transport: n.transport,
                noise_key: n.noise.map(|k| k.key),
                noise_version: n.noise.map(|k| k.version),
            };
            n.addresses.iter().map(move |a| (*a, info))
        })
    }

    /// The nodes with a role.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &TopologyNode> {
        self.nodes.iter().filter(move |n| n.role == role)
    }
}

/// Whether `new` may replace `current`: not if it lists no node, nor if it lists fewer than
/// `min_fraction` x the current node count (a truncated or hostile document would otherwise
/// cut the node off from the network).
pub fn check_replacement(
    current: Option<&Topology>,
    new: &Topology,
    min_fraction: f64,
) -> Result<(), TopologyError> {
    if new.nodes.is_empty() {
        return Err(TopologyError::Empty);
    }
    if let Some(cur) = current
        && (new.nodes.len() as f64) < cur.nodes.len() as f64 * min_fraction
    {
        return Err(TopologyError::Shrunk {
            current: cur.nodes.len(),
            new: new.nodes.len(),
        });
    }
    Ok(())
}

/// What topology updates went wrong, for the metrics page: node entries skipped, documents
/// refused, and an alarm raised while the latest document was refused.
#[derive(Debug, Default)]
pub struct TopologyHealth {
    skipped_nodes: AtomicU64,
    refused: AtomicU64,
    alarm: AtomicBool,
}

impl TopologyHealth {
    /// A fresh record.
    pub fn new() -> TopologyHealth {
        TopologyHealth::default()
    }

    /// Records a document parsed with `skipped` malformed node entries.
    pub fn record_skipped(&self, skipped: usize) {
        self.skipped_nodes
            .fetch_add(skipped as u64, Ordering::Relaxed);
    }

    /// Records the outcome of [`check_replacement`] for the latest document: a refusal counts
    /// and raises the alarm; an accepted document clears it.
    pub fn record_replacement(&self, outcome: &Result<(), TopologyError>) {
        if outcome.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        self.alarm.store(outcome.is_err(), Ordering::Relaxed);
    }

    /// Malformed node entries skipped so far.
    pub fn skipped_nodes(&self) -> u64 {
        self.skipped_nodes.load(Ordering::Relaxed)
    }

    /// Documents refused so far (empty or sharply shrunk).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether the latest document was refused.
    pub fn alarm(&self) -> bool {
        self.alarm.load(Ordering::Relaxed)
    }

    /// Writes the three series to a metrics page.
    pub fn write_metrics(&self, p: &mut PromText) {
        p.counter(
            "mixplane_topology_skipped_nodes_total",
            "Topology node entries skipped as malformed.",
            &[(&[], self.skipped_nodes() as f64)],
        );
        p.counter(
            "mixplane_topology_refused_total",
            "Topology documents refused as empty or sharply shrunk (the current one was kept).",
            &[(&[], self.refused() as f64)],
        );
        p.gauge(
            "mixplane_topology_alarm",
            "1 while the latest topology document was refused, else 0.",
            &[(&[], f64::from(u8::from(self.alarm())))],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/skimmed_nodes.json");

    #[test]
    fn parses_the_skimmed_nodes_fixture() {
        let t = Topology::parse(FIXTURE).unwrap();
        assert_eq!(t.nodes.len(), 5);
        assert_eq!(t.with_role(Role::Mix(1)).count(), 1);
        assert_eq!(t.with_role(Role::Entry).count(), 1);
        assert_eq!(t.with_role(Role::Exit).count(), 1);
        let n = &t.nodes[0];
        assert_eq!(n.addresses[0], "198.51.100.11:1789".parse().unwrap());
        assert!(
            t.addresses()
                .contains(&"[2001:db8::13]:1789".parse().unwrap())
        );
    }

    #[test]
    fn noise_keys_and_transports_come_through_peers() {
        let t = Topology::parse(FIXTURE).unwrap();
        let peers: std::collections::HashMap<SocketAddr, PeerInfo> = t.peers().collect();
        assert_eq!(peers.len(), 6);
        let at = |a: &str| peers[&a.parse::<SocketAddr>().unwrap()];
        let key = |b: &str| -> [u8; 32] { bs58::decode(b).into_vec().unwrap().try_into().unwrap() };
        // a flat node with nym-api's versioned key
        let p = at("198.51.100.12:1789");
        assert_eq!(p.node_id, 101);
        assert_eq!(p.transport, PeerTransport::Tcp);
        assert_eq!(
            p.noise_key,
            Some(key("BqwjjY2geX4Rz8wX19GVhVuEFUZcKRvduskdrNyHUoYE"))
        );
        assert_eq!(p.noise_version, Some(1));
        // a semi-skimmed node: both its addresses carry the key
        let k2 = Some(key("D2JdP6VfXBzUFiiEQKEQuxxDnCcrfGyLsANwr4BKgswr"));
        assert_eq!(at("198.51.100.13:1789").noise_key, k2);
        assert_eq!(at("[2001:db8::13]:1789").noise_key, k2);
        assert_eq!(t.nodes[2].role, Role::Mix(2));
        // mixplane's extension, and no key (absent or null)
        let p = at("198.51.100.14:1789");
        assert_eq!((p.transport, p.noise_key), (PeerTransport::Udp, None));
        assert_eq!(at("198.51.100.15:1789").noise_key, None);
        assert_eq!(at("198.51.100.11:1789").noise_key, None);
        // nym-api's v3 name for the key, and a bad transport
        let v3 = r#"[{"basic":{"node_id":1,"ip_addresses":["192.0.2.1"],"mix_port":1789,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"Standby"},"noise_key":{"supported_version":2,"x25519_pubkey":"11111111111111111111111111111111"},"build_version":"1.20.0","lp":null}]"#;
        let p = Topology::parse(v3.as_bytes())
            .unwrap()
            .peers()
            .next()
            .unwrap()
            .1;
        assert_eq!((p.noise_key, p.noise_version), (Some([0; 32]), Some(2)));
        let quic = r#"[{"node_id":1,"ip_addresses":["192.0.2.1"],"mix_port":1789,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"Standby","mixplane_transport":"quic"}]"#;
        let e = Topology::parse(quic.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("mixplane_transport"), "{e}");
    }

    #[test]
    fn bad_node_entries_are_skipped_and_counted() {
        let good = |i: u32| {
            format!(
                r#"{{"node_id":{i},"ip_addresses":["192.0.2.{i}"],"mix_port":1789,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"Standby"}}"#
            )
        };
        let doc = format!(
            r#"[{},{{"node_id":2}},{},{{"node_id":4,"ip_addresses":["192.0.2.4"],"mix_port":1,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"Standby","x25519_noise_versioned_key":{{"supported_version":1,"x25519_pubkey":"xyz0"}}}}]"#,
            good(1),
            good(3)
        );
        let p = Topology::parse_counted(doc.as_bytes()).unwrap();
        let ids: Vec<u32> = p.topology.nodes.iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(p.skipped.len(), 2);
        assert!(matches!(p.skipped[0], TopologyError::Node { index: 1, .. }));
        assert!(matches!(
            p.skipped[1],
            TopologyError::Node {
                index: 3,
                field: "x25519_noise_versioned_key",
                ..
            }
        ));
        let h = TopologyHealth::new();
        h.record_skipped(p.skipped.len());
        assert_eq!(h.skipped_nodes(), 2);
    }

    #[test]
    fn empty_or_sharply_shrunk_documents_are_refused_with_an_alarm() {
        let topo = |n: u32| Topology {
            nodes: (0..n)
                .map(|i| TopologyNode {
                    id: i,
                    identity: String::new(),
                    addresses: vec![SocketAddr::from(([192, 0, 2, 1], 1000 + i as u16))],
                    role: Role::Standby,
                    sphinx_key: [0; 32],
                    noise: None,
                    transport: PeerTransport::Tcp,
                })
                .collect(),
        };
        let h = TopologyHealth::new();
        let cur = topo(10);
        let r = check_replacement(Some(&cur), &topo(0), 0.5);
        assert_eq!(r, Err(TopologyError::Empty));
        h.record_replacement(&r);
        assert!(h.alarm());
        assert_eq!(
            check_replacement(None, &topo(0), 0.5),
            Err(TopologyError::Empty)
        );
        let r = check_replacement(Some(&cur), &topo(4), 0.5);
        assert_eq!(
            r,
            Err(TopologyError::Shrunk {
                current: 10,
                new: 4
            })
        );
        h.record_replacement(&r);
        assert_eq!((h.refused(), h.alarm()), (2, true));
        for n in [5, 10, 30] {
            assert_eq!(check_replacement(Some(&cur), &topo(n), 0.5), Ok(()), "{n}");
        }
        assert_eq!(check_replacement(None, &topo(1), 0.5), Ok(()));
        h.record_replacement(&Ok(()));
        assert!(!h.alarm());
        let mut p = PromText::new();
        h.write_metrics(&mut p);
        let m = crate::metrics::parse(&p.finish()).unwrap();
        assert!(m.contains(&("mixplane_topology_refused_total".into(), 2.0)));
        assert!(m.contains(&("mixplane_topology_alarm".into(), 0.0)));
    }

    /// Serves `pages` (bodies by `page` query parameter) on loopback, one request per page.
    fn serve_pages(pages: Vec<String>) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/api/v1/unstable/nym-nodes/skimmed",
            l.local_addr().unwrap()
        );
        let h = std::thread::spawn(move || {
            let mut served = 0;
            for _ in 0..pages.len() {
                let (mut s, _) = l.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                let page: usize = line
                    .split("page=")
                    .nth(1)
                    .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let body = &pages[page];
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                served += 1;
            }
            served
        });
        (url, h)
    }

    #[test]
    fn fetches_every_page_over_http() {
        let node = |i: u32| {
            format!(
                r#"{{"node_id":{i},"ip_addresses":["192.0.2.{i}"],"mix_port":1789,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"Standby"}}"#
            )
        };
        let page = |p: u32, ids: &[u32]| {
            let data: Vec<String> = ids.iter().map(|&i| node(i)).collect();
            format!(
                r#"{{"status":"fresh","nodes":{{"pagination":{{"total":5,"page":{p},"size":2}},"data":[{}]}}}}"#,
                data.join(",")
            )
        };
        let (url, h) = serve_pages(vec![page(0, &[1, 2]), page(1, &[3, 4]), page(2, &[5])]);
        let t = Topology::fetch(&url, &http_ok()).unwrap().topology;
        assert_eq!(h.join().unwrap(), 3);
        let ids: Vec<u32> = t.nodes.iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    }

    /// Fetch options for the loopback http test servers.
    fn http_ok() -> FetchOptions {
        FetchOptions {
            timeout: std::time::Duration::from_secs(5),
            allow_http: true,
            ..FetchOptions::default()
        }
    }

    #[test]
    fn fetch_errors_name_the_url() {
        let e = Topology::fetch("http://127.0.0.1:1/x", &http_ok())
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://127.0.0.1:1/x"), "{e}");
        let (url, h) = serve_pages(vec!["not json".into()]);
        let e = Topology::fetch(&url, &http_ok()).unwrap_err();
        assert!(matches!(e, TopologyError::Json(_)), "{e}");
        h.join().unwrap();
    }

    #[test]
    fn fetch_is_https_only_unless_http_is_allowed() {
        for url in ["http://127.0.0.1:1/x", "ftp://x/", "file:///etc/passwd"] {
            let e = Topology::fetch(url, &FetchOptions::default()).unwrap_err();
            assert_eq!(e, TopologyError::InsecureUrl { url: url.into() });
        }
        // allow_http allows http, nothing else
        let e = Topology::fetch("ftp://x/", &http_ok()).unwrap_err();
        assert!(matches!(e, TopologyError::InsecureUrl { .. }), "{e}");
    }

    #[test]
    fn fetch_caps_the_bytes_read_over_all_pages() {
        let node = r#"{"node_id":1,"ip_addresses":["192.0.2.1"],"mix_port":1789,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"Standby"}"#;
        let page = format!(r#"{{"nodes":{{"pagination":{{"total":2}},"data":[{node}]}}}}"#);
        let (url, h) = serve_pages(vec![page.clone(), page.clone()]);
        let opts = FetchOptions {
            max_bytes: page.len() as u64 + 10, // the first page fits, not both
            ..http_ok()
        };
        let e = Topology::fetch(&url, &opts).unwrap_err();
        assert_eq!(
            e,
            TopologyError::TooLarge {
                url: url.clone(),
                limit: opts.max_bytes
            }
        );
        h.join().unwrap();
    }

    #[test]
    fn accepts_every_envelope() {
        let one = r#"{"node_id":1,"ip_addresses":["192.0.2.1"],"mix_port":1789,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"Standby"}"#;
        for doc in [
            format!("[{one}]"),
            format!("{{\"nodes\":[{one}]}}"),
            format!("{{\"data\":[{one}]}}"),
            format!("{{\"nodes\":{{\"pagination\":{{}},\"data\":[{one}]}}}}"),
        ] {
            assert_eq!(
                Topology::parse(doc.as_bytes()).unwrap().nodes.len(),
                1,
                "{doc}"
            );
        }
    }

    #[test]
    fn malformed_documents_give_clear_errors() {
        let cases: [(&str, &str); 8] = [
            ("not json", "not valid JSON"),
            ("{\"other\": 1}", "no node list"),
            ("[{\"node_id\": 1}]", "node 0: node"),
            (
                r#"[{"node_id":1,"ip_addresses":["nope"],"mix_port":1,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"Standby"}]"#,
                "ip_addresses",
            ),
            (
                r#"[{"node_id":1,"ip_addresses":[],"mix_port":1,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"Standby"}]"#,
                "ip_addresses",
            ),
            (
                r#"[{"node_id":1,"ip_addresses":["192.0.2.1"],"mix_port":1,"x25519_sphinx_pubkey":"0OIl","role":"Standby"}]"#,
                "x25519_sphinx_pubkey",
            ),
            (
                r#"[{"node_id":1,"ip_addresses":["192.0.2.1"],"mix_port":1,"x25519_sphinx_pubkey":"1111","role":"Standby"}]"#,
                "expected 32",
            ),
            (
                r#"[{"node_id":1,"ip_addresses":["192.0.2.1"],"mix_port":1,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":{"Mixnode":{"layer":7}}}]"#,
                "layer 7",
            ),
        ];
        for (doc, want) in cases {
            let e = Topology::parse(doc.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{doc}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = Topology::parse(&b);
        }
    }
}
