//! Reading certificates, keys and CA bundles from PEM files, and telling
//! when those files changed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// The largest PEM file read: a chain of a few certificates is a few KiB.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads a whole PEM file, refusing anything larger than a PEM file can
/// reasonably be.
fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    let failed = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(failed)?.len();
    if len > MAX_PEM_BYTES {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: format!("{len} bytes is too large for a PEM file"),
        });
    }
    std::fs::read(path).map_err(failed)
}

/// Every certificate in a PEM file, leaf first as written; at least one.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "no CERTIFICATE section in it".into(),
        });
    }
    Ok(certificates)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| TlsError::Pem {
        path: path.to_owned(),
        reason: format!("no private key in it ({error})"),
    })
}

/// A store of the CA certificates in a PEM file.
pub(crate) fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path)? {
        roots.add(certificate).map_err(|error| TlsError::Pem {
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {error}"),
        })?;
    }
    Ok(roots)
}

/// The operating system's trusted roots.
pub(crate) fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::NoSystemRoots(
            found
                .errors
                .first()
                .map_or_else(|| "none found".to_owned(), ToString::to_string),
        ));
    }
    Ok(roots)
}

/// What a set of files looked like when last read: a new stamp means one of
/// them was replaced or rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stamp(Vec<Option<(SystemTime, u64, u64)>>);

impl Stamp {
    /// The stamp of `paths` now. Symbolic links are followed, so a
    /// Kubernetes secret volume (whose files are links into a directory
    /// swapped on update) changes its stamp when the secret does.
    pub(crate) fn of(paths: &[&PathBuf]) -> Stamp {
        Stamp(
            paths
                .iter()
                .map(|path| {
                    let metadata = std::fs::metadata(path).ok()?;
                    Some((metadata.modified().ok()?, metadata.len(), inode(&metadata)))
                })
                .collect(),
        )
    }
}

#[cfg(unix)]
fn inode(metadata: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(metadata)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}
