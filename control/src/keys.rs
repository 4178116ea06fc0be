//! Key files, in Nym's PEM format.
//!
//! * Sphinx keys: a private key file holds one PEM block tagged `X25519 SPHINX PRIVATE KEY`
//!   whose contents are the key's rotation id (u32 big-endian) followed by the 32-byte X25519
//!   secret (files named by the [`KeyLayout`]: [`PRIMARY_FILE`] and [`SECONDARY_FILE`] in
//!   mixplane's own key directory, [`NYM_PRIMARY_FILE`] and [`NYM_SECONDARY_FILE`] in a
//!   nym-node data directory).
//! * The Noise key (the x25519 key of Nym's Noise transport, one per node, not rotated):
//!   [`NOISE_FILE`] holds a PEM block tagged `X25519 PRIVATE KEY` with the 32-byte secret, and
//!   [`NOISE_PUBLIC_FILE`] one tagged `X25519 PUBLIC KEY` with the public key, as nym-crypto's
//!   `PemStorableKey` writes them.
//! * The ed25519 identity key: see [`crate::identity`].
//!
//! Any private key block may instead be stored encrypted with a passphrase, as nym-pemstore
//! 2.0.0 does: tag `ENCRYPTED ` + the key's tag, contents a PKCS#8 `EncryptedPrivateKeyInfo`
//! (scrypt, AES-256-GCM). A [`KeyStore`] given a [`Passphrase`] reads such files, and writes
//! keys encrypted where the directory's primary Sphinx key file is encrypted.
//!
//! Public keys are shown in base58, as Nym's directory publishes them. Private key files are
//! created 0600 and one readable by group or others is refused. Secrets are zeroized when
//! dropped, and so is every buffer that held one (PEM text included).
//!
//! Files are written durably: a temporary file next to the target is created exclusively
//! without following symlinks, written, synced, renamed into place, and the directory synced.
//! A rotation ([`install_keys`]) orders its writes so that a crash between any two of them
//! never leaves both key files holding the same key; [`load_keys`] finishes or discards what
//! a crash left half done.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mixplane_crypto_simd::x25519;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

mod encrypted;
mod store;

pub use store::{
    KeyLayout, KeyStore, NYM_PRIMARY_FILE, NYM_SECONDARY_FILE, PASSPHRASE_ENV, Passphrase,
};

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
    /// The primary key file's key.
    pub primary: KeyMaterial,
    /// The secondary key file's key, if present.
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
    /// The key file is encrypted and no passphrase was given.
    #[error(
        "{path}: the key is encrypted with a passphrase; give it with --passphrase-file FILE, `[nym] passphrase_file` or the MIXPLANE_KEY_PASSPHRASE environment variable"
    )]
    PassphraseRequired {
        /// The file.
        path: PathBuf,
    },
    /// The key file is encrypted and the passphrase does not decrypt it.
    #[error("{path}: cannot decrypt the key: {why}")]
    PassphraseRejected {
        /// The file.
        path: PathBuf,
        /// Why (wrong passphrase, unsupported parameters, not PKCS#8).
        why: String,
    },
    /// Not a key file of the expected kind.
    #[error("{path}: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Encodes a key as Nym's PEM (the text is wiped when dropped).
pub fn encode_pem(secret: &[u8; 32], rotation_id: u32) -> Zeroizing<String> {
    encode_wiped(pem::Pem::new(
        PEM_TAG,
        sphinx_contents(secret, rotation_id).to_vec(),
    ))
}

/// A Sphinx key block's contents: rotation id (u32 BE) ‖ secret.
fn sphinx_contents(secret: &[u8; 32], rotation_id: u32) -> Zeroizing<[u8; 36]> {
    let mut contents = Zeroizing::new([0u8; 36]);
    contents[..4].copy_from_slice(&rotation_id.to_be_bytes());
    contents[4..].copy_from_slice(secret);
    contents
}

/// Encodes `p` with LF line endings and wipes its contents.
fn encode_wiped(p: pem::Pem) -> Zeroizing<String> {
    let out = Zeroizing::new(pem::encode_config(
        &p,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ));
    // the Pem's own copy of the bytes
    let mut c = p.into_contents();
    c.zeroize();
    out
}

