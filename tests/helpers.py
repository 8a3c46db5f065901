"""
Shared test helpers: a node with no network, clients on StringTransports.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from dhtwisted.config import default_config
from dhtwisted.node import DHTNode
from dhtwisted.server import NodeProtocol


def make_node(clock: Optional[Clock] = None, **settings: object) -> DHTNode:
    """
    A node with default settings changed by C{settings}, on C{clock}, not
    started (nothing listens).
    """
    config = default_config().replace(**settings) if settings else default_config()
    return DHTNode(config, clock or Clock())


class FakeClient:
    """
    A client connected to a node's factory through a StringTransport.
    """

    def __init__(self, node: DHTNode) -> None:
        self.transport = StringTransportWithDisconnection()
        self.protocol: NodeProtocol = node.factory.buildProtocol(None)
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes, bytewise: bool = False) -> bytes:
        """
        Send C{data} (in one piece, or one byte at a time) and return what
        the node answered since the last call.
        """
        if bytewise:
            for i in range(len(data)):
                self.protocol.dataReceived(data[i : i + 1])
        else:
            self.protocol.dataReceived(data)
        return self.take()

    def take(self) -> bytes:
        """
        What the node wrote since the last call.
        """
        out = self.transport.value()
        self.transport.clear()
        return out

    @property
    def closed(self) -> bool:
        """
        Whether the node closed (or is closing) the connection.
        """
        return bool(self.transport.disconnecting) or not self.transport.connected


class FakeTime:
    """
    A time function whose value the test sets.
    """

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
