"""
Property-based fuzzing (hypothesis) of both protocols: client lines and
RESP, and peer frames, random and mutated, on fake transports and against a
live node. The node never raises or logs an unexpected error, never answers
garbage with success, keeps serving other clients, and its data stays intact.
"""

from __future__ import annotations

import socket
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted import wire
from dhtwisted.membership import Member

from .helpers import FakeClient, make_node
from .procs import NodeProcess

#: examples per property (the closing note reports them)
EXAMPLES = 300
KEPT = b"kept-\x00\xff-key-0123456789"  # no fuzzed key can be this long

VALID_LINES = [
    b"set a b", b"get a", b"del a b", b"mset a 1 b 2", b"mget a b", b"ping",
    b'set "a b" "c\\x00d"', b"info", b"members", b"exists a",
]
VALID_RESP = [
    b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n",
    b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n",
    b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n",
    b"*1\r\n$4\r\nPING\r\n",
]
WRITE_NAMES = (b"set", b"mset", b"del", b"quit", b"exit", b"select", b"client", b"hello")


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """
    Apply byte edits (position, kind, byte) to C{data}: replace, insert, delete.
    """
    out = bytearray(data)
    for pos, kind, byte in edits:
        if not out:
            out.append(byte)
            continue
        pos %= len(out)
        if kind == 0:
            out[pos] = byte
        elif kind == 1:
            out.insert(pos, byte)
        else:
            del out[pos]
    return bytes(out)


edits = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 2), st.integers(0, 255)),
                 max_size=6)
client_input = st.one_of(
    st.binary(max_size=2048),
    st.builds(mutate, st.sampled_from(VALID_LINES).map(lambda line: line + b"\r\n"), edits),
    st.builds(mutate, st.sampled_from(VALID_RESP), edits),
    st.lists(st.sampled_from(VALID_LINES), max_size=5).map(lambda ls: b"\n".join(ls) + b"\n"),
)


