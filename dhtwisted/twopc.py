# -*- test-case-name: tests.test_twopc -*-
"""
Two-phase commit: the participant's state (pure) and the coordinator.

A write command (C{SET}, C{DEL}, C{MSET}) becomes one transaction over every
replica of every key it touches. The coordinator asks each replica to
I{prepare} (lock the keys, stage the writes, vote); if every vote is yes it
picks a version newer than any the replicas hold and tells each to I{commit},
otherwise it tells each to I{abort}. The client hears C{ok} only after the
decision is commit.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .interfaces import IReplica
from .store import Record, Store
from .version import NO_VERSION, HybridClock

__all__ = [
    "Coordinator",
    "LocalReplica",
    "Participant",
    "TransactionFailed",
    "Vote",
]

Write = tuple[bytes, Optional[bytes]]

log = Logger()


class TransactionFailed(Exception):
    """
    A write was not committed; nothing of it was applied.

    :ivar reason: why, for the client (follows C{ERR}).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Vote:
    """
    A participant's answer to prepare.

    :ivar yes: whether it staged the writes and holds their locks.
    :ivar reason: why not, when C{yes} is false.
    :ivar conflict: the no is a lock conflict (worth retrying).
    :ivar max_version: the newest version it holds of the keys.
    :ivar existed: for each write, whether the key had a value.
    """

    yes: bool
    reason: str = ""
    conflict: bool = False
    max_version: bytes = NO_VERSION
    existed: tuple[bool, ...] = ()


@dataclass
class _Prepared:
    txid: str
    writes: list[Write]
    deadline: float
    participants: list[str] = field(default_factory=list)


class Participant:
    """
    The 2PC state of one node as a participant: locks and staged writes.

    Pure: the caller passes the time in.

    :param store: where committed writes go.
    :param clock: this node's hybrid clock, told of every committed version.
    """

    def __init__(self, store: Store, clock: HybridClock) -> None:
        self._store = store
        self._clock = clock
        self._locks: dict[bytes, str] = {}
        self._prepared: dict[str, _Prepared] = {}

    @property
    def locked_keys(self) -> int:
        """
        The number of keys locked by prepared transactions.
        """
        return len(self._locks)

    def prepare(
        self, txid: str, writes: list[Write], participants: list[str], deadline: float
    ) -> Vote:
        """
        Lock and stage C{writes} for C{txid}, unless another transaction
        holds a lock on one of their keys.
        """
        if txid in self._prepared:
            return self._vote_yes(self._prepared[txid].writes)
        for key, _ in writes:
            holder = self._locks.get(key)
            if holder is not None and holder != txid:
                return Vote(False, "conflict: key is locked by another write", conflict=True)
        for key, _ in writes:
            self._locks[key] = txid
        self._prepared[txid] = _Prepared(txid, list(writes), deadline, list(participants))
        return self._vote_yes(writes)

    def _vote_yes(self, writes: list[Write]) -> Vote:
        records = [self._store.get(key) for key, _ in writes]
        return Vote(
            True,
            max_version=max((r.version for r in records), default=NO_VERSION),
            existed=tuple(r.value is not None for r in records),
        )

    def commit(self, txid: str, version: bytes) -> bool:
        """
        Apply the writes of C{txid} at C{version}, release its locks.

        :return: whether C{txid} was prepared here.
        """
        txn = self._prepared.pop(txid, None)
        if txn is None:
            return False
        self._clock.observe(version)
        for key, value in txn.writes:
            self._store.apply(key, version, value)
        self._unlock(txn)
        return True

    def abort(self, txid: str) -> bool:
        """
        Drop the writes of C{txid}, release its locks.

        :return: whether C{txid} was prepared here.
        """
        txn = self._prepared.pop(txid, None)
        if txn is None:
            return False
        self._unlock(txn)
        return True

    def _unlock(self, txn: _Prepared) -> None:
        for key, _ in txn.writes:
            if self._locks.get(key) == txn.txid:
                del self._locks[key]

    def overdue(self, now: float) -> list[str]:
        """
        The transactions still undecided past their deadline.
        """
        return [t.txid for t in self._prepared.values() if t.deadline <= now]


@implementer(IReplica)
class LocalReplica:
    """
    This node as a replica of its own transactions and reads: direct calls,
    no network.
    """

    def __init__(self, participant: Participant, store: Store, deadline: Callable[[], float]):
        self._participant = participant
        self._store = store
        self._deadline = deadline

    def prepare(self, txid: str, writes: list[Write], participants: list[str]) -> Deferred[Vote]:
        """
        See L{IReplica.prepare}.
        """
        return succeed(self._participant.prepare(txid, writes, participants, self._deadline()))

    def commit(self, txid: str, version: bytes) -> Deferred[bool]:
        """
        See L{IReplica.commit}.
        """
        return succeed(self._participant.commit(txid, version))

    def abort(self, txid: str) -> Deferred[bool]:
        """
        See L{IReplica.abort}.
        """
        return succeed(self._participant.abort(txid))

    def read(self, keys: list[bytes]) -> Deferred[list[Record]]:
        """
        See L{IReplica.read}.
        """
        return succeed([self._store.get(key) for key in keys])


