# -*- test-case-name: tests.test_peer -*-
"""
Peer links: length-prefixed protobuf frames between nodes.

A link opens with the preambles (magic, protocol version, and with a
cluster secret a challenge-response: L{dhtwisted.handshake}), then a
handshake: the dialling node sends C{Hello} with its member entry, the other
answers C{Welcome} with its own and its member table, or C{Error} and closes.
Then either side sends requests, each with a request id, and gets replies
matched by that id. Each request has a timeout; a lost link fails its
pending requests at once.

L{PeerPool} keeps one link per peer: it dials on demand, retries with
backoff, and when two nodes dial each other at once keeps the link dialled
by the node with the smaller id.
"""

from __future__ import annotations

import itertools
import os
import struct
from typing import Any, Callable, Optional, Protocol, Sequence, Union

from google.protobuf.message import DecodeError
from OpenSSL.SSL import Error as SSLError
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from .logs import OBSERVER, Refusals
from .membership import Member, Refused
from .sending import write_now
from .handshake import NONCE_SIZE, Handshake, HandshakeError
from .tls import tls_failure
from .wire import Envelope, Frame, member_from_pb, member_to_pb

__all__ = [
    "PeerDisconnected",
    "PeerError",
    "PeerPool",
    "PeerProtocol",
    "PeerUnavailable",
]

log = Logger(observer=OBSERVER)

#: A callback that gets a result, or an C{Exception} in its place.
Answer = Callable[[Any], None]
#: The length prefix of a frame.
_LENGTH = struct.Struct(">I")


class PeerDisconnected(Exception):
    """
    The link to a peer was lost before it answered.
    """


class PeerError(Exception):
    """
    A peer answered a request with an error.
    """


class PeerUnavailable(Exception):
    """
    A peer could not be reached (recently failed; retried later).
    """


class PeerHandler(Protocol):
    """
    What a link needs of its node.
    """

    node_id: str

    def me(self) -> Member:
        """
        This node's member entry.
        """

    def hello(self, link: "PeerProtocol", member: Member) -> list[Member]:
        """
        A peer introduced itself; return the member table to welcome it
        with, or raise L{Refused}.
        """

    def welcome(self, link: "PeerProtocol", member: Member, members: list[Member]) -> None:
        """
        The peer this node dialled accepted it.
        """

    def handle(self, link: "PeerProtocol", request: Envelope) -> Union[Envelope, Deferred]:
        """
        Answer a request; the reply's body only.
        """

    def link_lost(self, link: "PeerProtocol") -> None:
        """
        A link closed.
        """


