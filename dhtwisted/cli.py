# -*- test-case-name: tests.test_process -*-
"""
Console scripts: C{dht-client}, the line client, and C{dhserver}, the
reference's way of starting a node.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import BinaryIO, Callable, Optional, Sequence

from .quoting import QuotingError, split_args, unquote_reply
from .quoting import reply_shape as shape_of

__all__ = ["client_main", "dhserver_main", "reply_lines"]

_HISTORY = os.path.join(os.path.expanduser("~"), ".dht_client_history")


class ConnectionLost(Exception):
    """
    The node closed the connection or did not answer in time.
    """


def reply_shape(line: bytes) -> tuple[str, int]:
    """
    How the node answers C{line} (see L{dhtwisted.quoting.reply_shape}).
    """
    try:
        return shape_of(split_args(line))
    except QuotingError:
        return ("lines", 1)


def _read_line(reader: BinaryIO) -> bytes:
    line = reader.readline()
    if not line.endswith(b"\n"):
        raise ConnectionLost()
    return line.rstrip(b"\r\n")


def reply_lines(reader: BinaryIO, shape: tuple[str, int]) -> list[bytes]:
    """
    Read one reply of C{shape} (see L{reply_shape}) and decode each line for
    display: quoted values are unquoted.

    :raises ConnectionLost: if the connection ends first.
    """
    kind, count = shape
    if kind == "block":
        first = _read_line(reader)
        if first.startswith(b"ERR"):
            return [first]
        lines = [first]
        while lines[-1]:
            lines.append(_read_line(reader))
        return lines[:-1]
    shown = []
    for _ in range(count):
        line = _read_line(reader)
        try:
            shown.append(unquote_reply(line))
        except QuotingError:
            shown.append(line)
    return shown


def _prompt_lines(interactive: bool) -> Callable[[], Optional[str]]:
    if not interactive:
        def from_pipe() -> Optional[str]:
            line = sys.stdin.readline()
            return line if line else None

        return from_pipe
    try:
        import readline

        try:
            readline.read_history_file(_HISTORY)
        except OSError:
            pass
        readline.set_history_length(1000)
    except ImportError:  # pragma: no cover - readline is on every Unix Python
        readline = None  # type: ignore[assignment]

    def from_tty() -> Optional[str]:
        try:
            return input("> ")
        except EOFError:
            print()
            return None
        finally:
            if readline is not None:
                try:
                    readline.write_history_file(_HISTORY)
                except OSError:
                    pass

    return from_tty


def client_main(argv: Optional[Sequence[str]] = None) -> int:
    """
    C{dht-client HOST PORT}: send each line typed (or piped) to the node and
    print its reply.
    """
    parser = argparse.ArgumentParser(
        prog="dht-client",
        description="Line client for a dhtwisted node: set KEY VALUE, get KEY, "
        "del KEY, mset, mget, ping, info, members, exit.",
    )
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for a reply (default 30)")
    args = parser.parse_args(argv)
    where = f"{args.host}:{args.port}"
    try:
        sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    except OSError as e:
        print(f"dht-client: cannot connect to {where}: {e.strerror or e}", file=sys.stderr)
        return 1
    reader = sock.makefile("rb")
    out = sys.stdout.buffer
    next_line = _prompt_lines(sys.stdin.isatty())
    try:
        while True:
            text = next_line()
            if text is None:
                return 0
            line = text.strip().encode("utf-8", "surrogateescape")
            if not line:
                continue
            if line.split()[0].lower() in (b"exit", b"quit"):
                return 0
            sock.sendall(line + b"\r\n")
            for shown in reply_lines(reader, reply_shape(line)):
                out.write(shown + b"\n")
            out.flush()
    except (ConnectionLost, OSError) as e:
        why = "no reply in time" if isinstance(e, socket.timeout) else "connection lost"
        print(f"dht-client: {where}: {why}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print()
        return 130
    finally:
        sock.close()


def dhserver_main(argv: Optional[Sequence[str]] = None) -> int:
    """
    C{dhserver <id> <ip> <port> <ring_id> [<bootstrap_ip> <bootstrap_port>]}:
    start a node in the foreground, as the reference's server did.
    """
    parser = argparse.ArgumentParser(
        prog="dhserver",
        description="Start a dhtwisted node in the foreground (the reference's "
        "command line; the same as twistd -n dht with options).",
    )
    parser.add_argument("--config", help="ini file with the other settings")
    parser.add_argument("id")
    parser.add_argument("ip")
    parser.add_argument("port")
    parser.add_argument("ring_id")
    parser.add_argument("bootstrap", nargs="*", metavar="bootstrap_ip bootstrap_port")
    args = parser.parse_args(argv)
    if len(args.bootstrap) not in (0, 2):
        parser.error("give both bootstrap_ip and bootstrap_port, or neither")
    twistd_args = ["-n", "--pidfile=", "dht"]
    if args.config:
        twistd_args += ["--config", args.config]
    twistd_args += ["--id", args.id, "--listen", f"{args.ip}:{args.port}",
                    "--ring-id", args.ring_id]
    if args.bootstrap:
        twistd_args += ["--join", f"{args.bootstrap[0]}:{args.bootstrap[1]}"]
    from twisted.scripts.twistd import run

    sys.argv = ["dhserver"] + twistd_args
    run()
    return 0
