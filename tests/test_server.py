"""
Tests for dhtwisted.server: the client protocols (text and RESP2) on fake
transports, whole and byte at a time, and the bad input they must survive.
"""

from __future__ import annotations

import random
from typing import Callable, Optional

from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.commands import PENDING, Commands
from dhtwisted.server import PEER_MAGIC, NodeFactory
from dhtwisted.twopc import TransactionFailed

from .helpers import FakeClient, make_node
from .test_resp import resp


class TextProtocolTests(SynchronousTestCase):
    """
    The telnet-style text protocol.
    """

    def setUp(self) -> None:
        self.node = make_node()
        self.client = FakeClient(self.node)

    def test_session(self) -> None:
        """
        The reference's demo commands answer as its client printed them.
        """
        for bytewise in (False, True):
            self.assertEqual(self.client.send(b"set k1 v1\r\n", bytewise), b"ok\r\n")
            self.assertEqual(self.client.send(b"get k1\r\n", bytewise), b"v1\r\n")
            self.assertEqual(self.client.send(b"get nothing\n", bytewise), b"(nil)\r\n")

    def test_case_insensitive(self) -> None:
        """
        Command names are case-insensitive; keys are not.
        """
        self.assertEqual(self.client.send(b"SeT Key v\n"), b"ok\r\n")
        self.assertEqual(self.client.send(b"GET Key\nget key\n"), b"v\r\n(nil)\r\n")

    def test_quoted_value_with_spaces(self) -> None:
        """
        A double-quoted value holds spaces; the reply quotes it back.
        """
        self.assertEqual(self.client.send(b'set hello "big world"\n'), b"ok\r\n")
        self.assertEqual(self.client.send(b"get hello\n"), b'"big world"\r\n')

    def test_ambiguous_values_are_quoted(self) -> None:
        """
        Values that would read like a reply, or are empty, come back quoted.
        """
        for value, shown in [
            (b'""', b'""'),
            (b"ok", b'"ok"'),
            (b'"(nil)"', b'"(nil)"'),
            (b'"ERR no"', b'"ERR no"'),
            (b'"a\\x00\\xffb"', b'"a\\x00\\xffb"'),
            (b'"tab\\there"', b'"tab\\there"'),
        ]:
            self.client.send(b"set k " + value + b"\n")
            self.assertEqual(self.client.send(b"get k\n"), shown + b"\r\n")

    def test_mset_mget_del(self) -> None:
        """
        MSET sets several keys, MGET answers one line per key, DEL counts
        the keys it removed.
        """
        self.assertEqual(self.client.send(b"mset a 1 b 2\n"), b"ok\r\n")
        self.assertEqual(self.client.send(b"mget a b c\n"), b"1\r\n2\r\n(nil)\r\n")
        self.assertEqual(self.client.send(b"del a c\n"), b"1\r\n")
        self.assertEqual(self.client.send(b"mget a b\n"), b"(nil)\r\n2\r\n")

    def test_mget_error_is_one_line_per_key(self) -> None:
        """
        An MGET that fails answers one ERR line per key, so the client can
        count lines.
        """
        reply = self.client.send(b"mget a " + b"k" * 5000 + b" c\n")
        lines = reply.split(b"\r\n")[:-1]
        self.assertEqual(len(lines), 3)
        self.assertTrue(all(line.startswith(b"ERR key is longer") for line in lines))

    def test_ping_info_members(self) -> None:
        """
        PING answers PONG; INFO and MEMBERS answer lines ended by an empty line.
        """
        self.assertEqual(self.client.send(b"ping\n"), b"PONG\r\n")
        info = self.client.send(b"info\n")
        self.assertTrue(info.endswith(b"\r\n\r\n"))
        self.assertIn(b"node_id:0\r\n", info)
        self.assertEqual(info.count(b"\r\n\r\n"), 1)
        members = self.client.send(b"members\n")
        self.assertTrue(members.startswith(b"0 127.0.0.1:9000 "))
        self.assertTrue(members.endswith(b"\r\n\r\n"))

    def test_every_reply_has_the_shape_the_client_expects(self) -> None:
        """
        Commands that answer a list outside MGET (COMMAND, CONFIG) and HELLO
        answer a block ended by an empty line in text, as reply_shape says;
        the others one line (MGET one per key).
        """
        from dhtwisted.quoting import reply_shape, split_args

        for line in [b"command", b"config get save", b"hello", b"hello 2", b"ping",
                     b"get x", b"mget a b c", b"info", b"members", b"exists a",
                     b"select 0", b"client setname x", b"nope", b"hello 9"]:
            reply = self.client.send(line + b"\n")
            kind, count = reply_shape(split_args(line))
            lines = reply.split(b"\r\n")[:-1]
            if kind == "block" and lines[0].startswith(b"ERR"):
                self.assertEqual(len(lines), 1, (line, reply))
            elif kind == "block":
                self.assertEqual(lines[-1], b"", line)
                self.assertEqual(lines.count(b""), 1, line)
            else:
                self.assertEqual(len(lines), count, (line, reply))

    def test_blank_lines_ignored(self) -> None:
        """
        Empty lines get no reply.
        """
        self.assertEqual(self.client.send(b"\n\r\n  \n"), b"")
        self.assertFalse(self.client.closed)

    def test_pipelined(self) -> None:
        """
        Many commands in one read get their replies in order, in one write.
        """
        commands = b"".join(b"set k%d %d\n" % (i, i) for i in range(50))
        self.assertEqual(self.client.send(commands), b"ok\r\n" * 50)
        reads = b"".join(b"get k%d\n" % i for i in range(50))
        self.assertEqual(self.client.send(reads), b"".join(b"%d\r\n" % i for i in range(50)))

    def test_quit(self) -> None:
        """
        QUIT and EXIT answer ok and close; later commands are not run.
        """
        self.assertEqual(self.client.send(b"exit\nset x y\n"), b"ok\r\n")
        self.assertTrue(self.client.closed)
        self.assertEqual(self.node.store.live_keys, 0)

    def test_one_mib_value(self) -> None:
        """
        A 1 MiB value fits in the default line limit, quoted or not, whole
        or in small chunks.
        """
        value = random.Random(1).randbytes(1 << 20)
        from dhtwisted.quoting import quote_value

        line = b"set big " + quote_value(value) + b"\n"
        for chunk in (len(line), 4096):
            for i in range(0, len(line), chunk):
                self.client.protocol.dataReceived(line[i : i + chunk])
            self.assertEqual(self.client.take(), b"ok\r\n")
            self.assertEqual(self.node.store.get(b"big").value, value)
            self.assertEqual(self.client.send(b"get big\n"), quote_value(value) + b"\r\n")


