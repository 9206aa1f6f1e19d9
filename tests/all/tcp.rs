//! The codec over real TCP sockets on loopback: hostile peers get a specific
//! `Error` frame and are disconnected, while well-behaved peers on other
//! connections keep being served; large payloads cross chunked and intact.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rpc_core::StatusCode;
use rpc_core::wire::{
    ChunkReceiver, ChunkSender, DecodeError, ErrorMessage, Frame, FrameCodec, Message, Payload,
    Ping, Pong, Response, SendData, chunk_len_for,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::support::next_response;
use tokio_util::codec::Framed;

const PATIENCE: Duration = Duration::from_secs(10);

/// A server that answers pings, stores chunked `SendData` payloads after
/// checking them, and reacts to protocol errors as PROTOCOL.md section 11
/// says: an `Error` frame with the error's status, then close.
async fn spawn_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(Framed::new(socket, FrameCodec::new())));
        }
    });
    addr
}

async fn serve(mut conn: Framed<TcpStream, FrameCodec>) {
    let mut upload: Option<(u64, ChunkReceiver)> = None;
    while let Some(frame) = conn.next().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(DecodeError::Io(_)) => return,
            Err(error) => {
                let report = ErrorMessage {
                    status: error.status(),
                    message: error.to_string(),
                };
                let _ = conn.send(Frame::connection(Message::Error(report))).await;
                return;
            }
        };
        let id = frame.stream_id;
        let answer = match frame.message {
            Message::Ping(ping) => Some(Message::Pong(Pong { nonce: ping.nonce })),
            Message::SendData(SendData {
                payload: Payload::Chunked { len },
                ..
            }) => match ChunkReceiver::new(len, 64 << 20) {
                Ok(receiver) => {
                    upload = Some((id, receiver));
                    None
                }
                Err(error) => Some(respond(error.status(), error.to_string(), Bytes::new())),
            },
            Message::Chunk(bytes) => match upload.as_mut() {
                Some((stream, receiver)) if *stream == id => match receiver.push(bytes) {
                    Ok(()) => None,
                    Err(error) => {
                        upload = None;
                        Some(respond(error.status(), error.to_string(), Bytes::new()))
                    }
                },
                // Chunks of an unknown or failed stream are ignored.
                _ => None,
            },
            Message::ChunkEnd(end) => match upload.take() {
                Some((stream, receiver)) if stream == id => match receiver.finish(end.hash) {
                    // Echo the reassembled payload back, chunked.
                    Ok(bytes) => {
                        let len = bytes.len() as u64;
                        let head = respond(StatusCode::OK, String::new(), Bytes::new());
                        let Message::Response(mut head) = head else {
                            unreachable!()
                        };
                        head.payload = Payload::Chunked { len };
                        conn.feed(Frame::new(id, Message::Response(head)))
                            .await
                            .unwrap();
                        let chunk_len = chunk_len_for(conn.codec().peer_max_frame_len());
                        for frame in ChunkSender::frames(id, bytes, chunk_len) {
                            conn.feed(frame).await.unwrap();
                        }
                        conn.flush().await.unwrap();
                        None
                    }
                    Err(error) => Some(respond(error.status(), error.to_string(), Bytes::new())),
                },
                _ => None,
            },
            _ => None,
        };
        if let Some(answer) = answer
            && conn.send(Frame::new(id, answer)).await.is_err()
        {
            return;
        }
    }
}

fn respond(status: StatusCode, message: String, payload: Bytes) -> Message {
    Message::Response(Response {
        status,
        server_time_ms: 0,
        elapsed_us: 0,
        message,
        payload: Payload::from(payload),
    })
}

async fn connect(addr: SocketAddr) -> Framed<TcpStream, FrameCodec> {
    Framed::new(TcpStream::connect(addr).await.unwrap(), FrameCodec::new())
}

