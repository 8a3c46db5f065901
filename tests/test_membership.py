"""
Tests for dhtwisted.membership: the merge rules of gossip, ageing of silent
members, the version that tells the ring to rebuild, and join checks.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.membership import ALIVE, DEAD, LEFT, SUSPECT, Member, Membership, Refused

FAIL_AFTER = 15.0
REMOVE_AFTER = 30.0
T0 = 1000.0  # when the tables below are made

_FEW = settings(max_examples=200, deadline=None)


def member(node_id: str, generation: int = 5, heartbeat: int = 10, status: str = ALIVE,
           address: Optional[str] = None, tokens: Optional[tuple[int, ...]] = None) -> Member:
    """
    A member; its address and token follow from its id unless given.
    """
    port = 9000 + sum(map(ord, node_id)) % 1000
    return Member(
        node_id=node_id,
        address=address or f"127.0.0.1:{port}",
        tokens=tokens or (sum(map(ord, node_id)) * 97 % 65536,),
        generation=generation,
        heartbeat=heartbeat,
        status=status,
    )


def table(now: float = T0) -> Membership:
    """
    The view of node C{me}, alone.
    """
    return Membership(member("me", generation=1, heartbeat=0), now, FAIL_AFTER, REMOVE_AFTER)


def knowing(x: Member, now: float = T0) -> Membership:
    """
    A table that knows C{x}, heard at C{now}, in the status C{x} says:
    suspect and dead are reached by letting time pass, left by gossip.
    """
    t = table(now)
    alive = dataclasses.replace(x, status=ALIVE)
    if x.status == LEFT:
        t.merge([dataclasses.replace(alive, heartbeat=x.heartbeat - 1)], now)
        t.merge([x], now)
    elif x.status in (SUSPECT, DEAD):
        t.merge([alive], now - {SUSPECT: 8, DEAD: 16}[x.status])
        t.check(now)
    else:
        t.merge([x], now)
    assert t.get(x.node_id) == x, (x, t.get(x.node_id))
    return t


def state(t: Membership, node_id: str) -> Optional[tuple[str, int, int]]:
    """
    What C{t} knows of C{node_id}: status, generation, heartbeat.
    """
    m = t.get(node_id)
    return None if m is None else (m.status, m.generation, m.heartbeat)


class MergeRuleTests(SynchronousTestCase):
    """
    L{Membership.merge} applies gossip by the rules of generations and
    heartbeats.
    """

    def test_table(self) -> None:
        """
        Each known state of a member and each piece of gossip about it give the expected state.
        """
        now = T0 + 5
        x = "x"
        # (what is known of x, gossip, expected state, expected change)
        cases = [
            # a new member is learned as alive, whatever the sender thought
            (None, member(x, 5, 10, ALIVE), (ALIVE, 5, 10), (x, "", ALIVE)),
            (None, member(x, 5, 10, SUSPECT), (ALIVE, 5, 10), (x, "", ALIVE)),
            # news of the dead or departed is not learned
            (None, member(x, 5, 10, DEAD), None, None),
            (None, member(x, 5, 10, LEFT), None, None),
            # a higher heartbeat refreshes and revives
            (member(x, 5, 10, ALIVE), member(x, 5, 11), (ALIVE, 5, 11), None),
            (member(x, 5, 10, SUSPECT), member(x, 5, 11), (ALIVE, 5, 11), (x, SUSPECT, ALIVE)),
            (member(x, 5, 10, DEAD), member(x, 5, 11), (ALIVE, 5, 11), (x, DEAD, ALIVE)),
            (member(x, 5, 10, DEAD), member(x, 5, 11, SUSPECT), (ALIVE, 5, 11),
             (x, DEAD, ALIVE)),
            # a lower or equal heartbeat changes nothing, whatever status it comes with
            (member(x, 5, 10, SUSPECT), member(x, 5, 10, ALIVE), (SUSPECT, 5, 10), None),
            (member(x, 5, 10, DEAD), member(x, 5, 10, ALIVE), (DEAD, 5, 10), None),
            (member(x, 5, 10, DEAD), member(x, 5, 9, ALIVE), (DEAD, 5, 10), None),
            (member(x, 5, 10, ALIVE), member(x, 5, 10, DEAD), (ALIVE, 5, 10), None),
            (member(x, 5, 10, ALIVE), member(x, 5, 9, DEAD), (ALIVE, 5, 10), None),
            # a greater generation (a restart) replaces the entry, even a dead one
            (member(x, 5, 10, ALIVE), member(x, 6, 0), (ALIVE, 6, 0), None),
            (member(x, 5, 10, SUSPECT), member(x, 6, 0), (ALIVE, 6, 0), (x, SUSPECT, ALIVE)),
            (member(x, 5, 10, DEAD), member(x, 6, 0), (ALIVE, 6, 0), (x, DEAD, ALIVE)),
            (member(x, 5, 10, LEFT), member(x, 6, 0), (ALIVE, 6, 0), (x, LEFT, ALIVE)),
            # a smaller generation is ignored
            (member(x, 5, 10, ALIVE), member(x, 4, 99), (ALIVE, 5, 10), None),
            (member(x, 5, 10, DEAD), member(x, 4, 99), (DEAD, 5, 10), None),
            (member(x, 5, 10, ALIVE), member(x, 4, 99, LEFT), (ALIVE, 5, 10), None),
            # LEFT spreads, and is final for its generation
            (member(x, 5, 10, ALIVE), member(x, 5, 11, LEFT), (LEFT, 5, 11), (x, ALIVE, LEFT)),
            (member(x, 5, 10, DEAD), member(x, 5, 11, LEFT), (LEFT, 5, 11), (x, DEAD, LEFT)),
            (member(x, 5, 10, ALIVE), member(x, 6, 3, LEFT), (LEFT, 6, 3), (x, ALIVE, LEFT)),
            (member(x, 5, 11, LEFT), member(x, 5, 12, ALIVE), (LEFT, 5, 11), None),
            (member(x, 5, 11, LEFT), member(x, 5, 50, SUSPECT), (LEFT, 5, 11), None),
        ]
        for known, gossip, expected, change in cases:
            t = knowing(known) if known is not None else table()
            changes = t.merge([gossip], now)
            why = f"knowing {known}, told {gossip}"
            self.assertEqual(state(t, x), expected, why)
            self.assertEqual(changes, [change] if change else [], why)

    def test_refresh_restarts_the_silence_clock(self) -> None:
        """
        A member is heard at the time its heartbeat increases, and not when stale gossip comes.
        """
        t = knowing(member("x", 5, 10))
        t.merge([member("x", 5, 11)], T0 + 6)
        self.assertEqual(t.heard("x"), T0 + 6)
        t.merge([member("x", 5, 11), member("x", 5, 7)], T0 + 9)
        self.assertEqual(t.heard("x"), T0 + 6)
        self.assertEqual(t.check(T0 + 6 + 7), [])  # T0 + 7.5 would have been suspect
        self.assertEqual(t.get("x").status, ALIVE)  # type: ignore[union-attr]

    def test_restart_takes_new_address_and_tokens(self) -> None:
        """
        A restarted member's new address and tokens replace the old ones on the ring.
        """
        t = knowing(member("x", 5, 10, DEAD, address="10.0.0.1:1", tokens=(7,)))
        t.merge([member("x", 6, 0, address="10.0.0.2:2", tokens=(9, 900))], T0 + 1)
        self.assertEqual(t.get("x"), member("x", 6, 0, address="10.0.0.2:2", tokens=(9, 900)))
        self.assertEqual(t.ring_tokens()["x"], (9, 900))

    def test_own_entry_is_never_changed_by_gossip(self) -> None:
        """
        Gossip about this node itself, however new or damning, leaves its own entry alone.
        """
        t = table()
        mine = t.me
        for gossip in [
            member("me", 1, 50, ALIVE, address="10.9.9.9:1"),
            member("me", 1, 50, DEAD),
            member("me", 1, 50, LEFT),
            member("me", 99, 0, ALIVE, tokens=(1, 2, 3)),
            member("me", 99, 0, LEFT),
        ]:
            self.assertEqual(t.merge([gossip], T0 + 1), [], gossip)
            self.assertEqual(t.me, mine, gossip)
        self.assertEqual(t.version, 0)

    def test_merge_several_at_once(self) -> None:
        """
        One gossip message can teach several members and report each change.
        """
        t = knowing(member("b", 5, 10, DEAD))
        changes = t.merge([member("a"), member("b", 5, 11), member("c", status=DEAD),
                           member("me", 1, 99)], T0 + 1)
        self.assertEqual(changes, [("a", "", ALIVE), ("b", DEAD, ALIVE)])
        self.assertEqual([m.node_id for m in t.live()], ["a", "b", "me"])
        self.assertEqual([m.node_id for m in t.peers()], ["a", "b"])


class AgeingTests(SynchronousTestCase):
    """
    L{Membership.check} suspects, declares dead and forgets silent members.
    """

    def test_silent_member_timeline(self) -> None:
        """
        A silent member is suspect at fail_after/2, dead at fail_after, forgotten at remove_after.
        """
        t = table(0)
        t.merge([member("x")], T0)
        timeline = [
            (T0 + 7.49, [], ALIVE),
            (T0 + 7.5, [("x", ALIVE, SUSPECT)], SUSPECT),
            (T0 + 14.99, [], SUSPECT),
            (T0 + 15, [("x", SUSPECT, DEAD)], DEAD),
            (T0 + 29.99, [], DEAD),
            (T0 + 30, [("x", DEAD, "")], None),
            (T0 + 300, [], None),
        ]
        for now, changes, status in timeline:
            self.assertEqual(t.check(now), changes, now)
            m = t.get("x")
            self.assertEqual(m.status if m else None, status, now)
        self.assertEqual([m.node_id for m in t.members()], ["me"])

    def test_long_silence_in_one_step(self) -> None:
        """
        A member silent past fail_after at the first check goes straight to dead.
        """
        t = table()
        t.merge([member("x")], T0)
        self.assertEqual(t.check(T0 + 20), [("x", ALIVE, DEAD)])
        self.assertEqual(t.live(), [t.me])

    def test_left_member_is_forgotten_not_declared_dead(self) -> None:
        """
        A member that left stays LEFT (never dead) until remove_after, then is forgotten.
        """
        t = knowing(member("x", 5, 11, LEFT))
        self.assertEqual(t.check(T0 + 29.9), [])
        self.assertEqual(t.get("x").status, LEFT)  # type: ignore[union-attr]
        self.assertEqual(t.check(T0 + 30), [("x", LEFT, "")])
        self.assertIsNone(t.get("x"))

    def test_own_entry_never_ages(self) -> None:
        """
        This node is never suspect or dead in its own view, however long since it beat.
        """
        t = table(0)
        self.assertEqual(t.check(10_000), [])
        self.assertEqual(t.me.status, ALIVE)
        t.beat(10_001)
        self.assertEqual(t.me.heartbeat, 1)
        self.assertEqual(t.heard("me"), 10_001)

    def test_forgotten_member_stays_forgotten_on_stale_gossip(self) -> None:
        """
        After being forgotten, a member returns only with a higher heartbeat or a new generation.
        """
        later = T0 + 31
        cases = [
            (member("x", 5, 10), False),
            (member("x", 5, 9), False),
            (member("x", 4, 99), False),
            (member("x", 5, 11, DEAD), False),
            (member("x", 5, 11), True),
            (member("x", 6, 0), True),
        ]
        for gossip, back in cases:
            t = table()
            t.merge([member("x", 5, 10)], T0)
            t.check(T0 + 15)
            t.check(T0 + 30)
            self.assertIsNone(t.get("x"))
            changes = t.merge([gossip], later)
            self.assertEqual(changes, [("x", "", ALIVE)] if back else [], gossip)
            self.assertEqual(state(t, "x"),
                             (ALIVE, gossip.generation, gossip.heartbeat) if back else None)

    def test_left_member_does_not_come_back_once_forgotten(self) -> None:
        """
        Gossip that missed the leave (same generation, older heartbeat) does not bring it back.
        """
        t = knowing(member("x", 5, 11, LEFT))
        t.check(T0 + 30)
        self.assertEqual(t.merge([member("x", 5, 10), member("x", 5, 11)], T0 + 31), [])
        self.assertIsNone(t.get("x"))


class VersionTests(SynchronousTestCase):
    """
    L{Membership.version} changes exactly when the ring must be rebuilt.
    """

    def test_steps(self) -> None:
        """
        Each step bumps the version if and only if it changes the live set or a member's tokens.
        """
        t = table()
        steps = [
            ("learn a member", lambda: t.merge([member("x", 5, 10)], T0), True),
            ("stale gossip", lambda: t.merge([member("x", 5, 10), member("x", 4, 50)], T0),
             False),
            ("gossip of an unknown dead member", lambda: t.merge([member("y", status=DEAD)], T0),
             False),
            ("heartbeat refresh", lambda: t.merge([member("x", 5, 11)], T0 + 1), False),
            ("own heartbeat", lambda: t.beat(T0 + 1), False),
            ("suspect", lambda: t.check(T0 + 9), False),
            ("suspect revived", lambda: t.merge([member("x", 5, 12)], T0 + 9), False),
            ("dead", lambda: t.check(T0 + 30), True),
            ("dead stays dead", lambda: t.check(T0 + 35), False),
            ("dead revived", lambda: t.merge([member("x", 5, 13)], T0 + 36), True),
            ("restart with new tokens", lambda: t.merge([member("x", 6, 0, tokens=(4,))], T0 + 37),
             True),
            ("left", lambda: t.merge([member("x", 6, 1, LEFT)], T0 + 38), True),
            ("left member forgotten", lambda: t.check(T0 + 68), False),
            ("learn another", lambda: t.merge([member("z")], T0 + 70), True),
            ("dead again", lambda: t.check(T0 + 85), True),
            ("dead member forgotten", lambda: t.check(T0 + 100), False),
            ("this node leaves", lambda: t.leave(T0 + 101), True),
        ]
        for name, step, bumps in steps:
            before = t.version
            step()
            if bumps:
                self.assertGreater(t.version, before, name)
            else:
                self.assertEqual(t.version, before, name)

    def test_ring_tokens_follow_the_live_set(self) -> None:
        """
        The ring's tokens are those of live members, the dead dropped and restarts updated.
        """
        t = table()
        t.merge([member("a", tokens=(10,)), member("b", tokens=(20, 30))], T0)
        self.assertEqual(t.ring_tokens(), {"me": t.me.tokens, "a": (10,), "b": (20, 30)})
        t.merge([member("a", heartbeat=11, tokens=(10,))], T0 + 10)
        t.check(T0 + 16)
        self.assertEqual(t.ring_tokens(), {"me": t.me.tokens, "a": (10,)})
        t.merge([member("a", generation=6, heartbeat=0, tokens=(11,))], T0 + 17)
        self.assertEqual(t.ring_tokens(), {"me": t.me.tokens, "a": (11,)})

    def test_leave_marks_this_node_left(self) -> None:
        """
        A node that leaves gossips itself as LEFT with a higher heartbeat, and is off its own ring.
        """
        t = table()
        t.leave(T0 + 1)
        self.assertEqual((t.me.status, t.me.heartbeat), (LEFT, 1))
        self.assertNotIn("me", t.ring_tokens())


class JoinTests(SynchronousTestCase):
    """
    L{Membership.check_join} refuses a newcomer that would take a live
    member's id or ring position.
    """

    def setUp(self) -> None:
        self.t = table()
        self.t.merge([member("a", address="10.0.0.1:7000", tokens=(100, 5000)),
                      member("b", address="10.0.0.2:7000", tokens=(200,))], T0)

    def test_same_id_other_address(self) -> None:
        """
        A newcomer using a live member's id from another address is refused, naming that address.
        """
        e = self.assertRaises(Refused, self.t.check_join,
                              member("a", 9, 0, address="10.0.0.9:7000", tokens=(300,)))
        self.assertIn("node id a ", str(e))
        self.assertIn("10.0.0.1:7000", str(e))

    def test_own_id_other_address(self) -> None:
        """
        A newcomer using this node's own id from another address is refused.
        """
        self.assertRaises(Refused, self.t.check_join,
                          member("me", 9, 0, address="10.0.0.9:7000", tokens=(300,)))

    def test_same_ring_id_other_address(self) -> None:
        """
        A newcomer at another address whose ring_id is a live member's ring_id is refused.
        """
        e = self.assertRaises(Refused, self.t.check_join,
                              member("c", 9, 0, address="10.0.0.9:7000", tokens=(200, 7)))
        self.assertIn("ring_id 200 ", str(e))
        self.assertIn("node b ", str(e))

    def test_reconnect_from_same_address(self) -> None:
        """
        The same node reconnecting, or restarted, from its own address is accepted.
        """
        self.t.check_join(member("a", 5, 10, address="10.0.0.1:7000", tokens=(100, 5000)))
        self.t.check_join(member("a", 9, 0, address="10.0.0.1:7000", tokens=(100, 5000)))

    def test_fresh_newcomer(self) -> None:
        """
        A newcomer with an unused id and ring_id is accepted.
        """
        self.t.check_join(member("c", 9, 0, address="10.0.0.3:7000", tokens=(5000,)))

    def test_dead_member_can_be_replaced(self) -> None:
        """
        Once a member is dead, a newcomer may take its id and ring_id from another address.
        """
        self.t.merge([member("b", heartbeat=11)], T0 + 10)
        self.t.check(T0 + 15)  # a is dead, b is alive
        self.t.check_join(member("a", 9, 0, address="10.0.0.9:7000", tokens=(100,)))
        self.assertRaises(Refused, self.t.check_join,
                          member("b", 9, 0, address="10.0.0.9:7000", tokens=(300,)))


# -- the merge is a join: order and repetition do not matter

_IDS = ["a", "b", "c", "d"]  # known to the table before the gossip
_NEW = "e"  # not known
_STATUSES = [ALIVE, SUSPECT, DEAD, LEFT]


def _news(node_id: str, generation: int, heartbeat: int, status: str = ALIVE) -> Member:
    """
    A member as one generation of it: a restart may change the address and
    tokens, which stay the same within a generation.
    """
    return member(node_id, generation, heartbeat, status,
                  address=f"10.0.0.{generation}:{9000 + ord(node_id)}",
                  tokens=(generation * 1000 + ord(node_id),))


def _base_table() -> Membership:
    """
    A table knowing a (dead), b (suspect), c (alive) and d (left), all at
    generation 2.
    """
    t = table(0)
    t.merge([_news("a", 2, 5)], 0)
    t.merge([_news("b", 2, 5)], 8)
    t.merge([_news("c", 2, 5), _news("d", 2, 5)], 14)
    t.merge([_news("d", 2, 6, LEFT)], 14)
    t.check(20)
    assert [state(t, i)[0] for i in _IDS] == [DEAD, SUSPECT, ALIVE, LEFT]  # type: ignore[index]
    return t


@st.composite
def _gossip(draw: st.DrawFn) -> list[Member]:
    """
    Several pieces of news about the same few members, each with its own
    (generation, heartbeat), as other nodes might pass them on. A node says
    LEFT once per generation, with its last heartbeat; the never-known
    member is only gossiped as live.
    """
    out: list[Member] = []
    for node_id in _IDS + [_NEW]:
        stamps = draw(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 9)),
                               unique=True, max_size=5))
        for generation, heartbeat in stamps:
            last = heartbeat == max(h for g, h in stamps if g == generation)
            choices = _STATUSES if last else _STATUSES[:3]
            if node_id == _NEW:
                choices = [ALIVE, SUSPECT]
            out.append(_news(node_id, generation, heartbeat, draw(st.sampled_from(choices))))
    return out


def _snapshot(t: Membership) -> list[tuple[Member, float]]:
    return [(m, t.heard(m.node_id)) for m in t.members()]


class MergePropertyTests(SynchronousTestCase):
    """
    Merging is commutative and idempotent, so gossip converges whatever
    order it arrives in.
    """

    @_FEW
    @given(_gossip(), st.data())
    def test_order_and_repetition_do_not_matter(self, gossip: list[Member],
                                                data: st.DataObject) -> None:
        """
        The same gossip merged in any order, in pieces, or twice gives the same table.
        """
        once = _base_table()
        once.merge(gossip, 30)

        shuffled = _base_table()
        for m in data.draw(st.permutations(gossip)):
            shuffled.merge([m], 30)

        twice = _base_table()
        twice.merge(gossip, 30)
        twice.merge(data.draw(st.permutations(gossip)), 30)

        self.assertEqual(_snapshot(shuffled), _snapshot(once))
        self.assertEqual(_snapshot(twice), _snapshot(once))


class PeakTests(SynchronousTestCase):
    """
    How big the cluster is meant to be, as a node sees it.
    """

    def test_peak_counts_members_named_dead(self) -> None:
        """
        A node that met one live peer whose table names five members (three
        of them dead) knows the cluster has five, though only two are live.
        """
        table = Membership(member("n4"), 0.0, 15.0, 30.0)
        table.merge([member("n1"), member("n0", status=DEAD), member("n2", status=DEAD),
                     member("n3", status=DEAD)], 1.0)
        self.assertEqual([m.node_id for m in table.live()], ["n1", "n4"])
        self.assertEqual(table.peak, 5)

    def test_peak_drops_with_leavers(self) -> None:
        """
        Members that leave gracefully make the cluster smaller.
        """
        table = Membership(member("a"), 0.0, 15.0, 30.0)
        table.merge([member("b"), member("c")], 1.0)
        self.assertEqual(table.peak, 3)
        table.merge([member("c", heartbeat=11, status=LEFT)], 2.0)
        self.assertEqual(table.peak, 2)
