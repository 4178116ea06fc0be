//! Key files, in Nym's PEM format.
//!
//! * Sphinx keys: a private key file holds one PEM block tagged `X25519 SPHINX PRIVATE KEY`
//!   whose contents are the key's rotation id (u32 big-endian) followed by the 32-byte X25519
//!   secret ([`PRIMARY_FILE`], [`SECONDARY_FILE`]).
//! * The Noise key (the x25519 key of Nym's Noise transport, one per node, not rotated):
//!   [`NOISE_FILE`] holds a PEM block tagged `X25519 PRIVATE KEY` with the 32-byte secret, and
//!   [`NOISE_PUBLIC_FILE`] one tagged `X25519 PUBLIC KEY` with the public key, as nym-crypto's
//!   `PemStorableKey` writes them.
//!
//! Public keys are shown in base58, as Nym's directory publishes them. Private key files are
//! created 0600 and one readable by group or others is refused. Secrets are zeroized when
//! dropped.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mixplane_crypto_simd::x25519;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A Sphinx private key as stored: the secret and its rotation id. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyMaterial {
    secret: [u8; 32],
    #[zeroize(skip)]
    rotation_id: u32,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("rotation_id", &self.rotation_id)
            .field("public", &self.public_base58())
            .finish_non_exhaustive()
    }
}

impl KeyMaterial {
    /// Wraps a secret.
    pub fn new(secret: [u8; 32], rotation_id: u32) -> KeyMaterial {
        KeyMaterial {
            secret,
            rotation_id,
        }
    }

    /// A fresh random key for `rotation_id`.
    pub fn generate(rotation_id: u32) -> KeyMaterial {
        KeyMaterial::new(*generate_secret(), rotation_id)
    }

    /// The secret.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The rotation id.
    pub fn rotation_id(&self) -> u32 {
        self.rotation_id
    }

    /// The X25519 public key.
    pub fn public(&self) -> [u8; 32] {
        x25519::x25519(&self.secret, &x25519::BASEPOINT)
    }

    /// The public key in Nym's base58 form.
    pub fn public_base58(&self) -> String {
        bs58::encode(self.public()).into_string()
    }
}

/// The keys in a key directory.
#[derive(Debug, Clone)]
pub struct StoredKeys {
    /// `primary_x25519_sphinx.pem`.
    pub primary: KeyMaterial,
    /// `secondary_x25519_sphinx.pem`, if present.
    pub secondary: Option<KeyMaterial>,
}

/// The PEM tag of a Sphinx private key.
pub const PEM_TAG: &str = "X25519 SPHINX PRIVATE KEY";
/// File name of the primary key in the key directory.
pub const PRIMARY_FILE: &str = "primary_x25519_sphinx.pem";
/// File name of the secondary key (present during a rotation overlap).
pub const SECONDARY_FILE: &str = "secondary_x25519_sphinx.pem";

/// The PEM tag of the Noise private key (nym-crypto's x25519 `PrivateKey`).
pub const NOISE_PEM_TAG: &str = "X25519 PRIVATE KEY";
/// The PEM tag of the Noise public key (nym-crypto's x25519 `PublicKey`).
pub const NOISE_PUBLIC_PEM_TAG: &str = "X25519 PUBLIC KEY";
/// File name of the Noise private key in the key directory (nym-node's name).
pub const NOISE_FILE: &str = "x25519_noise";
/// File name of the Noise public key in the key directory.
pub const NOISE_PUBLIC_FILE: &str = "x25519_noise.pub";

/// The node's x25519 Noise key (Nym's transport between nodes). Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct NoiseKey {
    secret: [u8; 32],
}

impl std::fmt::Debug for NoiseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseKey")
            .field("public", &self.public_base58())
            .finish_non_exhaustive()
    }
}

impl NoiseKey {
    /// Wraps a secret.
    pub fn new(secret: [u8; 32]) -> NoiseKey {
        NoiseKey { secret }
    }

    /// A fresh random key.
    pub fn generate() -> NoiseKey {
        NoiseKey::new(*generate_secret())
    }

