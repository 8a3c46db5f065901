"""
Tests for dhtwisted.twopc: the participant's locks and staging, and the
coordinator's all-or-nothing writes over fake replicas.
"""

from __future__ import annotations

import random
from typing import Optional

from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from dhtwisted.interfaces import IReplica
from dhtwisted.store import Record, Store
from dhtwisted.twopc import (
    PENDING,
    Coordinator,
    LocalReplica,
    Outcome,
    Participant,
    TransactionFailed,
    Vote,
)
from dhtwisted.version import HybridClock, node_tag


RPC_TIMEOUT = 5.0


def _participant(clock: Clock, name: str = "n") -> tuple[Participant, Store]:
    store = Store()
    return Participant(store, HybridClock(clock.seconds, node_tag(name)), clock.seconds), store


class ParticipantTests(SynchronousTestCase):
    """
    Locks, staging, commit and abort on one participant.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.participant, self.store = _participant(self.clock)
        self.version = HybridClock(self.clock.seconds, 7).next()

    def test_prepare_commit(self) -> None:
        """
        A prepared write is invisible until commit, then applied at the
        commit's version; the locks are released.
        """
        vote = self.participant.prepare("t1", [(b"k", b"v")], ["n"], 2000)
        self.assertTrue(vote.yes)
        self.assertEqual(vote.existed, (False,))
        self.assertEqual(self.store.get(b"k").value, None)
        self.assertEqual(self.participant.locked_keys, 1)
        self.assertTrue(self.participant.commit("t1", self.version))
        self.assertEqual(self.store.get(b"k"), Record(self.version, b"v"))
        self.assertEqual(self.participant.locked_keys, 0)

    def test_conflict_votes_no(self) -> None:
        """
        A key locked by another transaction makes the vote no, and nothing
        of the second transaction is locked or staged.
        """
        self.participant.prepare("t1", [(b"a", b"1")], ["n"], 2000)
        vote = self.participant.prepare("t2", [(b"b", b"2"), (b"a", b"2")], ["n"], 2000)
        self.assertFalse(vote.yes)
        self.assertTrue(vote.conflict)
        self.assertEqual(self.participant.locked_keys, 1)
        self.assertFalse(self.participant.commit("t2", self.version))
        self.assertEqual(self.store.get(b"b").value, None)

    def test_abort_releases(self) -> None:
        """
        Abort drops the staged writes and frees the keys for others.
        """
        self.participant.prepare("t1", [(b"a", b"1")], ["n"], 2000)
        self.assertTrue(self.participant.abort("t1"))
        self.assertEqual(self.store.get(b"a").value, None)
        self.assertTrue(self.participant.prepare("t2", [(b"a", b"2")], ["n"], 2000).yes)

    def test_duplicate_and_late_messages(self) -> None:
        """
        A repeated prepare votes yes again; a repeated commit is confirmed;
        an abort after commit, a prepare after the decision, or a commit of
        an unknown transaction change nothing.
        """
        self.assertTrue(self.participant.prepare("t1", [(b"a", b"1")], ["n"], 2000).yes)
        self.assertTrue(self.participant.prepare("t1", [(b"a", b"1")], ["n"], 2000).yes)
        self.assertTrue(self.participant.commit("t1", self.version))
        self.assertTrue(self.participant.commit("t1", self.version))
        self.assertFalse(self.participant.abort("t1"))
        self.assertFalse(self.participant.prepare("t1", [(b"a", b"2")], ["n"], 2000).yes)
        self.assertFalse(self.participant.abort("never"))
        self.assertFalse(self.participant.commit("never", self.version))
        self.assertEqual(self.store.get(b"a"), Record(self.version, b"1"))
        self.assertEqual(self.participant.locked_keys, 0)
        self.assertEqual(self.participant.status("t1"), Outcome("committed", self.version))

    def test_prepare_after_abort_refused(self) -> None:
        """
        A prepare that arrives after the abort of its transaction (messages
        reordered) votes no and locks nothing.
        """
        self.assertFalse(self.participant.abort("t9"))
        vote = self.participant.prepare("t9", [(b"a", b"1")], ["n"], 2000)
        self.assertFalse(vote.yes)
        self.assertEqual(self.participant.locked_keys, 0)

    def test_older_waits_for_the_lock(self) -> None:
        """
        Wait-die: a prepare older than the lock holder waits and is answered
        yes once the holder finishes; a younger one votes no at once.
        """
        votes: list = []
        self.participant.prepare("young", [(b"a", b"1")], ["n"], 2000, "m", b"\x05")
        self.assertIsNone(self.participant.prepare("old", [(b"a", b"2")], ["n"], 2000, "m",
                                                   b"\x01", votes.append))
        younger = self.participant.prepare("younger", [(b"a", b"3")], ["n"], 2000, "m",
                                           b"\x09", votes.append)
        self.assertFalse(younger.yes)
        self.assertTrue(younger.conflict)
        self.assertEqual(votes, [])
        self.participant.commit("young", self.version)
        self.assertEqual(len(votes), 1)
        self.assertTrue(votes[0].yes)
        self.assertEqual(self.participant.status("old"), Outcome("prepared"))

    def test_lock_wait_expires(self) -> None:
        """
        A waiting prepare votes no once lock_wait passed, or when its
        transaction is aborted; it never holds a lock meanwhile.
        """
        votes: list = []
        self.participant.prepare("young", [(b"a", b"1")], ["n"], 2000, "m", b"\x05")
        self.participant.prepare("old", [(b"a", b"2")], ["n"], 2000, "m", b"\x01",
                                 votes.append)
        self.participant.prepare("older", [(b"a", b"2")], ["n"], 2000, "m", b"\x00",
                                 votes.append)
        self.participant.abort("older")
        self.assertEqual([v.yes for v in votes], [False])
        self.participant.expire_waiting(self.clock.seconds() + 0.5)
        self.assertEqual(len(votes), 1)
        self.participant.expire_waiting(self.clock.seconds() + 1.0)
        self.assertEqual([v.yes for v in votes], [False, False])
        self.assertEqual(self.participant.locked_keys, 1)

    def test_commit_with_writes_after_abort(self) -> None:
        """
        A participant that gave up on a transaction still applies a later
        commit that carries the writes: the decision was commit.
        """
        self.participant.prepare("t1", [(b"a", b"1")], ["n"], 2000)
        self.participant.abort("t1")
        self.assertTrue(self.participant.commit("t1", self.version, [(b"a", b"1")]))
        self.assertEqual(self.store.get(b"a"), Record(self.version, b"1"))

    def test_vote_reports_newest_version(self) -> None:
        """
        The vote carries the newest version held of the keys, so the
        coordinator can pick a newer one.
        """
        self.store.apply(b"a", self.version, b"old")
        vote = self.participant.prepare("t1", [(b"a", None), (b"b", b"x")], ["n"], 2000)
        self.assertEqual(vote.max_version, self.version)
        self.assertEqual(vote.existed, (True, False))

    def test_key_written_twice(self) -> None:
        """
        A transaction that writes a key twice (as a broken peer may send)
        locks it once and lets go of it once.
        """
        vote = self.participant.prepare("t1", [(b"a", b"1"), (b"a", b"2")], ["n"], 2000)
        self.assertTrue(vote.yes)
        self.assertEqual(self.participant.locked_keys, 1)
        self.assertTrue(self.participant.commit("t1", self.version))
        self.assertEqual(self.participant.locked_keys, 0)
        self.assertTrue(self.participant.prepare("t2", [(b"a", b"3")], ["n"], 2000).yes)

    def test_partial_stages_the_free_writes(self) -> None:
        """
        A partial prepare whose keys are partly locked by an older write
        locks and stages the others and votes yes, naming the writes it
        left out; its commit applies only what is staged and not in skip,
        and says so to whoever asks.
        """
        self.participant.prepare("old", [(b"b", b"x")], ["n"], 2000, "m", b"\x01")
        vote = self.participant.prepare("t1", [(b"a", b"1"), (b"b", b"1"), (b"c", b"1")],
                                        ["n"], 2000, "m", b"\x05", partial=True)
        self.assertEqual((vote.yes, vote.skipped), (True, (1,)))
        self.assertEqual(self.participant.locked_keys, 3)  # a and c, and b by "old"
        self.assertTrue(self.participant.commit("t1", self.version, skip=[b"b", b"c"]))
        self.assertEqual(self.store.get(b"a"), Record(self.version, b"1"))
        self.assertIsNone(self.store.get(b"c").value)  # staged, but left out by the coordinator
        self.assertIsNone(self.store.get(b"b").value)  # still "old"'s, not committed
        self.assertEqual(self.participant.locked_keys, 1)
        self.assertEqual(self.participant.status("t1"),
                         Outcome("committed", self.version, (b"b", b"c")))
        self.participant.commit("old", self.version)
        self.assertEqual(self.store.get(b"b").value, b"x")

    def test_partial_repeated_prepare(self) -> None:
        """
        A partial prepare repeated votes as the first did.
        """
        self.participant.prepare("old", [(b"b", b"x")], ["n"], 2000, "m", b"\x01")
        first = self.participant.prepare("t1", [(b"a", b"1"), (b"b", b"1")], ["n"], 2000,
                                         "m", b"\x05", partial=True)
        again = self.participant.prepare("t1", [(b"a", b"1"), (b"b", b"1")], ["n"], 2000,
                                         "m", b"\x05", partial=True)
        self.assertEqual(first, again)
        self.assertEqual(again.skipped, (1,))

    def test_partial_older_waits(self) -> None:
        """
        Wait-die holds for a partial prepare: older than a holder of one of
        its keys, it waits rather than leave the write out, and stages all
        once the holder is done; younger than every holder, it leaves their
        keys out; with every key held by older writes, it votes no.
        """
        votes: list = []
        self.participant.prepare("oldest", [(b"a", b"x")], ["n"], 2000, "m", b"\x01")
        self.participant.prepare("young", [(b"b", b"x")], ["n"], 2000, "m", b"\x09")
        self.assertIsNone(self.participant.prepare(
            "mid", [(b"b", b"1"), (b"c", b"1")], ["n"], 2000, "m", b"\x05", votes.append,
            partial=True))
        self.participant.commit("young", self.version)
        self.assertEqual([(v.yes, v.skipped) for v in votes], [(True, ())])
        self.participant.commit("mid", HybridClock(self.clock.seconds, 8).next_after(self.version))
        self.assertEqual(self.store.get(b"b").value, b"1")
        none = self.participant.prepare("late", [(b"a", b"2")], ["n"], 2000, "m", b"\x07",
                                        votes.append, partial=True)
        self.assertEqual((none.yes, none.conflict), (False, True))

    def test_partial_waiter_stages_what_it_can(self) -> None:
        """
        A partial prepare that waited for a younger holder, woken while an
        older write holds another of its keys (taken meanwhile), stages the
        rest.
        """
        votes: list = []
        self.participant.prepare("young", [(b"a", b"x")], ["n"], 2000, "m", b"\x09")
        self.assertIsNone(self.participant.prepare(
            "mid", [(b"a", b"1"), (b"b", b"1")], ["n"], 2000, "m", b"\x05", votes.append,
            partial=True))
        self.participant.prepare("old", [(b"b", b"x")], ["n"], 2000, "m", b"\x01")
        self.participant.abort("young")
        self.assertEqual([(v.yes, v.skipped) for v in votes], [(True, (1,))])

    def test_commit_sent_again_leaves_skip_out(self) -> None:
        """
        A commit sent again with its writes to a participant that no longer
        has the transaction prepared applies them but those in skip.
        """
        self.assertTrue(self.participant.commit("t1", self.version,
                                                [(b"a", b"1"), (b"b", b"1")], [b"b"]))
        self.assertEqual(self.store.get(b"a").value, b"1")
        self.assertIsNone(self.store.get(b"b").value)

    def test_overdue(self) -> None:
        """
        Transactions undecided past their deadline are reported.
        """
        self.participant.prepare("t1", [(b"a", b"1")], ["n", "m"], 1010, "m")
        self.participant.prepare("t2", [(b"b", b"1")], ["n"], 1020, "m")
        self.assertEqual(self.participant.overdue(1015), [("t1", "m", ["n", "m"])])


@implementer(IReplica)
class ScriptedReplica:
    """
    A replica that records the calls it gets and can be told to vote no,
    fail, answer after C{delay} seconds, or never answer (then, as a peer
    link does, it answers a timeout after the RPC timeout).
    """

    def __init__(self, name: str, events: list, clock: Clock) -> None:
        self.name = name
        self.events = events
        self.clock = clock
        self.participant, self.store = _participant(clock, name)
        self.local = LocalReplica(name, self.participant, lambda: clock.seconds() + 10)
        self.vote_no: Optional[Vote] = None
        self.broken = False
        self.hung = False
        self.delay = 0.0

    def _call(self, what: str, txid: str, answer, run) -> None:  # type: ignore[no-untyped-def]
        self.events.append((self.name, what, txid.rsplit(":", 1)[-1]))
        if self.broken:
            answer(ConnectionError(f"{self.name} is down"))
        elif self.hung:
            self.clock.callLater(RPC_TIMEOUT, answer, TimeoutError("timed out"))
        elif self.delay:
            self.clock.callLater(self.delay, run)
        else:
            run()

    def prepare(self, txid: str, writes: list, participants: list, priority: bytes,
                answer, partial: bool = False) -> None:  # type: ignore[no-untyped-def]
        """
        Vote, as scripted.
        """
        if self.vote_no is not None:
            self._call("prepare", txid, answer, lambda: answer(self.vote_no))
        else:
            self._call("prepare", txid, answer, lambda: self.local.prepare(
                txid, writes, participants, priority, answer, partial))

    def commit(self, txid: str, version: bytes, writes: Optional[list],
               answer, skip=()) -> None:  # type: ignore[no-untyped-def]
        """
        Commit, as scripted.
        """
        self._call("commit", txid, answer,
                   lambda: self.local.commit(txid, version, writes, answer, skip))

    def abort(self, txid: str, answer) -> None:  # type: ignore[no-untyped-def]
        """
        Abort, as scripted.
        """
        self._call("abort", txid, answer, lambda: self.local.abort(txid, answer))

    def read(self, keys: list, answer) -> None:  # type: ignore[no-untyped-def]
        """
        Read, as scripted.
        """
        self.events.append((self.name, "read", ""))
        if self.broken:
            answer(ConnectionError(f"{self.name} is down"))
        else:
            self.local.read(keys, answer)


def deferred(run, arg) -> Deferred:  # type: ignore[no-untyped-def]
    """
    A coordinator's C{run(arg, done)} (a read or write) as a Deferred.
    """
    d: Deferred = Deferred()

    def done(result: object) -> None:
        if isinstance(result, Exception):
            d.errback(Failure(result))
        else:
            d.callback(result)

    try:
        result = run(arg, done)
    except Exception as e:
        return fail(e)
    return d if result is PENDING else succeed(result)


class ThreeReplicasCase(SynchronousTestCase):
    """
    The coordinator of node a over three scripted replicas, a, b and c,
    that hold every key; built with C{options}.
    """

    options: dict = {}

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.events: list = []
        self.replicas = {n: ScriptedReplica(n, self.events, self.clock) for n in "abc"}
        self.coordinator = Coordinator(
            "a", HybridClock(self.clock.seconds, node_tag("a")), self.clock,
            lambda key: ["a", "b", "c"], self.replicas.__getitem__, rng=random.Random(0),
            **self.options,
        )

    def write(self, writes: list) -> Deferred:
        """
        The coordinator's write as a Deferred.
        """
        return deferred(self.coordinator.write, writes)

    def read(self, keys: list) -> Deferred:
        """
        The coordinator's read as a Deferred.
        """
        return deferred(self.coordinator.read, keys)

    def values(self, key: bytes) -> list:
        """
        The value each replica holds for C{key}.
        """
        return [r.store.get(key).value for r in self.replicas.values()]


class CoordinatorTests(ThreeReplicasCase):
    """
    Writes and reads over three replicas, with two retries on conflicts.
    """

    options = {"retries": 2}

    def test_commit_everywhere(self) -> None:
        """
        With every vote yes, every replica commits; then the write answers.
        """
        d = self.write([(b"k", b"v"), (b"j", b"w")])
        self.assertEqual(self.successResultOf(d), [False, False])
        self.assertEqual(self.values(b"k"), [b"v"] * 3)
        self.assertEqual(self.values(b"j"), [b"w"] * 3)
        self.assertEqual(
            [(n, w) for n, w, _ in self.events],
            [("a", "prepare"), ("b", "prepare"), ("c", "prepare"),
             ("a", "commit"), ("b", "commit"), ("c", "commit")],
        )
        versions = {r.store.get(b"k").version for r in self.replicas.values()}
        self.assertEqual(len(versions), 1)

    def test_no_vote_aborts_everywhere(self) -> None:
        """
        One no vote aborts on every replica; nothing is applied and the
        client gets the reason.
        """
        self.replicas["b"].vote_no = Vote(False, "disk on fire")
        f = self.failureResultOf(self.write([(b"k", b"v")]), TransactionFailed)
        self.assertIn("disk on fire", f.value.reason)
        self.assertEqual(self.values(b"k"), [None] * 3)
        self.assertEqual(sorted(w for _, w, _ in self.events if w != "prepare"), ["abort"] * 3)
        self.assertEqual([r.participant.locked_keys for r in self.replicas.values()], [0] * 3)

    def test_unreachable_replica_aborts(self) -> None:
        """
        A replica that cannot be reached counts as a no vote.
        """
        self.replicas["c"].broken = True
        f = self.failureResultOf(self.write([(b"k", b"v")]), TransactionFailed)
        self.assertIn("replica c did not answer", f.value.reason)
        self.assertEqual(self.values(b"k"), [None] * 3)

    def test_prepare_timeout_aborts(self) -> None:
        """
        A replica that never answers prepare counts as a no vote after the
        RPC timeout: the others abort and the client gets ERR, not ok.
        """
        self.replicas["b"].hung = True
        d = self.write([(b"k", b"v")])
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        # the abort to the hung replica times out too
        self.clock.advance(5.1)
        f = self.failureResultOf(d, TransactionFailed)
        self.assertIn("replica b did not answer", f.value.reason)
        self.assertEqual(self.values(b"k"), [None] * 3)
        self.assertEqual(self.replicas["a"].participant.locked_keys, 0)
        self.assertEqual(self.replicas["c"].participant.locked_keys, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_conflict_retried_then_committed(self) -> None:
        """
        A lock conflict is retried after a short random pause, and commits
        once the lock is free.
        """
        self.replicas["b"].participant.prepare("other", [(b"k", b"x")], ["b"], 2000)
        d = self.write([(b"k", b"v")])
        self.assertNoResult(d)
        self.replicas["b"].participant.abort("other")
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(d), [False])
        self.assertEqual(self.values(b"k"), [b"v"] * 3)
        self.assertEqual(self.coordinator.stats["retries"], 1)

    def test_conflict_gives_up(self) -> None:
        """
        A conflict that persists past the retries fails the write, with
        nothing applied.
        """
        self.replicas["c"].participant.prepare("other", [(b"k", b"x")], ["c"], 2000)
        d = self.write([(b"k", b"v")])
        for _ in range(5):
            self.clock.advance(1)
        f = self.failureResultOf(d, TransactionFailed)
        self.assertIn("conflict", f.value.reason)
        self.assertEqual(self.values(b"k"), [None] * 3)
        self.assertEqual(self.coordinator.stats["aborts"], 3)

    def test_versions_increase(self) -> None:
        """
        A later write gets a newer version even when a replica holds a
        version from a clock ahead of the coordinator's.
        """
        ahead = HybridClock(lambda: 5000.0, 1).next()
        for r in self.replicas.values():
            r.store.apply(b"k", ahead, b"from the future")
        self.successResultOf(self.write([(b"k", b"now")]))
        self.assertEqual(self.values(b"k"), [b"now"] * 3)
        self.assertGreater(self.replicas["a"].store.get(b"k").version, ahead)

    def test_duplicate_keys_last_wins(self) -> None:
        """
        A key written twice in one command keeps its last value.
        """
        self.successResultOf(self.write([(b"k", b"1"), (b"k", b"2")]))
        self.assertEqual(self.values(b"k"), [b"2"] * 3)

    def test_read_falls_back(self) -> None:
        """
        A read skips a replica that fails and answers from the next.
        """
        self.successResultOf(self.write([(b"k", b"v")]))
        self.replicas["a"].broken = True
        self.assertEqual(self.successResultOf(self.read([b"k", b"x"])), [b"v", None])

    def test_read_all_down(self) -> None:
        """
        A read with no replica answering fails rather than saying missing.
        """
        for r in self.replicas.values():
            r.broken = True
        self.failureResultOf(self.read([b"k"]), TransactionFailed)


class QueueAndRetryTests(ThreeReplicasCase):
    """
    The coordinator's own writes to one key wait for each other instead of
    conflicting; conflicts with other coordinators are tried again for
    C{retry_for} seconds.
    """

    options = {"retries": 1000, "retry_for": 2.0}

    def test_same_key_queues(self) -> None:
        """
        A second write to a key whose first write is still in progress
        waits for it, then commits; nothing is aborted, the last write wins.
        """
        self.replicas["b"].hung = True  # the first write's prepare waits on b
        first = deferred(self.coordinator.write, [(b"k", b"1")])
        self.replicas["b"].hung = False
        second = deferred(self.coordinator.write, [(b"k", b"2"), (b"j", b"2")])
        other = deferred(self.coordinator.write, [(b"x", b"3")])
        self.assertEqual(self.successResultOf(other), [False])  # another key: not held up
        prepares = [t for n, what, t in self.events if what == "prepare" and n == "a"]
        self.assertEqual(len(prepares), 2)  # the first write and the one on another key
        self.assertNoResult(second)
        self.clock.advance(RPC_TIMEOUT)  # b's prepare times out: the first write aborts
        self.failureResultOf(first, TransactionFailed)
        self.assertEqual(self.successResultOf(second), [False, False])
        self.assertEqual(self.values(b"k"), [b"2"] * 3)
        self.assertEqual(self.coordinator.stats["retries"], 0)

    def test_conflict_tried_for_retry_for(self) -> None:
        """
        A key locked by another coordinator's write makes this write try
        again until C{retry_for} has passed, then fail with nothing applied.
        """
        self.replicas["c"].participant.prepare("other", [(b"k", b"x")], ["c"], 2000)
        d = deferred(self.coordinator.write, [(b"k", b"v")])
        for _ in range(19):
            self.clock.advance(0.1)
        self.assertNoResult(d)
        for _ in range(3):
            self.clock.advance(0.1)
        f = self.failureResultOf(d, TransactionFailed)
        self.assertIn("conflict", f.value.reason)
        self.assertGreater(self.coordinator.stats["retries"], 5)
        self.assertEqual(self.values(b"k"), [None] * 3)

    def test_group_retry_pauses_grow_from_short(self) -> None:
        """
        A gathered transaction that met a conflict is tried again after a
        short pause (at most 10 ms), as a write is, not after the longest
        (as when its retries were counted from C{retries} - GROUP_RETRIES).
        """
        participant = self.replicas["c"].participant
        participant.prepare("older", [(b"bad", b"x")], ["c"], 2000, "z", priority=b"\x00" * 12)
        self.coordinator.hold()
        for key in (b"good", b"bad"):
            deferred(self.coordinator.write, [(key, b"1")])
        self.coordinator.release()
        self.clock.advance(0)
        prepares = len([e for e in self.events if e[1] == "prepare"])
        self.clock.advance(0.01)
        self.assertEqual(len([e for e in self.events if e[1] == "prepare"]), prepares + 3)
        participant.abort("older")


class RetryRefusedTests(SynchronousTestCase):
    """
    A write tried again asks again whether the node takes writes.
    """

    def test_retry_refused_when_cut_off(self) -> None:
        """
        A write that met a conflict, tried again once the node sees only
        itself (it slept, or is cut off: its ring now makes it the only
        replica), is refused as a new write would be: it is not committed
        on this node alone and acknowledged.
        """
        clock = Clock()
        clock.advance(1000)
        events: list = []
        replicas = {n: ScriptedReplica(n, events, clock) for n in "abc"}
        view = ["a", "b", "c"]
        refusal: list = [None]
        coordinator = Coordinator(
            "a", HybridClock(clock.seconds, node_tag("a")), clock, lambda key: list(view),
            replicas.__getitem__, rng=random.Random(0), local=replicas["a"].participant,
            refusal=lambda: refusal[0],
        )
        replicas["c"].participant.prepare("other", [(b"k", b"x")], ["c"], 2000)
        d = deferred(coordinator.write, [(b"k", b"v")])
        self.assertNoResult(d)  # c voted no (conflict): tried again after a pause
        view[:] = ["a"]
        refusal[0] = "only 1 live members in view, a write needs 3; nothing applied"
        clock.advance(1)
        f = self.failureResultOf(d, TransactionFailed)
        self.assertIn("only 1 live members", f.value.reason)
        self.assertEqual(replicas["a"].store.get(b"k").value, None)


class AloneTests(SynchronousTestCase):
    """
    A coordinator that is the only replica of its keys (a one-node
    cluster) commits and reads at once, without recording a transaction.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.events: list = []
        self.replica = ScriptedReplica("a", self.events, self.clock)
        self.coordinator = Coordinator(
            "a", HybridClock(self.clock.seconds, node_tag("a")), self.clock,
            lambda key: ["a"], lambda node: self.replica, local=self.replica.participant,
        )

    def test_write_and_read_at_once(self) -> None:
        """
        The result comes back from the call itself, and nothing is left
        behind: no lock, no transaction to remember, no timer.
        """
        done: list = []
        self.assertEqual(self.coordinator.write([(b"k", b"v"), (b"j", None)], done.append),
                         [False, False])
        self.assertEqual(self.coordinator.write([(b"k", b"w")], done.append), [True])
        self.assertEqual(self.coordinator.read([b"k", b"j"], done.append), [b"w", None])
        self.assertEqual(self.events, [])  # both held here (j as a tombstone)
        self.assertEqual(self.coordinator.read([b"z"], done.append), [None])
        self.assertEqual(self.events, [("a", "read", "")])  # not held: asked the usual way
        self.assertEqual(done, [])
        self.assertEqual(self.replica.participant.in_doubt, 0)
        self.assertEqual(self.coordinator.query("a:1:1"), Outcome("unknown"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_locked_key_takes_the_long_way(self) -> None:
        """
        A key locked by a prepared transaction is not written past the lock:
        the write waits (wait-die) like any other, and commits after it.
        """
        participant = self.replica.participant
        participant.prepare("young", [(b"k", b"x")], ["a"], 2000, "b", priority=b"\xff" * 12)
        d = deferred(self.coordinator.write, [(b"k", b"v")])
        self.assertNoResult(d)
        participant.abort("young")
        self.assertEqual(self.successResultOf(d), [False])
        self.assertEqual(self.replica.store.get(b"k").value, b"v")

    def test_read_here_stops_at_a_write_under_way(self) -> None:
        """
        C{read_here} (a one-node cluster's pipelined GETs) stops at a key
        whose write waits for a lock: the read after it answers what the
        write wrote.
        """
        participant = self.replica.participant
        self.coordinator.write([(b"k", b"old"), (b"j", b"1")], print)
        participant.prepare("young", [(b"k", b"x")], ["a"], 2000, "b", priority=b"\xff" * 12)
        write = deferred(self.coordinator.write, [(b"k", b"new")])
        self.assertEqual(self.coordinator.read_here([b"j", b"k", b"j"]), [b"1"])
        read = deferred(self.coordinator.read, [b"k"])
        self.assertNoResult(read)
        participant.abort("young")
        self.successResultOf(write)
        self.assertEqual(self.successResultOf(read), [b"new"])

    def test_write_each_and_read_here(self) -> None:
        """
        C{write_each} commits writes in order, each at its own version, up
        to the first whose key is locked; C{read_here} reads up to the
        first key not held. Neither records anything.
        """
        store = self.replica.store
        participant = self.replica.participant
        participant.prepare("young", [(b"k", b"x")], ["a"], 2000, "b", priority=b"\xff" * 12)
        writes = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"k", b"4"), (b"c", b"5")]
        self.assertEqual(self.coordinator.write_each(writes), 3)
        self.assertEqual([store.get(key).value for key in [b"a", b"b", b"k", b"c"]],
                         [b"3", b"2", None, None])
        self.assertLess(store.version_of(b"b"), store.version_of(b"a"))
        self.assertEqual(self.coordinator.read_here([b"a", b"b", b"none", b"a"]), [b"3", b"2"])
        self.assertEqual(self.coordinator.stats["commits"], 3)
        self.assertEqual((self.events, participant.in_doubt), ([], 1))

    def test_local_writes_go_past_a_version_from_ahead(self) -> None:
        """
        A key held at a version from a clock ahead of this node's is still
        written by a one-step local write, alone or in a run, at a greater
        version.
        """
        store = self.replica.store
        ahead = HybridClock(lambda: 5000.0, 1).next()
        store.apply(b"k", ahead, b"from the future")
        store.apply(b"j", ahead, b"from the future")
        self.assertEqual(self.coordinator.write([(b"k", b"now")], lambda result: None), [True])
        self.assertEqual(self.coordinator.write_each([(b"j", b"now")]), 1)
        for key in [b"k", b"j"]:
            self.assertEqual(store.get(key).value, b"now")
            self.assertGreater(store.version_of(key), ahead)

    def test_each_alone_needs_no_lookups(self) -> None:
        """
        A coordinator told it is alone (a one-node cluster) does not look up
        the replicas of each key for C{write_each} and C{read_here}.
        """
        looked: list = []

        def replicas_for(key: bytes) -> list:
            looked.append(key)
            return ["a"]

        coordinator = Coordinator(
            "a", HybridClock(self.clock.seconds, node_tag("a")), self.clock,
            replicas_for, lambda node: self.replica, local=self.replica.participant,
            alone=lambda: True,
        )
        self.assertEqual(coordinator.write_each([(b"x", b"1"), (b"y", b"2")]), 2)
        self.assertEqual(coordinator.read_here([b"x", b"y"]), [b"1", b"2"])
        self.assertEqual(looked, [])

    def test_each_only_where_alone(self) -> None:
        """
        Keys other nodes replicate too are neither written by
        C{write_each} nor read by C{read_here}.
        """
        coordinator = Coordinator(
            "a", HybridClock(self.clock.seconds, node_tag("a")), self.clock,
            lambda key: ["a"] if key == b"mine" else ["b", "a"], lambda node: self.replica,
            local=self.replica.participant,
        )
        self.replica.store.apply(b"shared", b"\x00" * 11 + b"\x01", b"old")
        self.assertEqual(coordinator.write_each([(b"mine", b"1"), (b"shared", b"2")]), 1)
        self.assertEqual(self.replica.store.get(b"shared").value, b"old")
        self.assertEqual(coordinator.read_here([b"shared"]), [b"old"])  # a replica: read here
        coordinator = Coordinator(
            "a", HybridClock(self.clock.seconds, node_tag("a")), self.clock,
            lambda key: ["b"], lambda node: self.replica, local=self.replica.participant,
        )
        self.assertEqual(coordinator.read_here([b"shared"]), [])


    def test_local_write_waits_behind_queued_write(self) -> None:
        """
        With one replica per key, a write only this node holds does not
        overtake an earlier queued write of the same key (the writes of a
        pipeline apply in order).
        """
        remote = ScriptedReplica("b", self.events, self.clock)
        replicas = {"a": self.replica, "b": remote}
        coordinator = Coordinator(
            "a", HybridClock(self.clock.seconds, node_tag("a")), self.clock,
            lambda key: ["b"] if key == b"k1" else ["a"], replicas.__getitem__,
            local=self.replica.participant,
        )
        remote.hung = True
        first = deferred(coordinator.write, [(b"k1", b"a")])
        remote.hung = False
        second = deferred(coordinator.write, [(b"k1", b"b"), (b"k2", b"c")])
        third = deferred(coordinator.write, [(b"k2", b"d")])
        self.assertNoResult(third)
        self.clock.advance(RPC_TIMEOUT)
        self.failureResultOf(first, TransactionFailed)
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual(self.replica.store.get(b"k2").value, b"d")

