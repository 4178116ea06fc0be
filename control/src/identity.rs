//! The node's ed25519 identity key, in nym-node's files.
//!
//! [`IDENTITY_FILE`] holds a PEM block tagged `ED25519 PRIVATE KEY` with the 32-byte secret
//! seed, and [`IDENTITY_PUBLIC_FILE`] one tagged `ED25519 PUBLIC KEY` with the 32-byte public
//! key: what nym-crypto 2.0.0's `PemStorableKey` impls for its ed25519 `PrivateKey` and
//! `PublicKey` hold, under nym-node's file names. The private file may be encrypted with a
//! passphrase as nym-pemstore does ([`crate::keys::KeyStore`]). It is created 0600 and one
//! that other users can read is refused, as for every private key ([`crate::keys`]).
//!
//! The public key in base58 is the node's identity in Nym's directory.

use std::path::Path;

use ed25519_dalek::SigningKey;

use crate::keys::{self, KeyError, KeyLayout, KeyStore};

/// The PEM tag of the identity private key (nym-crypto's ed25519 `PrivateKey`).
pub const IDENTITY_PEM_TAG: &str = "ED25519 PRIVATE KEY";
/// The PEM tag of the identity public key (nym-crypto's ed25519 `PublicKey`).
pub const IDENTITY_PUBLIC_PEM_TAG: &str = "ED25519 PUBLIC KEY";
/// File name of the identity private key (nym-node's name).
pub const IDENTITY_FILE: &str = "ed25519_identity";
/// File name of the identity public key (nym-node's name).
pub const IDENTITY_PUBLIC_FILE: &str = "ed25519_identity.pub";

/// The node's ed25519 identity key. The secret is zeroized on drop (ed25519-dalek's
/// `SigningKey` wipes itself).
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public_base58())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Identity {
        Identity::from_secret(*keys::generate_secret())
    }

    /// The identity with this 32-byte secret seed.
    pub fn from_secret(bytes: [u8; 32]) -> Identity {
        let bytes = zeroize::Zeroizing::new(bytes);
        Identity {
            key: SigningKey::from_bytes(&bytes),
        }
    }

    /// The signing key (for the HTTP API's signed documents and verloc).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The 32-byte ed25519 public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The public key in base58, as Nym's directory publishes node identities.
    pub fn public_base58(&self) -> String {
        bs58::encode(self.public_bytes()).into_string()
    }
}

impl KeyStore {
    /// Reads the identity: `None` if [`IDENTITY_FILE`] does not exist. A private file other
    /// users can read is refused, and so is an [`IDENTITY_PUBLIC_FILE`] that is not the key's
    /// public key.
    pub fn load_identity(&self) -> Result<Option<Identity>, KeyError> {
        let path = self.dir().join(IDENTITY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let secret = keys::read_private_32(&path, IDENTITY_PEM_TAG, self.passphrase())?;
        let id = Identity::from_secret(*secret);
        let pub_path = self.dir().join(IDENTITY_PUBLIC_FILE);
        if pub_path.exists()
            && keys::read_public(&pub_path, IDENTITY_PUBLIC_PEM_TAG)? != id.public_bytes()
        {
            return Err(KeyError::Malformed {
                path: pub_path,
                what: format!("not the public key of {IDENTITY_FILE}"),
            });
        }
        Ok(Some(id))
    }

    /// Writes the identity: [`IDENTITY_FILE`] (0600, encrypted where the directory's keys are)
    /// and [`IDENTITY_PUBLIC_FILE`] (0644).
    pub fn write_identity(&self, id: &Identity) -> Result<(), KeyError> {
        let path = self.dir().join(IDENTITY_FILE);
        let secret = zeroize::Zeroizing::new(id.key.to_bytes());
        keys::write_private(
            &path,
            IDENTITY_PEM_TAG,
            &secret[..],
            self.write_passphrase(),
        )?;
        let public = self.dir().join(IDENTITY_PUBLIC_FILE);
        keys::write_public(&public, IDENTITY_PUBLIC_PEM_TAG, &id.public_bytes())
    }
}

/// Reads the identity from an unencrypted key directory `dir`: see [`KeyStore::load_identity`].
pub fn load_identity(dir: &Path) -> Result<Option<Identity>, KeyError> {
    KeyStore::new(dir, KeyLayout::Mixplane).load_identity()
}

/// Writes the identity into `dir` (unencrypted): see [`KeyStore::write_identity`].
pub fn write_identity(dir: &Path, id: &Identity) -> Result<(), KeyError> {
    KeyStore::new(dir, KeyLayout::Mixplane).write_identity(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, Verifier};
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mixplane-id-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn identity_files_are_nyms_pem_private_and_round_trip() {
        let d = tmpdir("rt");
        assert!(load_identity(&d).unwrap().is_none());
        let id = Identity::generate();
        write_identity(&d, &id).unwrap();
        let text = std::fs::read_to_string(d.join(IDENTITY_FILE)).unwrap();
        let p = pem::parse(&text).unwrap();
        assert_eq!(p.tag(), "ED25519 PRIVATE KEY");
        assert_eq!(p.contents(), id.signing_key().to_bytes());
        let pp = pem::parse(std::fs::read(d.join(IDENTITY_PUBLIC_FILE)).unwrap()).unwrap();
        assert_eq!(pp.tag(), "ED25519 PUBLIC KEY");
        assert_eq!(pp.contents(), id.public_bytes());
        let mode = |f: &str| std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(IDENTITY_FILE), 0o600);
        let back = load_identity(&d).unwrap().unwrap();
        assert_eq!(back.public_base58(), id.public_base58());
        assert_eq!(
            bs58::decode(back.public_base58()).into_vec().unwrap(),
            id.public_bytes()
        );
        // what one signs the other's public key verifies
        let sig = back.signing_key().sign(b"host information");
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&id.public_bytes()).unwrap();
        assert!(vk.verify(b"host information", &sig).is_ok());
        assert_ne!(Identity::generate().public_bytes(), id.public_bytes());
        // a mismatched public file and a group-readable private file are refused
        keys::write_public(
            &d.join(IDENTITY_PUBLIC_FILE),
            IDENTITY_PUBLIC_PEM_TAG,
            &Identity::generate().public_bytes(),
        )
        .unwrap();
        assert!(matches!(load_identity(&d), Err(KeyError::Malformed { .. })));
        write_identity(&d, &id).unwrap();
        let path = d.join(IDENTITY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(load_identity(&d), Err(KeyError::Insecure { .. })));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn from_secret_is_the_rfc8032_key() {
        // RFC 8032 section 7.1, test 1
        let seed: [u8; 32] =
            hex32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let public = hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        assert_eq!(Identity::from_secret(seed).public_bytes(), public);
    }

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
