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
from typing import Any, Callable, Optional, Sequence

from twisted.internet.defer import Deferred, DeferredList, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .interfaces import IReplica
from .store import MISSING, Record, Store
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


PREPARED = "prepared"
COMMITTED = "committed"
ABORTED = "aborted"
UNKNOWN = "unknown"


@dataclass
class _Prepared:
    txid: str
    writes: list[Write]
    deadline: float
    coordinator: str
    participants: list[str] = field(default_factory=list)
    priority: bytes = b""


@dataclass
class _Waiter:
    request: _Prepared
    answer: Callable[[Vote], None]
    until: float


class Participant:
    """
    The 2PC state of one node as a participant: locks, staged writes, and
    the outcomes of recent transactions (so that late or repeated messages
    change nothing, and peers resolving a transaction can ask).

    :param store: where committed writes go.
    :param clock: this node's hybrid clock, told of every committed version.
    :param now: the current time in seconds.
    :param keep: seconds an outcome is remembered.
    :param lock_wait: seconds a prepare may wait for a lock (see L{prepare}).
    """

    def __init__(self, store: Store, clock: HybridClock,
                 now: Callable[[], float] = lambda: 0.0, keep: float = 600.0,
                 lock_wait: float = 1.0) -> None:
        self._store = store
        self._clock = clock
        self._now = now
        self._keep = keep
        self._lock_wait = lock_wait
        self._locks: dict[bytes, str] = {}
        self._prepared: dict[str, _Prepared] = {}
        self._waiting: dict[str, _Waiter] = {}  # txid -> a prepare waiting for locks
        self._decided: dict[str, tuple[str, bytes, float]] = {}  # txid -> (state, version, when)

    @property
    def locked_keys(self) -> int:
        """
        The number of keys locked by prepared transactions.
        """
        return len(self._locks)

    @property
    def in_doubt(self) -> int:
        """
        The number of transactions prepared here and not yet decided.
        """
        return len(self._prepared)

    def prepare(
        self, txid: str, writes: list[Write], participants: list[str], deadline: float,
        coordinator: str = "", priority: bytes = b"",
        answer: Optional[Callable[[Vote], None]] = None,
    ) -> Optional[Vote]:
        """
        Lock and stage C{writes} for C{txid}, unless C{txid} was already
        decided or another transaction holds a lock on one of their keys.

        A lock conflict is settled by wait-die: a transaction older (smaller
        C{priority}) than the holder waits, if C{answer} is given, and
        C{answer} is called with its vote once the locks are free (or by
        L{give_up}); a younger one votes no at once. Waits only ever go from
        older to younger, so they cannot form a cycle.

        :return: the vote, or C{None} if it will come through C{answer}.
        """
        if txid in self._prepared:
            return self._vote_yes(self._prepared[txid].writes)
        if txid in self._decided or txid in self._waiting:
            return Vote(False, "transaction already decided or waiting")
        request = _Prepared(txid, list(writes), deadline, coordinator, list(participants),
                            priority)
        holder = self._holder(request)
        if holder is None:
            return self._lock(request)
        if answer is not None and priority and holder.priority and priority < holder.priority:
            self._waiting[txid] = _Waiter(request, answer, self._now() + self._lock_wait)
            return None
        return Vote(False, "conflict: key is locked by another write", conflict=True)

    def _holder(self, request: _Prepared) -> Optional[_Prepared]:
        for key, _ in request.writes:
            holder = self._locks.get(key)
            if holder is not None and holder != request.txid:
                return self._prepared[holder]
        return None

    def _lock(self, request: _Prepared) -> Vote:
        for key, _ in request.writes:
            self._locks[key] = request.txid
        self._prepared[request.txid] = request
        return self._vote_yes(request.writes)

    def expire_waiting(self, now: float) -> None:
        """
        Prepares that waited for a lock past C{lock_wait} vote no.
        """
        for txid in [t for t, w in self._waiting.items() if w.until <= now]:
            self.give_up(txid)

    def give_up(self, txid: str) -> None:
        """
        Stop C{txid} waiting for locks: it votes no.
        """
        waiter = self._waiting.pop(txid, None)
        if waiter is not None:
            waiter.answer(Vote(False, "conflict: waited too long for a lock", conflict=True))

    def _wake(self) -> None:
        """
        Give freed locks to the waiting transactions, oldest first; those
        now younger than a holder vote no.
        """
        answers = []
        for txid in sorted(self._waiting, key=lambda t: self._waiting[t].request.priority):
            waiter = self._waiting[txid]
            holder = self._holder(waiter.request)
            if holder is None:
                del self._waiting[txid]
                answers.append((waiter.answer, self._lock(waiter.request)))
            elif not waiter.request.priority < holder.priority:
                del self._waiting[txid]
                answers.append((waiter.answer, Vote(
                    False, "conflict: key is locked by another write", conflict=True)))
        # answer after the state settled: an answer may call back in here
        for answer, vote in answers:
            answer(vote)

    def _vote_yes(self, writes: list[Write]) -> Vote:
        records = [self._store.get(key) for key, _ in writes]
        return Vote(
            True,
            max_version=max((r.version for r in records), default=NO_VERSION),
            existed=tuple(r.value is not None for r in records),
        )

    def commit(self, txid: str, version: bytes, writes: Optional[list[Write]] = None) -> bool:
        """
        Apply the writes of C{txid} at C{version} and release its locks.
        C{writes}, when given, are applied even if C{txid} is not prepared
        here (any more): the decision was commit.

        :return: whether the transaction is now committed here.
        """
        txn = self._prepared.pop(txid, None)
        if txn is not None:
            self._unlock(txn)
            writes = txn.writes
        elif writes is None:
            return self._decided.get(txid, (UNKNOWN,))[0] == COMMITTED
        self._clock.observe(version)
        for key, value in writes:
            self._store.apply(key, version, value)
        self._decided[txid] = (COMMITTED, version, self._now())
        return True

    def abort(self, txid: str) -> bool:
        """
        Drop the writes of C{txid}, release its locks.

        :return: whether C{txid} was prepared here.
        """
        txn = self._prepared.pop(txid, None)
        if txn is None:
            self.give_up(txid)
            # remember it, so that a prepare arriving late is refused
            self._decided.setdefault(txid, (ABORTED, NO_VERSION, self._now()))
            return False
        self._unlock(txn)
        self._decided[txid] = (ABORTED, NO_VERSION, self._now())
        return True

    def _unlock(self, txn: _Prepared) -> None:
        for key, _ in txn.writes:
            if self._locks.get(key) == txn.txid:
                del self._locks[key]
        if self._waiting:
            self._wake()

    def status(self, txid: str) -> tuple[str, bytes]:
        """
        What this node knows of C{txid}: a state and, if committed, the version.
        """
        if txid in self._prepared:
            return (PREPARED, NO_VERSION)
        state, version, _ = self._decided.get(txid, (UNKNOWN, NO_VERSION, 0.0))
        return (state, version)

    def prune(self, now: float) -> None:
        """
        Forget outcomes older than C{keep}.
        """
        _forget_older(self._decided, now - self._keep, lambda entry: entry[2])

    def overdue(self, now: float) -> list[tuple[str, str, list[str]]]:
        """
        The transactions still undecided past their deadline, as
        C{(txid, coordinator, participants)}.
        """
        return [(t.txid, t.coordinator, t.participants)
                for t in self._prepared.values() if t.deadline <= now]


