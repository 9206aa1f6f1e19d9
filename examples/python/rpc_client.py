"""A client for the rpc-suite wire protocol, version 1, in Python 3.

Written from ``PROTOCOL.md`` alone, with the standard library only: copy this
one file next to your program. It speaks to any server of the protocol (an
``rpc_core::Server``, ``worker serve``, ``worker coordinator``):

* the handshake, with a token (section 8);
* calls to named functions, with deadlines and schema hashes (sections 6, 13);
* sending and requesting named data (section 6);
* shipping WebAssembly modules, hash first (section 10);
* running WASI jobs and typed calls on workers (section 16).

Payloads larger than a frame travel chunked (section 9), both ways.

>>> from rpc_client import Worker                      # doctest: +SKIP
>>> with Worker.connect("127.0.0.1:7070", token="s3cret") as worker:
...     module = worker.ship(open("job.wasm", "rb").read())
...     output = worker.run(module, args=["--count", "3"], stdin=b"hello")
...     print(output.exit_code, output.stdout, output.receipt.fuel)

One connection serves one request at a time; open one ``Client`` per thread
for parallel requests. Run ``python3 rpc_client.py --help`` for the
command-line interface.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

PROTOCOL_VERSION = 1
HEADER_LEN = 12
#: The frame limit before the handshake is done, and the smallest any peer
#: may announce (section 3).
HANDSHAKE_FRAME_LEN = 16384
DEFAULT_MAX_FRAME_LEN = 1 << 20
DEFAULT_MAX_STREAMS = 1024
DEFAULT_MAX_PAYLOAD_LEN = 64 << 20
#: The chunk size the Rust implementation uses (section 9).
CHUNK_LEN = 256 << 10
MAX_NAME_LEN = 1024
DESCRIBE_METHOD = "rpc.describe"

# Message kinds (section 6).
HELLO, WELCOME, PING, PONG, GOAWAY, ERROR, VERSION_MISMATCH = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
ROUTE, ROUTED, JOIN = 0x08, 0x09, 0x0a
CALL, RESPONSE, CANCEL = 0x10, 0x11, 0x12
SEND_DATA, REQUEST_DATA = 0x20, 0x21
OFFER_PROGRAM, SEND_PROGRAM = 0x30, 0x31
CHUNK, CHUNK_END = 0x40, 0x41

KIND_NAMES = {
    HELLO: "Hello", WELCOME: "Welcome", PING: "Ping", PONG: "Pong", GOAWAY: "GoAway",
    ERROR: "Error", VERSION_MISMATCH: "VersionMismatch", ROUTE: "Route", ROUTED: "Routed",
    JOIN: "Join", CALL: "Call", RESPONSE: "Response",
    CANCEL: "Cancel", SEND_DATA: "SendData", REQUEST_DATA: "RequestData",
    OFFER_PROGRAM: "OfferProgram", SEND_PROGRAM: "SendProgram", CHUNK: "Chunk",
    CHUNK_END: "ChunkEnd",
}

# Peer roles (Hello, Welcome).
CLIENT, SERVER, WORKER, COORDINATOR = 0, 1, 2, 3
ROLE_NAMES = {CLIENT: "client", SERVER: "server", WORKER: "worker", COORDINATOR: "coordinator"}

# Status codes (section 7).
STATUS_NAMES = {
    200: "ok", 400: "bad request", 403: "forbidden", 404: "not found", 409: "incompatible",
    422: "application error", 426: "tls required", 429: "resource exhausted",
    499: "cancelled", 500: "internal", 501: "unsupported", 503: "unavailable",
    504: "deadline exceeded",
}


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class ProtocolError(Exception):
    """Bytes that break the protocol. ``variant`` names the rule broken, as
    the test vectors do: ``FrameTooLarge``, ``FrameTooShort``, ``Truncated``,
    ``UnsupportedVersion``, ``UnknownKind``, ``ReservedBits``, ``WrongStream``,
    ``MalformedBody``, ``TrailingBytes`` or ``InvalidField``."""

    def __init__(self, variant: str, message: str):
        super().__init__(message)
        self.variant = variant


class HandshakeRefused(Exception):
    """The server refused the connection with an ``Error`` frame: 403 for a
    token, 400 for a malformed ``Hello``, 503 when it is full, 426 when it
    wants TLS."""

    def __init__(self, status: int, message: str):
        super().__init__(f"the server refused the connection: {status} {message}")
        self.status = status
        self.message = message


class RouteRefused(HandshakeRefused):
    """A supernode refused to relay (section 8): 404 when the worker is not
    attached to it, 503 when it has no place left, 504 when the worker did
    not dial back in time."""


class VersionNotSpoken(Exception):
    """The server speaks other protocol versions than this client (1)."""

    def __init__(self, min_version: int, max_version: int):
        super().__init__(
            f"the server speaks protocol versions {min_version}..={max_version}, this client 1")
        self.min_version = min_version
        self.max_version = max_version


class ConnectionLost(Exception):
    """The connection closed (or the server sent a fatal ``Error``) before
    the answer came. ``status`` is the ``Error`` frame's, if one came."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class StatusError(Exception):
    """A request answered with a status other than 200. ``payload`` holds the
    function's own encoded error for 422 (empty otherwise)."""

    def __init__(self, status: int, message: str, payload: bytes = b""):
        name = STATUS_NAMES.get(status, f"{status // 100}xx")
        super().__init__(f"{status} {name}: {message}" if message else f"{status} {name}")
        self.status = status
        self.message = message
        self.payload = payload

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later or elsewhere (5xx, 429)."""
        return self.status >= 500 or self.status == 429


# --------------------------------------------------------------------------
# postcard (section 5)
# --------------------------------------------------------------------------


class Writer:
    """Appends postcard encodings to a byte buffer."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def u8(self, value: int) -> "Writer":
        self.buf.append(value)
        return self

    def varint(self, value: int) -> "Writer":
        if value < 0:
            raise ValueError("varints are unsigned")
        while value >= 0x80:
            self.buf.append((value & 0x7F) | 0x80)
            value >>= 7
        self.buf.append(value)
        return self

    def signed(self, value: int, bits: int = 64) -> "Writer":
        """A zigzag-encoded ``i32`` or ``i64``."""
        return self.varint(((value << 1) ^ (value >> (bits - 1))) & ((1 << bits) - 1))

    def boolean(self, value: bool) -> "Writer":
        return self.u8(1 if value else 0)

    def string(self, value: str) -> "Writer":
        return self.bytes(value.encode("utf-8"))

    def bytes(self, value: bytes) -> "Writer":
        """Length-prefixed bytes (a ``String``'s or a ``Vec<u8>``'s layout)."""
        self.varint(len(value))
        self.buf += value
        return self

    def raw(self, value: bytes) -> "Writer":
        self.buf += value
        return self

    def option(self, value, write: Callable[["Writer", object], object]) -> "Writer":
        if value is None:
            return self.u8(0)
        self.u8(1)
        write(self, value)
        return self

    def seq(self, values, write: Callable[["Writer", object], object]) -> "Writer":
        self.varint(len(values))
        for value in values:
            write(self, value)
        return self

    def done(self) -> bytes:
        return bytes(self.buf)


