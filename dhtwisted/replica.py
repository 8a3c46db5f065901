# -*- test-case-name: tests.test_cluster -*-
"""
A peer as a replica: the L{IReplica} calls as peer requests.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from .interfaces import IReplica
from .peer import Answer, PeerError, PeerProtocol
from .store import Record
from .twopc import Write
from .wire import Envelope, TxnStatus, record_from_pb, vote_from_pb, writes_to_pb

__all__ = ["RemoteReplica"]

@implementer(IReplica)
class RemoteReplica:
    """
    Another node, reached over its peer link. Its answers come within the
    link's RPC timeout (see L{PeerProtocol.request}).

    :param node_id: this node's id (the coordinator).
    :param ready: the ready link to the peer, if there is one.
    :param dial: a Deferred link to the peer, for when there is none.
    """

    def __init__(self, node_id: str, ready: Callable[[], Optional[PeerProtocol]],
                 dial: Callable[[], Deferred[PeerProtocol]]) -> None:
        self._node_id = node_id
        self._ready = ready
        self._dial = dial

    def _send(self, envelope: Envelope, kind: str, convert: Callable[[Envelope], Any],
              answer: Answer) -> None:
        """
        Send C{envelope}; answer C{convert} of a reply of C{kind}.
        """
        def got(reply: Any) -> None:
            if isinstance(reply, Exception):
                answer(reply)
            elif reply.WhichOneof("body") != kind:
                answer(PeerError(f"expected {kind}, got {reply.WhichOneof('body')}"))
            else:
                answer(convert(reply))

        link = self._ready()
        if link is not None:
            link.request(envelope, got)
            return

        def failed(f: Failure) -> None:
            answer(f.value)

        self._dial().addCallbacks(lambda ready: ready.request(envelope, got), failed)

    def prepare(self, txid: str, writes: list[Write], participants: list[str],
                priority: bytes, answer: Answer, partial: bool = False) -> None:
        """
        See L{IReplica.prepare}.
        """
        env = Envelope()
        prepare = env.prepare
        prepare.txid = txid
        prepare.coordinator = self._node_id
        prepare.priority = priority
        prepare.participants.extend(participants)
        prepare.partial = partial
        writes_to_pb(writes, prepare.writes)
        self._send(env, "vote", _vote, answer)

    def commit(self, txid: str, version: bytes, writes: Optional[list[Write]],
               answer: Answer, skip: Sequence[bytes] = ()) -> None:
        """
        See L{IReplica.commit}.
        """
        env = Envelope()
        env.commit.txid = txid
        env.commit.version = version
        if writes is not None:
            writes_to_pb(writes, env.commit.writes)
        if skip:
            env.commit.skip.extend(skip)
        self._send(env, "txn_status", _committed, answer)

    def abort(self, txid: str, answer: Answer) -> None:
        """
        See L{IReplica.abort}.
        """
        env = Envelope()
        env.abort.txid = txid
        self._send(env, "ack", _true, answer)

    def read(self, keys: list[bytes], answer: Answer) -> None:
        """
        See L{IReplica.read}. A peer answers at most half a frame of
        values: the rest is asked for again.
        """
        got: list[Record] = []

        def ask() -> None:
            env = Envelope()
            env.get.keys.extend(keys[len(got):] if got else keys)
            self._send(env, "get_reply", _records, more)

        def more(records: Any) -> None:
            if isinstance(records, Exception):
                answer(records)
                return
            wanted = len(keys) - len(got)
            if not records or len(records) > wanted:
                answer(PeerError(f"asked {wanted} keys, got {len(records)} records"))
                return
            got.extend(record_from_pb(r) for r in records)
            if len(got) < len(keys):
                ask()
            else:
                answer(got)

        ask()


def _vote(reply: Envelope) -> Any:
    return vote_from_pb(reply.vote)


def _committed(reply: Envelope) -> bool:
    return reply.txn_status.state == TxnStatus.COMMITTED


def _true(reply: Envelope) -> bool:
    return True


def _records(reply: Envelope) -> Any:
    return reply.get_reply.records