/// Encodes `contents` as a PEM block tagged `tag`, or with `pass` as nym-pemstore's encrypted
/// block (`ENCRYPTED ` + `tag`). `path` names the file in errors.
fn encode_block(
    tag: &str,
    contents: &[u8],
    pass: Option<&Passphrase>,
    path: &Path,
) -> Result<Zeroizing<String>, KeyError> {
    let Some(pass) = pass else {
        return Ok(encode_wiped(pem::Pem::new(tag, contents.to_vec())));
    };
    let der = encrypted::encrypt(pass, contents).map_err(|e| KeyError::Malformed {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    let tag = format!("{}{tag}", encrypted::TAG_PREFIX);
    Ok(encode_wiped(pem::Pem::new(tag, der)))
}

/// Decodes the PEM block in `text`, which must be tagged `tag` or, encrypted, `ENCRYPTED ` +
/// `tag` (then decrypted with `pass`), into its contents. `path` names the file in errors.
fn decode_block(
    text: &str,
    tag: &str,
    path: &Path,
    pass: Option<&Passphrase>,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let path_buf = || path.to_path_buf();
    let bad = |what: String| KeyError::Malformed {
        path: path_buf(),
        what,
    };
    let p = pem::parse(text).map_err(|e| bad(format!("not a PEM file: {e}")))?;
    let found = p.tag().to_string();
    let c = Zeroizing::new(p.into_contents());
    if found == tag {
        return Ok(c);
    }
    if found.strip_prefix(encrypted::TAG_PREFIX) != Some(tag) {
        return Err(bad(format!("PEM block is `{found}`, expected `{tag}`")));
    }
    let pass = pass.ok_or_else(|| KeyError::PassphraseRequired { path: path_buf() })?;
    encrypted::decrypt(pass, &c).map_err(|e| KeyError::PassphraseRejected {
        path: path_buf(),
        why: e.to_string(),
    })
}

/// A Sphinx key from a block's contents (rotation id ‖ secret).
fn sphinx_of(c: &[u8], path: &Path) -> Result<KeyMaterial, KeyError> {
    if c.len() != 36 {
        return Err(KeyError::Malformed {
            path: path.to_path_buf(),
            what: format!(
                "key block has {} bytes, expected 36 (rotation id + 32-byte key)",
                c.len()
            ),
        });
    }
    let rotation = u32::from_be_bytes(c[..4].try_into().expect("4 bytes"));
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&c[4..]);
    let k = KeyMaterial::new(secret, rotation);
    secret.zeroize();
    Ok(k)
}

/// 32 bytes from a block's contents.
fn bytes_32(c: &[u8], path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut out = Zeroizing::new([0u8; 32]);
    if c.len() != 32 {
        return Err(KeyError::Malformed {
            path: path.to_path_buf(),
            what: format!("key block has {} bytes, expected 32", c.len()),
        });
    }
    out.copy_from_slice(c);
    Ok(out)
}

/// Decodes Nym's PEM into (secret, rotation id). An encrypted block is refused with
/// [`KeyError::PassphraseRequired`] (a [`KeyStore`] with a passphrase reads those).
pub fn decode_pem(text: &str, path: &Path) -> Result<(Zeroizing<[u8; 32]>, u32), KeyError> {
    let k = sphinx_of(&decode_block(text, PEM_TAG, path, None)?, path)?;
    Ok((Zeroizing::new(*k.secret()), k.rotation_id()))
}

/// Encodes 32 bytes as a PEM block with `tag` (LF line endings).
fn pem_of(tag: &str, bytes: &[u8; 32]) -> Zeroizing<String> {
    encode_wiped(pem::Pem::new(tag, bytes.to_vec()))
}

/// Reads the private key block tagged `tag` from `path` (refusing a file other users can
/// read), decrypting an encrypted one with `pass`.
pub(crate) fn read_block(
    path: &Path,
    tag: &str,
    pass: Option<&Passphrase>,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let text = read_private(path)?;
    decode_block(&text, tag, path, pass)
}

/// Reads the 32-byte public key block tagged `tag` from `path` (any mode).
pub(crate) fn read_public(path: &Path, tag: &str) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    Ok(*bytes_32(&decode_block(&text, tag, path, None)?, path)?)
}

/// Reads a private key block of 32 bytes tagged `tag` ([`read_block`]).
pub(crate) fn read_private_32(
    path: &Path,
    tag: &str,
    pass: Option<&Passphrase>,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    bytes_32(&read_block(path, tag, pass)?, path)
}

