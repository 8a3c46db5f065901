# -*- test-case-name: tests.test_cluster -*-
"""
A peer as a replica: the L{IReplica} calls as peer requests.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.defer import Deferred
from zope.interface import implementer

from .interfaces import IReplica
from .peer import PeerError, PeerProtocol
from .store import Record
from .twopc import Vote, Write
from .wire import Envelope, record_from_pb, vote_from_pb

__all__ = ["RemoteReplica", "fill_writes"]



def fill_writes(writes: list[Write], out: object) -> None:
    """
    Add C{writes} to a repeated C{Write} field.
    """
    for key, value in writes:
        w = out.add()  # type: ignore[attr-defined]
        w.key = key
        if value is None:
            w.delete = True
        else:
            w.value = value


def _expect(kind: str) -> Callable[[Envelope], Envelope]:
    def check(reply: Envelope) -> Envelope:
        got = reply.WhichOneof("body")
        if got != kind:
            raise PeerError(f"expected {kind}, got {got}")
        return reply

    return check


@implementer(IReplica)
class RemoteReplica:
    """
    Another node, reached over its peer link.

    :param node_id: this node's id (the coordinator).
    :param link: gets a ready link to the peer.
    """

    def __init__(self, node_id: str, link: Callable[[], Deferred[PeerProtocol]]) -> None:
        self._node_id = node_id
        self._link = link

    def _call(self, envelope: Envelope, kind: str) -> Deferred[Envelope]:
        return self._link().addCallback(lambda link: link.call(envelope)).addCallback(
            _expect(kind)
        )

    def prepare(self, txid: str, writes: list[Write], participants: list[str],
                priority: bytes = b"") -> Deferred[Vote]:
        """
        See L{IReplica.prepare}.
        """
        env = Envelope()
        prepare = env.prepare
        prepare.txid = txid
        prepare.coordinator = self._node_id
        prepare.priority = priority
        prepare.participants.extend(participants)
        fill_writes(writes, prepare.writes)

        return self._call(env, "vote").addCallback(lambda reply: vote_from_pb(reply.vote))

    def commit(self, txid: str, version: bytes,
               writes: Optional[list[Write]] = None) -> Deferred[bool]:
        """
        See L{IReplica.commit}.
        """
        env = Envelope()
        env.commit.txid = txid
        env.commit.version = version
        if writes is not None:
            fill_writes(writes, env.commit.writes)
        return self._call(env, "txn_status").addCallback(
            lambda reply: reply.txn_status.state == reply.txn_status.COMMITTED
        )

    def abort(self, txid: str) -> Deferred[bool]:
        """
        See L{IReplica.abort}.
        """
        env = Envelope()
        env.abort.txid = txid
        return self._call(env, "ack").addCallback(lambda _: True)

    def read(self, keys: list[bytes]) -> Deferred[list[Record]]:
        """
        See L{IReplica.read}.
        """
        return Deferred.fromCoroutine(self._read(keys))

    async def _read(self, keys: list[bytes]) -> list[Record]:
        # a peer answers at most half a frame of values: ask again for the rest
        got: list[Record] = []
        while len(got) < len(keys):
            env = Envelope()
            env.get.keys.extend(keys[len(got):])
            reply = await self._call(env, "get_reply")
            records = reply.get_reply.records
            if not records or len(records) > len(keys) - len(got):
                raise PeerError(f"asked {len(keys) - len(got)} keys, got {len(records)} records")
            got.extend(record_from_pb(r) for r in records)
        return got
