//! Key files against Nym's own code: nym-pemstore 2.0.0 and nym-crypto 2.0.0 read every key file
//! mixplane writes and get the same keys; files they write are read by mixplane; a data
//! directory laid out as `nym-node init` lays it out (plain, passphrase-encrypted, and with the
//! `x25519_sphinx_primary.tmp` a crash mid-rotation leaves) is loaded by mixplane, and a
//! Sphinx processor built from it processes a sphinx-packet 0.8.0 packet addressed to its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mixplane_control::identity::{IDENTITY_FILE, IDENTITY_PUBLIC_FILE, Identity};
use mixplane_control::keys::{
    self, KeyError, KeyLayout, KeyMaterial, KeyStore, NOISE_FILE, NOISE_PUBLIC_FILE,
    NYM_PRIMARY_FILE, NYM_SECONDARY_FILE, NoiseKey, Passphrase, StoredKeys,
};
use mixplane_dataplane::sphinx::{
    FrameHeader, KeyRotation, NoReplay, NodeKeys, Processor, ProcessorConfig, SizeClass, SphinxKey,
    Verdict, address,
};
use nym_crypto::asymmetric::{ed25519, x25519};
use nym_pemstore::traits::PemStorableKey;
use nym_pemstore::{KeyPairPath, Passphrase as NymPassphrase};
use sphinx_packet::SphinxPacketBuilder;
use sphinx_packet::header::delays::Delay;
use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
use sphinx_packet::version::Version;

/// A Sphinx key file as nym-node stores it (its `SphinxPrivateKey`'s `PemStorableKey`: tag
/// `X25519 SPHINX PRIVATE KEY`, contents rotation id u32 BE ‖ x25519 secret). nym-node is not
/// on crates.io, so the test states the same layout over nym-crypto's x25519 key.
struct NymSphinxKey {
    rotation_id: u32,
    key: x25519::PrivateKey,
}

impl PemStorableKey for NymSphinxKey {
    type Error = x25519::KeyRecoveryError;

