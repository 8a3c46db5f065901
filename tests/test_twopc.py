"""
Tests for dhtwisted.twopc: the participant's locks and staging, and the
coordinator's all-or-nothing writes over fake replicas.
"""

from __future__ import annotations

import random
from typing import Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from dhtwisted.interfaces import IReplica
from dhtwisted.store import Record, Store
from dhtwisted.twopc import Coordinator, LocalReplica, Participant, TransactionFailed, Vote
from dhtwisted.version import HybridClock, node_tag


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
        self.assertEqual(self.participant.status("t1"), ("committed", self.version))

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
        self.assertEqual(self.participant.status("old"), ("prepared", b""))

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
    fail, or never answer.
    """

    def __init__(self, name: str, events: list, clock: Clock) -> None:
        self.name = name
        self.events = events
        self.participant, self.store = _participant(clock, name)
        self.local = LocalReplica(name, self.participant, self.store, lambda: clock.seconds() + 10)
        self.vote_no: Optional[Vote] = None
        self.broken = False
        self.hung = False

    def _call(self, what: str, txid: str, run):  # type: ignore[no-untyped-def]
        self.events.append((self.name, what, txid.rsplit(":", 1)[-1]))
        if self.broken:
            return fail(ConnectionError(f"{self.name} is down"))
        if self.hung:
            return Deferred()
        return run()

    def prepare(self, txid: str, writes: list, participants: list,
                priority: bytes = b"") -> Deferred:
        """
        Vote, as scripted.
        """
        if self.vote_no is not None:
            return self._call("prepare", txid, lambda: succeed(self.vote_no))
        return self._call("prepare", txid,
                          lambda: self.local.prepare(txid, writes, participants, priority))

    def commit(self, txid: str, version: bytes, writes: Optional[list] = None) -> Deferred:
        """
        Commit, as scripted.
        """
        return self._call("commit", txid, lambda: self.local.commit(txid, version, writes))

    def abort(self, txid: str) -> Deferred:
        """
        Abort, as scripted.
        """
        return self._call("abort", txid, lambda: self.local.abort(txid))

    def read(self, keys: list) -> Deferred:
        """
        Read, as scripted.
        """
        self.events.append((self.name, "read", ""))
        if self.broken:
            return fail(ConnectionError(f"{self.name} is down"))
        return self.local.read(keys)


class CoordinatorTests(SynchronousTestCase):
    """
    The coordinator over three scripted replicas that hold every key.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.events: list = []
        self.replicas = {n: ScriptedReplica(n, self.events, self.clock) for n in "abc"}
        self.coordinator = Coordinator(
            "a", HybridClock(self.clock.seconds, node_tag("a")), self.clock,
            lambda key: ["a", "b", "c"], self.replicas.__getitem__, retries=2,
            rng=random.Random(0),
        )

    def values(self, key: bytes) -> list:
        """
        The value each replica holds for C{key}.
        """
        return [r.store.get(key).value for r in self.replicas.values()]

    def test_commit_everywhere(self) -> None:
        """
        With every vote yes, every replica commits; then the write answers.
        """
        d = self.coordinator.write([(b"k", b"v"), (b"j", b"w")])
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
        f = self.failureResultOf(self.coordinator.write([(b"k", b"v")]), TransactionFailed)
        self.assertIn("disk on fire", f.value.reason)
        self.assertEqual(self.values(b"k"), [None] * 3)
        self.assertEqual(sorted(w for _, w, _ in self.events if w != "prepare"), ["abort"] * 3)
        self.assertEqual([r.participant.locked_keys for r in self.replicas.values()], [0] * 3)

    def test_unreachable_replica_aborts(self) -> None:
        """
        A replica that cannot be reached counts as a no vote.
        """
        self.replicas["c"].broken = True
        f = self.failureResultOf(self.coordinator.write([(b"k", b"v")]), TransactionFailed)
        self.assertIn("replica c did not answer", f.value.reason)
        self.assertEqual(self.values(b"k"), [None] * 3)

    def test_prepare_timeout_aborts(self) -> None:
        """
        A replica that never answers prepare counts as a no vote after the
        RPC timeout: the others abort and the client gets ERR, not ok.
        """
        self.replicas["b"].hung = True
        d = self.coordinator.write([(b"k", b"v")])
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
        d = self.coordinator.write([(b"k", b"v")])
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
        d = self.coordinator.write([(b"k", b"v")])
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
        self.successResultOf(self.coordinator.write([(b"k", b"now")]))
        self.assertEqual(self.values(b"k"), [b"now"] * 3)
        self.assertGreater(self.replicas["a"].store.get(b"k").version, ahead)

    def test_duplicate_keys_last_wins(self) -> None:
        """
        A key written twice in one command keeps its last value.
        """
        self.successResultOf(self.coordinator.write([(b"k", b"1"), (b"k", b"2")]))
        self.assertEqual(self.values(b"k"), [b"2"] * 3)

    def test_read_falls_back(self) -> None:
        """
        A read skips a replica that fails and answers from the next.
        """
        self.successResultOf(self.coordinator.write([(b"k", b"v")]))
        self.replicas["a"].broken = True
        self.assertEqual(self.successResultOf(self.coordinator.read([b"k", b"x"])), [b"v", None])

    def test_read_all_down(self) -> None:
        """
        A read with no replica answering fails rather than saying missing.
        """
        for r in self.replicas.values():
            r.broken = True
        self.failureResultOf(self.coordinator.read([b"k"]), TransactionFailed)
