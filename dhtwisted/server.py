# -*- test-case-name: tests.test_server -*-
"""
The node's one listening port: clients speaking the text protocol or RESP2,
and (from the cluster on) peers.

The first bytes of a connection pick its protocol: the peer preamble makes a
peer link, C{*} makes a RESP2 client (as redis-cli, redis-py and
redis-benchmark speak), anything else a text client. The protocol only
parses bytes into commands and encodes replies; L{Commands} runs them.

Replies go out in the order the commands came in, even when a later one is
answered first. A client with more than C{max_pipeline} commands in progress
is not read from until it has fewer.
"""

from __future__ import annotations

import re
from collections import deque
from time import monotonic, perf_counter
from typing import Any, Callable, Optional, Union

from OpenSSL.SSL import Error as SSLError
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from .commands import OK, PENDING, QUIT, Commands, ErrorReply, HelloReply, Lines, Reply, Status
from .logs import OBSERVER, Refusals
from .quoting import QuotingError, quote_value, reply_shape, split_args
from .security import FailureLimiter, check_password
from .sending import write_now
from .tls import TLS_FIRST_BYTE, tls_failure
from .wire import MAGIC
from .resp import (
    RespError,
    encode_array,
    encode_bulk,
    encode_error,
    encode_integer,
    encode_status,
    parse_commands,
)

__all__ = ["NodeFactory", "NodeProtocol", "PEER_MAGIC", "encode_resp", "encode_text"]

log = Logger(observer=OBSERVER)

#: The first bytes of a peer link; a protocol version follows. No text or
#: RESP client starts with a NUL byte.
PEER_MAGIC = MAGIC

_HTTP = re.compile(rb"^(GET|POST|PUT|HEAD|DELETE|OPTIONS|PATCH|CONNECT) \S+ HTTP/\d\.\d$")
_TEXT_EOL = b"\r\n"
_RESP_OK = b"+OK\r\n"


def encode_text(reply: Reply) -> bytes:
    """
    A reply in the text protocol: one line (several for C{MGET}, C{INFO},
    C{MEMBERS}).
    """
    if reply is None:
        return b"(nil)" + _TEXT_EOL
    if isinstance(reply, bytes):
        return quote_value(reply) + _TEXT_EOL
    if isinstance(reply, Status):
        return (b"ok" if reply == "OK" else reply.encode("utf-8")) + _TEXT_EOL
    if isinstance(reply, ErrorReply):
        code = "" if reply.code == "ERR" else reply.code + " "
        return b"ERR " + _one_line(code + reply.message) + _TEXT_EOL
    if isinstance(reply, int):
        return b"%d" % reply + _TEXT_EOL
    if isinstance(reply, Lines):
        return b"".join(_one_line(line) + _TEXT_EOL for line in reply) + _TEXT_EOL
    if isinstance(reply, HelloReply):
        return encode_text(Lines(f"{k}:{v}" for k, v in reply.fields))
    return b"".join(encode_text(item) for item in reply)


def _one_line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")


def encode_resp(reply: Reply) -> bytes:
    """
    A reply in RESP2.
    """
    if type(reply) is bytes:
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if reply is OK:
        return _RESP_OK
    if reply is None or isinstance(reply, bytes):
        return encode_bulk(reply)
    if isinstance(reply, Status):
        return encode_status(reply)
    if isinstance(reply, ErrorReply):
        return encode_error(reply.message, reply.code)
    if isinstance(reply, int):
        return encode_integer(reply)
    if isinstance(reply, Lines):
        return encode_bulk("".join(line + "\r\n" for line in reply).encode("utf-8"))
    if isinstance(reply, HelloReply):
        items = [_resp_scalar(k) + _resp_scalar(v) for k, v in reply.fields]
        kind = b"%" if reply.proto == 3 else b"*"
        count = len(items) if reply.proto == 3 else 2 * len(items)
        return kind + b"%d\r\n" % count + b"".join(items)
    if reply and any(isinstance(item, ErrorReply) for item in reply):
        return next(encode_error(i.message, i.code) for i in reply
                    if isinstance(i, ErrorReply))
    return encode_array(reply)


