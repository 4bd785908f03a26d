//! Reading one `[[tls.certificates]]` entry: a PEM chain and a PEM key, checked to
//! belong together, as a rustls [`CertifiedKey`].
//!
//! Every error names the file it is about, and [`CertError::field`] says whether
//! that is the entry's `cert` or `key`, so callers can report it at its key path
//! (`tls.certificates[1].key`). This module reads files; it does not watch them or
//! decide which certificate a handshake gets (see `resolver`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::control_plane::config::spec::CertificateSpec;

/// A certificate entry as read from disk.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Chain and signing key, ready for handshakes.
    pub key: Arc<CertifiedKey>,
    /// Hash of both files' bytes: a reload that reads the same bytes changes nothing.
    pub fingerprint: u64,
}

/// Why an entry could not be loaded; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        /// `cert` or `key`.
        field: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("{} is not valid PEM: {error}", .path.display())]
    Pem {
        /// `cert` or `key`.
        field: &'static str,
        path: PathBuf,
        error: pem::Error,
    },
    /// No `CERTIFICATE` block in the cert file.
    #[error("{} holds no certificate (expected -----BEGIN CERTIFICATE-----)", .path.display())]
    NoCertificate { path: PathBuf },
    /// No private key block in the key file.
    #[error("{} holds no private key (expected a PKCS#8, PKCS#1 or SEC1 PEM block)", .path.display())]
    NoKey { path: PathBuf },
    /// The key parsed as PEM but rustls cannot use it.
    #[error("{}: unusable private key: {error}", .path.display())]
    BadKey { path: PathBuf, error: rustls::Error },
    /// The first certificate is not a valid X.509 certificate.
    #[error("{}: invalid certificate: {error}", .path.display())]
    BadCert { path: PathBuf, error: rustls::Error },
    /// Key and certificate are each fine but are not a pair.
    #[error("{} does not match the certificate in {} (their public keys differ)", .key.display(), .cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl CertError {
    /// The entry's key (`cert` or `key`) whose file is at fault.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            CertError::Read { field, .. } | CertError::Pem { field, .. } => field,
            CertError::NoCertificate { .. } | CertError::BadCert { .. } => "cert",
            CertError::NoKey { .. } | CertError::BadKey { .. } | CertError::Mismatch { .. } => {
                "key"
            }
        }
    }
}

/// Reads, parses and pairs the files of `spec`.
pub(crate) fn load(spec: &CertificateSpec, provider: &CryptoProvider) -> Result<Loaded, CertError> {
    let cert_bytes = read(&spec.cert, "cert")?;
    let key_bytes = read(&spec.key, "key")?;
    let mut hasher = DefaultHasher::new();
    cert_bytes.hash(&mut hasher);
    key_bytes.hash(&mut hasher);
    let fingerprint = hasher.finish();

    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CertError::Pem {
            field: "cert",
            path: spec.cert.clone(),
            error,
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: spec.cert.clone(),
        });
    }
    let key = match PrivateKeyDer::from_pem_slice(&key_bytes) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(CertError::NoKey {
                path: spec.key.clone(),
            })
        }
        Err(error) => {
            return Err(CertError::Pem {
                field: "key",
                path: spec.key.clone(),
                error,
            })
        }
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| CertError::BadKey {
            path: spec.key.clone(),
            error,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key type cannot report its public key; nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(CertError::Mismatch {
                cert: spec.cert.clone(),
                key: spec.key.clone(),
            })
        }
        Err(error) => {
            return Err(CertError::BadCert {
                path: spec.cert.clone(),
                error,
            })
        }
    }
    Ok(Loaded {
        key: Arc::new(certified),
        fingerprint,
    })
}

fn read(path: &Path, field: &'static str) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|error| CertError::Read {
        field,
        path: path.to_path_buf(),
        error,
    })
}
