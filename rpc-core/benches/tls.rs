//! TLS against plaintext, in the same run and over loopback TCP: the same
//! server and calls, once through rustls (the `ring` provider, TLS 1.3,
//! AES-128-GCM as `rpc_core::tls::crypto_provider` prefers) and once in the
//! clear; and rustls alone, moving the same bytes between two connections in
//! memory: the floor under TLS.
//!
//! Measures sequential round trips of a 64-byte call (p50, p99: TLS minus
//! plaintext, in microseconds), pipelined calls (1 connection x 128 in
//! flight) and a 16 MiB raw payload echoed (both ways), each also as a
//! ratio. Rounds alternate between the two so both see the same drifts of
//! the machine; medians are reported.
//!
//! Run with `cargo bench -p rpc-core --features tls --bench tls`.

// A bench panics on a broken setup; that is the right report.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rpc_core::tls::{ClientTls, rustls};
use rpc_core::{
    CallOptions, Client, ClientConfig, Context, FunctionOptions, RemoteError, Server, ServerConfig,
};
use tokio::sync::Semaphore;

const SMALL: usize = 64;
const LATENCY_CALLS: usize = 10_000;
const LATENCY_ROUNDS: usize = 10;
const PIPELINED_CALLS: usize = 100_000;
const PIPELINED_IN_FLIGHT: usize = 128;
const ROUNDS: usize = 5;
const BULK: usize = 16 << 20;
const BULK_PER_ROUND: usize = 4;

/// A self-signed certificate for `localhost`, valid until 2126, made with
/// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
/// -days 36500 -subj /CN=localhost -addext subjectAltName=DNS:localhost
/// -addext basicConstraints=critical,CA:FALSE` (the key in PKCS#8). Fixed
/// here so that the bench needs no certificate generator.
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBkTCCATigAwIBAgIUYKa6TA2VTf0yJDYHfr4xU2VowQcwCgYIKoZIzj0EAwIw\nFDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNzE5MDA0N1oYDzIxMjYxMTAz\nMTkwMDQ3WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\nPQMBBwNCAARMN/9cHeb1mR4NPBS1ic4wokrNC47IXxxLXcfSh4mLHMICj8MpYFSL\nB48gHJVYaiL6O/m/VOA+DONbVCXeVUdso2YwZDAdBgNVHQ4EFgQUPZO3Vdhu+dSv\niAhsALCqUnZNWG0wHwYDVR0jBBgwFoAUPZO3Vdhu+dSviAhsALCqUnZNWG0wFAYD\nVR0RBA0wC4IJbG9jYWxob3N0MAwGA1UdEwEB/wQCMAAwCgYIKoZIzj0EAwIDRwAw\nRAIgIDri6t47mM3BxGsh4ceMHLzz6C/9CD7JKeTRMcYCCusCIFSkuUnZg2ARSehW\np+J8FOSmaH9B/y4GHCX1k8qgQorN\n-----END CERTIFICATE-----";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5CFOkdhupPMWms0v\nLeB4ficlLlFzCljswLyFy1fqqoWhRANCAARMN/9cHeb1mR4NPBS1ic4wokrNC47I\nXxxLXcfSh4mLHMICj8MpYFSLB48gHJVYaiL6O/m/VOA+DONbVCXeVUds\n-----END PRIVATE KEY-----";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(CERT_PEM.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes()).unwrap();
    let server_tls = Arc::new(
        rustls::ServerConfig::builder_with_provider(rpc_core::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap(),
    );
    let plain = server(None).await;
    let secure = server(Some(Arc::clone(&server_tls))).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(rpc_core::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let client_tls = ClientTls::new(Arc::clone(&client_config)).with_server_name("localhost");
    let plain_client = client(&plain, None);
    let tls_client = client(&secure, Some(client_tls));
    println!("TLS (rustls, ring) vs plaintext, same server and calls, loopback TCP");

    let args = Bytes::from(vec![7u8; SMALL]);
    let (a, b, c) = (plain_client.clone(), tls_client.clone(), args.clone());
    tokio::spawn(async move { latency(&a, &b, &c).await })
        .await
        .unwrap();

    let (mut plain_rates, mut tls_rates) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain_rates.push(pipelined(&plain_client, &args).await);
        tls_rates.push(pipelined(&tls_client, &args).await);
    }
    let (plain_rate, tls_rate) = (median(&mut plain_rates), median(&mut tls_rates));
    println!(
        "pipelined 1 conn x {PIPELINED_IN_FLIGHT} in flight   tls {tls_rate:>9.0} calls/s | plaintext {plain_rate:>9.0} calls/s | ratio {:.2}x",
        tls_rate / plain_rate
    );

    let payload = Bytes::from(vec![0x5au8; BULK]);
    let (mut plain_bulk, mut tls_bulk) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain_bulk.push(bulk(&plain_client, &payload).await);
        tls_bulk.push(bulk(&tls_client, &payload).await);
    }
    let (plain_bulk, tls_bulk) = (median(&mut plain_bulk), median(&mut tls_bulk));
    println!(
        "bulk 16 MiB raw, both ways       tls {:>7.2} GiB/s | plaintext {:>7.2} GiB/s | ratio {:.2}x",
        tls_bulk / f64::from(1 << 30),
        plain_bulk / f64::from(1 << 30),
        tls_bulk / plain_bulk
    );
    // The floor under TLS: the same bytes through rustls alone, from one
    // connection to another in memory (records sealed, framed, opened; no
    // socket, no rpc-core). Every byte counted above (there, and back) goes
    // through that once; with both cores busy moving the plaintext already,
    // the two can at best share that work on top of it.
    let record_rate = rustls_in_memory_rate(client_config, server_tls);
    let best = 1.0 / (1.0 / plain_bulk + 1.0 / (2.0 * record_rate));
    println!(
        "  rustls alone, in memory        {:>7.2} GiB/s per core: TLS on both cores, at best {:.2} GiB/s here, {:.2}x plaintext; measured {:.2}x of that",
        record_rate / f64::from(1 << 30),
        best / f64::from(1 << 30),
        best / plain_bulk,
        tls_bulk / best
    );
    plain.shutdown(Duration::from_secs(1)).await;
    secure.shutdown(Duration::from_secs(1)).await;
}

