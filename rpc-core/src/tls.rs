//! TLS for clients and servers, with rustls and the `ring` provider
//! (enabled by the `tls` feature).
//!
//! A server is given a [`ServerTls`] with [`ServerBuilder::tls`](crate::ServerBuilder::tls);
//! a client a [`ClientTls`] in [`ClientConfig::tls`](crate::ClientConfig::tls).
//! The protocol is the same inside the TLS stream; the TLS handshake counts
//! against the server's handshake timeout.
//!
//! # Plaintext and TLS on the wrong ends
//!
//! A server with TLS that receives plaintext (anything but a TLS handshake
//! record as the first byte) answers with a protocol `Error` frame in the
//! clear saying that it speaks TLS only, and closes; a server without TLS
//! that receives a TLS handshake answers that it speaks plaintext. A
//! client of this crate turns either into an error that says which side
//! lacks TLS. Nothing else is ever sent in the clear.
//!
//! # Tokens and plaintext
//!
//! A client refuses to send its token over a plaintext connection to an
//! address outside loopback, unless
//! [`ClientConfig::insecure_plaintext`](crate::ClientConfig::insecure_plaintext)
//! says to.

use std::path::PathBuf;
use std::sync::Arc;

pub use tokio_rustls::rustls;

mod client;
pub(crate) mod explain;
mod files;
mod server;
mod subject;

pub(crate) use client::host_of;
pub use client::{ClientTls, ClientTlsFiles};
pub(crate) use server::CertifiedPeer;
pub use server::{ServerTls, ServerTlsFiles};

/// The cryptography the configurations of this module use: rustls' `ring`
/// provider, with the TLS 1.3 suites in the order AES-128-GCM, AES-256-GCM,
/// ChaCha20-Poly1305 (then TLS 1.2's). AES-128-GCM goes first because it is
/// about half again as fast as AES-256-GCM where the CPU has AES
/// instructions, and bulk transfers are bound by it; it is the suite every
/// TLS 1.3 implementation must support. Use it for configurations of your
/// own to get the same.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
            _ => 3,
        });
    Arc::new(provider)
}

/// Bytes of ciphertext read from the socket at once under TLS. rustls asks
/// for 4 KiB at a time; without a buffer beneath it, a 16 MiB payload costs
/// some 4,000 reads from the socket.
pub(crate) const SOCKET_READ_BUFFER: usize = 32 << 10;

/// Certificates, keys or CA bundles could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read: check the path and its permissions.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate or key, most often because the key
    /// is not the certificate's.
    #[error("{what} cannot be used")]
    Rustls {
        /// What was refused.
        what: &'static str,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// A client certificate was given without its key, or a key without a
    /// certificate: give both.
    #[error("a client certificate needs both --tls-cert and --tls-key")]
    CertWithoutKey,
    /// No CA file was given and the operating system offers no trusted
    /// roots: give the CA with `--tls-ca`.
    #[error("no CA given and the system has no trusted roots ({0}); give one with --tls-ca")]
    NoSystemRoots(String),
    /// The crypto provider supports none of the TLS versions asked for.
    #[error("no TLS version is available: {0}")]
    Versions(#[source] rustls::Error),
    /// [`ServerTls::reload`] on a configuration not made from files.
    #[error("this TLS configuration was not read from files, so it cannot be reloaded")]
    NotFromFiles,
}
