//! The runtime over TLS, with a certificate generated in the test.

use std::sync::Arc;
use std::time::Duration;

use rpc_core::tls::{ClientTls, rustls};
use rpc_core::{Client, ClientConfig, RpcError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Counters, test_server};

/// A self-signed certificate for `localhost` and its key.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    (generated.cert.der().clone(), key.into())
}

fn client_trusting(cert: Option<&CertificateDer<'static>>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(cert) = cert {
        roots.add(cert.clone()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn calls_work_over_tls_and_untrusted_or_plain_peers_are_refused() {
    let (cert, key) = certificate();
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let counters = Arc::new(Counters::default());
    let server = test_server(&counters)
        .tls(Arc::new(server_config))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let tls_client = |config: Arc<rustls::ClientConfig>| {
        Client::with_config(
            addr.clone(),
            ClientConfig {
                tls: Some(ClientTls {
                    config,
                    server_name: "localhost".into(),
                }),
                timeout: Some(Duration::from_secs(2)),
                max_retries: 0,
                ..ClientConfig::default()
            },
        )
    };

    let trusted = tls_client(client_trusting(Some(&cert)));
    let sum: i64 = trusted.call("add", &(2i64, 40i64)).await.unwrap();
    assert_eq!(sum, 42);
    let blob: Vec<u8> = (0..2_000_000u32).map(|i| (i % 249) as u8).collect();
    let echoed: Vec<u8> = trusted.call("echo", &blob).await.unwrap();
    assert!(echoed == blob);

    // A client that does not trust the certificate refuses the server.
    let untrusting = tls_client(client_trusting(None));
    let error = untrusting
        .call::<_, i64>("add", &(1i64, 1i64))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Unavailable(message) if message.contains("TLS")),
        "{error:?}"
    );

    // A plain-TCP peer gets nothing it can use, and the server goes on.
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(&[0, 0, 0, 13, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut reply)).await;
    assert!(
        !reply.starts_with(&[0, 0, 0]),
        "no protocol frame in the clear"
    );

    let sum: i64 = trusted.call("add", &(1i64, 1i64)).await.unwrap();
    assert_eq!(sum, 2);
    server.shutdown(Duration::from_secs(1)).await;
}
