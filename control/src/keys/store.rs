//! A key directory: where its files are ([`KeyLayout`]), the passphrase of encrypted ones, and
//! the reads and writes of whole key sets.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{
    KeyDir, KeyError, KeyMaterial, NOISE_FILE, NOISE_PEM_TAG, NOISE_PUBLIC_FILE,
    NOISE_PUBLIC_PEM_TAG, NoiseKey, PEM_TAG, PRIMARY_FILE, SECONDARY_FILE, StoredKeys, encrypted,
    io_err, read_private_32, read_public, read_sphinx, remove_if_present, same_key,
    sphinx_contents, sync_dir_of, tmp_path, write_file, write_private, write_public, write_tmp,
};

/// nym-node's name for the primary Sphinx key file (in its data directory).
pub const NYM_PRIMARY_FILE: &str = "x25519_sphinx_primary";
/// nym-node's name for the secondary Sphinx key file (present during a rotation overlap).
pub const NYM_SECONDARY_FILE: &str = "x25519_sphinx_secondary";

/// Whose file names a key directory uses. The identity and Noise key files have the same
/// names in both (nym-node's: `ed25519_identity`, `x25519_noise`, each with a `.pub`); the
/// Sphinx key files differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyLayout {
    /// mixplane's own key directory: [`PRIMARY_FILE`], [`SECONDARY_FILE`].
    #[default]
    Mixplane,
    /// A nym-node data directory (`~/.nym/nym-nodes/<id>/data/`) used in place:
    /// [`NYM_PRIMARY_FILE`], [`NYM_SECONDARY_FILE`].
    ///
    /// nym-node swaps its Sphinx key files in three steps: copy the primary to
    /// `x25519_sphinx_primary.tmp`, rename the secondary over the primary, rename the `.tmp`
    /// to the secondary. At start (`SphinxKeyManager::try_load_or_regenerate`) it treats an
    /// `x25519_sphinx_primary.tmp` as a crash in the middle of that swap and simply deletes it,
    /// without working out which step failed; loading on this layout does exactly the same
    /// (and logs it). Note what that rule implies, in nym-node as here: after a crash between
    /// the second and third step the old primary lived only in the `.tmp` file and is gone, so
    /// packets still built for it fail until clients move to the new key. nym-node then swaps
    /// the files back if the secondary's rotation id is the newer and the current rotation is
    /// past the primary's; mixplane's rotation plan makes the same swap on its first tick.
    ///
    /// Writes keep nym-node's format: PEM as nym-pemstore writes it (encrypted only where the
    /// directory's keys already are), mode 0600 for private keys. mixplane's own rotation
    /// writes may leave an `x25519_sphinx_secondary.tmp` after a crash, which nym-node ignores
    /// and mixplane finishes or removes.
    NymNode,
}

impl KeyLayout {
    /// The primary Sphinx key's file name.
    pub fn primary_file(self) -> &'static str {
        match self {
            KeyLayout::Mixplane => PRIMARY_FILE,
            KeyLayout::NymNode => NYM_PRIMARY_FILE,
        }
    }

    /// The secondary Sphinx key's file name.
    pub fn secondary_file(self) -> &'static str {
        match self {
            KeyLayout::Mixplane => SECONDARY_FILE,
            KeyLayout::NymNode => NYM_SECONDARY_FILE,
        }
    }
}

/// The environment variable read for the passphrase of encrypted key files.
pub const PASSPHRASE_ENV: &str = "MIXPLANE_KEY_PASSPHRASE";

