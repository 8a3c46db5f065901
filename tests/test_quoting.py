"""
Tests for dhtwisted.quoting: splitting command lines into arguments, and
quoting reply values so that every reply line is unambiguous.
"""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.quoting import QuotingError, quote_value, split_args, unquote_reply

_FEW = settings(max_examples=200, deadline=None)


class SplitArgsTests(SynchronousTestCase):
    """
    L{split_args} splits one command line into its arguments.
    """

    def assertSplits(self, table: list[tuple[bytes, list[bytes]]]) -> None:
        for line, expected in table:
            self.assertEqual(split_args(line), expected, line)

    def test_bare_words(self) -> None:
        """
        Bare words are separated by runs of spaces and tabs.
        """
        self.assertSplits(
            [
                (b"GET k", [b"GET", b"k"]),
                (b"  SET   k  v  ", [b"SET", b"k", b"v"]),
                (b"SET\tk\t\tv", [b"SET", b"k", b"v"]),
                (b" \t ", []),
                (b"", []),
                (b"PING", [b"PING"]),
            ]
        )

    def test_double_quotes_hold_spaces(self) -> None:
        """
        A double-quoted argument keeps its spaces and tabs.
        """
        self.assertSplits(
            [
                (b'SET k "big world"', [b"SET", b"k", b"big world"]),
                (b'SET "a b"\t"c\td"', [b"SET", b"a b", b"c\td"]),
                (b'"  "', [b"  "]),
            ]
        )

    def test_double_quote_escapes(self) -> None:
        """
        Double quotes understand \\n \\r \\t \\a \\b \\" \\\\ and \\xHH.
        """
        self.assertSplits(
            [
                (b'SET k "a\\nb"', [b"SET", b"k", b"a\nb"]),
                (b'SET k "a\\rb"', [b"SET", b"k", b"a\rb"]),
                (b'SET k "a\\tb"', [b"SET", b"k", b"a\tb"]),
                (b'SET k "a\\ab"', [b"SET", b"k", b"a\ab"]),
                (b'SET k "a\\bb"', [b"SET", b"k", b"a\bb"]),
                (b'SET k "say \\"hi\\""', [b"SET", b"k", b'say "hi"']),
                (b'SET k "back\\\\slash"', [b"SET", b"k", b"back\\slash"]),
                (b'SET k "\\x00\\xff\\x41\\xAb"', [b"SET", b"k", b"\x00\xffA\xab"]),
                (b'SET k "\\q"', [b"SET", b"k", b"q"]),
            ]
        )

    def test_single_quotes(self) -> None:
        """
        Single quotes hold spaces and double quotes; only \\' is an escape.
        """
        self.assertSplits(
            [
                (b"SET k 'big world'", [b"SET", b"k", b"big world"]),
                (b"SET k 'it\\'s'", [b"SET", b"k", b"it's"]),
                (b"SET k 'a\\nb'", [b"SET", b"k", b"a\\nb"]),
                (b"SET k 'say \"hi\"'", [b"SET", b"k", b'say "hi"']),
            ]
        )

    def test_empty_quoted_argument(self) -> None:
        """
        An empty pair of quotes is an empty argument, not a missing one.
        """
        self.assertSplits(
            [
                (b'SET k ""', [b"SET", b"k", b""]),
                (b"SET k ''", [b"SET", b"k", b""]),
                (b'SET "" v', [b"SET", b"", b"v"]),
            ]
        )

    def test_unbalanced_quotes(self) -> None:
        """
        A quote that is never closed is an error.
        """
        for line in [
            b'SET k "v',
            b"SET k 'v",
            b'SET k "v\\"',
            b"SET k 'v\\'",
            b'"',
            b'SET k "a" "b',
        ]:
            self.assertRaises(QuotingError, split_args, line)

    def test_closing_quote_then_letter(self) -> None:
        """
        A closing quote must be followed by a space, a tab or the end.
        """
        for line in [b'SET k "v"x', b"SET k 'v'x", b'SET "k"v x', b'SET k ""x']:
            self.assertRaises(QuotingError, split_args, line)

    def test_quoting_error_is_value_error(self) -> None:
        """
        L{QuotingError} is a L{ValueError}, which the RESP parser relies on.
        """
        self.assertTrue(issubclass(QuotingError, ValueError))

    def test_same_separators_with_or_without_quotes(self) -> None:
        """
        Only spaces and tabs separate arguments, whether or not the line
        holds a quoted argument elsewhere.
        """
        for sep in [b"\x0b", b"\x0c", b"\r"]:
            bare = split_args(b"SET k a" + sep + b"b")
            quoted = split_args(b'SET "k" a' + sep + b"b")
            self.assertEqual(bare, [b"SET", b"k", b"a" + sep + b"b"])
            self.assertEqual(quoted, bare)

    def test_big_quoted_value(self) -> None:
        """
        A 1 MiB quoted value, with escapes, splits quickly and intact.
        """
        value = b"x y\\n" * (1024 * 1024 // 5)
        line = b'SET k "' + value + b'"'
        start = time.perf_counter()
        args = split_args(line)
        elapsed = time.perf_counter() - start
        self.assertEqual(args, [b"SET", b"k", value.replace(b"\\n", b"\n")])
        # generous: a linear split takes milliseconds, a quadratic one minutes
        self.assertLess(elapsed, 5.0)

    def test_big_unbalanced_value(self) -> None:
        """
        A 1 MiB value whose quote never closes fails quickly.
        """
        line = b'SET k "' + b"x \\n" * (1024 * 1024 // 4)
        start = time.perf_counter()
        self.assertRaises(QuotingError, split_args, line)
        self.assertLess(time.perf_counter() - start, 5.0)


def _printable_ascii(data: bytes) -> bool:
    return all(0x20 <= b < 0x7F for b in data)


class QuoteValueTests(SynchronousTestCase):
    """
    L{quote_value} leaves plain words bare and quotes everything else.
    """

    def test_plain_words_stay_bare(self) -> None:
        """
        A printable word with no quotes or backslashes is sent as it is.
        """
        for value in [
            b"hello",
            b"world",
            b"x",
            b"12",
            b"a-b_c.d",
            b"okay",
            b"nil",
            b"nerr",
        ]:
            self.assertEqual(quote_value(value), value)

    def test_printable_utf8_stays_bare(self) -> None:
        """
        A printable UTF-8 word such as 'héllo' is sent as it is.
        """
        for text in ["héllo", "日本語", "naïve-café", "€100"]:
            value = text.encode()
            self.assertEqual(quote_value(value), value)

    def test_ambiguous_values_get_quoted(self) -> None:
        """
        Values that are empty, hold separators, quotes, backslashes, control
        or non-UTF-8 bytes, or read like a reply, go in double quotes.
        """
        table = [
            (b"", b'""'),
            (b"big world", b'"big world"'),
            (b"a\tb", b'"a\\tb"'),
            (b'say "hi"', b'"say \\"hi\\""'),
            (b"it's", b'"it\'s"'),
            (b"back\\slash", b'"back\\\\slash"'),
            (b"a\nb\rc", b'"a\\nb\\rc"'),
            (b"\x00\x07\x08\x1b\x7f", b'"\\x00\\x07\\x08\\x1b\\x7f"'),
            (b"\xff\xfe", b'"\\xff\\xfe"'),
            (b"ok", b'"ok"'),
            (b"OK", b'"OK"'),
            (b"(nil)", b'"(nil)"'),
            (b"(NIL)", b'"(NIL)"'),
            (b"ERR", b'"ERR"'),
            (b"ERR unknown command", b'"ERR unknown command"'),
            (b"ERRx", b'"ERRx"'),
            (b"err", b'"err"'),
            (b"pong", b'"pong"'),
            (b"PONG", b'"PONG"'),
            ("héllo wörld".encode(), b'"h\\xc3\\xa9llo w\\xc3\\xb6rld"'),
            ("a\u00a0b".encode(), b'"a\\xc2\\xa0b"'),
            ("a\u200bb".encode(), b'"a\\xe2\\x80\\x8bb"'),
        ]
        for value, quoted in table:
            self.assertEqual(quote_value(value), quoted, repr(value))
            self.assertTrue(_printable_ascii(quoted), quoted)
            self.assertEqual(unquote_reply(quoted), value)

    def test_unquote_bare(self) -> None:
        """
        A reply line that does not start with a quote stands for itself.
        """
        self.assertEqual(unquote_reply(b"hello"), b"hello")
        self.assertEqual(unquote_reply("héllo".encode()), "héllo".encode())

    def test_unquote_malformed(self) -> None:
        """
        A reply line that starts with a quote but is not one quoted string
        is an error.
        """
        for line in [b'"', b'"abc', b'"a"b', b'"a\\"', b'"a" "b"']:
            self.assertRaises(QuotingError, unquote_reply, line)

    @_FEW
    @given(st.binary(max_size=64))
    def test_round_trip(self, value: bytes) -> None:
        """
        Any value survives quoting and unquoting, on one line.
        """
        quoted = quote_value(value)
        self.assertEqual(unquote_reply(quoted), value)
        self.assertNotIn(b"\r", quoted)
        self.assertNotIn(b"\n", quoted)
        if quoted != value:
            self.assertTrue(_printable_ascii(quoted), quoted)

    @_FEW
    @given(st.text(max_size=32))
    def test_round_trip_text(self, text: str) -> None:
        """
        Any UTF-8 text survives quoting, and a bare reply is never one that
        the client would read as ok, (nil) or an error.
        """
        value = text.encode()
        quoted = quote_value(value)
        self.assertEqual(unquote_reply(quoted), value)
        self.assertNotIn(b"\n", quoted)
        if quoted == value:
            self.assertTrue(value)
            self.assertNotIn(value.lower(), (b"ok", b"(nil)", b"pong"))
            self.assertFalse(value.upper().startswith(b"ERR"))
            self.assertEqual(split_args(value), [value])

    @_FEW
    @given(st.binary(max_size=64))
    def test_quoted_value_is_one_argument(self, value: bytes) -> None:
        """
        A quoted value, empty included, is read back as exactly one argument.
        """
        self.assertEqual(
            split_args(b"SET k " + quote_value(value)), [b"SET", b"k", value]
        )
