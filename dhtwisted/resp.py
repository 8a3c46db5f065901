# -*- test-case-name: tests.test_resp -*-
"""
RESP2, the Redis serialization protocol: parsing commands, encoding replies.

Pure: no Twisted. Parsing works on a bytes buffer and returns the complete
commands at its start, so a client's whole read is parsed in one call.
"""

from __future__ import annotations

import re
from itertools import chain
from typing import Callable, Optional, Sequence

from hiredis import HiredisError, Reader

__all__ = [
    "RespError",
    "encode_array",
    "encode_bulk",
    "encode_error",
    "encode_integer",
    "encode_status",
    "parse_commands",
]

NIL = b"$-1\r\n"
SplitFn = Callable[[bytes], list[bytes]]
_MAX_ARGS = 1024 * 1024
#: The longest header line (C{*count} or C{$length}) accepted, and the
#: window searched for its end (a line of C{_HEADER_MAX} bytes may have its
#: \r but not yet its \n).
_HEADER_MAX = 32
_HEADER_WINDOW = _HEADER_MAX + 2
#: The types of the commands of a whole buffer: arrays only.
_LISTS = {list}
#: What starts a RESP3 type (aggregate, verbatim string, number, null, error) after a CRLF.
_RESP3_MARK = re.compile(rb"\r\n[=>~|%(,#_!]")


class RespError(ValueError):
    """
    The client sent bytes that are not RESP; the connection must be closed.
    """


def encode_status(text: str) -> bytes:
    """
    A simple string reply, such as C{+OK}.
    """
    return b"+" + text.encode("utf-8") + b"\r\n"


def encode_error(message: str, code: str = "ERR") -> bytes:
    """
    An error reply, C{-ERR message} (or another code); line breaks in
    C{message} become spaces.
    """
    clean = message.replace("\r", " ").replace("\n", " ")
    return b"-%s %s\r\n" % (code.encode("ascii"), clean.encode("utf-8", "replace"))


def encode_integer(number: int) -> bytes:
    """
    An integer reply.
    """
    return b":%d\r\n" % number


def encode_bulk(value: Optional[bytes]) -> bytes:
    """
    A bulk string reply; C{None} is the nil bulk string.
    """
    if value is None:
        return NIL
    return b"$%d\r\n%s\r\n" % (len(value), value)


def encode_array(values: Sequence[Optional[bytes]]) -> bytes:
    """
    An array of bulk strings (C{None} items are nil).
    """
    return b"*%d\r\n" % len(values) + b"".join(encode_bulk(v) for v in values)


def _parse_whole(buf: bytes, max_bulk: int) -> Optional[list[list[bytes]]]:
    """
    The common case, fast: C{buf} is whole commands, arrays of bulk strings
    none of which holds a CRLF. C{None} for anything else: L{parse_commands}
    then parses byte by byte (and finds any error).
    """
    if buf[:1] != b"*" or buf[-2:] != b"\r\n":
        return None
    if b"\r\n*" in buf:  # more than one command, mostly
        return _parse_many(buf, max_bulk)
    return _parse_split(buf, max_bulk)


def _parse_split(buf: bytes, max_bulk: int) -> Optional[list[list[bytes]]]:
    """
    L{_parse_whole} in Python, faster for one command: splitting at CRLFs
    gives the headers and the arguments, if the headers are written as
    Redis clients write them and no argument holds a CRLF.
    """
    parts = buf.split(b"\r\n")
    size = len(parts) - 1  # the empty string after the last CRLF
    commands = []
    i = 0
    try:
        while i < size:
            head = parts[i]
            count = int(head[1:])
            end = i + 1 + 2 * count
            if (head[:1] != b"*" or count <= 0 or count > _MAX_ARGS or end > size
                    or head != b"*%d" % count):
                return None
            args = parts[i + 2 : end : 2]
            if parts[i + 1 : end : 2] != [b"$%d" % len(a) for a in args]:
                return None  # an argument with a CRLF in it, or an odd header
            if max(map(len, args)) > max_bulk:
                return None
            commands.append(args)
            i = end
    except ValueError:
        return None
    return commands


