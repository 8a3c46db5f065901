# -*- test-case-name: tests.test_server -*-
"""
Writing to a TCP connection at once.

Twisted's TCP transport queues every write until the reactor's next turn:
it registers the socket for writability, waits for epoll to report it, sends,
and unregisters. For the many small writes of a busy node (a reply per
client, a frame per peer per turn) those extra system calls cost more than
the sending itself. L{write_now} sends at once when nothing is queued ahead
of the data, and queues only what the socket did not take.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

__all__ = ["write_now"]


def write_now(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}: sent at once on a plain TCP connection
    with nothing queued, else (or for what is left) as C{transport.write}
    does.
    """
    if (
        isinstance(transport, tcp.Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport.TLS
        and not transport.dataBuffer
        and not transport._tempDataBuffer
        and not transport._writeDisconnected
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent == len(data):
                return
            data = data[sent:]
        # a lost connection: the queued write lets the transport notice
    transport.write(data)
