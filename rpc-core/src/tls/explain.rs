//! What a failed TLS connection means, in words that say what to do.
//!
//! rustls reports failures as protocol terms (`UnknownIssuer`,
//! `AlertReceived(CertificateRequired)`, `InvalidContentType`); a person
//! setting up workers needs to hear which side is wrong and which flag or
//! file fixes it.

use std::io;

use tokio_rustls::rustls::{AlertDescription, CertificateError, Error, InvalidMessage};

/// Explains why the TLS connection to `server` failed, if `error` is a TLS
/// failure; `name` is the name its certificate was checked against.
/// `in_handshake`: the TLS handshake itself failed, so an early close is
/// about TLS too.
pub(crate) fn client_failure(
    error: &io::Error,
    server: &str,
    name: &str,
    in_handshake: bool,
) -> Option<String> {
    if in_handshake && error.kind() == io::ErrorKind::UnexpectedEof {
        return Some(format!(
            "{server} closed the connection during the TLS handshake: it may not speak TLS, \
             or refused this client"
        ));
    }
    let error = error.get_ref()?.downcast_ref::<Error>()?;
    Some(match error {
        Error::InvalidCertificate(certificate) => server_certificate(certificate, server, name),
        Error::InvalidMessage(InvalidMessage::InvalidContentType)
        | Error::InvalidMessage(InvalidMessage::MessageTooLarge)
        | Error::InvalidMessage(InvalidMessage::UnknownProtocolVersion) => format!(
            "{server} answered in plaintext, not TLS: it does not have TLS turned on; connect \
             without TLS (no --tls, no tls:// address), or give the server a certificate \
             (--tls-cert and --tls-key)"
        ),
        Error::AlertReceived(alert) => alert_received(*alert, server),
        Error::NoCertificatesPresented => {
            format!("{server} presented no certificate")
        }
        other => format!("TLS with {server} failed: {other}"),
    })
}

/// Why the server's certificate was not accepted.
fn server_certificate(error: &CertificateError, server: &str, name: &str) -> String {
    match error {
        CertificateError::UnknownIssuer => format!(
            "the certificate of {server} is not signed by a CA this client trusts: pass the CA \
             that signed it with --tls-ca (or ClientTls::from_files)"
        ),
        CertificateError::NotValidForName => format!(
            "the certificate of {server} is not valid for the name {name}: connect by a name \
             the certificate lists, or say which with --tls-server-name"
        ),
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "the certificate of {server} is not valid for the name {name} (it is for {}): \
             connect by one of those names, or say which with --tls-server-name",
            presented
                .iter()
                .map(|name| plain_name(name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
            "the certificate of {server} has expired: the server needs a new one \
             (worker serve reloads it on SIGHUP)"
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("the certificate of {server} is not valid yet: check both machines' clocks")
        }
        CertificateError::Revoked => format!("the certificate of {server} has been revoked"),
        other => format!("the certificate of {server} was refused: {other}"),
    }
}

/// `localhost` out of rustls' `DnsName("localhost")`, `10.0.0.1` out of
/// `IpAddress(10.0.0.1)`; anything else as it is.
fn plain_name(presented: &str) -> &str {
    let inner = presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(presented);
    inner.trim_matches('"')
}

/// What an alert from the server says about this client.
fn alert_received(alert: AlertDescription, server: &str) -> String {
    match alert {
        AlertDescription::CertificateRequired => format!(
            "{server} requires a client certificate: pass one with --tls-cert and --tls-key"
        ),
        AlertDescription::UnknownCA => format!(
            "{server} does not trust the CA that signed this client's certificate: use a \
             certificate signed by the CA the server names in --tls-client-ca"
        ),
        AlertDescription::CertificateExpired => {
            format!("{server} refused this client's certificate as expired: renew it")
        }
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateRevoked
        | AlertDescription::CertificateUnknown
        | AlertDescription::AccessDenied => {
            format!("{server} refused this client's certificate ({alert:?})")
        }
        AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure => {
            format!("{server} and this client share no TLS version or cipher suite ({alert:?})")
        }
        other => format!("{server} ended the TLS handshake ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explained(error: Error) -> String {
        client_failure(
            &io::Error::new(io::ErrorKind::InvalidData, error),
            "w1:7070",
            "w1",
            false,
        )
        .unwrap_or_default()
    }

    #[test]
    fn each_failure_says_what_to_do() {
        assert!(
            explained(Error::InvalidCertificate(CertificateError::UnknownIssuer))
                .contains("--tls-ca")
        );
        assert!(
            explained(Error::InvalidCertificate(CertificateError::NotValidForName))
                .contains("--tls-server-name")
        );
        assert!(
            explained(Error::InvalidCertificate(CertificateError::Expired)).contains("expired")
        );
        assert!(
            explained(Error::InvalidMessage(InvalidMessage::InvalidContentType))
                .contains("plaintext")
        );
        assert!(
            explained(Error::AlertReceived(AlertDescription::CertificateRequired))
                .contains("--tls-cert")
        );
        assert!(
            explained(Error::AlertReceived(AlertDescription::UnknownCA))
                .contains("--tls-client-ca")
        );
        let other = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(client_failure(&other, "w1:7070", "w1", true), None);
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert!(client_failure(&eof, "w1:7070", "w1", true).is_some());
        assert_eq!(client_failure(&eof, "w1:7070", "w1", false), None);
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(10.0.0.1)"), "10.0.0.1");
    }
}
