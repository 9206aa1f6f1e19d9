//! The runtime over TLS, with certificates made by rcgen in the test: calls,
//! every failure explained, plaintext and TLS on the wrong ends, client
//! certificates standing for roles, rotation under load, hostile bytes
//! inside TLS, and TLS end to end through a supernode.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::relay::{Supernode, SupernodeConfig};
use rpc_core::tls::{ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles, rustls};
use rpc_core::wire::{Frame, FrameCodec, Hello, Limits, Message};
use rpc_core::{Client, ClientConfig, PeerRole, RpcError, Server};
use tokio::io::AsyncWriteExt;

use crate::pki::{Ca, Leaf, scratch_dir, write_atomically};
use crate::support::{Counters, dial_for, plain_supernode, test_server};

/// A rustls client configuration trusting `ca`, showing `cert` if given.
fn trusting(ca: &Ca, cert: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    Arc::new(match cert {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.cert.clone()], leaf.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// A client of `addr` with TLS `tls` (or none), giving up after 10 s.
fn client(addr: &str, tls: Option<ClientTls>) -> Client {
    Client::with_config(
        addr,
        ClientConfig {
            tls,
            timeout: Some(Duration::from_secs(10)),
            ..ClientConfig::default()
        },
    )
}

/// The test server with TLS `tls`, on a free loopback port.
async fn tls_server(tls: impl Into<ServerTls>) -> Server {
    let counters = Arc::new(Counters::default());
    test_server(&counters)
        .tls(tls)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

/// A server configuration with `leaf` and no client certificates.
fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert.clone()], leaf.key())
            .unwrap(),
    )
}

/// A server TLS configuration from files in `dir`: a certificate for
/// 127.0.0.1 signed by `ca`, and client certificates required, signed by
/// `clients_ca`.
fn requiring_client_certificates(ca: &Ca, clients_ca: &Ca, dir: &std::path::Path) -> ServerTls {
    let (cert, key) = ca.server(&["127.0.0.1"]).write(dir, "server");
    let client_ca = dir.join("clients-ca.pem");
    write_atomically(&client_ca, &clients_ca.pem());
    ServerTls::from_files(ServerTlsFiles {
        cert,
        key,
        client_ca: Some(client_ca),
    })
    .unwrap()
}

/// The error of one `add` call, which must fail well before its deadline:
/// these failures are not worth retrying.
async fn failure(client: &Client) -> RpcError {
    tokio::time::timeout(
        Duration::from_secs(5),
        client.call::<_, i64>("add", &(1i64, 1i64)),
    )
    .await
    .expect("a TLS failure is reported at once, not retried until the deadline")
    .unwrap_err()
}

