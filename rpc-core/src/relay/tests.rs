use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::*;
use crate::StatusCode;
use crate::wire::Frame;
use crate::{Client, ClientConfig, RpcError, Server};

/// A supernode with `config` (which also serves `direct` itself), and a
/// relayed worker attached to it as `name` that serves `hello` and `echo`.
struct Relayed {
    supernode: Supernode,
    relay: Server,
    worker: Server,
    dialer: tokio::task::JoinHandle<()>,
}

impl Relayed {
    async fn start(name: &'static str, config: SupernodeConfig) -> Relayed {
        Relayed::start_with(name, config, crate::ServerConfig::default()).await
    }

    /// As [`start`](Self::start), the supernode's server with `server`.
    async fn start_with(
        name: &'static str,
        config: SupernodeConfig,
        server: crate::ServerConfig,
    ) -> Relayed {
        let supernode = Supernode::new(config);
        let relay = Server::builder()
            .config(server)
            .function("direct", |()| async { Ok::<_, crate::Infallible>(7u32) })
            .supernode(supernode.clone())
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let relay_addr = relay.local_addr().to_string();
        let (worker, intake) = Server::builder()
            .function("hello", |who: String| async move {
                Ok::<_, crate::Infallible>(format!("hello, {who}"))
            })
            .function("echo", |bytes: Bytes| async move {
                Ok::<_, crate::Infallible>(bytes)
            })
            .serve_joined()
            .unwrap();
        let dials = supernode.clone();
        let dialer = tokio::spawn(async move {
            for _ in 0..10_000 {
                let Ok(tickets) = dials.wait_for_dials(name, 0, Duration::from_secs(10)).await
                else {
                    return;
                };
                for ticket in tickets {
                    if let Ok(stream) = join(&relay_addr, ticket, Duration::from_secs(5)).await {
                        intake.serve(stream).await;
                    }
                }
            }
        });
        for _ in 0..1000 {
            if supernode.attached() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Relayed {
            supernode,
            relay,
            worker,
            dialer,
        }
    }

    fn addr(&self, name: &str) -> String {
        format!("{name}@{}", self.relay.local_addr())
    }

    async fn stop(self) {
        self.dialer.abort();
        self.worker.shutdown(Duration::from_millis(200)).await;
        self.relay.shutdown(Duration::from_millis(200)).await;
    }
}

fn quick_client(addr: String) -> Client {
    Client::with_config(
        addr,
        ClientConfig {
            max_reconnects: Some(0),
            timeout: Some(Duration::from_secs(10)),
            ..ClientConfig::default()
        },
    )
}

/// Sends `bytes` as a connection's first bytes and reads the one frame
/// the supernode answers.
async fn answer_to(addr: SocketAddr, bytes: &[u8]) -> Message {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    timeout(Duration::from_secs(10), read_frame(&mut socket))
        .await
        .expect("answered in time")
        .expect("a frame")
        .message
}

fn status_of(message: &Message) -> StatusCode {
    match message {
        Message::Error(error) => error.status,
        other => panic!("expected Error, got {other:?}"),
    }
}

#[tokio::test]
async fn calls_and_large_payloads_reach_a_relayed_worker_byte_for_byte() {
    let relayed = Relayed::start("w1", SupernodeConfig::default()).await;
    let client = quick_client(relayed.addr("w1"));
    let answer: String = client.call("hello", &"relay".to_string()).await.unwrap();
    assert_eq!(answer, "hello, relay");
    // 8 MiB each way: chunked frames, passed through untouched.
    let big = Bytes::from(
        (0..8 << 20)
            .map(|i: u32| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let echoed: Bytes = client.call("echo", &big).await.unwrap();
    assert_eq!(echoed, big);
    // Many calls in flight on the one relayed connection.
    let calls = (0..64).map(|i| {
        let client = client.clone();
        async move { client.call::<_, String>("hello", &i.to_string()).await }
    });
    for (i, answer) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(answer.unwrap(), format!("hello, {i}"));
    }
    assert_eq!(relayed.supernode.routes_open(), 1);
    assert!(
        relayed.supernode.relayed_bytes() > 16 << 20,
        "counted as they pass, while the connection is open"
    );
    drop(client);
    for _ in 0..500 {
        if relayed.supernode.routes_open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        relayed.supernode.routes_open(),
        0,
        "the place is given back"
    );
    relayed.stop().await;
}

#[tokio::test]
async fn a_worker_that_is_not_attached_is_not_found() {
    let relayed = Relayed::start("w1", SupernodeConfig::default()).await;
    let error = quick_client(relayed.addr("nobody"))
        .call::<_, String>("hello", &String::new())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("no worker named \"nobody\""),
        "{error}"
    );
    relayed.stop().await;
}

#[tokio::test]
async fn a_worker_that_stopped_polling_is_detached_after_the_grace() {
    let config = SupernodeConfig {
        attach_grace: Duration::from_millis(200),
        ..SupernodeConfig::default()
    };
    let relayed = Relayed::start("w1", config).await;
    relayed.dialer.abort();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(relayed.supernode.attached(), 0);
    let error = quick_client(relayed.addr("w1"))
        .call::<_, String>("hello", &String::new())
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::NotFound(_)), "{error:?}");
    relayed.stop().await;
}