class _Errors:
    """
    Collects logged failures during a test.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.failures: list[str] = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict) -> None:
        if event.get("log_failure") is not None:
            self.failures.append(repr(event["log_failure"]))


def _says_write(data: bytes) -> bool:
    lowered = data.lower()
    return any(name in lowered for name in WRITE_NAMES)


class ClientFuzzTests(SynchronousTestCase):
    """
    Random and mutated client input on a fake transport.
    """

    def setUp(self) -> None:
        self.errors = _Errors(self)
        self.node = make_node(max_line=4096)
        self.good = FakeClient(self.node)
        self.good.send(b'set "' + b"".join(b"\\x%02x" % c for c in KEPT) + b'" intact\n')
        self.assertEqual(self.node.store.get(KEPT).value, b"intact")

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=client_input, bytewise=st.booleans())
    def test_client_input(self, data: bytes, bytewise: bool) -> None:
        """
        Whatever a client sends: no exception, no logged error, success only
        for input that names a write command, other clients still served
        and the kept key intact.
        """
        bad = FakeClient(self.node)
        reply = bad.send(data, bytewise=bytewise)
        lines = reply.split(b"\r\n")
        if b"ok" in lines or b"+OK" in lines:
            self.assertTrue(_says_write(data) or b"ping" in data.lower(), (data, reply))
        bad.transport.loseConnection()
        self.assertEqual(self.node.store.get(KEPT).value, b"intact")
        self.assertEqual(self.good.send(b"ping\n"), b"PONG\r\n")
        self.assertEqual(self.errors.failures, [])


def _frame(envelope: wire.Envelope) -> bytes:
    frame = wire.Frame()
    frame.envelopes.append(envelope)
    data = frame.SerializeToString()
    return struct.pack(">I", len(data)) + data


def _hello() -> bytes:
    env = wire.Envelope(request_id=1)
    wire.member_to_pb(Member("fuzzer", "127.0.0.9:1", (4242,), 1), env.hello.member)
    return _frame(env)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """
    A structurally valid frame whose contents are random: any request kind,
    random ids, keys, versions (of any length), values and counts.
    """
    env = wire.Envelope(request_id=draw(st.integers(0, 2**64 - 1)),
                        reply=draw(st.booleans()))
    kind = draw(st.sampled_from(["get", "prepare", "commit", "abort", "txn_query", "push",
                                 "gossip", "ping", "hello", "welcome", "error", "vote"]))
    small = st.binary(max_size=8)
    if kind == "get":
        env.get.keys.extend(draw(st.lists(small, max_size=5)))
    elif kind == "prepare":
        env.prepare.txid = draw(st.text(max_size=10))
        env.prepare.coordinator = draw(st.text(max_size=5))
        # keys and values that may not pair up, deletes that may point nowhere
        env.prepare.writes.keys.extend(draw(st.lists(small, max_size=4)))
        env.prepare.writes.values.extend(draw(st.lists(small, max_size=4)))
        env.prepare.writes.deletes.extend(draw(st.lists(st.integers(0, 5), max_size=2)))
    elif kind == "commit":
        env.commit.txid = draw(st.text(max_size=10))
        env.commit.version = draw(st.binary(max_size=16))
        if draw(st.booleans()):
            env.commit.writes.keys.extend(draw(st.lists(small, max_size=3)))
            env.commit.writes.values.extend(draw(st.lists(small, max_size=3)))
    elif kind == "abort":
        env.abort.txid = draw(st.text(max_size=10))
    elif kind == "txn_query":
        env.txn_query.txid = draw(st.text(max_size=10))
    elif kind == "push":
        for key, version, value in draw(st.lists(st.tuples(small, st.binary(max_size=14),
                                                           small), max_size=4)):
            env.push.records.add(key=key, version=version, value=value)
    elif kind == "gossip":
        for node_id, address, tokens, gen in draw(st.lists(st.tuples(
                st.text(max_size=6), st.text(max_size=12),
                st.lists(st.integers(0, 2**32 - 1), max_size=3),
                st.integers(0, 2**64 - 1)), max_size=3)):
            env.gossip.members.add(node_id=node_id, address=address, tokens=tokens,
                                   generation=gen)
    elif kind == "ping":
        env.ping.SetInParent()
    else:
        getattr(env, kind).SetInParent()
    return _frame(env)


peer_input = st.one_of(
    envelopes(),
    st.binary(max_size=512).map(lambda b: struct.pack(">I", len(b)) + b),  # garbage protobuf
    st.integers(2**24, 2**32 - 1).map(lambda n: struct.pack(">I", n)),  # huge lengths
    st.builds(mutate, envelopes(), edits),
)


class PeerFuzzTests(SynchronousTestCase):
    """
    Random and mutated peer frames after a valid preamble and hello.
    """

    def setUp(self) -> None:
        self.errors = _Errors(self)
        self.node = make_node()
        self.node.store.apply(KEPT, b"\x00" * 11 + b"\x01", b"intact")

    def test_writes_that_do_not_pair_up(self) -> None:
        """
        A prepare whose keys and values do not pair up is answered with an
        error naming that, and locks nothing; the link goes on serving.
        """
        from .test_peer import frames_in

        peer = FakeClient(self.node)
        env = wire.Envelope(request_id=7)
        env.prepare.txid = "fuzzer:1:1"
        env.prepare.coordinator = "fuzzer"
        env.prepare.writes.keys.extend([b"a", b"b"])
        env.prepare.writes.values.append(b"1")
        ping = wire.Envelope(request_id=8)
        ping.ping.SetInParent()
        peer.protocol.dataReceived(wire.PREAMBLE + _hello() + _frame(env) + _frame(ping))
        self.node.reactor.advance(0)
        replies = {e.request_id: e for e in frames_in(peer.take())}
        self.assertEqual(replies[7].error.reason, "bad writes: 2 keys but 1 values")
        self.assertEqual(replies[8].WhichOneof("body"), "pong")
        self.assertEqual(self.node.participant.locked_keys, 0)
        self.assertEqual(self.errors.failures, [])

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(frames=st.lists(peer_input, min_size=1, max_size=4), hello=st.booleans())
    def test_peer_frames(self, frames: list[bytes], hello: bool) -> None:
        """
        Whatever a peer sends: no exception, no logged error, the kept key
        intact, and clients still served.
        """
        peer = FakeClient(self.node)
        data = wire.PREAMBLE + (_hello() if hello else b"") + b"".join(frames)
        peer.send(data)
        peer.transport.loseConnection()
        self.assertEqual(self.node.store.get(KEPT).value, b"intact")
        self.assertEqual(FakeClient(self.node).send(b"ping\n"), b"PONG\r\n")
        self.assertEqual(self.errors.failures, [])


class LiveNodeFuzzTests(SynchronousTestCase):
    """
    The same inputs over real sockets to a running node.
    """

    def setUp(self) -> None:
        # once per test method: hypothesis runs every example inside it
        self.node = NodeProcess([], ini="[node]\nnode_id = fuzz\nlisten = 127.0.0.1:0\n")
        self.addCleanup(self.node.stop)

    def _send(self, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)

    @settings(max_examples=EXAMPLES // 3, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.one_of(client_input,
                          st.lists(peer_input, max_size=3).map(
                              lambda fs: wire.PREAMBLE + _hello() + b"".join(fs))))
    def test_live_node(self, data: bytes) -> None:
        """
        The node keeps running and keeps its data, whatever arrives.
        """
        self._send(b"set kept intact\n")
        self._send(data)
        self.assertIsNone(self.node.process.poll(), self.node.log()[-2000:])
        self.assertEqual(self._send(b"get kept\n"), b"intact\r\n")


class AuthFuzzTests(SynchronousTestCase):
    """
    Random and mutated client input to a node with a password, from a
    client that never gave it.
    """

    def setUp(self) -> None:
        self.errors = _Errors(self)
        self.node = make_node(max_line=4096, requirepass="the password, of course")

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=client_input)
    def test_nothing_without_auth(self, data: bytes) -> None:
        """
        Whatever it sends, nothing is written, every reply is an error,
        and nothing is logged as a failure.
        """
        client = FakeClient(self.node)
        got = client.send(data)
        self.assertEqual(len(self.node.store), 0)
        for line in got.split(b"\r\n"):
            if line and not line.startswith((b"-", b"ERR ", b"+OK", b"ok")):
                self.fail(f"{line!r} in reply to {data!r}")
        self.assertEqual(self.errors.failures, [])