#[tokio::test]
async fn calls_work_over_tls_with_the_host_dialled_as_the_name() {
    let ca = Ca::new("test CA");
    let server = tls_server(server_config(&ca.server(&["localhost", "127.0.0.1"]))).await;
    let port = server.local_addr().port();

    // The name checked is the host dialled: an IP address here...
    let by_ip = client(
        &format!("127.0.0.1:{port}"),
        Some(ClientTls::new(trusting(&ca, None))),
    );
    let sum: i64 = by_ip.call("add", &(2i64, 40i64)).await.unwrap();
    assert_eq!(sum, 42);
    let blob: Vec<u8> = (0..2_000_000u32).map(|i| (i % 249) as u8).collect();
    let echoed: Vec<u8> = by_ip.call("echo", &blob).await.unwrap();
    assert!(echoed == blob);

    // ... a DNS name there, and `tls://` reads as well.
    let by_name = client(
        &format!("tls://localhost:{port}"),
        Some(ClientTls::new(trusting(&ca, None))),
    );
    let sum: i64 = by_name.call("add", &(1i64, 2i64)).await.unwrap();
    assert_eq!(sum, 3);

    // A tls:// address without a TLS configuration is an error, not a
    // silent plaintext connection.
    let error = failure(&client(&format!("tls://127.0.0.1:{port}"), None)).await;
    assert!(
        matches!(&error, RpcError::Tls(m) if m.contains("no TLS configuration")),
        "{error}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn each_certificate_failure_says_what_to_do() {
    let ca = Ca::new("test CA");
    let good = tls_server(server_config(&ca.server(&["127.0.0.1"]))).await;
    let addr = good.local_addr().to_string();

    // A client that trusts another CA.
    let stranger = Ca::new("another CA");
    let error = failure(&client(
        &addr,
        Some(ClientTls::new(trusting(&stranger, None))),
    ))
    .await;
    assert!(
        matches!(&error, RpcError::Tls(m) if m.contains("--tls-ca")),
        "{error}"
    );

    // A name the certificate does not list.
    let tls = ClientTls::new(trusting(&ca, None)).with_server_name("db.example.com");
    let error = failure(&client(&addr, Some(tls))).await;
    assert!(
        matches!(&error, RpcError::Tls(m) if m.contains("--tls-server-name") && m.contains("db.example.com")),
        "{error}"
    );

    // An expired certificate.
    let expired = tls_server(server_config(&ca.expired_server(&["127.0.0.1"]))).await;
    let error = failure(&client(
        &expired.local_addr().to_string(),
        Some(ClientTls::new(trusting(&ca, None))),
    ))
    .await;
    assert!(
        matches!(&error, RpcError::Tls(m) if m.contains("expired")),
        "{error}"
    );

    // The server took none of it badly.
    let fine = client(&addr, Some(ClientTls::new(trusting(&ca, None))));
    assert_eq!(fine.call::<_, i64>("add", &(2i64, 2i64)).await.unwrap(), 4);
    good.shutdown(Duration::from_secs(1)).await;
    expired.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn plaintext_and_tls_on_the_wrong_ends_are_told_so_and_the_servers_go_on() {
    let ca = Ca::new("test CA");
    let tls_only = tls_server(server_config(&ca.server(&["127.0.0.1"]))).await;
    let tls_addr = tls_only.local_addr().to_string();
    let counters = Arc::new(Counters::default());
    let plain = test_server(&counters).bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().to_string();

    // A plaintext client of a TLS server.
    let error = failure(&client(&tls_addr, None)).await;
    assert!(
        matches!(&error, RpcError::Tls(m) if m.contains("TLS only")),
        "{error:?}"
    );
    // A TLS client of a plaintext server.
    let error = failure(&client(
        &plain_addr,
        Some(ClientTls::new(trusting(&ca, None))),
    ))
    .await;
    assert!(
        matches!(&error, RpcError::Tls(m) if m.contains("plaintext")),
        "{error:?}"
    );

    // Both servers serve their own kind as before.
    let tls_client = client(&tls_addr, Some(ClientTls::new(trusting(&ca, None))));
    assert_eq!(
        tls_client
            .call::<_, i64>("add", &(1i64, 1i64))
            .await
            .unwrap(),
        2
    );
    let plain_client = client(&plain_addr, None);
    assert_eq!(
        plain_client
            .call::<_, i64>("add", &(1i64, 2i64))
            .await
            .unwrap(),
        3
    );
    tls_only.shutdown(Duration::from_secs(1)).await;
    plain.shutdown(Duration::from_secs(1)).await;
}

/// What a TLS-only server sends a plaintext opener is, byte for byte, the
/// `error-tls-required` vector of PROTOCOL.md, and nothing more.
#[tokio::test]
async fn a_plaintext_opener_of_a_tls_port_gets_exactly_the_documented_refusal() {
    use tokio::io::AsyncReadExt;
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../vectors/v1.json")).unwrap();
    let hex = vectors["valid"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vector| vector["name"] == "error-tls-required")
        .and_then(|vector| vector["hex"].as_str())
        .unwrap()
        .to_owned();
    let ca = Ca::new("test CA");
    let server = tls_server(server_config(&ca.server(&["127.0.0.1"]))).await;
    let mut plain = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let mut hello = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut FrameCodec::new(),
        Frame::connection(Message::Hello(Hello {
            peer_name: "plain".into(),
            role: PeerRole::Client,
            token: Some("s3cret".into()),
            limits: Limits::default(),
        })),
        &mut hello,
    )
    .unwrap();
    plain.write_all(&hello).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut reply))
        .await
        .expect("the server closes")
        .unwrap();
    let reply: String = reply.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(reply, hex);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn client_certificates_stand_for_roles_and_others_are_refused_in_the_handshake() {
    let ca = Ca::new("test CA");
    let clients_ca = Ca::new("clients CA");
    let dir = scratch_dir("mtls");
    let tls =
        requiring_client_certificates(&ca, &clients_ca, &dir).with_default_client_roles(["client"]);
    let counters = Arc::new(Counters::default());
    // The server has a token too: a certificate lets a client in without it.
    let server = test_server(&counters)
        .token("s3cret", "client")
        .tls(tls)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let holding =
        |leaf: Option<&Leaf>, ca: &Ca| client(&addr, Some(ClientTls::new(trusting(ca, leaf))));

    // O=admin grants admin.
    let admin = holding(Some(&clients_ca.client("ops-1", &["admin"])), &ca);
    let role: Option<String> = admin.call("whoami", &()).await.unwrap();
    assert_eq!(role.as_deref(), Some("admin"));
    let secret: String = admin.call("admin_only", &()).await.unwrap();
    assert_eq!(secret, "secret");

    // No O: the default roles, and nothing more.
    let plain = holding(Some(&clients_ca.client("batch-7", &[])), &ca);
    let role: Option<String> = plain.call("whoami", &()).await.unwrap();
    assert_eq!(role.as_deref(), Some("client"));
    let error = plain
        .call::<_, String>("admin_only", &())
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Forbidden(_)), "{error:?}");

    // No certificate, or one from another CA: refused during TLS.
    let error = failure(&holding(None, &ca)).await;
    assert!(
        matches!(&error, RpcError::Tls(m) if m.contains("requires a client certificate")),
        "{error:?}"
    );
    let error = failure(&holding(Some(&ca.client("intruder", &["admin"])), &ca)).await;
    assert!(
        matches!(&error, RpcError::Tls(m) if m.contains("does not trust")),
        "{error:?}"
    );

    // The files' way: the same, read by ClientTls::from_files.
    let (client_cert, client_key) = clients_ca.client("ops-2", &["admin"]).write(&dir, "ops-2");
    let (ca_file, _) = (dir.join("ca.pem"), ());
    write_atomically(&ca_file, &ca.pem());
    let from_files = ClientTls::from_files(&ClientTlsFiles {
        ca: Some(ca_file),
        cert: Some(client_cert),
        key: Some(client_key),
        server_name: None,
    })
    .unwrap();
    let role: Option<String> = client(&addr, Some(from_files))
        .call("whoami", &())
        .await
        .unwrap();
    assert_eq!(role.as_deref(), Some("admin"));
    server.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_token_is_never_sent_in_plaintext_off_loopback() {
    // 192.0.2.1 is a documentation address: the client refuses before it
    // connects, so nothing is sent to it.
    let with_token = Client::with_config(
        "192.0.2.1:7070",
        ClientConfig {
            token: Some("s3cret".into()),
            ..ClientConfig::default()
        },
    );
    let error = failure(&with_token).await;
    assert!(
        matches!(&error, RpcError::Tls(m) if m.contains("refusing to send the token") && m.contains("--insecure-plaintext")),
        "{error:?}"
    );
    // On loopback a token in plaintext is fine.
    let counters = Arc::new(Counters::default());
    let server = test_server(&counters)
        .token("s3cret", "client")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let local = Client::with_config(
        server.local_addr().to_string(),
        ClientConfig {
            token: Some("s3cret".into()),
            ..ClientConfig::default()
        },
    );
    assert_eq!(local.call::<_, i64>("add", &(1i64, 1i64)).await.unwrap(), 2);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_failing_a_call() {
    let ca = Ca::new("test CA");
    let dir = scratch_dir("rotate");
    let first = ca.server(&["127.0.0.1"]);
    let (cert, key) = first.write(&dir, "server");
    let tls = ServerTls::from_files(ServerTlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: None,
    })
    .unwrap();
    let server = tls_server(tls.clone()).await;
    let addr = server.local_addr().to_string();
    let trust = ClientTls::new(trusting(&ca, None));

    // Load: four tasks, each with a long-lived connection and a new
    // connection (a new TLS handshake) for every other call.
    let stop = Arc::new(tokio::sync::Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for task in 0..4i64 {
        let (addr, trust, stop, calls) = (
            addr.clone(),
            trust.clone(),
            Arc::clone(&stop),
            Arc::clone(&calls),
        );
        load.push(tokio::spawn(async move {
            let kept = client(&addr, Some(trust.clone()));
            let stopped = stop.notified();
            tokio::pin!(stopped);
            for i in 0..100_000i64 {
                let fresh;
                let through = if i % 2 == 0 {
                    &kept
                } else {
                    fresh = client(&addr, Some(trust.clone()));
                    &fresh
                };
                let args = (task, i);
                let sum: i64 = tokio::select! {
                    sum = through.call("add", &args) => sum.expect("no call fails during rotation"),
                    () = &mut stopped => break,
                };
                assert_eq!(sum, task + i);
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let progressed = |at_least: usize| {
        let calls = Arc::clone(&calls);
        async move {
            for _ in 0..500 {
                if calls.load(Ordering::Relaxed) >= at_least {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the load made no progress");
        }
    };
    progressed(100).await;
    assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");

    // A half-written rotation (new certificate, old key) is refused, and
    // the old pair goes on serving.
    let second = ca.server(&["127.0.0.1", "rotated.example"]);
    write_atomically(&cert, &second.cert_pem);
    let error = tls.reload_if_changed().unwrap_err();
    assert!(error.to_string().contains("cannot be used"), "{error}");
    let rotated_name = || {
        client(
            &addr,
            Some(trust.clone().with_server_name("rotated.example")),
        )
    };
    assert!(matches!(failure(&rotated_name()).await, RpcError::Tls(_)));
    let before = calls.load(Ordering::Relaxed);
    progressed(before + 100).await;

    // The key arrives: the next check takes the new pair.
    write_atomically(&key, &second.key_pem);
    assert!(tls.reload_if_changed().unwrap());
    assert_eq!(
        rotated_name()
            .call::<_, i64>("add", &(1i64, 1i64))
            .await
            .unwrap(),
        2
    );

    // A broken file is reported and the pair in use kept.
    write_atomically(&cert, "not a certificate");
    assert!(tls.reload().is_err());
    assert_eq!(
        rotated_name()
            .call::<_, i64>("add", &(2i64, 2i64))
            .await
            .unwrap(),
        4
    );
    let before = calls.load(Ordering::Relaxed);
    progressed(before + 100).await;

    stop.notify_waiters();
    for task in load {
        task.await.expect("no call failed");
    }
    server.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn garbage_in_or_after_the_tls_handshake_is_refused_as_on_plaintext() {
    let ca = Ca::new("test CA");
    let server = tls_server(server_config(&ca.server(&["127.0.0.1"]))).await;
    let addr = server.local_addr();
    let connector = tokio_rustls::TlsConnector::from(trusting(&ca, None));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let hostile = [
        // A frame announcing 4 GiB.
        vec![0xff, 0xff, 0xff, 0xff, 1, 1, 0, 0],
        // A frame of a kind that does not exist.
        vec![0, 0, 0, 13, 1, 0xee, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // Noise.
        (0..600u32).map(|i| (i * 7 + 3).to_le_bytes()[0]).collect(),
    ];
    for bytes in hostile {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = connector.connect(name.clone(), tcp).await.unwrap();
        let mut framed = crate::support::raw_handshake(stream).await;
        framed.get_mut().write_all(&bytes).await.unwrap();
        framed.get_mut().flush().await.unwrap();
        // The server answers with an error or just closes; either way the
        // connection ends.
        let mut ended = false;
        for _ in 0..10 {
            match tokio::time::timeout(Duration::from_secs(5), framed.next()).await {
                Ok(Some(Ok(frame)))
                    if matches!(frame.message, Message::Error(_) | Message::GoAway(_)) => {}
                Ok(Some(Ok(_))) => {}
                Ok(None | Some(Err(_))) => {
                    ended = true;
                    break;
                }
                Err(_) => panic!("the server kept a connection that sent garbage"),
            }
        }
        assert!(ended);
    }
    // Garbage that starts like a TLS handshake, and a handshake that
    // never finishes: closed (the second at the handshake timeout).
    use tokio::io::AsyncReadExt;
    for bytes in [
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8],
        vec![0x16],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let mut reply = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply)).await;
        assert!(
            closed.is_ok(),
            "the server kept a broken TLS handshake open"
        );
    }
    let fine = client(&addr.to_string(), Some(ClientTls::new(trusting(&ca, None))));
    assert_eq!(fine.call::<_, i64>("add", &(3i64, 4i64)).await.unwrap(), 7);
    server.shutdown(Duration::from_secs(1)).await;
}

/// A server with TLS `tls` that listens nowhere, attached as `name` to
/// `supernode` (which listens at `relay_addr`), and the task that opens
/// the connections it asks for.
async fn attached_through(
    supernode: &Supernode,
    relay_addr: &str,
    name: &'static str,
    tls: Arc<rustls::ServerConfig>,
) -> (Server, tokio::task::JoinHandle<()>) {
    let counters = Arc::new(Counters::default());
    let (server, intake) = test_server(&counters).tls(tls).serve_joined().unwrap();
    let dialer = dial_for(supernode, relay_addr, name, intake).await;
    (server, dialer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_runs_end_to_end_through_a_supernode_and_checks_the_workers_name() {
    let ca = Ca::new("test CA");
    // A supernode without TLS of its own: it passes the bytes through.
    let (supernode, relay, relay_addr) = plain_supernode().await;
    let (w1, w1_dialer) = attached_through(
        &supernode,
        &relay_addr,
        "w1",
        server_config(&ca.server(&["w1"])),
    )
    .await;
    let tls = || Some(ClientTls::new(trusting(&ca, None)));
    let through = client(&format!("tls://w1@{relay_addr}"), tls());
    let sum: i64 = through.call("add", &(2i64, 40i64)).await.unwrap();
    assert_eq!(sum, 42);
    let blob: Vec<u8> = (0..2_000_000u32).map(|i| (i % 249) as u8).collect();
    let echoed: Vec<u8> = through.call("echo", &blob).await.unwrap();
    assert!(echoed == blob);
    assert!(
        supernode.relayed_bytes() > 4_000_000,
        "both ways crossed it"
    );

    // A peer attached under a name it holds no certificate for (any
    // holder of the worker role can attach under any name) is refused by
    // the client's certificate check: it cannot pose as that worker.
    let (impostor, impostor_dialer) = attached_through(
        &supernode,
        &relay_addr,
        "w2",
        server_config(&ca.server(&["w3"])),
    )
    .await;
    let error = failure(&client(&format!("tls://w2@{relay_addr}"), tls())).await;
    assert!(matches!(&error, RpcError::Tls(_)), "{error}");
    // Without TLS on the client, a tls:// route is refused before a byte
    // is relayed.
    let error = failure(&client(&format!("tls://w1@{relay_addr}"), None)).await;
    assert!(
        matches!(&error, RpcError::Tls(m) if m.contains("no TLS configuration")),
        "{error}"
    );
    // And the worker is still served.
    let sum: i64 = through.call("add", &(1i64, 1i64)).await.unwrap();
    assert_eq!(sum, 2);
    for dialer in [w1_dialer, impostor_dialer] {
        dialer.abort();
    }
    for server in [w1, impostor, relay] {
        server.shutdown(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_certificate_attaches_to_a_supernode_under_its_name_only() {
    let ca = Ca::new("test CA");
    let clients_ca = Ca::new("clients CA");
    let dir = scratch_dir("supernode-names");
    let tls = requiring_client_certificates(&ca, &clients_ca, &dir);
    let sandbox = worker::Sandbox::new(worker::SandboxConfig {
        concurrency: 1,
        ..worker::SandboxConfig::default()
    })
    .unwrap();
    let supernode = Supernode::new(SupernodeConfig::default());
    let server = worker::add_supernode(worker::worker_server(sandbox), supernode.clone())
        .tls(tls)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let holding = |leaf: &Leaf| {
        worker::wire::SupernodingClient::new(client(
            &addr,
            Some(ClientTls::new(trusting(&ca, Some(leaf)))),
        ))
    };
    // Its certificate names it w1, with the worker role: it attaches as
    // w1...
    let w1 = holding(&clients_ca.client("w1", &["worker"]));
    assert_eq!(w1.dials("w1".into()).await.unwrap(), Vec::<[u8; 16]>::new());
    assert_eq!(supernode.attached(), 1);
    // ... and not as anyone else.
    let error = w1.dials("w2".into()).await.unwrap_err();
    assert!(
        matches!(
            error,
            RpcError::Application(worker::AttachRefused::NotYourName)
        ),
        "{error:?}"
    );
    // Another worker cannot take w1's name, certificate or not.
    let w9 = holding(&clients_ca.client("w9", &["worker"]));
    let error = w9.dials("w1".into()).await.unwrap_err();
    assert!(
        matches!(
            error,
            RpcError::Application(worker::AttachRefused::NotYourName)
        ),
        "{error:?}"
    );
    // A client certificate without the worker role may not attach at all.
    let client_only = holding(&clients_ca.client("w3", &["client"]));
    let error = client_only.dials("w3".into()).await.unwrap_err();
    assert!(matches!(error, RpcError::Forbidden(_)), "{error:?}");
    assert_eq!(supernode.attached(), 1);
    server.shutdown(Duration::from_millis(200)).await;
    let _ = std::fs::remove_dir_all(dir);
}
