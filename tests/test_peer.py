"""
Tests for dhtwisted.peer: the peer link's handshake, requests matched by
id, timeouts and lost links, what it does with bad input, and the pool of
links.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Optional, Union

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.membership import Member, Refused
from dhtwisted.peer import (
    PeerDisconnected,
    PeerError,
    PeerFactory,
    PeerPool,
    PeerProtocol,
    PeerUnavailable,
)
from dhtwisted.wire import (
    MAGIC,
    PREAMBLE,
    PREAMBLE_SIZE,
    PROTOCOL_VERSION,
    Envelope,
    Frame,
    member_from_pb,
    member_to_pb,
)

RPC_TIMEOUT = 5.0
MAX_FRAME = 1024


class FakeNode:
    """
    A L{dhtwisted.peer.PeerHandler} that records what its links tell it in
    C{events}. It answers C{Get} with one record per key (the key as the
    value) and C{Ping} with C{Pong}, through C{answer} which a test may
    replace. With a C{pool}, it registers and forgets links as a node does.
    """

    def __init__(self, node_id: str, port: int, ring_id: int,
                 pool: Optional[PeerPool] = None) -> None:
        self.node_id = node_id
        self.member = Member(node_id, f"127.0.0.1:{port}", (ring_id,), generation=1)
        self.others = [Member("z", "127.0.0.1:9999", (60000,), generation=1, heartbeat=4)]
        self.events: list[tuple[Any, ...]] = []
        self.refuse: Optional[str] = None
        self.answer: Callable[[Envelope], Union[Envelope, Deferred[Envelope]]] = echo
        self.pool = pool

    def me(self) -> Member:
        return self.member

    def hello(self, link: PeerProtocol, member: Member) -> list[Member]:
        self.events.append(("hello", member.node_id))
        if self.refuse:
            raise Refused(self.refuse)
        if self.pool is not None:
            self.pool.register(link)
        return [self.member, member] + self.others

    def welcome(self, link: PeerProtocol, member: Member, members: list[Member]) -> None:
        self.events.append(("welcome", member.node_id, [m.node_id for m in members]))
        if self.pool is not None:
            self.pool.register(link)

    def handle(self, link: PeerProtocol, request: Envelope) -> Union[Envelope, Deferred]:
        self.events.append(("handle", link.peer_id, request.WhichOneof("body")))
        return self.answer(request)

    def link_lost(self, link: PeerProtocol) -> None:
        self.events.append(("link_lost", link.peer_id))
        if self.pool is not None:
            self.pool.lost(link)


def echo(request: Envelope) -> Envelope:
    """
    Ping answered with Pong, Get with the keys as their values.
    """
    reply = Envelope()
    if request.WhichOneof("body") == "ping":
        reply.pong.SetInParent()
        return reply
    if request.WhichOneof("body") == "get":
        for key in request.get.keys:
            record = reply.get_reply.records.add()
            record.key = key
            record.value = b"value of " + key
        return reply
    raise ValueError(f"cannot answer {request.WhichOneof('body')}")


def get(*keys: bytes) -> Envelope:
    request = Envelope()
    request.get.keys.extend(keys)
    return request


def ping() -> Envelope:
    request = Envelope()
    request.ping.SetInParent()
    return request


def values(reply: Envelope) -> list[tuple[bytes, bytes]]:
    return [(r.key, r.value) for r in reply.get_reply.records]


def link(node: FakeNode, clock: Clock, dialer: bool, max_frame: int = MAX_FRAME) -> PeerProtocol:
    return PeerProtocol(node, clock, RPC_TIMEOUT, max_frame, dialer=dialer)


def connect(dialling: PeerProtocol, accepting: PeerProtocol, clock: Clock) -> iosim.IOPump:
    """
    Join a dialling and an accepting link with an iosim pump (nothing moved yet).
    """
    return iosim.connect(accepting, iosim.makeFakeServer(accepting), dialling,
                         iosim.makeFakeClient(dialling), greet=False, clock=clock)


def framed(*envelopes: Envelope) -> bytes:
    """
    The bytes of one frame holding C{envelopes}, length prefix included.
    """
    frame = Frame()
    frame.envelopes.extend(envelopes)
    data = frame.SerializeToString()
    return struct.pack(">I", len(data)) + data


def hello_from(member: Member, request_id: int = 1) -> Envelope:
    hello = Envelope()
    hello.request_id = request_id
    member_to_pb(member, hello.hello.member)
    return hello


def frames_in(data: bytes) -> list[Envelope]:
    """
    The envelopes of the frames in C{data} (after the preamble, if it has
    one).
    """
    if data.startswith(MAGIC):
        data = data[PREAMBLE_SIZE:]
    out = []
    while data:
        (length,) = struct.unpack(">I", data[:4])
        out.extend(Frame.FromString(data[4 : 4 + length]).envelopes)
        data = data[4 + length :]
    return out


class LinkTestCase(SynchronousTestCase):
    """
    Node C{a} dials node C{b}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.a = FakeNode("a", 9001, 100)
        self.b = FakeNode("b", 9002, 200)
        self.dialler = link(self.a, self.clock, dialer=True)
        self.acceptor = link(self.b, self.clock, dialer=False)
        self.pump = connect(self.dialler, self.acceptor, self.clock)

    def handshake(self) -> None:
        self.pump.flush()
        self.successResultOf(self.dialler.when_ready())

    def closed(self) -> bool:
        """
        Whether both ends of the link have closed.
        """
        self.pump.flush()
        return bool(self.pump.clientIO.disconnected and self.pump.serverIO.disconnected)


