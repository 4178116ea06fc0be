//! nym-node's self-described HTTP API, which nym-api polls to describe a node (default port
//! 8080, public; separate from the local [admin](crate::admin) API).
//!
//! * `GET /api/v1/health`: `{"status":"up","uptime":SECONDS}`.
//! * `GET /api/v1/host-information`: `{"data": …, "signature": …}`: the IP addresses, hostname
//!   and public keys, signed with the node's ed25519 identity key over `serde_json::to_string`
//!   of `data`, the bytes `verify_host_information()` of crate `nym-node-requests` 2.0.0 checks.
//! * `GET /api/v1/build-information`: this program (`mixplane`), its version, the rustc that
//!   built it and the git commit if the build knew it. Never another program's name.
//! * `GET /api/v1/roles`: a mix node only.
//! * `GET /api/v1/gateway/client-interfaces/mixnet-websockets`: what nym-node answers when it
//!   is not a gateway (nym-api requires the endpoint of every node): its default websocket
//!   port, [`NYM_NODE_DEFAULT_WS_PORT`], and no wss port. mixplane serves no websockets.
//! * `GET /api/v1/auxiliary-details`: no location, default announced ports, and the operator
//!   terms not accepted.
//! * `GET /api/v1/metrics/packets-stats`: packet counters in nym-node's shape, from the
//!   [`PacketsStatsSource`] the binary provides.
//!
//! Field names follow the serde types of `nym-node-requests` 2.0.0. The server is the admin
//! API's: bounded connections, timeouts, small requests (see [`Limits`]); it never touches the
//! dataplane's hot path.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

use crate::admin::Limits;
use crate::http_server::{HttpServer, Reply, Request, StartError};

/// The websocket port nym-node reports when it is not a gateway (its default `ws_bind_address`).
pub const NYM_NODE_DEFAULT_WS_PORT: u16 = 9000;

/// Largest request body accepted (the API has only GET endpoints).
const MAX_BODY: usize = 1024;

/// The limits this API runs with by default: a few connections, short timeouts.
pub const DEFAULT_LIMITS: Limits = Limits {
    max_connections: 8,
    io_timeout: Duration::from_secs(5),
};

/// A Sphinx public key with the rotation it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SphinxPublicKey {
    /// The key rotation id.
    pub rotation_id: u32,
    /// The x25519 public key.
    pub public_key: [u8; 32],
}

/// What the node says about its host in `host-information` (the identity key comes from the
/// signing key). The binary fills it at start and again whenever the keys rotate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Public IP addresses of the node.
    pub ip_addresses: Vec<IpAddr>,
    /// Its hostname, if it has one.
    pub hostname: Option<String>,
    /// The primary Sphinx key.
    pub primary: SphinxPublicKey,
    /// The other live Sphinx key. It is announced as the pre-announced key only when its
    /// rotation id is the primary's plus one (the next rotation's key), as nym-node does; the
    /// previous rotation's key is not announced.
    pub secondary: Option<SphinxPublicKey>,
    /// The x25519 Noise public key (announced as Noise version 1), if the node has one.
    pub noise: Option<[u8; 32]>,
}

/// A shared, updatable [`HostInfo`]: the server reads it per request, the binary replaces it.
#[derive(Debug, Clone)]
pub struct HostInfoHandle(Arc<RwLock<HostInfo>>);

impl HostInfoHandle {
    /// Wraps the first value.
    pub fn new(info: HostInfo) -> HostInfoHandle {
        HostInfoHandle(Arc::new(RwLock::new(info)))
    }

    /// A copy of the current value.
    pub fn get(&self) -> HostInfo {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value; returns whether it changed.
    pub fn set(&self, info: HostInfo) -> bool {
        let mut cur = self.0.write().unwrap_or_else(|e| e.into_inner());
        let changed = *cur != info;
        *cur = info;
        changed
    }
}

/// nym-node's packet statistics (`PacketsStats` of `nym-node-requests`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PacketsStats {
    /// Packets received.
    pub ingress_mixing: IngressMixingStats,
    /// Packets sent.
    pub egress_mixing: EgressMixingStats,
}

/// Received packets, by what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngressMixingStats {
    /// Forward-hop packets received.
    pub forward_hop_packets_received: u64,
    /// Final-hop packets received.
    pub final_hop_packets_received: u64,
    /// Packets that failed to unwrap.
    pub malformed_packets_received: u64,
    /// Packets seen before.
    pub replayed_packets_received: u64,
    /// Packets from a network monitor (mixplane does not tell them apart: 0).
    pub test_packets_received: u64,
    /// Forward packets whose delay was over the cap.
    pub excessive_delay_packets: u64,
    /// Forward-hop packets dropped after unwrapping.
    pub forward_hop_packets_dropped: u64,
    /// Final-hop packets dropped after unwrapping.
    pub final_hop_packets_dropped: u64,
}

