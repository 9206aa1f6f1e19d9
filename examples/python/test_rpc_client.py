"""Tests of rpc_client.py: its bytes against tests/vectors/v1.json, and, when
the Rust integration test `python::` has started a server and a worker (and
set the RPC_INTEROP_* variables), every purpose of the protocol against them.

    python3 examples/python/test_rpc_client.py -v      # the vectors only
    cargo test --test all python::                      # everything
"""

import json
import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import rpc_client as rpc  # noqa: E402

VECTORS = os.path.join(HERE, "..", "..", "tests", "vectors", "v1.json")
EMPTY_MODULE = b"\0asm\x01\0\0\0"


def load_vectors():
    with open(VECTORS, encoding="utf-8") as file:
        return json.load(file)


def decode_whole(data: bytes) -> rpc.Frame:
    """Decodes a connection's whole input, which must be exactly one frame."""
    decoder = rpc.FrameDecoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    decoder.finish()
    if frame is None:
        raise AssertionError("no whole frame")
    return frame


class Vectors(unittest.TestCase):
    """The client's encoder and decoder against the shared vectors."""

    def setUp(self):
        self.vectors = load_vectors()

    def test_every_valid_vector_decodes_and_reencodes_to_the_same_bytes(self):
        kinds = set()
        for vector in self.vectors["valid"]:
            with self.subTest(vector=vector["name"]):
                data = bytes.fromhex(vector["hex"])
                frame = decode_whole(data)
                self.assertEqual(frame.stream_id, vector["stream_id"])
                kind = rpc._KIND_OF[type(frame.message)]
                self.assertEqual(rpc.KIND_NAMES[kind], vector["kind"])
                self.assertEqual(rpc.encode_frame(frame).hex(), vector["hex"])
                kinds.add(kind)
        self.assertEqual(kinds, set(rpc.KIND_NAMES), "a kind without a valid vector")

    def test_frames_built_from_their_fields_match_the_vectors(self):
        """Encoding from scratch, not only re-encoding what was decoded."""
        key = bytes(range(16))
        built = {
            "hello": rpc.Frame(0, rpc.Hello("cli", rpc.CLIENT, "s3cret", rpc.Limits())),
            "ping": rpc.Frame(0, rpc.Ping(42)),
            "call": rpc.Frame(1, rpc.Call("math.add", 5000, key, 0x1122334455667788,
                                          rpc.Writer().signed(2).signed(3).done())),
            "call-chunked": rpc.Frame(3, rpc.Call("upload", payload=rpc.Chunked(600000))),
            "cancel": rpc.Frame(1, rpc.Cancel()),
            "send-data": rpc.Frame(5, rpc.SendData("config", b'{"debug":true}')),
            "request-data": rpc.Frame(7, rpc.RequestData("config")),
            "offer-program": rpc.Frame(
                9, rpc.OfferProgram(rpc.content_hash(EMPTY_MODULE), len(EMPTY_MODULE))),
            "send-program": rpc.Frame(
                11, rpc.SendProgram(rpc.content_hash(EMPTY_MODULE), EMPTY_MODULE)),
            "chunk-end-no-digest": rpc.Frame(3, rpc.ChunkEnd(None)),
            "describe-call": rpc.Frame(13, rpc.Call(rpc.DESCRIBE_METHOD)),
        }
        by_name = {vector["name"]: vector["hex"] for vector in self.vectors["valid"]}
        for name, frame in built.items():
            with self.subTest(vector=name):
                self.assertEqual(rpc.encode_frame(frame).hex(), by_name[name])

    def test_every_invalid_vector_fails_with_the_named_error(self):
        for vector in self.vectors["invalid"]:
            with self.subTest(vector=vector["name"]):
                with self.assertRaises(rpc.ProtocolError) as caught:
                    decode_whole(bytes.fromhex(vector["hex"]))
                self.assertEqual(caught.exception.variant, vector["error"])
                # The Rust messages, or the same with the reason appended.
                self.assertTrue(str(caught.exception).startswith(vector["message"]),
                                f"{caught.exception} vs {vector['message']}")

    def test_the_describe_response_lists_its_functions(self):
        by_name = {vector["name"]: vector["hex"] for vector in self.vectors["valid"]}
        response = decode_whole(bytes.fromhex(by_name["describe-response"])).message
        infos = rpc.parse_describe(response.payload)
        self.assertEqual([info.name for info in infos], ["kv::get", "math.add"])
        self.assertEqual(infos[0].schema_hash, 0x3E3DB62C5ABB1C08)
        self.assertIsNone(infos[0].roles)
        self.assertEqual(infos[1].roles, ["math"])
        self.assertEqual(infos[1].description, "Adds two numbers.")

    def test_schema_hashes_follow_section_13(self):
        for vector in self.vectors["schema_hashes"]:
            with self.subTest(vector=vector["name"]):
                self.assertEqual(f"{rpc.schema_hash(vector['parts']):016x}", vector["hash"])

    def test_hostile_bodies_are_refused_before_anything_grows(self):
        # A list that announces more elements than it has bytes.
        with self.assertRaises(rpc.ProtocolError):
            rpc.parse_describe(b"\xff\xff\xff\xff\x0f")
        # A varint that never ends, and one too large for its type.
        with self.assertRaises(rpc.ProtocolError):
            rpc.Reader(b"\xff" * 11).varint()
        with self.assertRaises(rpc.ProtocolError):
            rpc.Reader(b"\xff\xff\xff\xff\x1f").varint(32)
        # A JobError variant that does not exist.
        with self.assertRaises(rpc.ProtocolError):
            rpc.JobFailed("", b"\x63")