class BadTextInputTests(SynchronousTestCase):
    """
    Bad input on the text protocol: an error or a closed connection, and
    the node keeps serving with its data intact.
    """

    def setUp(self) -> None:
        self.node = make_node(max_line=1024, max_value=100, max_key=10)
        self.good = FakeClient(self.node)
        self.assertEqual(self.good.send(b"set kept value\n"), b"ok\r\n")
        self.bad = FakeClient(self.node)

    def assertStillServing(self) -> None:
        """
        Another client still gets its data.
        """
        self.assertEqual(self.good.send(b"get kept\n"), b"value\r\n")
        self.assertEqual(self.node.store.live_keys, 1)

    def test_line_too_long(self) -> None:
        """
        A line over max_line gets ERR and the connection closes, whether it
        arrives whole or in pieces.
        """
        for bytewise in (False, True):
            bad = FakeClient(self.node)
            reply = bad.send(b"set k " + b"x" * 2000 + b"\n", bytewise)
            self.assertTrue(reply.startswith(b"ERR line too long"), reply)
            self.assertTrue(bad.closed)
        bad = FakeClient(self.node)
        self.assertTrue(bad.send(b"x" * 1100).startswith(b"ERR line too long"))
        self.assertTrue(bad.closed)
        self.assertStillServing()

    def test_unknown_command(self) -> None:
        """
        An unknown command gets ERR naming it; the connection stays.
        """
        self.assertEqual(self.bad.send(b"frob x\n"), b"ERR unknown command 'frob'\r\n")
        self.assertFalse(self.bad.closed)
        self.assertStillServing()

    def test_wrong_argument_counts(self) -> None:
        """
        Too few or too many arguments get ERR and change nothing.
        """
        for line in [b"set\n", b"set k\n", b"get\n", b"get a b\n", b"mset a\n",
                     b"mset a 1 b\n", b"del\n", b"mget\n"]:
            reply = self.bad.send(line)
            self.assertTrue(reply.startswith(b"ERR wrong number of arguments"), (line, reply))
        self.assertTrue(self.bad.send(b"set a b c\n").startswith(b"ERR syntax error"))
        self.assertFalse(self.bad.closed)
        self.assertStillServing()

    def test_unbalanced_quotes(self) -> None:
        """
        Unbalanced quotes get ERR.
        """
        self.assertEqual(self.bad.send(b'set k "open\n'), b"ERR unbalanced quotes in request\r\n")
        self.assertEqual(self.bad.send(b'set k "a"b\n'),
                         b"ERR closing quote must be followed by a space\r\n")
        self.assertStillServing()

    def test_invalid_utf8(self) -> None:
        """
        A line that is not UTF-8 gets ERR saying how to send such bytes.
        """
        reply = self.bad.send(b"set k \xff\xfe\n")
        self.assertTrue(reply.startswith(b"ERR request is not UTF-8"), reply)
        self.assertEqual(self.bad.send(b'set k "\\xff\\xfe"\n'), b"ok\r\n")
        self.assertEqual(self.node.store.get(b"k").value, b"\xff\xfe")

    def test_value_and_key_over_limit(self) -> None:
        """
        A value over max_value or a key over max_key gets ERR; nothing is
        stored.
        """
        reply = self.bad.send(b"set k " + b"v" * 101 + b"\n")
        self.assertEqual(reply, b"ERR value is larger than max_value (100 bytes)\r\n")
        reply = self.bad.send(b"set " + b"k" * 11 + b" v\n")
        self.assertEqual(reply, b"ERR key is longer than max_key (10 bytes)\r\n")
        reply = self.bad.send(b"mset a 1 b " + b"v" * 101 + b"\n")
        self.assertTrue(reply.startswith(b"ERR value is larger"))
        self.assertEqual(self.node.store.get(b"a").value, None)
        self.assertStillServing()

    def test_random_bytes(self) -> None:
        """
        64 KiB of random bytes never crash the node nor store anything.
        """
        for seed in range(5):
            noise = random.Random(seed).randbytes(64 * 1024)
            bad = FakeClient(make_node_for(self))
            bad.send(noise)
            bad = FakeClient(self.node)
            bad.send(noise)
        self.assertStillServing()

    def test_http_request(self) -> None:
        """
        An HTTP request gets ERR and a closed connection.
        """
        reply = self.bad.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(reply, b"ERR this is a dhtwisted node, not an HTTP server\r\n")
        self.assertTrue(self.bad.closed)
        self.assertStillServing()

    def test_disconnect_mid_command(self) -> None:
        """
        A client that leaves in the middle of a command changes nothing.
        """
        self.bad.send(b"set kept other-val")
        self.bad.transport.loseConnection()
        self.assertStillServing()
        self.assertEqual(self.node.factory.clients, 1)


