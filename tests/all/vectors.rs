//! The protocol test vectors in `tests/vectors/v1.json`, checked three ways:
//! each valid vector decodes to the frame this file expects and re-encodes to
//! the same bytes; each invalid vector fails with the error it names; and
//! PROTOCOL.md shows every vector with the same bytes.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use rpc_core::wire::{
    Call, ChunkEnd, DESCRIBE_METHOD, DecodeError, ErrorMessage, Frame, FrameCodec, GoAway, Hello,
    Join, Kind, Limits, Message, OfferProgram, Payload, Ping, Pong, RequestData, Response, Route,
    SendData, SendProgram, VersionMismatch, Welcome,
};
use rpc_core::{ContentHash, FunctionInfo, PeerRole, StatusCode};
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

const VECTORS: &str = include_str!("../vectors/v1.json");
const PROTOCOL_MD: &str = include_str!("../../PROTOCOL.md");

/// The smallest valid WebAssembly module: magic and version.
const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// The frame each valid vector must decode to.
fn expected(name: &str) -> Frame {
    let message = match name {
        "hello" => Message::Hello(Hello {
            peer_name: "cli".into(),
            role: PeerRole::Client,
            token: Some("s3cret".into()),
            limits: Limits::default(),
        }),
        "welcome" => Message::Welcome(Welcome {
            peer_name: "w1".into(),
            role: PeerRole::Worker,
            access_role: Some("admin".into()),
            limits: Limits {
                max_frame_len: 1 << 20,
                max_streams: 256,
                max_payload_len: 1 << 30,
                idle_timeout_ms: Some(30_000),
            },
            server_time_ms: 1_700_000_000_000,
        }),
        "ping" => Message::Ping(Ping { nonce: 42 }),
        "pong" => Message::Pong(Pong { nonce: 42 }),
        "goaway" => Message::GoAway(GoAway {
            last_stream_id: 7,
            status: StatusCode::UNAVAILABLE,
            message: "shutting down".into(),
        }),
        "error" => Message::Error(ErrorMessage {
            status: StatusCode::FORBIDDEN,
            message: "invalid token".into(),
        }),
        "error-tls-required" => Message::Error(ErrorMessage {
            status: StatusCode::TLS_REQUIRED,
            message: "this server accepts TLS only: connect with TLS (--tls, or a tls:// address)"
                .into(),
        }),
        "version-mismatch" => Message::VersionMismatch(VersionMismatch {
            min_version: 1,
            max_version: 1,
        }),
        "route" => Message::Route(Route {
            worker: "w7".into(),
        }),
        "routed" => Message::Routed,
        "join" => Message::Join(Join {
            ticket: [
                0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad,
                0xae, 0xaf,
            ],
        }),
        "call" => Message::Call(Call {
            method: "math.add".into(),
            timeout_ms: Some(5_000),
            idempotency_key: Some([
                0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
                0x0e, 0x0f,
            ]),
            schema_hash: Some(0x1122_3344_5566_7788),
            // postcard of the arguments (2i64, 3i64): zigzag varints.
            payload: Payload::from(Bytes::from_static(&[0x04, 0x06])),
        }),
        "call-chunked" => Message::Call(Call {
            method: "upload".into(),
            timeout_ms: None,
            idempotency_key: None,
            schema_hash: None,
            payload: Payload::Chunked { len: 600_000 },
        }),
        "response" => Message::Response(Response {
            status: StatusCode::OK,
            server_time_ms: 1_700_000_000_123,
            elapsed_us: 250,
            message: String::new(),
            // postcard of the result 5i64.
            payload: Payload::from(Bytes::from_static(&[0x0a])),
        }),
        "response-not-found" => Message::Response(Response {
            status: StatusCode::NOT_FOUND,
            server_time_ms: 1_700_000_000_124,
            elapsed_us: 3,
            message: "no function named mul".into(),
            payload: Payload::empty(),
        }),
        "cancel" => Message::Cancel,
        "send-data" => Message::SendData(SendData {
            name: "config".into(),
            payload: Payload::from(Bytes::from_static(b"{\"debug\":true}")),
        }),
        "request-data" => Message::RequestData(RequestData {
            name: "config".into(),
        }),
        "offer-program" => Message::OfferProgram(OfferProgram {
            hash: ContentHash::of(EMPTY_MODULE),
            len: EMPTY_MODULE.len() as u64,
        }),
        "send-program" => Message::SendProgram(SendProgram {
            hash: ContentHash::of(EMPTY_MODULE),
            payload: Payload::from(Bytes::from_static(EMPTY_MODULE)),
        }),
        "chunk" => Message::Chunk(Bytes::from_static(b"chunk one")),
        "chunk-end" => Message::ChunkEnd(ChunkEnd {
            hash: Some(ContentHash::of(b"chunk one")),
        }),
        "chunk-end-no-digest" => Message::ChunkEnd(ChunkEnd { hash: None }),
        "describe-call" => Message::Call(Call {
            method: DESCRIBE_METHOD.into(),
            timeout_ms: None,
            idempotency_key: None,
            schema_hash: None,
            payload: Payload::empty(),
        }),
        "describe-response" => Message::Response(Response {
            status: StatusCode::OK,
            server_time_ms: 1_700_000_000_125,
            elapsed_us: 40,
            message: String::new(),
            payload: Payload::from(Bytes::from(
                postcard::to_allocvec(&described_functions()).expect("encodes"),
            )),
        }),
        other => panic!("vector {other:?} has no expected frame in tests/all/vectors.rs"),
    };
    let stream_id = match name {
        "call" | "response" | "cancel" => 1,
        "call-chunked" | "chunk" | "chunk-end" | "chunk-end-no-digest" => 3,
        "response-not-found" | "send-data" => 5,
        "request-data" => 7,
        "offer-program" => 9,
        "send-program" => 11,
        "describe-call" | "describe-response" => 13,
        _ => 0,
    };
    Frame::new(stream_id, message)
}