class Reader:
    """Reads postcard encodings from bytes; every failure is a
    ``ProtocolError('MalformedBody', ...)`` naming ``what``."""

    def __init__(self, data: bytes, what: str = "body"):
        self.data = memoryview(data)
        self.at = 0
        self.what = what

    def _fail(self, reason: str) -> ProtocolError:
        return ProtocolError("MalformedBody", f"malformed {self.what}: {reason}")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.at:
            raise self._fail(f"{n} bytes wanted, {len(self.data) - self.at} left")
        out = bytes(self.data[self.at:self.at + n])
        self.at += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self, bits: int = 64) -> int:
        max_len = (bits + 6) // 7
        value = 0
        for index in range(max_len):
            byte = self.u8()
            value |= (byte & 0x7F) << (7 * index)
            if byte & 0x80 == 0:
                if value >> bits:
                    raise self._fail(f"varint overflows u{bits}")
                return value
        raise self._fail(f"varint longer than {max_len} bytes")

    def signed(self, bits: int = 64) -> int:
        raw = self.varint(bits)
        return (raw >> 1) ^ -(raw & 1)

    def boolean(self) -> bool:
        byte = self.u8()
        if byte > 1:
            raise self._fail(f"bool {byte}")
        return byte == 1

    def bytes(self) -> bytes:
        return self.take(self.varint())

    def string(self) -> str:
        raw = self.bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise self._fail(f"invalid UTF-8 ({error.reason})") from None

    def option(self, read: Callable[["Reader"], object]):
        tag = self.u8()
        if tag == 0:
            return None
        if tag == 1:
            return read(self)
        raise self._fail(f"option tag {tag}")

    def seq(self, read: Callable[["Reader"], object]) -> list:
        count = self.varint()
        # Each element takes at least one byte: a count beyond what is left
        # is a lie, refused before any list grows.
        if count > self.remaining():
            raise self._fail(f"{count} elements announced, {self.remaining()} bytes left")
        return [read(self) for _ in range(count)]

    def remaining(self) -> int:
        return len(self.data) - self.at

    def rest(self) -> bytes:
        return self.take(self.remaining())

    def end(self, what: Optional[str] = None) -> None:
        if self.remaining():
            raise ProtocolError(
                "TrailingBytes",
                f"{what or self.what} is followed by unexpected bytes ({self.remaining()})")


# --------------------------------------------------------------------------
# Messages (section 6)
# --------------------------------------------------------------------------


@dataclass
class Chunked:
    """A payload announced by its length, whose bytes follow in ``Chunk``
    frames (section 9)."""

    length: int


Payload = Union[bytes, Chunked]


@dataclass
class Limits:
    max_frame_len: int = DEFAULT_MAX_FRAME_LEN
    max_streams: int = DEFAULT_MAX_STREAMS
    max_payload_len: int = DEFAULT_MAX_PAYLOAD_LEN
    idle_timeout_ms: Optional[int] = None


@dataclass
class Hello:
    peer_name: str
    role: int
    token: Optional[str]
    limits: Limits


@dataclass
class Welcome:
    peer_name: str
    role: int
    access_role: Optional[str]
    limits: Limits
    server_time_ms: int


@dataclass
class Ping:
    nonce: int


@dataclass
class Pong:
    nonce: int


@dataclass
class GoAway:
    last_stream_id: int
    status: int
    message: str


@dataclass
class Error:
    status: int
    message: str


@dataclass
class VersionMismatch:
    min_version: int
    max_version: int


@dataclass
class Route:
    worker: str


@dataclass
class Routed:
    pass


@dataclass
class Join:
    ticket: bytes


@dataclass
class Call:
    method: str
    timeout_ms: Optional[int] = None
    idempotency_key: Optional[bytes] = None
    schema_hash: Optional[int] = None
    payload: Payload = b""


@dataclass
class Response:
    status: int
    server_time_ms: int
    elapsed_us: int
    message: str
    payload: Payload = b""


@dataclass
class Cancel:
    pass


@dataclass
class SendData:
    name: str
    payload: Payload


@dataclass
class RequestData:
    name: str


@dataclass
class OfferProgram:
    hash: bytes
    len: int


@dataclass
class SendProgram:
    hash: bytes
    payload: Payload


@dataclass
class Chunk:
    data: bytes


@dataclass
class ChunkEnd:
    hash: Optional[bytes]


@dataclass
class Frame:
    stream_id: int
    message: object


