//! The loadgen's topology file: which nodes a route goes through.
//!
//! A JSON object with `layers` (a list of mix layers, each a non-empty list of nodes) and an
//! optional `exit` (alias `gateway`): the node every route ends at, which must deliver final-hop
//! messages to the loadgen's `--sink`. A route takes one node per layer, uniformly at random,
//! then the exit; at most 5 hops in all (the Sphinx header's limit).
//!
//! ```json
//! {
//!   "layers": [
//!     [{ "address": "10.0.0.1:1789", "public_key": "5Hk...base58", "rotation_id": 1 }],
//!     [{ "address": "10.0.0.2:1789", "public_key": "a1b2...64 hex digits", "rotation_id": 1 }],
//!     [{ "address": "10.0.0.3:1789", "public_key": "...", "rotation_id": 1 }]
//!   ],
//!   "exit": { "address": "10.0.0.4:1789", "public_key": "...", "rotation_id": 1 }
//! }
//! ```
//!
//! nym-api's "skimmed nodes" document (as `mixplane run`'s `[topology] file` takes it) is read
//! too: its layer 1, 2 and 3 mix nodes are the layers and its first exit gateway (else entry
//! gateway) the exit; it carries no rotation ids, so first-hop frames say "unknown" rotation
//! and the node tries its primary key, then its secondary.
//!
//! `public_key` is the node's X25519 Sphinx key, 64 hex digits or base58 (Nym's encoding).
//! `rotation_id` (default 1) only matters for a route's first hop: its parity goes into the v8
//! frame header that the loadgen writes; later hops' frame headers are written by the nodes.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use mixplane_dataplane::sphinx::KeyRotation;
use mixplane_dataplane::sphinx::build::{Hop, MAX_ROUTE_LEN};
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// One node as the topology file names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The node's UDP address.
    pub address: SocketAddr,
    /// The node's X25519 Sphinx public key: 64 hex digits or base58.
    pub public_key: String,
    /// The key's rotation id (its parity goes into the frame header).
    #[serde(default = "one")]
    pub rotation_id: u32,
}

fn one() -> u32 {
    1
}

/// The topology file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyFile {
    /// Mix layers, first to last.
    pub layers: Vec<Vec<NodeEntry>>,
    /// The node every route ends at (optional).
    #[serde(default, alias = "gateway", skip_serializing_if = "Option::is_none")]
    pub exit: Option<NodeEntry>,
}

/// A node with its key decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopoNode {
    /// Address and public key, as the builder takes them.
    pub hop: Hop,
    /// The key's rotation parity.
    pub rotation: KeyRotation,
}

/// A checked topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Mix layers, each non-empty.
    pub layers: Vec<Vec<TopoNode>>,
    /// The exit, if any.
    pub exit: Option<TopoNode>,
}

impl Topology {
    /// Reads and checks a topology file.
    pub fn load(path: &Path) -> anyhow::Result<Topology> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading topology {}", path.display()))?;
        Topology::parse(&text).with_context(|| format!("topology {}", path.display()))
    }

    /// Parses and checks topology JSON: the loadgen's own format (an object with `layers`) or
    /// nym-api's skimmed nodes.
    pub fn parse(json: &str) -> anyhow::Result<Topology> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        if value.get("layers").is_some() {
            let file: TopologyFile = serde_json::from_value(value)?;
            return Topology::from_file(&file);
        }
        Topology::from_skimmed(&mixplane_control::topology::Topology::parse(
            json.as_bytes(),
        )?)
    }

    /// Routes through a nym-api topology: its three mix layers, then an exit gateway (or, if
    /// it has none, an entry gateway).
    pub fn from_skimmed(t: &mixplane_control::topology::Topology) -> anyhow::Result<Topology> {
        use mixplane_control::topology::{Role, TopologyNode};
        let node = |n: &TopologyNode| TopoNode {
            hop: Hop {
                address: n.addresses[0],
                public_key: n.sphinx_key,
            },
            rotation: KeyRotation::Unknown,
        };
        let layers: Vec<Vec<TopoNode>> = (1..=3)
            .map(|l| t.with_role(Role::Mix(l)).map(node).collect())
            .collect();
        if let Some(l) = layers.iter().position(Vec::is_empty) {
            bail!("the topology has no mix node in layer {}", l + 1);
        }
        let exit = t
            .with_role(Role::Exit)
            .chain(t.with_role(Role::Entry))
            .next()
            .map(node);
        let topo = Topology { layers, exit };
        Ok(topo)
    }

    /// Checks a parsed file and decodes its keys.
    pub fn from_file(file: &TopologyFile) -> anyhow::Result<Topology> {
        let node = |n: &NodeEntry| -> anyhow::Result<TopoNode> {
            Ok(TopoNode {
                hop: Hop {
                    address: n.address,
                    public_key: decode_key(&n.public_key)
                        .with_context(|| format!("public key of {}", n.address))?,
                },
                rotation: KeyRotation::of_rotation_id(n.rotation_id),
            })
        };
        let layers = file
            .layers
            .iter()
            .map(|l| l.iter().map(node).collect::<anyhow::Result<Vec<_>>>())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let exit = file.exit.as_ref().map(node).transpose()?;
        let topo = Topology { layers, exit };
        let hops = topo.route_len();
        if hops == 0 {
            bail!("no layers and no exit");
        }
        if hops > MAX_ROUTE_LEN {
            bail!("routes would have {hops} hops, at most {MAX_ROUTE_LEN} fit a Sphinx header");
        }
        if let Some(i) = topo.layers.iter().position(|l| l.is_empty()) {
            bail!("layer {i} is empty");
        }
        Ok(topo)
    }

    /// A topology of one node per layer along a fixed route.
    pub fn fixed(route: &[TopoNode]) -> Topology {
        Topology {
            layers: route.iter().map(|n| vec![*n]).collect(),
            exit: None,
        }
    }

    /// Hops in every route.
    pub fn route_len(&self) -> usize {
        self.layers.len() + usize::from(self.exit.is_some())
    }

    /// Picks a route: one node per layer, then the exit.
    pub fn pick(&self, rng: &mut impl rand::Rng, out: &mut Vec<TopoNode>) {
        out.clear();
        for layer in &self.layers {
            out.push(layer[rng.random_range(0..layer.len())]);
        }
        out.extend(self.exit);
    }
}