class GroupTests(ThreeReplicasCase):
    """
    Writes started between hold() and release() (a client's pipelined
    commands) go to the replicas as one transaction, and still answer one
    by one.
    """

    options = {"retries": 2}

    def test_one_transaction_for_many_writes(self) -> None:
        """
        Three writes held together: one prepare and one commit per replica,
        each write answers with its own keys' flags.
        """
        self.successResultOf(deferred(self.coordinator.write, [(b"old", b"0")]))
        self.events.clear()
        self.coordinator.hold()
        writes = [deferred(self.coordinator.write, w) for w in (
            [(b"k1", b"1")], [(b"old", b"2"), (b"k2", b"2")], [(b"k3", None)])]
        for d in writes:
            self.assertNoResult(d)
        self.coordinator.release()
        for d in writes:
            self.assertNoResult(d)  # started at the end of the reactor's turn
        self.clock.advance(0)
        self.assertEqual([self.successResultOf(d) for d in writes],
                         [[False], [True, False], [False]])
        self.assertEqual([w for _, w, _ in self.events], ["prepare"] * 3 + ["commit"] * 3)
        self.assertEqual(self.values(b"old"), [b"2"] * 3)
        self.assertEqual(self.coordinator.stats["commits"], 2)

    def test_conflict_sets_one_write_aside(self) -> None:
        """
        A gathered transaction one of whose writes meets a lock conflict at
        a replica commits the others at once, without it, on every
        replica; that write is tried again alone, and commits once the lock
        is free.
        """
        participant = self.replicas["c"].participant
        participant.prepare("older", [(b"bad", b"x")], ["c"], 2000, "z", priority=b"\x00" * 12)
        self.coordinator.hold()
        good = deferred(self.coordinator.write, [(b"good", b"1")])
        bad = deferred(self.coordinator.write, [(b"bad", b"1")])
        self.coordinator.release()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(good), [False])
        self.assertEqual(self.values(b"good"), [b"1"] * 3)
        self.assertNoResult(bad)
        self.assertEqual(self.values(b"bad"), [None] * 3)  # on no replica, nor staged
        self.assertEqual([r.participant.locked_keys for r in self.replicas.values()],
                         [0, 0, 1])  # only "older" holds a lock
        participant.abort("older")
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(bad), [False])
        self.assertEqual(self.values(b"bad"), [b"1"] * 3)
        self.assertEqual(self.coordinator.stats,
                         {"commits": 2, "aborts": 0, "retries": 1, "unconfirmed": 0})

    def test_command_set_aside_whole(self) -> None:
        """
        A gathered command of several keys one of which meets a lock
        conflict is left out whole: none of its keys is applied anywhere
        until it commits, all together, on its own.
        """
        participant = self.replicas["b"].participant
        participant.prepare("older", [(b"m2", b"x")], ["b"], 2000, "z", priority=b"\x00" * 12)
        self.coordinator.hold()
        mset = deferred(self.coordinator.write, [(b"m1", b"1"), (b"m2", b"1")])
        other = deferred(self.coordinator.write, [(b"k", b"1")])
        self.coordinator.release()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(other), [False])
        self.assertNoResult(mset)
        self.assertEqual(self.values(b"m1") + self.values(b"m2"), [None] * 6)
        participant.abort("older")
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(mset), [False, False])
        self.assertEqual(self.values(b"m1") + self.values(b"m2"), [b"1"] * 6)

    def test_runs_in_a_group_set_aside_one_write(self) -> None:
        """
        Two clients' runs gathered into one transaction: a write of one run
        that meets a conflict is left out and tried again; every other
        write of both runs commits at once; the run answers when all of its
        writes did, each with its own result.
        """
        participant = self.replicas["a"].participant
        participant.prepare("older", [(b"r1b", b"x")], ["a"], 2000, "z", priority=b"\x00" * 12)
        first: list = []
        second: list = []
        self.coordinator.hold()
        self.coordinator.write_run([(b"r1a", b"1"), (b"r1b", b"1"), (b"r1c", b"1")],
                                   first.append)
        self.coordinator.write_run([(b"r2a", b"2"), (b"r2b", b"2")], second.append)
        self.coordinator.release()
        self.clock.advance(0)
        self.assertEqual(second, [[None, None]])
        self.assertEqual(first, [])
        self.assertEqual([self.values(k) for k in (b"r1a", b"r1b", b"r1c")],
                         [[b"1"] * 3, [None] * 3, [b"1"] * 3])
        participant.abort("older")
        self.clock.advance(0.1)
        self.assertEqual(first, [[None, None, None]])
        self.assertEqual(self.values(b"r1b"), [b"1"] * 3)

    def test_vote_leaving_out_what_it_was_not_sent(self) -> None:
        """
        A vote that names writes a replica was not sent (a broken peer) is
        taken as no: nothing is committed anywhere, and the writes fail.
        """
        self.replicas["b"].vote_no = Vote(True, skipped=(5,))
        self.coordinator.hold()
        writes = [deferred(self.coordinator.write, [(k, b"1")]) for k in (b"k1", b"k2")]
        self.coordinator.release()
        self.clock.advance(0)
        for d in writes:
            self.assertIn("left out writes it was not sent",
                          self.failureResultOf(d, TransactionFailed).value.reason)
        self.assertEqual(self.values(b"k1") + self.values(b"k2"), [None] * 6)
        single = deferred(self.coordinator.write, [(b"k3", b"1")])
        self.clock.advance(0)  # (a write alone may not leave anything out)
        self.failureResultOf(single, TransactionFailed)
        self.assertEqual(self.values(b"k3"), [None] * 3)

    def test_conflict_on_every_write_retries_the_group_whole(self) -> None:
        """
        A gathered transaction whose every write meets a lock conflict at
        some replica (each at another) commits nothing and is tried again
        whole once the locks are free: its writes still commit together.
        """
        self.replicas["b"].participant.prepare("older1", [(b"k1", b"x")], ["b"], 2000, "z",
                                                priority=b"\x00" * 12)
        self.replicas["c"].participant.prepare("older2", [(b"k2", b"x")], ["c"], 2000, "z",
                                                priority=b"\x00" * 12)
        self.coordinator.hold()
        first = deferred(self.coordinator.write, [(b"k1", b"1")])
        second = deferred(self.coordinator.write, [(b"k2", b"2")])
        self.coordinator.release()
        self.clock.advance(0)
        self.assertNoResult(first)
        self.assertEqual(self.values(b"k1") + self.values(b"k2"), [None] * 6)
        self.replicas["b"].participant.abort("older1")
        self.replicas["c"].participant.abort("older2")
        self.clock.advance(0.1)
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)),
                         ([False], [False]))
        self.assertEqual(self.values(b"k1") + self.values(b"k2"), [b"1"] * 3 + [b"2"] * 3)
        self.assertEqual(self.coordinator.stats,
                         {"commits": 1, "aborts": 1, "retries": 1, "unconfirmed": 0})

    def test_queued_writes_go_together(self) -> None:
        """
        Writes queued behind one of this node's writes (as all are while
        one waits for a key) start together when they can, in one
        transaction, rather than one by one; the write of the busy key
        still waits for it.
        """
        participant = self.replicas["c"].participant
        participant.prepare("older", [(b"k1", b"x")], ["c"], 2000, "z", priority=b"\x00" * 12)
        first = self.write([(b"k1", b"1")])  # conflicts at c, tried again later
        self.coordinator.hold()
        second = self.write([(b"k1", b"2")])
        others = [self.write([(b"k2", b"3")]), self.write([(b"k3", b"4")])]
        self.coordinator.release()
        self.clock.advance(0)
        self.assertEqual([self.successResultOf(d) for d in others], [[False], [False]])
        self.assertEqual(self.coordinator.stats["commits"], 1)
        self.assertNoResult(second)
        participant.abort("older")
        for _ in range(10):
            self.clock.advance(0.1)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(self.values(b"k1"), [b"2"] * 3)

    def test_blocked_write_fails_alone(self) -> None:
        """
        A gathered write whose key stays locked by an older write elsewhere
        is tried again alone until it gives up and fails; the other commits
        at once; nothing of the blocked one is applied.
        """
        self.replicas["c"].participant.prepare("older", [(b"bad", b"x")], ["c"], 2000,
                                               "z", priority=b"\x00" * 12)
        self.coordinator.hold()
        good = deferred(self.coordinator.write, [(b"good", b"1")])
        bad = deferred(self.coordinator.write, [(b"bad", b"1")])
        self.coordinator.release()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(good), [False])
        self.assertNoResult(bad)  # tried again after a pause
        for _ in range(30):
            self.clock.advance(0.1)
        self.failureResultOf(bad, TransactionFailed)
        self.assertEqual(self.values(b"good"), [b"1"] * 3)
        self.assertEqual(self.values(b"bad"), [None] * 3)


