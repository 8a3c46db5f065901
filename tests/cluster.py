"""
A whole cluster in one process: real DHTNodes on one fake clock, joined by
a fake network of iosim pumps that can partition links and crash nodes.
"""

from __future__ import annotations

import random
from typing import Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError, TimeoutError
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim

from dhtwisted.config import Address, default_config
from dhtwisted.node import DHTNode
from dhtwisted.peer import PeerFactory, PeerProtocol

from .helpers import FakeClient


class FakeNetwork:
    """
    Links nodes by address with iosim pumps; faults are cut links and
    crashed nodes.
    """

    def __init__(self, clock: MemoryReactorClock) -> None:
        self.clock = clock
        self.nodes: dict[str, DHTNode] = {}
        self.pumps: list[tuple[str, str, iosim.IOPump]] = []
        self.cut: set[frozenset[str]] = set()
        self.down: set[str] = set()

    def connector(self, source: str):  # type: ignore[no-untyped-def]
        """
        The connect function for the node C{source}.
        """

        def connect(address: str, factory: PeerFactory) -> Deferred[PeerProtocol]:
            node = self.nodes.get(address)
            if node is None or node.node_id in self.down:
                return fail(ConnectionRefusedError(address))
            if frozenset((source, node.node_id)) in self.cut:
                return fail(TimeoutError(address))
            server = node.factory.buildProtocol(None)
            client = factory.buildProtocol(None)
            pump = iosim.connect(server, iosim.makeFakeServer(server), client,
                                 iosim.makeFakeClient(client), greet=False, clock=self.clock)
            self.pumps.append((source, node.node_id, pump))
            return succeed(client)

        return connect

    def _blocked(self, a: str, b: str) -> bool:
        return a in self.down or b in self.down or frozenset((a, b)) in self.cut

    def flush(self) -> None:
        """
        Move bytes over every working link until none moves.
        """
        for _ in range(10000):
            moved = False
            for a, b, pump in list(self.pumps):
                if not self._blocked(a, b) and pump.pump():
                    moved = True
            self.pumps = [p for p in self.pumps
                          if not (p[2].clientIO.disconnected and p[2].serverIO.disconnected)]
            if not moved:
                return
        raise AssertionError("the network never went quiet")

    def crash(self, node_id: str) -> None:
        """
        Stop a node abruptly: its peers see their links reset.
        """
        self.down.add(node_id)
        for a, b, pump in list(self.pumps):
            if node_id in (a, b):
                for io in (pump.clientIO, pump.serverIO):
                    if not io.disconnected:
                        io.disconnected = True
                        io.reportDisconnect()
        self.pumps = [p for p in self.pumps if node_id not in p[:2]]


class Cluster:
    """
    C{n} nodes, ids C{n0..}, addresses 127.0.0.1:9000.., ring ids spread
    evenly, every node but the first joining through the first.
    """

    def __init__(self, n: int, start: bool = True, **settings: object) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(1_000_000)
        self.net = FakeNetwork(self.clock)
        self.settings = settings
        self.nodes: list[DHTNode] = []
        self.n = n
        for i in range(n):
            self.add_node(i, start=start)

    def add_node(self, i: int, start: bool = True, seed: int = 0) -> DHTNode:
        """
        Make node C{i} (and start it).
        """
        base = default_config()
        ring_size = int(self.settings.get("ring_size", base.ring_size))  # type: ignore[call-overload]
        address = Address("127.0.0.1", 9000 + i)
        config = base.replace(
            node_id=f"n{i}", listen=address, advertise=address,
            ring_id=(i * ring_size // max(self.n, 1)) % ring_size,
            seeds=(Address("127.0.0.1", 9000 + seed),) if i != seed else (),
            **self.settings,
        )
        node = DHTNode(config, self.clock, connect=self.net.connector(f"n{i}"),
                       rng=random.Random(i))
        self.net.nodes[str(address)] = node
        if i < len(self.nodes):
            self.nodes[i] = node
        else:
            self.nodes.append(node)
        if start:
            node.startService()
        return node

    def run(self, seconds: float, step: float = 0.1) -> None:
        """
        Let C{seconds} of fake time pass, moving bytes at every step.
        """
        self.net.flush()
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)
            self.net.flush()

    def live_views(self) -> dict[str, list[str]]:
        """
        Each running node's list of live members.
        """
        return {n.node_id: [m.node_id for m in n.membership.live()] for n in self.nodes
                if n.node_id not in self.net.down and n.running}

    def client(self, i: int) -> "ClusterClient":
        """
        A text client of node C{i}.
        """
        return ClusterClient(self, self.nodes[i])

    def holders(self, key: bytes) -> dict[str, Optional[bytes]]:
        """
        Which running nodes hold a record of C{key}, with its value.
        """
        out = {}
        for node in self.nodes:
            if node.node_id in self.net.down:
                continue
            record = node.store.get(key)
            if record.version:
                out[node.node_id] = record.value
        return out


class ClusterClient(FakeClient):
    """
    A text client whose commands run the cluster until they are answered.
    """

    def __init__(self, cluster: Cluster, node: DHTNode) -> None:
        super().__init__(node)
        self.cluster = cluster

    def command(self, line: bytes, within: float = 30.0) -> bytes:
        """
        Send one command line and run the cluster until a reply comes.
        """
        self.protocol.dataReceived(line + b"\n")
        waited = 0.0
        self.cluster.net.flush()
        while not self.transport.value() and waited < within:
            self.cluster.clock.advance(0.01)
            self.cluster.net.flush()
            waited += 0.01
        return self.take()