/// Decodes a 32-byte key given as 64 hex digits or in base58.
pub fn decode_key(s: &str) -> anyhow::Result<[u8; 32]> {
    let s = s.trim();
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()?
    } else {
        base58_decode(s)?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("key is {} bytes, expected 32", b.len()))
}

const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Decodes Bitcoin-alphabet base58 (what Nym uses for keys).
pub fn base58_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    // big-endian base-256 digits, least significant last
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    for c in s.bytes() {
        let Some(mut carry) = BASE58.iter().position(|&a| a == c).map(|v| v as u32) else {
            bail!("`{}` is not a base58 digit", c as char);
        };
        for b in out.iter_mut().rev() {
            carry += u32::from(*b) * 58;
            *b = carry as u8;
            carry >>= 8;
        }
        while carry > 0 {
            out.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    let zeros = s.bytes().take_while(|&c| c == b'1').count();
    let mut v = vec![0u8; zeros];
    v.extend(out.into_iter().skip_while(|&b| b == 0));
    Ok(v)
}

/// Encodes bytes in base58 (for topology files the loadgen writes and for tests).
pub fn base58_encode(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::new(); // base-58, least significant first
    for &b in bytes {
        let mut carry = u32::from(b);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    std::iter::repeat_n('1', zeros)
        .chain(digits.iter().rev().map(|&d| BASE58[d as usize] as char))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base58_round_trips() {
        for v in [
            vec![],
            vec![0],
            vec![0, 0, 1],
            vec![255; 32],
            (0..32).collect(),
        ] {
            assert_eq!(base58_decode(&base58_encode(&v)).unwrap(), v);
        }
        assert_eq!(base58_encode(b"hello world"), "StV1DL6CwTryKyV");
    }

    #[test]
    fn topology_parses_hex_and_base58() {
        let k = [7u8; 32];
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        let json = format!(
            r#"{{"layers": [[{{"address": "127.0.0.1:1", "public_key": "{hex}"}}]],
                "gateway": {{"address": "127.0.0.1:2", "public_key": "{}", "rotation_id": 2}}}}"#,
            base58_encode(&k)
        );
        let t = Topology::parse(&json).unwrap();
        assert_eq!(t.route_len(), 2);
        assert_eq!(t.layers[0][0].hop.public_key, k);
        assert_eq!(t.exit.unwrap().hop.public_key, k);
        assert_eq!(t.exit.unwrap().rotation, KeyRotation::Even);
        assert!(Topology::parse(r#"{"layers": [[]]}"#).is_err());
    }
}

#[cfg(test)]
mod skimmed_tests {
    use super::*;

    #[test]
    fn nym_api_skimmed_nodes_become_layers_and_an_exit() {
        let fixture = include_str!("../../../control/tests/fixtures/skimmed_nodes.json");
        let t = Topology::parse(fixture).unwrap();
        assert_eq!(t.layers.len(), 3);
        assert!(t.layers.iter().all(|l| !l.is_empty()));
        assert_eq!(t.route_len(), 4);
        assert!(t.exit.is_some());
        assert!(t.layers[0][0].rotation == KeyRotation::Unknown);
        // a document without a full set of layers is refused with the layer named
        let only_entry = r#"[{"node_id":1,"ip_addresses":["192.0.2.1"],"mix_port":1789,"x25519_sphinx_pubkey":"11111111111111111111111111111111","role":"EntryGateway"}]"#;
        let e = Topology::parse(only_entry).unwrap_err().to_string();
        assert!(e.contains("layer 1"), "{e}");
    }
}