class PeerProtocol(Int32StringReceiver):
    """
    One end of a peer link.

    :param node: the node it serves.
    :param clock: for request timeouts and sending at the end of a turn.
    :param rpc_timeout: seconds a request may wait for its reply.
    :param max_frame: largest frame accepted.
    :param dialer: whether this end dialled (and so starts the handshake).
    :param secrets: the cluster secrets it accepts, the one it proves with
        first; none: peers are not authenticated.
    :param refusals: logs refused links once per host and reason (one per
        node, shared by its links).
    """

    def __init__(self, node: PeerHandler, clock: IReactorTime, rpc_timeout: float,
                 max_frame: int, dialer: bool, secrets: Sequence[bytes] = (),
                 refusals: Optional[Refusals] = None) -> None:
        self.node = node
        self.clock = clock
        self.rpc_timeout = rpc_timeout
        self.MAX_LENGTH = max_frame
        self.dialer = dialer
        self.peer: Optional[Member] = None
        self.connected = False
        self._ids = itertools.count(1)
        # request id -> (answer, deadline), in the order sent (so by deadline)
        self._pending: dict[int, tuple[Answer, float]] = {}
        self._sweep: Optional[IDelayedCall] = None
        self._ready: list[Deferred[PeerProtocol]] = []
        self._shake = Handshake(dialer, secrets, os.urandom(NONCE_SIZE))
        self._shake_timer: Optional[IDelayedCall] = None
        self._refusals = refusals if refusals is not None else Refusals()
        self._closing = False
        # envelopes waiting to go out together in one frame
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_call: Optional[IDelayedCall] = None

    @property
    def peer_id(self) -> Optional[str]:
        """
        The id of the node at the other end, once the handshake is done.
        """
        return self.peer.node_id if self.peer else None

    @property
    def dialer_id(self) -> str:
        """
        The id of the node that dialled this link.
        """
        assert self.peer is not None
        return self.node.node_id if self.dialer else self.peer.node_id

    def when_ready(self) -> Deferred["PeerProtocol"]:
        """
        A new Deferred firing with this link once the handshake is done.
        """
        if self.peer is not None:
            return succeed(self)
        d: Deferred[PeerProtocol] = Deferred()
        self._ready.append(d)
        return d

    def connectionMade(self) -> None:
        """
        The dialler sends the preamble and its Hello.
        """
        self.connected = True
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            # replies are small and awaited: Nagle's algorithm would hold them
            set_no_delay(True)
        self.transport.write(self._shake.start())
        if not self.dialer:
            # a connection that opened as a peer and stalls is closed
            self._shake_timer = self.clock.callLater(self.rpc_timeout, self._shake_too_slow)
        if self.dialer:
            hello = Envelope()
            member_to_pb(self.node.me(), hello.hello.member)
            # a bad Welcome (or a node that cannot take it) fails the
            # handshake too, rather than leaving it waiting forever
            _deferred(self._request, hello).addCallback(self._welcomed).addErrback(self._refused)
            self._flush()

    def _welcomed(self, reply: Envelope) -> None:
        if reply.WhichOneof("body") != "welcome":
            raise PeerError(f"expected welcome, got {reply.WhichOneof('body')}")
        peer = member_from_pb(reply.welcome.member)
        members = [member_from_pb(m) for m in reply.welcome.members]
        self.peer = peer
        self.node.welcome(self, peer, members)
        self._fire_ready()

    def _refused(self, failure: Failure) -> None:
        if failure.check(PeerError, ValueError):
            log.error("refused by {address}: {why}", address=self._address(),
                      why=failure.getErrorMessage())
        elif not failure.check(PeerDisconnected, TimeoutError):
            log.failure("handshake with {address} failed", failure, address=self._address())
        self._fail_ready(failure)
        self._close()

    def _fire_ready(self) -> None:
        ready, self._ready = self._ready, []
        for d in ready:
            d.callback(self)

    def _fail_ready(self, failure: Failure) -> None:
        ready, self._ready = self._ready, []
        for d in ready:
            d.errback(failure)

    def _address(self) -> str:
        peer = self.transport.getPeer() if self.transport else None
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"

    def _close(self) -> None:
        """
        Close the link and read nothing more from it.
        """
        self._flush()
        self._closing = True
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """
        Go through the preambles (and the secret's challenge-response)
        first: no message is read before.
        """
        if self._closing:
            return
        if not self._shake.done:
            try:
                out, data = self._shake.feed(data)
            except HandshakeError as e:
                if e.reply:
                    self.transport.write(e.reply)
                self._refuse(str(e), e.kind)
                return
            if out:
                self.transport.write(out)
            if not self._shake.done:
                return
            if self._shake_timer is not None and self._shake_timer.active():
                self._shake_timer.cancel()
            self._shake_timer = None
            self._flush()  # the dialler's hello, held until now
            if not data:
                return
        super().dataReceived(data)

    def _refuse(self, why: str, kind: str = "") -> None:
        """
        Close a link whose other end failed the opening; log why, once per
        host and kind of reason.
        """
        self._refusals.log(self._what, self._address(), why, kind)
        self._fail_ready(Failure(PeerError(f"refused: {why}")))
        self._close()

    @property
    def _what(self) -> str:
        return "peer link to" if self.dialer else "peer link from"

    def _shake_too_slow(self) -> None:
        self._shake_timer = None
        if not self._shake.done and self.connected:
            self._refuse(f"no handshake within {self.rpc_timeout} s")

    def lengthLimitExceeded(self, length: int) -> None:
        """
        A frame over max_frame: log it and close the link.
        """
        log.warn("closed the peer link to {peer}: frame of {length} bytes is over max_frame",
                 peer=self.peer_id or self._address(), length=length)
        self._close()

    def stringReceived(self, data: bytes) -> None:
        """
        Handle the envelopes of one frame.
        """
        if self._closing:
            return
        try:
            frame = Frame.FromString(data)
        except DecodeError:
            log.warn("closed the peer link to {peer}: undecodable frame",
                     peer=self.peer_id or self._address())
            self._close()
            return
        pending = self._pending
        for envelope in frame.envelopes:
            if not self.connected or self._closing:
                return
            if envelope.reply:
                entry = pending.pop(envelope.request_id, None)
                if entry is not None:
                    if envelope.WhichOneof("body") == "error":
                        _answer(entry[0], PeerError(envelope.error.reason))
                    else:
                        _answer(entry[0], envelope)
            else:
                self._handle(envelope)

    def _handle(self, envelope: Envelope) -> None:
        kind = envelope.WhichOneof("body")
        if self.peer is None:
            if kind != "hello" or self.dialer:
                log.warn("closed a peer link from {address}: {kind} before hello",
                         address=self._address(), kind=kind)
                self._close()
                return
            self._hello(envelope)
            return
        try:
            reply = self.node.handle(self, envelope)
        except Exception as e:
            reply = _error_reply(e)
        if isinstance(reply, Deferred):
            reply.addErrback(_error_reply).addCallback(self._reply, envelope.request_id)
        else:
            self._reply(reply, envelope.request_id)

    def _hello(self, envelope: Envelope) -> None:
        try:
            member = member_from_pb(envelope.hello.member)
            self.peer = member
            members = self.node.hello(self, member)
        except (Refused, ValueError) as e:
            self.peer = None
            log.error("refused a peer from {address}: {why}", address=self._address(), why=str(e))
            self._reply(_error_reply(e), envelope.request_id)
            self._close()
            return
        reply = Envelope()
        member_to_pb(self.node.me(), reply.welcome.member)
        for m in members:
            member_to_pb(m, reply.welcome.members.add())
        self._reply(reply, envelope.request_id)
        self._fire_ready()

    def _reply(self, reply: Envelope, request_id: int) -> None:
        if not self.connected:
            return
        reply.request_id = request_id
        reply.reply = True
        self._send(reply)

    def _send(self, envelope: Envelope) -> None:
        """
        Queue C{envelope}: the envelopes sent during one turn of the reactor
        go out together, in one frame, when it ends: requests and the
        replies to the frames read in that turn (from every peer: a node
        is at once a coordinator and a replica of its peers).
        """
        data = envelope.SerializeToString()
        if self._out_size + len(data) > self.MAX_LENGTH - 64:
            self._flush()
        self._out.append(data)
        self._out_size += len(data) + 6
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_call = None
        self._flush()

    def _flush(self) -> None:
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        out = self._out
        if not out or self._shake.pending:
            return  # (the handshake sends what waits once it is done)
        self._out = []
        self._out_size = 0
        if not self.connected:
            return
        # a Frame is its envelopes, each as field 1: tag, length, bytes
        frame = b"".join([b"\n" + _varint(len(data)) + data for data in out])
        write_now(self.transport, _LENGTH.pack(len(frame)) + frame)

    def call(self, envelope: Envelope) -> Deferred[Envelope]:
        """
        Send a request and get its reply, or fail with L{PeerError},
        L{PeerDisconnected}, L{PeerUnavailable} or a timeout.
        """
        return _deferred(self.request, envelope)

    def request(self, envelope: Envelope, answer: Answer) -> None:
        """
        Send a request; C{answer} is called once, with the reply envelope,
        or with L{PeerError} (the peer answered an error),
        L{PeerDisconnected}, L{PeerUnavailable} or a C{TimeoutError} after
        C{rpc_timeout}. (L{call} without a Deferred, for the hot path.)
        """
        if self.peer is None:
            answer(PeerUnavailable("handshake not done"))
            return
        self._request(envelope, answer)

    def _request(self, envelope: Envelope, answer: Answer) -> None:
        if not self.connected or self._closing:
            answer(PeerDisconnected(f"link to {self.peer_id} is closed"))
            return
        request_id = next(self._ids)
        envelope.request_id = request_id
        self._pending[request_id] = (answer, self.clock.seconds() + self.rpc_timeout)
        if self._sweep is None:
            self._sweep = self.clock.callLater(self.rpc_timeout, self._expire)
        self._send(envelope)

    def _expire(self) -> None:
        """
        Time out the requests past their deadline; one timer per link, set
        for the oldest request still waiting.
        """
        self._sweep = None
        now = self.clock.seconds()
        pending = self._pending
        expired = []
        for request_id, (_, deadline) in pending.items():
            if deadline > now + 1e-6:
                break
            expired.append(request_id)
        answers = [pending.pop(request_id)[0] for request_id in expired]
        # set the next timer before answering: an answer may send a request
        # on this link, which sets one only when none is set
        if pending:
            deadline = next(iter(pending.values()))[1]
            self._sweep = self.clock.callLater(max(deadline - now, 0.001), self._expire)
        for answer in answers:
            _answer(answer, TimeoutError(f"{self.peer_id or self._address()} did not answer "
                                         f"within {self.rpc_timeout} s"))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """
        Fail every pending request and tell the node.
        """
        if self.peer is None and reason is not None and reason.check(SSLError):
            self._refusals.log(self._what, self._address(), tls_failure(reason), "tls")
        elif not self._shake.done and self._shake.secrets and not self._closing:
            # the other end refused this node's proof (the acceptor says
            # why in its log), or a dialler left without proving anything
            why = ("it closed the link: it does not accept this node's cluster secret"
                   if self.dialer
                   else "it closed the link before proving it knows the cluster secret")
            self._refusals.log(self._what, self._address(), why)
        self.connected = False
        self._out = []
        for call in (self._sweep, self._flush_call, self._shake_timer):
            if call is not None and call.active():
                call.cancel()
        self._sweep = self._flush_call = self._shake_timer = None
        pending, self._pending = self._pending, {}
        for answer, _ in pending.values():
            _answer(answer, PeerDisconnected(f"link to {self.peer_id or self._address()} lost"))
        self._fail_ready(Failure(PeerDisconnected("link closed during the handshake")))
        self.node.link_lost(self)