def make_node_for(case: BadTextInputTests):  # type: ignore[no-untyped-def]
    """
    The node of C{case}.
    """
    return case.node


class RespProtocolTests(SynchronousTestCase):
    """
    RESP2, as redis-cli, redis-py and redis-benchmark speak it.
    """

    def setUp(self) -> None:
        self.node = make_node(max_value=300)
        self.client = FakeClient(self.node)

    def command(self, *args: bytes) -> bytes:
        """
        A command as a RESP array.
        """
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    def test_set_get(self) -> None:
        """
        SET answers +OK, GET the bulk string, a missing key the nil bulk;
        binary values are kept exactly, whole or byte at a time.
        """
        value = bytes(range(256))
        for bytewise in (False, True):
            self.assertEqual(self.client.send(self.command(b"SET", b"k", value), bytewise),
                             b"+OK\r\n")
            self.assertEqual(self.client.send(self.command(b"get", b"k"), bytewise),
                             b"$256\r\n" + value + b"\r\n")
            self.assertEqual(self.client.send(self.command(b"GET", b"no"), bytewise),
                             b"$-1\r\n")

    def test_other_commands(self) -> None:
        """
        MSET, MGET, DEL, EXISTS, PING, ECHO and errors in RESP form.
        """
        c = self.command
        self.assertEqual(self.client.send(c(b"MSET", b"a", b"1", b"b", b"2")), b"+OK\r\n")
        self.assertEqual(self.client.send(c(b"MGET", b"a", b"x", b"b")),
                         b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n")
        self.assertEqual(self.client.send(c(b"DEL", b"a", b"x")), b":1\r\n")
        self.assertEqual(self.client.send(c(b"EXISTS", b"a", b"b")), b":1\r\n")
        self.assertEqual(self.client.send(c(b"PING")), b"+PONG\r\n")
        self.assertEqual(self.client.send(c(b"ECHO", b"hi")), b"$2\r\nhi\r\n")
        self.assertEqual(self.client.send(c(b"NOPE")), b"-ERR unknown command 'NOPE'\r\n")
        self.assertEqual(self.client.send(c(b"SET", b"k", b"v" * 301)),
                         b"-ERR value is larger than max_value (300 bytes)\r\n")
        self.assertFalse(self.client.closed)

    def test_pipelined_runs(self) -> None:
        """
        A read's runs of SETs and GETs (which a one-node cluster does in
        bulk) answer as one by one would: an oversize value fails only its
        own SET, a later SET of a key wins, every call is counted.
        """
        c = self.command
        before = self.node.commands.calls.copy()
        replies = self.client.send(
            c(b"SET", b"a", b"1") + c(b"set", b"b", b"2") + c(b"SET", b"a", b"3")
            + c(b"SET", b"c", b"v" * 301) + c(b"SET", b"c", b"4")
            + c(b"GET", b"a") + c(b"get", b"b") + c(b"GET", b"none") + c(b"GET", b"c")
            + c(b"PING"))
        self.assertEqual(replies, b"+OK\r\n" * 3
                         + b"-ERR value is larger than max_value (300 bytes)\r\n"
                         + b"+OK\r\n$1\r\n3\r\n$1\r\n2\r\n$-1\r\n$1\r\n4\r\n+PONG\r\n")
        calls = self.node.commands.calls
        self.assertEqual((calls[b"SET"] - before[b"SET"], calls[b"GET"] - before[b"GET"]),
                         (5, 4))

    def test_bare_reply_between_commands(self) -> None:
        """
        A bare C{+} line between pipelined commands is an unknown inline
        command; the commands around it are answered and the connection
        stays open.
        """
        c = self.command
        self.assertEqual(self.client.send(c(b"PING") + b"+\r\n" + c(b"PING")),
                         b"+PONG\r\n-ERR unknown command '+'\r\n+PONG\r\n")
        self.assertFalse(self.client.closed)

    def test_pipelined_set_of_locked_key_keeps_order(self) -> None:
        """
        In a run of SETs, one whose key a transaction of another node holds
        waits for it, and a later SET of that key waits behind it rather
        than overtake it; the SETs before it are done at once.
        """
        c = self.command
        participant = self.node.participant
        participant.prepare("other:1", [(b"k", b"theirs")], ["other", self.node.node_id],
                            deadline=100.0, coordinator="other")
        replies = self.client.send(
            c(b"SET", b"a", b"1") + c(b"SET", b"k", b"2") + c(b"SET", b"k", b"3"))
        self.assertEqual(replies, b"+OK\r\n")
        self.assertEqual(self.node.store.get(b"a").value, b"1")
        participant.abort("other:1")
        self.node.reactor.advance(1)
        self.assertEqual(self.client.take(), b"+OK\r\n+OK\r\n")
        self.assertEqual(self.node.store.get(b"k").value, b"3")

    def test_hello_3(self) -> None:
        """
        HELLO 3 answers a map and switches nulls to RESP3's.
        """
        reply = self.client.send(self.command(b"HELLO", b"3"))
        self.assertTrue(reply.startswith(b"%5\r\n"), reply)
        self.assertEqual(self.client.send(self.command(b"GET", b"none")), b"_\r\n")

    def test_inline_commands(self) -> None:
        """
        After a RESP command, inline commands get RESP replies too.
        """
        self.assertEqual(self.client.send(self.command(b"PING") + b"set a b\r\nget a\r\n"),
                         b"+PONG\r\n+OK\r\n$1\r\nb\r\n")

    def test_wrong_array_length(self) -> None:
        """
        An array that declares more elements than it sends gets a protocol
        error once the next command shows it, after the replies before it,
        and the connection closes; stored data is intact.
        """
        self.client.send(self.command(b"SET", b"kept", b"v"))
        reply = self.client.send(b"*3\r\n$3\r\nGET\r\n$4\r\nkept\r\n" + self.command(b"PING"))
        self.assertEqual(reply, b"-ERR Protocol error: expected '$', got '*'\r\n")
        self.assertTrue(self.client.closed)
        other = FakeClient(self.node)
        self.assertEqual(other.send(self.command(b"GET", b"kept")), b"$1\r\nv\r\n")

    def test_fewer_elements_declared(self) -> None:
        """
        An array that declares fewer elements than it sends: the rest reads
        as inline commands, which fail; nothing crashes.
        """
        reply = self.client.send(b"*1\r\n$3\r\nGET\r\n$1\r\na\r\n")
        self.assertEqual(
            reply,
            b"-ERR wrong number of arguments for 'get' command\r\n"
            b"-ERR unknown command '$1'\r\n-ERR unknown command 'a'\r\n",
        )

    def test_bad_lengths(self) -> None:
        """
        Negative, huge or non-numeric lengths close the connection with an error.
        """
        for data in [b"*2\r\n$-5\r\n", b"*1\r\n$99999999999\r\n", b"*x\r\n",
                     b"*99999999999\r\n", b"*1\r\n$3\r\nGETxx"]:
            client = FakeClient(self.node)
            reply = client.send(data)
            self.assertTrue(reply.startswith(b"-ERR Protocol error"), (data, reply))
            self.assertTrue(client.closed)

    def test_random_bytes_after_star(self) -> None:
        """
        Random bytes on a RESP connection close it; the node serves others.
        """
        for seed in range(5):
            client = FakeClient(self.node)
            client.send(b"*" + random.Random(seed).randbytes(64 * 1024))
        self.client.send(self.command(b"SET", b"k", b"v"))
        self.assertEqual(self.client.send(self.command(b"GET", b"k")), b"$1\r\nv\r\n")


class SlowNode:
    """
    A node whose reads answer only when the test says so (or, with
    C{at_once}, before C{read} even returns).
    """

    def __init__(self) -> None:
        self.reads: list[tuple[list[bytes], Callable]] = []
        self.at_once: Optional[list] = None

    def read(self, keys: list[bytes], done: Callable) -> object:
        """
        A read that waits.
        """
        if self.at_once is not None:
            done(self.at_once)
        else:
            self.reads.append((list(keys), done))
        return PENDING

    def info(self, section: object) -> list[str]:
        """
        No info.
        """
        return []


class OrderingTests(SynchronousTestCase):
    """
    Replies keep the order of commands, and a client with too many in
    progress is not read from.
    """

    def setUp(self) -> None:
        self.slow = SlowNode()
        commands = Commands(self.slow, max_key=100, max_value=100)  # type: ignore[arg-type]
        self.factory = NodeFactory(commands, max_line=1000, max_clients=2, max_pipeline=4)
        from twisted.internet.testing import StringTransport

        self.transport = StringTransport()
        self.proto = self.factory.buildProtocol(None)
        self.proto.makeConnection(self.transport)

    def test_out_of_order_answers(self) -> None:
        """
        A later command answered first still replies after the earlier one.
        """
        self.proto.dataReceived(b"get a\nget b\nping\n")
        self.assertEqual(self.transport.value(), b"")
        self.slow.reads[1][1]([b"B"])
        self.assertEqual(self.transport.value(), b"")
        self.slow.reads[0][1]([b"A"])
        self.assertEqual(self.transport.value(), b"A\r\nB\r\nPONG\r\n")

    def test_answered_before_pending(self) -> None:
        """
        A reply given before the command returned PENDING still goes out,
        in order.
        """
        self.proto.dataReceived(b"get a\n")
        self.slow.at_once = [b"B"]
        self.proto.dataReceived(b"get b\nping\n")
        self.assertEqual(self.transport.value(), b"")
        self.slow.reads[0][1]([b"A"])
        self.assertEqual(self.transport.value(), b"A\r\nB\r\nPONG\r\n")
        self.transport.clear()
        self.proto.dataReceived(b"get c\n")
        self.assertEqual(self.transport.value(), b"B\r\n")

    def test_pipeline_limit_pauses_reading(self) -> None:
        """
        With max_pipeline commands in progress the client is paused, and
        resumed once they are answered.
        """
        self.proto.dataReceived(b"get a\n" * 4)
        self.assertEqual(self.transport.producerState, "paused")
        for _, done in self.slow.reads:
            done([None])
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.transport.value(), b"(nil)\r\n" * 4)

    def test_pipeline_limit_counts_the_commands_of_a_run(self) -> None:
        """
        A run of pipelined SETs answered later counts as all its commands
        toward max_pipeline, not as one; its replies come together, in
        order, with an error for the one that failed.
        """
        runs: list = []

        def write_run(writes: list, done: Callable) -> tuple:
            runs.append((writes, done))
            return len(writes), PENDING

        self.slow.write_run = write_run  # type: ignore[attr-defined]
        commands = Commands(self.slow, max_key=100, max_value=100)  # type: ignore[arg-type]
        factory = NodeFactory(commands, max_line=1000, max_clients=2, max_pipeline=4)
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        proto = factory.buildProtocol(None)
        proto.makeConnection(transport)
        sets = b"".join(resp(b"SET", b"k%d" % i, b"v") for i in range(4))
        proto.dataReceived(sets)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual([len(w) for w, _ in runs], [4])
        runs[0][1]([None, TransactionFailed("conflict"), None, None])
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value(), b"+OK\r\n-ERR conflict\r\n+OK\r\n+OK\r\n")

    def test_run_that_raises(self) -> None:
        """
        A bug under a run of SETs is an internal error for each of them,
        logged; the connection goes on serving.
        """
        def write_run(writes: list, done: Callable) -> tuple:
            raise RuntimeError("bug")

        self.slow.write_run = write_run  # type: ignore[attr-defined]
        commands = Commands(self.slow, max_key=100, max_value=100)  # type: ignore[arg-type]
        client = NodeFactory(commands, max_line=1000, max_clients=2,
                             max_pipeline=4).buildProtocol(None)
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        client.makeConnection(transport)
        client.dataReceived(resp(b"SET", b"a", b"1") + resp(b"SET", b"b", b"2")
                            + resp(b"PING"))
        error = b"-ERR internal error, see the node's log\r\n"
        self.assertEqual(transport.value(), error * 2 + b"+PONG\r\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_max_clients(self) -> None:
        """
        A client over max_clients gets ERR and is closed; peers do not count.
        """
        from twisted.internet.testing import StringTransport

        others = []
        for _ in range(3):
            transport = StringTransport()
            proto = self.factory.buildProtocol(None)
            proto.makeConnection(transport)
            proto.dataReceived(b"ping\n")
            others.append(transport)
        # this test's own protocol has not spoken yet, so two clients fit
        self.assertEqual(others[0].value(), b"PONG\r\n")
        self.assertEqual(others[1].value(), b"PONG\r\n")
        self.assertEqual(others[2].value(), b"ERR max number of clients reached\r\n")
        self.assertTrue(others[2].disconnecting)

    def test_peer_preamble_without_peer_side(self) -> None:
        """
        A connection opening with the peer preamble is not taken for a
        client; a node without a peer side closes it.
        """
        self.proto.dataReceived(PEER_MAGIC[:2])
        self.assertFalse(self.transport.disconnecting)
        self.proto.dataReceived(PEER_MAGIC[2:] + b"\x00\x01")
        self.assertEqual(self.transport.value(), b"")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.factory.clients, 0)

    def test_disconnect_with_replies_pending(self) -> None:
        """
        Replies that come after the client left are dropped quietly.
        """
        self.proto.dataReceived(b"get a\n")
        self.proto.connectionLost(None)
        self.slow.reads[0][1]([b"late"])
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.factory.connections, 0)


class BrokenNode(SlowNode):
    """
    A node whose reads fail with a bug.
    """

    def read(self, keys: list[bytes], done: Callable) -> object:
        """
        A read that raises.
        """
        raise ZeroDivisionError("a bug")


class CommandBugTests(SynchronousTestCase):
    """
    A command that fails with a bug answers an error and the client is
    still served.
    """

    def test_bug_is_an_error_reply(self) -> None:
        """
        The client gets ERR (internal error), the failure is logged, the
        next command is answered.
        """
        commands = Commands(BrokenNode(), max_key=100, max_value=100)  # type: ignore[arg-type]
        factory = NodeFactory(commands, max_line=1000, max_clients=2, max_pipeline=4)
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        proto = factory.buildProtocol(None)
        proto.makeConnection(transport)
        proto.dataReceived(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n")
        self.assertEqual(transport.value(),
                         b"-ERR internal error, see the node's log\r\n+PONG\r\n")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(commands.errors, 1)