class Addresses(unittest.TestCase):
    """Addresses as section 8 writes them: one route or several."""

    def test_routes_are_read_whole(self):
        self.assertEqual(rpc._split_addr("127.0.0.1:7000"), [(None, "127.0.0.1", 7000)])
        self.assertEqual(
            rpc._split_addr("w1@10.0.0.1:7000, 10.0.0.2:7070"),
            [("w1", "10.0.0.1", 7000), (None, "10.0.0.2", 7070)])

    def test_hostile_lists_are_refused_before_anything_is_dialled(self):
        for bad in ["", "a:1,,b:2", "a:1,", ",".join(["w@h:1"] * 9), "@h:1", "h", "h:port"]:
            with self.assertRaises(ValueError, msg=bad):
                rpc._split_addr(bad)
        self.assertEqual(len(rpc._split_addr(",".join(["w@h:1"] * 8))), 8)


def interop(name):
    return os.environ.get(f"RPC_INTEROP_{name}")


@unittest.skipUnless(interop("SERVER"), "no server to talk to (run `cargo test --test all python::`)")
class Interop(unittest.TestCase):
    """Every purpose of the protocol against the real Rust server and worker."""

    server = interop("SERVER")
    worker_addr = interop("WORKER")
    token = interop("TOKEN")
    admin_token = interop("ADMIN_TOKEN")
    modules = interop("MODULES")

    def module(self, name):
        with open(os.path.join(self.modules, name), "rb") as file:
            return file.read()

    def test_a_server_is_reached_through_its_supernode_and_past_a_dead_route(self):
        relayed, dead = interop("RELAYED"), interop("DEAD")
        add = rpc.Writer().signed(2).signed(3).done()
        with rpc.Client.connect(relayed, self.token) as client:
            self.assertEqual(rpc.Reader(client.call("math.add", add)).signed(), 5)
            self.assertEqual(client.route, relayed)
        # Several routes: the dead one fails, the next is taken.
        with rpc.Client.connect(f"{dead},{relayed}", self.token) as client:
            self.assertEqual(rpc.Reader(client.call("math.add", add)).signed(), 5)
            self.assertEqual(client.route, relayed)
        # A worker the supernode does not know: its refusal, 404.
        supernode = relayed.split("@", 1)[1]
        with self.assertRaises(rpc.RouteRefused) as caught:
            rpc.Client.connect(f"nobody@{supernode}", self.token)
        self.assertEqual(caught.exception.status, 404)
        # The token is still checked by the server itself, end to end.
        with self.assertRaises(rpc.HandshakeRefused) as caught:
            rpc.Client.connect(relayed, "not-the-token")
        self.assertEqual(caught.exception.status, 403)
        self.assertNotIsInstance(caught.exception, rpc.RouteRefused)

    def test_a_wrong_token_is_refused_with_403(self):
        with self.assertRaises(rpc.HandshakeRefused) as caught:
            rpc.Client.connect(self.server, "not-the-token")
        self.assertEqual(caught.exception.status, 403)

    def test_the_welcome_names_the_server_and_the_access_role(self):
        with rpc.Client.connect(self.server, self.token) as client:
            self.assertEqual(client.welcome.role, rpc.SERVER)
            self.assertEqual(client.welcome.access_role, "client")
        with rpc.Worker.connect(self.worker_addr, self.token) as worker:
            self.assertEqual(worker.welcome.role, rpc.WORKER)

    def test_functions_are_called_described_and_checked(self):
        with rpc.Client.connect(self.server, self.token) as client:
            args = rpc.Writer().signed(2).signed(3).done()
            self.assertEqual(rpc.Reader(client.call("math.add", args)).signed(), 5)
            infos = {info.name: info for info in client.describe()}
            self.assertEqual(set(infos), {"math.add", "math.divide"})
            add = infos["math.add"]
            self.assertEqual(add.roles, ["client"])
            # The hash read from rpc.describe is accepted; another is 409.
            result = client.call("math.add", args, schema_hash=add.schema_hash)
            self.assertEqual(rpc.Reader(result).signed(), 5)
            with self.assertRaises(rpc.StatusError) as caught:
                client.call("math.add", args, schema_hash=(add.schema_hash or 0) ^ 1)
            self.assertEqual(caught.exception.status, 409)
            # The function's own error comes back as a 422 payload.
            with self.assertRaises(rpc.StatusError) as caught:
                client.call("math.divide", rpc.Writer().signed(1).signed(0).done())
            self.assertEqual(caught.exception.status, 422)
            self.assertEqual(rpc.Reader(caught.exception.payload).string(), "division by zero")
            for status, method, call_args, timeout in [
                (404, "math.mul", args, None),
                (400, "math.add", b"\x04", None),
                (504, "math.add", args, 0),
            ]:
                with self.subTest(status=status):
                    with self.assertRaises(rpc.StatusError) as caught:
                        client.call(method, call_args, timeout_ms=timeout)
                    self.assertEqual(caught.exception.status, status)
            # The connection still serves after every refusal.
            self.assertEqual(rpc.Reader(client.call("math.add", args)).signed(), 5)

    def test_a_connection_the_server_closed_for_idleness_is_reopened(self):
        idle_s = int(interop("IDLE_MS")) / 1000
        with rpc.Client.connect(self.server, self.token) as client:
            self.assertEqual(client.welcome.limits.idle_timeout_ms, int(idle_s * 1000))
            args = rpc.Writer().signed(20).signed(22).done()
            self.assertEqual(rpc.Reader(client.call("math.add", args)).signed(), 42)
            first = client._sock
            time.sleep(idle_s * 1.7)
            # The server has said GoAway and closed; the call goes out on a
            # new connection and is answered once.
            self.assertEqual(rpc.Reader(client.call("math.add", args)).signed(), 42)
            self.assertIsNot(client._sock, first)

    def test_a_client_that_keeps_using_its_connection_keeps_it(self):
        idle_s = int(interop("IDLE_MS")) / 1000
        with rpc.Client.connect(self.server, self.token) as client:
            first = client._sock
            args = rpc.Writer().signed(1).signed(1).done()
            deadline = time.monotonic() + idle_s * 2
            while time.monotonic() < deadline:
                self.assertEqual(rpc.Reader(client.call("math.add", args)).signed(), 2)
                time.sleep(idle_s / 5)
            self.assertIs(client._sock, first)

    def test_data_is_sent_and_requested_inline_and_chunked(self):
        with rpc.Client.connect(self.server, self.token) as client:
            client.send_data("greeting", b"hello")
            self.assertEqual(client.request_data("greeting"), b"hello")
            large = bytes(i % 251 for i in range(3 << 20))
            client.send_data("large", large)
            self.assertEqual(client.request_data("large"), large)
            with self.assertRaises(rpc.StatusError) as caught:
                client.request_data("never-sent")
            self.assertEqual(caught.exception.status, 404)

    def test_a_module_is_offered_by_hash_and_sent_once(self):
        cat = self.module("cat.wasm")
        with rpc.Worker.connect(self.worker_addr, self.token) as worker:
            digest = worker.ship(cat)
            self.assertEqual(digest, rpc.content_hash(cat))
            # Held now: the offer is answered 200 and nothing is sent.
            worker.request(rpc.OfferProgram(digest, len(cat)))
            # Bytes that do not match their hash are refused.
            with self.assertRaises(rpc.StatusError) as caught:
                worker.request(rpc.SendProgram(bytes(32), cat))
            self.assertEqual(caught.exception.status, 400)

    def test_wasi_jobs_run_with_stdin_and_exit_codes(self):
        with rpc.Worker.connect(self.worker_addr, self.token) as worker:
            cat = worker.ship(self.module("cat.wasm"))
            stdin = bytes(i % 251 for i in range(200_000))
            output = worker.run(cat, ["ignored"], stdin=stdin)
            self.assertEqual((output.exit_code, output.stdout), (0, stdin))
            self.assertGreater(output.receipt.fuel, 0)
            self.assertIn(output.receipt.module, ("compiled", "memory cache"))
            again = worker.run(cat, stdin=b"x")
            self.assertEqual(again.receipt.module, "memory cache")
            hello = worker.ship(self.module("hello.wasm"))
            output = worker.run(hello)
            self.assertEqual((output.exit_code, output.stdout), (10, b"hello\n"))

    def test_a_large_module_travels_in_chunks_and_runs(self):
        big = self.module("big.wasm")
        self.assertGreater(len(big), 2 << 20)
        with rpc.Worker.connect(self.worker_addr, self.token) as worker:
            output = worker.run(worker.ship(big))
            self.assertEqual(output.exit_code, 0)

    def test_typed_calls_return_their_output(self):
        with rpc.Worker.connect(self.worker_addr, self.token) as worker:
            echo = worker.ship(self.module("echo.wasm"))
            output = worker.call_export(echo, "echo", b"\x01\x02\x03python")
            self.assertEqual(output.output, b"\x01\x02\x03python")

    def test_failed_jobs_say_what_failed_and_whose_fault(self):
        with rpc.Worker.connect(self.worker_addr, self.token) as worker:
            spin = worker.ship(self.module("spin.wasm"))
            with self.assertRaises(rpc.JobFailed) as caught:
                worker.run(spin, limits=rpc.JobLimits(fuel=100_000))
            self.assertEqual((caught.exception.kind, caught.exception.fault),
                             ("resource_exhausted", "guest"))
            self.assertEqual(caught.exception.fields["resource"], "fuel")
            echo = worker.ship(self.module("echo.wasm"))
            with self.assertRaises(rpc.JobFailed) as caught:
                worker.call_export(echo, "trap")
            self.assertEqual(caught.exception.kind, "trap")
            with self.assertRaises(rpc.JobFailed) as caught:
                worker.run(bytes(32))
            self.assertEqual((caught.exception.kind, caught.exception.fault),
                             ("module_not_found", "caller"))
            # A call's deadline passing is 504, not a job error.
            with self.assertRaises(rpc.StatusError) as caught:
                worker.run(spin, timeout_ms=200)
            self.assertEqual(caught.exception.status, 504)
            self.assertFalse(isinstance(caught.exception, rpc.JobFailed))

    def test_the_status_needs_the_admin_role(self):
        with rpc.Worker.connect(self.worker_addr, self.token) as worker:
            with self.assertRaises(rpc.StatusError) as caught:
                worker.status()
            self.assertEqual(caught.exception.status, 403)
        with rpc.Worker.connect(self.worker_addr, self.admin_token) as worker:
            status = worker.status()
            self.assertEqual(status.running, 0)
            self.assertGreater(status.finished, 0)

    def test_the_command_line_runs_a_module_and_exits_with_its_code(self):
        script = os.path.join(HERE, "rpc_client.py")
        env = dict(os.environ, WORKER_TOKEN=self.token)
        done = subprocess.run(
            [sys.executable, script, "--to", self.worker_addr, "run",
             os.path.join(self.modules, "hello.wasm"), "--", "-n", "5"],
            env=env, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        self.assertEqual((done.returncode, done.stdout), (10, b"hello\n"), done.stderr)
        done = subprocess.run(
            [sys.executable, script, "--to", self.worker_addr, "run",
             os.path.join(self.modules, "cat.wasm")],
            env=env, capture_output=True, timeout=60, check=False, input=b"from stdin")
        self.assertEqual((done.returncode, done.stdout), (0, b"from stdin"), done.stderr)
        done = subprocess.run(
            [sys.executable, script, "--to", self.worker_addr, "run", "--fuel", "1000",
             os.path.join(self.modules, "spin.wasm")],
            env=env, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        self.assertEqual(done.returncode, 125, done.stderr)
        self.assertIn(b"fuel", done.stderr)
        done = subprocess.run(
            [sys.executable, script, "--to", self.worker_addr, "run",
             os.path.join(self.modules, "no-such.wasm")],
            env=env, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        self.assertEqual(done.returncode, 64, done.stderr)
        done = subprocess.run(
            [sys.executable, script, "--to", self.worker_addr, "--token", "wrong", "run",
             os.path.join(self.modules, "hello.wasm")],
            env=env, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        self.assertEqual(done.returncode, 69, done.stderr)
        self.assertIn(b"403", done.stderr)


if __name__ == "__main__":
    unittest.main()