def _answer(answer: Answer, result: Any) -> None:
    """
    Give C{result} to C{answer}; a failing callback is logged, and does not
    stop the link handling the rest of its frame.
    """
    try:
        answer(result)
    except Exception:
        log.failure("handling a peer reply failed")


def _deferred(request: Callable[[Envelope, Answer], None], envelope: Envelope
              ) -> Deferred[Envelope]:
    """
    Send C{envelope} with C{request}; a Deferred of the reply.
    """
    d: Deferred[Envelope] = Deferred()

    def answer(result: Any) -> None:
        if d.called:
            return
        if isinstance(result, Exception):
            d.errback(Failure(result))
        else:
            d.callback(result)

    request(envelope, answer)
    return d


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _error_reply(error: Union[Exception, Failure]) -> Envelope:
    reply = Envelope()
    if isinstance(error, Failure):
        if not error.check(Refused, ValueError, PeerError):
            log.failure("peer request failed", error)
        error = error.value
    reply.error.reason = str(error) or type(error).__name__
    return reply


class PeerFactory(Factory):
    """
    Makes the dialling end of peer links.
    """

    noisy = False

    def __init__(self, node: PeerHandler, clock: IReactorTime, rpc_timeout: float,
                 max_frame: int, secrets: Sequence[bytes] = (),
                 refusals: Optional[Refusals] = None) -> None:
        self.node = node
        self.clock = clock
        self.rpc_timeout = rpc_timeout
        self.max_frame = max_frame
        #: the cluster secrets new links accept, the one they prove with
        #: first (the node changes them when its secret file changes)
        self.secrets = list(secrets)
        self._refusals = refusals if refusals is not None else Refusals()

    def buildProtocol(self, addr: Any) -> PeerProtocol:
        """
        A dialling link.
        """
        return self._link(dialer=True)

    def accepted(self) -> PeerProtocol:
        """
        An accepting link, for a connection that opened with the preamble.
        """
        return self._link(dialer=False)

    def _link(self, dialer: bool) -> PeerProtocol:
        return PeerProtocol(self.node, self.clock, self.rpc_timeout, self.max_frame,
                            dialer=dialer, secrets=self.secrets, refusals=self._refusals)