class ActiveLimitTests(ThreeReplicasCase):
    """
    With C{max_active} transactions in flight, writes that come meanwhile
    wait and start together as one transaction when one ends, or after
    C{max_wait}.
    """

    options = {"max_active": 1, "group_size": 4, "max_wait": 0.05}

    def setUp(self) -> None:
        super().setUp()
        for replica in self.replicas.values():
            replica.delay = 0.01  # each call is answered 10 ms later

    def prepares(self) -> list:
        """
        The transaction (its number) of each prepare the replicas got.
        """
        return [txid for _, what, txid in self.events if what == "prepare"]

    def test_writes_in_the_meantime_go_together(self) -> None:
        """
        A write while one transaction is in flight is not sent; when that
        transaction ends, it and the other writes that came meanwhile go
        out as one transaction, and each answers.
        """
        first = self.write([(b"k1", b"1")])
        self.assertEqual(len(self.prepares()), 3)  # a lone write starts at once
        later = [self.write([(b"k2", b"2")]), self.write([(b"k3", b"3"), (b"k4", None)])]
        self.clock.advance(0)
        self.assertEqual(len(self.prepares()), 3)
        self.clock.advance(0.01)  # votes: commits go out
        self.assertEqual(len(self.prepares()), 3)
        self.clock.advance(0.01)  # commits confirmed: the first is over
        self.assertEqual(self.successResultOf(first), [False])
        self.clock.advance(0)
        prepares = self.prepares()
        self.assertEqual(len(prepares), 6)
        self.assertEqual(len(set(prepares[3:])), 1)  # one transaction for both
        self.assertNotEqual(prepares[3], prepares[0])
        for d in later:
            self.assertNoResult(d)
        self.clock.advance(0.01)
        self.clock.advance(0.01)
        self.assertEqual([self.successResultOf(d) for d in later], [[False], [False, False]])
        self.assertEqual(self.values(b"k3"), [b"3"] * 3)
        self.assertEqual(self.values(b"k4"), [None] * 3)
        self.assertEqual(self.coordinator.stats["commits"], 2)  # transactions

    def test_a_run_waits_too(self) -> None:
        """
        A run of pipelined SETs that comes while a transaction is in flight
        waits for it too, and then goes as one transaction.
        """
        first = self.write([(b"k0", b"0")])
        results: list = []
        count, outcome = self.coordinator.write_run([(b"k1", b"1"), (b"k2", b"2")],
                                                    results.append)
        self.assertEqual((count, outcome), (2, PENDING))
        self.assertEqual(len(self.prepares()), 3)  # not sent yet
        self.clock.advance(0.01)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(first), [False])
        self.clock.advance(0)
        self.assertEqual(len(self.prepares()), 6)
        self.assertEqual(len(set(self.prepares()[3:])), 1)
        self.clock.advance(0.01)
        self.clock.advance(0.01)
        self.assertEqual(results, [[None, None]])

    def test_a_full_group_starts_at_once(self) -> None:
        """
        Writes that wait for a transaction to end start at once, beyond
        C{max_active}, when they fill a transaction (C{group_size} writes):
        one never holds more.
        """
        first = self.write([(b"k0", b"0")])
        later = [self.write([(b"k%d" % i, b"1")]) for i in range(1, 6)]
        prepares = self.prepares()
        self.assertEqual(len(prepares), 6)  # the first, and k1 .. k4 at once
        self.assertEqual(len(set(prepares[3:])), 1)
        self.clock.advance(0.01)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(first), [False])
        self.assertEqual([self.successResultOf(d) for d in later[:4]], [[False]] * 4)
        self.assertNoResult(later[4])
        self.clock.advance(0)
        self.assertEqual(len(self.prepares()), 9)  # then k5, once they ended
        self.clock.advance(0.01)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(later[4]), [False])

    def test_a_replica_slow_to_answer_holds_nothing_back(self) -> None:
        """
        A transaction a replica does not answer stays in flight until the
        RPC timeout; writes that come meanwhile start after C{max_wait},
        not after it.
        """
        self.replicas["c"].hung = True
        first = self.write([(b"k1", b"1")])
        second = self.write([(b"k2", b"2")])
        self.clock.advance(0.04)
        self.assertEqual(len(self.prepares()), 3)
        self.clock.advance(0.01)
        self.assertEqual(len(self.prepares()), 6)
        self.clock.advance(RPC_TIMEOUT)  # c never voted: both abort
        self.replicas["c"].hung = False
        self.clock.advance(RPC_TIMEOUT)  # (c's abort times out too)
        for d in (first, second):
            self.failureResultOf(d, TransactionFailed)
        # neither is in flight any more: a write starts, and commits, at once
        for replica in self.replicas.values():
            replica.delay = 0.0
        self.assertEqual(self.successResultOf(self.write([(b"k3", b"3")])), [False])

    def test_a_queued_write_waits_no_longer_than_max_wait(self) -> None:
        """
        A write queued behind this node's write of the same key, freed
        while C{max_active} transactions are still in flight (a full group
        went beyond the limit), starts after C{max_wait} too, not when a
        replica slow to answer times out.
        """
        replica = self.replicas["c"]
        answers_later = replica.prepare

        def prepare(txid, writes, participants, priority, answer,  # type: ignore[no-untyped-def]
                    partial=False):
            if writes[0][0] == b"slow":  # c does not answer this one
                self.events.append(("c", "prepare", txid.rsplit(":", 1)[-1]))
                self.clock.callLater(RPC_TIMEOUT, answer, TimeoutError("timed out"))
            else:
                answers_later(txid, writes, participants, priority, answer, partial)

        replica.prepare = prepare  # type: ignore[method-assign]
        slow = self.write([(b"slow", b"0")])
        group = [self.write([(b"k%d" % i, b"1")]) for i in range(1, 5)]  # full: starts
        queued = self.write([(b"k1", b"2")])  # behind the group's write of k1
        self.assertEqual(len(self.prepares()), 6)
        self.clock.advance(0.01)
        self.clock.advance(0.01)
        self.assertEqual([self.successResultOf(d) for d in group], [[False]] * 4)
        self.assertEqual(len(self.prepares()), 6)  # slow is still in flight
        self.clock.advance(0.05)
        self.assertEqual(len(self.prepares()), 9)
        self.clock.advance(0.01)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(queued), [True])
        self.assertNoResult(slow)
        self.clock.advance(RPC_TIMEOUT)  # c's vote times out: abort
        self.clock.advance(0.01)
        self.failureResultOf(slow, TransactionFailed)

    def test_a_prepare_that_raises_frees_its_place(self) -> None:
        """
        A write whose prepare could not be sent (the call raised) is no
        longer in flight: the next write starts at once.
        """
        for replica in self.replicas.values():
            replica.delay = 0.0
        replica = self.replicas["b"]

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("cannot send")

        replica.prepare = broken  # type: ignore[method-assign]
        self.failureResultOf(self.write([(b"k1", b"1")]), RuntimeError)
        del replica.prepare  # (the class's again)
        self.assertEqual(self.successResultOf(self.write([(b"k2", b"2")])), [False])