async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let mut server = Server::builder()
        .config(ServerConfig {
            max_in_flight: 1024,
            max_payload_len: 64 << 20,
            ..ServerConfig::default()
        })
        .function("echo", |bytes: Bytes| async move { Ok::<_, ()>(bytes) })
        .raw_function(
            "echo_raw",
            FunctionOptions::new(),
            |_: Context, bytes: Bytes| async move { Ok::<_, RemoteError>(bytes) },
        );
    if let Some(tls) = tls {
        server = server.tls(tls);
    }
    server.bind("127.0.0.1:0").await.expect("binds")
}

fn client(server: &Server, tls: Option<ClientTls>) -> Client {
    Client::with_config(
        server.local_addr().to_string(),
        ClientConfig {
            tls,
            max_payload_len: 64 << 20,
            ..ClientConfig::default()
        },
    )
}

/// Sequential round trips, alternating rounds of plaintext and TLS.
async fn latency(plain: &Client, tls: &Client, args: &Bytes) {
    let _: Bytes = plain.call("echo", args).await.unwrap();
    let _: Bytes = tls.call("echo", args).await.unwrap();
    let (mut plain_times, mut tls_times) = (Vec::new(), Vec::new());
    for _ in 0..LATENCY_ROUNDS {
        for (client, times) in [(plain, &mut plain_times), (tls, &mut tls_times)] {
            for _ in 0..LATENCY_CALLS / LATENCY_ROUNDS {
                let started = Instant::now();
                let _: Bytes = client.call("echo", args).await.unwrap();
                times.push(started.elapsed());
            }
        }
    }
    for (name, quantile) in [("p50", 0.50), ("p99", 0.99)] {
        let (t, p) = (
            percentile(&mut tls_times, quantile),
            percentile(&mut plain_times, quantile),
        );
        println!(
            "round trip {name}, 64-byte call     tls {:>7.1} us | plaintext {:>7.1} us | +{:.1} us, ratio {:.2}x",
            micros(t),
            micros(p),
            micros(t) - micros(p),
            t.as_secs_f64() / p.as_secs_f64()
        );
    }
}

/// Calls per second with `PIPELINED_IN_FLIGHT` calls in flight on one
/// connection.
async fn pipelined(client: &Client, args: &Bytes) -> f64 {
    let slots = Arc::new(Semaphore::new(PIPELINED_IN_FLIGHT));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PIPELINED_CALLS {
        let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
        let (client, args) = (client.clone(), args.clone());
        tasks.spawn(async move {
            let _: Bytes = client.call("echo", &args).await.unwrap();
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    PIPELINED_CALLS as f64 / started.elapsed().as_secs_f64()
}

/// Bytes per second of a 16 MiB raw payload echoed, counting both ways.
async fn bulk(client: &Client, payload: &Bytes) -> f64 {
    let started = Instant::now();
    for _ in 0..BULK_PER_ROUND {
        let echoed = client
            .call_raw("echo_raw", payload.clone(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(echoed.len(), payload.len());
    }
    (2 * payload.len() * BULK_PER_ROUND) as f64 / started.elapsed().as_secs_f64()
}

/// Bytes per second one core moves through rustls from a client
/// connection to a server connection in memory: written as plaintext,
/// sealed into records, handed over, opened and read (AES-128-GCM, as the
/// suite the two configurations agree on). The best of `ROUNDS`.
fn rustls_in_memory_rate(
    client_config: Arc<rustls::ClientConfig>,
    server_config: Arc<rustls::ServerConfig>,
) -> f64 {
    use std::io::{Read, Write};
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client_config, name).unwrap();
    let mut server = rustls::ServerConnection::new(server_config).unwrap();
    let mut wire = Vec::new();
    // The handshake, in memory.
    while client.is_handshaking() || server.is_handshaking() {
        wire.clear();
        client.write_tls(&mut wire).unwrap();
        server.read_tls(&mut wire.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        wire.clear();
        server.write_tls(&mut wire).unwrap();
        client.read_tls(&mut wire.as_slice()).unwrap();
        client.process_new_packets().unwrap();
    }
    let piece = vec![0x5au8; 64 << 10];
    let mut received = vec![0u8; 64 << 10];
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut moved = 0;
        while moved < BULK {
            client.writer().write_all(&piece).unwrap();
            wire.clear();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let mut records = wire.as_slice();
            while !records.is_empty() {
                server.read_tls(&mut records).unwrap();
                server.process_new_packets().unwrap();
                while let Ok(n) = server.reader().read(&mut received) {
                    if n == 0 {
                        break;
                    }
                    moved += n;
                }
            }
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    BULK as f64 / best
}

fn percentile(times: &mut [Duration], quantile: f64) -> Duration {
    times.sort_unstable();
    let index = ((times.len() - 1) as f64 * quantile).round() as usize;
    times[index]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