#[tokio::test]
async fn hostile_first_frames_are_refused_with_a_status() {
    let relayed = Relayed::start("w1", SupernodeConfig::default()).await;
    let addr = relayed.relay.local_addr();
    // A ticket nobody issued.
    let join = Frame::connection(Message::Join(Join { ticket: [7; 16] }));
    let mut bytes = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut crate::wire::FrameCodec::new(), join, &mut bytes)
        .unwrap();
    assert_eq!(
        status_of(&answer_to(addr, &bytes).await),
        StatusCode::NOT_FOUND
    );
    // A Route whose body is garbage: a string length past the end.
    let garbage = [
        0, 0, 0, 15, 1, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x0f,
    ];
    assert_eq!(
        status_of(&answer_to(addr, &garbage).await),
        StatusCode::BAD_REQUEST
    );
    // A Route announcing 1 MiB: refused on its length, before any of it.
    let huge = [0, 0x10, 0, 0, 1, 0x08, 0, 0];
    assert_eq!(
        status_of(&answer_to(addr, &huge).await),
        StatusCode::RESOURCE_EXHAUSTED
    );
    // The supernode still serves its own functions and relays.
    let direct: u32 = quick_client(addr.to_string())
        .call("direct", &())
        .await
        .unwrap();
    assert_eq!(direct, 7);
    let relayed_answer: String = quick_client(relayed.addr("w1"))
        .call("hello", &"still".to_string())
        .await
        .unwrap();
    assert_eq!(relayed_answer, "hello, still");
    relayed.stop().await;
}