class HandshakeTests(LinkTestCase):
    """
    A link opens with Hello from the dialler and Welcome from the acceptor.
    """

    def test_hello_welcome(self) -> None:
        """
        After the handshake both ends know each other and the dialler has the member table.
        """
        dialled = self.dialler.when_ready()
        accepted = self.acceptor.when_ready()
        self.assertNoResult(dialled)
        self.assertNoResult(accepted)
        self.pump.flush()
        self.assertIs(self.successResultOf(dialled), self.dialler)
        self.assertIs(self.successResultOf(accepted), self.acceptor)
        self.assertEqual(self.dialler.peer, self.b.member)
        self.assertEqual(self.acceptor.peer, self.a.member)
        self.assertEqual((self.dialler.peer_id, self.acceptor.peer_id), ("b", "a"))
        self.assertEqual((self.dialler.dialer_id, self.acceptor.dialer_id), ("a", "a"))
        self.assertEqual(self.b.events, [("hello", "a")])
        self.assertEqual(self.a.events, [("welcome", "b", ["b", "a", "z"])])
        self.assertFalse(self.closed())

    def test_ready_later(self) -> None:
        """
        Asking for a link that is already ready gives it at once.
        """
        self.handshake()
        self.assertIs(self.successResultOf(self.dialler.when_ready()), self.dialler)
        self.assertIs(self.successResultOf(self.acceptor.when_ready()), self.acceptor)

    def test_call_before_handshake(self) -> None:
        """
        A request before the handshake is done fails with PeerUnavailable and sends nothing.
        """
        self.failureResultOf(self.dialler.call(ping()), PeerUnavailable)
        self.pump.flush()
        self.assertEqual([e[0] for e in self.b.events], ["hello"])

    def test_refused(self) -> None:
        """
        A refused hello fails the dialler's when_ready with the reason and closes both ends.
        """
        self.b.refuse = "node id a is already used by the member at 10.0.0.1:1"
        dialled = self.dialler.when_ready()
        accepted = self.acceptor.when_ready()
        self.assertTrue(self.closed())
        f = self.failureResultOf(dialled, PeerError)
        self.assertIn("node id a is already used", f.getErrorMessage())
        self.failureResultOf(accepted, PeerDisconnected)
        self.assertEqual(self.a.events, [("link_lost", None)])
        self.assertEqual(self.b.events, [("hello", "a"), ("link_lost", None)])
        self.assertIsNone(self.acceptor.peer_id)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handshake_timeout(self) -> None:
        """
        An acceptor that never answers Hello makes the dialler give up after rpc_timeout.
        """
        dialled = self.dialler.when_ready()
        # the acceptor never gets the bytes
        self.clock.advance(RPC_TIMEOUT - 0.01)
        self.assertNoResult(dialled)
        self.clock.advance(0.01)
        self.failureResultOf(dialled, TimeoutError)
        self.assertTrue(self.pump.clientIO.disconnecting)


