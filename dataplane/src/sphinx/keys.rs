//! The node's Sphinx keys as the dataplane sees them: at most two live X25519 private keys, each
//! with its rotation id. Loading, storing and rotating them is the control plane's job.

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::frame::KeyRotation;

/// One X25519 private key with the rotation it belongs to. The secret is zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SphinxKey {
    secret: [u8; 32],
    #[zeroize(skip)]
    rotation_id: u32,
    #[zeroize(skip)]
    public: [u8; 32],
}

impl std::fmt::Debug for SphinxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SphinxKey")
            .field("rotation_id", &self.rotation_id)
            .field("public", &Hex(&self.public))
            .field("secret", &"<redacted>")
            .finish()
    }
}

struct Hex<'a>(&'a [u8]);
impl std::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl SphinxKey {
    /// Wraps secret key bytes (clamped when used, as X25519 does).
    pub fn from_secret(secret: [u8; 32], rotation_id: u32) -> SphinxKey {
        let public =
            mixplane_crypto_simd::x25519::x25519(&secret, &mixplane_crypto_simd::x25519::BASEPOINT);
        SphinxKey {
            secret,
            rotation_id,
            public,
        }
    }

    /// The secret key bytes.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The X25519 public key.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// The rotation this key belongs to.
    pub fn rotation_id(&self) -> u32 {
        self.rotation_id
    }

    /// The frame parity byte that names this key.
    pub fn parity(&self) -> KeyRotation {
        KeyRotation::of_rotation_id(self.rotation_id)
    }
}

/// The live keys: a primary, and during a rotation overlap a secondary.
#[derive(Clone, Debug)]
pub struct NodeKeys {
    /// The key for the current rotation.
    pub primary: SphinxKey,
    /// The previous key (after a swap) or the pre-announced next one (before it).
    pub secondary: Option<SphinxKey>,
}

/// Which of the live keys a packet was processed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySlot {
    /// [`NodeKeys::primary`].
    Primary,
    /// [`NodeKeys::secondary`].
    Secondary,
}

impl NodeKeys {
    /// Keys with only a primary.
    pub fn single(primary: SphinxKey) -> NodeKeys {
        NodeKeys {
            primary,
            secondary: None,
        }
    }

    /// The key in `slot`, if present.
    pub fn get(&self, slot: KeySlot) -> Option<&SphinxKey> {
        match slot {
            KeySlot::Primary => Some(&self.primary),
            KeySlot::Secondary => self.secondary.as_ref(),
        }
    }

    /// The key to try first for a frame's rotation byte, or `None` when no live key has that
    /// parity.
    pub(crate) fn first_choice(&self, rotation: KeyRotation) -> Option<KeySlot> {
        match rotation {
            KeyRotation::Unknown => Some(KeySlot::Primary),
            r if self.primary.parity() == r => Some(KeySlot::Primary),
            r if self.secondary.as_ref().is_some_and(|k| k.parity() == r) => {
                Some(KeySlot::Secondary)
            }
            _ => None,
        }
    }

    /// The key to try after `tried` failed the MAC check: only for frames that do not say which
    /// key they were built for.
    pub(crate) fn fallback(&self, rotation: KeyRotation, tried: KeySlot) -> Option<KeySlot> {
        match (rotation, tried) {
            (KeyRotation::Unknown, KeySlot::Primary) if self.secondary.is_some() => {
                Some(KeySlot::Secondary)
            }
            _ => None,
        }
    }
}
