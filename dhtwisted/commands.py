# -*- test-case-name: tests.test_server -*-
"""
The client commands, independent of how they arrived (text or RESP).

L{Commands.execute} takes a command's arguments and returns its reply, or
L{PENDING} when replicas must be asked and the reply comes later. Replies are plain values that
each protocol encodes its own way: L{Status}, L{ErrorReply}, C{bytes} (a
value), C{None} (a missing key), C{int}, a C{list} (one item per key of an
C{MGET}), L{Lines} (C{INFO}, C{MEMBERS}).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Callable, Optional, Protocol, Sequence, Union

from twisted.logger import Logger
from twisted.python.failure import Failure

from .logs import OBSERVER
from .metrics import Histogram
from .twopc import PENDING, TransactionFailed

__all__ = ["PENDING", "Commands", "ErrorReply", "HelloReply", "Lines", "OK", "QUIT", "Status"]

log = Logger(observer=OBSERVER)


class Status(str):
    """
    A short status reply: C{ok} in text, C{+OK} in RESP.
    """


@dataclass(frozen=True)
class ErrorReply:
    """
    An error reply: C{ERR <message>}; in RESP, C{-<code> <message>}, the
    code telling Redis clients what kind of error it is (C{NOAUTH},
    C{WRONGPASS}).
    """

    message: str
    code: str = "ERR"


class Lines(tuple[str, ...]):
    """
    A reply of several lines (C{INFO}, C{MEMBERS}): in text each is a line
    and an empty line ends them; in RESP they are one bulk string.
    """


@dataclass(frozen=True)
class HelloReply:
    """
    The reply to C{HELLO}: the protocol the connection speaks from now on,
    and facts about the server (a map in RESP3, a flat array in RESP2).
    """

    proto: int
    fields: tuple[tuple[str, Union[str, int]], ...]


OK = Status("OK")
PONG = Status("PONG")
#: The reply to C{QUIT}: C{OK}, then the connection closes.
QUIT = Status("OK")

Reply = Union[Status, ErrorReply, bytes, None, int, list, Lines, HelloReply]
#: Gets the result of a read or write, or an exception.
Done = Callable[[Any], None]


class NodeAPI(Protocol):
    """
    What the commands need of a node. C{read} and C{write} return their
    result at once when they can, else L{PENDING}, and then call C{done}
    once with the result or an exception (L{TransactionFailed}: the
    command failed, with a reason for the client).
    """

    def read(self, keys: Sequence[bytes], done: Done) -> Any:
        """
        Values of C{keys}, C{None} where missing.
        """

    def write(self, writes: Sequence[tuple[bytes, Optional[bytes]]], done: Done) -> Any:
        """
        Commit C{writes} everywhere or nowhere; the result is which keys
        existed.
        """

    def hold(self) -> None:
        """
        Gather the writes that start until L{release} (optional).
        """

    def release(self) -> None:
        """
        Start the writes gathered since L{hold}.
        """

    def alone(self) -> bool:
        """
        Whether this node alone holds every key now, as in a one-node
        cluster (optional): then L{write_each} and L{read_each} take runs of
        C{SET}s and C{GET}s.
        """

    def write_each(self, writes: Sequence[tuple[bytes, bytes]]) -> int:
        """
        Commit the first of C{writes} at once, each as its own write, in
        order, as long as that can be done in one step here; how many. The
        next must go through L{write}.
        """

    def write_run(self, writes: Sequence[tuple[bytes, bytes]],
                  done: Callable[[list[Any]], None]) -> tuple[int, Any]:
        """
        Apply the first of C{writes}, each as its own write, in order, in
        one go where it can (optional): how many it took (none: the next
        must go through L{write}), and for each C{None} if it committed or
        why not (an exception), at once or later through C{done} (then the
        second item is L{PENDING}).
        """

    def read_each(self, keys: Sequence[bytes]) -> list[Optional[bytes]]:
        """
        The values of the first of C{keys}, as long as this node can read
        them alone at once. The next must go through L{read}.
        """

    def info(self, section: Optional[str]) -> list[str]:
        """
        The C{INFO} lines.
        """

    def members(self) -> list[str]:
        """
        The C{MEMBERS} lines.
        """

    def status(self) -> dict[str, Any]:
        """
        The cluster as this node sees it (C{DHT STATUS}).
        """

    def ring_status(self) -> dict[str, Any]:
        """
        Token ownership (C{DHT RING}).
        """

    def key_status(self, key: bytes, done: Done) -> Any:
        """
        Where C{key} lives and what its replicas hold (C{DHT KEY}): the
        document, or L{PENDING} and later C{done} with it.
        """

    def leave(self) -> bool:
        """
        Leave the cluster for good (C{DHT LEAVE}); whether it is leaving.
        """


#: Gets a command's reply, when it comes after L{Commands.execute} returned.
Respond = Callable[[Reply], None]
Shape = Callable[[Any], Reply]


@dataclass(frozen=True)
class _Command:
    run: Callable[..., object]
    min_args: int
    max_args: int
    pairs: bool = False  # arguments after the name come in pairs


class Commands:
    """
    Runs client commands against a node.

    :param node: the node.
    :param max_key: the longest key accepted.
    :param max_value: the largest value accepted.
    :param max_write: the most bytes of keys and values one write command
        may carry (it travels to each replica in one message).
    """

    def __init__(self, node: NodeAPI, max_key: int, max_value: int,
                 max_write: Optional[int] = None) -> None:
        self._node = node
        self._max_key = max_key
        self._max_value = max_value
        self._max_write = _ANY if max_write is None else max_write
        self.calls: Counter[bytes] = Counter()  # upper-case command name -> count
        self.errors = 0
        # upper-case command name -> time from reading a command to its reply
        self.latency: dict[bytes, Histogram] = {}
        self.read_at = perf_counter()  # when the commands being run were read
        # the name of the last command that answered PENDING: the caller
        # times it (see observe)
        self.waiting = b""
        self._at_once: dict[bytes, int] = {}  # commands of this read answered at once
        self._hold = getattr(node, "hold", None)
        self._release = getattr(node, "release", None)
        self._alone = getattr(node, "alone", lambda: False)
        self._write_run = getattr(node, "write_run", None)

    def hold(self) -> None:
        """
        The commands run until L{release} came in together (one read of a
        client's pipelined commands): the node may gather their writes into
        one transaction.
        """
        self.read_at = perf_counter()
        if self._hold is not None:
            self._hold()

    def release(self) -> None:
        """
        See L{hold}.
        """
        if self._release is not None:
            try:
                self._release()
            except Exception:
                log.failure("starting gathered writes failed")
        at_once = self._at_once
        if at_once:
            # the replies ready at once go out now, together
            took = perf_counter() - self.read_at
            for name, count in at_once.items():
                self.observe(name, took, count)
            at_once.clear()

    def observe(self, name: bytes, seconds: float, count: int = 1) -> None:
        """
        Count C{count} commands C{name} answered C{seconds} after they were
        read. (Those answered at once are counted here; the caller counts
        those that answered L{PENDING}, by L{waiting} and L{read_at}.)
        """
        histogram = self.latency.get(name)
        if histogram is None:
            histogram = self.latency[name] = Histogram()
        histogram.observe(seconds, count)

    def execute(self, args: list[bytes], respond: Respond) -> Any:
        """
        Run one command.

        :param args: the command name and its arguments.
        :param respond: called with the reply later, if it is not ready at once.
        :return: the reply, or L{PENDING} if C{respond} will get it. Never
            raises: a failure is an error reply (and logged).
        """
        name = args[0]
        command = _TABLE.get(name)  # as clients send it, mostly
        if command is None:
            name = name.upper()
            command = _TABLE.get(name)
            if command is None:
                self.errors += 1
                shown = args[0][:64].decode("utf-8", "replace")
                return ErrorReply(f"unknown command '{shown}'")
        count = len(args) - 1
        if (
            count < command.min_args
            or count > command.max_args
            or (command.pairs and count % 2)
        ):
            self.errors += 1
            return ErrorReply(
                f"wrong number of arguments for '{name.decode().lower()}' command"
            )
        calls = self.calls
        calls[name] = calls.get(name, 0) + 1
        try:
            result = command.run(self, args, respond)
        except Exception:
            # a bug, not the client's doing: say so, keep serving
            self.errors += 1
            log.failure("command {name} failed", name=name.decode("ascii", "replace"))
            result = ErrorReply("internal error, see the node's log")
        if result is PENDING:
            self.waiting = name
        else:
            at_once = self._at_once
            at_once[name] = at_once.get(name, 0) + 1
        return result

    def execute_bulk(self, commands: list[list[bytes]], start: int,
                     respond: Callable[[list[Reply]], None]) -> Optional[tuple[int, Any]]:
        """
        Run together the commands from C{commands[start]} on that can go in
        bulk: a run of plain C{SET}s (each still its own write), or, while
        this node alone holds every key, of C{GET}s of keys it holds. The
        same replies as L{execute} would give one by one, for far fewer
        Python calls per command.

        :param respond: called with the replies, in order, if they come later.
        :return: how many commands it ran (none: run the one at C{start}
            with L{execute}) and their replies, a list or L{PENDING}; or
            C{None} if no later command of this read can go in bulk either.
        """
        name = commands[start][0]
        kind = _BULK.get(name)
        if kind is None:
            return _NO_RUN
        alone = self._alone()
        max_key = self._max_key
        run = []
        if kind == b"SET":
            if not alone and self._write_run is None:
                return None
            max_value = self._max_value
            max_write = self._max_write
            for args in itertools.islice(commands, start, None):
                if len(args) != 3 or args[0] != name:
                    break
                key = args[1]
                value = args[2]
                if (len(key) > max_key or len(value) > max_value
                        or len(key) + len(value) > max_write):
                    break  # execute says what is wrong
                run.append((key, value))
            if alone:
                count = self._node.write_each(run)
                replies: Any = [OK] * count
            elif len(run) < 2:
                return _NO_RUN
            else:
                try:
                    count, results = self._write_run(  # type: ignore[misc]
                        run, lambda results: respond(self._run_replies(results)))
                except Exception:
                    # a bug, not the client's doing: say so for each, keep serving
                    self.errors += len(run)
                    log.failure("a run of {count} SETs failed", count=len(run))
                    return len(run), [ErrorReply("internal error, see the node's log")] * len(run)
                if not count:
                    return _NO_RUN
                replies = results if results is PENDING else self._run_replies(results)
        else:
            if not alone:
                return None
            for args in itertools.islice(commands, start, None):
                if len(args) != 2 or args[0] != name or len(args[1]) > max_key:
                    break
                run.append(args[1])
            replies = self._node.read_each(run)
            count = len(replies)
        if count:
            calls = self.calls
            calls[kind] = calls.get(kind, 0) + count
            if replies is PENDING:
                self.waiting = kind
            else:
                at_once = self._at_once
                at_once[kind] = at_once.get(kind, 0) + count
        return count, replies

    def _run_replies(self, results: list[Any]) -> list[Reply]:
        """
        The replies to a run of C{SET}s, from the result of each.
        """
        return [OK if result is None else self._outcome(result, _ok) for result in results]

    def _check_key(self, key: bytes) -> Optional[ErrorReply]:
        if len(key) > self._max_key:
            return ErrorReply(f"key is longer than max_key ({self._max_key} bytes)")
        return None

    def _check_keys(self, keys: Sequence[bytes]) -> Optional[ErrorReply]:
        for key in keys:
            error = self._check_key(key)
            if error is not None:
                return error
        return None

    def _check_value(self, value: bytes) -> Optional[ErrorReply]:
        if len(value) > self._max_value:
            return ErrorReply(f"value is larger than max_value ({self._max_value} bytes)")
        return None

    def _write(self, writes: list[tuple[bytes, Optional[bytes]]], shape: Shape,
               respond: Respond) -> Any:
        total = 0
        max_key = self._max_key
        max_value = self._max_value
        for key, value in writes:
            if len(key) > max_key or (value is not None and len(value) > max_value):
                return self._check_key(key) or self._check_value(value)  # type: ignore[arg-type]
            total += len(key) + len(value or b"")
        if total > self._max_write:
            return ErrorReply(f"write too large: {total} bytes of keys and values, "
                              f"at most {self._max_write} (half of max_frame)")
        return self._settle(self._node.write, writes, shape, respond)

    def _settle(self, run: Callable[[Any, Done], Any], arg: Any, shape: Shape,
                respond: Respond) -> Any:
        """
        C{run(arg, done)} as a reply: C{shape} of its result, or an error.
        """
        def done(result: Any) -> None:
            respond(self._outcome(result, shape))

        try:
            result = run(arg, done)
        except Exception as e:
            return self._outcome(e, shape)
        if result is PENDING:
            return PENDING
        return shape(result)

    def _outcome(self, result: Any, shape: Shape) -> Reply:
        if not isinstance(result, Exception):
            return shape(result)
        self.errors += 1
        if isinstance(result, TransactionFailed):
            return ErrorReply(result.reason)
        log.failure("command failed", Failure(result))
        return ErrorReply("internal error, see the node's log")

    def _get(self, args: list[bytes], respond: Respond) -> Any:
        return self._check_key(args[1]) or self._settle(
            self._node.read, [args[1]], _first, respond)

    def _mget(self, args: list[bytes], respond: Respond) -> Any:
        keys = args[1:]
        return self._check_keys(keys) or self._settle(self._node.read, keys, list, respond)

    def _exists(self, args: list[bytes], respond: Respond) -> Any:
        keys = args[1:]
        return self._check_keys(keys) or self._settle(self._node.read, keys, _count, respond)

    def _set(self, args: list[bytes], respond: Respond) -> Any:
        if len(args) > 3:
            return ErrorReply("syntax error: SET takes a key and a value; "
                              "options such as EX, PX, NX and XX are not supported")
        return self._write([(args[1], args[2])], _ok, respond)

    def _mset(self, args: list[bytes], respond: Respond) -> Any:
        pairs = [(args[i], args[i + 1]) for i in range(1, len(args), 2)]
        return self._write(pairs, _ok, respond)  # type: ignore[arg-type]

    def _del(self, args: list[bytes], respond: Respond) -> Any:
        return self._write([(key, None) for key in args[1:]], sum, respond)

    def _ping(self, args: list[bytes], respond: Respond) -> Reply:
        return args[1] if len(args) > 1 else PONG

    def _echo(self, args: list[bytes], respond: Respond) -> Reply:
        return args[1]

    def _info(self, args: list[bytes], respond: Respond) -> Reply:
        section = args[1].decode("utf-8", "replace").lower() if len(args) > 1 else None
        return Lines(self._node.info(section))

    def _members(self, args: list[bytes], respond: Respond) -> Reply:
        return Lines(self._node.members())

    def _dht(self, args: list[bytes], respond: Respond) -> Any:
        """
        C{DHT STATUS | RING | KEY key | LEAVE}: the operator's view, as JSON.
        """
        sub = args[1].upper()
        if sub == b"STATUS" and len(args) == 2:
            return _json(self._node.status())
        if sub == b"RING" and len(args) == 2:
            return _json(self._node.ring_status())
        if sub == b"KEY" and len(args) == 3:
            error = self._check_key(args[2])
            if error is not None:
                return error

            def answer(doc: Any) -> None:
                if isinstance(doc, Exception):
                    respond(self._outcome(doc, _json))
                else:
                    respond(_json(doc))

            doc = self._node.key_status(args[2], answer)
            return PENDING if doc is PENDING else _json(doc)
        if sub == b"LEAVE" and len(args) == 2:
            if self._node.leave():
                return OK
            self.errors += 1
            return ErrorReply("this node cannot stop itself: stop its process instead")
        shown = b" ".join(args[1:])[:64].decode("utf-8", "replace")
        self.errors += 1
        return ErrorReply(f"unknown DHT subcommand or wrong arguments: '{shown}' "
                          "(DHT STATUS, DHT RING, DHT KEY key, DHT LEAVE)")

    def _quit(self, args: list[bytes], respond: Respond) -> Reply:
        return QUIT

    def _ok(self, args: list[bytes], respond: Respond) -> Reply:
        return OK

    def _empty(self, args: list[bytes], respond: Respond) -> Reply:
        return []

    def _hello(self, args: list[bytes], respond: Respond) -> Reply:
        proto = args[1] if len(args) > 1 else b"2"
        if proto not in (b"2", b"3"):
            return ErrorReply("NOPROTO unsupported protocol version")
        options = args[2:]
        # (AUTH is taken by the connection before the command runs)
        if len(options) == 2 and options[0].upper() == b"SETNAME":
            options = []
        if options:
            return ErrorReply("HELLO takes AUTH username password and SETNAME name only")
        from . import __version__

        return HelloReply(int(proto), (
            ("server", "dhtwisted"), ("version", __version__), ("proto", int(proto)),
            ("mode", "cluster"), ("role", "master"),
        ))

    def _select(self, args: list[bytes], respond: Respond) -> Reply:
        if args[1] == b"0":
            return OK
        return ErrorReply("only database 0 exists")


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _first(values: list) -> Reply:
    return values[0]  # type: ignore[no-any-return]


def _count(values: list) -> Reply:
    return sum(v is not None for v in values)


def _ok(existed: object) -> Reply:
    return OK


#: The commands L{Commands.execute_bulk} runs, as clients write their names.
_BULK = {b"SET": b"SET", b"set": b"SET", b"GET": b"GET", b"get": b"GET"}

#: What L{Commands.execute_bulk} returns when the next command must run alone.
_NO_RUN = (0, [])

#: No upper bound on the number of arguments.
_ANY = 1 << 30

_TABLE: dict[bytes, _Command] = {
    b"GET": _Command(Commands._get, 1, 1),
    b"SET": _Command(Commands._set, 2, _ANY),
    b"DEL": _Command(Commands._del, 1, _ANY),
    b"MSET": _Command(Commands._mset, 2, _ANY, pairs=True),
    b"MGET": _Command(Commands._mget, 1, _ANY),
    b"EXISTS": _Command(Commands._exists, 1, _ANY),
    b"PING": _Command(Commands._ping, 0, 1),
    b"ECHO": _Command(Commands._echo, 1, 1),
    b"INFO": _Command(Commands._info, 0, 1),
    b"MEMBERS": _Command(Commands._members, 0, 0),
    b"DHT": _Command(Commands._dht, 1, 2),
    b"QUIT": _Command(Commands._quit, 0, _ANY),
    b"EXIT": _Command(Commands._quit, 0, _ANY),
    b"HELLO": _Command(Commands._hello, 0, _ANY),
    b"SELECT": _Command(Commands._select, 1, 1),
    # what Redis tools send on connecting: redis-cli asks COMMAND DOCS,
    # redis-benchmark CONFIG GET, redis-py CLIENT SETINFO
    b"COMMAND": _Command(Commands._empty, 0, _ANY),
    b"CONFIG": _Command(Commands._empty, 1, _ANY),
    b"CLIENT": _Command(Commands._ok, 1, _ANY),
}