#: Dials C{host:port} with a factory; fires with the protocol it built.
Connect = Callable[[str, PeerFactory], Deferred[PeerProtocol]]


class PeerPool:
    """
    One link per peer, dialled on demand.

    :param factory: makes links.
    :param connect: dials an address.
    :param clock: for the backoff.
    :param backoff: seconds to wait after a failed dial, doubled up to
        C{max_backoff} while failures go on.
    """

    def __init__(self, factory: PeerFactory, connect: Connect, clock: IReactorTime,
                 backoff: float = 0.5, max_backoff: float = 5.0) -> None:
        self._factory = factory
        self._connect = connect
        self._clock = clock
        self._backoff = backoff
        self._max_backoff = max_backoff
        self.links: dict[str, PeerProtocol] = {}
        self._dialling: dict[str, list[Deferred[PeerProtocol]]] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, retry at)

    def get(self, node_id: Optional[str], address: str) -> Deferred[PeerProtocol]:
        """
        A ready link to the node at C{address} (C{node_id}, if known).
        """
        if node_id is not None:
            link = self.links.get(node_id)
            if link is not None and link.connected:
                return succeed(link)
        waiting = self._dialling.get(address)
        if waiting is not None:
            d: Deferred[PeerProtocol] = Deferred()
            waiting.append(d)
            return d
        count, retry_at = self._failures.get(address, (0, 0.0))
        if count and self._clock.seconds() < retry_at:
            return fail(PeerUnavailable(f"{address} failed recently; retrying later"))
        self._dialling[address] = []
        d = self._connect(address, self._factory)
        d.addCallback(lambda link: link.when_ready())
        d.addBoth(self._dialled, address)
        return d

    def _dialled(self, result: Union[PeerProtocol, Failure], address: str
                 ) -> Union[PeerProtocol, Failure]:
        waiting = self._dialling.pop(address, [])
        if isinstance(result, Failure):
            count = self._failures.get(address, (0, 0.0))[0] + 1
            delay = min(self._backoff * 2 ** (count - 1), self._max_backoff)
            self._failures[address] = (count, self._clock.seconds() + delay)
            for d in waiting:
                d.errback(result)
            return result
        self._failures.pop(address, None)
        for d in waiting:
            d.callback(result)
        return result

    def register(self, link: PeerProtocol) -> None:
        """
        Keep C{link} as the link to its peer. With two links to one peer,
        keep the one dialled by the node with the smaller id and close the
        other (both ends choose the same) after a grace period, so that
        requests in flight on it are not lost.
        """
        peer_id = link.peer_id
        assert peer_id is not None
        old = self.links.get(peer_id)
        if old is not None and old is not link and old.connected:
            keep, drop = sorted([old, link], key=lambda x: x.dialer_id)
            self.links[peer_id] = keep
            # no new requests go on the other one; it closes once what is
            # already in flight on it has been answered or timed out
            self._clock.callLater(drop.rpc_timeout + 1.0, drop.transport.loseConnection)
            return
        self.links[peer_id] = link

    def lost(self, link: PeerProtocol) -> None:
        """
        Forget a closed link.
        """
        peer_id = link.peer_id
        if peer_id is not None and self.links.get(peer_id) is link:
            del self.links[peer_id]

    def close(self) -> None:
        """
        Close every link.
        """
        for link in list(self.links.values()):
            link.transport.loseConnection()