@implementer(IReplica)
class LocalReplica:
    """
    This node as a replica of its own transactions and reads: direct calls,
    no network.

    :param node_id: this node's id (the coordinator of what it prepares).
    :param deadline: when a transaction prepared now must be resolved by.
    """

    def __init__(self, node_id: str, participant: Participant, store: Store,
                 deadline: Callable[[], float]) -> None:
        self._node_id = node_id
        self._participant = participant
        self._store = store
        self._deadline = deadline

    def prepare(self, txid: str, writes: list[Write], participants: list[str],
                priority: bytes = b"") -> Deferred[Vote]:
        """
        See L{IReplica.prepare}.
        """
        waiting: Deferred[Vote] = Deferred()
        vote = self._participant.prepare(txid, writes, participants, self._deadline(),
                                         self._node_id, priority, waiting.callback)
        return waiting if vote is None else succeed(vote)

    def commit(self, txid: str, version: bytes,
               writes: Optional[list[Write]] = None) -> Deferred[bool]:
        """
        See L{IReplica.commit}.
        """
        return succeed(self._participant.commit(txid, version, writes))

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

    A write answers C{ok} only once every replica has confirmed the commit.
    A replica that did not confirm is sent the commit again, with the
    writes, until it does or leaves the cluster; the client hears that the
    outcome is not confirmed everywhere.

    :param node_id: this node's id, the prefix of its transaction ids.
    :param clock: this node's hybrid clock, for commit versions.
    :param reactor: for timers.
    :param replicas_for: a key to the ids of its replicas, in preference order.
    :param replica: a node id to that node as an L{IReplica}.
    :param rpc_timeout: seconds a replica has to answer each request.
    :param retries: how many times a write that met a lock conflict is tried again.
    :param is_member: whether a node is still a member, alive or not (a
        commit it did not confirm is sent again while it is).
    :param keep: seconds a decision is remembered for participants that ask.
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
        is_member: Callable[[str], bool] = lambda node: True,
        keep: float = 600.0,
    ) -> None:
        self._node_id = node_id
        self._clock = clock
        self._reactor = reactor
        self._replicas_for = replicas_for
        self._replica = replica
        self._timeout = rpc_timeout
        self._retries = retries
        self._rng = rng or random.Random()
        self._is_member = is_member
        self._keep = keep
        self._ids = itertools.count(1)
        self._generation = int(reactor.seconds() * 1000)
        self._undecided: set[str] = set()
        self._decisions: dict[str, tuple[Optional[bytes], float]] = {}
        self._redelivery: dict[tuple[str, str], Any] = {}  # (txid, node) -> delayed call
        self.stats = {"commits": 0, "aborts": 0, "retries": 0, "unconfirmed": 0}

    def _timed(self, d: Deferred) -> Deferred:
        if d.called:  # answered at once (this node): no timer to set
            return d
        return d.addTimeout(self._timeout, self._reactor)

    def _new_txid(self) -> str:
        return f"{self._node_id}:{self._generation}:{next(self._ids)}"

    def query(self, txid: str) -> tuple[str, bytes]:
        """
        The outcome of C{txid}, for a participant that heard no decision.
        A transaction still collecting votes is decided abort now, so that
        it cannot commit behind the participant's back.
        """
        if txid in self._undecided:
            self._undecided.discard(txid)
            self._decisions[txid] = (None, self._reactor.seconds())
        decision = self._decisions.get(txid)
        if decision is None:
            return (UNKNOWN, NO_VERSION)
        version = decision[0]
        return (ABORTED, NO_VERSION) if version is None else (COMMITTED, version)

    def prune(self) -> None:
        """
        Forget decisions older than C{keep}.
        """
        _forget_older(self._decisions, self._reactor.seconds() - self._keep,
                      lambda entry: entry[1])

    def stop(self) -> None:
        """
        Stop sending commits again.
        """
        for call in self._redelivery.values():
            if call.active():
                call.cancel()
        self._redelivery.clear()

    def write(self, writes: Sequence[Write]) -> Deferred[list[bool]]:
        """
        Apply C{writes} (C{(key, value)} pairs, value C{None} to delete) on
        all replicas of their keys, or on none.

        :return: a Deferred firing, once every replica has committed, with
            whether each key had a value before; or failing with
            L{TransactionFailed}.
        """
        latest: dict[bytes, Optional[bytes]] = {}
        for key, value in writes:
            latest.pop(key, None)  # a key written twice keeps its last value
            latest[key] = value
        return Deferred.fromCoroutine(self._write(list(latest.items())))

    async def _write(self, writes: list[Write]) -> list[bool]:
        attempt = 0
        priority = self._clock.next()  # kept across retries: the write ages
        while True:
            txid = self._new_txid()
            plan = self._plan(writes)
            self._undecided.add(txid)
            votes = await self._prepare(txid, writes, plan, priority)
            if txid in self._undecided and all(vote.yes for vote, _ in votes.values()):
                self._undecided.discard(txid)
                newest = max((vote.max_version for vote, _ in votes.values()), default=NO_VERSION)
                version = self._clock.next_after(newest)
                self._decisions[txid] = (version, self._reactor.seconds())
                unconfirmed = await self._commit(txid, version, writes, plan)
                if unconfirmed:
                    self.stats["unconfirmed"] += 1
                    raise TransactionFailed(
                        "write committed but not confirmed by replica "
                        + ", ".join(unconfirmed)
                        + "; it is being sent again and may already be visible"
                    )
                self.stats["commits"] += 1
                return self._existed(len(writes), votes)
            self._undecided.discard(txid)
            self._decisions[txid] = (None, self._reactor.seconds())
            await self._abort(txid, plan)
            self.stats["aborts"] += 1
            noes = [vote for vote, _ in votes.values() if not vote.yes]
            if not noes:
                raise TransactionFailed("write aborted, nothing applied (timed out)")
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
        self, txid: str, writes: list[Write], plan: dict[str, list[int]], priority: bytes
    ) -> dict[str, tuple[Vote, list[int]]]:
        participants = sorted(plan)
        calls = [
            self._timed(self._replica(node).prepare(txid, [writes[i] for i in indexes],
                                                    participants, priority))
            for node, indexes in plan.items()
        ]
        results = await DeferredList(calls, consumeErrors=True)
        votes: dict[str, tuple[Vote, list[int]]] = {}
        for (node, indexes), (ok, result) in zip(plan.items(), results):
            if not ok:
                result = Vote(False, f"replica {node} did not answer: {_describe(result)}")
            votes[node] = (result, indexes)
        return votes

    async def _commit(self, txid: str, version: bytes, writes: list[Write],
                      plan: dict[str, list[int]]) -> list[str]:
        """
        Tell every participant to commit; return those that did not confirm
        (they are sent the commit again, with the writes).
        """
        calls = [self._timed(self._replica(node).commit(txid, version)) for node in plan]
        results = await DeferredList(calls, consumeErrors=True)
        unconfirmed = []
        for (node, indexes), (ok, result) in zip(plan.items(), results):
            if not ok or not result:
                why = _describe(result) if not ok else "it had not prepared"
                log.warn("replica {peer} did not confirm commit {txid}: {why}",
                         peer=node, txid=txid, why=why)
                unconfirmed.append(node)
                self._redeliver(txid, version, node, [writes[i] for i in indexes])
        return unconfirmed

    def _redeliver(self, txid: str, version: bytes, node: str, writes: list[Write]) -> None:
        def again() -> None:
            del self._redelivery[(txid, node)]
            if not self._is_member(node):
                log.info("gave up sending commit {txid} to {peer}: no longer a member",
                         txid=txid, peer=node)
                return

            def done(confirmed: object) -> None:
                if not confirmed:
                    self._redeliver(txid, version, node, writes)

            def failed(f: Failure) -> None:
                self._redeliver(txid, version, node, writes)

            (
                self._timed(self._replica(node).commit(txid, version, writes))
                .addCallbacks(done, failed)
            )

        self._redelivery[(txid, node)] = self._reactor.callLater(self._timeout, again)

    async def _abort(self, txid: str, plan: dict[str, list[int]]) -> None:
        results = await DeferredList(
            [self._timed(self._replica(node).abort(txid)) for node in plan], consumeErrors=True
        )
        for node, (ok, result) in zip(plan, results):
            if not ok:
                # it will ask, and hear abort, when its transaction times out
                log.info("replica {peer} did not confirm abort {txid}: {why}",
                         peer=node, txid=txid, why=_describe(result))

    @staticmethod
    def _existed(count: int, votes: dict[str, tuple[Vote, list[int]]]) -> list[bool]:
        existed = [False] * count
        for vote, indexes in votes.values():
            for index, flag in zip(indexes, vote.existed):
                existed[index] = existed[index] or flag
        return existed

    def read(self, keys: Sequence[bytes], quorum: int = 1) -> Deferred[list[Optional[bytes]]]:
        """
        The value of each of C{keys} (C{None} if missing).

        The first C{quorum} replicas of each key are asked at once (this
        node first when it is one of them); a replica that fails, or a key
        that none of them holds, sends the question on to the next replica in
        preference order (a replica that has just joined may not have a key
        yet). The newest version seen wins.

        :raise TransactionFailed: if no replica answered.
        """
        return Deferred.fromCoroutine(self._read(list(keys), quorum))

    async def _read(self, keys: list[bytes], quorum: int) -> list[Optional[bytes]]:
        groups: dict[tuple[str, ...], list[int]] = {}
        me = self._node_id
        for index, key in enumerate(keys):
            nodes = self._replicas_for(key)
            if me in nodes and nodes[0] != me:
                # this node is a replica: ask it first, no network needed
                nodes = [me] + [n for n in nodes if n != me]
            groups.setdefault(tuple(nodes), []).append(index)
        values: list[Optional[bytes]] = [None] * len(keys)
        reads = [
            Deferred.fromCoroutine(self._read_from(nodes, [keys[i] for i in indexes], quorum))
            for nodes, indexes in groups.items()
        ]
        results = await DeferredList(reads, consumeErrors=True)
        for indexes, (ok, records) in zip(groups.values(), results):
            if not ok:
                records.raiseException()
            for index, record in zip(indexes, records):
                values[index] = record.value
        return values

    async def _read_from(self, nodes: tuple[str, ...], keys: list[bytes],
                         quorum: int) -> list[Record]:
        newest = [MISSING] * len(keys)
        answered = 0
        errors: list[str] = []
        position = 0
        while position < len(nodes):
            missing = [i for i, r in enumerate(newest) if r.version == NO_VERSION]
            if answered >= quorum and not missing:
                break
            ask = list(range(len(keys))) if answered < quorum else missing
            width = max(1, quorum - answered)
            batch = nodes[position : position + width]
            position += len(batch)
            results = await DeferredList(
                [self._timed(self._replica(node).read([keys[i] for i in ask])) for node in batch],
                consumeErrors=True,
            )
            for node, (ok, result) in zip(batch, results):
                if not ok:
                    errors.append(f"{node}: {_describe(result)}")
                    continue
                answered += 1
                for i, record in zip(ask, result):
                    if record.version > newest[i].version:
                        newest[i] = record
        if not answered:
            raise TransactionFailed(
                "no replica answered the read (" + "; ".join(errors) + ")"
                if errors else "no live replica for the key"
            )
        if errors and answered < len(nodes) // 2 + 1 and any(
                r.version == NO_VERSION for r in newest):
            # "missing" from a minority may only mean those replicas are new
            # to the key: say so rather than answer (nil) for a key that exists
            raise TransactionFailed(
                "key not found on the replicas that answered, and the others did not ("
                + "; ".join(errors) + ")"
            )
        return newest


def _describe(failure: Failure) -> str:
    if failure.check(TimeoutError):
        return "timed out"
    return failure.getErrorMessage() or failure.type.__name__


def _forget_older(entries: dict[str, Any], cutoff: float, when: Callable[[Any], float]) -> None:
    """
    Drop the entries older than C{cutoff}; they were inserted in time
    order, so the old ones come first.
    """
    old = []
    for txid, entry in entries.items():
        if when(entry) >= cutoff:
            break
        old.append(txid)
    for txid in old:
        del entries[txid]