_KIND_OF = {
    Hello: HELLO, Welcome: WELCOME, Ping: PING, Pong: PONG, GoAway: GOAWAY, Error: ERROR,
    VersionMismatch: VERSION_MISMATCH, Route: ROUTE, Routed: ROUTED, Join: JOIN, Call: CALL, Response: RESPONSE, Cancel: CANCEL,
    SendData: SEND_DATA, RequestData: REQUEST_DATA, OfferProgram: OFFER_PROGRAM,
    SendProgram: SEND_PROGRAM, Chunk: CHUNK, ChunkEnd: CHUNK_END,
}


def _write_limits(w: Writer, limits: Limits) -> None:
    w.varint(limits.max_frame_len).varint(limits.max_streams).varint(limits.max_payload_len)
    w.option(limits.idle_timeout_ms, Writer.varint)


def _write_payload(w: Writer, payload: Payload) -> None:
    if isinstance(payload, Chunked):
        w.u8(1).varint(payload.length)
    else:
        w.u8(0).raw(payload)


def encode_body(message) -> bytes:
    """The postcard body of ``message``."""
    w = Writer()
    m = message
    if isinstance(m, Hello):
        w.string(m.peer_name).varint(m.role).option(m.token, Writer.string)
        _write_limits(w, m.limits)
    elif isinstance(m, Welcome):
        w.string(m.peer_name).varint(m.role).option(m.access_role, Writer.string)
        _write_limits(w, m.limits)
        w.varint(m.server_time_ms)
    elif isinstance(m, (Ping, Pong)):
        w.varint(m.nonce)
    elif isinstance(m, GoAway):
        w.varint(m.last_stream_id).varint(m.status).string(m.message)
    elif isinstance(m, Error):
        w.varint(m.status).string(m.message)
    elif isinstance(m, VersionMismatch):
        w.u8(m.min_version).u8(m.max_version)
    elif isinstance(m, Route):
        w.string(m.worker)
    elif isinstance(m, Routed):
        pass
    elif isinstance(m, Join):
        w.raw(m.ticket)
    elif isinstance(m, Call):
        w.string(m.method).option(m.timeout_ms, Writer.varint)
        w.option(m.idempotency_key, Writer.raw).option(m.schema_hash, Writer.varint)
        _write_payload(w, m.payload)
    elif isinstance(m, Response):
        w.varint(m.status).varint(m.server_time_ms).varint(m.elapsed_us).string(m.message)
        _write_payload(w, m.payload)
    elif isinstance(m, Cancel):
        pass
    elif isinstance(m, SendData):
        w.string(m.name)
        _write_payload(w, m.payload)
    elif isinstance(m, RequestData):
        w.string(m.name)
    elif isinstance(m, OfferProgram):
        w.raw(m.hash).varint(m.len)
    elif isinstance(m, SendProgram):
        w.raw(m.hash)
        _write_payload(w, m.payload)
    elif isinstance(m, Chunk):
        w.raw(m.data)
    elif isinstance(m, ChunkEnd):
        w.option(m.hash, Writer.raw)
    else:
        raise TypeError(f"not a message: {m!r}")
    return w.done()


def encode_frame(frame: Frame) -> bytes:
    """One whole frame: length prefix, header and body (section 3)."""
    body = encode_body(frame.message)
    header = struct.pack(">IBBBBQ", HEADER_LEN + len(body), PROTOCOL_VERSION,
                         _KIND_OF[type(frame.message)], 0, 0, frame.stream_id)
    return header + body


def _invalid(field_name: str, kind: str, reason: str) -> ProtocolError:
    return ProtocolError("InvalidField", f"invalid {field_name} in {kind}: {reason}")


def _read_status(r: Reader) -> int:
    status = r.varint(16)
    if not 100 <= status <= 599:
        raise r._fail(f"status {status} is outside 100..=599")
    return status


def _read_name(r: Reader, field_name: str, kind: str, may_be_empty: bool) -> str:
    name = r.string()
    if not name and not may_be_empty:
        raise _invalid(field_name, kind, "is empty")
    if len(name.encode("utf-8")) > MAX_NAME_LEN:
        raise _invalid(field_name, kind, f"is longer than {MAX_NAME_LEN} bytes")
    return name


def _read_limits(r: Reader, kind: str) -> Limits:
    limits = Limits(r.varint(32), r.varint(32), r.varint(64), r.option(lambda r: r.varint(32)))
    if limits.max_frame_len < HANDSHAKE_FRAME_LEN:
        raise _invalid("max_frame_len", kind, f"below the {HANDSHAKE_FRAME_LEN}-byte minimum")
    if limits.max_streams < 1:
        raise _invalid("max_streams", kind, "is zero")
    if limits.idle_timeout_ms == 0:
        raise _invalid("idle_timeout_ms", kind, "is zero")
    return limits


def _read_role(r: Reader) -> int:
    role = r.varint(32)
    if role not in ROLE_NAMES:
        raise r._fail(f"peer role {role}")
    return role


def _read_payload(r: Reader, kind: str) -> Payload:
    tag = r.u8()
    if tag == 0:
        return r.rest()
    if tag == 1:
        length = r.varint()
        r.end(f"{kind} body")
        return Chunked(length)
    raise r._fail(f"payload tag {tag}")