/// What the `describe-response` vector lists: the functions of
/// [`schema`], as a server registering them would describe them.
fn described_functions() -> Vec<FunctionInfo> {
    vec![
        FunctionInfo {
            name: "kv::get".into(),
            schema_hash: Some(schema::KV_GET_SCHEMA_HASH),
            roles: None,
            description: "The value stored under `key`, if any.".into(),
        },
        FunctionInfo {
            name: "math.add".into(),
            schema_hash: Some(schema::add::SCHEMA_HASH),
            roles: Some(vec!["math".into()]),
            description: "Adds two numbers.".into(),
        },
    ]
}

/// Functions declared with the macros, whose schema hashes the
/// `schema_hashes` vectors give.
mod schema {
    /// Adds two numbers.
    #[rpc_core::remote(name = "math.add", roles = ["math"])]
    pub fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    /// Types as the compiler spells them in schema hashes.
    #[rpc_core::remote(name = "spellings")]
    pub fn spellings(
        a: std::path::PathBuf,
        b: (i64, i64),
        c: Vec<u8>,
        d: Option<std::collections::HashMap<String, Vec<u8>>>,
        e: [u8; 4],
    ) -> i64 {
        let _ = (a, b, c, d, e);
        0
    }

    #[rpc_core::service(name = "kv")]
    pub trait KeyValue {
        /// The value stored under `key`, if any.
        async fn get(&self, key: String) -> Option<String>;
    }

    /// What the macros computed for `kv::get` (their constant is private to
    /// this module).
    pub const KV_GET_SCHEMA_HASH: u64 = __RPC_KEYVALUE_GET_SCHEMA_HASH;
}

/// The name of a decode error's variant, as the invalid vectors spell it.
fn variant(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::FrameTooLarge { .. } => "FrameTooLarge",
        DecodeError::FrameTooShort { .. } => "FrameTooShort",
        DecodeError::Truncated { .. } => "Truncated",
        DecodeError::UnsupportedVersion { .. } => "UnsupportedVersion",
        DecodeError::UnknownKind { .. } => "UnknownKind",
        DecodeError::ReservedBits { .. } => "ReservedBits",
        DecodeError::WrongStream { .. } => "WrongStream",
        DecodeError::MalformedBody { .. } => "MalformedBody",
        DecodeError::TrailingBytes { .. } => "TrailingBytes",
        DecodeError::InvalidField { .. } => "InvalidField",
        _ => "other",
    }
}

fn hex_decode(text: &str) -> Vec<u8> {
    assert!(
        text.len().is_multiple_of(2),
        "odd number of hex digits in {text:?}"
    );
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex digits"))
        .collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn vectors(section: &str) -> Vec<Value> {
    let root: Value = serde_json::from_str(VECTORS).expect("v1.json is JSON");
    assert_eq!(root["protocol_version"], 1);
    root[section]
        .as_array()
        .unwrap_or_else(|| panic!("v1.json has no {section:?} array"))
        .clone()
}

fn field<'a>(vector: &'a Value, key: &str) -> &'a str {
    vector[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector {vector} lacks {key:?}"))
}

/// Decodes `bytes` as a whole connection's worth of input: exactly one frame.
fn decode_one(bytes: &[u8]) -> Result<Frame, DecodeError> {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(bytes);
    let frame = codec.decode_eof(&mut buf)?.expect("a whole frame");
    assert!(buf.is_empty(), "bytes left after the frame");
    Ok(frame)
}

#[test]
fn valid_vectors_decode_and_reencode_exactly() {
    let mut kinds = BTreeSet::new();
    for vector in vectors("valid") {
        let name = field(&vector, "name");
        let hex = field(&vector, "hex");
        let frame =
            decode_one(&hex_decode(hex)).unwrap_or_else(|error| panic!("vector {name}: {error}"));
        let want = expected(name);
        assert_eq!(frame, want, "vector {name} decodes to something else");
        assert_eq!(field(&vector, "kind"), frame.kind().name(), "vector {name}");
        assert_eq!(vector["stream_id"], frame.stream_id, "vector {name}");

        let mut encoded = BytesMut::new();
        FrameCodec::new()
            .encode(want.clone(), &mut encoded)
            .unwrap();
        assert_eq!(
            hex_encode(&encoded),
            hex,
            "vector {name} re-encodes differently"
        );
        kinds.insert(frame.kind());
    }
    let missing: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|kind| !kinds.contains(kind))
        .collect();
    assert!(missing.is_empty(), "no valid vector for {missing:?}");
}