class RequestTests(LinkTestCase):
    """
    Requests on a ready link get their own replies.
    """

    def setUp(self) -> None:
        super().setUp()
        self.handshake()
        self.a.events.clear()
        self.b.events.clear()

    def test_request_reply(self) -> None:
        """
        A request is answered by the other node's handler; the link's
        timeout timer does not fire it again, and is not set again.
        """
        d = self.dialler.call(get(b"k1", b"k2"))
        self.assertNoResult(d)
        self.pump.flush()
        self.assertEqual(values(self.successResultOf(d)),
                         [(b"k1", b"value of k1"), (b"k2", b"value of k2")])
        self.assertEqual(self.b.events, [("handle", "a", "get")])
        self.clock.advance(RPC_TIMEOUT)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_batched_into_one_frame(self) -> None:
        """
        Requests sent during one turn of the reactor go out in one frame,
        and the replies to them come back in one frame.
        """
        frames: dict[str, list[int]] = {"a": [], "b": []}
        for name, end in (("a", self.dialler), ("b", self.acceptor)):
            def counting(data: bytes, real: Any = end.stringReceived, name: str = name) -> None:
                frames[name].append(len(Frame.FromString(data).envelopes))
                real(data)

            end.stringReceived = counting  # type: ignore[method-assign]
        calls = [self.dialler.call(get(b"k%d" % i)) for i in range(3)]
        self.pump.flush()
        self.assertEqual(frames, {"b": [3], "a": [3]})
        self.assertEqual([values(self.successResultOf(d)) for d in calls],
                         [[(b"k%d" % i, b"value of k%d" % i)] for i in range(3)])

    def test_request_callback(self) -> None:
        """
        request() answers through a callable: the reply, or the reason it
        failed, once.
        """
        got: list = []
        self.dialler.request(get(b"k"), got.append)
        self.pump.flush()
        self.assertEqual(values(got[0]), [(b"k", b"value of k")])
        self.acceptor.transport.loseConnection()
        self.dialler.request(get(b"k"), got.append)
        self.pump.flush()
        self.assertEqual(len(got), 2)
        self.assertIsInstance(got[1], PeerDisconnected)

    def test_either_end_asks(self) -> None:
        """
        The accepting end can send requests too.
        """
        d = self.acceptor.call(ping())
        self.pump.flush()
        self.assertEqual(self.successResultOf(d).WhichOneof("body"), "pong")
        self.assertEqual(self.a.events, [("handle", "b", "ping")])

    def test_many_in_flight_answered_out_of_order(self) -> None:
        """
        Several requests in flight each get their own reply, whatever order they come back in.
        """
        answers: list[tuple[Envelope, Deferred[Envelope]]] = []

        def later(request: Envelope) -> Deferred[Envelope]:
            d: Deferred[Envelope] = Deferred()
            answers.append((request, d))
            return d

        self.b.answer = later
        calls = [self.dialler.call(get(key)) for key in (b"k1", b"k2", b"k3")]
        self.pump.flush()
        self.assertEqual(len(answers), 3)
        for d in calls:
            self.assertNoResult(d)
        waiting = [0, 1, 2]
        for i in (2, 0, 1):
            request, d = answers[i]
            d.callback(echo(request))
            self.pump.flush()
            waiting.remove(i)
            key = b"k%d" % (i + 1)
            self.assertEqual(request.get.keys, [key])
            self.assertEqual(values(self.successResultOf(calls[i])), [(key, b"value of " + key)])
            for j in waiting:
                self.assertNoResult(calls[j])

    def test_handler_exception(self) -> None:
        """
        A handler that raises gives the caller a PeerError with its message; the link stays up.
        """
        d = self.dialler.call(Envelope(commit={"txid": "t1"}))
        self.pump.flush()
        f = self.failureResultOf(d, PeerError)
        self.assertEqual(f.getErrorMessage(), "cannot answer commit")
        d = self.dialler.call(ping())
        self.pump.flush()
        self.assertEqual(self.successResultOf(d).WhichOneof("body"), "pong")

    def test_handler_failed_deferred(self) -> None:
        """
        A handler whose Deferred fails unexpectedly gives the caller a PeerError and logs it.
        """
        self.b.answer = lambda request: Deferred.fromCoroutine(_divide(1, 0))
        d = self.dialler.call(ping())
        self.pump.flush()
        self.failureResultOf(d, PeerError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_handler_error_reply(self) -> None:
        """
        A handler that answers with an Error body gives the caller a PeerError with its reason.
        """
        self.b.answer = lambda request: Envelope(error={"reason": "no such key"})
        d = self.dialler.call(ping())
        self.pump.flush()
        self.assertEqual(self.failureResultOf(d, PeerError).getErrorMessage(), "no such key")

    def test_timeout(self) -> None:
        """
        A request with no reply fails with TimeoutError after rpc_timeout; a late reply is dropped.
        """
        answers: list[Deferred[Envelope]] = []
        self.b.answer = lambda request: answers.append(Deferred()) or answers[-1]
        d = self.dialler.call(ping())
        self.pump.flush()
        self.clock.advance(RPC_TIMEOUT - 0.01)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.failureResultOf(d, TimeoutError)
        self.assertEqual(self.dialler._pending, {})
        # the answer comes after all: nothing breaks, the link still works
        answers[0].callback(echo(ping()))
        self.pump.flush()
        self.b.answer = echo
        d = self.dialler.call(get(b"k"))
        self.pump.flush()
        self.assertEqual(values(self.successResultOf(d)), [(b"k", b"value of k")])

    def test_one_timer_while_timeouts_send_more(self) -> None:
        """
        A peer that answers nothing, while each timed-out request makes the
        caller send another on the same link (an abort after a prepare
        timed out): every request times out, and the link keeps one timeout
        timer, not one more per timeout.
        """
        self.b.answer = lambda request: Deferred()
        timed_out: list[object] = []

        def again(result: object) -> None:
            timed_out.append(result)
            if len(timed_out) < 20:
                self.dialler.request(ping(), again)

        for _ in range(3):
            self.dialler.request(ping(), again)
            self.pump.flush()
            self.clock.advance(0.3)
        for _ in range(200):
            self.clock.advance(0.3)
            self.pump.flush()
            sweeps = [c for c in self.clock.getDelayedCalls()
                      if c.func == self.dialler._expire]
            self.assertLessEqual(len(sweeps), 1)
        self.assertEqual(len(timed_out), 22)
        self.assertTrue(all(isinstance(r, TimeoutError) for r in timed_out))

    def test_lost_link_fails_pending_at_once(self) -> None:
        """
        Losing the link fails every pending request at once with PeerDisconnected; both nodes hear.
        """
        answers: list[Deferred[Envelope]] = []
        self.b.answer = lambda request: answers.append(Deferred()) or answers[-1]
        calls = [self.dialler.call(ping()) for _ in range(3)]
        self.pump.flush()
        self.assertEqual(len(answers), 3)
        self.acceptor.transport.abortConnection()
        self.pump.flush()
        for d in calls:
            self.failureResultOf(d, PeerDisconnected)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIn(("link_lost", "b"), self.a.events)
        self.assertIn(("link_lost", "a"), self.b.events)
        # answers the handler finishes later go nowhere; new requests fail at once
        for d in answers:
            d.callback(echo(ping()))
        self.failureResultOf(self.dialler.call(ping()), PeerDisconnected)
        self.failureResultOf(self.acceptor.call(ping()), PeerDisconnected)


async def _divide(a: int, b: int) -> Envelope:
    a // b
    return Envelope()


class BadInputTests(SynchronousTestCase):
    """
    The accepting end closes the link on bytes that are not the protocol.
    """

    def setUp(self) -> None:
        self.node = FakeNode("b", 9002, 200)
        self.proto, self.transport = self.accepting()
        self.hello = PREAMBLE + framed(hello_from(Member("a", "127.0.0.1:9001", (100,), 1)))

    def accepting(self) -> tuple[PeerProtocol, StringTransportWithDisconnection]:
        self.clock = Clock()
        proto = link(self.node, self.clock, dialer=False)
        transport = StringTransportWithDisconnection()
        transport.protocol = proto
        proto.makeConnection(transport)
        return proto, transport

    def sent(self, transport: StringTransportWithDisconnection) -> bytes:
        """
        What C{transport} was sent, once the reactor's turn ended (a link
        sends what it queued in a turn together).
        """
        transport.protocol.clock.advance(0)
        return transport.value()

    def assertClosedUnanswered(self) -> None:
        """
        The link closed, having sent at most its own preamble (so that the
        other end can tell why): no message.
        """
        self.assertFalse(self.transport.connected)
        sent = self.transport.value()
        self.assertIn(sent[:7], (b"", PREAMBLE[:7]))
        self.assertEqual(frames_in(sent), [])
        self.assertEqual([e[0] for e in self.node.events], ["link_lost"])

    def test_whole_hello(self) -> None:
        """
        The preamble and a Hello in one piece are answered with a Welcome.
        """
        self.proto.dataReceived(self.hello)
        self.assertTrue(self.transport.connected)
        [reply] = frames_in(self.sent(self.transport))
        self.assertTrue(reply.reply)
        self.assertEqual(reply.request_id, 1)
        self.assertEqual(member_from_pb(reply.welcome.member), self.node.member)
        self.assertEqual([m.node_id for m in reply.welcome.members], ["b", "a", "z"])
        self.assertEqual(self.proto.peer_id, "a")

    def test_byte_at_a_time(self) -> None:
        """
        The preamble and a Hello fed one byte at a time get the same Welcome as in one piece.
        """
        for i in range(len(self.hello)):
            self.proto.dataReceived(self.hello[i : i + 1])
        whole, transport = self.accepting()
        whole.dataReceived(self.hello)
        self.assertTrue(self.transport.connected)
        self.assertEqual(frames_in(self.sent(self.transport)), frames_in(self.sent(transport)))
        self.assertEqual(frames_in(self.transport.value())[0].WhichOneof("body"), "welcome")
        self.assertEqual(self.node.events, [("hello", "a"), ("hello", "a")])

    def test_wrong_version(self) -> None:
        """
        A preamble with another protocol version closes the link without an answer.
        """
        other = PREAMBLE[:4] + struct.pack(">H", PROTOCOL_VERSION + 1)
        self.proto.dataReceived(other + self.hello[len(PREAMBLE) :])
        self.assertClosedUnanswered()

    def test_wrong_version_byte_at_a_time(self) -> None:
        """
        A wrong version fed byte by byte closes the link once the whole
        preamble is in (the acceptor answers its own, so the dialler can
        say why), not before.
        """
        other = PREAMBLE[:4] + struct.pack(">H", PROTOCOL_VERSION + 1) + PREAMBLE[6:]
        for i in range(len(other) - 1):
            self.proto.dataReceived(other[i : i + 1])
        self.assertTrue(self.transport.connected)
        for i in range(len(other) - 1, len(other)):
            self.proto.dataReceived(other[i : i + 1])
        self.assertClosedUnanswered()

    def test_not_a_peer(self) -> None:
        """
        Bytes that are not a preamble at all close the link.
        """
        self.proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertClosedUnanswered()

    def test_frame_over_max_frame(self) -> None:
        """
        A frame announced over max_frame closes the link before its bytes arrive.
        """
        self.proto.dataReceived(PREAMBLE + struct.pack(">I", MAX_FRAME + 1))
        self.assertClosedUnanswered()

    def test_frame_of_max_frame(self) -> None:
        """
        A Hello frame of exactly max_frame bytes is accepted.
        """
        hello = hello_from(Member("a", "127.0.0.1:9001", (100,), 1))
        hello.hello.cluster = "x" * (MAX_FRAME - len(framed(hello)) + 4)
        while len(framed(hello)) - 4 > MAX_FRAME:
            hello.hello.cluster = hello.hello.cluster[1:]
        self.assertEqual(len(framed(hello)) - 4, MAX_FRAME)
        self.proto.dataReceived(PREAMBLE + framed(hello))
        self.assertTrue(self.transport.connected)
        self.assertEqual(frames_in(self.sent(self.transport))[0].WhichOneof("body"), "welcome")

    def test_undecodable_frame(self) -> None:
        """
        A frame whose bytes are not a Frame closes the link.
        """
        self.proto.dataReceived(PREAMBLE + struct.pack(">I", 4) + b"\xff\xff\xff\xff")
        self.assertClosedUnanswered()

    def test_request_before_hello(self) -> None:
        """
        A request before Hello is not handled, and closes the link.
        """
        request = get(b"k")
        request.request_id = 1
        self.proto.dataReceived(PREAMBLE + framed(request))
        self.assertClosedUnanswered()

    def test_hello_without_member(self) -> None:
        """
        A Hello without a usable member is refused with an Error, and the link closes.
        """
        hello = Envelope(request_id=1)
        hello.hello.SetInParent()
        self.proto.dataReceived(PREAMBLE + framed(hello))
        self.assertFalse(self.transport.connected)
        [reply] = frames_in(self.transport.value())
        self.assertEqual(reply.WhichOneof("body"), "error")
        self.assertEqual(self.node.events, [("link_lost", None)])


class BadWelcomeTests(SynchronousTestCase):
    """
    The dialling end gives up on a peer that answers Hello with nonsense.
    """

    def setUp(self) -> None:
        self.node = FakeNode("a", 9001, 100)
        self.clock = Clock()
        self.proto = link(self.node, self.clock, dialer=True)
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)
        sent = self.transport.value()
        self.assertEqual(sent[:7], PREAMBLE[:7])  # (its nonce is its own)
        [self.hello] = frames_in(sent)
        self.preamble = PREAMBLE  # the accepting end's, sent before its answer
        self.assertEqual(member_from_pb(self.hello.hello.member), self.node.member)

    def answer(self, reply: Envelope) -> None:
        reply.request_id = self.hello.request_id
        reply.reply = True
        self.proto.dataReceived(self.preamble + framed(reply))
        self.preamble = b""

    def test_welcome(self) -> None:
        """
        A Welcome makes the link ready and tells the node who answered and what it knows.
        """
        ready = self.proto.when_ready()
        welcome = Envelope()
        member_to_pb(Member("b", "127.0.0.1:9002", (200,), 3), welcome.welcome.member)
        member_to_pb(Member("c", "127.0.0.1:9003", (300,), 4), welcome.welcome.members.add())
        self.answer(welcome)
        self.assertIs(self.successResultOf(ready), self.proto)
        self.assertEqual(self.node.events, [("welcome", "b", ["c"])])
        self.clock.advance(RPC_TIMEOUT)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_not_a_welcome(self) -> None:
        """
        An answer to Hello that is not a Welcome fails when_ready and closes the link.
        """
        ready = self.proto.when_ready()
        self.answer(Envelope(pong={}))
        self.assertIn("expected welcome", self.failureResultOf(ready, PeerError).getErrorMessage())
        self.assertFalse(self.transport.connected)
        self.assertEqual(self.node.events, [("link_lost", None)])

    def test_welcome_with_unusable_member(self) -> None:
        """
        A Welcome listing a member without tokens fails when_ready and closes the link.
        """
        ready = self.proto.when_ready()
        welcome = Envelope()
        member_to_pb(Member("b", "127.0.0.1:9002", (200,), 3), welcome.welcome.member)
        welcome.welcome.members.add(node_id="c", address="127.0.0.1:9003")
        self.answer(welcome)
        self.failureResultOf(ready, ValueError)
        self.assertFalse(self.transport.connected)
        self.assertEqual(self.node.events, [("link_lost", None)])


