//! Building the loadgen's packets: real Nym frames for random routes through a [`Topology`],
//! built in chunks with [`build::build_batch`] (one batched X25519 call per key-schedule round
//! across the chunk).
//!
//! Every packet's message is a 17-byte [`Tag`]: magic (`mlgM`, or `mlgA` for the SURB-ACK that
//! comes back), the run id, the sequence number and the size class. Regular and extended packets
//! carry a SURB-ACK, as Nym's do (a node drops them without one); it is an ack-class packet for
//! a second random route whose message is the same tag with the ack magic, so the sink sees both
//! the message and, after the ack's trip through the mixnet, its ack.

use std::net::SocketAddr;
use std::str::FromStr;

use mixplane_dataplane::sphinx::build::{self, FinalPadding, Hop, PacketSpec};
use mixplane_dataplane::sphinx::{DEFAULT_MAX_DELAY_NS, FrameHeader, SizeClass};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::topology::{TopoNode, Topology};
use crate::error::{Error, Result};

/// Magic of a message tag.
pub const MSG_MAGIC: [u8; 4] = *b"mlgM";
/// Magic of an ack tag.
pub const ACK_MAGIC: [u8; 4] = *b"mlgA";
/// Length of an encoded [`Tag`] (fits the 21 bytes an ack-class packet carries).
pub const TAG_LEN: usize = 17;
/// Destination bytes written into every packet's final routing information.
pub const DESTINATION: [u8; 32] = *b"mixplane-loadgen-destination....";

/// What a sink message says about the packet it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// An ack (it came back as the SURB-ACK of message `seq`) rather than the message.
    pub ack: bool,
    /// The run that sent it (messages of other runs are ignored).
    pub run: u32,
    /// Sequence number.
    pub seq: u64,
    /// Size class of the message.
    pub class: SizeClass,
}

impl Tag {
    /// Encodes the tag.
    pub fn encode(&self) -> [u8; TAG_LEN] {
        let mut t = [0u8; TAG_LEN];
        t[..4].copy_from_slice(if self.ack { &ACK_MAGIC } else { &MSG_MAGIC });
        t[4..8].copy_from_slice(&self.run.to_be_bytes());
        t[8..16].copy_from_slice(&self.seq.to_be_bytes());
        t[16] = self.class.byte();
        t
    }

    /// Parses a sink message; `None` when it is not a loadgen tag.
    pub fn parse(msg: &[u8]) -> Option<Tag> {
        if msg.len() < TAG_LEN {
            return None;
        }
        let ack = match msg[..4].try_into().ok()? {
            MSG_MAGIC => false,
            ACK_MAGIC => true,
            _ => return None,
        };
        Some(Tag {
            ack,
            run: u32::from_be_bytes(msg[4..8].try_into().ok()?),
            seq: u64::from_be_bytes(msg[8..16].try_into().ok()?),
            class: SizeClass::from_byte(msg[16]).ok()?,
        })
    }
}

/// A weighted mix of size classes, e.g. `regular=90,ack=5,ext8=5` (a bare name means 100%).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    classes: Vec<(SizeClass, u32)>,
    total: u32,
}

impl Mix {
    /// Only this class.
    pub fn single(class: SizeClass) -> Mix {
        Mix {
            classes: vec![(class, 1)],
            total: 1,
        }
    }

    /// Picks a class with probability proportional to its weight.
    pub fn pick(&self, rng: &mut impl rand::Rng) -> SizeClass {
        let mut r = rng.random_range(0..self.total);
        for &(c, w) in &self.classes {
            if r < w {
                return c;
            }
            r -= w;
        }
        unreachable!("weights sum to total")
    }

    /// The classes and their weights.
    pub fn classes(&self) -> &[(SizeClass, u32)] {
        &self.classes
    }

    /// Whether any class is an extended (8, 16 or 32 KiB) one.
    pub fn has_extended(&self) -> bool {
        self.classes
            .iter()
            .any(|(c, _)| matches!(c, SizeClass::Ext8 | SizeClass::Ext16 | SizeClass::Ext32))
    }
}

impl Default for Mix {
    fn default() -> Self {
        Mix::single(SizeClass::Regular)
    }
}

impl FromStr for Mix {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mix> {
        let mut classes: Vec<(SizeClass, u32)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = match part.split_once('=') {
                Some((n, w)) => (
                    n.trim(),
                    w.trim()
                        .parse::<u32>()
                        .map_err(|e| Error::Mix(format!("weight of `{n}`: {e}")))?,
                ),
                None => (part, 1),
            };
            let Some(class) = SizeClass::ALL.into_iter().find(|c| c.name() == name) else {
                return Err(Error::Mix(format!(
                    "unknown size class `{name}` (ack, regular, ext8, ext16, ext32)"
                )));
            };
            if w == 0 {
                continue;
            }
            match classes.iter_mut().find(|(c, _)| *c == class) {
                Some(e) => e.1 += w,
                None => classes.push((class, w)),
            }
        }
        let total: u32 = classes.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err(Error::Mix(format!("`{s}` has no positive weight")));
        }
        Ok(Mix { classes, total })
    }
}

/// One frame ready to send.
#[derive(Debug, Clone)]
pub struct Built {
    /// Sequence number.
    pub seq: u64,
    /// Size class.
    pub class: SizeClass,
    /// The route's first hop.
    pub to: SocketAddr,
    /// The frame (v8 header and Sphinx packet).
    pub frame: Vec<u8>,
    /// Whether a SURB-ACK will come back for it.
    pub has_ack: bool,
}

/// An exponentially distributed per-hop delay with this mean, capped at the nodes' default
/// maximum (ns).
pub fn exp_delay_ns(rng: &mut impl rand::Rng, mean_ms: f64) -> u64 {
    if mean_ms <= 0.0 {
        return 0;
    }
    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    ((-u.ln() * mean_ms * 1e6) as u64).min(DEFAULT_MAX_DELAY_NS)
}