def decode_body(kind: int, body: bytes):
    """The message of ``kind`` that ``body`` encodes; ``ProtocolError`` if it
    does not decode, has bytes left over, or breaks a field's rule."""
    name = KIND_NAMES[kind]
    r = Reader(body, f"{name} body")
    if kind == HELLO:
        m = Hello(_read_name(r, "peer_name", name, True), _read_role(r),
                  r.option(Reader.string), _read_limits(r, name))
    elif kind == WELCOME:
        m = Welcome(_read_name(r, "peer_name", name, True), _read_role(r),
                    r.option(Reader.string), _read_limits(r, name), r.varint())
    elif kind == PING:
        m = Ping(r.varint())
    elif kind == PONG:
        m = Pong(r.varint())
    elif kind == GOAWAY:
        m = GoAway(r.varint(), _read_status(r), r.string())
    elif kind == ERROR:
        m = Error(_read_status(r), r.string())
    elif kind == VERSION_MISMATCH:
        m = VersionMismatch(r.u8(), r.u8())
    elif kind == ROUTE:
        m = Route(_read_name(r, "worker", name, False))
    elif kind == ROUTED:
        m = Routed()
    elif kind == JOIN:
        m = Join(r.take(16))
    elif kind == CALL:
        return Call(_read_name(r, "method", name, False), r.option(Reader.varint),
                    r.option(lambda r: r.take(16)), r.option(Reader.varint),
                    _read_payload(r, name))
    elif kind == RESPONSE:
        return Response(_read_status(r), r.varint(), r.varint(), r.string(),
                        _read_payload(r, name))
    elif kind == CANCEL:
        m = Cancel()
    elif kind == SEND_DATA:
        return SendData(_read_name(r, "name", name, False), _read_payload(r, name))
    elif kind == REQUEST_DATA:
        m = RequestData(_read_name(r, "name", name, False))
    elif kind == OFFER_PROGRAM:
        m = OfferProgram(r.take(32), r.varint())
    elif kind == SEND_PROGRAM:
        return SendProgram(r.take(32), _read_payload(r, name))
    elif kind == CHUNK:
        return Chunk(r.rest())
    else:
        m = ChunkEnd(r.option(lambda r: r.take(32)))
    r.end()
    return m


def header_problem(kind: int, version: int, flags: int, reserved: int,
                   stream_id: int) -> Optional[ProtocolError]:
    """The first header rule a frame breaks, checked in the order of
    section 3, or ``None``."""
    if version != PROTOCOL_VERSION and kind != VERSION_MISMATCH:
        return ProtocolError(
            "UnsupportedVersion",
            f"protocol version {version} is not supported (this peer speaks 1..=1)")
    if kind not in KIND_NAMES:
        return ProtocolError("UnknownKind", f"unknown message kind 0x{kind:02x}")
    if flags or reserved:
        return ProtocolError(
            "ReservedBits",
            f"reserved header bits are set (flags 0x{flags:02x}, reserved 0x{reserved:02x})")
    on_connection = kind < 0x10
    if on_connection != (stream_id == 0):
        return ProtocolError(
            "WrongStream", f"{KIND_NAMES[kind]} may not travel on stream {stream_id}")
    return None


class FrameDecoder:
    """Cuts frames out of bytes as they arrive. ``feed`` bytes, then call
    ``next_frame`` until it returns ``None`` (more bytes needed)."""

    def __init__(self, max_frame_len: int = DEFAULT_MAX_FRAME_LEN):
        self.max_frame_len = max_frame_len
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next_frame(self) -> Optional[Frame]:
        if len(self.buf) < 4:
            return None
        (length,) = struct.unpack_from(">I", self.buf)
        if length < HEADER_LEN:
            raise ProtocolError(
                "FrameTooShort", f"frame of {length} bytes is shorter than the 12-byte header")
        if length > self.max_frame_len:
            raise ProtocolError(
                "FrameTooLarge",
                f"frame of {length} bytes exceeds the limit of {self.max_frame_len}")
        if len(self.buf) < 4 + HEADER_LEN:
            return None
        version, kind, flags, reserved, stream_id = struct.unpack_from(">BBBBQ", self.buf, 4)
        problem = header_problem(kind, version, flags, reserved, stream_id)
        if problem:
            raise problem
        if kind in (HELLO, WELCOME, ROUTE, ROUTED, JOIN) and length > HANDSHAKE_FRAME_LEN:
            raise ProtocolError(
                "FrameTooLarge",
                f"frame of {length} bytes exceeds the limit of {HANDSHAKE_FRAME_LEN}")
        if len(self.buf) < 4 + length:
            return None
        body = bytes(self.buf[4 + HEADER_LEN:4 + length])
        del self.buf[:4 + length]
        return Frame(stream_id, decode_body(kind, body))

    def finish(self) -> None:
        """Call at the end of the input: bytes left over are a truncated frame."""
        if self.buf:
            wanted = 4
            if len(self.buf) >= 4:
                wanted = 4 + max(struct.unpack_from(">I", self.buf)[0], HEADER_LEN)
            raise ProtocolError(
                "Truncated",
                f"connection closed in the middle of a frame ({len(self.buf)} of at least "
                f"{wanted} bytes arrived)")


# --------------------------------------------------------------------------
# The worker's types (section 16)
# --------------------------------------------------------------------------


@dataclass
class JobLimits:
    """Limits tighter than the worker's; ``None`` keeps the worker's own."""

    memory_bytes: Optional[int] = None
    fuel: Optional[int] = None
    wall_time_ms: Optional[int] = None
    output_bytes: Optional[int] = None

    def write(self, w: Writer) -> None:
        for value in (self.memory_bytes, self.fuel, self.wall_time_ms, self.output_bytes):
            w.option(value, Writer.varint)


MODULE_ORIGINS = {0: "compiled", 1: "memory cache", 2: "disk cache"}


@dataclass
class Receipt:
    """What a job cost, as the worker measured it."""

    fuel: int
    wall_time_us: int
    queued_us: int
    instantiate_us: int
    peak_memory_bytes: int
    module: str
    compile_us: int
    stdout_truncated: bool
    stderr_truncated: bool
    relayed_to: Optional[str]

    @classmethod
    def read(cls, r: Reader) -> "Receipt":
        numbers = [r.varint() for _ in range(5)]
        origin = r.varint(32)
        if origin not in MODULE_ORIGINS:
            raise r._fail(f"module origin {origin}")
        return cls(*numbers, MODULE_ORIGINS[origin], r.varint(), r.boolean(), r.boolean(),
                   r.option(Reader.string))


@dataclass
class RunOutput:
    exit_code: int
    stdout: bytes
    stderr: bytes
    receipt: Receipt


@dataclass
class CallOutput:
    output: bytes
    stderr: bytes
    receipt: Receipt