class Dials:
    """
    A fake connect function: records each dial and lets the test decide
    how it ends.
    """

    def __init__(self) -> None:
        self.dials: list[tuple[str, Deferred[PeerProtocol]]] = []

    def __call__(self, address: str, factory: PeerFactory) -> Deferred[PeerProtocol]:
        d: Deferred[PeerProtocol] = Deferred()
        self.dials.append((address, d))
        return d


class PoolTests(SynchronousTestCase):
    """
    L{PeerPool} keeps one link per peer.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.connect = Dials()
        self.a = FakeNode("a", 9001, 100)
        self.b = FakeNode("b", 9002, 200)
        factory = PeerFactory(self.a, self.clock, RPC_TIMEOUT, MAX_FRAME)
        self.pool = PeerPool(factory, self.connect, self.clock, backoff=0.5, max_backoff=5.0)
        self.a.pool = self.pool
        self.factory = factory
        self.pumps: list[iosim.IOPump] = []

    def answer_dial(self, i: int) -> PeerProtocol:
        """
        Complete dial C{i}: the link to C{b} connects (its handshake not yet run).
        """
        dialling = self.factory.buildProtocol(None)
        accepting = link(self.b, self.clock, dialer=False)
        self.pumps.append(connect(dialling, accepting, self.clock))
        self.connect.dials[i][1].callback(dialling)
        return dialling

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()

    def test_one_dial_for_concurrent_callers(self) -> None:
        """
        Callers asking for a peer while it is being dialled share one dial and get one link.
        """
        first = self.pool.get("b", "127.0.0.1:9002")
        second = self.pool.get("b", "127.0.0.1:9002")
        self.assertEqual(self.connect.dials, [("127.0.0.1:9002", self.connect.dials[0][1])])
        dialling = self.answer_dial(0)
        self.assertNoResult(first)  # not before the handshake
        self.assertNoResult(second)
        self.flush()
        self.assertIs(self.successResultOf(first), dialling)
        self.assertIs(self.successResultOf(second), dialling)
        # registered once welcomed: later callers get it without a dial
        self.assertIs(self.successResultOf(self.pool.get("b", "127.0.0.1:9002")), dialling)
        self.assertEqual(len(self.connect.dials), 1)

    def test_failed_dial_fails_every_caller(self) -> None:
        """
        A failed dial fails every caller waiting on it.
        """
        first = self.pool.get("b", "127.0.0.1:9002")
        second = self.pool.get(None, "127.0.0.1:9002")
        self.connect.dials[0][1].errback(ConnectionRefusedError("127.0.0.1:9002"))
        self.failureResultOf(first, ConnectionRefusedError)
        self.failureResultOf(second, ConnectionRefusedError)

    def test_backoff(self) -> None:
        """
        A failed dial is not retried before the backoff, doubled on each failure, but is after.
        """
        address = "127.0.0.1:9002"
        for backoff in (0.5, 1.0, 2.0):
            d = self.pool.get("b", address)
            self.connect.dials[-1][1].errback(ConnectionRefusedError(address))
            self.failureResultOf(d, ConnectionRefusedError)
            dials = len(self.connect.dials)
            self.clock.advance(backoff - 0.01)
            self.failureResultOf(self.pool.get("b", address), PeerUnavailable)
            self.assertEqual(len(self.connect.dials), dials)
            self.clock.advance(0.01)
        # after the backoff it dials again, and a success resets the backoff
        d = self.pool.get("b", address)
        self.assertEqual(len(self.connect.dials), 4)
        self.answer_dial(3)
        self.flush()
        self.successResultOf(d)
        self.assertEqual(self.pool._failures, {})

    def test_backoff_is_per_address(self) -> None:
        """
        One unreachable peer does not stop dials to another.
        """
        d = self.pool.get("b", "127.0.0.1:9002")
        self.connect.dials[0][1].errback(ConnectionRefusedError())
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertNoResult(self.pool.get("c", "127.0.0.1:9003"))
        self.assertEqual([a for a, _ in self.connect.dials], ["127.0.0.1:9002", "127.0.0.1:9003"])

    def test_refused_handshake_is_a_failed_dial(self) -> None:
        """
        A peer that refuses the handshake fails the caller and is not dialled again at once.
        """
        self.b.refuse = "ring_id 100 is already used by node q at 10.0.0.1:1"
        d = self.pool.get("b", "127.0.0.1:9002")
        self.answer_dial(0)
        self.flush()
        self.assertIn("ring_id 100", self.failureResultOf(d, PeerError).getErrorMessage())
        self.failureResultOf(self.pool.get("b", "127.0.0.1:9002"), PeerUnavailable)
        self.assertEqual(self.pool.links, {})

    def test_bad_welcome_is_a_failed_dial(self) -> None:
        """
        A peer whose Welcome cannot be read fails the dial instead of leaving callers waiting.
        """
        self.b.others = [Member("c", "127.0.0.1:9003", (), 1)]  # no tokens: unusable
        first = self.pool.get("b", "127.0.0.1:9002")
        self.answer_dial(0)
        self.flush()
        self.failureResultOf(first, ValueError)
        self.assertTrue(self.pumps[0].clientIO.disconnected)
        self.failureResultOf(self.pool.get("b", "127.0.0.1:9002"), PeerUnavailable)
        self.clock.advance(0.5)
        self.assertNoResult(self.pool.get("b", "127.0.0.1:9002"))
        self.assertEqual(len(self.connect.dials), 2)

    def test_lost_link_is_forgotten(self) -> None:
        """
        Once its link is lost, the peer is dialled again on the next request.
        """
        d = self.pool.get("b", "127.0.0.1:9002")
        self.answer_dial(0)
        self.flush()
        dialling = self.successResultOf(d)
        dialling.transport.loseConnection()
        self.flush()
        self.assertEqual(self.pool.links, {})
        self.assertNoResult(self.pool.get("b", "127.0.0.1:9002"))
        self.assertEqual(len(self.connect.dials), 2)


class CrossedDialTests(SynchronousTestCase):
    """
    When two nodes dial each other at once, both keep the link dialled by
    the node with the smaller id.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.a = FakeNode("a", 9001, 100)
        self.b = FakeNode("b", 9002, 200)
        for node in (self.a, self.b):
            factory = PeerFactory(node, self.clock, RPC_TIMEOUT, MAX_FRAME)
            node.pool = PeerPool(factory, Dials(), self.clock)
        # a dials b, and b dials a
        self.a_dials = link(self.a, self.clock, dialer=True)
        self.b_accepts = link(self.b, self.clock, dialer=False)
        self.b_dials = link(self.b, self.clock, dialer=True)
        self.a_accepts = link(self.a, self.clock, dialer=False)
        self.by_a = connect(self.a_dials, self.b_accepts, self.clock)
        self.by_b = connect(self.b_dials, self.a_accepts, self.clock)

    def flush(self, pumps: list[iosim.IOPump]) -> None:
        moved = True
        while moved:
            moved = False
            for pump in pumps:
                moved = pump.pump() or moved

    def assertKeptLinkDialledByA(self) -> None:
        assert self.a.pool is not None and self.b.pool is not None
        self.assertEqual(self.a.pool.links, {"b": self.a_dials})
        self.assertEqual(self.b.pool.links, {"a": self.b_accepts})
        self.clock.advance(RPC_TIMEOUT + 1.0)  # the grace period of the dropped link
        self.flush([self.by_a, self.by_b])
        self.assertTrue(self.by_b.clientIO.disconnected and self.by_b.serverIO.disconnected)
        self.assertFalse(self.by_a.clientIO.disconnected or self.by_a.serverIO.disconnected)
        d = self.b_accepts.call(ping())
        self.flush([self.by_a])
        self.assertEqual(self.successResultOf(d).WhichOneof("body"), "pong")

    def test_at_the_same_time(self) -> None:
        """
        Hellos that cross keep a's link on both ends and close b's.
        """
        self.flush([self.by_a, self.by_b])
        self.assertKeptLinkDialledByA()

    def test_smaller_id_second(self) -> None:
        """
        The link dialled by the smaller id wins even when it comes second.
        """
        self.flush([self.by_b])
        self.flush([self.by_a])
        self.flush([self.by_a, self.by_b])
        self.assertKeptLinkDialledByA()

    def test_register_keeps_smaller_dialler(self) -> None:
        """
        register() with two open links to one peer keeps the one a dialled and closes the other.
        """
        for dialled_first in (True, False):
            pool = PeerPool(PeerFactory(self.a, self.clock, RPC_TIMEOUT, MAX_FRAME), Dials(),
                            self.clock)
            self.a.pool = pool
            links = {}
            for dialer in (True, False):
                links[dialer] = link(self.a, self.clock, dialer=dialer)
                links[dialer].peer = self.b.member
                transport = StringTransportWithDisconnection()
                transport.protocol = links[dialer]
                links[dialer].makeConnection(transport)
            pool.register(links[dialled_first])
            pool.register(links[not dialled_first])
            self.assertEqual(pool.links, {"b": links[True]})
            self.assertTrue(links[False].transport.connected)  # in flight may finish
            self.assertTrue(links[True].transport.connected)
            self.clock.advance(RPC_TIMEOUT + 1.0)
            self.assertFalse(links[False].transport.connected)
