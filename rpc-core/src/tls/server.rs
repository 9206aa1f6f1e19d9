//! The server's side of TLS: its certificate, replaceable while it runs,
//! and what a client certificate stands for.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::server::WebPkiClientVerifier;

use super::TlsError;
use super::files::{self, Stamp};
use super::subject::subject_of;

/// A server's TLS: the rustls configuration new connections are accepted
/// with, which can be replaced (a renewed certificate) without a restart,
/// and how client certificates map to roles.
///
/// Clones share the configuration: keep one to [`reload`](Self::reload)
/// after giving another to [`ServerBuilder::tls`](crate::ServerBuilder::tls).
///
/// # Client certificates and roles
///
/// With a client CA (mutual TLS) a client certificate stands for a role,
/// as a token does, following the convention Kubernetes uses for its
/// users: the subject's common name (`CN`) names the holder, and each
/// organisation (`O`) of the subject is a role granted. A certificate with
/// no `O` gets the [default client roles](Self::with_default_client_roles).
/// A client that presents both a certificate and a token gets the roles of
/// both; a certificate lets a client in without a token even where the
/// server has tokens.
///
/// # Examples
///
/// ```no_run
/// use rpc_core::tls::{ServerTls, ServerTlsFiles};
///
/// # #[allow(dead_code)]
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = ServerTls::from_files(ServerTlsFiles {
///     cert: "server.pem".into(),
///     key: "server.key".into(),
///     client_ca: None,
/// })?;
/// let server = rpc_core::Server::builder()
///     .tls(tls.clone())
///     .bind("0.0.0.0:7070")
///     .await?;
/// // Later, when the certificate was renewed:
/// tls.reload()?;
/// # drop(server);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ServerTls {
    shared: Arc<Reloadable>,
    default_roles: Arc<[String]>,
}

#[derive(Debug)]
struct Reloadable {
    /// What the next connection is accepted with.
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// Where the configuration was read from, if from files.
    files: Option<ServerTlsFiles>,
    /// The files' stamp when last read, successfully or not.
    stamp: Mutex<Option<Stamp>>,
}

/// Files a [`ServerTls`] is read from, and read again on
/// [`ServerTls::reload`].
#[derive(Clone, Debug)]
pub struct ServerTlsFiles {
    /// PEM file of the server's certificate chain, its own certificate
    /// first.
    pub cert: PathBuf,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file of the CA that signs client certificates. With it, every
    /// client must present a certificate that CA signed, and is refused
    /// during the TLS handshake otherwise. The default, `None`, asks
    /// clients for no certificate.
    pub client_ca: Option<PathBuf>,
}

/// Who a verified client certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertifiedPeer {
    /// The subject's common name, if it has exactly one.
    pub(crate) name: Option<String>,
    /// The roles the certificate grants.
    pub(crate) roles: Vec<String>,
    /// Tells holders apart for duplicate suppression: a digest of the name,
    /// or of the certificate if it has none.
    pub(crate) principal: [u8; 8],
}

impl ServerTls {
    /// Accepts connections with `config`, fixed until
    /// [`replace`](Self::replace)d.
    pub fn new(config: Arc<rustls::ServerConfig>) -> ServerTls {
        ServerTls {
            shared: Arc::new(Reloadable {
                current: RwLock::new(config),
                files: None,
                stamp: Mutex::new(None),
            }),
            default_roles: Arc::from([]),
        }
    }

    /// Reads the certificate chain, the key and the client CA, if any.
    ///
    /// # Errors
    ///
    /// A file cannot be read or holds no usable PEM section, or the key
    /// does not belong to the certificate.
    pub fn from_files(files: ServerTlsFiles) -> Result<ServerTls, TlsError> {
        let stamp = files.stamp();
        let config = files.load()?;
        Ok(ServerTls {
            shared: Arc::new(Reloadable {
                current: RwLock::new(config),
                files: Some(files),
                stamp: Mutex::new(Some(stamp)),
            }),
            default_roles: Arc::from([]),
        })
    }

    /// Grants `roles` to clients whose certificate names no organisation.
    /// The default grants none: such clients may call only functions open
    /// to every caller.
    #[must_use]
    pub fn with_default_client_roles<I, S>(mut self, roles: I) -> ServerTls
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.default_roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Accepts new connections with `config` from now on; connections
    /// already open go on as they are.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// Reads the files again and, if they are good, accepts new connections
    /// with them. Connections already open go on as they are.
    ///
    /// # Errors
    ///
    /// The new files are broken (unreadable, no certificate, a key that
    /// does not match): the configuration in use is kept. Also an error if
    /// this `ServerTls` was not made from files.
    pub fn reload(&self) -> Result<(), TlsError> {
        let files = self.shared.files.as_ref().ok_or(TlsError::NotFromFiles)?;
        *self.lock_stamp() = Some(files.stamp());
        let config = files.load()?;
        self.replace(config);
        Ok(())
    }

    /// [`Reload`](Self::reload)s if a file changed (was written, replaced
    /// or re-linked) since it was last read; says whether it did.
    ///
    /// # Errors
    ///
    /// As [`reload`](Self::reload). A broken file is reported once, not on
    /// every check, and read again when it changes again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let files = self.shared.files.as_ref().ok_or(TlsError::NotFromFiles)?;
        let stamp = files.stamp();
        if self.lock_stamp().as_ref() == Some(&stamp) {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// The configuration the next connection is accepted with.
    pub(crate) fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(
            &self
                .shared
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// What the client's certificate chain (verified by rustls) stands
    /// for; `None` without a certificate.
    pub(crate) fn certified_peer(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
    ) -> Option<CertifiedPeer> {
        let leaf = chain?.first()?;
        let subject = subject_of(leaf).unwrap_or_default();
        let roles = if subject.organizations.is_empty() {
            self.default_roles.to_vec()
        } else {
            subject.organizations
        };
        let identity = match &subject.common_name {
            Some(name) => crate::wire::ContentHash::of(format!("certificate:{name}").as_bytes()),
            None => crate::wire::ContentHash::of(leaf),
        };
        let principal = identity.as_bytes().first_chunk().copied().unwrap_or([0; 8]);
        Some(CertifiedPeer {
            name: subject.common_name,
            roles,
            principal,
        })
    }

    fn lock_stamp(&self) -> std::sync::MutexGuard<'_, Option<Stamp>> {
        self.shared
            .stamp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl From<Arc<rustls::ServerConfig>> for ServerTls {
    fn from(config: Arc<rustls::ServerConfig>) -> ServerTls {
        ServerTls::new(config)
    }
}

impl ServerTlsFiles {
    fn stamp(&self) -> Stamp {
        let mut paths = vec![&self.cert, &self.key];
        paths.extend(&self.client_ca);
        Stamp::of(&paths)
    }

    fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = files::certificates(&self.cert)?;
        let key = files::private_key(&self.key)?;
        let builder = rustls::ServerConfig::builder_with_provider(super::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Versions)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(files::roots(ca)?);
                let verifier = WebPkiClientVerifier::builder(roots)
                    .build()
                    .map_err(|error| TlsError::Pem {
                        path: ca.clone(),
                        reason: format!("cannot verify clients with it: {error}"),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Rustls {
                what: "the server certificate and key",
                source,
            })?;
        Ok(Arc::new(config))
    }
}
