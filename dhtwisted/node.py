# -*- test-case-name: tests.test_node -*-
"""
A dhtwisted node: builds its parts from a L{NodeConfig} and an injected
reactor, and serves clients on its one port.

Until the cluster arrives, the ring holds this node alone, so every command
takes the same path it will take in a cluster: the coordinator runs two-phase
commit over the key's replicas, here only this node.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from . import __version__
from .commands import Commands
from .config import Address, NodeConfig
from .interfaces import IReplica
from .ring import Ring, node_tokens
from .server import NodeFactory
from .store import Store
from .twopc import Coordinator, LocalReplica, Participant
from .version import HybridClock, node_tag

__all__ = ["DHTNode"]

log = Logger()


class DHTNode(MultiService):
    """
    One node of the cluster.

    :param config: its settings.
    :param reactor: the reactor it listens and keeps time with.
    """

    def __init__(self, config: NodeConfig, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.node_id = config.node_id
        self.started_at = reactor.seconds()
        self.store = Store()
        self.clock = HybridClock(reactor.seconds, node_tag(config.node_id))
        self.participant = Participant(self.store, self.clock)
        self.tokens = node_tokens(config.node_id, config.ring_id, config.vnodes, config.ring_size)
        self.ring = Ring({self.node_id: self.tokens}, config.ring_size)
        self._local = LocalReplica(
            self.participant, self.store, lambda: reactor.seconds() + config.txn_timeout
        )
        self.coordinator = Coordinator(
            self.node_id, self.clock, reactor, self.replicas_for, self.replica,
            rpc_timeout=config.rpc_timeout,
        )
        self.commands = Commands(self, config.max_key, config.max_value)
        self.factory = NodeFactory(
            self.commands,
            max_line=config.max_line,
            max_clients=config.max_clients,
            max_pipeline=config.max_pipeline,
        )
        self.port: Optional[IListeningPort] = None
        self.address: Optional[Address] = None

    # -- service

    def privilegedStartService(self) -> None:
        """
        Listen on the configured address; raise at once if that fails, so
        that twistd stops with the reason.
        """
        listen = self.config.listen
        endpoint_type = TCP6ServerEndpoint if ":" in listen.host else TCP4ServerEndpoint
        endpoint = endpoint_type(self.reactor, listen.port, interface=listen.host)
        outcome: list[Any] = []
        endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise RuntimeError(f"listening on {listen} did not finish at once")
        result = outcome[0]
        if not IListeningPort.providedBy(result):
            result.raiseException()
        self.port = result
        host = result.getHost()
        self.address = Address(listen.host, host.port)
        super().privilegedStartService()

    def startService(self) -> None:
        """
        Start serving.
        """
        if self.port is None:
            self.privilegedStartService()
        super().startService()
        log.info(
            "dht node {node_id} listening on {address}",
            node_id=self.node_id,
            address=str(self.address),
        )

    def stopService(self) -> Deferred[None]:
        """
        Stop listening and stop the parts.
        """
        port, self.port = self.port, None
        d = maybeDeferred(super().stopService)
        if port is not None:
            d.addCallback(lambda _: port.stopListening())
        return d

    # -- the cluster as the commands see it

    def replicas_for(self, key: bytes) -> list[str]:
        """
        The ids of C{key}'s replicas, in preference order.
        """
        return self.ring.preference_list(key, self.config.replicas)

    def replica(self, node_id: str) -> IReplica:
        """
        The node C{node_id} as a replica.
        """
        if node_id == self.node_id:
            return self._local
        raise KeyError(f"unknown node {node_id}")

    def read(self, keys: Sequence[bytes]) -> Deferred[list[Optional[bytes]]]:
        """
        See L{dhtwisted.commands.NodeAPI.read}.
        """
        return self.coordinator.read(keys)

    def write(self, writes: Sequence[tuple[bytes, Optional[bytes]]]) -> Deferred[list[bool]]:
        """
        See L{dhtwisted.commands.NodeAPI.write}.
        """
        return self.coordinator.write(writes)

    def info(self, section: Optional[str]) -> list[str]:
        """
        The C{INFO} reply: sections of C{name:value} lines, as Redis has.
        """
        now = self.reactor.seconds()
        sections = {
            "server": [
                ("dhtwisted_version", __version__),
                ("node_id", self.node_id),
                ("address", str(self.address or self.config.listen)),
                ("process_id", os.getpid()),
                ("python_version", sys.version.split()[0]),
                ("uptime_in_seconds", int(now - self.started_at)),
            ],
            "clients": [
                ("connected_clients", self.factory.clients),
                ("maxclients", self.config.max_clients),
            ],
            "keyspace": [
                ("keys", self.store.live_keys),
                ("records", len(self.store)),
                ("tombstones", len(self.store) - self.store.live_keys),
                ("locked_keys", self.participant.locked_keys),
            ],
            "cluster": [
                ("members", len(self.ring)),
                ("replicas", self.config.replicas),
                ("ring_size", self.config.ring_size),
                ("tokens", ",".join(map(str, self.tokens))),
            ],
            "stats": [
                ("total_commands_processed", sum(self.commands.calls.values())),
                ("total_error_replies", self.commands.errors),
                ("txn_commits", self.coordinator.stats["commits"]),
                ("txn_aborts", self.coordinator.stats["aborts"]),
                ("txn_retries", self.coordinator.stats["retries"]),
            ]
            + [(f"cmd_{name.lower()}", n) for name, n in sorted(self.commands.calls.items())],
        }
        if section not in (None, "all", "everything", "default"):
            sections = {k: v for k, v in sections.items() if k == section}
        # no blank line between sections: in the text protocol a blank line
        # ends the reply
        lines = []
        for name, pairs in sections.items():
            lines.append(f"# {name.capitalize()}")
            lines.extend(f"{key}:{value}" for key, value in pairs)
        return lines

    def members(self) -> list[str]:
        """
        The C{MEMBERS} reply: one line per member as this node sees it.
        """
        address = str(self.address or self.config.listen)
        tokens = ",".join(map(str, self.tokens))
        return [f"{self.node_id} {address} ring_ids={tokens} status=alive heartbeat_age=0.0"]
