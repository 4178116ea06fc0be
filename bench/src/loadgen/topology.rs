//! Which nodes a route goes through.
//!
//! The input is nym-api's "skimmed nodes" JSON (`/v1/unstable/nym-nodes/skimmed`, the format
//! `mixplane run`'s `[topology] file` takes), parsed by [`mixplane_control::topology`]. A route
//! is one mix node of layer 1, one of layer 2 and one of layer 3, each drawn uniformly at
//! random, then a gateway drawn the same way from the exit gateways (the entry gateways if
//! there are no exit gateways). The gateway delivers the final hop, so it must be a node that
//! delivers to the loadgen's sink (`--sink`). A node's first mix address is used.
//!
//! Skimmed nodes carry no key-rotation ids, so first-hop frames say "unknown rotation" and the
//! node tries its primary key, then its secondary. Routes built in-process ([`Topology::fixed`],
//! the demo) know their rotation and say it.

use std::path::Path;

use mixplane_control::topology::{Role, TopologyNode};
use mixplane_dataplane::sphinx::KeyRotation;
use mixplane_dataplane::sphinx::build::{Hop, MAX_ROUTE_LEN};
use rand::RngExt;

use crate::error::{Error, Result, io};

/// A node with its key decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopoNode {
    /// Address and public key, as the builder takes them.
    pub hop: Hop,
    /// The key's rotation parity (for the first hop's frame header).
    pub rotation: KeyRotation,
    /// The node's x25519 Noise key, when the topology lists one (for `--transport noise`).
    pub noise_key: Option<[u8; 32]>,
}

/// A checked topology: every route takes one node of each layer, then one of `gateways`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Mix layers, each non-empty.
    pub layers: Vec<Vec<TopoNode>>,
    /// The final hops to choose from (empty: routes end at the last layer).
    pub gateways: Vec<TopoNode>,
}

impl Topology {
    /// Reads a nym-api skimmed-nodes file.
    pub fn load(path: &Path) -> Result<Topology> {
        let text = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
        Topology::parse(&text)
    }

    /// Parses nym-api skimmed-nodes JSON.
    pub fn parse(json: &[u8]) -> Result<Topology> {
        Topology::from_skimmed(&mixplane_control::topology::Topology::parse(json)?)
    }

    /// Routes through a nym-api topology: its three mix layers, then an exit gateway (or, if it
    /// has none, an entry gateway).
    pub fn from_skimmed(t: &mixplane_control::topology::Topology) -> Result<Topology> {
        let node = |n: &TopologyNode| TopoNode {
            hop: Hop {
                address: n.addresses[0],
                public_key: n.sphinx_key,
            },
            rotation: KeyRotation::Unknown,
            noise_key: n.noise.map(|k| k.key),
        };
        let usable = |n: &&TopologyNode| !n.addresses.is_empty();
        let layers: Vec<Vec<TopoNode>> = (1..=3)
            .map(|l| t.with_role(Role::Mix(l)).filter(usable).map(node).collect())
            .collect();
        if let Some(l) = layers.iter().position(Vec::is_empty) {
            return Err(Error::Topology(format!(
                "no mix node with an address in layer {}",
                l + 1
            )));
        }
        let mut gateways: Vec<TopoNode> =
            t.with_role(Role::Exit).filter(usable).map(node).collect();
        if gateways.is_empty() {
            gateways = t.with_role(Role::Entry).filter(usable).map(node).collect();
        }
        if gateways.is_empty() {
            return Err(Error::Topology(
                "no exit or entry gateway with an address".into(),
            ));
        }
        Ok(Topology { layers, gateways })
    }

    /// A topology of one node per hop along a fixed route (at most [`MAX_ROUTE_LEN`] hops).
    pub fn fixed(route: &[TopoNode]) -> Topology {
        debug_assert!(!route.is_empty() && route.len() <= MAX_ROUTE_LEN);
        Topology {
            layers: route.iter().map(|n| vec![*n]).collect(),
            gateways: Vec::new(),
        }
    }

    /// Hops in every route.
    pub fn route_len(&self) -> usize {
        self.layers.len() + usize::from(!self.gateways.is_empty())
    }

    /// The nodes a route can start at.
    pub fn first_hops(&self) -> &[TopoNode] {
        self.layers.first().unwrap_or(&self.gateways)
    }

    /// Picks a route: one node per layer, then a gateway.
    pub fn pick(&self, rng: &mut impl rand::Rng, out: &mut Vec<TopoNode>) {
        out.clear();
        for layer in &self.layers {
            out.push(layer[rng.random_range(0..layer.len())]);
        }
        if !self.gateways.is_empty() {
            out.push(self.gateways[rng.random_range(0..self.gateways.len())]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const FIXTURE: &str = include_str!("../../../control/tests/fixtures/skimmed_nodes.json");

    #[test]
    fn skimmed_nodes_give_three_layers_and_a_gateway() {
        let t = Topology::parse(FIXTURE.as_bytes()).expect("fixture parses");
        let parsed = mixplane_control::topology::Topology::parse(FIXTURE.as_bytes()).unwrap();
        assert_eq!(t.layers.len(), 3);
        assert_eq!(t.route_len(), 4);
        for (l, layer) in t.layers.iter().enumerate() {
            let want: Vec<_> = parsed
                .with_role(Role::Mix(l as u8 + 1))
                .map(|n| n.addresses[0])
                .collect();
            let got: Vec<_> = layer.iter().map(|n| n.hop.address).collect();
            assert_eq!(got, want, "layer {}", l + 1);
        }
        let exits: Vec<_> = parsed.with_role(Role::Exit).map(|n| n.sphinx_key).collect();
        assert!(!exits.is_empty());
        assert!(t.gateways.iter().all(|g| exits.contains(&g.hop.public_key)));
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut route = Vec::new();
        for _ in 0..50 {
            t.pick(&mut rng, &mut route);
            assert_eq!(route.len(), 4);
            for (l, n) in route[..3].iter().enumerate() {
                assert!(t.layers[l].contains(n));
            }
            assert!(t.gateways.contains(&route[3]));
        }
    }

    #[test]
    fn a_topology_without_a_layer_is_rejected() {
        let mut doc: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        let Some(nodes) = doc
            .pointer_mut("/nodes/data")
            .and_then(|v| v.as_array_mut())
        else {
            panic!("the fixture's nodes sit under nodes.data");
        };
        // nodes come flat or, with their noise key, nested under "basic" (nym-api's semi-skimmed form)
        let layer_2 = |n: &serde_json::Value| {
            [&n["role"], &n["basic"]["role"]]
                .iter()
                .any(|r| r.get("Mixnode").is_some_and(|m| m["layer"] == 2))
        };
        nodes.retain(|n| !layer_2(n));
        let err = Topology::parse(doc.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("layer 2"), "{err}");
    }
}