def encode_resp3(reply: Reply) -> bytes:
    """
    A reply in RESP3, for clients that said C{HELLO 3}: as RESP2 but for
    the null, C{_}.
    """
    if reply is None:
        return b"_\r\n"
    if isinstance(reply, list) and not any(isinstance(i, ErrorReply) for i in reply):
        return b"*%d\r\n" % len(reply) + b"".join(
            b"_\r\n" if item is None else encode_bulk(item) for item in reply
        )
    return encode_resp(reply)


def _resp_scalar(value: Union[str, int]) -> bytes:
    if isinstance(value, int):
        return encode_integer(value)
    return encode_bulk(value.encode("utf-8"))


Command = Union[list[bytes], ErrorReply]


def _text_command(line: bytes) -> Optional[Command]:
    """
    One text command line to its arguments, C{None} for a blank line, or
    an L{ErrorReply} for a line that cannot be a command.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return ErrorReply(
            "request is not UTF-8 text; write other bytes as \\xHH inside double quotes"
        )
    try:
        args = split_args(line)
    except QuotingError as e:
        return ErrorReply(str(e))
    return args or None


@implementer(IHalfCloseableProtocol)
class NodeProtocol(Protocol):
    """
    One connection to the node's port, until its first bytes say what it
    is; then a text or RESP client (peers are handed to the peer side).

    A client that closes its sending side (as C{printf 'get a\n' | nc -N}
    does) still gets the replies to what it sent; then the connection closes.
    """

    factory: "NodeFactory"

    def __init__(self, factory: "NodeFactory") -> None:
        self.factory = factory
        self._mode: Optional[str] = None
        self._encode: Callable[[Reply], bytes] = encode_text
        self._buf = b""
        self._more: list[bytes] = []  # chunks of an incomplete command
        self._more_len = 0
        self._need = 0  # bytes the incomplete RESP command needs at least
        # replies in client order, each [data] if it was ready at once, or
        # [data or None until it comes, count of commands it answers,
        # command name, when it was read]
        self._replies: deque[list[Any]] = deque()
        self._in_progress = 0  # commands the entries of _replies stand for
        self._out: list[bytes] = []
        self._reading = False
        self._paused = False
        self._done = False  # no more commands: QUIT, fatal error or closed
        self._counted = False
        self._lost = False
        self._peer: Optional[Protocol] = None
        self._spare = self._slot()
        self._spare_run = self._run_slot()
        self._authed = not factory.password
        #: it runs inside a TLS connection (which counts it, and which may
        #: not hold another)
        self.inside_tls = False

    def connectionMade(self) -> None:
        """
        Count the connection; refuse it when the node has far too many.
        """
        if not self.inside_tls:  # (the TLS connection around it counted itself)
            self.factory.connections += 1
        if self.factory.connections > self.factory.max_connections:
            log.warn("refused a connection: {count} open", count=self.factory.connections)
            self._done = True
            self.transport.abortConnection()
            return
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        log.debug("connection from {address}", address=_peer_text(self.transport))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """
        Forget the connection; commands in progress finish without it.
        """
        if self._peer is not None:
            self._peer.connectionLost(reason)
        elif self._mode is None and reason is not None and reason.check(SSLError):
            # a TLS client or peer whose certificate the handshake refused
            self.factory.refusals.log("TLS connection from", _peer_text(self.transport),
                                      tls_failure(reason), "tls")
        self._done = True
        self._lost = True
        self._replies.clear()
        self._in_progress = 0
        if not self.inside_tls:
            self.factory.connections -= 1
        if self._counted:
            self.factory.clients -= 1
        if self._peer is None:
            log.debug("connection from {address} closed", address=_peer_text(self.transport))

    def readConnectionLost(self) -> None:
        """
        The client sends no more: answer what it sent, then close.
        """
        if self._peer is not None:
            self.transport.loseConnection()
            return
        self._done = True
        self._more = []
        self._send()

    def writeConnectionLost(self) -> None:
        """
        The client reads no more: close.
        """
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """
        Parse and run every complete command in C{data}, then send what
        replies are ready in one write.
        """
        if self._peer is not None:
            self._peer.dataReceived(data)
            return
        if self._done:
            return
        if self._mode is None:
            chosen = self._choose_mode(data)
            if chosen is None:
                return
            data = chosen
        if self._more:
            self._more.append(data)
            self._more_len += len(data)
            if self._more_len < self._need or (self._need == 0 and self._waiting_for_line(data)):
                return
            data = b"".join(self._more)
            self._more = []
            self._more_len = 0
        elif self._buf:
            data = self._buf + data
        self._buf = data
        self._reading = True
        commands = self.factory.commands
        commands.hold()  # the writes of one read may go to the replicas together
        try:
            self._process()
        finally:
            commands.release()
            self._reading = False
        self._send()

    def _waiting_for_line(self, data: bytes) -> bool:
        if self._mode == "resp" or b"\n" in data:
            return False
        if self._more_len > self.factory.max_line:
            self._line_too_long()
            self._more = []
            self._send()
        return True

    def _choose_mode(self, data: bytes) -> Optional[bytes]:
        """
        Pick the connection's protocol from its first bytes.

        :return: the bytes to parse as client commands, or C{None} if there
            are none (yet).
        """
        data = self._buf + data
        self._buf = b""
        if len(data) < len(PEER_MAGIC) and PEER_MAGIC.startswith(data):
            self._buf = data  # too short to tell yet
            return None
        if data.startswith(PEER_MAGIC):
            self._mode = "peer"
            self._done = True
            self._peer = self.factory.peer_connected(self, data)
            return None
        if data[:1] == TLS_FIRST_BYTE and self.factory.tls is not None and not self.inside_tls:
            # TLS: the commands (or the peer link) are inside; this
            # connection only carries its bytes
            self._mode = "tls"
            self._done = True
            self._peer = self.factory.tls_connected(self, data)
            return None
        if data[:1] == b"*":
            self._mode = "resp"
            self._encode = encode_resp
        else:
            self._mode = "text"
        self._counted = True
        self.factory.clients += 1
        if self.factory.clients > self.factory.max_clients:
            self._fatal("max number of clients reached")
            self._send()
            return None
        return data

    def _process(self) -> None:
        if self._mode == "resp":
            self._process_resp()
        else:
            self._process_text()
        if not self._done and len(self._buf) > 0:
            # keep the incomplete command as a chunk; join only when complete
            self._more = [self._buf]
            self._more_len = len(self._buf)
            self._buf = b""
            if self._mode == "text" and self._more_len > self.factory.max_line:
                self._line_too_long()

    def _process_text(self) -> None:
        buf = self._buf
        pos = 0
        limit = self.factory.max_line
        while not self._done:
            end = buf.find(b"\n", pos)
            if end < 0:
                break
            if end - pos > limit:
                self._line_too_long()
                return
            line = buf[pos:end]
            pos = end + 1
            if _HTTP.match(line.rstrip(b"\r")):
                log.info("closed a connection that spoke HTTP")
                self._fatal("this is a dhtwisted node, not an HTTP server")
                return
            command = _text_command(line)
            if command is None:
                continue
            if isinstance(command, ErrorReply):
                self._reply(command)
            else:
                self._run(command)
        self._buf = buf[pos:]

    def _process_resp(self) -> None:
        factory = self.factory
        try:
            commands, used, need = parse_commands(
                self._buf, factory.max_line, factory.max_line, split_args
            )
        except RespError as e:
            self._fatal(str(e))
            return
        self._buf = self._buf[used:]
        self._need = need
        execute = factory.commands.execute
        bulk: Optional[Callable[..., Optional[tuple[int, Any]]]]
        bulk = factory.commands.execute_bulk
        i = 0
        while i < len(commands):
            if self._done:
                return
            if (not self._authed or len(commands[i][0]) in (4, 5)) and self._gate(commands[i]):
                i += 1  # (AUTH, or refused before AUTH)
                continue
            if bulk is not None and i + 1 < len(commands):  # (one alone: no gain)
                ran = bulk(commands, i, self._spare_run[1])
                if ran is None:
                    bulk = None
                elif ran[0]:
                    i += ran[0]
                    replies = ran[1]
                    if replies is PENDING:
                        self._pending(self._spare_run[0], ran[0])
                        continue
                    if self._replies:
                        self._queue_reply([self._encode_all(replies), ran[0]], ran[0])
                    else:
                        self._out.append(self._encode_all(replies))
                    continue
            args = commands[i]
            i += 1
            # _run, for RESP: the path of every command a Redis client sends
            slot, respond = self._spare
            reply = execute(args, respond)
            if reply is PENDING:
                self._pending(slot)
                continue
            if type(reply) is HelloReply:
                self._encode = encode_resp3 if reply.proto == 3 else encode_resp
            data = self._encode(reply)
            if self._replies:
                self._queue_reply([data])
            else:
                self._out.append(data)
            if reply is QUIT:
                self._done = True
        if self._buf and not self._need:
            # an error stopped the parse after complete commands: report it now
            try:
                parse_commands(self._buf, factory.max_line, factory.max_line, split_args)
            except RespError as e:
                self._fatal(str(e))

    def _slot(self) -> tuple[list[Optional[bytes]], Callable[[Reply], None]]:
        """
        A place in the reply order, and the callable that fills it.
        """
        slot: list[Optional[bytes]] = [None]

        def respond(reply: Reply) -> None:
            self._fill(reply, slot)

        return slot, respond

    def _run_slot(self) -> tuple[list[Optional[bytes]], Callable[[list[Reply]], None]]:
        """
        A place in the reply order for a run of commands' replies, and the
        callable that fills it.
        """
        slot: list[Optional[bytes]] = [None]

        def respond(replies: list[Reply]) -> None:
            self._fill(replies, slot, many=True)

        return slot, respond

    def _run(self, args: list[bytes]) -> None:
        """
        Run one text command. (RESP commands run in L{_process_resp}.)
        """
        if self._gate(args):
            return
        slot: list[Optional[bytes]] = [None]
        # the text protocol's reply has the shape the client expects
        # (reply_shape): MGET one line per key, errors too; other lists
        # are blocks
        kind, count = reply_shape(args)

        def respond(reply: Reply) -> None:
            self._fill(_text_shape(reply, kind, count), slot)

        reply = self.factory.commands.execute(args, respond)
        if reply is PENDING:
            self._pending(slot)
            return
        self._reply(_text_shape(reply, kind, count))
        if reply is QUIT:
            self._done = True

    def _gate(self, args: list[bytes]) -> bool:
        """
        Answer C{AUTH}, and any command but C{QUIT} before a client that
        must give a password gave it; whether it answered.
        """
        name = args[0].upper()
        if name == b"AUTH":
            self._reply(self._auth(args))
            return True
        if name == b"HELLO" and len(args) > 2:
            # HELLO 3 AUTH user password: what redis-py sends first
            options = [arg.upper() for arg in args[2:]]
            if b"AUTH" in options:
                at = options.index(b"AUTH") + 2
                if self.factory.password:  # (without one, as Redis: any is fine)
                    reply = self._auth([b"AUTH", *args[at + 1 : at + 3]])
                    if reply is not OK:
                        self._reply(reply)
                        return True
                del args[at : at + 3]
        if self._authed or name in (b"QUIT", b"EXIT"):
            return False
        self._reply(ErrorReply("Authentication required.", code="NOAUTH"))
        return True

    def _auth(self, args: list[bytes]) -> Reply:
        """
        C{AUTH [default] password}.
        """
        factory = self.factory
        if not factory.password:
            return ErrorReply("AUTH <password> called without any password configured for "
                              "the default user. Are you sure your configuration is correct?")
        if len(args) not in (2, 3):
            return ErrorReply("wrong number of arguments for 'auth' command")
        host = _peer_text(self.transport).rsplit(":", 1)[0]
        now = factory.now()
        wait = factory.limiter.wait(host, now)
        if wait > 0:
            return ErrorReply(f"too many failed AUTH attempts from {host}: try again in "
                              f"{wait:.1f} s")
        if (len(args) == 2 or args[1] == b"default") and check_password(args[-1],
                                                                          factory.password):
            self._authed = True
            return OK
        factory.limiter.failed(host, now)
        log.info("failed AUTH from {address}", address=_peer_text(self.transport))
        return ErrorReply("invalid username-password pair or user is disabled.",
                          code="WRONGPASS")

    def _queue_reply(self, entry: list[Any], count: int = 1) -> None:
        """
        Keep C{entry} (the replies of C{count} commands) in its place in
        the reply order.
        """
        self._replies.append(entry)
        self._in_progress += count

    def _pending(self, slot: list[Any], count: int = 1) -> None:
        """
        A command (or a run of C{count}) whose reply comes later: keep its
        place in the order, and when it was read, to time it.
        """
        commands = self.factory.commands
        slot += (count, commands.waiting, commands.read_at)
        self._queue_reply(slot, count)
        if slot is self._spare[0]:
            # most replies are ready at once, so a RESP connection uses one
            # slot again until a command keeps it
            self._spare = self._slot()
        elif slot is self._spare_run[0]:
            self._spare_run = self._run_slot()
        if slot[0] is not None:  # answered before execute returned
            commands.observe(slot[2], perf_counter() - slot[3], count)
            self._drain()
        elif self._in_progress >= self.factory.max_pipeline and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _reply(self, reply: Reply) -> None:
        data = self._encode(reply)
        if self._replies:
            self._queue_reply([data])
        else:
            self._out.append(data)

    def _fill(self, reply: Reply, slot: list[Optional[bytes]], many: bool = False) -> None:
        if self._lost:
            return
        try:
            if many:
                slot[0] = self._encode_all(reply)  # type: ignore[arg-type]
            else:
                slot[0] = self._encode(reply)
        except Exception:
            log.failure("encoding a reply failed")
            # one error per command the slot answers
            slot[0] = self._encode(ErrorReply("internal error, see the node's log")) * (
                len(reply) if many else 1)  # type: ignore[arg-type]
        if len(slot) > 2:  # (else _pending times it)
            self.factory.commands.observe(slot[2], perf_counter() - slot[3], slot[1])
        self._drain()

    def _encode_all(self, replies: list[Reply]) -> bytes:
        """
        C{replies}, encoded one after the other.
        """
        # (a run of SETs, mostly; its replies are OK or errors, never bytes
        # to compare with a str)
        if replies and replies[0] is OK and replies.count(OK) == len(replies):
            return self._encode(OK) * len(replies)
        return b"".join(map(self._encode, replies))

    def _drain(self) -> None:
        """
        Send the replies that are ready, in order.
        """
        replies = self._replies
        while replies and replies[0][0] is not None:
            entry = replies.popleft()
            self._out.append(entry[0])
            self._in_progress -= entry[1] if len(entry) > 1 else 1
        if not self._reading:
            # the replies that come during one turn of the reactor (those of
            # a client's pipelined writes, say) go out in one write
            self.factory.send_later(self)
        if self._paused and self._in_progress < self.factory.max_pipeline // 2 + 1:
            self._paused = False
            if not self._done:
                self.transport.resumeProducing()

    def _line_too_long(self) -> None:
        self._fatal(f"line too long (max_line is {self.factory.max_line} bytes)")

    def _fatal(self, message: str) -> None:
        """
        Reply with an error after what is already queued, then close.
        """
        self._reply(ErrorReply(message))
        self._done = True
        self._buf = b""

    def send(self) -> None:
        """
        Send the replies that are ready.
        """
        if not self._lost:
            self._send()

    def _send(self) -> None:
        if self._out:
            write_now(self.transport, b"".join(self._out))
            self._out = []
        if self._done and not self._replies and not self._lost:
            self.transport.loseConnection()


class _InsideTLS(Factory):
    """
    Makes the connections that run inside TLS: those of a L{NodeFactory},
    marked as such.
    """

    noisy = False

    def __init__(self, outer: "NodeFactory") -> None:
        self.outer = outer

    def buildProtocol(self, addr: object) -> NodeProtocol:
        proto = self.outer.buildProtocol(addr)
        proto.inside_tls = True
        return proto


def _peer_text(transport: Any) -> str:
    """
    The other end of a connection, as C{host:port}.
    """
    try:
        where = transport.getPeer()
        return f"{where.host}:{where.port}"
    except Exception:
        return "?"


def _text_shape(reply: Reply, kind: str, count: int) -> Reply:
    if kind == "lines" and count > 1 and isinstance(reply, ErrorReply):
        return [reply] * count
    if kind == "block" and isinstance(reply, list):
        return Lines(quote_value(item).decode("utf-8", "replace") for item in reply)
    return reply


class NodeFactory(Factory):
    """
    Makes a L{NodeProtocol} per connection, with the node's commands and
    limits.

    :param commands: runs client commands.
    :param max_line: longest text command line, and longest RESP string.
    :param max_clients: client connections served at once.
    :param max_pipeline: commands of one client in progress at once.
    :param peer_connected: takes over a connection that opened as a peer
        link, given the bytes read so far; returns the protocol that gets
        the connection's later bytes.
    :param clock: with it, replies that come between reads are sent at the
        end of the reactor's turn, together; without, at once.
    :param password: what clients must give with C{AUTH} before any other
        command; empty: no password.
    :param limiter: limits failed C{AUTH} attempts per client host.
    :param tls: the TLS options of connections that open with a TLS client
        hello; none: such bytes are taken as a text client's.
    :param refusals: logs refused connections once per host and reason.
    """

    protocol = NodeProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        commands: Commands,
        max_line: int,
        max_clients: int,
        max_pipeline: int,
        peer_connected: Optional[Callable[[NodeProtocol, bytes], Protocol]] = None,
        clock: Optional[IReactorTime] = None,
        password: bytes = b"",
        limiter: Optional[FailureLimiter] = None,
        tls: Optional[Any] = None,
        refusals: Optional[Refusals] = None,
    ) -> None:
        self.commands = commands
        self.tls = tls
        self.refusals = refusals if refusals is not None else Refusals()
        self._tls_factory = (TLSMemoryBIOFactory(tls, False, _InsideTLS(self), clock)
                             if tls is not None else None)
        self.password = password
        self.limiter = limiter or FailureLimiter()
        self.max_line = max_line
        self.max_clients = max_clients
        self.max_pipeline = max_pipeline
        # room for peers and for refusing clients politely
        self.max_connections = max_clients + 1024
        self._peer_connected = peer_connected
        self.connections = 0
        self.clients = 0
        self._clock = clock
        self._unsent: dict[NodeProtocol, None] = {}
        self._send_call: Optional[IDelayedCall] = None

    def now(self) -> float:
        """
        The time, by the factory's clock.
        """
        return self._clock.seconds() if self._clock is not None else monotonic()

    def send_later(self, proto: NodeProtocol) -> None:
        """
        Send C{proto}'s ready replies at the end of this turn of the reactor.
        """
        if self._clock is None:
            proto.send()
            return
        self._unsent[proto] = None
        if self._send_call is None:
            self._send_call = self._clock.callLater(0, self._send_all)

    def _send_all(self) -> None:
        self._send_call = None
        unsent, self._unsent = self._unsent, {}
        for proto in unsent:
            proto.send()

    def buildProtocol(self, addr: object) -> NodeProtocol:
        """
        A protocol for a new connection.
        """
        return NodeProtocol(self)

    def tls_connected(self, proto: NodeProtocol, data: bytes) -> Protocol:
        """
        A connection opened with a TLS client hello: a TLS layer over it,
        with a connection of this factory inside.
        """
        assert self._tls_factory is not None
        tls = self._tls_factory.buildProtocol(proto.transport.getPeer())
        tls.makeConnection(proto.transport)
        tls.dataReceived(data)
        return tls  # type: ignore[no-any-return]

    def peer_connected(self, proto: NodeProtocol, data: bytes) -> Optional[Protocol]:
        """
        A connection opened as a peer link: hand it to the peer side.
        """
        if self._peer_connected is None:
            log.warn("refused a peer link: this node does not serve peers")
            proto.transport.loseConnection()
            return None
        return self._peer_connected(proto, data)