@dataclass
class WorkerStatus:
    concurrency: int
    running: int
    peak_running: int
    queued: int
    finished: int
    compiled: int
    disk_hits: int
    modules_in_memory: int


RESOURCES = {0: "memory", 1: "table", 2: "fuel", 3: "stack", 4: "output"}

#: ``JobError`` variants: index -> (kind, field readers).
_JOB_ERRORS = {
    0: ("module_not_found", [("hash", lambda r: r.take(32).hex())]),
    1: ("invalid_module", [("reason", Reader.string)]),
    2: ("unknown_import", [("module", Reader.string), ("name", Reader.string)]),
    3: ("bad_export", [("name", Reader.string), ("reason", Reader.string)]),
    4: ("deadline_exceeded", [("elapsed_ms", Reader.varint), ("stderr", Reader.bytes)]),
    5: ("resource_exhausted", [("resource", lambda r: RESOURCES.get(r.varint(32), "unknown")),
                               ("stderr", Reader.bytes)]),
    6: ("trap", [("message", Reader.string), ("stderr", Reader.bytes)]),
    7: ("cancelled", []),
    8: ("abi", [("reason", Reader.string)]),
    9: ("internal", [("reason", Reader.string)]),
    10: ("directory_not_granted", [("name", Reader.string)]),
    11: ("busy", [("reason", Reader.string)]),
    12: ("forbidden", [("reason", Reader.string)]),
    13: ("output_limit", [("stdout", Reader.bytes), ("stderr", Reader.bytes),
                          ("receipt", Receipt.read)]),
}

#: Who failed, by job error kind: the guest program, the caller, or the host.
_JOB_ERROR_FAULT = {
    "module_not_found": "caller", "invalid_module": "caller", "unknown_import": "caller",
    "bad_export": "caller", "directory_not_granted": "caller", "forbidden": "caller",
    "deadline_exceeded": "guest", "resource_exhausted": "guest", "trap": "guest",
    "abi": "guest", "output_limit": "guest", "cancelled": "caller",
    "internal": "host", "busy": "host",
}


class JobFailed(StatusError):
    """A job that ended without a result (status 422 with a ``JobError``).
    ``kind`` is the variant (``"trap"``, ``"resource_exhausted"``, ...),
    ``fields`` its fields, and ``fault`` who failed: ``"guest"``,
    ``"caller"`` or ``"host"``."""

    def __init__(self, message: str, payload: bytes):
        r = Reader(payload, "JobError")
        index = r.varint(32)
        if index not in _JOB_ERRORS:
            raise r._fail(f"JobError variant {index}")
        kind, readers = _JOB_ERRORS[index]
        self.kind = kind
        self.fields = {name: read(r) for name, read in readers}
        r.end()
        self.fault = _JOB_ERROR_FAULT[kind]
        shown = {k: v for k, v in self.fields.items() if k not in ("stderr", "stdout", "receipt")}
        super().__init__(422, f"{kind} {shown}" if shown else kind, payload)


@dataclass
class FunctionInfo:
    """One function a server offers, as ``rpc.describe`` lists it
    (section 13)."""

    name: str
    schema_hash: Optional[int]
    roles: Optional[list]
    description: str


def parse_describe(payload: bytes) -> list:
    """The ``Vec<FunctionInfo>`` an ``rpc.describe`` call returns."""
    r = Reader(payload, "rpc.describe result")
    infos = r.seq(lambda r: FunctionInfo(
        r.string(), r.option(Reader.varint), r.option(lambda r: r.seq(Reader.string)),
        r.string()))
    r.end()
    return infos


def schema_hash(parts) -> int:
    """FNV-1a 64 over ``parts``, each followed by a zero byte: how section 13
    hashes a function's name and Rust types. A client in Python reads the
    hashes from ``describe`` rather than spelling Rust types itself; this is
    for tools that do."""
    value = 0xCBF29CE484222325
    for part in parts:
        for byte in part.encode("utf-8") + b"\0":
            value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def content_hash(program: bytes) -> bytes:
    """A program's identity: the SHA-256 of its bytes (section 10)."""
    return hashlib.sha256(program).digest()


# --------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------


MAX_ROUTES = 8


def _split_route(route: str):
    """One route: ``host:port``, or ``worker@host:port`` through a supernode
    (section 8). Returns (worker or None, host, port)."""
    if route.startswith("tls://"):
        raise ValueError("this client speaks plaintext only; use a plaintext address")
    worker, at, rest = route.rpartition("@")
    if not at:
        worker, rest = None, route
    elif not worker:
        raise ValueError(f"expected WORKER@HOST:PORT, got {route!r}")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {rest!r}")
    return worker, host.strip("[]"), int(port)


