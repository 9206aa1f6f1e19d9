//! The binaries over TLS, with certificates made by rcgen: `submit`, `map`
//! over three workers found through a coordinator, `--join` and
//! `--relay-via`; mutual TLS accepted and refused; each misconfiguration a
//! clear error that leaves the worker serving; tokens kept off plaintext
//! networks; certificate rotation on SIGHUP under load.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::tls::{ClientTls, ClientTlsFiles};
use rpc_core::{Client, ClientConfig};
use worker::{Command, WorkerClient};

use super::pki::{Ca, scratch_dir, write_atomically};
use super::{WorkerProcess, cat, free_addr, run_cli, signal, spawn, stderr_of};

/// The files of a little PKI: a CA, one server certificate for the three
/// loopback hosts, and client certificates.
struct Pki {
    dir: PathBuf,
    ca: Ca,
    ca_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(test: &str) -> Pki {
        let dir = scratch_dir(test);
        let ca = Ca::new("test CA");
        let ca_file = dir.join("ca.pem");
        write_atomically(&ca_file, &ca.pem());
        let (cert, key) = ca
            .server(&["127.0.0.1", "127.0.0.2", "127.0.0.3", "localhost"])
            .write(&dir, "server");
        Pki {
            dir,
            ca,
            ca_file,
            cert,
            key,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// The `cat` module as a file in the PKI's directory.
fn cat_file(pki: &Pki) -> String {
    let path = pki.dir.join("cat.wasm");
    std::fs::write(&path, cat().bytes()).unwrap();
    text(&path)
}

/// TLS trusting the CA in `ca`, checking `server_name` if given (else the
/// host dialled).
fn trusting(ca: &Path, server_name: Option<&str>) -> ClientTls {
    ClientTls::from_files(&ClientTlsFiles {
        ca: Some(ca.to_owned()),
        server_name: server_name.map(str::to_owned),
        ..ClientTlsFiles::default()
    })
    .unwrap()
}

/// A TLS client of a worker at `addr`, with `token` if given.
fn tls_worker_client(pki: &Pki, addr: &str, token: Option<&str>) -> WorkerClient {
    WorkerClient::new(Client::with_config(
        addr,
        ClientConfig {
            token: token.map(str::to_owned),
            tls: Some(trusting(&pki.ca_file, None)),
            timeout: Some(Duration::from_secs(30)),
            ..ClientConfig::default()
        },
    ))
}

/// A client of the worker at `addr` that expects its certificate to name
/// `rotated.example` (only a renewed one does), and does not retry.
fn rotated_client(pki: &Pki, addr: &str) -> WorkerClient {
    WorkerClient::new(Client::with_config(
        addr,
        ClientConfig {
            tls: Some(trusting(&pki.ca_file, Some("rotated.example"))),
            max_reconnects: Some(0),
            ..ClientConfig::default()
        },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_map_join_and_relay_work_over_tls() {
    let pki = Pki::new("cli");
    let (cert, key, ca) = (text(&pki.cert), text(&pki.key), text(&pki.ca_file));
    let coordinator_addr = free_addr("127.0.0.1");
    let _coordinator = spawn(
        &[
            "coordinator",
            "--listen",
            &coordinator_addr,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--token",
            "wtok:worker",
            "--token",
            "ctok:client",
            "--token",
            "atok:admin",
        ],
        "coordinator listening on tls://",
    );
    let join = format!("tls://{coordinator_addr}");
    let hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"].map(free_addr);
    let _workers: Vec<WorkerProcess> = hosts
        .iter()
        .map(|addr| {
            spawn(
                &[
                    "serve",
                    "--listen",
                    addr,
                    "--no-disk-cache",
                    "--concurrency",
                    "2",
                    "--tls-cert",
                    &cert,
                    "--tls-key",
                    &key,
                    "--token",
                    "ctok",
                    "--token",
                    "atok:admin",
                    "--join",
                    &join,
                    "--tls-ca",
                    &ca,
                    "--coordinator-token",
                    "wtok",
                ],
                "listening on tls://",
            )
        })
        .collect();
    let _relayed = spawn(
        &[
            "serve",
            "--relay-via",
            &join,
            "--name",
            "hidden",
            "--no-disk-cache",
            "--tls-ca",
            &ca,
            "--coordinator-token",
            "wtok",
        ],
        "taking jobs through the coordinator",
    );
    let module = cat_file(&pki);

    // submit, straight to one worker.
    let to = format!("tls://{}", hosts[0]);
    let output = run_cli(
        &[
            "submit", "--to", &to, "--tls-ca", &ca, "--token", "ctok", &module,
        ],
        "over TLS\n",
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(output.stdout, b"over TLS\n");

    // map, over the three workers the coordinator lists (they registered
    // over TLS, and are listed as tls:// addresses).
    let lookup = Client::with_config(
        join.clone(),
        ClientConfig {
            token: Some("ctok".into()),
            tls: Some(trusting(&pki.ca_file, None)),
            ..ClientConfig::default()
        },
    );
    let resolver = worker::CoordinatorResolver::new(lookup);
    // The three, and the relayed one.
    assert_eq!(super::registered(&resolver, 4).await, 4);
    let listed = resolver.workers().await.unwrap();
    for host in &hosts {
        let tls_addr = format!("tls://{host}");
        assert!(
            listed
                .iter()
                .any(|entry| entry.registration.addr == tls_addr),
            "{tls_addr} not in {listed:?}"
        );
    }
    let lines: String = (0..60).map(|i| format!("line {i}\n")).collect();
    let output = run_cli(
        &[
            "map",
            "--coordinator",
            &join,
            "--tls-ca",
            &ca,
            "--token",
            "ctok",
            "--lines",
            "--concurrency",
            "12",
            &module,
        ],
        &lines,
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), lines);
    // Every worker ran some of them (asked over TLS, from Rust).
    for addr in &hosts {
        let status = tls_worker_client(&pki, &format!("tls://{addr}"), Some("atok"))
            .status()
            .await
            .unwrap();
        assert!(status.finished > 0, "{addr} ran nothing of the map");
    }

    // relay: a job sent to the coordinator goes to the worker that listens
    // nowhere, over its outbound TLS connection.
    let output = run_cli(
        &[
            "submit", "--to", &join, "--tls-ca", &ca, "--token", "ctok", &module,
        ],
        "relayed\n",
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(output.stdout, b"relayed\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misconfiguration_is_a_clear_error_and_the_worker_goes_on() {
    let pki = Pki::new("refusals");
    let (cert, key, ca) = (text(&pki.cert), text(&pki.key), text(&pki.ca_file));
    let clients = Ca::new("clients CA");
    write_atomically(&pki.dir.join("clients-ca.pem"), &clients.pem());
    let clients_ca = pki.path("clients-ca.pem");
    let mtls_addr = free_addr("127.0.0.1");
    let _mtls = spawn(
        &[
            "serve",
            "--listen",
            &mtls_addr,
            "--no-disk-cache",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &clients_ca,
        ],
        "listening on tls://",
    );
    let expired_addr = free_addr("127.0.0.1");
    let (old_cert, old_key) = pki
        .ca
        .expired_server(&["127.0.0.1"])
        .write(&pki.dir, "expired");
    let _expired = spawn(
        &[
            "serve",
            "--listen",
            &expired_addr,
            "--no-disk-cache",
            "--tls-cert",
            &text(&old_cert),
            "--tls-key",
            &text(&old_key),
        ],
        "listening on tls://",
    );
    let plain_addr = free_addr("127.0.0.1");
    let _plain = spawn(
        &["serve", "--listen", &plain_addr, "--no-disk-cache"],
        "listening on 127.0.0.1",
    );
    let module = cat_file(&pki);
    let (good_cert, good_key) = clients
        .client("batch-1", &["client"])
        .write(&pki.dir, "batch");
    let (bad_cert, bad_key) = pki
        .ca
        .client("intruder", &["admin"])
        .write(&pki.dir, "intruder");
    let (good_cert, good_key) = (text(&good_cert), text(&good_key));
    let submit = |to: &str, extra: &[&str]| {
        let mut args = vec!["submit", "--to", to];
        args.extend_from_slice(extra);
        args.push(&module);
        run_cli(&args, "hi\n")
    };
    let refused = |output: Output, says: &str| {
        assert_eq!(output.status.code(), Some(69), "{}", stderr_of(&output));
        let stderr = stderr_of(&output);
        assert!(stderr.contains(says), "expected {says:?} in {stderr:?}");
    };

    // Mutual TLS: a certificate the client CA signed gets in...
    let output = submit(
        &mtls_addr,
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &good_cert,
            "--tls-key",
            &good_key,
        ],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(output.stdout, b"hi\n");
    // ... none, or one from another CA, does not.
    refused(
        submit(&mtls_addr, &["--tls-ca", &ca]),
        "requires a client certificate",
    );
    refused(
        submit(
            &mtls_addr,
            &[
                "--tls-ca",
                &ca,
                "--tls-cert",
                &text(&bad_cert),
                "--tls-key",
                &text(&bad_key),
            ],
        ),
        "does not trust the CA",
    );
    // A client that trusts another CA, a name the certificate lacks, an
    // expired certificate.
    let stranger = pki.path("stranger.pem");
    write_atomically(Path::new(&stranger), &Ca::new("stranger").pem());
    let tls_args = [
        "--tls-cert",
        good_cert.as_str(),
        "--tls-key",
        good_key.as_str(),
    ];
    refused(
        submit(
            &mtls_addr,
            &[&["--tls-ca", &stranger][..], &tls_args].concat(),
        ),
        "--tls-ca",
    );
    refused(
        submit(
            &mtls_addr,
            &[
                &["--tls-ca", &ca, "--tls-server-name", "db.example.com"][..],
                &tls_args,
            ]
            .concat(),
        ),
        "--tls-server-name",
    );
    refused(submit(&expired_addr, &["--tls-ca", &ca]), "expired");
    // Plaintext to TLS, and TLS to plaintext.
    refused(submit(&mtls_addr, &[]), "accepts TLS only");
    refused(submit(&plain_addr, &["--tls-ca", &ca]), "plaintext");

    // The workers took none of it badly.
    let output = submit(
        &mtls_addr,
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &good_cert,
            "--tls-key",
            &good_key,
        ],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(submit(&plain_addr, &[]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stay_off_plaintext_networks_and_serve_says_what_is_exposed() {
    let pki = Pki::new("plaintext");
    let module = cat_file(&pki);
    // 192.0.2.1 is a documentation address: refused before any packet.
    let output = run_cli(
        &["submit", "--to", "192.0.2.1:7070", "--token", "t", &module],
        "",
    );
    assert_eq!(output.status.code(), Some(69));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("refusing to send the token in plaintext")
            && stderr.contains("--insecure-plaintext"),
        "{stderr}"
    );

    // serve on every interface with a token and no TLS: the warning names
    // what crosses the network. (Stopped as soon as it has said so.)
    let mut serve = Process::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--no-disk-cache",
            "--token",
            "t",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(serve.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(
        line.contains("without TLS") && line.contains("tokens") && line.contains("--tls-cert"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_under_load_and_keeps_it_when_the_new_one_is_broken() {
    let pki = Pki::new("sighup");
    let addr = free_addr("127.0.0.1");
    let worker = spawn(
        &[
            "serve",
            "--listen",
            &addr,
            "--no-disk-cache",
            "--concurrency",
            "2",
            "--tls-cert",
            &text(&pki.cert),
            "--tls-key",
            &text(&pki.key),
        ],
        "listening on tls://",
    );
    let module = cat();
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut load = Vec::new();
    for task in 0..3 {
        let (done, stop, client) = (
            Arc::clone(&done),
            Arc::clone(&stop),
            tls_worker_client(&pki, &addr, None),
        );
        let (module, pki_ca) = (module.clone(), pki.ca_file.clone());
        let addr = addr.clone();
        load.push(tokio::spawn(async move {
            let stopped = stop.notified();
            tokio::pin!(stopped);
            for i in 0..100_000 {
                // Every other job on a fresh connection: a new handshake.
                let fresh = (i % 2 == 1).then(|| {
                    WorkerClient::new(Client::with_config(
                        addr.clone(),
                        ClientConfig {
                            tls: Some(trusting(&pki_ca, None)),
                            ..ClientConfig::default()
                        },
                    ))
                });
                let through = fresh.as_ref().unwrap_or(&client);
                let input = format!("{task}-{i}");
                let output = tokio::select! {
                    output = through.run(&module, Command::new().stdin(input.clone())) => output,
                    () = &mut stopped => break,
                };
                let output = output.expect("no job fails while the certificate rotates");
                assert_eq!(output.stdout, input.as_bytes());
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let progressed = |at_least: usize| {
        let done = Arc::clone(&done);
        async move {
            for _ in 0..1000 {
                if done.load(Ordering::Relaxed) >= at_least {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the load made no progress");
        }
    };
    let rotated = || rotated_client(&pki, &addr);
    progressed(20).await;
    assert!(rotated().run(&module, Command::new()).await.is_err());

    // A renewed certificate (one more name) and key, then SIGHUP.
    let renewed = pki.ca.server(&["127.0.0.1", "rotated.example"]);
    write_atomically(&pki.cert, &renewed.cert_pem);
    write_atomically(&pki.key, &renewed.key_pem);
    signal(&worker, "HUP");
    let mut took = false;
    for _ in 0..100 {
        if rotated().run(&module, Command::new()).await.is_ok() {
            took = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(took, "the renewed certificate was not taken on SIGHUP");
    let before = done.load(Ordering::Relaxed);
    progressed(before + 20).await;

    // A broken file: reported, and the renewed certificate kept.
    write_atomically(
        &pki.cert,
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    signal(&worker, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    rotated().run(&module, Command::new()).await.unwrap();
    let before = done.load(Ordering::Relaxed);
    progressed(before + 20).await;

    stop.notify_waiters();
    for task in load {
        task.await.expect("no job failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_only_a_worker_certificate_may_join_a_coordinator() {
    let pki = Pki::new("mtls-join");
    let (cert, key, ca) = (text(&pki.cert), text(&pki.key), text(&pki.ca_file));
    let coordinator_addr = free_addr("127.0.0.1");
    let _coordinator = spawn(
        &[
            "coordinator",
            "--listen",
            &coordinator_addr,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
        "coordinator listening on tls://",
    );
    let join = format!("tls://{coordinator_addr}");
    // A node certificate saying O=worker, and one without (a client).
    let (worker_cert, worker_key) = pki
        .ca
        .node(&["127.0.0.2"], "node-2", &["worker"])
        .write(&pki.dir, "node-2");
    let (client_cert, client_key) = pki
        .ca
        .node(&["127.0.0.3"], "node-3", &[])
        .write(&pki.dir, "node-3");
    let joining = |addr: &str, cert: &Path, key: &Path| {
        spawn(
            &[
                "serve",
                "--listen",
                addr,
                "--no-disk-cache",
                "--tls-cert",
                &text(cert),
                "--tls-key",
                &text(key),
                "--join",
                &join,
                "--tls-ca",
                &ca,
            ],
            "listening on tls://",
        )
    };
    let worker_addr = free_addr("127.0.0.2");
    let _worker = joining(&worker_addr, &worker_cert, &worker_key);
    let _pretender = joining(&free_addr("127.0.0.3"), &client_cert, &client_key);

    // A client with its own certificate looks workers up: only the one
    // whose certificate says worker is listed.
    let (lookup_cert, lookup_key) = pki.ca.client("batch", &["client"]).write(&pki.dir, "batch");
    let lookup = Client::with_config(
        join.clone(),
        ClientConfig {
            tls: Some(
                ClientTls::from_files(&ClientTlsFiles {
                    ca: Some(pki.ca_file.clone()),
                    cert: Some(lookup_cert),
                    key: Some(lookup_key),
                    server_name: None,
                })
                .unwrap(),
            ),
            ..ClientConfig::default()
        },
    );
    let resolver = worker::CoordinatorResolver::new(lookup);
    assert_eq!(super::registered(&resolver, 1).await, 1);
    // Two heartbeats later, still only that one.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let listed = resolver.workers().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].registration.addr, format!("tls://{worker_addr}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rewritten_on_disk_is_taken_without_a_signal() {
    let pki = Pki::new("file-change");
    let addr = free_addr("127.0.0.1");
    let _worker = spawn(
        &[
            "serve",
            "--listen",
            &addr,
            "--no-disk-cache",
            "--tls-cert",
            &text(&pki.cert),
            "--tls-key",
            &text(&pki.key),
            "--tls-check-interval",
            "0.2",
        ],
        "listening on tls://",
    );
    let rotated = || rotated_client(&pki, &addr);
    let module = cat();
    assert!(rotated().run(&module, Command::new()).await.is_err());
    // As cert-manager does: new files, renamed into place.
    let renewed = pki.ca.server(&["127.0.0.1", "rotated.example"]);
    write_atomically(&pki.key, &renewed.key_pem);
    write_atomically(&pki.cert, &renewed.cert_pem);
    let mut took = false;
    for _ in 0..100 {
        if rotated().run(&module, Command::new()).await.is_ok() {
            took = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(took, "the rewritten certificate was not taken");
}