class Coordinator:
    """
    Runs this node's client commands against the replicas of their keys.

    :param node_id: this node's id, the prefix of its transaction ids.
    :param clock: this node's hybrid clock, for commit versions.
    :param reactor: for timers.
    :param replicas_for: a key to the ids of its replicas, in preference order.
    :param replica: a node id to that node as an L{IReplica}.
    :param rpc_timeout: seconds a replica has to answer each request.
    :param retries: how many times a write that met a lock conflict is tried again.
    """

    def __init__(
        self,
        node_id: str,
        clock: HybridClock,
        reactor: IReactorTime,
        replicas_for: Callable[[bytes], list[str]],
        replica: Callable[[str], IReplica],
        rpc_timeout: float = 5.0,
        retries: int = 3,
        rng: Optional[random.Random] = None,
    ) -> None:
        self._node_id = node_id
        self._clock = clock
        self._reactor = reactor
        self._replicas_for = replicas_for
        self._replica = replica
        self._timeout = rpc_timeout
        self._retries = retries
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._generation = int(reactor.seconds() * 1000)
        self.stats = {"commits": 0, "aborts": 0, "retries": 0}

    def _timed(self, d: Deferred) -> Deferred:
        return d.addTimeout(self._timeout, self._reactor)

    def _new_txid(self) -> str:
        return f"{self._node_id}:{self._generation}:{next(self._ids)}"

    def write(self, writes: Sequence[Write]) -> Deferred[list[bool]]:
        """
        Apply C{writes} (C{(key, value)} pairs, value C{None} to delete) on
        all replicas of their keys, or on none.

        :return: a Deferred firing, once the decision is commit, with whether
            each key had a value before; or failing with L{TransactionFailed}.
        """
        latest: dict[bytes, Optional[bytes]] = {}
        for key, value in writes:
            latest.pop(key, None)  # a key written twice keeps its last value
            latest[key] = value
        return Deferred.fromCoroutine(self._write(list(latest.items())))

    async def _write(self, writes: list[Write]) -> list[bool]:
        attempt = 0
        while True:
            txid = self._new_txid()
            plan = self._plan(writes)
            votes = await self._prepare(txid, writes, plan)
            if all(vote.yes for vote, _ in votes.values()):
                newest = max((vote.max_version for vote, _ in votes.values()), default=NO_VERSION)
                version = self._clock.next_after(newest)
                await self._decide(txid, plan, version)
                self.stats["commits"] += 1
                return self._existed(len(writes), votes)
            await self._decide(txid, plan, None)
            self.stats["aborts"] += 1
            noes = [vote for vote, _ in votes.values() if not vote.yes]
            if attempt < self._retries and all(vote.conflict for vote in noes):
                attempt += 1
                self.stats["retries"] += 1
                await deferLater(self._reactor, self._rng.uniform(0.001, 0.005 * 2**attempt))
                continue
            raise TransactionFailed(f"write aborted, nothing applied ({noes[0].reason})")

    def _plan(self, writes: list[Write]) -> dict[str, list[int]]:
        """
        Each replica's share of C{writes}: node id to indexes into C{writes}.
        """
        plan: dict[str, list[int]] = {}
        for index, (key, _) in enumerate(writes):
            for node in self._replicas_for(key):
                plan.setdefault(node, []).append(index)
        if not plan:
            raise TransactionFailed("no live replica for the key")
        return plan

    async def _prepare(
        self, txid: str, writes: list[Write], plan: dict[str, list[int]]
    ) -> dict[str, tuple[Vote, list[int]]]:
        participants = sorted(plan)
        calls = [
            self._timed(self._replica(node).prepare(txid, [writes[i] for i in indexes],
                                                    participants))
            for node, indexes in plan.items()
        ]
        results = await DeferredList(calls, consumeErrors=True)
        votes: dict[str, tuple[Vote, list[int]]] = {}
        for (node, indexes), (ok, result) in zip(plan.items(), results):
            if not ok:
                result = Vote(False, f"replica {node} did not answer: {_describe(result)}")
            votes[node] = (result, indexes)
        return votes

    async def _decide(
        self, txid: str, plan: dict[str, list[int]], version: Optional[bytes]
    ) -> None:
        """
        Tell every participant the decision: commit at C{version}, or abort
        if it is C{None}; wait for their answers or their timeouts.
        """
        calls = []
        for node in plan:
            replica = self._replica(node)
            calls.append(self._timed(
                replica.abort(txid) if version is None else replica.commit(txid, version)
            ))
        results = await DeferredList(calls, consumeErrors=True)
        for node, (ok, result) in zip(plan, results):
            if not ok:
                log.warn("replica {peer} did not take the decision on {txid}: {why}",
                         peer=node, txid=txid, why=_describe(result))

    @staticmethod
    def _existed(count: int, votes: dict[str, tuple[Vote, list[int]]]) -> list[bool]:
        existed = [False] * count
        for vote, indexes in votes.values():
            for index, flag in zip(indexes, vote.existed):
                existed[index] = existed[index] or flag
        return existed

    def read(self, keys: Sequence[bytes]) -> Deferred[list[Optional[bytes]]]:
        """
        The value of each of C{keys} (C{None} if missing): the newest version
        among the replicas that answer, trying them in preference order.
        """
        return Deferred.fromCoroutine(self._read(list(keys)))

    async def _read(self, keys: list[bytes]) -> list[Optional[bytes]]:
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(tuple(self._replicas_for(key)), []).append(index)
        values: list[Optional[bytes]] = [None] * len(keys)
        for nodes, indexes in groups.items():
            wanted = [keys[i] for i in indexes]
            records = await self._read_from(nodes, wanted)
            for index, record in zip(indexes, records):
                values[index] = record.value
        return values

    async def _read_from(self, nodes: tuple[str, ...], keys: list[bytes]) -> list[Record]:
        errors = []
        for node in nodes:
            try:
                return list(await self._timed(self._replica(node).read(keys)))
            except Exception as e:
                errors.append(f"{node}: {_describe(Failure(e))}")
        raise TransactionFailed("no replica answered the read (" + "; ".join(errors) + ")"
                                if errors else "no live replica for the key")


def _describe(failure: Failure) -> str:
    return failure.getErrorMessage() or failure.type.__name__
