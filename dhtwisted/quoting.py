# -*- test-case-name: tests.test_quoting -*-
"""
The text protocol's words: splitting a command line into arguments, and
quoting values in replies so that every reply line is unambiguous.

Arguments are separated by spaces or tabs. An argument may be double-quoted,
with backslash escapes (C{\\n \\r \\t \\a \\b \\" \\\\ \\xHH}), or
single-quoted (only C{\\'} is an escape), as in redis-cli.

A value that could be misread when printed bare (empty, holding spaces,
quotes, backslashes, control or non-UTF-8 bytes, or looking like a reply such
as C{ok}, C{(nil)} or C{ERR ...}) is sent double-quoted with escapes, in
plain ASCII. Pure: no Twisted.
"""

from __future__ import annotations

import codecs
import re

__all__ = ["QuotingError", "quote_value", "reply_shape", "split_args", "unquote_reply"]

#: Commands whose text reply is a block of lines ended by an empty line.
BLOCK_REPLIES = frozenset([b"INFO", b"MEMBERS", b"HELLO", b"COMMAND", b"CONFIG"])


class QuotingError(ValueError):
    """
    A command line cannot be split into arguments (e.g. unbalanced quotes).
    """


_SPACE = re.compile(rb"[ \t]*")
_BARE = re.compile(rb"[^ \t]+")
_DQUOTED = re.compile(rb'"([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL)
_SQUOTED = re.compile(rb"'([^'\\]*(?:\\.[^'\\]*)*)'", re.DOTALL)
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {
    b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b",
}
_C_ESCAPES_ONLY = re.compile(
    rb"[^\\]*(?:\\(?:x[0-9a-fA-F]{2}|[nrtab\"\\'])[^\\]*)*", re.DOTALL
)
_NEEDS_QUOTE = re.compile(rb"[^\x21-\x7e]|[\"'\\]")
_REPLY_LIKE = (b"ok", b"(nil)", b"pong")


def _unescape_one(m: re.Match[bytes]) -> bytes:
    code = m.group(1)
    if len(code) == 3:
        return bytes([int(code[1:], 16)])
    return _SIMPLE_ESCAPES.get(code, code)


def _unescape_double(body: bytes) -> bytes:
    if b"\\" not in body:
        return body
    if _C_ESCAPES_ONLY.fullmatch(body):
        # every escape means the same to Python's codec: decode in C
        return codecs.escape_decode(body)[0]  # type: ignore[attr-defined,no-any-return]
    return _ESCAPE.sub(_unescape_one, body)


def _unescape_single(body: bytes) -> bytes:
    return body.replace(b"\\'", b"'") if b"\\" in body else body


def split_args(line: bytes) -> list[bytes]:
    """
    Split one command line (without its line ending) into arguments.

    :raises QuotingError: for unbalanced quotes, or a closing quote that is
        not followed by a space or the end of the line.
    """
    if b'"' not in line and b"'" not in line:
        # not line.split(): that would also split on \v \f \r \n
        return [arg for arg in line.replace(b"\t", b" ").split(b" ") if arg]
    args: list[bytes] = []
    pos = 0
    end = len(line)
    while True:
        pos = _SPACE.match(line, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            return args
        first = line[pos]
        if first == 0x22 or first == 0x27:
            pattern, unescape = (
                (_DQUOTED, _unescape_double) if first == 0x22 else (_SQUOTED, _unescape_single)
            )
            m = pattern.match(line, pos)
            if m is None:
                raise QuotingError("unbalanced quotes in request")
            pos = m.end()
            if pos < end and line[pos] not in b" \t":
                raise QuotingError("closing quote must be followed by a space")
            args.append(unescape(m.group(1)))
        else:
            m = _BARE.match(line, pos)
            assert m is not None
            args.append(m.group())
            pos = m.end()


def _is_plain(value: bytes) -> bool:
    """
    Whether C{value} can be printed bare: one printable word that reads like
    no reply and has no quotes or backslashes.
    """
    if not value or value.lower() in _REPLY_LIKE or value[:3].upper() == b"ERR":
        return False
    if _NEEDS_QUOTE.search(value) is None:
        return True
    if value.isascii():
        return False
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return text.isprintable() and not any(c.isspace() or c in "\"'\\" for c in text)


def quote_value(value: bytes) -> bytes:
    """
    C{value} as it goes in a reply line: bare when that is unambiguous,
    otherwise double-quoted with escapes (plain ASCII).
    """
    if _is_plain(value):
        return value
    # latin-1 maps each byte to one character, which unicode_escape writes
    # as itself (printable ASCII) or \t \n \r \\ \xHH: all in C
    escaped = value.decode("latin-1").encode("unicode_escape").replace(b'"', b'\\"')
    return b'"' + escaped + b'"'


def unquote_reply(line: bytes) -> bytes:
    """
    The value a reply line stands for: the inverse of L{quote_value}.

    :raises QuotingError: if a quoted line is malformed.
    """
    if not line.startswith(b'"'):
        return line
    m = _DQUOTED.fullmatch(line)
    if m is None:
        raise QuotingError("malformed quoted reply")
    return _unescape_double(m.group(1))


def reply_shape(args: list[bytes]) -> tuple[str, int]:
    """
    How the text protocol answers a command: C{("lines", n)} for n lines
    (one per key for C{MGET}, otherwise one), or C{("block", 0)} for lines
    ended by an empty line. An error is one C{ERR} line in either shape
    (for C{MGET}, one per key).
    """
    name = args[0].upper() if args else b""
    if name == b"MGET" and len(args) > 1:
        return ("lines", len(args) - 1)
    if name in BLOCK_REPLIES:
        return ("block", 0)
    return ("lines", 1)
