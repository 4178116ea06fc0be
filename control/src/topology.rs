//! The network topology: which nodes exist, their mix addresses, roles and Sphinx keys.
//!
//! The format is nym-api's "skimmed nodes" JSON (`/v1/unstable/nym-nodes/skimmed`): a list of
//! nodes, each with `node_id`, `ed25519_identity_pubkey`, `ip_addresses`, `mix_port`,
//! `x25519_sphinx_pubkey` (base58) and `role` (or `epoch_role`): `"EntryGateway"`,
//! `"ExitGateway"`, `{"Mixnode": {"layer": 1..3}}`, `"Standby"` or `"Inactive"`. The list may be
//! the document itself or sit under `nodes`, `data` or `nodes.data` (nym-api's paginated
//! envelope). A topology file uses the same format. Every node is checked; the first bad one
//! is reported with its index and field.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

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
}

/// A parsed topology.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    /// The nodes.
    pub nodes: Vec<TopologyNode>,
}

/// Why a topology document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Not JSON, or not the expected shape.
    #[error("topology is not valid JSON: {0}")]
    Json(String),
    /// No node list found.
    #[error(
        "topology has no node list (expected a list, or one under `nodes`, `data` or `nodes.data`)"
    )]
    NoNodes,
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

fn role_of(v: &serde_json::Value) -> Result<Role, String> {
    match v {
        serde_json::Value::String(s) => match s.as_str() {
            "EntryGateway" | "entry" | "gateway" => Ok(Role::Entry),
            "ExitGateway" | "exit" => Ok(Role::Exit),
            "Standby" => Ok(Role::Standby),
            "Inactive" => Ok(Role::Inactive),
            other => Err(format!("unknown role `{other}`")),
        },
        serde_json::Value::Object(m) => {
            let layer = m
                .get("Mixnode")
                .and_then(|x| x.get("layer"))
                .and_then(|l| l.as_u64())
                .ok_or("expected {\"Mixnode\": {\"layer\": N}}")?;
            if (1..=3).contains(&layer) {
                Ok(Role::Mix(layer as u8))
            } else {
                Err(format!("mix layer {layer} is not 1, 2 or 3"))
            }
        }
        _ => Err("expected a string or {\"Mixnode\": {...}}".into()),
    }
}

impl Topology {
    /// Parses a topology document.
    pub fn parse(text: &[u8]) -> Result<Topology, TopologyError> {
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
        let mut nodes = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let bad = |field: &'static str, message: String| TopologyError::Node {
                index,
                field,
                message,
            };
            let raw: RawNode =
                serde_json::from_value(item.clone()).map_err(|e| bad("node", e.to_string()))?;
            let key = bs58::decode(&raw.x25519_sphinx_pubkey)
                .into_vec()
                .map_err(|e| bad("x25519_sphinx_pubkey", e.to_string()))?;
            let sphinx_key: [u8; 32] = key.try_into().map_err(|k: Vec<u8>| {
                bad(
                    "x25519_sphinx_pubkey",
                    format!("{} bytes, expected 32", k.len()),
                )
            })?;
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
            let role = role_of(&raw.role).map_err(|m| bad("role", m))?;
            nodes.push(TopologyNode {
                id: raw.node_id,
                identity: raw.ed25519_identity_pubkey,
                addresses,
                role,
                sphinx_key,
            });
        }
        Ok(Topology { nodes })
    }

    /// Every mix address of every node (the routing filter's allowed next hops).
    pub fn addresses(&self) -> HashSet<SocketAddr> {
        self.nodes
            .iter()
            .flat_map(|n| n.addresses.iter().copied())
            .collect()
    }

    /// The nodes with a role.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &TopologyNode> {
        self.nodes.iter().filter(move |n| n.role == role)
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