class RunTests(ThreeReplicasCase):
    """
    A client's pipelined single-key writes as one run (L{Coordinator.write_run}):
    one transaction, each write still answered on its own.
    """

    options = {"retries": 2}

    def run_writes(self, writes: list) -> tuple[int, list]:
        """
        C{write_run(writes)}, settled: how many it took, and their results.
        """
        got: list = []
        count, results = self.coordinator.write_run(writes, got.append)
        if results is PENDING:
            self.assertEqual(got, [])
            return count, got
        return count, [results]

    def test_one_transaction(self) -> None:
        """
        The writes of a run go to each replica in one prepare and one
        commit; each commits, at one version.
        """
        writes = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
        self.assertEqual(self.run_writes(writes), (3, [[None] * 3]))
        self.assertEqual([w for _, w, _ in self.events], ["prepare"] * 3 + ["commit"] * 3)
        for key, value in writes:
            self.assertEqual(self.values(key), [value] * 3)
        self.assertEqual(self.coordinator.stats["commits"], 1)

    def test_stops_at_a_busy_or_repeated_key(self) -> None:
        """
        A run ends before a key an earlier write of the run writes, or one
        a write of this node holds; fewer than two writes are no run.
        """
        self.assertEqual(self.run_writes([(b"a", b"1"), (b"b", b"1"), (b"a", b"2")])[0], 2)
        self.replicas["b"].hung = True
        held = self.write([(b"k", b"1")])
        self.replicas["b"].hung = False
        self.assertEqual(self.coordinator.write_run([(b"x", b"1"), (b"k", b"2")], print),
                         (0, None))
        self.assertEqual(self.run_writes([(b"x", b"1"), (b"y", b"1"), (b"k", b"2")])[0], 2)
        self.clock.advance(RPC_TIMEOUT * 2)
        self.failureResultOf(held, TransactionFailed)

    def test_blocked_write_fails_alone(self) -> None:
        """
        A write of a run whose key stays locked by an older write elsewhere
        is left out of the run's transaction, which commits the others at
        once; it is tried again alone until it gives up and fails; nothing
        of it is applied.
        """
        self.replicas["c"].participant.prepare("older", [(b"bad", b"x")], ["c"], 2000,
                                               "z", priority=b"\x00" * 12)
        count, results = self.run_writes([(b"good", b"1"), (b"bad", b"1"), (b"fine", b"1")])
        self.assertEqual(count, 3)
        self.clock.advance(0)
        self.assertEqual(results, [])  # the blocked write is tried again after a pause
        self.assertEqual(self.values(b"good"), [b"1"] * 3)
        self.assertEqual(self.values(b"fine"), [b"1"] * 3)
        for _ in range(30):
            self.clock.advance(0.1)
        [[good, bad, fine]] = results
        self.assertEqual((good, fine), (None, None))
        self.assertIsInstance(bad, TransactionFailed)
        self.assertEqual(self.values(b"bad"), [None] * 3)

    def test_unconfirmed_commit(self) -> None:
        """
        A run committed but not confirmed by a replica says so for each
        write: none is told it failed, none that all is well.
        """
        replica = self.replicas["c"]
        replica.commit = lambda txid, version, writes, answer, skip: answer(  # type: ignore
            ConnectionError("c lost"))
        count, results = self.run_writes([(b"a", b"1"), (b"b", b"2")])
        self.assertEqual(count, 2)
        [[first, second]] = results
        self.assertIs(first, second)
        self.assertIn("committed but not confirmed", first.reason)
        self.assertEqual(self.values(b"a")[:2], [b"1"] * 2)
        self.coordinator.stop()

    def test_run_over_replica_sets_leaves_out_the_right_write(self) -> None:
        """
        A run whose keys have different replicas (more nodes than copies):
        a replica that finds one key locked leaves out that write, and the
        commit leaves out that one, everywhere; the others commit.
        """
        ac, bc = ["a", "c"], ["b", "c"]
        where = {b"k0": ac, b"k1": bc, b"k2": ac}
        coordinator = Coordinator(
            "a", HybridClock(self.clock.seconds, node_tag("a")), self.clock, where.__getitem__,
            self.replicas.__getitem__, rng=random.Random(0),
            replicas_of=lambda keys: [where[key] for key in keys])
        self.replicas["c"].participant.prepare("older", [(b"k1", b"x")], ["c"], 2000, "z",
                                               priority=b"\x00" * 12)
        got: list = []
        count, _ = coordinator.write_run([(b"k0", b"1"), (b"k1", b"1"), (b"k2", b"1")],
                                         got.append)
        self.assertEqual(count, 3)
        self.clock.advance(0)
        self.assertEqual(got, [])  # k1 is tried again
        self.assertEqual([self.values(k) for k in (b"k0", b"k1", b"k2")],
                         [[b"1", None, b"1"], [None, None, None], [b"1", None, b"1"]])
        self.replicas["c"].participant.abort("older")
        self.clock.advance(0.1)
        self.assertEqual(got, [[None, None, None]])
        self.assertEqual(self.values(b"k1"), [None, b"1", b"1"])

    def test_run_tried_again_in_a_group_is_not_split_after_commit(self) -> None:
        """
        Runs that met conflicts on every key and are tried again together,
        as one gathered transaction, that commits unconfirmed: each write
        says so, and none is run again.
        """
        class Middle(random.Random):
            def uniform(self, a: float, b: float) -> float:
                return (a + b) / 2  # (both runs try again at once)

        self.coordinator._rng = Middle()
        keys = [b"x1", b"y1", b"x2", b"y2"]
        self.replicas["c"].participant.prepare("older", [(k, b"x") for k in keys], ["c"],
                                               2000, "z", priority=b"\x00" * 12)
        first = self.run_writes([(b"x1", b"1"), (b"y1", b"1")])[1]
        second = self.run_writes([(b"x2", b"2"), (b"y2", b"2")])[1]
        self.clock.advance(0)
        self.replicas["c"].participant.abort("older")
        self.replicas["b"].commit = lambda txid, version, writes, answer, skip: answer(  # type: ignore
            ConnectionError("b lost"))
        self.events.clear()
        for _ in range(20):
            self.clock.advance(0.001)
        self.assertEqual([what for _, what, _ in self.events].count("prepare"), 3)  # one try
        for results in (first, second):
            [[one, two]] = results
            self.assertIn("committed but not confirmed", one.reason)
            self.assertIs(one, two)
        self.coordinator.stop()

    def test_no_longer_than_a_group(self) -> None:
        """
        A run takes no more writes than a gathered transaction may hold
        (group_size, group_bytes): the rest make the next run.
        """
        self.coordinator._group_size = 4
        writes = [(b"k%d" % i, b"v" * 10) for i in range(6)]
        self.assertEqual(self.run_writes(writes)[0], 4)
        self.coordinator._group_bytes = 40  # three writes of 12 bytes
        self.assertEqual(self.run_writes(writes)[0], 3)
        self.assertEqual(self.coordinator.stats["commits"], 2)

    def test_in_a_group(self) -> None:
        """
        Runs and writes held together go as one transaction; each run
        answers once, for all its writes.
        """
        self.coordinator.hold()
        first: list = []
        second: list = []
        self.assertEqual(self.coordinator.write_run([(b"a", b"1"), (b"b", b"1")], first.append),
                         (2, PENDING))
        single = self.write([(b"c", None)])
        self.assertEqual(
            self.coordinator.write_run([(b"d", b"1"), (b"e", b"1")], second.append),
            (2, PENDING))
        self.coordinator.release()
        self.clock.advance(0)
        self.assertEqual((first, second), ([[None, None]], [[None, None]]))
        self.assertEqual(self.successResultOf(single), [False])
        self.assertEqual([w for _, w, _ in self.events], ["prepare"] * 3 + ["commit"] * 3)


