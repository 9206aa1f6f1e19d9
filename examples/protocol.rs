//! The wire protocol by hand: a client and a server exchanging frames over a
//! real TCP socket on loopback, printing every exchange. No runtime: this is
//! what a peer in another language implements from PROTOCOL.md.
//!
//! It walks through the four purposes of the protocol (call a function, send
//! data, request data, transfer a program), with a payload large enough to be
//! chunked, and ends with a ping and a graceful shutdown.
//!
//! Run it with `cargo run --example protocol`.

use std::collections::HashMap;
use std::error::Error;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rpc_core::wire::{
    Call, ChunkReceiver, ChunkSender, Frame, FrameCodec, GoAway, Hello, Limits, Message,
    OfferProgram, Payload, Ping, RequestData, Response, SendData, SendProgram, Welcome,
    chunk_len_for,
};
use rpc_core::{ContentHash, PeerRole, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

type Result<T, E = Box<dyn Error + Send + Sync>> = std::result::Result<T, E>;
type Connection = Framed<TcpStream, FrameCodec>;

/// The smallest valid WebAssembly module.
const PROGRAM: &[u8] = b"\0asm\x01\0\0\0";

#[tokio::main]
async fn main() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("server listening on {addr}");
    let server = tokio::spawn(async move {
        let (socket, peer) = listener.accept().await?;
        println!("server accepted {peer}");
        serve(Framed::new(socket, FrameCodec::new())).await
    });

    let mut conn = Framed::new(TcpStream::connect(addr).await?, FrameCodec::new());
    let mut ids = (1u64..).step_by(2);
    let mut next_id = move || ids.next().unwrap_or(u64::MAX);

    // Handshake.
    let hello = Hello {
        peer_name: "demo-client".into(),
        role: PeerRole::Client,
        token: None,
        limits: Limits::default(),
    };
    println!(
        "-> Hello as {:?}, frames up to {} bytes",
        hello.peer_name, hello.limits.max_frame_len
    );
    conn.send(Frame::connection(Message::Hello(hello))).await?;
    let Message::Welcome(welcome) = next_message(&mut conn).await? else {
        return Err("expected a Welcome".into());
    };
    println!(
        "<- Welcome from {:?} ({:?}), payloads up to {} MiB",
        welcome.peer_name,
        welcome.role,
        welcome.limits.max_payload_len >> 20
    );
    conn.codec_mut()
        .set_peer_max_frame_len(welcome.limits.max_frame_len);

    // Call a named function.
    let id = next_id();
    println!("-> Call #{id} greet(\"world\")");
    send_with_payload(&mut conn, id, call("greet"), Bytes::from_static(b"world")).await?;
    let (response, body) = receive_response(&mut conn, id).await?;
    println!(
        "<- Response #{id} {}: {:?} ({} us on the server)",
        response.status,
        String::from_utf8_lossy(&body),
        response.elapsed_us
    );

    // Send data, large enough to travel chunked.
    let dataset: Bytes = (0..3 << 20)
        .map(|i: u32| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let id = next_id();
    let send = Message::SendData(SendData {
        name: "dataset".into(),
        payload: Payload::empty(),
    });
    let chunks = dataset
        .len()
        .div_ceil(chunk_len_for(conn.codec().peer_max_frame_len()));
    println!(
        "-> SendData #{id} \"dataset\": {} MiB in {chunks} chunks",
        dataset.len() >> 20
    );
    send_with_payload(&mut conn, id, send, dataset.clone()).await?;
    let (response, _) = receive_response(&mut conn, id).await?;
    println!("<- Response #{id} {}", response.status);

    // Request it back.
    let id = next_id();
    println!("-> RequestData #{id} \"dataset\"");
    let request = Message::RequestData(RequestData {
        name: "dataset".into(),
    });
    conn.send(Frame::new(id, request)).await?;
    let (response, body) = receive_response(&mut conn, id).await?;
    println!(
        "<- Response #{id} {}: {} MiB, SHA-256 verified, identical: {}",
        response.status,
        body.len() >> 20,
        body == dataset
    );

    // Transfer a program: offer by hash, send only if asked.
    let hash = ContentHash::of(PROGRAM);
    for attempt in 1..=2 {
        let id = next_id();
        println!(
            "-> OfferProgram #{id} {}… ({} bytes)",
            &hash.to_string()[..12],
            PROGRAM.len()
        );
        let offer = OfferProgram {
            hash,
            len: PROGRAM.len() as u64,
        };
        conn.send(Frame::new(id, Message::OfferProgram(offer)))
            .await?;
        let (response, _) = receive_response(&mut conn, id).await?;
        if response.status == StatusCode::OK {
            println!(
                "<- Response #{id} {}: already held, nothing to send (offer {attempt})",
                response.status
            );
            break;
        }
        println!("<- Response #{id} {}: send it", response.status);
        let id = next_id();
        let send = Message::SendProgram(SendProgram {
            hash,
            payload: Payload::empty(),
        });
        println!("-> SendProgram #{id}");
        send_with_payload(&mut conn, id, send, Bytes::from_static(PROGRAM)).await?;
        let (response, _) = receive_response(&mut conn, id).await?;
        println!("<- Response #{id} {}: stored", response.status);
    }

    // A function that does not exist.
    let id = next_id();
    println!("-> Call #{id} missing()");
    send_with_payload(&mut conn, id, call("missing"), Bytes::new()).await?;
    let (response, _) = receive_response(&mut conn, id).await?;
    println!(
        "<- Response #{id} {}: {}",
        response.status, response.message
    );

    // Keepalive.
    let started = Instant::now();
    conn.send(Frame::connection(Message::Ping(Ping { nonce: 7 })))
        .await?;
    let Message::Pong(pong) = next_message(&mut conn).await? else {
        return Err("expected a Pong".into());
    };
    println!(
        "-> Ping / <- Pong {} in {:?}",
        pong.nonce,
        started.elapsed()
    );

    // Graceful shutdown, announced by the client here.
    let goaway = GoAway {
        last_stream_id: 0,
        status: StatusCode::UNAVAILABLE,
        message: "done".into(),
    };
    conn.send(Frame::connection(Message::GoAway(goaway)))
        .await?;
    println!("-> GoAway");
    drop(conn);
    server.await??;
    println!("server closed the connection; demo complete");
    Ok(())
}

/// A call message whose payload `send_with_payload` fills in.
fn call(method: &str) -> Message {
    Message::Call(Call {
        method: method.into(),
        timeout_ms: Some(5_000),
        idempotency_key: None,
        schema_hash: None,
        payload: Payload::empty(),
    })
}

/// Sends a request with `payload`, inline if it fits in one frame, chunked
/// otherwise; all frames go out in one flush.
async fn send_with_payload(
    conn: &mut Connection,
    id: u64,
    mut message: Message,
    payload: Bytes,
) -> Result<()> {
    let chunk_len = chunk_len_for(conn.codec().peer_max_frame_len());
    let chunked = payload.len() > chunk_len;
    let slot = match &mut message {
        Message::Call(call) => &mut call.payload,
        Message::SendData(send) => &mut send.payload,
        Message::SendProgram(send) => &mut send.payload,
        Message::Response(response) => &mut response.payload,
        _ => return Err("this message has no payload".into()),
    };
    *slot = if chunked {
        Payload::Chunked {
            len: payload.len() as u64,
        }
    } else {
        Payload::Inline(payload.clone())
    };
    conn.feed(Frame::new(id, message)).await?;
    if chunked {
        for frame in ChunkSender::frames(id, payload, chunk_len) {
            conn.feed(frame).await?;
        }
    }
    conn.flush().await?;
    Ok(())
}

async fn next_message(conn: &mut Connection) -> Result<Message> {
    match conn.next().await {
        Some(frame) => Ok(frame?.message),
        None => Err("the peer closed the connection".into()),
    }
}

/// Reads the response of stream `id` and its payload, reassembling chunks.
async fn receive_response(conn: &mut Connection, id: u64) -> Result<(Response, Bytes)> {
    let frame = conn.next().await.ok_or("connection closed")??;
    let Message::Response(response) = frame.message else {
        return Err(format!("expected a response, got {}", frame.kind()).into());
    };
    if frame.stream_id != id {
        return Err(format!("response for stream {}, expected {id}", frame.stream_id).into());
    }
    let body = receive_payload(conn, &response.payload, Limits::default().max_payload_len).await?;
    Ok((response, body))
}

/// Returns an inline payload, or receives a chunked one.
async fn receive_payload(conn: &mut Connection, payload: &Payload, max_len: u64) -> Result<Bytes> {
    let len = match payload {
        Payload::Inline(bytes) => return Ok(bytes.clone()),
        Payload::Chunked { len } => *len,
    };
    let mut receiver = ChunkReceiver::new(len, max_len)?;
    loop {
        match next_message(conn).await? {
            Message::Chunk(bytes) => receiver.push(bytes)?,
            Message::ChunkEnd(end) => return Ok(receiver.finish(end.hash)?),
            other => return Err(format!("expected a chunk, got {}", other.kind()).into()),
        }
    }
}

/// The server side: answers one connection until the peer says goodbye.
async fn serve(mut conn: Connection) -> Result<()> {
    let limits = Limits::default();
    let Message::Hello(hello) = next_message(&mut conn).await? else {
        return Err("expected a Hello".into());
    };
    conn.codec_mut()
        .set_peer_max_frame_len(hello.limits.max_frame_len);
    let welcome = Welcome {
        peer_name: "demo-server".into(),
        role: PeerRole::Server,
        access_role: None,
        limits,
        server_time_ms: now_ms(),
    };
    conn.send(Frame::connection(Message::Welcome(welcome)))
        .await?;

    let mut store: HashMap<String, Bytes> = HashMap::new();
    let mut programs: HashMap<ContentHash, Bytes> = HashMap::new();
    while let Some(frame) = conn.next().await {
        let frame = frame?;
        let started = Instant::now();
        let id = frame.stream_id;
        let (status, message, body) = match frame.message {
            Message::Ping(ping) => {
                conn.send(Frame::connection(Message::Pong(rpc_core::wire::Pong {
                    nonce: ping.nonce,
                })))
                .await?;
                continue;
            }
            Message::GoAway(_) => break,
            Message::Call(call) => {
                let args =
                    receive_payload(&mut conn, &call.payload, limits.max_payload_len).await?;
                match call.method.as_str() {
                    "greet" => {
                        let greeting = format!("hello, {}", String::from_utf8_lossy(&args));
                        (StatusCode::OK, String::new(), Bytes::from(greeting))
                    }
                    other => (
                        StatusCode::NOT_FOUND,
                        format!("no function named {other}"),
                        Bytes::new(),
                    ),
                }
            }
            Message::SendData(send) => {
                let value =
                    receive_payload(&mut conn, &send.payload, limits.max_payload_len).await?;
                store.insert(send.name, value);
                (StatusCode::OK, String::new(), Bytes::new())
            }
            Message::RequestData(request) => match store.get(&request.name) {
                Some(value) => (StatusCode::OK, String::new(), value.clone()),
                None => (
                    StatusCode::NOT_FOUND,
                    format!("no value named {}", request.name),
                    Bytes::new(),
                ),
            },
            Message::OfferProgram(offer) if programs.contains_key(&offer.hash) => {
                (StatusCode::OK, String::new(), Bytes::new())
            }
            Message::OfferProgram(_) => (StatusCode::NOT_FOUND, "send it".into(), Bytes::new()),
            Message::SendProgram(send) => {
                let program =
                    receive_payload(&mut conn, &send.payload, limits.max_payload_len).await?;
                if ContentHash::of(&program) == send.hash {
                    programs.insert(send.hash, program);
                    (StatusCode::OK, String::new(), Bytes::new())
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        "bytes do not match the hash".into(),
                        Bytes::new(),
                    )
                }
            }
            other => return Err(format!("unexpected {}", other.kind()).into()),
        };
        let response = Message::Response(Response {
            status,
            server_time_ms: now_ms(),
            elapsed_us: started.elapsed().as_micros().try_into().unwrap_or(u64::MAX),
            message,
            payload: Payload::empty(),
        });
        send_with_payload(&mut conn, id, response, body).await?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_millis().try_into().unwrap_or(u64::MAX)
}