#[tokio::test]
async fn routes_waiting_for_a_silent_worker_are_capped_and_time_out() {
    let supernode = Supernode::new(SupernodeConfig {
        max_waiting_routes: 4,
        route_timeout: Duration::from_millis(1500),
        ..SupernodeConfig::default()
    });
    let relay = Server::builder()
        .function("direct", |()| async { Ok::<_, crate::Infallible>(7u32) })
        .supernode(supernode.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = relay.local_addr();
    // A worker that takes tickets and never dials back.
    let taker = supernode.clone();
    let silent = tokio::spawn(async move {
        for _ in 0..10_000 {
            if taker
                .wait_for_dials("silent", 0, Duration::from_secs(10))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    while supernode.attached() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let route = {
        let mut bytes = bytes::BytesMut::new();
        let frame = Frame::connection(Message::Route(Route {
            worker: "silent".into(),
        }));
        tokio_util::codec::Encoder::encode(&mut crate::wire::FrameCodec::new(), frame, &mut bytes)
            .unwrap();
        bytes.freeze()
    };
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let route = route.clone();
            tokio::spawn(async move { answer_to(addr, &route).await })
        })
        .collect();
    for _ in 0..1000 {
        if supernode.waiting_routes() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The fifth is refused at once, and the server still serves.
    assert_eq!(
        status_of(&answer_to(addr, &route).await),
        StatusCode::UNAVAILABLE
    );
    let direct: u32 = quick_client(addr.to_string())
        .call("direct", &())
        .await
        .unwrap();
    assert_eq!(direct, 7);
    // The four get 504 when the worker does not join in time.
    for answer in waiting {
        assert_eq!(
            status_of(&answer.await.unwrap()),
            StatusCode::DEADLINE_EXCEEDED
        );
    }
    assert_eq!(supernode.tickets_outstanding(), 0, "no ticket left behind");
    assert_eq!(supernode.routes_open(), 0);
    silent.abort();
    relay.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn peers_that_stall_in_their_first_frame_do_not_keep_others_out() {
    let relayed = Relayed::start("w1", SupernodeConfig::default()).await;
    let addr = relayed.relay.local_addr();
    // 400 connections that send the first six bytes of a Route and stop:
    // more than the server's 256 handshake places.
    let mut stalled = Vec::new();
    for _ in 0..400 {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(&[0, 0, 0, 20, 1, 0x08]).await.unwrap();
        stalled.push(socket);
    }
    let answer: String = timeout(
        Duration::from_secs(8),
        quick_client(relayed.addr("w1")).call("hello", &"through".to_string()),
    )
    .await
    .expect("served while 400 stall")
    .unwrap();
    assert_eq!(answer, "hello, through");
    drop(stalled);
    relayed.stop().await;
}

#[tokio::test]
async fn a_supernode_refuses_workers_past_its_limit() {
    let supernode = Supernode::new(SupernodeConfig {
        max_workers: 1,
        ..SupernodeConfig::default()
    });
    let first = supernode.clone();
    let polling = tokio::spawn(async move {
        first
            .wait_for_dials("a", 0, Duration::from_secs(10))
            .await
            .map(|_| ())
    });
    while supernode.attached() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        supernode
            .wait_for_dials("b", 0, Duration::from_millis(10))
            .await,
        Err(AttachError::Full { max: 1 })
    );
    assert_eq!(
        supernode
            .wait_for_dials("", 0, Duration::from_millis(10))
            .await,
        Err(AttachError::InvalidName)
    );
    polling.abort();
}

#[tokio::test]
async fn a_supernode_server_with_metrics_exports_its_load_and_limits() {
    let metrics = crate::metrics::Metrics::new();
    let relayed = Relayed::start_with(
        "w1",
        SupernodeConfig {
            max_workers: 5,
            ..SupernodeConfig::default()
        },
        crate::ServerConfig {
            metrics: Some(metrics.clone()),
            ..crate::ServerConfig::default()
        },
    )
    .await;
    let client = quick_client(relayed.addr("w1"));
    let echoed: Bytes = client
        .call("echo", &Bytes::from(vec![7u8; 100_000]))
        .await
        .unwrap();
    assert_eq!(echoed.len(), 100_000);
    let scraped = metrics.encode();
    for line in [
        "rpc_supernode_attached_workers 1",
        "rpc_supernode_max_workers 5",
        "rpc_supernode_connections 1",
        "rpc_supernode_max_connections 1024",
    ] {
        assert!(scraped.contains(line), "{line} missing from:\n{scraped}");
    }
    let relayed_bytes = scraped
        .lines()
        .find_map(|line| line.strip_prefix("rpc_supernode_relayed_bytes_total "))
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no relayed bytes in:\n{scraped}"));
    assert!(relayed_bytes > 200_000, "{relayed_bytes}");
    drop(client);
    relayed.stop().await;
}

#[tokio::test]
async fn a_name_is_bound_to_who_attached_it_until_it_is_gone() {
    let supernode = Supernode::new(SupernodeConfig {
        attach_grace: Duration::from_millis(100),
        ..SupernodeConfig::default()
    });
    // Owner 1 attaches as "w" and keeps polling.
    assert_eq!(
        supernode
            .wait_for_dials("w", 1, Duration::from_secs(1))
            .await,
        Ok(Vec::new())
    );
    let first = supernode.clone();
    let polling = tokio::spawn(async move {
        first
            .wait_for_dials("w", 1, Duration::from_secs(10))
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Another caller naming itself "w" gets nothing of its connections.
    assert_eq!(
        supernode
            .wait_for_dials("w", 2, Duration::from_millis(10))
            .await,
        Err(AttachError::Taken)
    );
    // Once the owner is gone and its grace is over, the name is free.
    polling.abort();
    let _ = polling.await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        supernode
            .wait_for_dials("w", 2, Duration::from_millis(10))
            .await,
        Ok(Vec::new())
    );
    assert_eq!(
        supernode
            .wait_for_dials("w", 1, Duration::from_millis(10))
            .await,
        Err(AttachError::Taken)
    );
    assert_eq!(supernode.attached(), 1);
}