/// Sends a ping and waits for its pong: the connection is still served.
async fn assert_served(conn: &mut Framed<TcpStream, FrameCodec>, nonce: u64) {
    conn.send(Frame::connection(Message::Ping(Ping { nonce })))
        .await
        .unwrap();
    let frame = timeout(PATIENCE, conn.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(frame.message, Message::Pong(Pong { nonce }));
}

/// Writes raw bytes and returns the `Error` the server sends before it closes.
async fn send_raw_expect_error(addr: SocketAddr, bytes: &[u8]) -> ErrorMessage {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let mut received = Vec::new();
    timeout(PATIENCE, socket.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let mut conn = FrameCodec::new();
    let mut buf = bytes::BytesMut::from(&received[..]);
    let frame = tokio_util::codec::Decoder::decode_eof(&mut conn, &mut buf)
        .unwrap()
        .expect("an Error frame before the close");
    let Message::Error(error) = frame.message else {
        panic!("expected an Error frame, got {:?}", frame.kind());
    };
    assert!(buf.is_empty(), "nothing follows the Error frame");
    error
}

#[tokio::test]
async fn hostile_peers_are_cut_off_and_others_keep_being_served() {
    let addr = spawn_server().await;
    let mut good = connect(addr).await;
    assert_served(&mut good, 1).await;

    // A length prefix of 4 GiB.
    let error = send_raw_expect_error(addr, &[0xff, 0xff, 0xff, 0xff, 1, 0x40, 0, 0]).await;
    assert_eq!(error.status, StatusCode::RESOURCE_EXHAUSTED);
    assert_eq!(
        error.message,
        "frame of 4294967295 bytes exceeds the limit of 1048576"
    );
    assert_served(&mut good, 2).await;

    // An unknown version.
    let mut bytes = vec![0, 0, 0, 13, 9, 3, 0, 0];
    bytes.extend([0; 9]);
    let error = send_raw_expect_error(addr, &bytes).await;
    assert_eq!(error.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error.message,
        "protocol version 9 is not supported (this peer speaks 1..=1)"
    );
    assert_served(&mut good, 3).await;

    // Text where frames belong: "GET / HTTP/1.1" reads as a huge length.
    let error = send_raw_expect_error(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(error.status, StatusCode::RESOURCE_EXHAUSTED);
    assert_served(&mut good, 4).await;

    // A valid header with a garbage body.
    let mut bytes = vec![0, 0, 0, 14, 1, 3, 0, 0];
    bytes.extend([0; 8]);
    bytes.extend([0xff, 0xff]);
    let error = send_raw_expect_error(addr, &bytes).await;
    assert_eq!(error.message, "malformed Ping body");
    assert_served(&mut good, 5).await;

    // Half a frame, then a hang-up: nothing to answer, nothing breaks.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&[0, 0, 0, 100, 1, 0x40]).await.unwrap();
    drop(half);
    assert_served(&mut good, 6).await;
}

#[tokio::test]
async fn a_large_payload_crosses_chunked_and_intact() {
    let addr = spawn_server().await;
    let mut conn = connect(addr).await;
    let payload: Bytes = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect::<Vec<u8>>()
        .into();
    let len = payload.len() as u64;
    let send = SendData {
        name: "blob".into(),
        payload: Payload::Chunked { len },
    };
    conn.feed(Frame::new(1, Message::SendData(send)))
        .await
        .unwrap();
    for frame in ChunkSender::frames(1, payload.clone(), chunk_len_for(1 << 20)) {
        conn.feed(frame).await.unwrap();
    }
    conn.flush().await.unwrap();

    let (_, response) = next_response(&mut conn).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.message);
    assert_eq!(response.payload, Payload::Chunked { len });
    let mut receiver = ChunkReceiver::new(len, len).unwrap();
    let echoed = loop {
        let frame = timeout(PATIENCE, conn.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(frame.stream_id, 1);
        match frame.message {
            Message::Chunk(bytes) => receiver.push(bytes).unwrap(),
            Message::ChunkEnd(end) => break receiver.finish(end.hash).unwrap(),
            other => panic!("unexpected {:?}", other.kind()),
        }
    };
    assert!(echoed == payload, "the echoed payload differs");
}

#[tokio::test]
async fn a_tampered_chunked_transfer_fails_its_stream_only() {
    let addr = spawn_server().await;
    let mut conn = connect(addr).await;

    // Chunks beyond the announced length.
    let send = SendData {
        name: "blob".into(),
        payload: Payload::Chunked { len: 10 },
    };
    conn.feed(Frame::new(1, Message::SendData(send.clone())))
        .await
        .unwrap();
    conn.feed(Frame::new(
        1,
        Message::Chunk(Bytes::from_static(b"0123456789abc")),
    ))
    .await
    .unwrap();
    conn.flush().await.unwrap();
    let (_, response) = next_response(&mut conn).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.message,
        "chunks carry at least 13 bytes, more than the announced 10"
    );

    // A hash that does not match.
    let mut frames: Vec<Frame> = ChunkSender::frames(3, Bytes::from_static(b"0123456789"), 4)
        .with_digest()
        .collect();
    if let Some(Frame {
        message: Message::Chunk(bytes),
        ..
    }) = frames.first_mut()
    {
        *bytes = Bytes::from_static(b"XXXX");
    }
    conn.feed(Frame::new(3, Message::SendData(send)))
        .await
        .unwrap();
    for frame in frames {
        conn.feed(frame).await.unwrap();
    }
    conn.flush().await.unwrap();
    let (stream_id, response) = next_response(&mut conn).await;
    assert_eq!(stream_id, 3);
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(
        response.message.starts_with("content hash mismatch"),
        "{}",
        response.message
    );

    // The connection itself is fine.
    assert_served(&mut conn, 9).await;
}
