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
    /// Fetching from a URL failed.
    #[error("fetching the topology from {url}: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
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

    /// Fetches nym-api's skimmed nodes from `url` (http or https), following its pagination
    /// (`?page=N` while fewer nodes than `pagination.total` have come, at most 100 pages), and
    /// parses them. A document without pagination is taken as it is.
    pub fn fetch(url: &str, timeout: std::time::Duration) -> Result<Topology, TopologyError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .into();
        let fail = |message: String| TopologyError::Fetch {
            url: url.to_string(),
            message,
        };
        let mut nodes = Vec::new();
        for page in 0..100u32 {
            let page_url = if page == 0 {
                url.to_string()
            } else {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}page={page}")
            };
            let body = agent
                .get(&page_url)
                .header("Accept", "application/json")
                .call()
                .map_err(|e| fail(e.to_string()))?
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .map_err(|e| fail(e.to_string()))?;
            let t = Topology::parse(&body)?;
            let got = t.nodes.len();
            nodes.extend(t.nodes);
            let total = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|d| {
                    d.pointer("/nodes/pagination/total")
                        .and_then(|v| v.as_u64())
                });
            match total {
                Some(total) if (nodes.len() as u64) < total && got > 0 => continue,
                _ => return Ok(Topology { nodes }),
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
        let t = Topology::fetch(&url, std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(h.join().unwrap(), 3);
        let ids: Vec<u32> = t.nodes.iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn fetch_errors_name_the_url() {
        let e = Topology::fetch("http://127.0.0.1:1/x", std::time::Duration::from_secs(2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://127.0.0.1:1/x"), "{e}");
        let (url, h) = serve_pages(vec!["not json".into()]);
        let e = Topology::fetch(&url, std::time::Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, TopologyError::Json(_)), "{e}");
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
