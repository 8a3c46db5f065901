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
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Container, NamedTuple, Optional, Sequence

from twisted.internet.defer import TimeoutError
from twisted.logger import Logger
from zope.interface import implementer

from .logs import OBSERVER, key_text
from .interfaces import IReplica
from .store import ABSENT, MISSING, Store
from .version import NO_VERSION, HybridClock

__all__ = [
    "PENDING",
    "Coordinator",
    "LocalReplica",
    "Outcome",
    "Participant",
    "TransactionFailed",
    "Vote",
]

Write = tuple[bytes, Optional[bytes]]
#: A callback that gets a result, or an C{Exception} in its place.
Answer = Callable[[Any], None]

log = Logger(observer=OBSERVER)


class TransactionFailed(Exception):
    """
    A write was not committed; nothing of it was applied.

    :ivar reason: why, for the client (follows C{ERR}).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Vote(NamedTuple):
    """
    A participant's answer to prepare. (A named tuple: one is made per
    replica per write.)

    :ivar yes: whether it staged the writes and holds their locks.
    :ivar reason: why not, when C{yes} is false.
    :ivar conflict: the no is a lock conflict (worth retrying).
    :ivar max_version: the newest version it holds of the keys.
    :ivar existed: for each write, whether the key had a value.
    :ivar skipped: the writes (indexes) it did not stage, their keys being
        locked by other writes, when it was asked to stage what it could
        (see L{Participant.prepare}).
    """

    yes: bool
    reason: str = ""
    conflict: bool = False
    max_version: bytes = NO_VERSION
    existed: tuple[bool, ...] = ()
    skipped: tuple[int, ...] = ()


PREPARED = "prepared"
COMMITTED = "committed"
ABORTED = "aborted"
UNKNOWN = "unknown"


class Outcome(NamedTuple):
    """
    What a node knows of a transaction.

    :ivar state: L{PREPARED}, L{COMMITTED}, L{ABORTED} or L{UNKNOWN}.
    :ivar version: the commit's version, if committed.
    :ivar skip: the keys the commit left out (their writes were set
        aside, to be tried again in another transaction).
    """

    state: str
    version: bytes = NO_VERSION
    skip: tuple[bytes, ...] = ()


class _Prepared:
    __slots__ = ("txid", "writes", "keys", "deadline", "coordinator", "participants",
                 "priority", "partial", "skipped")

    def __init__(self, txid: str, writes: list[Write], deadline: float, coordinator: str,
                 participants: list[str], priority: bytes, partial: bool) -> None:
        self.txid = txid
        self.writes = writes
        self.keys = [write[0] for write in writes]
        self.deadline = deadline
        self.coordinator = coordinator
        self.participants = participants
        self.priority = priority
        self.partial = partial
        self.skipped: tuple[int, ...] = ()  # writes not staged: see Participant.prepare


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
        # txid -> (state, version, when, keys the commit left out)
        self._decided: dict[str, tuple[str, bytes, float, tuple[bytes, ...]]] = {}

    @property
    def store(self) -> Store:
        """
        Where committed writes go.
        """
        return self._store

    def write_alone(self, writes: list[Write]) -> Optional[list[bool]]:
        """
        Commit C{writes} here at once, for a transaction whose only
        participant is this node: with nobody to vote with, prepare and
        commit are one step. Nothing is recorded (nobody will ask).

        :return: whether each key had a value before; C{None}, changing
            nothing, if a key is locked (the write must queue as usual).
        """
        locks = self._locks
        if locks:
            for key, _ in writes:
                if key in locks:
                    return None
        put = self._store.put
        version = self._clock.next()
        existed = []
        for key, value in writes:
            held = put(key, version, value)
            if held is None:
                held, version = self._put_past(key, value)
            existed.append(held)
        return existed

    def _put_past(self, key: bytes, value: Optional[bytes]) -> tuple[bool, bytes]:
        """
        Put C{value} at a version past the one held for C{key}: that one came
        from a clock ahead of this node's (observed since, so rare).

        :return: whether the key had a value before, and the version used.
        """
        version = self._clock.next_after(self._store.version_of(key))
        return bool(self._store.put(key, version, value)), version

    def write_each(self, writes: Sequence[Write], busy: Container[bytes]) -> int:
        """
        Commit the first of C{writes} here at once, each alone in one step
        as L{write_alone} does, in order; stop at the first whose key is
        locked or in C{busy}.

        :return: how many were committed.
        """
        locks = self._locks
        count = len(writes)
        if locks or busy:
            for index, (key, _) in enumerate(writes):
                if key in locks or key in busy:
                    count = index
                    break
            writes = writes[:count]
        if count:
            put = self._store.put
            versions = self._clock.next_run(count)  # (one look at the time)
            for index, (key, value) in enumerate(writes):
                if put(key, versions[index], value) is None:
                    self._put_past(key, value)
        return count

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
        answer: Optional[Callable[[Vote], None]] = None, partial: bool = False,
    ) -> Optional[Vote]:
        """
        Lock and stage C{writes} for C{txid}, unless C{txid} was already
        decided or another transaction holds a lock on one of their keys.

        A lock conflict is settled by wait-die: a transaction older (smaller
        C{priority}) than the holder waits, if C{answer} is given, and
        C{answer} is called with its vote once the locks are free (or by
        L{give_up}); a younger one votes no at once. Waits only ever go from
        older to younger, so they cannot form a cycle.

        With C{partial} (a transaction of several clients' commands), a
        transaction older than some holder of its keys waits; else the
        writes whose keys are free are locked and staged and the vote is
        yes, naming the others in C{skipped}: the coordinator commits
        without them (and the commands they belong to), and tries those
        again. It votes no only if every key is locked.

        :return: the vote, or C{None} if it will come through C{answer}.
        """
        if txid in self._prepared:
            return self._vote_yes(self._prepared[txid])
        if txid in self._decided or txid in self._waiting:
            return Vote(False, "transaction already decided or waiting")
        request = _Prepared(txid, list(writes), deadline, coordinator, list(participants),
                            priority, partial)
        holder = self._holder(request)
        if holder is None:
            return self._lock(request)
        if answer is not None and self._waits_for(request, holder):
            self._waiting[txid] = _Waiter(request, answer, self._now() + self._lock_wait)
            return None
        return self._die(request)

    def _waits_for(self, request: _Prepared, holder: _Prepared) -> bool:
        """
        Whether C{request}, which conflicts with C{holder} (the first
        holder of its keys), is to wait: it is older than a holder, the
        first (or, if C{partial}, any).
        """
        priority = request.priority
        if not priority:
            return False
        if holder.priority and priority < holder.priority:
            return True
        if not request.partial:
            return False
        get = self._locks.get
        prepared = self._prepared
        txid = request.txid
        for key in request.keys:
            other = get(key, txid)
            if other != txid and priority < prepared[other].priority:
                return True
        return False

    def _die(self, request: _Prepared) -> Vote:
        """
        C{request} conflicts and does not wait: it votes no, or, if
        C{partial}, stages what it can.
        """
        vote = self._lock_free(request) if request.partial else None
        return vote or Vote(False, "conflict: key is locked by another write", conflict=True)

    def _holder(self, request: _Prepared) -> Optional[_Prepared]:
        locks = self._locks
        if not locks or locks.keys().isdisjoint(request.keys):
            return None
        get = locks.get
        txid = request.txid
        for key in request.keys:
            holder = get(key)
            if holder is not None and holder != txid:
                return self._prepared[holder]
        return None

    def _lock(self, request: _Prepared) -> Vote:
        self._locks.update(dict.fromkeys(request.keys, request.txid))
        self._prepared[request.txid] = request
        return self._vote_yes(request)

    def _lock_free(self, request: _Prepared) -> Optional[Vote]:
        """
        Lock and stage those of C{request}'s writes whose keys are free
        (see L{prepare}), if any are.
        """
        locks = self._locks
        txid = request.txid
        skipped = [index for index, key in enumerate(request.keys)
                   if locks.get(key, txid) != txid]
        if len(skipped) == len(request.writes):
            return None
        request.skipped = tuple(skipped)
        aside = set(skipped)
        locks.update(dict.fromkeys(
            [key for index, key in enumerate(request.keys) if index not in aside], txid))
        self._prepared[txid] = request
        return self._vote_yes(request)

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
        that no longer wait (see L{_waits_for}; a partial one waits for one
        release only) vote no, or stage what they can.
        """
        answers = []
        for txid in sorted(self._waiting, key=lambda t: self._waiting[t].request.priority):
            waiter = self._waiting[txid]
            holder = self._holder(waiter.request)
            if holder is None:
                del self._waiting[txid]
                answers.append((waiter.answer, self._lock(waiter.request)))
            elif waiter.request.partial or not self._waits_for(waiter.request, holder):
                # (a partial one waits once: while it waits, younger writes
                # may lock its free keys)
                del self._waiting[txid]
                answers.append((waiter.answer, self._die(waiter.request)))
        # answer after the state settled: an answer may call back in here
        for answer, vote in answers:
            answer(vote)

    def _vote_yes(self, request: _Prepared) -> Vote:
        newest, existed = self._store.survey(request.keys)
        return Vote(True, max_version=newest, existed=existed, skipped=request.skipped)

    def commit(self, txid: str, version: bytes, writes: Optional[list[Write]] = None,
               skip: Sequence[bytes] = ()) -> bool:
        """
        Apply the writes of C{txid} at C{version}, but those of the keys in
        C{skip}, and release its locks. C{writes}, when given, are applied
        even if C{txid} is not prepared here (any more): the decision was
        commit.

        :return: whether the transaction is now committed here.
        """
        txn = self._prepared.pop(txid, None)
        aside = set(skip)
        if txn is not None:
            self._unlock(txn)
            writes = txn.writes
            aside.update([writes[index][0] for index in txn.skipped])
        elif writes is None:
            return self._decided.get(txid, (UNKNOWN,))[0] == COMMITTED
        if aside:
            writes = [write for write in writes if write[0] not in aside]
        self._clock.observe(version)
        self._store.put_all(writes, version)
        self._decided[txid] = (COMMITTED, version, self._now(), tuple(skip))
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
            self._decided.setdefault(txid, (ABORTED, NO_VERSION, self._now(), ()))
            return False
        self._unlock(txn)
        self._decided[txid] = (ABORTED, NO_VERSION, self._now(), ())
        return True

    def _unlock(self, txn: _Prepared) -> None:
        keys = txn.keys
        if txn.skipped:
            aside = set(txn.skipped)
            keys = [key for index, key in enumerate(keys) if index not in aside]
        # it holds every key it did not skip (none is locked twice): let go
        # of them at C speed (a key written twice is let go once)
        deque(map(self._locks.pop, keys, itertools.repeat(None, len(keys))), 0)
        if self._waiting:
            self._wake()

    def status(self, txid: str) -> Outcome:
        """
        What this node knows of C{txid}.
        """
        if txid in self._prepared:
            return Outcome(PREPARED)
        decided = self._decided.get(txid)
        if decided is None:
            return Outcome(UNKNOWN)
        return Outcome(decided[0], decided[1], decided[3])

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
    This node as a replica of its own transactions and reads: direct calls
    that answer at once (or, for a prepare waiting for a lock, later).

    :param node_id: this node's id (the coordinator of what it prepares).
    :param deadline: when a transaction prepared now must be resolved by.
    """

    def __init__(self, node_id: str, participant: Participant,
                 deadline: Callable[[], float]) -> None:
        self._node_id = node_id
        self._participant = participant
        self._store = participant.store
        self._deadline = deadline

    def prepare(self, txid: str, writes: list[Write], participants: list[str],
                priority: bytes, answer: Answer, partial: bool = False) -> None:
        """
        See L{IReplica.prepare}.
        """
        vote = self._participant.prepare(txid, writes, participants, self._deadline(),
                                         self._node_id, priority, answer, partial)
        if vote is not None:
            answer(vote)

    def commit(self, txid: str, version: bytes, writes: Optional[list[Write]],
               answer: Answer, skip: Sequence[bytes] = ()) -> None:
        """
        See L{IReplica.commit}.
        """
        answer(self._participant.commit(txid, version, writes, skip))

    def abort(self, txid: str, answer: Answer) -> None:
        """
        See L{IReplica.abort}.
        """
        answer(self._participant.abort(txid))

    def read(self, keys: list[bytes], answer: Answer) -> None:
        """
        See L{IReplica.read}.
        """
        get = self._store.get
        answer([get(key) for key in keys])


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


#: What L{Coordinator.write} and L{Coordinator.read} return when the answer
#: comes later, through their C{done} callable.
PENDING: Any = _Pending()


class Coordinator:
    """
    Runs this node's client commands against the replicas of their keys.

    A write answers C{ok} only once every replica has confirmed the commit.
    A replica that did not confirm is sent the commit again, with the
    writes, until it does or leaves the cluster; the client hears that the
    outcome is not confirmed everywhere.

    Reads and writes take a C{done} callable rather than returning a
    Deferred: they return their result at once when they can (this node is
    the only replica a write needs, or holds what a read asks), else
    L{PENDING}, and C{done} gets the result or a L{TransactionFailed} later.

    :param node_id: this node's id, the prefix of its transaction ids.
    :param clock: this node's hybrid clock, for commit versions.
    :param reactor: for timers.
    :param replicas_for: a key to the ids of its replicas, in preference order.
    :param replica: a node id to that node as an L{IReplica} (which must
        answer every call within the RPC timeout).
    :param rpc_timeout: seconds between sending an unconfirmed commit again.
    :param retries: how many times a write that met a lock conflict is tried again.
    :param retry_for: seconds after its start a write is no longer tried again.
    :param group_bytes: the most bytes of keys and values gathered into one
        transaction (see L{hold}) ...
    :param group_size: ... and the most writes.
    :param max_active: the most transactions this coordinator starts
        while as many are in flight: writes that come meanwhile are
        gathered (see L{hold}) and start together when one ends, or after
        C{max_wait} seconds (a replica that is slow to answer holds its
        transactions in flight until it times out), or once they fill a
        transaction. Under load this makes fewer, larger transactions
        (group commit); a lone write still starts at once. (Retries of a
        failed transaction's writes start at once.)
    :param max_wait: see C{max_active}.
    :param is_member: whether a node is still a member, alive or not (a
        commit it did not confirm is sent again while it is).
    :param keep: seconds a decision is remembered for participants that ask.
    :param local: this node's participant, for writes only this node holds
        and reads it can answer itself.
    :param alone: whether this node is now the only replica of every key
        (a one-node cluster): then L{write_each} and L{read_here} need not
        look up each key's replicas.
    :param replicas_of: the replicas of many keys in one call, each in any
        order (faster, if given).
    :param refusal: why this node refuses writes now (see
        L{dhtwisted.node.DHTNode.write}), or C{None}: asked again before a
        write is tried again, with the replicas in view then.
    """

    def __init__(
        self,
        node_id: str,
        clock: HybridClock,
        reactor: Any,
        replicas_for: Callable[[bytes], list[str]],
        replica: Callable[[str], Any],
        rpc_timeout: float = 5.0,
        retries: int = 3,
        rng: Optional[random.Random] = None,
        is_member: Callable[[str], bool] = lambda node: True,
        keep: float = 600.0,
        local: Optional[Participant] = None,
        retry_for: float = float("inf"),
        group_bytes: int = 1 << 20,
        group_size: int = 256,
        max_active: int = 3,
        max_wait: float = 0.01,
        alone: Callable[[], bool] = lambda: False,
        replicas_of: Optional[Callable[[Sequence[bytes]], list[list[str]]]] = None,
        refusal: Callable[[], Optional[str]] = lambda: None,
    ) -> None:
        self._node_id = node_id
        self._clock = clock
        self._reactor = reactor
        self._replicas_for = replicas_for
        self._replicas_of = replicas_of or (lambda keys: [replicas_for(key) for key in keys])
        self._replica = replica
        self._refusal = refusal
        self._timeout = rpc_timeout
        self._retries = retries
        self._retry_for = retry_for
        self._rng = rng or random.Random()
        self._is_member = is_member
        self._keep = keep
        self._local = local
        self._ids = itertools.count(1)
        self._txid_prefix = f"{node_id}:{int(reactor.seconds() * 1000)}:"
        self._undecided: set[str] = set()
        # txid -> (version, or None if aborted; when; keys the commit left out)
        self._decisions: dict[str, tuple[Optional[bytes], float, tuple[bytes, ...]]] = {}
        self._redelivery: dict[tuple[str, str], Any] = {}  # (txid, node) -> delayed call
        self._inflight: dict[bytes, _Write] = {}  # key -> this node's write holding it
        # writes and reads waiting for such a key, in order
        self._queued: list[_Operation] = []
        self._queued_keys: dict[bytes, int] = {}  # key -> queued operations of it
        self._queued_writes: dict[bytes, int] = {}  # key -> queued writes of it
        self._freed = False  # a key a queued write waits for was freed
        self._holding = 0
        self._finishing = 0  # > 0 while a group's writes finish: see _finished
        self._gathered: list[_Write] = []  # writes to start as one transaction
        self._gathered_bytes = 0
        self._gathered_writes = 0
        self._start_call: Any = None  # an IDelayedCall
        self._start_waits = False  # _start_call is max_wait's, not this turn's
        self._group_bytes = group_bytes
        self._group_size = group_size
        self._max_active = max_active
        self._max_wait = max_wait
        self._active = 0  # transactions started and not yet over
        self._alone = alone
        self.stats = {"commits": 0, "aborts": 0, "retries": 0, "unconfirmed": 0}

    def _new_txid(self) -> str:
        return self._txid_prefix + str(next(self._ids))

    def query(self, txid: str) -> Outcome:
        """
        The outcome of C{txid}, for a participant that heard no decision.
        A transaction still collecting votes is decided abort now, so that
        it cannot commit behind the participant's back.
        """
        if txid in self._undecided:
            self._undecided.discard(txid)
            self._decisions[txid] = (None, self._reactor.seconds(), ())
        decision = self._decisions.get(txid)
        if decision is None:
            return Outcome(UNKNOWN)
        version = decision[0]
        return Outcome(ABORTED) if version is None else Outcome(COMMITTED, version, decision[2])

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

    def write(self, writes: Sequence[Write], done: Answer) -> Any:
        """
        Apply C{writes} (C{(key, value)} pairs, value C{None} to delete) on
        all replicas of their keys, or on none.

        :param done: called, if the result is L{PENDING}, with the result
            or a L{TransactionFailed} (possibly before C{write} returns).
        :return: whether each key had a value before, once every replica
            has committed; or L{PENDING}.
        :raise TransactionFailed: if it failed at once.
        """
        if len(writes) == 1:
            items = writes if type(writes) is list else list(writes)
        else:
            latest: dict[bytes, Optional[bytes]] = {}
            for key, value in writes:
                latest.pop(key, None)  # a key written twice keeps its last value
                latest[key] = value
            items = list(latest.items())
        plan = self._plan(items)
        inflight = self._inflight
        queued_keys = self._queued_keys
        busy = False
        for key, _ in items:
            if key in inflight or key in queued_keys:
                busy = True
                break
        local = self._local
        if (local is not None and not busy and len(plan) == 1
                and len(plan.get(self._node_id, ())) == len(items)):
            # this node is the only replica: the two phases are one local step
            existed = local.write_alone(items)
            if existed is not None:
                self.stats["commits"] += 1
                return existed
        txn = _Write(self, items, plan, done)
        if busy:
            # a write of this node's holds one of the keys, or waits for one:
            # wait behind it here rather than conflict with it at the replicas
            self._queue(txn, [key for key, _ in items])
            txn.sync = False
            return PENDING
        for key, _ in items:
            inflight[key] = txn
        return self._launch(txn)

    def write_each(self, writes: Sequence[Write]) -> int:
        """
        Commit the first of C{writes} at once, each as its own transaction,
        in order, while this node is the only replica of their keys and no
        write of this node holds them (a one-node cluster's pipelined
        C{SET}s): a write from which that is not so must go through
        L{write}.

        :return: how many were committed.
        """
        local = self._local
        if local is None or self._queued:
            return 0
        if self._alone():
            alone = len(writes)
        else:
            me = self._node_id
            alone = 0
            for key, _ in writes:
                nodes = self._replicas_for(key)
                if len(nodes) != 1 or nodes[0] != me:
                    break
                alone += 1
            writes = writes[:alone]
        count = local.write_each(writes, self._inflight) if alone else 0
        self.stats["commits"] += count
        return count

    def write_run(self, writes: Sequence[Write],
                  done: Callable[[list[Any]], None]) -> tuple[int, Any]:
        """
        Apply each of the first of C{writes} as its own write, in order: a
        client's pipelined C{SET}s of one key each. They go to the replicas
        as one transaction (gathered, like L{write}s, with those of the same
        turn). A write whose key a replica finds locked is left out of it
        and tried again (see L{hold}); if the transaction fails with nothing
        applied, each is tried alone, so that one write's refusal does not
        fail the others.

        The run takes writes up to the first whose key a write of this
        node holds or waits for, or that an earlier write of the run writes,
        or that has no live replica: that one must go through L{write}; and
        no more than a gathered transaction holds (C{group_size} writes,
        C{group_bytes}): the rest make the next run.

        :param done: called, if the result is L{PENDING}, with the results.
        :return: how many writes the run took (fewer than two: none), and
            their results (for each, C{None} if it committed, else a
            L{TransactionFailed}), or L{PENDING}.
        """
        inflight = self._inflight
        queued_keys = self._queued_keys
        # no longer than a gathered transaction may grow (messages stay
        # under max_frame; a conflict aborts no more): the rest is the next run
        limit = min(len(writes), self._group_size)
        size = 0
        for index in range(limit):
            key, value = writes[index]
            size += len(key) + len(value or b"")
            if size > self._group_bytes:
                limit = index
                break
        keys = [write[0] for write in writes[:limit]]
        replicas = self._replicas_of(keys)
        # (most runs: distinct keys, none busy; checked at C speed)
        free = (inflight.keys().isdisjoint(keys) and queued_keys.keys().isdisjoint(keys)
                and len(set(keys)) == len(keys))
        taken: set[bytes] = set()
        # the writes' indexes by replica list (a ring hands out one list
        # object per distinct list)
        groups: dict[int, tuple[list[str], list[int]]] = {}
        count = 0
        if free and replicas and replicas[0] and replicas.count(replicas[0]) == len(replicas):
            # every key on the same replicas (all of a small cluster's nodes)
            count = len(keys)
            groups[0] = (replicas[0], list(range(count)))
        else:
            for key, nodes in zip(keys, replicas):
                if not nodes:
                    break
                if not free:
                    if key in inflight or key in queued_keys or key in taken:
                        break
                    taken.add(key)
                group = groups.get(id(nodes))
                if group is None:
                    groups[id(nodes)] = (nodes, [count])
                else:
                    group[1].append(count)
                count += 1
        if count < 2:
            return 0, None
        plan: dict[str, list[int]] = {}
        for nodes, indexes in groups.values():
            for node in nodes:
                share = plan.get(node)
                if share is None:
                    plan[node] = list(indexes)
                else:
                    share.extend(indexes)
        if len(groups) > 1:
            for share in plan.values():
                share.sort()  # a share is in write order (see _Write.share)
        run = _Run(self, list(writes[:count]), plan, done)
        for key, _ in run.writes:
            inflight[key] = run
        return count, self._launch(run)

    def hold(self) -> None:
        """
        Gather the writes that start from now until L{release} (a client's
        pipelined commands, say) and those of other holds in the same turn
        of the reactor into one transaction: one prepare and one commit per
        replica for all of them. Each write still answers on its own.

        A write whose key a replica finds locked by another transaction is
        left out: the transaction commits the other writes, and those left
        out are tried again after a pause, gathered with the writes of
        then. A transaction all of whose writes were left out is tried
        again whole (L{GROUP_RETRIES} times). After any other failure
        (nothing applied), each write is tried alone, so that one write's
        refusal does not fail the others.
        """
        self._holding += 1

    def release(self) -> None:
        """
        Start the writes gathered since L{hold}, at the end of this turn of
        the reactor: with those of the other clients read in the same turn.
        """
        self._holding -= 1
        self.release_later()

    def release_later(self) -> None:
        """
        Start the writes gathered, at the end of this turn of the reactor,
        unless a hold is still on; or, while C{max_active} transactions are
        in flight, when one ends, or C{max_wait} from now.
        """
        if self._holding or not self._gathered:
            return
        call = self._start_call
        if self._active < self._max_active:
            if call is not None and self._start_waits:
                call.cancel()  # (it waited for a transaction to end)
                call = None
            if call is None:
                self._start_waits = False
                self._start_call = self._reactor.callLater(0, self._start_gathered)
        elif call is None:
            self._start_waits = True
            self._start_call = self._reactor.callLater(self._max_wait, self._start_gathered)

    def _launch(self, txn: "_Write") -> Any:
        """
        Start C{txn} now; or gather it, during a hold, or while
        C{max_active} transactions are in flight (see L{release_later}).
        """
        if self._holding:
            return self._gather(txn)
        if self._active >= self._max_active:
            result = self._gather(txn)
            self.release_later()
            return result
        return txn.begin()

    def _ended(self) -> None:
        """
        A transaction is no longer in flight: start what gathered meanwhile.
        """
        self._active -= 1
        self.release_later()

    def _gather(self, txn: "_Write") -> Any:
        txn.sync = False
        self._gathered.append(txn)
        self._gathered_writes += len(txn.writes)
        self._gathered_bytes += sum([len(k) + len(v or b"") for k, v in txn.writes])
        if (self._gathered_bytes >= self._group_bytes
                or self._gathered_writes >= self._group_size):
            self._start_gathered()
        return PENDING

    def _start_gathered(self) -> None:
        if self._start_call is not None:
            if self._start_call.active():
                self._start_call.cancel()
            self._start_call = None
        gathered, self._gathered = self._gathered, []
        self._gathered_bytes = 0
        self._gathered_writes = 0
        if len(gathered) == 1:
            gathered[0].begin()
        elif gathered:
            _Group(self, gathered).begin()

    def _start_queued(self) -> None:
        """
        Start the queued writes whose keys are free, in order: a key one
        of them waits for is not given to a later one.
        """
        self._freed = False
        inflight = self._inflight
        queued_keys = self._queued_keys
        queued_writes = self._queued_writes
        blocked: set[bytes] = set()
        waiting = []
        ready = []
        reads = []
        for txn in self._queued:
            is_read = type(txn) is _Read
            keys = txn.waits_for
            if any(key in inflight or key in blocked for key in keys):
                blocked.update(keys)
                waiting.append(txn)
                continue
            for key in keys:
                count = queued_keys[key] - 1
                if count:
                    queued_keys[key] = count
                else:
                    del queued_keys[key]
                if not is_read:
                    inflight[key] = txn  # type: ignore[assignment]
                    count = queued_writes[key] - 1
                    if count:
                        queued_writes[key] = count
                    else:
                        del queued_writes[key]
            if is_read:
                reads.append(txn)
            else:
                ready.append(txn)
        self._queued = waiting
        for read in reads:
            read.start()
        if not ready:
            return
        if len(ready) == 1 and not self._holding and self._active < self._max_active:
            ready[0].begin()
            return
        # together, as the writes of one turn go: queued writes are many
        # when a busy node's writes often share keys
        for txn in ready:
            self._gather(txn)  # type: ignore[arg-type]  # (writes: the reads went to reads)
        if not self._holding and self._active < self._max_active:
            self._start_gathered()
        else:
            self.release_later()  # (at the limit: when one ends, or after max_wait)

    def _finished(self, txn: "_Write") -> None:
        """
        C{txn} is over: free its keys for the writes queued behind it.
        """
        inflight = self._inflight
        queued_keys = self._queued_keys
        for key, _ in txn.writes:
            if inflight.get(key) is txn:
                del inflight[key]
                if key in queued_keys:
                    self._freed = True  # a queued write waited for it
        if self._freed and not self._finishing:
            self._start_queued()

    def _plan(self, writes: list[Write]) -> dict[str, list[int]]:
        """
        Each replica's share of C{writes}: node id to indexes into C{writes}.
        """
        plan: dict[str, list[int]] = {}
        for index, (key, _) in enumerate(writes):
            for node in self._replicas_for(key):
                share = plan.get(node)
                if share is None:
                    plan[node] = [index]
                else:
                    share.append(index)
        if not plan:
            raise TransactionFailed("no live replica for the key")
        return plan

    def _redeliver(self, txid: str, version: bytes, node: str, writes: list[Write],
                   skip: tuple[bytes, ...]) -> None:
        def again() -> None:
            del self._redelivery[(txid, node)]
            if not self._is_member(node):
                log.info("gave up sending commit {txid} to {peer}: no longer a member",
                         txid=txid, peer=node)
                return

            def answered(confirmed: object) -> None:
                if isinstance(confirmed, Exception) or not confirmed:
                    self._redeliver(txid, version, node, writes, skip)

            self._replica(node).commit(txid, version, writes, answered, skip)

        self._redelivery[(txid, node)] = self._reactor.callLater(self._timeout, again)

    def read(self, keys: Sequence[bytes], done: Answer, quorum: int = 1) -> Any:
        """
        The value of each of C{keys} (C{None} if missing).

        The first C{quorum} replicas of each key are asked at once (this
        node first when it is one of them); a replica that fails, or a key
        that none of them holds, sends the question on to the next replica in
        preference order (a replica that has just joined may not have a key
        yet). The newest version seen wins.

        :param done: called later, if the result is L{PENDING}, with the
            result or a L{TransactionFailed}.
        :return: the values, or L{PENDING}.
        :raise TransactionFailed: if no replica answered.
        """
        if self._inflight or self._queued_writes:
            busy = self._busy(keys)
            if busy:
                # after this node's writes of its keys that started before:
                # a client's pipelined GET sees the SET it sent first
                read = _Read(self, list(keys), quorum, done)
                read.sync = False
                self._queue(read, busy)
                return PENDING
        if quorum == 1:
            values = self.read_here(keys)
            if len(values) == len(keys):
                # this node is a replica of every key and holds them all: no network
                return values
        return _Read(self, list(keys), quorum, done).begin()

    def _busy(self, keys: Sequence[bytes]) -> list[bytes]:
        """
        The distinct C{keys}, if a write of this node holds or waits for
        one of them; else none.
        """
        inflight = self._inflight
        queued_writes = self._queued_writes
        for key in keys:
            if key in inflight or key in queued_writes:
                return list(dict.fromkeys(keys))
        return []

    def _queue(self, operation: "_Operation", keys: list[bytes]) -> None:
        """
        Start C{operation} once no write of this node that came before
        holds or waits for one of its (distinct) C{keys}.
        """
        operation.waits_for = keys
        self._queued.append(operation)
        queued_keys = self._queued_keys
        for key in keys:
            queued_keys[key] = queued_keys.get(key, 0) + 1
        if type(operation) is not _Read:
            # what a read must wait for (a read need not wait for a read)
            queued_writes = self._queued_writes
            for key in keys:
                queued_writes[key] = queued_writes.get(key, 0) + 1

    def read_here(self, keys: Sequence[bytes]) -> list[Optional[bytes]]:
        """
        The values of the first of C{keys}, read from this node alone, while
        it is a replica of them and holds them: a read of one of them at
        quorum 1 (a one-node cluster's pipelined C{GET}s). A key from which
        that is not so must go through L{read}.
        """
        local = self._local
        values: list[Optional[bytes]] = []
        if local is None:
            return values
        me = self._node_id
        lookup = local.store.lookup
        everywhere = self._alone()
        busy = self._inflight or self._queued_writes
        for key in keys:
            if busy and (key in self._inflight or key in self._queued_writes):
                break  # a write of it is under way: read after it (see read)
            if not everywhere and me not in self._replicas_for(key):
                break
            value = lookup(key)
            if value is ABSENT:
                break
            values.append(value)  # type: ignore[arg-type]
        return values


class _Operation:
    """
    A read or write in progress: it finishes once, at once (L{begin}
    returns the result) or later (C{done} gets it).
    """

    def __init__(self, done: Answer) -> None:
        self.done = done
        self.sync = True
        self.outcome: Any = PENDING
        self.waits_for: list[bytes] = []  # its distinct keys, while queued

    def begin(self) -> Any:
        self.start()
        self.sync = False
        outcome = self.outcome
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def start(self) -> None:
        raise NotImplementedError()

    def finish(self, outcome: Any) -> None:
        if self.sync:
            self.outcome = outcome
        else:
            self.done(outcome)


class _Write(_Operation):
    """
    One write command's transaction, tried again on lock conflicts.
    """

    #: Its result tells which keys had a value before (from the votes).
    needs_existed = True
    #: Its transaction may commit without some of its commands, those that
    #: met a lock conflict at a replica (see L{Participant.prepare}): it
    #: holds several clients' commands.
    divisible = False

    def __init__(self, c: Coordinator, writes: list[Write], plan: dict[str, list[int]],
                 done: Answer) -> None:
        super().__init__(done)
        self.c = c
        self.writes = writes
        self.plan = plan
        self.retries_left = c._retries
        self.retried = 0  # times tried again: the pause before the next doubles
        self.priority = c._clock.next()  # kept across retries: the write ages
        self.started = c._reactor.seconds()
        self.txid = ""
        self.version = NO_VERSION
        self.votes: dict[str, Vote] = {}
        self.pending = 0
        self.unconfirmed: list[str] = []
        self.committed = False
        self.skip: tuple[bytes, ...] = ()  # keys its commit left out
        self.crowded = False  # every write met a conflict somewhere
        self.active = False  # in flight: counted in the coordinator's _active
        self.alone = False  # its last try was its own transaction (not in a _Group's)

    def finish(self, outcome: Any) -> None:
        self.c._finished(self)
        if isinstance(outcome, Exception) and self.txid:
            # (a write in a group that failed was not started itself: the
            # group logged it)
            self._log_failed(outcome)
        super().finish(outcome)

    def _log_failed(self, why: Exception) -> None:
        """
        One line for this transaction's failure.
        """
        log.warn("transaction {txid} writing {key} ({keys} keys) failed: {why}",
                 txid=self.txid, key=key_text(self.writes[0][0]), keys=len(self.writes),
                 why=str(why), node=self.c._node_id)

    def share(self, node: str) -> list[Write]:
        """
        C{node}'s writes: those at its indexes in C{plan}, which are in
        write order (a vote's C{existed} and C{skipped} follow it).
        """
        indexes = self.plan[node]
        if len(indexes) == len(self.writes):
            return self.writes
        return [self.writes[i] for i in indexes]

    def widen(self, aside: set[int]) -> set[int]:
        """
        C{aside} (indexes of writes) and the other writes of their commands:
        a command is committed whole or not at all.
        """
        return set(range(len(self.writes)))

    def set_aside(self, aside: set[int]) -> None:
        """
        Leave the commands of the writes at C{aside} out of this
        transaction, which commits without them: they are tried again.
        A plain write is one command (C{aside} is all of it).
        """
        self._conflicted(CROWDED.reason)

    def start(self) -> None:
        c = self.c
        c._active += 1  # until _committed or _aborted hears the last replica
        self.active = True
        try:
            self._prepare()
        except BaseException:
            self._over()  # (no vote may ever come: the prepares were not all sent)
            raise

    def _over(self) -> None:
        """
        Its two phases are over (or cannot go on): it is no longer in flight.
        """
        if self.active:
            self.active = False
            self.c._ended()

    def _prepare(self) -> None:
        c = self.c
        self.alone = True
        self.txid = txid = c._new_txid()
        c._undecided.add(txid)
        self.votes = {}
        self.skip = ()
        self.crowded = False
        self.pending = len(self.plan)
        participants = sorted(self.plan)
        divisible = self.divisible
        for node in participants:
            c._replica(node).prepare(txid, self.share(node), participants, self.priority,
                                     partial(self._voted, node), divisible)

    def _retry(self) -> None:
        """
        Try it again, as its own transaction.
        """
        if self._replan():
            self.start()

    def _replan(self) -> bool:
        """
        Find its replicas again, for a retry; or fail, if it may not be
        tried again.
        """
        refusal = self.c._refusal()
        if refusal is not None:
            # as a new write would be: the replicas in view now may be too
            # few (this node may be cut off, or have slept)
            self.finish(TransactionFailed(refusal))
            return False
        try:
            self.plan = self.c._plan(self.writes)
        except TransactionFailed as e:
            self.finish(e)
            return False
        return True

    def _conflicted(self, reason: str) -> None:
        """
        A lock conflict stopped it: try again after a pause, while it may,
        with the writes that start then (a group alone).
        """
        c = self.c
        if self.retries_left > 0 and c._reactor.seconds() - self.started < c._retry_for:
            self.retries_left -= 1
            self.retried += 1
            c.stats["retries"] += 1
            pause = c._rng.uniform(0.001, min(0.005 * 2**self.retried, 0.1))
            c._reactor.callLater(pause, self._retry if type(self) is _Group else self._again)
        else:
            self.finish(TransactionFailed(f"write aborted, nothing applied ({reason})"))

    def _again(self) -> None:
        """
        Try it again after a conflict, gathered with the writes of this
        turn: one more transaction rather than one per write left out.
        """
        if self._replan():
            self.c._gather(self)
            self.c.release_later()

    def _voted(self, node: str, vote: Any) -> None:
        if isinstance(vote, Exception):
            vote = Vote(False, f"replica {node} did not answer: {_describe(vote)}")
        elif vote.skipped and (not self.divisible
                               or max(vote.skipped) >= len(self.plan[node])):
            vote = Vote(False, f"replica {node} left out writes it was not sent")
        self.votes[node] = vote
        self.pending -= 1
        if self.pending:
            return
        c = self.c
        txid = self.txid
        now = c._reactor.seconds()
        self.pending = len(self.plan)
        if txid in c._undecided and all(v.yes for v in self.votes.values()):
            aside = self._left_out() if self.divisible else None
            if not aside or len(aside) < len(self.writes):
                c._undecided.discard(txid)
                newest = max(v.max_version for v in self.votes.values())
                self.version = c._clock.next_after(newest)
                self.committed = True
                if aside:
                    # before the commits: one answered at once may finish this
                    self.skip = tuple([self.writes[i][0] for i in sorted(aside)])
                    self.set_aside(aside)
                c._decisions[txid] = (self.version, now, self.skip)
                self.unconfirmed = []
                for node in self.plan:
                    c._replica(node).commit(txid, self.version, None,
                                            partial(self._committed, node), self.skip)
                return
            self.crowded = True
        c._undecided.discard(txid)
        c._decisions[txid] = (None, now, ())
        for node in self.plan:
            c._replica(node).abort(txid, partial(self._aborted, node))

    def _left_out(self) -> set[int]:
        """
        The writes (indexes) some replica did not stage, with the other
        writes of their commands.
        """
        aside: set[int] = set()
        for node, vote in self.votes.items():
            if vote.skipped:
                indexes = self.plan[node]
                aside.update([indexes[i] for i in vote.skipped])
        return self.widen(aside) if aside else aside

    def _committed(self, node: str, confirmed: Any) -> None:
        c = self.c
        if isinstance(confirmed, Exception) or not confirmed:
            why = _describe(confirmed) if confirmed else "it had not prepared"
            log.warn("replica {peer} did not confirm commit {txid}: {why}",
                     peer=node, txid=self.txid, why=why)
            self.unconfirmed.append(node)
            # (with the skip: the replica leaves those writes out itself)
            c._redeliver(self.txid, self.version, node, self.share(node), self.skip)
        self.pending -= 1
        if self.pending:
            return
        self._over()
        if self.unconfirmed:
            c.stats["unconfirmed"] += 1
            self.finish(TransactionFailed(
                "write committed but not confirmed by replica "
                + ", ".join(sorted(self.unconfirmed))
                + "; it is being sent again and may already be visible"
            ))
            return
        # every participant committed: none will ask about it
        c._decisions.pop(self.txid, None)
        c.stats["commits"] += 1
        existed = [False] * len(self.writes)
        if self.needs_existed:
            for node, indexes in self.plan.items():
                for index, flag in zip(indexes, self.votes[node].existed):
                    existed[index] = existed[index] or flag
        self.finish(existed)

    def _aborted(self, node: str, result: Any) -> None:
        c = self.c
        if isinstance(result, Exception):
            # it will ask, and hear abort, when its transaction times out
            log.info("replica {peer} did not confirm abort {txid}: {why}",
                     peer=node, txid=self.txid, why=_describe(result))
        self.pending -= 1
        if self.pending:
            return
        self._over()
        c.stats["aborts"] += 1
        noes = [CROWDED] if self.crowded else [
            vote for vote in self.votes.values() if not vote.yes]
        if not noes:
            self.finish(TransactionFailed("write aborted, nothing applied (timed out)"))
        elif all(vote.conflict for vote in noes):
            self._conflicted(noes[0].reason)
        else:
            self.finish(TransactionFailed(f"write aborted, nothing applied ({noes[0].reason})"))


#: How many times a gathered transaction all of whose writes met lock
#: conflicts is tried again whole before its writes are tried alone.
GROUP_RETRIES = 2

#: The vote of a transaction whose every command met a lock conflict at
#: some replica (each replica staged the others).
CROWDED = Vote(False, "conflict: key is locked by another write", conflict=True)


class _Group(_Write):
    """
    Several writes gathered into one transaction (see L{Coordinator.hold}):
    their keys are distinct, as each holds its keys at this coordinator.
    """

    divisible = True

    def __init__(self, c: Coordinator, members: list[_Write]) -> None:
        writes: list[Write] = []
        plan: dict[str, list[int]] = {}
        offsets = []
        for member in members:
            offset = len(writes)
            offsets.append(offset)
            writes.extend(member.writes)
            if len(member.writes) == 1:  # (most are: a SET each)
                for node in member.plan:
                    share = plan.get(node)
                    if share is None:
                        plan[node] = [offset]
                    else:
                        share.append(offset)
                continue
            for node, indexes in member.plan.items():
                plan.setdefault(node, []).extend(
                    [i + offset for i in indexes] if offset else indexes)
        super().__init__(c, writes, plan, lambda outcome: None)
        for member in members:
            member.alone = False  # (its outcome is the group's now)
        self.members = members
        self.offsets = offsets  # where each member's writes start in writes
        self.needs_existed = any(member.needs_existed for member in members)
        self.priority = min(member.priority for member in members)
        # a conflict on every write tries the whole group again, twice (at
        # its oldest member's priority, so it soon waits rather than dies);
        # then, or on any other failure, each write is tried alone: see finish
        self.retries_left = min(c._retries, GROUP_RETRIES)

    def _each_member(self, aside: set[int]) -> list[tuple[_Write, int, set[int]]]:
        """
        The members with writes at C{aside}: each with its offset and those
        writes' indexes in its own.
        """
        found = []
        for member, offset in zip(self.members, self.offsets):
            end = offset + len(member.writes)
            mine = {index - offset for index in aside if offset <= index < end}
            if mine:
                found.append((member, offset, mine))
        return found

    def widen(self, aside: set[int]) -> set[int]:
        wide: set[int] = set()
        for member, offset, mine in self._each_member(aside):
            wide.update([offset + index for index in member.widen(mine)])
        return wide

    def set_aside(self, aside: set[int]) -> None:
        """
        The members at C{aside} are tried again on their own; the group
        finishes without those left out whole.
        """
        gone = set()
        for member, _, mine in self._each_member(aside):
            if len(mine) == len(member.writes):
                gone.add(id(member))
            member.set_aside(mine)
        kept = [(member, offset) for member, offset in zip(self.members, self.offsets)
                if id(member) not in gone]
        self.members = [member for member, _ in kept]
        self.offsets = [offset for _, offset in kept]

    def finish(self, outcome: Any) -> None:
        if isinstance(outcome, Exception) and not self.committed:
            # nothing applied: try each write alone, so that one write's
            # refusal or conflict does not fail the others
            for member in self.members:
                member._retry()
            return
        c = self.c
        if isinstance(outcome, Exception):
            self._log_failed(outcome)  # committed, not confirmed everywhere
        c._finishing += 1  # start the queued writes once, after all members
        try:
            for member, offset in zip(self.members, self.offsets):
                member.finish(outcome if isinstance(outcome, Exception)
                              else outcome[offset : offset + len(member.writes)])
        finally:
            c._finishing -= 1
        if c._freed and not c._finishing:
            c._start_queued()


class _Run(_Write):
    """
    A run of single-key writes from one client, each its own command, as
    one transaction (see L{Coordinator.write_run}). Its keys are distinct.
    It finishes with a result per write: C{None} (committed) or an
    exception.
    """

    needs_existed = False
    divisible = True

    def __init__(self, c: Coordinator, writes: list[Write], plan: dict[str, list[int]],
                 done: Answer) -> None:
        super().__init__(c, writes, plan, done)
        # as a group: conflicts try the run again whole, then write by write
        self.retries_left = min(c._retries, GROUP_RETRIES)
        self.open = True  # the outcome of the run's own transaction is to come
        # once writes are tried alone: their results, which, and how many to come
        self.results: Optional[list[Any]] = None
        self.aside: set[int] = set()
        self.left = 0

    def widen(self, aside: set[int]) -> set[int]:
        return aside  # each write is a command

    def set_aside(self, aside: set[int]) -> None:
        if len(aside) == len(self.writes):
            self.open = False  # (left out of a group whole)
        self._each(sorted(aside), CROWDED.reason)

    def finish(self, outcome: Any) -> None:
        failed = isinstance(outcome, Exception)
        if failed:
            if self.alone and not self.committed:
                # nothing applied: try each write alone
                self.open = False
                self._each(range(len(self.writes)), None)
                return
            # committed, not confirmed everywhere: so is each write
            self._log_failed(outcome)
        self.c._finished(self)
        self.open = False
        if self.results is None:
            _Operation.finish(self, [outcome if failed else None] * len(self.writes))
            return
        if failed:
            for index in range(len(self.writes)):
                if index not in self.aside:
                    self.results[index] = outcome
        if not self.left:
            _Operation.finish(self, self.results)

    def _each(self, indexes: Sequence[int], conflict: Optional[str]) -> None:
        """
        Try each write at C{indexes} alone: at once, or after a pause if a
        C{conflict} left it out.
        """
        c = self.c
        inflight = c._inflight
        if self.results is None:
            self.results = [None] * len(self.writes)
        self.aside.update(indexes)
        self.left += len(indexes)
        members = []
        for index in indexes:
            write = self.writes[index]
            member = _Write(c, [write], {}, partial(self._member_done, index))
            member.priority = self.priority  # it keeps its age ...
            member.started = self.started  # ... and its time to retry_for
            member.sync = False
            inflight[write[0]] = member
            members.append(member)
        for member in members:
            if conflict is None:
                member._retry()
            else:
                member._conflicted(conflict)

    def _member_done(self, index: int, outcome: Any) -> None:
        self.results[index] = outcome if isinstance(outcome, Exception) else None  # type: ignore[index]
        self.left -= 1
        if not self.left and not self.open:
            _Operation.finish(self, self.results)


class _Read(_Operation):
    """
    One read command: a L{_ReadGroup} per set of keys with the same replicas.
    """

    def __init__(self, c: Coordinator, keys: list[bytes], quorum: int, done: Answer) -> None:
        super().__init__(done)
        self.c = c
        self.keys = keys
        self.quorum = quorum
        self.values: list[Optional[bytes]] = [None] * len(keys)
        self.pending = 0
        self.error: Optional[Exception] = None

    def start(self) -> None:
        me = self.c._node_id
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, key in enumerate(self.keys):
            nodes = self.c._replicas_for(key)
            if me in nodes and nodes[0] != me:
                # this node is a replica: ask it first, no network needed
                nodes = [me] + [n for n in nodes if n != me]
            groups.setdefault(tuple(nodes), []).append(index)
        self.pending = len(groups)
        for order, indexes in groups.items():
            _ReadGroup(self, order, indexes).step()

    def group_done(self, indexes: list[int], result: Any) -> None:
        if isinstance(result, Exception):
            self.error = self.error or result
        else:
            for index, record in zip(indexes, result):
                self.values[index] = record.value
        self.pending -= 1
        if not self.pending:
            self.finish(self.error or self.values)


class _ReadGroup:
    """
    The keys of a read that share their replicas, asked replica by replica.
    """

    def __init__(self, read: _Read, nodes: tuple[str, ...], indexes: list[int]) -> None:
        self.read = read
        self.nodes = nodes
        self.indexes = indexes
        self.keys = [read.keys[i] for i in indexes]
        self.newest = [MISSING] * len(indexes)
        self.answered = 0
        self.errors: list[str] = []
        self.position = 0
        self.pending = 0

    def step(self) -> None:
        quorum = self.read.quorum
        missing = [i for i, r in enumerate(self.newest) if r.version == NO_VERSION]
        if self.position >= len(self.nodes) or (self.answered >= quorum and not missing):
            self.end()
            return
        ask = list(range(len(self.keys))) if self.answered < quorum else missing
        width = max(1, quorum - self.answered)
        batch = self.nodes[self.position : self.position + width]
        self.position += len(batch)
        self.pending = len(batch)
        keys = [self.keys[i] for i in ask]
        for node in batch:
            self.read.c._replica(node).read(keys, partial(self._answered, node, ask))

    def _answered(self, node: str, ask: list[int], result: Any) -> None:
        if isinstance(result, Exception):
            self.errors.append(f"{node}: {_describe(result)}")
        else:
            self.answered += 1
            newest = self.newest
            for i, record in zip(ask, result):
                if record.version > newest[i].version:
                    newest[i] = record
        self.pending -= 1
        if not self.pending:
            self.step()

    def end(self) -> None:
        errors = self.errors
        if not self.answered:
            self.read.group_done(self.indexes, TransactionFailed(
                "no replica answered the read (" + "; ".join(errors) + ")"
                if errors else "no live replica for the key"
            ))
        elif errors and self.answered < len(self.nodes) // 2 + 1 and any(
                r.version == NO_VERSION for r in self.newest):
            # "missing" from a minority may only mean those replicas are new
            # to the key: say so rather than answer (nil) for a key that exists
            self.read.group_done(self.indexes, TransactionFailed(
                "key not found on the replicas that answered, and the others did not ("
                + "; ".join(errors) + ")"
            ))
        else:
            self.read.group_done(self.indexes, self.newest)


def _describe(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__


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
