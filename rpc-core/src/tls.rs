//! TLS for clients and servers, with rustls (enabled by the `tls` feature).
//!
//! A server is given a [`rustls::ServerConfig`] with
//! [`Server::tls`](crate::Server::tls); a client a [`ClientTls`] in
//! [`ClientConfig::tls`](crate::ClientConfig::tls). The protocol is the same
//! inside the TLS stream; the TLS handshake counts against the server's
//! handshake timeout.

use std::sync::Arc;

pub use tokio_rustls::rustls;

/// How a client connects with TLS.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The rustls configuration: trusted roots, client certificate if any.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must be valid for, such as
    /// `"rpc.example.com"` or `"localhost"`.
    pub server_name: String,
}
