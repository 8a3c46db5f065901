"""
Tests for dhtwisted.resp: parsing RESP2 and inline commands from a buffer
(whole, and as it trickles in), the errors that close a connection, and
the reply encoders.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

import dhtwisted.resp as resp_module
from dhtwisted.quoting import split_args
from dhtwisted.resp import (
    RespError,
    encode_array,
    encode_bulk,
    encode_error,
    encode_integer,
    encode_status,
    parse_commands,
)

MAX_BULK = 1024 * 1024
MAX_INLINE = 64 * 1024

Commands = list[list[bytes]]


def parse(
    buf: bytes, max_bulk: int = MAX_BULK, max_inline: int = MAX_INLINE
) -> tuple[Commands, int, int]:
    return parse_commands(buf, max_bulk, max_inline, split_args)


def resp(*args: bytes) -> bytes:
    """
    One command as a RESP array of bulk strings.
    """
    return encode_array(list(args))


def parse_stream(
    chunks: list[bytes], max_bulk: int = MAX_BULK, max_inline: int = MAX_INLINE
) -> tuple[Commands, str | None, bytes]:
    """
    Feed C{chunks} one after the other as a connection would: parse the
    unconsumed bytes after each, keep the rest, and stop at the first error.

    :return: the commands, the error message (or C{None}), and the bytes
        left unconsumed.
    """
    commands: Commands = []
    buf = b""
    for chunk in chunks:
        buf += chunk
        while True:
            try:
                got, used, _ = parse(buf, max_bulk, max_inline)
            except RespError as e:
                return commands, str(e), buf
            commands.extend(got)
            buf = buf[used:]
            if not got:
                break
    return commands, None, buf


def whole(data: bytes, **limits: int) -> tuple[Commands, str | None, bytes]:
    return parse_stream([data], **limits)


def bytewise(data: bytes, **limits: int) -> tuple[Commands, str | None, bytes]:
    return parse_stream([data[i : i + 1] for i in range(len(data))], **limits)


# arguments an inline command can carry bare
_WORD = st.binary(min_size=1, max_size=8).filter(
    lambda b: not any(c in b for c in b" \t\r\n\v\f\"'") and not b.startswith(b"*")
)
_ARGS = st.lists(st.binary(max_size=40), min_size=1, max_size=5)


@st.composite
def _wire_commands(draw: st.DrawFn) -> tuple[Commands, bytes]:
    """
    A list of commands and their bytes, each in RESP or inline form.
    """
    commands: Commands = []
    data = b""
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            args = draw(_ARGS)
            data += resp(*args)
        else:
            args = draw(st.lists(_WORD, min_size=1, max_size=4))
            data += b" ".join(args) + draw(st.sampled_from([b"\r\n", b"\n"]))
        commands.append(args)
    return commands, data


#: Pieces of RESP, numbers and type bytes that arguments and edits are made of.
_PIECES = [b"00", b"-1", b"+1", b"*0\r\n", b"*-1\r\n", b"$-1\r\n", b"\r\n", b"a", b"\r",
           b"\n", b"$", b"*", b"+", b":", b"-", b"0", b"1", b"2", b"=", b"~", b"%", b"_",
           b"#", b",", b"(", b"!", b">", b"|", b" "]

#: Values that hold CRLFs and look like RESP headers.
_TRICKY = [b"\r\n", b"$3\r\nSET\r\n", b"*1\r\n$1\r\nx", b"\r\n$0\r\n"]


class ParseTests(SynchronousTestCase):
    """
    L{parse_commands} returns the complete commands at the start of a buffer.
    """

    def test_one_command(self) -> None:
        """
        A RESP array of bulk strings is one command, all bytes consumed.
        """
        data = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9\r\nbig world\r\n"
        self.assertEqual(parse(data), ([[b"SET", b"k", b"big world"]], len(data), 0))

    def test_binary_safe(self) -> None:
        """
        Bulk strings may hold any bytes, CRLF included.
        """
        value = bytes(range(256)) + b"\r\n*1\r\n$4\r\n"
        data = resp(b"SET", b"k", value)
        self.assertEqual(parse(data), ([[b"SET", b"k", value]], len(data), 0))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.lists(st.tuples(st.binary(max_size=12), st.integers(0, 7)).map(
        lambda drawn: _TRICKY[drawn[1]] if drawn[1] < len(_TRICKY) else drawn[0]),
        min_size=1, max_size=4), min_size=1, max_size=4))
    def test_whole_buffers_with_crlf_in_values(self, commands: Commands) -> None:
        """
        A buffer of whole commands whose values hold CRLFs and things that
        look like headers parses to exactly those commands (the fast path
        for whole buffers must not be fooled), all bytes consumed.
        """
        data = b"".join(resp(*args) for args in commands)
        self.assertEqual(parse(data), (commands, len(data), 0))
        longest = max(len(a) for args in commands for a in args)
        if longest:
            # and an argument over max_bulk is refused, fast path or not
            first_long = next(i for i, args in enumerate(commands)
                              if max(map(len, args)) == longest)
            if first_long == 0:
                self.assertRaises(RespError, parse, data, max_bulk=longest - 1)
            else:
                self.assertEqual(parse(data, max_bulk=longest - 1)[0], commands[:first_long])

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.lists(st.lists(st.sampled_from(_PIECES), max_size=4).map(b"".join),
                          min_size=1, max_size=3), min_size=2, max_size=3),
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1000),
                           st.sampled_from(_PIECES)), max_size=3),
        st.sampled_from([1 << 20, 3, 2]),
    )
    def test_fast_path_same_as_slow(self, commands: Commands,
                                    edits: list[tuple[int, int, bytes]],
                                    max_bulk: int) -> None:
        """
        Pipelines of commands, mutated (bytes replaced, inserted, deleted),
        parse to the same commands and the same error whether or not the
        fast path for whole buffers is taken.
        """
        data = bytearray(b"".join(resp(*args) for args in commands))
        for op, at, piece in edits:
            at %= len(data) + 1
            if op == 0:
                data[at : at + 1] = piece
            elif op == 1:
                data[at:at] = piece
            else:
                del data[at : at + 1]
        fast = parse_stream([bytes(data)], max_bulk=max_bulk)
        whole_parser = resp_module._parse_whole
        resp_module._parse_whole = lambda buf, limit: None  # (per example, not self.patch)
        try:
            slow = parse_stream([bytes(data)], max_bulk=max_bulk)
        finally:
            resp_module._parse_whole = whole_parser
        self.assertEqual(fast, slow)

    def test_several_commands(self) -> None:
        """
        Every complete command in the buffer is returned, in order.
        """
        data = resp(b"PING") + resp(b"GET", b"a") + resp(b"SET", b"b", b"")
        self.assertEqual(
            parse(data),
            ([[b"PING"], [b"GET", b"a"], [b"SET", b"b", b""]], len(data), 0),
        )

    def test_inline_commands(self) -> None:
        """
        Lines that do not start with '*' are inline commands, split like
        the text protocol; blank lines are skipped.
        """
        data = b'PING\r\nSET k "big world"\r\n\r\n  \nGET\tk\nMGET a b\r\n'
        self.assertEqual(
            parse(data),
            (
                [
                    [b"PING"],
                    [b"SET", b"k", b"big world"],
                    [b"GET", b"k"],
                    [b"MGET", b"a", b"b"],
                ],
                len(data),
                0,
            ),
        )

    def test_inline_and_resp_mixed(self) -> None:
        """
        Inline and RESP commands may follow one another.
        """
        data = b"PING\r\n" + resp(b"GET", b"k") + b"GET j\n"
        self.assertEqual(
            parse(data), ([[b"PING"], [b"GET", b"k"], [b"GET", b"j"]], len(data), 0)
        )

    def test_empty_arrays_skipped(self) -> None:
        """
        Arrays of zero or negative length are consumed without a command.
        """
        data = b"*0\r\n*-1\r\n" + resp(b"PING")
        self.assertEqual(parse(data), ([[b"PING"]], len(data), 0))

    def test_incomplete_input(self) -> None:
        """
        A buffer holding part of a command gives no command and consumes
        nothing.
        """
        full = resp(b"SET", b"key", b"value")
        for cut in range(len(full)):
            commands, used, _ = parse(full[:cut])
            self.assertEqual((commands, used), ([], 0), full[:cut])
        for partial in [b"PIN", b"SET k v\r", b'SET k "v']:
            self.assertEqual(parse(partial), ([], 0, 0))

    def test_incomplete_after_complete(self) -> None:
        """
        Complete commands are consumed; a partial one after them is kept.
        """
        first = resp(b"PING")
        data = first + resp(b"GET", b"key")[:-3]
        commands, used, _ = parse(data)
        self.assertEqual((commands, used), ([[b"PING"]], len(first)))

    def test_need_for_big_bulk(self) -> None:
        """
        While a big bulk string arrives, the parser says how many bytes the
        whole command needs, counted from the command's start.
        """
        value = b"v" * 500_000
        full = resp(b"SET", b"k", value)
        for received in [full.index(b"v"), full.index(b"v") + 1000, len(full) - 1]:
            self.assertEqual(parse(full[:received]), ([], 0, len(full)))
        before = resp(b"PING")
        self.assertEqual(
            parse(before + full[:-2]), ([[b"PING"]], len(before), len(full))
        )
        self.assertEqual(parse(full), ([[b"SET", b"k", value]], len(full), 0))

    def test_need_unknown(self) -> None:
        """
        Before a bulk header is complete the need is unknown (0).
        """
        full = resp(b"SET", b"k", b"v" * 1000)
        self.assertEqual(parse(full[: full.index(b"$1000") + 3]), ([], 0, 0))
        self.assertEqual(parse(b"*3\r"), ([], 0, 0))

    def test_bytewise_same_as_whole(self) -> None:
        """
        A stream fed one byte at a time parses to the same commands.
        """
        data = (
            resp(b"SET", b"k", b"a\r\nb")
            + b'SET k "big world"\r\n'
            + b"*0\r\n"
            + resp(b"MGET", b"a", b"b", b"c")
            + b"PING\n"
        )
        expected = [
            [b"SET", b"k", b"a\r\nb"],
            [b"SET", b"k", b"big world"],
            [b"MGET", b"a", b"b", b"c"],
            [b"PING"],
        ]
        self.assertEqual(whole(data), (expected, None, b""))
        self.assertEqual(bytewise(data), (expected, None, b""))

    def test_longest_headers(self) -> None:
        """
        A header line of 32 bytes is accepted however it arrives, and one
        of 33 bytes is refused however it arrives.
        """
        ok = b"*1\r\n$" + b"0" * 30 + b"4\r\nPING\r\n"
        self.assertEqual(whole(ok), ([[b"PING"]], None, b""))
        self.assertEqual(bytewise(ok), ([[b"PING"]], None, b""))
        ok = b"*" + b"0" * 30 + b"1\r\n$4\r\nPING\r\n"
        self.assertEqual(whole(ok), ([[b"PING"]], None, b""))
        self.assertEqual(bytewise(ok), ([[b"PING"]], None, b""))
        bad = b"*1\r\n$" + b"0" * 31 + b"4\r\nPING\r\n"
        self.assertEqual(whole(bad)[1], "Protocol error: too big bulk count")
        self.assertEqual(bytewise(bad)[1], "Protocol error: too big bulk count")

    def test_longest_inline(self) -> None:
        """
        An inline line of up to max_inline bytes is accepted however it
        arrives; a longer one is refused.
        """
        ok = b"GET " + b"k" * 12 + b"\r\n"  # 17 bytes before its \n
        self.assertEqual(whole(ok, max_inline=17)[1], None)
        self.assertEqual(whole(ok, max_inline=17)[0], [[b"GET", b"k" * 12]])
        self.assertEqual(bytewise(ok, max_inline=17)[0], [[b"GET", b"k" * 12]])
        for split in [whole, bytewise]:
            self.assertEqual(
                split(ok, max_inline=16)[1], "Protocol error: too big inline request"
            )

    @settings(max_examples=200, deadline=None)
    @given(_wire_commands(), st.lists(st.integers(0, 400), max_size=6))
    def test_any_chunking(self, wire: tuple[Commands, bytes], cuts: list[int]) -> None:
        """
        Any stream of commands parses to those commands, whole, one byte at
        a time, or in arbitrary chunks.
        """
        commands, data = wire
        self.assertEqual(whole(data), (commands, None, b""))
        self.assertEqual(bytewise(data), (commands, None, b""))
        points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
        chunks = [data[a:b] for a, b in itertools.pairwise(points)]
        self.assertEqual(parse_stream(chunks), (commands, None, b""))


class ParseErrorTests(SynchronousTestCase):
    """
    Bytes that are not RESP raise L{RespError}, after the complete commands
    before them have been returned.
    """

    def assertParseError(self, data: bytes, message: str, **limits: int) -> None:
        for split in [whole, bytewise]:
            commands, error, _ = split(data, **limits)
            self.assertEqual((commands, error), ([], message), (split.__name__, data))

    def test_bad_multibulk_length(self) -> None:
        """
        A multibulk count that is not a number, too large, or too long is
        refused.
        """
        self.assertParseError(b"*x\r\n", "Protocol error: invalid multibulk length")
        self.assertParseError(b"*\r\n", "Protocol error: invalid multibulk length")
        self.assertParseError(
            b"*2000000\r\n", "Protocol error: invalid multibulk length"
        )
        self.assertParseError(
            b"*" + b"9" * 40, "Protocol error: too big multibulk count"
        )

    def test_dollar_missing(self) -> None:
        """
        An array element that is not a bulk string is refused, including
        when an array declares more elements than were sent before the next
        command.
        """
        self.assertParseError(
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n" + resp(b"PING"),
            "Protocol error: expected '$', got '*'",
        )
        self.assertParseError(b"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'")
        self.assertParseError(
            b"*1\r\n\x00", "Protocol error: expected '$', got '\\x00'"
        )

    def test_other_types_in_whole_buffers(self) -> None:
        """
        Whole buffers whose arrays hold RESP types other than bulk strings
        (simple strings, RESP3 verbatim strings, nested arrays, integers),
        including one whose line count looks right, are refused like
        Redis refuses them: the C parser alone would read them as
        arguments.
        """
        for data, got in [
            (b"*1\r\n+PING\r\n", "+"),
            (b"*1\r\n=8\r\ntxt:PING\r\n", "="),
            (b"*2\r\n*1\r\n$1\r\na\r\n:5\r\n", "*"),
            # a simple string (one line) beside a value with a CRLF (three)
            (b"*3\r\n$3\r\nSET\r\n$4\r\nk\r\nk\r\n+v\r\n", "+"),
            # ... or beside a value that starts like a bulk header
            (b"*3\r\n$3\r\nSET\r\n$2\r\n$k\r\n+v\r\n", "+"),
            # ... or before the start of a command not yet complete
            (b"*1\r\n+PING\r\n*5\r\n", "+"),
        ]:
            message = f"Protocol error: expected '$', got '{got}'"
            self.assertParseError(data, message)
            # after another command (a buffer of several takes another path)
            for split in [whole, bytewise]:
                self.assertEqual(split(resp(b"PING") + data)[:2], ([[b"PING"]], message))

    def test_bulk_end_checked_in_whole_buffers(self) -> None:
        """
        The two bytes after a bulk string must be CRLF, also when the value
        ends with a CR that, with a LF after it, makes the buffer's count of
        CRLFs come out right (the C parser skips those two bytes unread).
        """
        set_k = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n"
        for data in [
            set_k + b"$2\r\nv\r\nX" + resp(b"PING") + resp(b"GET", b"k"),
            set_k + b"$2\r\nv\r\n\r" + resp(b"PING"),
        ]:
            self.assertEqual(whole(data)[:2],
                             ([], "Protocol error: bulk string not followed by CRLF"))

    def test_bare_reply_between_commands(self) -> None:
        """
        A bare simple string or RESP3 number between commands is an inline
        command, as the byte-by-byte parser reads it, not an empty command.
        """
        for mark in [b"+", b"("]:
            data = resp(b"PING") + mark + b"\r\n" + resp(b"PING")
            self.assertEqual(whole(data)[:2], ([[b"PING"], [mark], [b"PING"]], None))

    def test_too_many_arguments_in_whole_buffer(self) -> None:
        """
        A whole buffer with an array of more than the most arguments
        accepted is refused as the byte-by-byte parser refuses it.
        """
        data = b"*1048577\r\n" + b"$0\r\n\r\n" * 1048577 + resp(b"PING")
        self.assertEqual(whole(data)[:2], ([], "Protocol error: invalid multibulk length"))

    def test_push_is_not_a_command(self) -> None:
        """
        A RESP3 push or set in place of a command's array is read as
        inline commands, not as the array it would be in a reply.
        """
        commands, error, _ = whole(resp(b"PING") + b">1\r\n$4\r\nPING\r\n")
        self.assertEqual((commands, error), ([[b"PING"], [b">1"], [b"$4"], [b"PING"]], None))
        commands, error, _ = whole(b"~1\r\n$4\r\nPING\r\n")
        self.assertEqual((commands, error), ([[b"~1"], [b"$4"], [b"PING"]], None))

    def test_bad_bulk_length(self) -> None:
        """
        A bulk length that is not a number, negative, or over max_bulk is
        refused.
        """
        self.assertParseError(b"*1\r\n$x\r\n", "Protocol error: invalid bulk length")
        self.assertParseError(b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length")
        self.assertParseError(
            b"*1\r\n$-5\r\nhello\r\n", "Protocol error: invalid bulk length"
        )
        self.assertParseError(
            b"*1\r\n$11\r\nhello world\r\n",
            "Protocol error: invalid bulk length",
            max_bulk=10,
        )
        self.assertEqual(
            whole(resp(b"0123456789"), max_bulk=10), ([[b"0123456789"]], None, b"")
        )

    def test_bulk_without_crlf(self) -> None:
        """
        A bulk string must be followed by CRLF.
        """
        self.assertParseError(
            b"*1\r\n$4\r\nPINGxx", "Protocol error: bulk string not followed by CRLF"
        )
        self.assertParseError(
            b"*1\r\n$4\r\nPING\nx", "Protocol error: bulk string not followed by CRLF"
        )

    def test_too_long_inline(self) -> None:
        """
        An inline line longer than max_inline is refused, before its end
        arrives.
        """
        self.assertParseError(
            b"GET " + b"k" * 100,
            "Protocol error: too big inline request",
            max_inline=50,
        )

    def test_bad_inline_quoting(self) -> None:
        """
        An inline command with unbalanced quotes is a protocol error.
        """
        self.assertParseError(
            b'SET k "v\r\n', "Protocol error: unbalanced quotes in request"
        )

    def test_commands_before_error_come_first(self) -> None:
        """
        A call that meets an error after complete commands returns them,
        consuming up to the bad bytes; the next call raises.
        """
        good = resp(b"PING") + b"GET k\r\n"
        for bad in [b"*x\r\n", b"*1\r\n$4\r\nPINGxx", b'SET k "v\r\n', b"A" * 100]:
            data = good + bad
            expected = [[b"PING"], [b"GET", b"k"]]
            self.assertEqual(parse(data, max_inline=50), (expected, len(good), 0))
            self.assertRaises(RespError, parse, bad, max_inline=50)
            error = whole(data, max_inline=50)[1]
            self.assertIsNotNone(error)
            self.assertEqual(bytewise(data, max_inline=50)[:2], (expected, error))

    def test_resp_error_is_value_error(self) -> None:
        """
        L{RespError} is a L{ValueError}.
        """
        self.assertTrue(issubclass(RespError, ValueError))


class EncodeTests(SynchronousTestCase):
    """
    The reply encoders.
    """

    def test_status(self) -> None:
        """
        A status reply is '+', the text, CRLF.
        """
        self.assertEqual(encode_status("OK"), b"+OK\r\n")
        self.assertEqual(encode_status("PONG"), b"+PONG\r\n")

    def test_error(self) -> None:
        """
        An error reply is '-ERR ', the message on one line, CRLF.
        """
        self.assertEqual(encode_error("no such key"), b"-ERR no such key\r\n")
        self.assertEqual(
            encode_error("two\nlines\r\nhere"), b"-ERR two lines  here\r\n"
        )
        self.assertEqual(encode_error("café"), "-ERR café\r\n".encode())

    def test_integer(self) -> None:
        """
        An integer reply is ':', the number, CRLF.
        """
        self.assertEqual(encode_integer(0), b":0\r\n")
        self.assertEqual(encode_integer(42), b":42\r\n")
        self.assertEqual(encode_integer(-3), b":-3\r\n")

    def test_bulk(self) -> None:
        """
        A bulk reply carries its length and any bytes; None is nil.
        """
        self.assertEqual(encode_bulk(b"hello"), b"$5\r\nhello\r\n")
        self.assertEqual(encode_bulk(b""), b"$0\r\n\r\n")
        self.assertEqual(encode_bulk(b"a\r\nb"), b"$4\r\na\r\nb\r\n")
        self.assertEqual(encode_bulk(None), b"$-1\r\n")

    def test_array(self) -> None:
        """
        An array reply is its count, then each item as a bulk or nil.
        """
        self.assertEqual(encode_array([]), b"*0\r\n")
        self.assertEqual(
            encode_array([b"a", None, b""]), b"*3\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n"
        )

    @settings(max_examples=200, deadline=None)
    @given(_ARGS)
    def test_array_parses_back(self, args: list[bytes]) -> None:
        """
        An array of bulk strings parses back to the same arguments.
        """
        data = encode_array(args)
        self.assertEqual(parse(data), ([args], len(data), 0))
