//! Calls through the runtime over real TCP: results, every kind of error,
//! deadlines, cancellation, concurrency, data, programs and introspection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rpc_core::wire::DESCRIBE_METHOD;
use rpc_core::{CallOptions, Client, ClientConfig, ContentHash, RemoteError, RpcError, StatusCode};

use crate::support::{Counters, MathError, eventually, fixture, start_with};

#[tokio::test]
async fn functions_answer_with_typed_results() {
    let (_counters, server, client) = fixture().await;

    let sum: i64 = client.call("add", &(2i64, 3i64)).await.unwrap();
    assert_eq!(sum, 5);
    let greeting: String = client.call("greet", "world").await.unwrap();
    assert_eq!(greeting, "hello, world");
    let quotient: i64 = client
        .call_with::<_, _, MathError>("divide", &(7i64, 2i64), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(quotient, 3);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn each_failure_has_its_own_error() {
    let (_counters, server, client) = fixture().await;

    // The function's own error, typed.
    let error = client
        .call_with::<_, i64, MathError>("divide", &(1i64, 0i64), CallOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, RpcError::Application(MathError::DivisionByZero)),
        "{error:?}"
    );
    assert_eq!(error.status(), StatusCode::APPLICATION_ERROR);

    // ... or left encoded by `call`.
    let error = client
        .call::<_, i64>("divide", &(1i64, 0i64))
        .await
        .unwrap_err();
    let RpcError::Application(raw) = error else {
        panic!("expected an application error, got {error:?}");
    };
    assert_eq!(
        raw.decode::<MathError>().unwrap(),
        MathError::DivisionByZero
    );

    // No such function.
    let error = client
        .call::<_, i64>("multiply", &(1i64, 2i64))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::NotFound(message) if message.contains("multiply")),
        "{error:?}"
    );

    // Arguments that do not decode as the function's.
    let error = client
        .call::<_, i64>("add", "not numbers")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::BadRequest(message) if message.contains("did not decode")),
        "{error:?}"
    );

    // A role the caller lacks: the handler never runs.
    let error = client
        .call::<_, String>("admin_only", &())
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Forbidden(_)), "{error:?}");

    // The connection survived all of that.
    let sum: i64 = client.call("add", &(1i64, 1i64)).await.unwrap();
    assert_eq!(sum, 2);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn tokens_grant_roles_and_wrong_tokens_are_refused() {
    let counters = Arc::new(Counters::default());
    let server = crate::support::test_server(&counters)
        .token("admin-secret", "admin")
        .token("reader-secret", "reader")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let with_token = |token: Option<&str>| {
        Client::with_config(
            addr.clone(),
            ClientConfig {
                token: token.map(str::to_owned),
                ..ClientConfig::default()
            },
        )
    };

    let admin = with_token(Some("admin-secret"));
    let secret: String = admin.call("admin_only", &()).await.unwrap();
    assert_eq!(secret, "secret");
    let role: Option<String> = admin.call("whoami", &()).await.unwrap();
    assert_eq!(role.as_deref(), Some("admin"));

    let reader = with_token(Some("reader-secret"));
    let error = reader
        .call::<_, String>("admin_only", &())
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Forbidden(_)), "{error:?}");

    for token in [Some("wrong"), None] {
        let error = with_token(token)
            .call::<_, i64>("add", &(1i64, 2i64))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, RpcError::Forbidden(message) if message.contains("token")),
            "{error:?}"
        );
    }
    assert_eq!(counters.started.load(Ordering::SeqCst), 0);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_deadline_stops_the_call_on_both_sides() {
    let (counters, server, client) = fixture().await;
    let options = CallOptions::new().timeout(Duration::from_millis(100));
    let error = client
        .call_with::<_, u64, ()>("slow", &10_000u64, options)
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::DeadlineExceeded), "{error:?}");
    // The server abandoned the function too.
    eventually("the slow call to be dropped", || {
        counters.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(counters.finished.load(Ordering::SeqCst), 0);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn dropping_a_call_cancels_it_on_the_server() {
    let (counters, server, client) = fixture().await;
    let call = client.call::<_, u64>("slow", &10_000u64);
    let abandoned = tokio::time::timeout(Duration::from_millis(200), call).await;
    assert!(abandoned.is_err(), "the call cannot have finished");
    eventually("the cancelled call to be dropped", || {
        counters.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    // The connection goes on serving.
    let sum: i64 = client.call("add", &(2i64, 2i64)).await.unwrap();
    assert_eq!(sum, 4);
    server.shutdown(Duration::from_secs(1)).await;
}

// Two worker threads, so that calls race to open streams for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_share_one_connection() {
    let counters = Arc::new(Counters::default());
    let server = start_with(
        &counters,
        rpc_core::ServerConfig {
            max_in_flight: 1000,
            ..rpc_core::ServerConfig::default()
        },
    )
    .await;
    let client = Client::new(server.local_addr().to_string());
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1000i64 {
        let client = client.clone();
        calls.spawn(async move {
            // Later calls sleep less, so responses come back out of order.
            let millis = (1000 - i as u64) % 50;
            let slept: u64 = client.call("slow", &millis).await.unwrap();
            let sum: i64 = client.call("add", &(i, i)).await.unwrap();
            (i, slept, millis, sum)
        });
    }
    let mut seen = 0;
    while let Some(done) = calls.join_next().await {
        let (i, slept, millis, sum) = done.unwrap();
        assert_eq!(slept, millis);
        assert_eq!(sum, 2 * i);
        seen += 1;
    }
    assert_eq!(seen, 1000);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn calls_beyond_the_in_flight_limit_are_refused_not_queued() {
    let counters = Arc::new(Counters::default());
    let server = start_with(
        &counters,
        rpc_core::ServerConfig {
            max_in_flight: 4,
            ..rpc_core::ServerConfig::default()
        },
    )
    .await;
    let client = Client::new(server.local_addr().to_string());
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let client = client.clone();
        calls.spawn(async move { client.call::<_, u64>("slow", &300u64).await });
    }
    let (mut ok, mut exhausted) = (0, 0);
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            Ok(_) => ok += 1,
            Err(RpcError::ResourceExhausted(_)) => exhausted += 1,
            Err(error) => panic!("unexpected {error:?}"),
        }
    }
    assert_eq!((ok, exhausted), (4, 6));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn large_arguments_and_results_travel_chunked() {
    let (_counters, server, client) = fixture().await;
    let blob: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let echoed: Vec<u8> = client.call("echo", &blob).await.unwrap();
    assert!(echoed == blob, "the echo differs");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn introspection_lists_functions_and_schemas_are_checked() {
    let counters = Arc::new(Counters::default());
    let server = crate::support::test_server(&counters)
        .token("t", "admin")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Client::with_config(
        server.local_addr().to_string(),
        ClientConfig {
            token: Some("t".into()),
            ..ClientConfig::default()
        },
    );
    let functions = client.describe().await.unwrap();
    let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "add",
            "admin_only",
            "divide",
            "echo",
            "greet",
            "reverse",
            "slow",
            "whoami"
        ]
    );
    let admin_only = functions.iter().find(|f| f.name == "admin_only").unwrap();
    assert_eq!(admin_only.schema_hash, Some(0xabcd));
    assert_eq!(admin_only.roles.as_deref(), Some(&["admin".to_owned()][..]));
    assert_eq!(DESCRIBE_METHOD, "rpc.describe");

    let matching = CallOptions::new().schema_hash(0xabcd);
    let secret: String = client
        .call_with::<_, _, ()>("admin_only", &(), matching)
        .await
        .unwrap();
    assert_eq!(secret, "secret");
    let stale = CallOptions::new().schema_hash(0x1234);
    let error = client
        .call_with::<_, String, ()>("admin_only", &(), stale)
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Incompatible(_)), "{error:?}");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn raw_calls_carry_bytes_untouched() {
    let (_counters, server, client) = fixture().await;
    let args = Bytes::from(postcard::to_allocvec(&(20i64, 22i64)).unwrap());
    let result = client
        .call_raw("add", args, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(postcard::from_bytes::<i64>(&result).unwrap(), 42);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn raw_functions_get_and_give_bytes_untouched() {
    let (_counters, server, client) = fixture().await;
    let reversed = client
        .call_raw("reverse", Bytes::from_static(b"abc"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reversed, Bytes::from_static(b"cba"));

    // Larger than a chunk both ways.
    let big: Bytes = (0..600_000u32).map(|i| (i % 253) as u8).collect();
    let reversed = client
        .call_raw("reverse", big.clone(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reversed.len(), big.len());
    assert!(reversed.iter().rev().eq(big.iter()), "reversed wrongly");

    let error = client
        .call_raw("reverse", Bytes::new(), CallOptions::new())
        .await
        .unwrap_err();
    let RpcError::Application(RemoteError(reason)) = error else {
        panic!("expected the function's own error, got {error:?}");
    };
    assert_eq!(reason, Bytes::from_static(b"nothing to reverse"));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn data_is_sent_and_requested_chunked_when_large() {
    let (_counters, server, client) = fixture().await;
    let small = Bytes::from_static(b"{\"debug\":true}");
    client.send_data("config", small.clone()).await.unwrap();
    assert_eq!(client.request_data("config").await.unwrap(), small);

    let large = Bytes::from(
        (0..3_000_000u32)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    );
    client.send_data("dataset", large.clone()).await.unwrap();
    let fetched = client.request_data("dataset").await.unwrap();
    assert!(fetched == large, "the fetched value differs");

    let error = client.request_data("missing").await.unwrap_err();
    assert!(matches!(error, RpcError::NotFound(_)), "{error:?}");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn programs_are_sent_only_when_missing() {
    let (_counters, server, client) = fixture().await;
    let module = Bytes::from_static(b"\0asm\x01\0\0\0");
    let (hash, sent) = client.send_program(module.clone()).await.unwrap();
    assert_eq!(hash, ContentHash::of(&module));
    assert!(sent, "the first time the bytes travel");
    let (_, sent) = client.send_program(module).await.unwrap();
    assert!(!sent, "the second time the server already has them");

    let large = Bytes::from(vec![0x2au8; 3 << 20]);
    let (_, sent) = client.send_program(large).await.unwrap();
    assert!(sent);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_panicking_function_fails_its_call_and_the_server_goes_on() {
    let server = rpc_core::Server::builder()
        .function(
            "add",
            |(a, b): (i64, i64)| async move { Ok::<_, ()>(a + b) },
        )
        // Panics on its first poll: the server runs such calls inline.
        .function("panics_at_once", |(): ()| async move {
            if true {
                panic!("a bug in the function");
            }
            Ok::<_, ()>(())
        })
        // Panics after waiting: the call runs in its own task by then.
        .function("panics_later", |(): ()| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if true {
                panic!("a later bug in the function");
            }
            Ok::<_, ()>(())
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Client::new(server.local_addr().to_string());
    for method in ["panics_at_once", "panics_later"] {
        let error = client.call::<_, ()>(method, &()).await.unwrap_err();
        assert!(
            matches!(&error, RpcError::Internal(message) if message == "the function panicked"),
            "{method}: {error:?}"
        );
        let sum: i64 = client.call("add", &(2i64, 3i64)).await.unwrap();
        assert_eq!(sum, 5, "the connection still serves after {method}");
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn payloads_many_times_larger_than_a_frame_go_both_ways_at_once() {
    let server = rpc_core::Server::builder()
        .config(rpc_core::ServerConfig {
            max_payload_len: 64 << 20,
            ..rpc_core::ServerConfig::default()
        })
        .raw_function(
            "echo",
            rpc_core::FunctionOptions::new(),
            |_: rpc_core::Context, bytes: Bytes| async move { Ok::<_, RemoteError>(bytes) },
        )
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Client::new(server.local_addr().to_string());
    // Both queues fill up many times over while the other side is busy too.
    let payload = Bytes::from(
        (0..16u32 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let calls = (0..3).map(|_| {
        let client = client.clone();
        let payload = payload.clone();
        async move {
            let options = CallOptions::new().timeout(Duration::from_secs(20));
            client.call_raw("echo", payload, options).await
        }
    });
    for echoed in futures_util::future::join_all(calls).await {
        assert!(echoed.unwrap() == payload, "the payload comes back whole");
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_finished_free_their_place_under_the_in_flight_limit() {
    // Functions that wait run in tasks of their own; a connection with room
    // for 64 serves 64 callers making call after call, however the finished
    // tasks' reports interleave with the next calls' frames.
    let server = rpc_core::Server::builder()
        .config(rpc_core::ServerConfig {
            max_in_flight: 64,
            ..rpc_core::ServerConfig::default()
        })
        // Finished on another thread, as worker jobs are.
        .function("nap", |(): ()| async move {
            tokio::task::spawn_blocking(|| ()).await.unwrap();
            Ok::<_, ()>(())
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Client::new(server.local_addr().to_string());
    let callers = (0..64).map(|_| {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                client.call::<_, ()>("nap", &()).await.unwrap();
            }
        })
    });
    for caller in futures_util::future::join_all(callers).await {
        caller.unwrap();
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_function_may_answer_with_a_status_of_its_own() {
    use rpc_core::{Context, Failure, FunctionOptions, Server};

    let server = Server::builder()
        .function_with_status(
            "queue",
            FunctionOptions::new(),
            |_: Context, length: u32| async move {
                match length {
                    0 => Err(Failure::Error("an empty queue".to_owned())),
                    1..=100 => Ok(length * 2),
                    101..=1000 => Err(Failure::Status(
                        StatusCode::RESOURCE_EXHAUSTED,
                        "busy: come back later".into(),
                    )),
                    // A status that needs a payload is not one to answer
                    // without: the server says so instead.
                    _ => Err(Failure::Status(StatusCode::OK, "oops".into())),
                }
            },
        )
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Client::new(server.local_addr().to_string());
    let call = |length: u32| {
        let client = client.clone();
        async move {
            client
                .call_with::<_, u32, String>("queue", &length, CallOptions::new())
                .await
        }
    };
    assert_eq!(call(21).await.unwrap(), 42);
    assert!(matches!(call(0).await, Err(RpcError::Application(e)) if e == "an empty queue"));
    assert!(matches!(
        call(500).await,
        Err(RpcError::ResourceExhausted(message)) if message == "busy: come back later"
    ));
    let error = call(5000).await.unwrap_err();
    assert_eq!(error.status(), StatusCode::INTERNAL, "{error:?}");
    server.shutdown(Duration::from_secs(1)).await;
}