def _parse_many(buf: bytes, max_bulk: int) -> Optional[list[list[bytes]]]:
    """
    L{_parse_whole} for several commands: hiredis parses them in C, then
    checks that cost little per command show that the bytes were nothing
    else.
    """
    reader = Reader()
    reader.feed(buf)
    reader.feed(b"*0\r\n")  # read as the last reply only if buf ended at a command's end
    commands = []
    gets = reader.gets
    try:
        item = gets()
        while item is not False:
            commands.append(item)
            item = gets()
        # every argument bytes (other replies, nils, numbers and nested
        # arrays do not join), each followed by a LF here, so that a CR
        # ending an argument shows as a CRLF
        flat = b"\n".join(map(b"\n".join, commands)) + b"\n"
    except (HiredisError, TypeError):
        return None
    if (
        not commands
        or commands.pop() != []
        or set(map(type, commands)) != _LISTS
        or [] in commands
        # no argument holds a CRLF or ends with a CR: hiredis skips the two
        # bytes after a bulk string unread, and such a CR could stand in for
        # the one missing there
        or b"\r\n" in flat
        # RESP3 types that hiredis reads as arrays, strings or numbers: a
        # value starting with one of these bytes just takes the slow path
        or _RESP3_MARK.search(buf) is not None
        # every argument took two lines, ended by CRLFs (so no simple string
        # stood in for a bulk string, and every bulk string ended in CRLF)
        or buf.count(b"\r\n") != len(commands) + 2 * sum(map(len, commands))
        or (len(flat) > _MAX_ARGS and max(map(len, commands)) > _MAX_ARGS)
        or (len(flat) > max_bulk and max(map(len, chain.from_iterable(commands))) > max_bulk)
    ):
        return None
    return commands


def parse_commands(
    buf: bytes, max_bulk: int, max_inline: int, split_inline: SplitFn
) -> tuple[list[list[bytes]], int, int]:
    """
    Parse the complete commands at the start of C{buf}.

    A command is a RESP array of bulk strings, or (as Redis allows) an inline
    command: a line of words.

    :param max_bulk: the longest bulk string accepted.
    :param max_inline: the longest inline command or header line accepted.
    :param split_inline: splits an inline command line into arguments.
    :return: the commands, the number of bytes they used, and how many bytes
        the next (incomplete) command needs at least, or 0 if unknown.
    :raises RespError: on bytes that are not RESP, once the commands before
        them have been returned by earlier calls. (To keep the order of
        replies, a call that finds an error after complete commands returns
        those first; the next call raises.)
    """
    whole = _parse_whole(buf, max_bulk)
    if whole is not None:
        return whole, len(buf), 0
    commands: list[list[bytes]] = []
    pos = 0
    size = len(buf)
    find = buf.find
    while pos < size:
        start = pos
        if buf[pos] != 0x2A:  # not '*': an inline command
            end = buf.find(b"\n", pos, pos + max_inline + 1)
            if end < 0:
                if size - pos > max_inline:
                    if commands:
                        return commands, start, 0
                    raise RespError("Protocol error: too big inline request")
                return commands, start, 0
            line = buf[pos:end]
            if line.endswith(b"\r"):
                line = line[:-1]
            pos = end + 1
            try:
                args = split_inline(line)
            except ValueError as e:
                if commands:
                    return commands, start, 0
                raise RespError(f"Protocol error: {e}") from None
            if args:
                commands.append(args)
            continue
        # (the header lines are parsed inline: this loop runs for every
        # command a client sends)
        try:
            end = find(b"\r\n", pos, pos + _HEADER_WINDOW)
            if end < 0:
                if size - pos > _HEADER_MAX + 1:
                    raise RespError("Protocol error: too big multibulk count")
                return commands, start, 0
            try:
                count = int(buf[pos + 1 : end])
            except ValueError:
                raise RespError("Protocol error: invalid multibulk length") from None
            if count > _MAX_ARGS:
                raise RespError("Protocol error: invalid multibulk length")
            pos = end + 2
            args = []
            for _ in range(count):
                if pos >= size:
                    return commands, start, 0
                if buf[pos] != 0x24:  # '$'
                    got = chr(buf[pos]) if 0x20 < buf[pos] < 0x7F else "\\x%02x" % buf[pos]
                    raise RespError(f"Protocol error: expected '$', got '{got}'")
                end = find(b"\r\n", pos, pos + _HEADER_WINDOW)
                if end < 0:
                    if size - pos > _HEADER_MAX + 1:
                        raise RespError("Protocol error: too big bulk count")
                    return commands, start, 0
                try:
                    length = int(buf[pos + 1 : end])
                except ValueError:
                    raise RespError("Protocol error: invalid bulk length") from None
                if length < 0 or length > max_bulk:
                    raise RespError("Protocol error: invalid bulk length")
                pos = end + 2
                stop = pos + length
                if stop + 2 > size:
                    return commands, start, (stop + 2 - start)
                if buf[stop : stop + 2] != b"\r\n":
                    raise RespError("Protocol error: bulk string not followed by CRLF")
                args.append(buf[pos:stop])
                pos = stop + 2
        except RespError:
            if commands:
                return commands, start, 0
            raise
        if args:
            commands.append(args)
    return commands, pos, 0