/// A passphrase for encrypted key files. Wiped when dropped; never printed.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Passphrase {
    /// Wraps a passphrase (used as its UTF-8 bytes, as nym-pemstore does).
    pub fn new(p: String) -> Passphrase {
        Passphrase(Zeroizing::new(p))
    }

    /// Reads a passphrase file: its first line, without the line ending. The file must not be
    /// readable by other users.
    pub fn from_file(path: &Path) -> Result<Passphrase, KeyError> {
        let text = super::read_private(path)?;
        let line = text.lines().next().unwrap_or("");
        Ok(Passphrase::new(line.to_owned()))
    }

    /// The passphrase in [`PASSPHRASE_ENV`], if set (and not empty).
    pub fn from_env() -> Option<Passphrase> {
        std::env::var(PASSPHRASE_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .map(Passphrase::new)
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A key directory: its path, layout and, for encrypted key files, the passphrase.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
    layout: KeyLayout,
    passphrase: Option<Passphrase>,
}

impl KeyStore {
    /// The directory `dir` with file names of `layout`, without a passphrase.
    pub fn new(dir: impl Into<PathBuf>, layout: KeyLayout) -> KeyStore {
        KeyStore {
            dir: dir.into(),
            layout,
            passphrase: None,
        }
    }

    /// The same store with a passphrase for encrypted key files.
    pub fn with_passphrase(mut self, passphrase: Option<Passphrase>) -> KeyStore {
        self.passphrase = passphrase;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its layout.
    pub fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// The passphrase, if one was given.
    pub(crate) fn passphrase(&self) -> Option<&Passphrase> {
        self.passphrase.as_ref()
    }

    /// The primary Sphinx key file.
    pub fn primary_path(&self) -> PathBuf {
        self.dir.join(self.layout.primary_file())
    }

    /// The secondary Sphinx key file.
    pub fn secondary_path(&self) -> PathBuf {
        self.dir.join(self.layout.secondary_file())
    }

    /// The passphrase to encrypt new key files with: the store's, when the primary Sphinx key
    /// file is encrypted (so a directory never gets encrypted files it did not have before,
    /// which a reader without a passphrase could not read back).
    pub(crate) fn write_passphrase(&self) -> Option<&Passphrase> {
        let pass = self.passphrase.as_ref()?;
        let text = std::fs::read(self.primary_path()).ok()?;
        let begin = format!("-----BEGIN {}", encrypted::TAG_PREFIX);
        text.starts_with(begin.as_bytes()).then_some(pass)
    }

    /// PEM text of a Sphinx key, encrypted if [`Self::write_passphrase`] says so.
    fn sphinx_pem(&self, k: &KeyMaterial, path: &Path) -> Result<Zeroizing<String>, KeyError> {
        let c = sphinx_contents(k.secret(), k.rotation_id());
        super::encode_block(PEM_TAG, &c[..], self.write_passphrase(), path)
    }

    /// Reads a Sphinx key file with the store's passphrase.
    fn read_sphinx(&self, path: &Path) -> Result<KeyMaterial, KeyError> {
        read_sphinx(path, self.passphrase.as_ref())
    }

    /// Loads the live keys: the primary, and the secondary if present. A rotation that a crash
    /// interrupted is finished or undone first ([`Self::install_keys`]; on a nym-node
    /// directory nym-node's rule for `x25519_sphinx_primary.tmp`, see [`KeyLayout::NymNode`]);
    /// a secondary file holding the primary key (left by older versions) is ignored.
    pub fn load_keys(&self) -> Result<StoredKeys, KeyError> {
        self.discard_tmp_primary()?;
        let primary = self.read_sphinx(&self.primary_path())?;
        self.recover_secondary(&primary)?;
        let sp = self.secondary_path();
        let secondary = if sp.exists() {
            Some(self.read_sphinx(&sp)?)
        } else {
            None
        };
        let secondary = secondary.filter(|s| {
            let dup = same_key(s, &primary);
            if dup {
                tracing::warn!(file = %sp.display(), "the secondary key file holds the primary key: ignored");
            }
            !dup
        });
        Ok(StoredKeys { primary, secondary })
    }

    /// Removes a temporary primary key file. mixplane's writes leave one only half written
    /// (the primary file is whole: only a rename replaces it); nym-node's swap leaves a copy
    /// of the old primary, which nym-node itself deletes at start ([`KeyLayout::NymNode`]).
    fn discard_tmp_primary(&self) -> Result<(), KeyError> {
        let p_tmp = tmp_path(&self.primary_path());
        if p_tmp.symlink_metadata().is_err() {
            return Ok(());
        }
        match self.layout {
            KeyLayout::NymNode => tracing::warn!(
                file = %p_tmp.display(),
                "a Sphinx key rotation was interrupted by a crash; removing the temporary key file as nym-node does (its old primary key, if only there, is lost)"
            ),
            _ => {
                tracing::warn!(file = %p_tmp.display(), "discarding a key file a crash left half written")
            }
        }
        remove_if_present(&p_tmp)?;
        sync_dir_of(&p_tmp)
    }

    /// Finishes or discards a temporary secondary that a crash in [`Self::install_keys`] left:
    /// renamed into place when it is a whole key file that differs from the primary, else
    /// removed.
    fn recover_secondary(&self, primary: &KeyMaterial) -> Result<(), KeyError> {
        let s = self.secondary_path();
        let s_tmp = tmp_path(&s);
        let Ok(meta) = s_tmp.symlink_metadata() else {
            return Ok(());
        };
        let whole = meta.file_type().is_file()
            && self
                .read_sphinx(&s_tmp)
                .is_ok_and(|k| !same_key(&k, primary));
        if whole {
            tracing::warn!(file = %s.display(), "finishing a key rotation a crash interrupted");
            std::fs::rename(&s_tmp, &s).map_err(io_err(&s))?;
        } else {
            tracing::warn!(file = %s_tmp.display(), "discarding a key file a crash left behind");
            remove_if_present(&s_tmp)?;
        }
        sync_dir_of(&s)
    }

    /// Replaces the live keys, `current`, by `new`, durably and in an order that a crash
    /// cannot turn into two files holding the same key. Files are written in the directory's
    /// format (encrypted if its primary key file is: [`Self::write_passphrase`]).
    ///
    /// Writing the secondary and then the primary in place would not do: in a rotation the old
    /// primary becomes the secondary, so a crash between the two writes would leave the old
    /// primary in both files (and in a swap the old secondary likewise). Instead:
    ///
    /// 1. the new secondary is written to the secondary file's `.tmp` and synced: the live
    ///    files are untouched;
    /// 2. the new primary takes its place: when it is the current secondary (a swap) by
    ///    renaming the secondary file over the primary file, which leaves no secondary file;
    ///    otherwise through its own synced temporary file renamed over the primary file;
    /// 3. the secondary's `.tmp` is renamed to the secondary file (or, with no new secondary,
    ///    the secondary file removed), and the directory synced.
    ///
    /// Each rename is atomic and followed by a sync of the directory. A crash before step 2
    /// leaves the current keys; after it, the new primary beside either the current secondary
    /// (which is not the new primary, or step 2 would have moved it) or none. [`Self::load_keys`]
    /// then finishes step 3 when the temporary secondary is whole and differs from the primary,
    /// and discards it otherwise, so the two files never hold the same key.
    pub fn install_keys(&self, current: &StoredKeys, new: &StoredKeys) -> Result<(), KeyError> {
        self.install_keys_until(current, new, usize::MAX)
    }

    /// [`Self::install_keys`], stopping (as a crash would) after `steps` durable steps.
    pub(super) fn install_keys_until(
        &self,
        current: &StoredKeys,
        new: &StoredKeys,
        steps: usize,
    ) -> Result<(), KeyError> {
        let (p, s) = (self.primary_path(), self.secondary_path());
        let s_tmp = tmp_path(&s);
        let mut done = 0;
        let mut step = || {
            done += 1;
            done > steps
        };
        if let Some(sec) = &new.secondary {
            let text = self.sphinx_pem(sec, &s)?;
            write_tmp(&s_tmp, text.as_bytes(), 0o600)?;
            sync_dir_of(&s_tmp)?;
        }
        if step() {
            return Ok(());
        }
        let swap = current
            .secondary
            .as_ref()
            .is_some_and(|c| same_key(c, &new.primary));
        if swap {
            std::fs::rename(&s, &p).map_err(io_err(&p))?;
            sync_dir_of(&p)?;
        } else if !same_key(&current.primary, &new.primary) {
            let text = self.sphinx_pem(&new.primary, &p)?;
            write_file(&p, text.as_bytes(), 0o600)?;
        }
        if step() {
            return Ok(());
        }
        match &new.secondary {
            Some(_) => std::fs::rename(&s_tmp, &s).map_err(io_err(&s))?,
            None => remove_if_present(&s)?,
        }
        sync_dir_of(&s)
    }

    /// Writes the Noise key pair: [`NOISE_FILE`] (0600) and [`NOISE_PUBLIC_FILE`] (0644).
    pub fn write_noise_key(&self, key: &NoiseKey) -> Result<(), KeyError> {
        let path = self.dir.join(NOISE_FILE);
        let pass = self.write_passphrase();
        write_private(&path, NOISE_PEM_TAG, key.secret_bytes(), pass)?;
        let public = self.dir.join(NOISE_PUBLIC_FILE);
        write_public(&public, NOISE_PUBLIC_PEM_TAG, &key.public_bytes())
    }

    /// Reads the Noise key: `None` if [`NOISE_FILE`] does not exist. A file other users can
    /// read is refused, and so is a [`NOISE_PUBLIC_FILE`] that is not the key's public key.
    pub fn load_noise_key(&self) -> Result<Option<NoiseKey>, KeyError> {
        let path = self.dir.join(NOISE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let key = NoiseKey::new(*read_private_32(&path, NOISE_PEM_TAG, self.passphrase())?);
        let pub_path = self.dir.join(NOISE_PUBLIC_FILE);
        if pub_path.exists() && read_public(&pub_path, NOISE_PUBLIC_PEM_TAG)? != key.public_bytes()
        {
            return Err(KeyError::Malformed {
                path: pub_path,
                what: format!("not the public key of {NOISE_FILE}"),
            });
        }
        Ok(Some(key))
    }

    /// Loads the Sphinx keys ([`Self::load_keys`]) and the Noise key ([`Self::load_noise_key`]).
    pub fn load_key_dir(&self) -> Result<KeyDir, KeyError> {
        Ok(KeyDir {
            sphinx: self.load_keys()?,
            noise: self.load_noise_key()?,
        })
    }
}
