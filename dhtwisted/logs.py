# -*- test-case-name: tests.test_logs -*-
"""
The node's log: twisted.logger events, filtered by level, with the same
keys everywhere.

Keys: C{node} (the node that logs; added to every event of the process's
node), C{peer} (another node), C{txid} (a transaction), C{key} (a client
key, as text), C{address} (a C{host:port} not yet known as a member),
C{why} (what went wrong). Membership changes and failed transactions are
one line each. Nothing is logged per client command; client connections
and HTTP requests are logged at debug level, which C{[log] level} leaves
out by default.

Every module logs through C{Logger(observer=OBSERVER)}.

For log shippers, C{twistd --logger dhtwisted.logs.json_lines dht ...}
writes every event as one JSON object per line to standard output, with
those keys as fields (L{json_lines}).
"""

from __future__ import annotations

import sys
from typing import Optional

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    Logger,
    jsonFileLogObserver,
)

__all__ = ["LEVELS", "OBSERVER", "Refusals", "configure", "json_lines", "key_text"]

#: The levels C{[log] level} accepts.
LEVELS = ("debug", "info", "warn", "error", "critical")

_levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)


class _NodeTag:
    """
    Adds C{node} to the events of the process's node, then publishes them.
    """

    def __init__(self) -> None:
        self.nodes: set[str] = set()

    def __call__(self, event: LogEvent) -> None:
        if "node" not in event and len(self.nodes) == 1:
            event["node"] = next(iter(self.nodes))
        globalLogPublisher(event)


_tag = _NodeTag()

#: Where dhtwisted's loggers send their events.
OBSERVER = FilteringLogObserver(_tag, [_levels])

_log = Logger(observer=OBSERVER)


def configure(level: str, node: Optional[str] = None) -> None:
    """
    Log events of C{level} and above; C{node} is a node started in this
    process (events name it when it is the only one).
    """
    _levels.setLogLevelForNamespace("", LogLevel.levelWithName(level))
    if node is not None:
        _tag.nodes.add(node)


class Refusals:
    """
    The refused connections one node has logged: each host and kind of
    reason as a warning once, at debug after, so that a peer or client
    that keeps trying does not flood the log.

    :param hosts: most (host, kind) pairs remembered before starting over.
    """

    def __init__(self, hosts: int = 10_000) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._hosts = hosts

    def log(self, what: str, address: str, why: str, kind: str = "") -> None:
        """
        C{what} (C{"peer link from"}, ...) C{address} was refused, C{why};
        C{kind} (by default C{why}) says which refusals are the same.
        """
        seen = (address.rsplit(":", 1)[0], kind or why)
        if seen in self._seen:
            _log.debug("refused the {what} {address}: {why}", what=what, address=address,
                       why=why)
            return
        if len(self._seen) >= self._hosts:
            self._seen.clear()
        self._seen.add(seen)
        _log.warn("refused the {what} {address}: {why} (logged once for this host)",
                  what=what, address=address, why=why)


def json_lines() -> ILogObserver:
    """
    An observer writing each event as one line of JSON to standard output
    (for C{twistd --logger dhtwisted.logs.json_lines}).
    """
    return jsonFileLogObserver(sys.stdout, recordSeparator="")


def key_text(key: bytes) -> str:
    """
    A client key for a log line: UTF-8, other bytes escaped, at most 200
    characters.
    """
    text = key[:200].decode("utf-8", "backslashreplace")
    return text + "..." if len(key) > 200 else text