/// Writes `contents` as a private key block tagged `tag` (encrypted with `pass` if given),
/// mode 0600, atomically.
pub(crate) fn write_private(
    path: &Path,
    tag: &str,
    contents: &[u8],
    pass: Option<&Passphrase>,
) -> Result<(), KeyError> {
    let text = encode_block(tag, contents, pass, path)?;
    write_file(path, text.as_bytes(), 0o600)
}

/// Writes a 32-byte public key block tagged `tag`, mode 0644, atomically.
pub(crate) fn write_public(path: &Path, tag: &str, key: &[u8; 32]) -> Result<(), KeyError> {
    write_file(path, pem_of(tag, key).as_bytes(), 0o644)
}

/// Writes a key file with mode 0600 (replacing an existing one atomically).
pub fn write_key(path: &Path, secret: &[u8; 32], rotation_id: u32) -> Result<(), KeyError> {
    let text = encode_pem(secret, rotation_id);
    write_file(path, text.as_bytes(), 0o600)
}

/// The temporary file a write of `path` goes through (`path` + `.tmp`, as nym-node names it).
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes `path` if it exists (a symlink itself, never what it points to).
fn remove_if_present(path: &Path) -> Result<(), KeyError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// Syncs the directory holding `path`, so that a rename or removal in it is durable.
fn sync_dir_of(path: &Path) -> Result<(), KeyError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Creates `path` (which must not exist: `O_EXCL`, and `O_NOFOLLOW` so that not even a
/// dangling symlink is followed) with `mode`, writes `contents` and syncs the file.
fn create_synced(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let io = io_err(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(&io)?;
    // the umask may have taken bits off `mode`; the file is ours alone, so set it exactly
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(&io)?;
    f.write_all(contents).map_err(&io)?;
    f.sync_all().map_err(&io)
}

/// Writes `contents` to `tmp` from scratch (a stale temporary file is removed first).
fn write_tmp(tmp: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    remove_if_present(tmp)?;
    create_synced(tmp, contents, mode)
}

/// Writes `contents` to `path` with `mode` through a synced temporary file renamed into place,
/// then syncs the directory: after a crash `path` holds the old contents or the new, whole.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let tmp = tmp_path(path);
    write_tmp(&tmp, contents, mode)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir_of(path)
}

/// Whether two stored keys are the same key.
fn same_key(a: &KeyMaterial, b: &KeyMaterial) -> bool {
    use subtle::ConstantTimeEq;
    a.rotation_id == b.rotation_id && bool::from(a.secret.ct_eq(&b.secret))
}

/// Replaces the live keys in mixplane's key directory `dir`, `current`, by `new`: see
/// [`KeyStore::install_keys`].
pub fn install_keys(dir: &Path, current: &StoredKeys, new: &StoredKeys) -> Result<(), KeyError> {
    KeyStore::new(dir, KeyLayout::Mixplane).install_keys(current, new)
}

/// Writes the Noise key pair into `dir`: [`NOISE_FILE`] (0600) and [`NOISE_PUBLIC_FILE`] (0644).
pub fn write_noise_key(dir: &Path, key: &NoiseKey) -> Result<(), KeyError> {
    KeyStore::new(dir, KeyLayout::Mixplane).write_noise_key(key)
}

/// Reads the Noise key from `dir`: see [`KeyStore::load_noise_key`].
pub fn load_noise_key(dir: &Path) -> Result<Option<NoiseKey>, KeyError> {
    KeyStore::new(dir, KeyLayout::Mixplane).load_noise_key()
}

/// Loads everything in mixplane's key directory `dir`: the Sphinx keys ([`load_keys`]) and the
/// Noise key ([`load_noise_key`]).
pub fn load_key_dir(dir: &Path) -> Result<KeyDir, KeyError> {
    KeyStore::new(dir, KeyLayout::Mixplane).load_key_dir()
}

/// Reads a private key file's text, refusing one that other users can read.
fn read_private(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let io = io_err(path);
    let meta = std::fs::metadata(path).map_err(&io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Insecure {
            path: path.to_path_buf(),
            mode,
        });
    }
    // read into a buffer sized for the whole file, so that no reallocation leaves a copy of
    // the key text behind in freed memory
    let mut f = std::fs::File::open(path).map_err(&io)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    std::io::Read::read_to_end(&mut f, &mut buf).map_err(&io)?;
    let text = std::str::from_utf8(&buf).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
        what: "not UTF-8 text".into(),
    })?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Reads an unencrypted Sphinx key file, refusing one that other users can read.
