# -*- test-case-name: tests.test_admin -*-
"""
C{dht-admin}: the operator's view of a cluster, as C{nodetool status} or
C{redis-cli --cluster} give it.

C{dht-admin status|ring|key KEY|leave [HOST:PORT] [--json]} asks one node
over its client port (RESP: C{DHT STATUS}, C{DHT RING}, C{DHT KEY},
C{DHT LEAVE}) and prints a table that fits a terminal, or the node's JSON
document for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import time
from typing import Any, Optional, Sequence

import hiredis

from .config import parse_address
from .status import human_size

__all__ = ["ask", "format_key", "format_ring", "format_status", "main"]

_DEFAULT = "127.0.0.1:9000"


class AdminError(Exception):
    """
    The node could not be asked, or answered with an error.
    """


def ask(host: str, port: int, *args: bytes, timeout: float = 10.0,
        password: Optional[str] = None, tls: Optional[ssl.SSLContext] = None) -> Any:
    """
    Send one RESP command to the node at C{host:port}; its reply.

    :param password: sent with C{AUTH} first, if given.
    :param tls: speak TLS with this context.
    :raises AdminError: if the node cannot be reached, does not answer in
        time, or answers with an error.
    """
    where = f"{host}:{port}"
    commands = [args]
    if password is not None:
        commands.insert(0, (b"AUTH", password.encode("utf-8")))
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
    except ssl.SSLError as e:
        raise AdminError(f"TLS with {where} failed: {e.reason or e}") from None
    except OSError as e:
        raise AdminError(f"cannot connect to {where}: {e.strerror or e}") from None
    replies = []
    try:
        sock.sendall(b"".join(
            b"*%d\r\n" % len(command)
            + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in command)
            for command in commands))
        reader = hiredis.Reader()
        while len(replies) < len(commands):
            reply = reader.gets()
            if reply is not False:
                replies.append(reply)
                continue
            data = sock.recv(65536)
            if not data:
                raise AdminError(f"{where} closed the connection without answering")
            reader.feed(data)
    except socket.timeout:
        raise AdminError(f"{where} did not answer within {timeout:g} s") from None
    except OSError as e:
        raise AdminError(f"{where}: {e.strerror or e}") from None
    finally:
        sock.close()
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise AdminError(f"{where}: {reply}")
    return replies[-1]


def _tls_context(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    if not (args.tls or args.cacert):
        return None
    context = ssl.create_default_context(cafile=args.cacert)
    if args.cert:
        context.load_cert_chain(args.cert, args.cert_key)
    return context


def _percent(share: float) -> str:
    return f"{share * 100:.1f}%"


def _tokens(tokens: list[int]) -> str:
    # (as the status page shows them)
    if len(tokens) <= 3:
        return ",".join(map(str, tokens))
    return f"{tokens[0]},{tokens[1]} +{len(tokens) - 2}"


def _rate(rate: float) -> str:
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in [header, *rows]]


def format_status(doc: dict[str, Any]) -> str:
    """
    The status document as a table and a summary line.
    """
    rows = []
    for m in doc["members"]:
        rows.append((
            m["id"] + ("*" if m["me"] else ""), m["address"], m["status"],
            _tokens(m["tokens"]), _percent(m["share"]), _percent(m["owns"]), str(m["keys"]),
            human_size(m["memory"]), _rate(m["rate"]), f"{m['heartbeat_age']:.1f}s",
        ))
    # (AGE: since the member's heartbeat last increased; *: the node asked)
    lines = _table(("ID", "ADDRESS", "STATUS", "TOKENS", "SHARE", "OWNS", "KEYS", "MEM",
                    "REQ/S", "AGE"), rows)
    s = doc["summary"]
    agree = ("all live members agree on the ring" if s["agree"]
             else "live members DISAGREE on the ring (gossip has not settled)")
    lines.append("")
    lines.append(f"{s['members']} members as {doc['node']}* sees them: {s['alive']} alive, "
                 f"{s['suspect']} suspect, {s['dead']} dead, {s['left']} left; "
                 f"{s['replicas']} replicas; {agree}")
    return "\n".join(lines)


def format_ring(doc: dict[str, Any]) -> str:
    """
    The ring document: every token's range and replicas, then each node's
    ownership.
    """
    rows = [(str(t["token"]), t["node"], f"{t['first']}..{t['token']}",
             _percent(t["share"]), ",".join(t["replicas"])) for t in doc["tokens"]]
    lines = _table(("TOKEN", "NODE", "RANGE", "SHARE", "REPLICAS"), rows)
    lines.append("")
    owners = [(node, _percent(doc["primary_share"][node]), _percent(share))
              for node, share in sorted(doc["ownership"].items())]
    lines += _table(("NODE", "PRIMARY", f"OWNS ({doc['replicas']} replicas)"), owners)
    lines.append("")
    lines.append(f"{len(doc['tokens'])} tokens on a ring of {doc['ring_size']} positions")
    return "\n".join(lines)


def format_key(doc: dict[str, Any]) -> str:
    """
    The key document: where the key sits and what each replica holds.
    """
    rows = []
    versions = set()
    answered = 0
    for r in doc["replicas"]:
        if "error" in r:
            rows.append((r["node"], "?", f"no answer: {r['error']}"))
            continue
        answered += 1
        versions.add(r["version"])
        held = ("not there" if r["version"] is None
                else "deleted (tombstone)" if r["tombstone"]
                else f"{r['value_bytes']} byte" + ("" if r["value_bytes"] == 1 else "s"))
        rows.append((r["node"], r["version"] or "-", held))
    lines = [f"key {doc['key']!r} at position {doc['position']} of {doc['ring_size']}; "
             f"preference list {', '.join(doc['preference_list']) or '(empty ring)'}", ""]
    lines += _table(("REPLICA", "VERSION", "HOLDS"), rows)
    lines.append("")
    if len(versions) > 1:
        lines.append("replicas differ: stabilization will bring them to the newest version")
    elif answered < len(doc["replicas"]):
        lines.append(f"{answered} of {len(doc['replicas'])} replicas answered")
    elif versions:
        lines.append("replicas agree")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    C{dht-admin COMMAND [...]}.
    """
    parser = argparse.ArgumentParser(
        prog="dht-admin",
        description="Look at a dhtwisted cluster through one of its nodes.",
    )
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the node (default 10)")
    parser.add_argument("--password", default=os.environ.get("DHT_PASSWORD"),
                        help="the node's requirepass (default $DHT_PASSWORD)")
    parser.add_argument("--tls", action="store_true", help="speak TLS to the node")
    parser.add_argument("--cacert", help="the CA to check the node's certificate with "
                                         "(implies --tls)")
    parser.add_argument("--cert", help="a client certificate to show (PEM)")
    parser.add_argument("--key", dest="cert_key", metavar="KEY",
                        help="its private key (PEM)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    where_help = f"the node to ask (default $DHT_ADDRESS or {_DEFAULT})"
    for name, text in (("status", "every member as the node sees it, and a summary"),
                       ("ring", "token ownership")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("address", nargs="?", metavar="HOST:PORT", help=where_help)
        p.add_argument("--json", action="store_true", help="print the node's JSON document")
    text = "a key's position, preference list and each replica's version"
    p = sub.add_parser("key", help=text, description=text)
    p.add_argument("key")
    p.add_argument("address", nargs="?", metavar="HOST:PORT", help=where_help)
    p.add_argument("--json", action="store_true", help="print the node's JSON document")
    text = "make the node leave the cluster: it hands its keys over, then exits"
    p = sub.add_parser("leave", help=text, description=text)
    p.add_argument("address", nargs="?", metavar="HOST:PORT", help=where_help)
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for the node to stop answering")
    args = parser.parse_args(argv)
    try:
        address = parse_address(args.address or os.environ.get("DHT_ADDRESS") or _DEFAULT)
    except ValueError as e:
        parser.error(str(e))
    host, port = address.host, address.port
    try:
        context = _tls_context(args)
    except (OSError, ssl.SSLError) as e:
        parser.error(f"cannot load the TLS files: {e}")
    options = {"timeout": args.timeout, "password": args.password, "tls": context}
    try:
        if args.command == "leave":
            ask(host, port, b"DHT", b"LEAVE", **options)
            print(f"{address}: leaving the cluster, handing its keys over")
            return _wait_gone(host, port, args.wait)
        if args.command == "key":
            reply = ask(host, port, b"DHT", b"KEY", os.fsencode(args.key), **options)
        else:
            reply = ask(host, port, b"DHT", args.command.upper().encode(), **options)
        doc = json.loads(reply)
    except AdminError as e:
        print(f"dht-admin: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        show = {"status": format_status, "ring": format_ring, "key": format_key}
        print(show[args.command](doc))
    return 0


def _wait_gone(host: str, port: int, seconds: float) -> int:
    if seconds <= 0:
        return 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
        except OSError:
            print(f"{host}:{port}: stopped")
            return 0
        time.sleep(0.2)
    print(f"dht-admin: {host}:{port} still answers after {seconds:g} s", file=sys.stderr)
    return 1
