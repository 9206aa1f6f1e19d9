//! The client's side of TLS: which servers it trusts, the name it expects,
//! and the certificate it shows when a server asks for one.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use super::{TlsError, files};

/// How a client connects with TLS.
///
/// # Examples
///
/// ```no_run
/// use rpc_core::tls::{ClientTls, ClientTlsFiles};
/// use rpc_core::{Client, ClientConfig};
///
/// # fn main() -> Result<(), rpc_core::tls::TlsError> {
/// let tls = ClientTls::from_files(&ClientTlsFiles {
///     ca: Some("ca.pem".into()),
///     ..ClientTlsFiles::default()
/// })?;
/// let client = Client::with_config(
///     "tls://worker-1.example.com:7070",
///     ClientConfig { tls: Some(tls), ..ClientConfig::default() },
/// );
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The rustls configuration: trusted roots, client certificate if any.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must be valid for, such as
    /// `"rpc.example.com"`. The default, `None`, is the host of the address
    /// dialled (a DNS name or an IP address), so one configuration serves a
    /// pool of many servers.
    pub server_name: Option<String>,
}

/// Files a [`ClientTls`] is read from.
#[derive(Clone, Debug, Default)]
pub struct ClientTlsFiles {
    /// PEM file of the CA certificates to trust. The default, `None`, trusts
    /// the operating system's roots.
    pub ca: Option<PathBuf>,
    /// PEM file of this client's certificate chain, for servers that ask
    /// for one (mutual TLS). The default is none.
    pub cert: Option<PathBuf>,
    /// PEM file of the key of [`cert`](Self::cert).
    pub key: Option<PathBuf>,
    /// The name servers' certificates must be valid for. The default, `None`,
    /// is the host of each address dialled.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Connects with `config`, expecting each server's certificate to name
    /// the host it was dialled by.
    pub fn new(config: Arc<rustls::ClientConfig>) -> ClientTls {
        ClientTls {
            config,
            server_name: None,
        }
    }

    /// Expects every server's certificate to be valid for `name` instead of
    /// the host dialled.
    #[must_use]
    pub fn with_server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    /// Reads the CA bundle (or takes the system's roots) and the client
    /// certificate and key, if given.
    ///
    /// # Errors
    ///
    /// A file cannot be read or holds no usable PEM section, only one of
    /// `cert` and `key` is given, or the key does not belong to the
    /// certificate.
    pub fn from_files(files: &ClientTlsFiles) -> Result<ClientTls, TlsError> {
        let roots = match &files.ca {
            Some(ca) => files::roots(ca)?,
            None => files::system_roots()?,
        };
        let builder = rustls::ClientConfig::builder_with_provider(super::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Versions)?
            .with_root_certificates(roots);
        let config = match (&files.cert, &files.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(files::certificates(cert)?, files::private_key(key)?)
                .map_err(|source| TlsError::Rustls {
                    what: "the client certificate and key",
                    source,
                })?,
            _ => return Err(TlsError::CertWithoutKey),
        };
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: files.server_name.clone(),
        })
    }

    /// The name `addr`'s certificate must be valid for.
    pub(crate) fn name_for(&self, addr: &str) -> Result<ServerName<'static>, String> {
        let name = match &self.server_name {
            Some(name) => name.as_str(),
            None => host_of(addr),
        };
        ServerName::try_from(name.to_owned()).map_err(|_| {
            format!("{name:?} is not a DNS name or IP address to check a certificate against")
        })
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
pub(crate) fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match addr.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, _)) if !host.contains(':') => host,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_address_without_its_port() {
        assert_eq!(host_of("worker-1.example.com:7070"), "worker-1.example.com");
        assert_eq!(host_of("10.0.0.5:7070"), "10.0.0.5");
        assert_eq!(host_of("[::1]:7070"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
