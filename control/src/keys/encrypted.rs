//! Passphrase-encrypted key blocks, as nym-pemstore 2.0.0 writes them.
//!
//! An encrypted key file holds one PEM block tagged `ENCRYPTED ` + the key's own tag (e.g.
//! `ENCRYPTED X25519 SPHINX PRIVATE KEY`) whose contents are a DER PKCS#8
//! `EncryptedPrivateKeyInfo`: PBES2 with scrypt (nym-pemstore uses N = 2^17, r = 8, p = 1, a
//! fresh 16-byte salt) and AES-256-GCM (a fresh 12-byte nonce). The plaintext is the key's raw
//! bytes, exactly what the unencrypted block would hold (not a PKCS#8 `PrivateKeyInfo`).
//!
//! Reading refuses key-derivation parameters beyond [`MAX_SCRYPT_LOG_N`] and friends, so that
//! a crafted file cannot make the node allocate gigabytes; it accepts scrypt with any of the
//! AES schemes PBES2 defines, since the scheme is named in the file.

use pkcs8::EncryptedPrivateKeyInfoOwned;
use pkcs8::der::asn1::OctetString;
use pkcs8::der::{Decode, Encode};
use pkcs8::pkcs5::{EncryptionScheme, pbes2, scrypt};
use zeroize::Zeroizing;

use super::Passphrase;

/// The largest scrypt cost accepted when reading, as log2 N (2^20 × r = 8: 1 GiB).
pub(super) const MAX_SCRYPT_LOG_N: u32 = 20;
/// The largest scrypt block size `r` accepted when reading.
const MAX_SCRYPT_R: u16 = 32;
/// The largest scrypt parallelism `p` accepted when reading.
const MAX_SCRYPT_P: u16 = 16;

/// The prefix nym-pemstore puts before a key's PEM tag when the block is encrypted.
pub(super) const TAG_PREFIX: &str = "ENCRYPTED ";

/// Why an encrypted block could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub(super) enum SealError {
    /// Not a DER `EncryptedPrivateKeyInfo`.
    #[error("not a PKCS#8 EncryptedPrivateKeyInfo: {0}")]
    Der(pkcs8::der::Error),
    /// Parameters this reader refuses.
    #[error("{0}")]
    Unsupported(String),
    /// The passphrase does not open it (or the data was altered).
    #[error("the passphrase does not decrypt it (wrong passphrase, or the file was altered)")]
    Rejected,
    /// Encryption failed.
    #[error("encryption failed: {0}")]
    Encrypt(String),
}

/// Checks that the key derivation is scrypt with bounded cost.
fn check_params(scheme: &EncryptionScheme) -> Result<(), SealError> {
    let EncryptionScheme::Pbes2(params) = scheme else {
        return Err(SealError::Unsupported("PBES1 is not supported".into()));
    };
    let pbes2::Kdf::Scrypt(s) = &params.kdf else {
        return Err(SealError::Unsupported(
            "key derivation is not scrypt (nym-pemstore uses scrypt)".into(),
        ));
    };
    let n = s.cost_parameter;
    let ok = n.is_power_of_two()
        && n.trailing_zeros() <= MAX_SCRYPT_LOG_N
        && s.block_size <= MAX_SCRYPT_R
        && s.parallelization <= MAX_SCRYPT_P;
    if !ok {
        return Err(SealError::Unsupported(format!(
            "scrypt parameters N = {n}, r = {}, p = {} exceed what is accepted (N <= 2^{MAX_SCRYPT_LOG_N}, r <= {MAX_SCRYPT_R}, p <= {MAX_SCRYPT_P})",
            s.block_size, s.parallelization
        )));
    }
    Ok(())
}

/// Decrypts the DER contents of an encrypted block into the key's raw bytes.
pub(super) fn decrypt(pass: &Passphrase, der: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let info = EncryptedPrivateKeyInfoOwned::from_der(der).map_err(SealError::Der)?;
    check_params(&info.encryption_algorithm)?;
    info.encryption_algorithm
        .decrypt(pass.as_bytes(), info.encrypted_data.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| SealError::Rejected)
}

/// Encrypts a key's raw bytes with scrypt (2^17, 8, 1) and AES-256-GCM under fresh random
/// salt and nonce, into DER contents for an `ENCRYPTED ` block.
pub(super) fn encrypt(pass: &Passphrase, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let enc = |e: &dyn std::fmt::Display| SealError::Encrypt(e.to_string());
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::fill(&mut salt[..]);
    rand::fill(&mut nonce[..]);
    let params = pbes2::Parameters::scrypt_aes256gcm(scrypt::Params::RECOMMENDED, &salt, nonce)
        .map_err(|e| enc(&e))?;
    let ciphertext = params
        .encrypt(pass.as_bytes(), plaintext)
        .map_err(|e| enc(&e))?;
    let info = EncryptedPrivateKeyInfoOwned {
        encryption_algorithm: params.into(),
        encrypted_data: OctetString::new(ciphertext).map_err(|e| enc(&e))?,
    };
    info.to_der().map_err(|e| enc(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let p = Passphrase::new("correct horse".into());
        let der = encrypt(&p, b"0123456789abcdef0123456789abcdef").unwrap();
        assert!(!der.windows(16).any(|w| w == b"0123456789abcdef"));
        assert_eq!(
            decrypt(&p, &der).unwrap().as_slice(),
            b"0123456789abcdef0123456789abcdef"
        );
        let wrong = Passphrase::new("battery staple".into());
        assert!(matches!(decrypt(&wrong, &der), Err(SealError::Rejected)));
        let mut tampered = der.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(decrypt(&p, &tampered), Err(SealError::Rejected)));
        assert!(matches!(decrypt(&p, b"junk"), Err(SealError::Der(_))));
    }

    #[test]
    fn excessive_scrypt_cost_is_refused_before_deriving() {
        let p = Passphrase::new("x".into());
        let params = pbes2::Parameters::scrypt_aes256gcm(
            scrypt::Params::new(24, 8, 1).unwrap(),
            &[1; 16],
            [2; 12],
        )
        .unwrap();
        let info = EncryptedPrivateKeyInfoOwned {
            encryption_algorithm: params.into(),
            encrypted_data: OctetString::new(vec![0u8; 48]).unwrap(),
        };
        let der = info.to_der().unwrap();
        assert!(matches!(decrypt(&p, &der), Err(SealError::Unsupported(_))));
    }
}