/// Builds chunks of frames.
pub struct Factory {
    topology: Topology,
    mix: Mix,
    mean_delay_ms: f64,
    run: u32,
    version: u16,
    rng: StdRng,
}

/// Per-packet material, owned so that the specs can borrow it.
struct Material {
    seq: u64,
    class: SizeClass,
    route: Vec<TopoNode>,
    hops: Vec<Hop>,
    delays: Vec<u64>,
    ack_hops: Vec<Hop>,
    ack_delays: Vec<u64>,
    tag: [u8; TAG_LEN],
    ack_tag: [u8; TAG_LEN],
    secrets: [[u8; 32]; 4],
    ids: [[u8; 16]; 2],
}

impl Factory {
    /// A factory for `run`, with its own RNG seeded from `seed`.
    pub fn new(
        topology: Topology,
        mix: Mix,
        mean_delay_ms: f64,
        run: u32,
        version: u16,
        seed: u64,
    ) -> Factory {
        Factory {
            topology,
            mix,
            mean_delay_ms,
            run,
            version,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Builds packets `first .. first + n`.
    pub fn build(&mut self, first: u64, n: usize) -> Result<Vec<Built>> {
        let mut route = Vec::new();
        let mats: Vec<Material> = (0..n as u64)
            .map(|k| {
                let seq = first + k;
                let class = self.mix.pick(&mut self.rng);
                self.topology.pick(&mut self.rng, &mut route);
                let hops: Vec<Hop> = route.iter().map(|n| n.hop).collect();
                let mut ack_route = Vec::new();
                self.topology.pick(&mut self.rng, &mut ack_route);
                let ack_hops: Vec<Hop> = ack_route.iter().map(|n| n.hop).collect();
                let mut tag = Tag {
                    ack: false,
                    run: self.run,
                    seq,
                    class,
                };
                let msg_tag = tag.encode();
                tag.ack = true;
                let delays = (0..hops.len())
                    .map(|_| exp_delay_ns(&mut self.rng, self.mean_delay_ms))
                    .collect();
                let ack_delays = (0..ack_hops.len())
                    .map(|_| exp_delay_ns(&mut self.rng, self.mean_delay_ms))
                    .collect();
                Material {
                    seq,
                    class,
                    route: route.clone(),
                    hops,
                    delays,
                    ack_hops,
                    ack_delays,
                    tag: msg_tag,
                    ack_tag: tag.encode(),
                    secrets: self.rng.random(),
                    ids: self.rng.random(),
                }
            })
            .collect();

        // the SURB-ACKs of the packets that carry one, batched
        let needs_ack = |m: &Material| m.class != SizeClass::Ack;
        let ack_specs: Vec<PacketSpec<'_>> = mats
            .iter()
            .filter(|m| needs_ack(m))
            .map(|m| PacketSpec {
                route: &m.ack_hops,
                delays_ns: &m.ack_delays,
                destination: DESTINATION,
                identifier: m.ids[1],
                version: self.version,
                payload_size: SizeClass::Ack.payload_len(),
                plaintext: &m.ack_tag,
                initial_secret: m.secrets[2],
                padding: FinalPadding::Seed(m.secrets[3]),
            })
            .collect();
        let mut acks = build::build_batch(&ack_specs).into_iter();
        let plaintexts: Vec<Vec<u8>> = mats
            .iter()
            .map(|m| -> Result<Vec<u8>> {
                if !needs_ack(m) {
                    return Ok(m.tag.to_vec());
                }
                let ack = acks.next().expect("one ack per packet that needs one")?;
                Ok(build::plaintext_with_surb_ack(
                    m.ack_hops[0].address,
                    &ack,
                    &m.tag,
                )?)
            })
            .collect::<Result<_>>()?;
        let specs: Vec<PacketSpec<'_>> = mats
            .iter()
            .zip(&plaintexts)
            .map(|(m, pt)| PacketSpec {
                route: &m.hops,
                delays_ns: &m.delays,
                destination: DESTINATION,
                identifier: m.ids[0],
                version: self.version,
                payload_size: m.class.payload_len(),
                plaintext: pt,
                initial_secret: m.secrets[0],
                padding: FinalPadding::Seed(m.secrets[1]),
            })
            .collect();
        let packets = build::build_batch(&specs);
        mats.iter()
            .zip(packets)
            .map(|(m, p)| {
                let header = FrameHeader::v8(m.class, m.route[0].rotation);
                Ok(Built {
                    seq: m.seq,
                    class: m.class,
                    to: m.hops[0].address,
                    frame: header.frame(&p?),
                    has_ack: needs_ack(m),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_picks() {
        let m: Mix = "regular=90,ack=5,ext8=5".parse().unwrap();
        assert_eq!(m.classes().len(), 3);
        assert!(m.has_extended());
        let mut rng = StdRng::seed_from_u64(1);
        let n = (0..10_000)
            .filter(|_| m.pick(&mut rng) == SizeClass::Regular)
            .count();
        assert!((8500..9500).contains(&n), "{n}");
        assert_eq!("ack".parse::<Mix>().unwrap(), Mix::single(SizeClass::Ack));
        assert!("jumbo=3".parse::<Mix>().is_err());
        assert!("ack=0".parse::<Mix>().is_err());
    }

    #[test]
    fn tags_round_trip() {
        let t = Tag {
            ack: true,
            run: 7,
            seq: 1 << 40,
            class: SizeClass::Ext16,
        };
        assert_eq!(Tag::parse(&t.encode()), Some(t));
        assert_eq!(Tag::parse(b"mlgX0123456789abcdef"), None);
    }
}