#[test]
fn invalid_vectors_fail_with_the_named_error() {
    let invalid = vectors("invalid");
    assert!(invalid.len() >= 10);
    for vector in invalid {
        let name = field(&vector, "name");
        let error = decode_one(&hex_decode(field(&vector, "hex")))
            .expect_err(&format!("vector {name} decoded"));
        assert_eq!(
            variant(&error),
            field(&vector, "error"),
            "vector {name}: {error}"
        );
        assert_eq!(
            error.to_string(),
            field(&vector, "message"),
            "vector {name}'s message"
        );
    }
}

/// Every vector appears in PROTOCOL.md as a fenced block:
///
/// ```text
/// vector: NAME
/// 0000000d        # comment
/// ...
/// ```
///
/// whose hex digits, without comments and spaces, are the vector's bytes.
#[test]
fn protocol_md_shows_every_vector_with_the_same_bytes() {
    let mut documented = std::collections::BTreeMap::new();
    let mut lines = PROTOCOL_MD.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("vector: ") else {
            continue;
        };
        let mut hex = String::new();
        for line in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            let bytes = line.split('#').next().unwrap_or_default();
            hex.extend(bytes.chars().filter(|c| !c.is_whitespace()));
        }
        let previous = documented.insert(name.trim().to_owned(), hex);
        assert!(previous.is_none(), "PROTOCOL.md shows vector {name} twice");
    }
    let mut names = BTreeSet::new();
    for vector in vectors("valid").iter().chain(&vectors("invalid")) {
        let name = field(vector, "name");
        names.insert(name.to_owned());
        let shown = documented
            .get(name)
            .unwrap_or_else(|| panic!("PROTOCOL.md does not show vector {name}"));
        assert_eq!(
            shown,
            field(vector, "hex"),
            "PROTOCOL.md shows other bytes for {name}"
        );
    }
    let extra: Vec<_> = documented
        .keys()
        .filter(|name| !names.contains(*name))
        .collect();
    assert!(
        extra.is_empty(),
        "PROTOCOL.md shows vectors missing from v1.json: {extra:?}"
    );
}

/// Each schema hash vector is FNV-1a of its parts, as PROTOCOL.md section 13
/// defines it, and is what the macros compute for the function it names; and
/// PROTOCOL.md shows it.
#[test]
fn schema_hash_vectors_are_what_the_macros_compute() {
    let hashes = vectors("schema_hashes");
    assert!(hashes.len() >= 3);
    for vector in hashes {
        let name = field(&vector, "name");
        let parts: Vec<&str> = vector["parts"]
            .as_array()
            .unwrap_or_else(|| panic!("vector {name} lacks parts"))
            .iter()
            .map(|part| part.as_str().expect("parts are strings"))
            .collect();
        let hex = field(&vector, "hash");
        let hash = u64::from_str_radix(hex, 16).expect("a hex u64");
        assert_eq!(
            rpc_core::__private::schema_hash(&parts),
            hash,
            "vector {name}"
        );
        let from_macros = match name {
            "math.add" => Some(schema::add::SCHEMA_HASH),
            "kv::get" => Some(schema::KV_GET_SCHEMA_HASH),
            "spellings" => Some(schema::spellings::SCHEMA_HASH),
            _ => None,
        };
        if let Some(from_macros) = from_macros {
            assert_eq!(from_macros, hash, "the macros hash {name} otherwise");
        }
        assert!(
            PROTOCOL_MD.contains(&format!("`{hex}`")),
            "PROTOCOL.md does not show the schema hash of {name}"
        );
    }
}

/// A real server lists the functions of [`schema`] exactly as the
/// `describe-response` vector does: sorted by name, with hashes, roles and
/// the doc comments as descriptions.
#[tokio::test]
async fn a_server_describes_its_functions_as_the_vector_shows() {
    struct Empty;
    impl schema::KeyValue for Empty {
        async fn get(&self, _key: String) -> Option<String> {
            None
        }
    }
    let server = rpc_core::Server::builder()
        .remote(schema::add::function())
        .service(schema::KeyValueServer::new(Empty))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = rpc_core::Client::new(server.local_addr().to_string());
    assert_eq!(client.describe().await.unwrap(), described_functions());
    server.shutdown(std::time::Duration::from_secs(1)).await;
}

/// Prints the hex of every expected frame; used to write new vectors.
#[test]
#[ignore = "a tool for writing vectors, not a check"]
fn print_vector_hex() {
    for vector in vectors("valid") {
        let name = field(&vector, "name");
        let mut encoded = BytesMut::new();
        FrameCodec::new()
            .encode(expected(name), &mut encoded)
            .unwrap();
        println!("{name}: {}", hex_encode(&encoded));
    }
}