    fn pem_type() -> &'static str {
        "X25519 SPHINX PRIVATE KEY"
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.rotation_id.to_be_bytes().to_vec();
        out.extend_from_slice(&self.key.to_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, Self::Error> {
        let id: [u8; 4] = bytes.get(..4).and_then(|b| b.try_into().ok()).ok_or(
            x25519::KeyRecoveryError::InvalidSizePrivateKey {
                received: bytes.len(),
                expected: 36,
            },
        )?;
        Ok(NymSphinxKey {
            rotation_id: u32::from_be_bytes(id),
            key: x25519::PrivateKey::from_bytes(&bytes[4..])?,
        })
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mixplane-nymkeys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn identity_paths(dir: &Path) -> KeyPairPath {
    KeyPairPath::new(dir.join(IDENTITY_FILE), dir.join(IDENTITY_PUBLIC_FILE))
}

fn noise_paths(dir: &Path) -> KeyPairPath {
    KeyPairPath::new(dir.join(NOISE_FILE), dir.join(NOISE_PUBLIC_FILE))
}

fn nym_sphinx(path: &Path, pass: Option<&NymPassphrase>) -> NymSphinxKey {
    nym_pemstore::load_key_with(path, pass).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn nym_sphinx_of(k: &KeyMaterial) -> NymSphinxKey {
    NymSphinxKey {
        rotation_id: k.rotation_id(),
        key: x25519::PrivateKey::from_bytes(k.secret()).unwrap(),
    }
}

/// Checks with nym-pemstore that `dir` holds `id`, `noise` and the Sphinx keys `sphinx` under
/// `layout`'s names.
fn nym_reads(
    dir: &Path,
    layout: KeyLayout,
    pass: Option<&NymPassphrase>,
    id: &Identity,
    noise: &NoiseKey,
    sphinx: &StoredKeys,
) {
    let ed: ed25519::KeyPair = nym_pemstore::load_keypair_with(&identity_paths(dir), pass).unwrap();
    assert_eq!(ed.private_key().to_bytes(), id.signing_key().to_bytes());
    assert_eq!(ed.public_key().to_bytes(), id.public_bytes());
    assert_eq!(ed.public_key().to_base58_string(), id.public_base58());
    let nx: x25519::KeyPair = nym_pemstore::load_keypair_with(&noise_paths(dir), pass).unwrap();
    assert_eq!(nx.private_key().to_bytes(), *noise.secret_bytes());
    assert_eq!(nx.public_key().to_base58_string(), noise.public_base58());
    let p = nym_sphinx(&dir.join(layout.primary_file()), pass);
    assert_eq!(p.rotation_id, sphinx.primary.rotation_id());
    assert_eq!(p.key.to_bytes(), *sphinx.primary.secret());
    assert_eq!(
        p.key.public_key().to_base58_string(),
        sphinx.primary.public_base58()
    );
    let s = sphinx.secondary.as_ref().unwrap();
    let sn = nym_sphinx(&dir.join(layout.secondary_file()), pass);
    assert_eq!(
        (sn.rotation_id, sn.key.to_bytes()),
        (s.rotation_id(), *s.secret())
    );
}

/// mixplane writes a full key set as `mixplane init` and a rotation do: identity, Noise key,
/// primary Sphinx key, then a pre-announced secondary through `install_keys`.
fn mixplane_writes(store: &KeyStore) -> (Identity, NoiseKey, StoredKeys) {
    let id = Identity::generate();
    store.write_identity(&id).unwrap();
    let noise = NoiseKey::generate();
    store.write_noise_key(&noise).unwrap();
    let primary = KeyMaterial::generate(41);
    keys::write_key(&store.primary_path(), primary.secret(), 41).unwrap();
    let current = store.load_keys().unwrap();
    let new = StoredKeys {
        primary,
        secondary: Some(KeyMaterial::generate(42)),
    };
    store.install_keys(&current, &new).unwrap();
    (id, noise, new)
}

#[test]
fn nym_pemstore_reads_every_key_file_mixplane_writes() {
    for layout in [KeyLayout::Mixplane, KeyLayout::NymNode] {
        let d = tmpdir(&format!("mp-writes-{layout:?}"));
        let store = KeyStore::new(&d, layout);
        let (id, noise, sphinx) = mixplane_writes(&store);
        nym_reads(&d, layout, None, &id, &noise, &sphinx);
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn mixplane_reads_key_files_nym_crypto_and_pemstore_write() {
    let d = tmpdir("nym-writes");
    let seed: [u8; 32] = rand::random();
    let ed =
        ed25519::KeyPair::from_bytes(&seed, &Identity::from_secret(seed).public_bytes()).unwrap();
    nym_pemstore::store_keypair(&ed, &identity_paths(&d)).unwrap();
    let nsecret: [u8; 32] = rand::random();
    let npub = NoiseKey::new(nsecret).public_bytes();
    let nx = x25519::KeyPair::from_bytes(&nsecret, &npub).unwrap();
    nym_pemstore::store_keypair(&nx, &noise_paths(&d)).unwrap();
    let sphinx = KeyMaterial::generate(7);
    nym_pemstore::store_key(&nym_sphinx_of(&sphinx), d.join(NYM_PRIMARY_FILE)).unwrap();

    let store = KeyStore::new(&d, KeyLayout::NymNode);
    let id = store.load_identity().unwrap().unwrap();
    assert_eq!(id.public_base58(), ed.public_key().to_base58_string());
    assert_eq!(id.signing_key().to_bytes(), seed);
    let noise = store.load_noise_key().unwrap().unwrap();
    assert_eq!(noise.public_base58(), nx.public_key().to_base58_string());
    let k = store.load_keys().unwrap();
    assert_eq!(k.primary.rotation_id(), 7);
    assert_eq!(k.primary.secret(), sphinx.secret());
    assert!(k.secondary.is_none());
    let _ = std::fs::remove_dir_all(&d);
}

/// Lays out `dir` as `nym-node init` does, with nym's crates: identity and Noise key pairs and
/// the primary Sphinx key (encrypted under `pass` if given). Returns the primary.
fn nym_node_init(dir: &Path, pass: Option<&NymPassphrase>, rotation_id: u32) -> KeyMaterial {
    let seed: [u8; 32] = rand::random();
    let ed =
        ed25519::KeyPair::from_bytes(&seed, &Identity::from_secret(seed).public_bytes()).unwrap();
    nym_pemstore::store_keypair_with(&ed, &identity_paths(dir), pass).unwrap();
    let nsecret: [u8; 32] = rand::random();
    let nx = x25519::KeyPair::from_bytes(&nsecret, &NoiseKey::new(nsecret).public_bytes()).unwrap();
    nym_pemstore::store_keypair_with(&nx, &noise_paths(dir), pass).unwrap();
    let primary = KeyMaterial::generate(rotation_id);
    let path = dir.join(NYM_PRIMARY_FILE);
    nym_pemstore::store_key_with(&nym_sphinx_of(&primary), path, pass).unwrap();
    primary
}

/// A 3-hop v258 packet whose first hop is a node with `secret`; returns the v8 frame and the
/// second hop's address.
fn packet_for(secret: &[u8; 32], rotation_id: u32) -> (Vec<u8>, SocketAddr) {
    let addrs: [SocketAddr; 3] = [
        "192.0.2.1:1789".parse().unwrap(),
        "192.0.2.2:1789".parse().unwrap(),
        "[2001:db8::3]:1789".parse().unwrap(),
    ];
    let secrets = [*secret, rand::random(), rand::random()];
    let route: Vec<Node> = addrs
        .iter()
        .zip(&secrets)
        .map(|(a, s)| Node {
            address: NodeAddressBytes::from_bytes(address::encode::<32>(*a)),
            pub_key: x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*s)),
        })
        .collect();
    let delays = vec![Delay::new_from_nanos(1_000_000); 3];
    let dest = Destination::new(DestinationAddressBytes::from_bytes([9; 32]), [1; 16]);
    let class = SizeClass::Regular;
    let packet = SphinxPacketBuilder::new()
        .with_version(Version::new(258))
        .with_payload_size(class.payload_len())
        .build_packet(b"hello mixnet", &route, &dest, &delays)
        .unwrap();
    let header = FrameHeader::v8(class, KeyRotation::of_rotation_id(rotation_id));
    (header.frame(&packet.to_bytes()), addrs[1])
}

/// Builds a processor from the keys mixplane loaded from `store` and checks that it forwards
/// a packet built for `expected` (the key nym's crates wrote) to the packet's next hop.
fn processes_packets_for(store: &KeyStore, expected: &KeyMaterial) {
    let loaded = store.load_keys().unwrap();
    assert_eq!(loaded.primary.secret(), expected.secret());
    let to_sphinx = |k: &KeyMaterial| SphinxKey::from_secret(*k.secret(), k.rotation_id());
    let node_keys = NodeKeys {
        primary: to_sphinx(&loaded.primary),
        secondary: loaded.secondary.as_ref().map(to_sphinx),
    };
    let mut proc = Processor::new(Arc::new(node_keys), ProcessorConfig::default());
    let (frame, next) = packet_for(expected.secret(), expected.rotation_id());
    let mut batch = vec![frame];
    let mut out = Vec::new();
    proc.process_batch(&mut batch, &NoReplay, &mut out);
    match &out[..] {
        [Verdict::Forward(f)] => assert_eq!(f.next_hop, next),
        other => panic!("expected a forward verdict, got {other:?}"),
    }
    // a packet for another key is not forwarded
    let (frame, _) = packet_for(&rand::random(), expected.rotation_id());
    let mut batch = vec![frame];
    proc.process_batch(&mut batch, &NoReplay, &mut out);
    assert!(matches!(out[..], [Verdict::Drop(_)]), "{out:?}");
}

#[test]
fn a_data_dir_laid_out_by_nym_node_init_is_loaded_and_processes_packets() {
    let d = tmpdir("nym-init");
    let primary = nym_node_init(&d, None, 100);
    let store = KeyStore::new(&d, KeyLayout::NymNode);
    assert!(store.load_identity().unwrap().is_some());
    assert!(store.load_noise_key().unwrap().is_some());
    processes_packets_for(&store, &primary);
    // a mixplane rotation (pre-announce) on it leaves files nym-pemstore reads
    let current = store.load_keys().unwrap();
    let next = StoredKeys {
        primary: primary.clone(),
        secondary: Some(KeyMaterial::generate(101)),
    };
    store.install_keys(&current, &next).unwrap();
    let s = nym_sphinx(&d.join(NYM_SECONDARY_FILE), None);
    assert_eq!(s.rotation_id, 101);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_encrypted_data_dir_needs_its_passphrase_and_stays_encrypted() {
    let d = tmpdir("nym-enc");
    let nym_pass = NymPassphrase::new("correct horse battery staple");
    let primary = nym_node_init(&d, Some(&nym_pass), 200);
    let head = std::fs::read_to_string(d.join(NYM_PRIMARY_FILE)).unwrap();
    assert!(head.starts_with("-----BEGIN ENCRYPTED X25519 SPHINX PRIVATE KEY-----"));

    let plain = KeyStore::new(&d, KeyLayout::NymNode);
    let err = plain.load_keys().unwrap_err();
    assert!(matches!(err, KeyError::PassphraseRequired { .. }), "{err}");
    assert!(err.to_string().contains("MIXPLANE_KEY_PASSPHRASE"), "{err}");
    let wrong = plain
        .clone()
        .with_passphrase(Some(Passphrase::new("wrong".into())));
    assert!(matches!(
        wrong.load_identity(),
        Err(KeyError::PassphraseRejected { .. })
    ));

    let pass = Passphrase::new("correct horse battery staple".into());
    let store = plain.with_passphrase(Some(pass));
    let id = store.load_identity().unwrap().unwrap();
    let ed: ed25519::KeyPair =
        nym_pemstore::load_keypair_with(&identity_paths(&d), Some(&nym_pass)).unwrap();
    assert_eq!(id.public_base58(), ed.public_key().to_base58_string());
    assert!(store.load_noise_key().unwrap().is_some());
    processes_packets_for(&store, &primary);

    // a rotation writes the new key encrypted, and nym-pemstore opens it with the passphrase
    let current = store.load_keys().unwrap();
    let next = StoredKeys {
        primary: KeyMaterial::generate(201),
        secondary: Some(primary.clone()),
    };
    store.install_keys(&current, &next).unwrap();
    for (file, rotation) in [(NYM_PRIMARY_FILE, 201), (NYM_SECONDARY_FILE, 200)] {
        let path = d.join(file);
        assert!(nym_pemstore::is_encrypted(&path).unwrap(), "{file}");
        assert_eq!(nym_sphinx(&path, Some(&nym_pass)).rotation_id, rotation);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_tmp_primary_left_by_a_nym_node_crash_is_handled_as_nym_node_does() {
    let d = tmpdir("nym-tmp");
    let old = nym_node_init(&d, None, 300);
    // nym-node crashed between steps 2 and 3 of its swap: the new key is the primary, the old
    // primary only in x25519_sphinx_primary.tmp, no secondary
    let new = KeyMaterial::generate(301);
    std::fs::copy(
        d.join(NYM_PRIMARY_FILE),
        d.join("x25519_sphinx_primary.tmp"),
    )
    .unwrap();
    nym_pemstore::store_key(&nym_sphinx_of(&new), d.join(NYM_PRIMARY_FILE)).unwrap();
    let store = KeyStore::new(&d, KeyLayout::NymNode);
    processes_packets_for(&store, &new);
    assert!(!d.join("x25519_sphinx_primary.tmp").exists());
    let k = store.load_keys().unwrap();
    assert_eq!(k.primary.rotation_id(), 301);
    assert!(k.secondary.is_none());
    assert_ne!(k.primary.secret(), old.secret());
    // nym-node still reads the directory as it left it
    assert_eq!(nym_sphinx(&d.join(NYM_PRIMARY_FILE), None).rotation_id, 301);
    let _ = std::fs::remove_dir_all(&d);
}