class ReadAfterWriteTests(ThreeReplicasCase):
    """
    A read waits for this node's writes of its keys that came before it,
    as a client's pipelined GET after a SET must see it.
    """

    def test_read_waits_for_the_write(self) -> None:
        """
        A read of a key whose write is under way answers once the write
        is over, with what it wrote; a read of other keys does not wait.
        """
        self.successResultOf(self.write([(b"k", b"old")]))
        self.coordinator.hold()  # the write starts at the end of the turn
        write = self.write([(b"k", b"new")])
        read = self.read([b"k", b"k", b"j"])
        other = self.read([b"j"])
        later = self.write([(b"k", b"newer")])
        self.coordinator.release()
        self.assertEqual(self.successResultOf(other), [None])
        self.assertNoResult(read)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(write), [True])
        self.assertEqual(self.successResultOf(read), [b"new", b"new", None])
        self.assertEqual(self.successResultOf(later), [True])
        self.assertEqual(self.values(b"k"), [b"newer"] * 3)

    def test_read_after_failed_write(self) -> None:
        """
        A read that waited for a write that failed reads what is there.
        """
        self.successResultOf(self.write([(b"k", b"old")]))
        self.replicas["b"].hung = True
        write = self.write([(b"k", b"new")])
        self.replicas["b"].hung = False
        read = self.read([b"k"])
        self.assertNoResult(read)
        self.clock.advance(RPC_TIMEOUT * 2)
        self.failureResultOf(write, TransactionFailed)
        self.assertEqual(self.successResultOf(read), [b"old"])