def _split_addr(addr: str):
    """The routes an address names: one, or up to 8 separated by commas
    (section 8, "Several routes to one server")."""
    routes = [route.strip() for route in addr.split(",")]
    if len(routes) > MAX_ROUTES:
        raise ValueError(f"{addr!r} names {len(routes)} routes, more than {MAX_ROUTES}")
    if any(not route for route in routes):
        raise ValueError(f"{addr!r} has an empty route")
    return [_split_route(route) for route in routes]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Client:
    """One connection to a server of the protocol.

    ``token`` is sent in the ``Hello``. Over plaintext, a token is sent only
    to a loopback address unless ``allow_plaintext_token`` says otherwise
    (section 2: anyone on the path could read it). ``timeout`` bounds each
    wait for the server, in seconds (``None``: wait as long as the call's
    deadline allows).
    """

    def __init__(self, addr: str, token: Optional[str] = None, *, peer_name: str = "python",
                 limits: Optional[Limits] = None, timeout: Optional[float] = 60.0,
                 allow_plaintext_token: bool = False):
        routes = _split_addr(addr)
        remote = [host for _, host, _ in routes if not _is_loopback(host)]
        if token is not None and remote and not allow_plaintext_token:
            raise ValueError(
                f"refusing to send a token in plaintext to {addr}: it could be read on the way "
                "(pass allow_plaintext_token=True on a network you trust)")
        self.addr = addr
        self.token = token
        self.peer_name = peer_name
        self.limits = limits or Limits()
        self.timeout = timeout
        self._routes = routes
        self.route: Optional[str] = None
        self._sock: Optional[socket.socket] = None
        self.welcome: Optional[Welcome] = None

    @classmethod
    def connect(cls, addr: str, token: Optional[str] = None, **options) -> "Client":
        """A client already connected and past the handshake."""
        client = cls(addr, token, **options)
        client._ensure_connected()
        return client

    def __enter__(self):
        self._ensure_connected()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; the next request opens a new one."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    # -- handshake ---------------------------------------------------------

    def _ensure_connected(self) -> None:
        if self._sock is not None:
            self._drain_pending()
        if self._sock is None:
            self._open()

    def _open(self) -> None:
        # Routes are tried one at a time, in order: section 8 allows it (a
        # client that races them finds the fastest sooner).
        failures = []
        refusal = None
        for worker, host, port in self._routes:
            shown = f"{worker}@{host}:{port}" if worker else f"{host}:{port}"
            try:
                self._open_route(worker, host, port)
            except (OSError, ConnectionLost, TimeoutError) as error:
                failures.append(f"{shown}: {error}")
                continue
            except RouteRefused as refused:
                # The supernode's refusal is the route's; the server's own
                # (HandshakeRefused) is final.
                failures.append(f"{shown}: {refused}")
                refusal = refused
                continue
            self.route = shown
            return
        if refusal is not None and len(self._routes) == 1:
            raise refusal
        raise ConnectionLost(f"no route to {self.addr} answered: " + "; ".join(failures))

    def _open_route(self, worker: Optional[str], host: str, port: int) -> None:
        sock = socket.create_connection((host, port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._decoder = FrameDecoder(HANDSHAKE_FRAME_LEN)
        self._next_stream = 1
        self._going_away: Optional[GoAway] = None
        self._last_sent = time.monotonic()
        if worker is not None:
            # Through a supernode: Route first, then the handshake with the
            # worker itself once the supernode answers Routed.
            try:
                self._send(Frame(0, Route(worker)))
                frame = self._read_frame(self._deadline(None))
            except BaseException:
                self.close()
                raise
            if isinstance(frame.message, Error):
                self.close()
                raise RouteRefused(frame.message.status, frame.message.message)
            if not isinstance(frame.message, Routed):
                self.close()
                raise ProtocolError("InvalidField",
                                    f"expected Routed, got {type(frame.message).__name__}")
        try:
            self._send(Frame(0, Hello(self.peer_name, CLIENT, self.token, self.limits)))
            frame = self._read_frame(self._deadline(None))
            m = frame.message
            if isinstance(m, Error):
                raise HandshakeRefused(m.status, m.message)
            if isinstance(m, VersionMismatch):
                raise VersionNotSpoken(m.min_version, m.max_version)
            if not isinstance(m, Welcome):
                raise ProtocolError("InvalidField", f"expected Welcome, got {type(m).__name__}")
        except BaseException:
            self.close()
            raise
        self.welcome = m
        self._decoder.max_frame_len = self.limits.max_frame_len

    # -- frames ------------------------------------------------------------

    def _send(self, *frames: Frame) -> None:
        data = b"".join(encode_frame(frame) for frame in frames)
        try:
            self._sock.sendall(data)
        except OSError as error:
            self.close()
            raise ConnectionLost(f"the connection to {self.addr} failed: {error}") from None
        self._last_sent = time.monotonic()

    def _deadline(self, timeout_ms: Optional[int]) -> Optional[float]:
        waits = [w for w in (self.timeout,
                             None if timeout_ms is None else timeout_ms / 1000 + 5.0)
                 if w is not None]
        return time.monotonic() + max(waits) if waits else None

    def _read_frame(self, deadline: Optional[float]) -> Frame:
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                return frame
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError(f"no answer from {self.addr} in time")
            self._sock.settimeout(wait)
            try:
                data = self._sock.recv(1 << 16)
            except socket.timeout:
                raise TimeoutError(f"no answer from {self.addr} in time") from None
            except OSError as error:
                self.close()
                raise ConnectionLost(f"the connection to {self.addr} failed: {error}") from None
            if not data:
                self.close()
                raise ConnectionLost(f"{self.addr} closed the connection")
            self._decoder.feed(data)

    def _drain_pending(self) -> None:
        """Handles what the server sent while the connection was idle (pings,
        a ``GoAway`` before an idle close) without waiting; closes the
        connection if the server left, so that the next request opens a new
        one."""
        try:
            while self._sock is not None:
                frame = self._decoder.next_frame()
                if frame is not None:
                    self._on_connection_frame(frame)
                    continue
                readable, _, _ = select.select([self._sock], [], [], 0)
                if not readable:
                    break
                data = self._sock.recv(1 << 16)
                if not data:
                    self.close()
                    break
                self._decoder.feed(data)
        except (OSError, ConnectionLost, ProtocolError, VersionNotSpoken):
            self.close()
        if self._sock is not None and self._going_away is not None:
            self.close()
        if self._sock is not None and self.welcome and self.welcome.limits.idle_timeout_ms:
            # Keep the connection: ping once half the server's idle timeout
            # has passed since this side last sent anything (section 8).
            half = self.welcome.limits.idle_timeout_ms / 2000
            if time.monotonic() - self._last_sent >= half:
                self._send(Frame(0, Ping(time.monotonic_ns() & 0xFFFFFFFF)))

    def _on_connection_frame(self, frame: Frame) -> None:
        """Frames that are not the answer awaited: keepalive, shutdown,
        errors and requests the server opened."""
        m = frame.message
        if isinstance(m, Ping):
            self._send(Frame(0, Pong(m.nonce)))
        elif isinstance(m, GoAway):
            self._going_away = m
        elif isinstance(m, Error):
            self.close()
            raise ConnectionLost(f"the server ended the connection: {m.status} {m.message}",
                                 m.status)
        elif isinstance(m, VersionMismatch):
            self.close()
            raise VersionNotSpoken(m.min_version, m.max_version)
        elif isinstance(m, (Call, SendData, RequestData, OfferProgram, SendProgram)):
            if frame.stream_id % 2 == 1:
                self.close()
                raise ProtocolError("InvalidField",
                                    f"the server opened stream {frame.stream_id}, an odd id")
            # This client serves nothing: the server's requests are refused.
            self._send(Frame(frame.stream_id,
                             Response(501, int(time.time() * 1000), 0,
                                      "this Python client serves no requests")))
        # Pong, Cancel, Chunk and ChunkEnd of streams we do not know: ignored.

    # -- requests ----------------------------------------------------------

    def request(self, message, timeout_ms: Optional[int] = None) -> bytes:
        """Sends one request (``Call``, ``SendData``, ``RequestData``,
        ``OfferProgram`` or ``SendProgram``; a ``bytes`` payload is sent
        inline or chunked as it fits) and returns the 200 response's
        payload. Raises ``StatusError`` for any other status.

        A request the server did not take (it sent ``GoAway`` below its
        stream, or closed an idle connection) is sent once more on a new
        connection.
        """
        for attempt in range(2):
            self._ensure_connected()
            stream_id = self._next_stream
            self._next_stream += 2
            try:
                return self._exchange(stream_id, message, timeout_ms)
            except _NotTaken:
                self.close()
                if attempt == 1:
                    raise ConnectionLost(f"{self.addr} is shutting down") from None
        raise AssertionError("unreachable")

    def _exchange(self, stream_id: int, message, timeout_ms: Optional[int]) -> bytes:
        self._send_request(stream_id, message)
        deadline = self._deadline(timeout_ms)
        try:
            return self._await_response(stream_id, deadline)
        except TimeoutError:
            self._send(Frame(stream_id, Cancel()))
            raise

    def _send_request(self, stream_id: int, message) -> None:
        """Sends the request's frame, and its payload in chunks if the
        whole frame would not fit the server's frame limit (section 9)."""
        peer = self.welcome.limits
        payload = getattr(message, "payload", None)
        if not isinstance(payload, (bytes, bytearray)):
            self._send(Frame(stream_id, message))
            return
        payload = bytes(payload)
        if len(payload) > peer.max_payload_len:
            raise StatusError(429, f"the payload of {len(payload)} bytes exceeds the server's "
                                   f"limit of {peer.max_payload_len}")
        if len(encode_body(message)) + HEADER_LEN <= peer.max_frame_len:
            self._send(Frame(stream_id, message))
            return
        head = type(message)(**{**message.__dict__, "payload": Chunked(len(payload))})
        self._send(Frame(stream_id, head))
        chunk_len = min(CHUNK_LEN, peer.max_frame_len - HEADER_LEN)
        view = memoryview(payload)
        for at in range(0, len(payload), chunk_len):
            self._send(Frame(stream_id, Chunk(bytes(view[at:at + chunk_len]))))
        self._send(Frame(stream_id, ChunkEnd(None)))

    def _await_response(self, stream_id: int, deadline: Optional[float]) -> bytes:
        while True:
            frame = self._read_frame(deadline)
            if frame.stream_id == 0:
                self._on_connection_frame(frame)
                away = self._going_away
                if away is not None and away.last_stream_id < stream_id:
                    raise _NotTaken()
                continue
            if frame.stream_id == stream_id and isinstance(frame.message, Cancel):
                raise StatusError(499, "the server cancelled the request")
            if frame.stream_id != stream_id or not isinstance(frame.message, Response):
                self._on_connection_frame(frame)
                continue
            response = frame.message
            body = response.payload
            if isinstance(body, Chunked):
                body = self._receive_chunks(stream_id, body.length, deadline)
            if response.status != 200:
                raise StatusError(response.status, response.message, body)
            return body

    def _receive_chunks(self, stream_id: int, length: int, deadline: Optional[float]) -> bytes:
        if length > self.limits.max_payload_len:
            self._send(Frame(stream_id, Cancel()))
            raise StatusError(429, f"the response of {length} bytes exceeds this client's "
                                   f"limit of {self.limits.max_payload_len}")
        parts, got = [], 0
        while True:
            frame = self._read_frame(deadline)
            if frame.stream_id != stream_id:
                self._on_connection_frame(frame)
                continue
            m = frame.message
            if isinstance(m, Chunk):
                got += len(m.data)
                if got > length:
                    self._send(Frame(stream_id, Cancel()))
                    raise ProtocolError("InvalidField",
                                        f"the response's chunks exceed its {length} bytes")
                parts.append(m.data)
            elif isinstance(m, ChunkEnd):
                data = b"".join(parts)
                if got != length:
                    raise ProtocolError("InvalidField",
                                        f"the response's chunks hold {got} of {length} bytes")
                if m.hash is not None and hashlib.sha256(data).digest() != m.hash:
                    raise ProtocolError("InvalidField", "the response's SHA-256 does not match")
                return data
            else:
                raise ProtocolError("InvalidField",
                                    f"{type(m).__name__} in the middle of a chunked response")

    # -- the four purposes -------------------------------------------------

    def call(self, method: str, args: bytes = b"", *, timeout_ms: Optional[int] = None,
             schema_hash: Optional[int] = None,
             idempotency_key: Optional[bytes] = None) -> bytes:
        """Calls ``method`` with postcard-encoded ``args`` and returns the
        encoded result. A 422 ``StatusError`` carries the function's own
        encoded error as ``payload``."""
        return self.request(Call(method, timeout_ms, idempotency_key, schema_hash, args),
                            timeout_ms)

    def describe(self) -> list:
        """The functions the server offers, sorted by name (section 13)."""
        return parse_describe(self.call(DESCRIBE_METHOD))

    def send_data(self, name: str, value: bytes) -> None:
        """Stores ``value`` under ``name`` at the server."""
        self.request(SendData(name, value))

    def request_data(self, name: str) -> bytes:
        """The value stored under ``name``; ``StatusError`` 404 if none."""
        return self.request(RequestData(name))

    def ship(self, program: bytes) -> bytes:
        """Makes sure the server holds ``program``, offering its hash first
        and sending the bytes only if asked. Returns the program's hash."""
        digest = content_hash(program)
        try:
            self.request(OfferProgram(digest, len(program)))
            return digest
        except StatusError as error:
            if error.status != 404:
                raise
        self.request(SendProgram(digest, program))
        return digest


class _NotTaken(Exception):
    """The server said (by ``GoAway``) that it will not serve the stream."""


class Worker(Client):
    """A client of a worker (``worker serve``) or of a coordinator that
    relays jobs: ship modules, run them, read the worker's status."""

    def run(self, module: bytes, args=(), *, env=(), stdin: bytes = b"",
            limits: Optional[JobLimits] = None, stub_unknown_imports: bool = False,
            dirs=(), timeout_ms: Optional[int] = None) -> RunOutput:
        """Runs a shipped module (by its hash, from ``ship``) as a WASI
        command. A non-zero exit code is a result; a job that ended without
        one raises ``JobFailed``."""
        w = Writer().raw(module)
        w.seq(list(args), Writer.string)
        w.seq(list(env), lambda w, pair: w.string(pair[0]).string(pair[1]))
        w.bytes(stdin)
        (limits or JobLimits()).write(w)
        w.boolean(stub_unknown_imports).seq(list(dirs), Writer.string)
        r = Reader(self._job("worker.run", w.done(), timeout_ms), "RunOutput")
        output = RunOutput(r.signed(32), r.bytes(), r.bytes(), Receipt.read(r))
        r.end()
        return output

    def call_export(self, module: bytes, export: str, input: bytes = b"", *,
                    limits: Optional[JobLimits] = None, stub_unknown_imports: bool = False,
                    timeout_ms: Optional[int] = None) -> CallOutput:
        """Calls a typed export of a shipped module with ``input`` bytes
        (section 16's call ABI) and returns its output bytes."""
        w = Writer().raw(module).string(export).bytes(input)
        (limits or JobLimits()).write(w)
        w.boolean(stub_unknown_imports)
        r = Reader(self._job("worker.call", w.done(), timeout_ms), "CallOutput")
        output = CallOutput(r.bytes(), r.bytes(), Receipt.read(r))
        r.end()
        return output

    def status(self) -> WorkerStatus:
        """The worker's load and cache counters (needs the role ``admin``)."""
        r = Reader(self.call("worker.status"), "WorkerStatus")
        status = WorkerStatus(*[r.varint(bits) for bits in (32, 32, 32, 32, 64, 64, 64, 32)])
        r.end()
        return status

    def _job(self, method: str, args: bytes, timeout_ms: Optional[int]) -> bytes:
        try:
            return self.call(method, args, timeout_ms=timeout_ms)
        except StatusError as error:
            if error.status == 422 and not isinstance(error, JobFailed):
                raise JobFailed(error.message, error.payload) from None
            raise


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Ship a WebAssembly module to a worker and run it, or list a server's "
                    "functions, over the rpc-suite protocol.")
    parser.add_argument("--to", required=True, help="the server, HOST:PORT")
    parser.add_argument("--token", default=os.environ.get("WORKER_TOKEN"),
                        help="access token (default: $WORKER_TOKEN)")
    parser.add_argument("--insecure-plaintext", action="store_true",
                        help="send the token in plaintext to an address outside loopback")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run a WASI command on a worker, with this process's stdin")
    run.add_argument("module", help="path of a .wasm file")
    run.add_argument("args", nargs="*", help="arguments for the program (after --)")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--fuel", type=int)
    run.add_argument("--timeout-ms", type=int)
    run.add_argument("--receipt", action="store_true", help="print the receipt to stderr")
    commands.add_parser("describe", help="list the server's functions")
    options = parser.parse_args(argv)

    module = stdin = None
    env = []
    if options.command == "run":
        try:
            with open(options.module, "rb") as file:
                module = file.read()
            # Like `worker submit`: this process's stdin, unless a terminal.
            stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return 64
        env = [tuple(pair.split("=", 1)) for pair in options.env]
        if any(len(pair) != 2 for pair in env):
            print("error: --env takes KEY=VALUE", file=sys.stderr)
            return 64
    try:
        with Worker(options.to, options.token,
                    allow_plaintext_token=options.insecure_plaintext) as worker:
            if options.command == "describe":
                for info in worker.describe():
                    roles = ",".join(info.roles) if info.roles is not None else "anyone"
                    shown = "-" if info.schema_hash is None else f"{info.schema_hash:016x}"
                    print(f"{info.name}\t{shown}\t{roles}\t{info.description}")
                return 0
            output = worker.run(worker.ship(module), options.args, env=env, stdin=stdin,
                                limits=JobLimits(fuel=options.fuel),
                                timeout_ms=options.timeout_ms)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 64
    except JobFailed as error:
        # The exit codes of `worker submit`.
        print(f"the job failed ({error.fault}'s fault): {error}", file=sys.stderr)
        if error.kind == "deadline_exceeded":
            return 124
        return 70 if error.fault == "host" else 125
    except StatusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 124 if error.status == 504 else 69
    except (ConnectionLost, HandshakeRefused, VersionNotSpoken, ProtocolError,
            OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 69
    sys.stdout.buffer.write(output.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(output.stderr)
    if options.receipt:
        print(f"receipt: {output.receipt}", file=sys.stderr)
    return output.exit_code


if __name__ == "__main__":
    sys.exit(_main())