pub fn read_key(path: &Path) -> Result<KeyMaterial, KeyError> {
    read_sphinx(path, None)
}

/// Reads a Sphinx key file, decrypting it with `pass` if it is encrypted.
fn read_sphinx(path: &Path, pass: Option<&Passphrase>) -> Result<KeyMaterial, KeyError> {
    sphinx_of(&read_block(path, PEM_TAG, pass)?, path)
}

/// Loads the live keys from mixplane's key directory `dir`: see [`KeyStore::load_keys`].
pub fn load_keys(dir: &Path) -> Result<StoredKeys, KeyError> {
    KeyStore::new(dir, KeyLayout::Mixplane).load_keys()
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

    fn key(rotation: u32) -> KeyMaterial {
        KeyMaterial::generate(rotation)
    }

    fn install_fresh(st: &KeyStore, k: &StoredKeys) {
        for f in [st.primary_path(), st.secondary_path()] {
            let _ = std::fs::remove_file(&f);
            let _ = std::fs::remove_file(tmp_path(&f));
        }
        let p = &k.primary;
        write_key(&st.primary_path(), p.secret(), p.rotation_id()).unwrap();
        if let Some(s) = &k.secondary {
            write_key(&st.secondary_path(), s.secret(), s.rotation_id()).unwrap();
        }
    }

    fn ids(k: &StoredKeys) -> (u32, Option<u32>) {
        (
            k.primary.rotation_id(),
            k.secondary.as_ref().map(|s| s.rotation_id()),
        )
    }

    #[test]
    fn a_crash_at_any_step_of_a_rotation_never_leaves_one_key_in_both_files() {
        let d = tmpdir("crash");
        let (a, b, c) = (key(1), key(2), key(3));
        let both = |p: &KeyMaterial, s: &KeyMaterial| StoredKeys {
            primary: p.clone(),
            secondary: Some(s.clone()),
        };
        let only = |p: &KeyMaterial| StoredKeys {
            primary: p.clone(),
            secondary: None,
        };
        // (name, before, after): every kind of step the control plane takes
        let steps = [
            ("rotate", both(&a, &b), both(&c, &a)),
            ("rotate from one key", only(&a), both(&c, &a)),
            ("swap", both(&a, &b), both(&b, &a)),
            ("pre-announce", only(&a), both(&a, &c)),
            ("purge", both(&a, &b), only(&a)),
            ("reset", both(&a, &b), both(&c, &key(4))),
        ];
        let layouts = [KeyLayout::Mixplane, KeyLayout::NymNode];
        for ((name, before, after), layout) in steps.iter().flat_map(|s| layouts.map(|l| (s, l))) {
            let d = d.join(format!("{layout:?}"));
            std::fs::create_dir_all(&d).unwrap();
            let st = KeyStore::new(&d, layout);
            for crash_after in 0..=3 {
                install_fresh(&st, before);
                st.install_keys_until(before, after, crash_after).unwrap();
                let raw_p = read_key(&st.primary_path()).unwrap();
                let raw_s = read_key(&st.secondary_path()).ok();
                assert!(
                    raw_s.as_ref().is_none_or(|s| !same_key(s, &raw_p)),
                    "{name}, crash after step {crash_after}: both files hold key {}",
                    raw_p.rotation_id()
                );
                let got = st.load_keys().unwrap();
                let s_ok = got
                    .secondary
                    .as_ref()
                    .is_none_or(|s| !same_key(s, &got.primary));
                assert!(s_ok, "{name}, crash after {crash_after}: {:?}", ids(&got));
                assert!(
                    same_key(&got.primary, &before.primary)
                        || same_key(&got.primary, &after.primary),
                    "{name}, crash after {crash_after}: primary {:?}",
                    ids(&got)
                );
                if crash_after >= 2 {
                    assert_eq!(ids(&got), ids(after), "{name}: finished");
                }
                // nothing temporary is left once loaded, and only this layout's files exist
                for f in [st.primary_path(), st.secondary_path()] {
                    assert!(!tmp_path(&f).exists(), "{name}: {}.tmp left", f.display());
                }
                let other = match layout {
                    KeyLayout::NymNode => PRIMARY_FILE,
                    _ => NYM_PRIMARY_FILE,
                };
                assert!(!d.join(other).exists(), "{name}: {other} written");
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn temporary_files_are_created_afresh_and_never_through_a_symlink() {
        let d = tmpdir("symlink");
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let p = d.join(PRIMARY_FILE);
        std::os::unix::fs::symlink(&victim, tmp_path(&p)).unwrap();
        write_key(&p, &[4; 32], 7).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(read_key(&p).unwrap().secret(), &[4; 32]);
        assert!(
            !std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // a stale temporary file with loose permissions does not lend them to the key
        let tmp = tmp_path(&p);
        std::fs::write(&tmp, b"old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_key(&p, &[5; 32], 8).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // creating the temporary file itself refuses to follow a symlink or reuse a file
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(create_synced(&tmp, b"x", 0o600).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_nym_node_tmp_primary_is_removed_as_nym_node_does() {
        let d = tmpdir("nymtmp");
        let st = KeyStore::new(&d, KeyLayout::NymNode);
        let (old, new) = (key(7), key(8));
        // nym-node crashed after step 2 of its swap: the new primary is in place, the old one
        // only in the .tmp copy, no secondary file
        write_key(&d.join(NYM_PRIMARY_FILE), new.secret(), 8).unwrap();
        write_key(&d.join("x25519_sphinx_primary.tmp"), old.secret(), 7).unwrap();
        let got = st.load_keys().unwrap();
        assert!(same_key(&got.primary, &new) && got.secondary.is_none());
        assert!(!d.join("x25519_sphinx_primary.tmp").exists());
        // after step 1: both files intact, the .tmp a copy of the primary
        write_key(&d.join(NYM_SECONDARY_FILE), old.secret(), 7).unwrap();
        std::fs::copy(
            d.join(NYM_PRIMARY_FILE),
            d.join("x25519_sphinx_primary.tmp"),
        )
        .unwrap();
        let got = st.load_keys().unwrap();
        assert_eq!(ids(&got), (8, Some(7)));
        assert!(!d.join("x25519_sphinx_primary.tmp").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn encrypted_key_files_need_the_passphrase_and_writes_stay_encrypted() {
        let d = tmpdir("enc");
        let pass = Passphrase::new("open sesame".into());
        let st = KeyStore::new(&d, KeyLayout::NymNode).with_passphrase(Some(pass.clone()));
        let (a, b) = (key(3), key(4));
        let c = sphinx_contents(a.secret(), 3);
        let primary = st.primary_path();
        write_private(&primary, PEM_TAG, &c[..], Some(&pass)).unwrap();
        let text = std::fs::read_to_string(&primary).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED X25519 SPHINX PRIVATE KEY-----"));
        // without a passphrase: a clear error naming the ways to give one
        let plain = KeyStore::new(&d, KeyLayout::NymNode);
        let err = plain.load_keys().unwrap_err();
        assert!(matches!(err, KeyError::PassphraseRequired { .. }), "{err}");
        assert!(err.to_string().contains(PASSPHRASE_ENV), "{err}");
        let wrong = plain.with_passphrase(Some(Passphrase::new("nope".into())));
        assert!(matches!(
            wrong.load_keys(),
            Err(KeyError::PassphraseRejected { .. })
        ));
        let got = st.load_keys().unwrap();
        assert!(same_key(&got.primary, &a));
        // a rotation writes the new key encrypted too, and it reads back
        let now = StoredKeys {
            primary: a.clone(),
            secondary: Some(b.clone()),
        };
        st.install_keys(&got, &now).unwrap();
        let text = std::fs::read_to_string(st.secondary_path()).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED X25519 SPHINX PRIVATE KEY-----"));
        assert_eq!(ids(&st.load_keys().unwrap()), (3, Some(4)));
        // a plaintext directory is never made encrypted by having a passphrase
        let d2 = tmpdir("enc-plain");
        let st2 = KeyStore::new(&d2, KeyLayout::Mixplane).with_passphrase(Some(pass));
        install_fresh(
            &st2,
            &StoredKeys {
                primary: a.clone(),
                secondary: None,
            },
        );
        st2.install_keys(&st2.load_keys().unwrap(), &now).unwrap();
        assert!(
            std::fs::read_to_string(st2.secondary_path())
                .unwrap()
                .starts_with("-----BEGIN X25519 SPHINX")
        );
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&d2);
    }
}