    /// The 32-byte secret.
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The X25519 public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        x25519::x25519(&self.secret, &x25519::BASEPOINT)
    }

    /// The public key in Nym's base58 form (as the topology publishes it).
    pub fn public_base58(&self) -> String {
        bs58::encode(self.public_bytes()).into_string()
    }
}

/// Everything in a key directory: the Sphinx keys and, if present, the Noise key.
#[derive(Debug, Clone)]
pub struct KeyDir {
    /// The Sphinx keys.
    pub sphinx: StoredKeys,
    /// The Noise key ([`NOISE_FILE`]), if the directory has one.
    pub noise: Option<NoiseKey>,
}

/// Key file errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// I/O on the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is readable or writable by group or others.
    #[error("{path}: permissions {mode:o} let other users read the key; run chmod 600 on it")]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not a Sphinx key file.
    #[error("{path}: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Encodes a key as Nym's PEM.
pub fn encode_pem(secret: &[u8; 32], rotation_id: u32) -> String {
    let mut contents = Zeroizing::new(Vec::with_capacity(36));
    contents.extend_from_slice(&rotation_id.to_be_bytes());
    contents.extend_from_slice(secret);
    let p = pem::Pem::new(PEM_TAG, contents.to_vec());
    let out = pem::encode_config(
        &p,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    drop(p);
    out
}

/// Decodes Nym's PEM into (secret, rotation id).
pub fn decode_pem(text: &str, path: &Path) -> Result<(Zeroizing<[u8; 32]>, u32), KeyError> {
    let bad = |what: String| KeyError::Malformed {
        path: path.to_path_buf(),
        what,
    };
    let p = pem::parse(text).map_err(|e| bad(format!("not a PEM file: {e}")))?;
    if p.tag() != PEM_TAG {
        return Err(bad(format!(
            "PEM block is `{}`, expected `{PEM_TAG}`",
            p.tag()
        )));
    }
    let c = Zeroizing::new(p.contents().to_vec());
    if c.len() != 36 {
        return Err(bad(format!(
            "key block has {} bytes, expected 36 (rotation id + 32-byte key)",
            c.len()
        )));
    }
    let rotation = u32::from_be_bytes(c[..4].try_into().expect("4 bytes"));
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&c[4..]);
    Ok((secret, rotation))
}

/// Writes a key file with mode 0600 (replacing an existing one atomically).
pub fn write_key(path: &Path, secret: &[u8; 32], rotation_id: u32) -> Result<(), KeyError> {
    let text = Zeroizing::new(encode_pem(secret, rotation_id));
    write_file(path, text.as_bytes(), 0o600)
}