/// Sent packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EgressMixingStats {
    /// Forward-hop packets sent on.
    pub forward_hop_packets_sent: u64,
    /// Forward-hop packets that could not be sent.
    pub forward_hop_packets_dropped: u64,
    /// SURB-ACKs sent on.
    pub ack_packets_sent: u64,
}

/// Reads the node's counters into [`PacketsStats`]; called per request, from several threads.
pub type PacketsStatsSource = Arc<dyn Fn() -> PacketsStats + Send + Sync>;

/// `build-information` (`BinaryBuildInformationOwned` of `nym-bin-common`), for this build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// Always `mixplane`.
    pub binary_name: &'static str,
    /// Not recorded by this build: `unknown`.
    pub build_timestamp: &'static str,
    /// The crate version.
    pub build_version: &'static str,
    /// The git commit, or `unknown`.
    pub commit_sha: &'static str,
    /// The commit's time, or `unknown`.
    pub commit_timestamp: &'static str,
    /// The git branch, or `unknown`.
    pub commit_branch: &'static str,
    /// The rustc version.
    pub rustc_version: &'static str,
    /// The rustc channel.
    pub rustc_channel: &'static str,
    /// The cargo profile (`debug` or `release`).
    pub cargo_profile: &'static str,
    /// The target triple.
    pub cargo_triple: &'static str,
}

impl BuildInfo {
    /// This build's information (recorded by the control crate's build script).
    pub fn this_build() -> BuildInfo {
        BuildInfo {
            binary_name: "mixplane",
            build_timestamp: "unknown",
            build_version: env!("CARGO_PKG_VERSION"),
            commit_sha: env!("MIXPLANE_GIT_COMMIT"),
            commit_timestamp: env!("MIXPLANE_GIT_COMMIT_TIME"),
            commit_branch: env!("MIXPLANE_GIT_BRANCH"),
            rustc_version: env!("MIXPLANE_RUSTC_VERSION"),
            rustc_channel: env!("MIXPLANE_RUSTC_CHANNEL"),
            cargo_profile: env!("MIXPLANE_PROFILE"),
            cargo_triple: env!("MIXPLANE_TARGET"),
        }
    }
}

#[derive(Serialize)]
struct HostInformationDoc<'a> {
    ip_address: &'a [IpAddr],
    hostname: Option<&'a str>,
    keys: HostKeysDoc,
}

#[derive(Serialize)]
struct HostKeysDoc {
    ed25519_identity: String,
    /// The primary key again (nym's deprecated field, still signed).
    x25519_sphinx: String,
    primary_x25519_sphinx_key: SphinxKeyDoc,
    pre_announced_x25519_sphinx_key: Option<SphinxKeyDoc>,
    x25519_versioned_noise: Option<NoiseKeyDoc>,
}

#[derive(Serialize)]
struct SphinxKeyDoc {
    rotation_id: u32,
    public_key: String,
}

#[derive(Serialize)]
struct NoiseKeyDoc {
    supported_version: u8,
    x25519_pubkey: String,
}

fn b58(bytes: &[u8]) -> String {
    bs58::encode(bytes).into_string()
}

impl SphinxKeyDoc {
    fn of(k: &SphinxPublicKey) -> SphinxKeyDoc {
        SphinxKeyDoc {
            rotation_id: k.rotation_id,
            public_key: b58(&k.public_key),
        }
    }
}

/// The `host-information` document: `{"data": …, "signature": …}`, `signature` being the
/// base58 ed25519 signature by `identity` over the exact JSON text of `data`.
pub fn signed_host_information(identity: &SigningKey, host: &HostInfo) -> String {
    let pre = host
        .secondary
        .filter(|s| Some(s.rotation_id) == host.primary.rotation_id.checked_add(1));
    let data = HostInformationDoc {
        ip_address: &host.ip_addresses,
        hostname: host.hostname.as_deref(),
        keys: HostKeysDoc {
            ed25519_identity: b58(identity.verifying_key().as_bytes()),
            x25519_sphinx: b58(&host.primary.public_key),
            primary_x25519_sphinx_key: SphinxKeyDoc::of(&host.primary),
            pre_announced_x25519_sphinx_key: pre.as_ref().map(SphinxKeyDoc::of),
            x25519_versioned_noise: host.noise.map(|k| NoiseKeyDoc {
                supported_version: 1,
                x25519_pubkey: b58(&k),
            }),
        },
    };
    // Serialising plain strings, numbers and addresses cannot fail.
    let text = serde_json::to_string(&data).unwrap_or_default();
    let signature = identity.sign(text.as_bytes());
    format!(
        "{{\"data\":{text},\"signature\":\"{}\"}}",
        b58(&signature.to_bytes())
    )
}

/// What the API serves.
pub struct NymApi {
    /// The node's ed25519 identity key.
    pub identity: Arc<SigningKey>,
    /// The host information, updated by the binary.
    pub host: HostInfoHandle,
    /// The packet counters.
    pub stats: PacketsStatsSource,
}

/// Errors starting the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NymHttpError {
    /// The listening socket could not be set up.
    #[error("nym-node HTTP API on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server thread could not be started.
    #[error("nym-node HTTP API on {addr}: starting its thread: {source}")]
    Thread {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running nym-node HTTP API.
#[derive(Debug)]
pub struct NymHttpServer {
    inner: HttpServer,
}

fn json(v: &impl Serialize) -> Reply {
    match serde_json::to_string(v) {
        Ok(s) => Reply::Ok("application/json", s),
        Err(e) => Reply::Err(500, e.to_string()),
    }
}

fn route(api: &NymApi, build: &BuildInfo, started: Instant, req: &Request) -> Reply {
    if req.method != "GET" {
        return Reply::Err(405, "method not allowed".into());
    }
    match req.path.as_str() {
        "/api/v1/health" => json(&serde_json::json!({
            "status": "up",
            "uptime": started.elapsed().as_secs(),
        })),
        "/api/v1/host-information" => Reply::Ok(
            "application/json",
            signed_host_information(&api.identity, &api.host.get()),
        ),
        "/api/v1/build-information" => json(build),
        "/api/v1/roles" => json(&serde_json::json!({
            "mixnode_enabled": true,
            "gateway_enabled": false,
            "network_requester_enabled": false,
            "ip_packet_router_enabled": false,
        })),
        "/api/v1/gateway/client-interfaces/mixnet-websockets" => json(&serde_json::json!({
            "ws_port": NYM_NODE_DEFAULT_WS_PORT,
            "wss_port": null,
        })),
        "/api/v1/auxiliary-details" => json(&serde_json::json!({
            "location": null,
            "announce_ports": { "verloc_port": null, "mix_port": null },
            "accepted_operator_terms_and_conditions": false,
        })),
        "/api/v1/metrics/packets-stats" => json(&(api.stats)()),
        _ => Reply::Err(404, "not found".into()),
    }
}

impl NymHttpServer {
    /// Starts serving `api` on `addr` with `limits` ([`DEFAULT_LIMITS`] in the node).
    pub fn start(
        addr: SocketAddr,
        api: NymApi,
        limits: Limits,
    ) -> Result<NymHttpServer, NymHttpError> {
        let build = BuildInfo::this_build();
        let started = Instant::now();
        let router = Box::new(move |req: &Request| route(&api, &build, started, req));
        let inner = HttpServer::start(addr, "mixplane-nym-http", limits, MAX_BODY, router)
            .map_err(|e| match e {
                StartError::Bind(source) => NymHttpError::Bind { addr, source },
                StartError::Thread(source) => NymHttpError::Thread { addr, source },
            })?;
        Ok(NymHttpServer { inner })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// Stops accepting and waits for the accept thread.
    pub fn stop(self) {
        self.inner.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier};
    use std::io::{Read, Write};

    fn host(secondary_id: u32) -> HostInfo {
        HostInfo {
            ip_addresses: vec!["1.2.3.4".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            hostname: Some("mix.example.net".into()),
            primary: SphinxPublicKey {
                rotation_id: 10,
                public_key: [7; 32],
            },
            secondary: Some(SphinxPublicKey {
                rotation_id: secondary_id,
                public_key: [8; 32],
            }),
            noise: Some([9; 32]),
        }
    }

    /// Splits a signed document into its data text (as sent: a `Value` would reorder the
    /// fields) and checks the signature over it.
    fn verified_data(doc: &str, key: &SigningKey) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(doc).unwrap();
        let text = &doc["{\"data\":".len()..doc.rfind(",\"signature\":").unwrap()];
        let sig = bs58::decode(v["signature"].as_str().unwrap())
            .into_vec()
            .unwrap();
        let sig = Signature::from_slice(&sig).unwrap();
        key.verifying_key().verify(text.as_bytes(), &sig).unwrap();
        v["data"].clone()
    }

    #[test]
    fn host_information_is_signed_over_its_data() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let data = verified_data(&signed_host_information(&key, &host(11)), &key);
        let keys = &data["keys"];
        assert_eq!(data["ip_address"][1], "2001:db8::1");
        assert_eq!(
            keys["ed25519_identity"],
            b58(key.verifying_key().as_bytes())
        );
        assert_eq!(keys["primary_x25519_sphinx_key"]["rotation_id"], 10);
        assert_eq!(keys["x25519_sphinx"], b58(&[7; 32]));
        assert_eq!(keys["pre_announced_x25519_sphinx_key"]["rotation_id"], 11);
        assert_eq!(keys["x25519_versioned_noise"]["supported_version"], 1);
        // a different key's signature does not verify
        let other = SigningKey::from_bytes(&[4; 32]);
        let doc = signed_host_information(&other, &host(11));
        let r = std::panic::catch_unwind(|| verified_data(&doc, &key));
        assert!(r.is_err());
    }

    #[test]
    fn only_the_next_rotations_key_is_pre_announced() {
        let key = SigningKey::from_bytes(&[3; 32]);
        for id in [9, 12, 10] {
            let data = verified_data(&signed_host_information(&key, &host(id)), &key);
            assert!(
                data["keys"]["pre_announced_x25519_sphinx_key"].is_null(),
                "{id}"
            );
        }
    }

    fn start(limits: Limits) -> (NymHttpServer, HostInfoHandle) {
        let handle = HostInfoHandle::new(host(11));
        let api = NymApi {
            identity: Arc::new(SigningKey::from_bytes(&[5; 32])),
            host: handle.clone(),
            stats: Arc::new(|| PacketsStats {
                ingress_mixing: IngressMixingStats {
                    replayed_packets_received: 42,
                    ..Default::default()
                },
                ..Default::default()
            }),
        };
        let srv = NymHttpServer::start("127.0.0.1:0".parse().unwrap(), api, limits).unwrap();
        (srv, handle)
    }

    fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(raw);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
        let out = request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        let code = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
        (code, serde_json::from_str(body).unwrap())
    }

    #[test]
    fn endpoints_answer_in_nym_nodes_shape() {
        let (srv, handle) = start(DEFAULT_LIMITS);
        let a = srv.local_addr();
        let (code, h) = get(a, "/api/v1/health?output=json");
        assert_eq!((code, h["status"].as_str()), (200, Some("up")));
        assert_eq!(get(a, "/api/v1/roles").1["mixnode_enabled"], true);
        assert_eq!(get(a, "/api/v1/roles").1["gateway_enabled"], false);
        assert_eq!(
            get(a, "/api/v1/build-information").1["binary_name"],
            "mixplane"
        );
        let ws = get(a, "/api/v1/gateway/client-interfaces/mixnet-websockets").1;
        assert_eq!(ws["ws_port"], 9000);
        let stats = get(a, "/api/v1/metrics/packets-stats").1;
        assert_eq!(stats["ingress_mixing"]["replayed_packets_received"], 42);
        assert_eq!(get(a, "/api/v1/nope").0, 404);
        // an update shows in the next answer
        let mut h = handle.get();
        h.hostname = None;
        assert!(handle.set(h));
        let hi = get(a, "/api/v1/host-information").1;
        assert!(hi["data"]["hostname"].is_null());
        srv.stop();
    }

    #[test]
    fn garbage_and_slow_clients_do_not_stop_it() {
        let limits = Limits {
            max_connections: 4,
            io_timeout: Duration::from_millis(800),
        };
        let (srv, _) = start(limits);
        let a = srv.local_addr();
        assert!(request(a, b"\x00\xff\x13garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(request(a, &[0xff; 20_000]).starts_with("HTTP/1.1 431"));
        let big = format!("GET /api/v1/health HTTP/1.1\r\nContent-Length: {MAX_BODY}1\r\n\r\n");
        assert!(request(a, big.as_bytes()).starts_with("HTTP/1.1 413"));
        assert!(request(a, b"POST /api/v1/health HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // a slowloris: half a head, then nothing
        let mut slow = std::net::TcpStream::connect(a).unwrap();
        slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost:")
            .unwrap();
        let t = Instant::now();
        assert_eq!(get(a, "/api/v1/health").0, 200);
        assert!(t.elapsed() < Duration::from_millis(700));
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = String::new();
        let _ = slow.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        srv.stop();
    }
}