/// Writes `contents` to `path` with `mode` through a synced temporary file renamed into place.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    // an existing temp file keeps its old mode: force it
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Encodes 32 bytes as a PEM block with `tag` (LF line endings).
fn pem_of(tag: &str, bytes: &[u8; 32]) -> Zeroizing<String> {
    let p = pem::Pem::new(tag, bytes.to_vec());
    let out = pem::encode_config(
        &p,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    // the Pem's own copy of the bytes
    let mut c = p.into_contents();
    c.zeroize();
    Zeroizing::new(out)
}

/// Decodes a PEM block of exactly 32 bytes tagged `tag`.
fn decode_32(text: &str, tag: &str, path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let bad = |what: String| KeyError::Malformed {
        path: path.to_path_buf(),
        what,
    };
    let p = pem::parse(text).map_err(|e| bad(format!("not a PEM file: {e}")))?;
    if p.tag() != tag {
        return Err(bad(format!("PEM block is `{}`, expected `{tag}`", p.tag())));
    }
    let c = Zeroizing::new(p.into_contents());
    let mut out = Zeroizing::new([0u8; 32]);
    if c.len() != 32 {
        return Err(bad(format!("key block has {} bytes, expected 32", c.len())));
    }
    out.copy_from_slice(&c);
    Ok(out)
}

/// Writes the Noise key pair into `dir`: [`NOISE_FILE`] (0600) and [`NOISE_PUBLIC_FILE`] (0644).
pub fn write_noise_key(dir: &Path, key: &NoiseKey) -> Result<(), KeyError> {
    let secret = pem_of(NOISE_PEM_TAG, key.secret_bytes());
    write_file(&dir.join(NOISE_FILE), secret.as_bytes(), 0o600)?;
    let public = pem_of(NOISE_PUBLIC_PEM_TAG, &key.public_bytes());
    write_file(&dir.join(NOISE_PUBLIC_FILE), public.as_bytes(), 0o644)
}

/// Reads the Noise key from `dir`: `None` if [`NOISE_FILE`] does not exist. A file other users
/// can read is refused, and so is a [`NOISE_PUBLIC_FILE`] that is not the key's public key.
pub fn load_noise_key(dir: &Path) -> Result<Option<NoiseKey>, KeyError> {
    let path = dir.join(NOISE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = read_private(&path)?;
    let key = NoiseKey::new(*decode_32(&text, NOISE_PEM_TAG, &path)?);
    let pub_path = dir.join(NOISE_PUBLIC_FILE);
    if pub_path.exists() {
        let io = |source| KeyError::Io {
            path: pub_path.clone(),
            source,
        };
        let text = std::fs::read_to_string(&pub_path).map_err(io)?;
        if *decode_32(&text, NOISE_PUBLIC_PEM_TAG, &pub_path)? != key.public_bytes() {
            return Err(KeyError::Malformed {
                path: pub_path,
                what: format!("not the public key of {NOISE_FILE}"),
            });
        }
    }
    Ok(Some(key))
}

/// Loads everything in a key directory: the Sphinx keys ([`load_keys`]) and the Noise key
/// ([`load_noise_key`]).
pub fn load_key_dir(dir: &Path) -> Result<KeyDir, KeyError> {
    Ok(KeyDir {
        sphinx: load_keys(dir)?,
        noise: load_noise_key(dir)?,
    })
}

/// Reads a private key file's text, refusing one that other users can read.
fn read_private(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Insecure {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(Zeroizing::new(std::fs::read_to_string(path).map_err(io)?))
}

/// Reads a key file, refusing one that other users can read.
pub fn read_key(path: &Path) -> Result<KeyMaterial, KeyError> {
    let text = read_private(path)?;
    let (secret, rotation) = decode_pem(&text, path)?;
    Ok(KeyMaterial::new(*secret, rotation))
}

/// Loads the live keys from a key directory: the primary, and the secondary if present.
pub fn load_keys(dir: &Path) -> Result<StoredKeys, KeyError> {
    let primary = read_key(&dir.join(PRIMARY_FILE))?;
    let sp = dir.join(SECONDARY_FILE);
    let secondary = if sp.exists() {
        Some(read_key(&sp)?)
    } else {
        None
    };
    Ok(StoredKeys { primary, secondary })
}

/// A fresh random secret.
pub fn generate_secret() -> Zeroizing<[u8; 32]> {
    let mut s = Zeroizing::new([0u8; 32]);
    rand::fill(&mut s[..]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mixplane-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pem_round_trip_and_layout() {
        let secret = [7u8; 32];
        let text = encode_pem(&secret, 0x0102_0304);
        assert!(text.starts_with("-----BEGIN X25519 SPHINX PRIVATE KEY-----\n"));
        assert!(
            text.trim_end()
                .ends_with("-----END X25519 SPHINX PRIVATE KEY-----")
        );
        let p = pem::parse(&text).unwrap();
        assert_eq!(&p.contents()[..4], &[1, 2, 3, 4]);
        assert_eq!(&p.contents()[4..], &secret);
        let (s, r) = decode_pem(&text, Path::new("k")).unwrap();
        assert_eq!((*s, r), (secret, 0x0102_0304));
    }

    #[test]
    fn files_are_private_and_insecure_ones_refused() {
        let d = tmpdir("perm");
        let p = d.join(PRIMARY_FILE);
        write_key(&p, &[9; 32], 5).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k = read_key(&p).unwrap();
        assert_eq!(k.rotation_id(), 5);
        assert_eq!(k.secret(), &[9; 32]);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_key(&p), Err(KeyError::Insecure { .. })));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn malformed_key_files_give_clear_errors() {
        let d = tmpdir("bad");
        let cases: [(&str, String); 4] = [
            ("not pem", "hello".to_string()),
            (
                "wrong tag",
                pem::encode(&pem::Pem::new("PRIVATE KEY", vec![0u8; 36])),
            ),
            ("short", pem::encode(&pem::Pem::new(PEM_TAG, vec![0u8; 20]))),
            ("long", pem::encode(&pem::Pem::new(PEM_TAG, vec![0u8; 40]))),
        ];
        for (name, text) in cases {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            match read_key(&p) {
                Err(KeyError::Malformed { what, .. }) => assert!(!what.is_empty()),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(matches!(
            read_key(&d.join("missing")),
            Err(KeyError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn node_keys_load_primary_and_optional_secondary() {
        let d = tmpdir("node");
        write_key(&d.join(PRIMARY_FILE), &[1; 32], 10).unwrap();
        let k = load_keys(&d).unwrap();
        assert!(k.secondary.is_none());
        write_key(&d.join(SECONDARY_FILE), &[2; 32], 9).unwrap();
        let k = load_keys(&d).unwrap();
        assert_eq!(k.secondary.unwrap().rotation_id(), 9);
        // base58 of the public key decodes back to it
        let b58 = k.primary.public_base58();
        assert_eq!(bs58::decode(&b58).into_vec().unwrap(), k.primary.public());
        assert_eq!(
            k.primary.public(),
            x25519::x25519(&[1; 32], &x25519::BASEPOINT)
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn generated_secrets_differ() {
        assert_ne!(*generate_secret(), *generate_secret());
    }

    #[test]
    fn noise_key_files_are_nyms_format_private_and_checked() {
        let d = tmpdir("noise");
        assert!(load_noise_key(&d).unwrap().is_none());
        let k = NoiseKey::generate();
        write_noise_key(&d, &k).unwrap();
        let text = std::fs::read_to_string(d.join(NOISE_FILE)).unwrap();
        assert!(
            text.starts_with("-----BEGIN X25519 PRIVATE KEY-----\n"),
            "{text}"
        );
        let p = pem::parse(&text).unwrap();
        assert_eq!(p.contents(), k.secret_bytes());
        let pubtext = std::fs::read_to_string(d.join(NOISE_PUBLIC_FILE)).unwrap();
        let pp = pem::parse(&pubtext).unwrap();
        assert_eq!(pp.tag(), "X25519 PUBLIC KEY");
        assert_eq!(pp.contents(), k.public_bytes());
        let mode = |f: &str| std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(NOISE_FILE), 0o600);
        let back = load_noise_key(&d).unwrap().unwrap();
        assert_eq!(back.secret_bytes(), k.secret_bytes());
        assert_eq!(
            bs58::decode(back.public_base58()).into_vec().unwrap(),
            x25519::x25519(k.secret_bytes(), &x25519::BASEPOINT)
        );
        // a public file that does not match is refused
        let other = NoiseKey::generate();
        let wrong = pem_of(NOISE_PUBLIC_PEM_TAG, &other.public_bytes());
        std::fs::write(d.join(NOISE_PUBLIC_FILE), wrong.as_bytes()).unwrap();
        assert!(matches!(
            load_noise_key(&d),
            Err(KeyError::Malformed { .. })
        ));
        // group-readable is refused
        write_noise_key(&d, &k).unwrap();
        let np = d.join(NOISE_FILE);
        std::fs::set_permissions(&np, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(load_noise_key(&d), Err(KeyError::Insecure { .. })));
        // a Sphinx key where the noise key belongs is refused
        write_key(&np, &[3; 32], 1).unwrap();
        assert!(matches!(
            load_noise_key(&d),
            Err(KeyError::Malformed { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_key_dir_loads_sphinx_and_noise_keys() {
        let d = tmpdir("dir");
        write_key(&d.join(PRIMARY_FILE), &[1; 32], 10).unwrap();
        assert!(load_key_dir(&d).unwrap().noise.is_none());
        write_noise_key(&d, &NoiseKey::new([5; 32])).unwrap();
        let k = load_key_dir(&d).unwrap();
        assert_eq!(k.sphinx.primary.rotation_id(), 10);
        assert_eq!(k.noise.unwrap().secret_bytes(), &[5; 32]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
