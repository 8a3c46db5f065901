"""
Tests for dhtwisted.ring: key positions, node tokens, preference lists,
balance, and how few keys move when a node joins or leaves.
"""

from __future__ import annotations

import bisect
import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.ring import Ring, key_position, node_tokens

RING = 65536
_FEW = settings(max_examples=200, deadline=None)


def make_ring(ring_ids: dict[str, int], vnodes: int = 1, ring_size: int = RING) -> Ring:
    return Ring(
        {n: node_tokens(n, rid, vnodes, ring_size) for n, rid in ring_ids.items()},
        ring_size,
    )


def expected_walk(ring: Ring, position: int, n: int) -> list[str]:
    """
    The first C{n} distinct nodes clockwise from C{position}, worked out
    the slow way from L{Ring.tokens}.
    """
    tokens = list(ring.tokens())
    start = next((i for i, (t, _) in enumerate(tokens) if t >= position), 0)
    found: list[str] = []
    for i in range(len(tokens)):
        node = tokens[(start + i) % len(tokens)][1]
        if node not in found and len(found) < n:
            found.append(node)
    return found


# a few nodes with ring ids that may collide, and how many vnodes each has
_NODES = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=3),
    st.integers(0, RING - 1),
    min_size=1,
    max_size=8,
)


class KeyPositionTests(SynchronousTestCase):
    """
    L{key_position} places a key on the ring.
    """

    def test_known_positions(self) -> None:
        """
        A key's position is md5(key) mod the ring size, as in the reference.
        """
        self.assertEqual(key_position(b"hello", RING), 0xC592)
        self.assertEqual(
            key_position(b"hello", 1000),
            int("5d41402abc4b2a76b9719d911017c592", 16) % 1000,
        )
        self.assertEqual(
            key_position(b"", 2**128), int(hashlib.md5(b"").hexdigest(), 16)
        )

    @_FEW
    @given(st.binary(max_size=64), st.integers(1, 2**32))
    def test_stable_and_in_range(self, key: bytes, size: int) -> None:
        """
        A key's position is the same every time and lies on the ring.
        """
        position = key_position(key, size)
        self.assertEqual(position, key_position(bytes(key), size))
        self.assertTrue(0 <= position < size)


class NodeTokensTests(SynchronousTestCase):
    """
    L{node_tokens} gives a node its positions on the ring.
    """

    def test_ring_id_first(self) -> None:
        """
        A node's first token is its ring id (mod the ring size).
        """
        self.assertEqual(node_tokens("a", 1234, 1, RING), [1234])
        self.assertEqual(node_tokens("a", 1234, 8, RING)[0], 1234)
        self.assertEqual(node_tokens("a", RING + 5, 1, RING), [5])

    @_FEW
    @given(st.text(max_size=8), st.integers(0, RING - 1), st.integers(1, 64))
    def test_vnodes_distinct(self, node_id: str, ring_id: int, vnodes: int) -> None:
        """
        A node gets vnodes distinct tokens on the ring, starting with its
        ring id, the same ones every time.
        """
        tokens = node_tokens(node_id, ring_id, vnodes, RING)
        self.assertEqual(tokens[0], ring_id)
        self.assertEqual(len(tokens), vnodes)
        self.assertEqual(len(set(tokens)), vnodes)
        self.assertTrue(all(0 <= t < RING for t in tokens))
        self.assertEqual(tokens, node_tokens(node_id, ring_id, vnodes, RING))

    def test_more_vnodes_than_positions(self) -> None:
        """
        On a ring smaller than vnodes, a node gets every position once.
        """
        self.assertEqual(sorted(node_tokens("a", 3, 20, 8)), list(range(8)))

    def test_nodes_differ(self) -> None:
        """
        Two nodes with the same ring id get different extra tokens.
        """
        self.assertNotEqual(
            node_tokens("a", 7, 8, RING)[1:], node_tokens("b", 7, 8, RING)[1:]
        )


class PreferenceListTests(SynchronousTestCase):
    """
    L{Ring.preference_list} and L{Ring.walk}: a key's replicas.
    """

    def setUp(self) -> None:
        self.ring = make_ring({"a": 100, "b": 200, "c": 300, "d": 400})

    def test_walk_table(self) -> None:
        """
        The walk starts at the first token at or after the position and
        goes clockwise, wrapping past the end of the ring.
        """
        table = [
            (0, 3, ["a", "b", "c"]),
            (100, 3, ["a", "b", "c"]),
            (101, 3, ["b", "c", "d"]),
            (300, 2, ["c", "d"]),
            (301, 3, ["d", "a", "b"]),
            (400, 1, ["d"]),
            (401, 3, ["a", "b", "c"]),
            (RING - 1, 4, ["a", "b", "c", "d"]),
        ]
        for position, n, expected in table:
            self.assertEqual(self.ring.walk(position, n), expected, position)

    def test_n_capped(self) -> None:
        """
        Asking for more replicas than nodes gives every node once.
        """
        self.assertEqual(self.ring.walk(250, 10), ["c", "d", "a", "b"])
        self.assertEqual(len(self.ring), 4)

    def test_preference_list_uses_key_position(self) -> None:
        """
        A key's preference list is the walk from its position.
        """
        for i in range(100):
            key = b"key-%d" % i
            self.assertEqual(
                self.ring.preference_list(key, 3),
                self.ring.walk(key_position(key, RING), 3),
            )

    def test_vnodes_distinct_nodes(self) -> None:
        """
        With many tokens per node, the list still names distinct nodes.
        """
        ring = make_ring({"a": 0, "b": 20000, "c": 40000}, vnodes=16)
        for i in range(200):
            nodes = ring.preference_list(b"k%d" % i, 3)
            self.assertEqual(sorted(nodes), ["a", "b", "c"])

    def test_empty_ring(self) -> None:
        """
        A ring with no nodes places keys nowhere.
        """
        ring = Ring({}, RING)
        self.assertEqual(ring.preference_list(b"k", 3), [])
        self.assertEqual(len(ring), 0)

    def test_shared_token(self) -> None:
        """
        When two nodes claim one token, the smaller id owns it.
        """
        ring = Ring({"b": [10], "a": [10], "c": [20]}, RING)
        self.assertEqual(ring.tokens(), [(10, "a"), (20, "c")])
        self.assertEqual(ring.walk(5, 3), ["a", "c"])
        self.assertEqual(ring.nodes, frozenset({"a", "c"}))

    def test_tokens_taken_mod_ring(self) -> None:
        """
        Tokens beyond the ring size wrap onto it.
        """
        ring = Ring({"a": [RING + 10], "b": [20]}, RING)
        self.assertEqual(ring.tokens(), [(10, "a"), (20, "b")])

    @_FEW
    @given(_NODES, st.integers(1, 4), st.binary(max_size=16), st.integers(1, 6))
    def test_preference_list_property(
        self, ring_ids: dict[str, int], vnodes: int, key: bytes, n: int
    ) -> None:
        """
        The list has min(n, nodes) distinct nodes, met clockwise from the
        key, the first owning the first token at or after the key.
        """
        ring = make_ring(ring_ids, vnodes)
        nodes = ring.preference_list(key, n)
        self.assertEqual(len(nodes), min(n, len(ring)))
        self.assertEqual(len(set(nodes)), len(nodes))
        self.assertEqual(nodes, expected_walk(ring, key_position(key, RING), n))
        tokens = [t for t, _ in ring.tokens()]
        owners = dict(ring.tokens())
        i = bisect.bisect_left(tokens, key_position(key, RING)) % len(tokens)
        self.assertEqual(nodes[0], owners[tokens[i]])


    @_FEW
    @given(_NODES, st.integers(1, 4), st.lists(st.binary(max_size=16), max_size=20),
           st.integers(1, 6))
    def test_preference_lists(
        self, ring_ids: dict[str, int], vnodes: int, keys: list[bytes], n: int
    ) -> None:
        """
        preference_lists gives each key its preference_list; replica_sets
        the same nodes, in any order.
        """
        ring = make_ring(ring_ids, vnodes)
        self.assertEqual(ring.preference_lists(keys, n),
                         [ring.preference_list(key, n) for key in keys])
        self.assertEqual([sorted(nodes) for nodes in ring.replica_sets(keys, n)],
                         [sorted(ring.preference_list(key, n)) for key in keys])

    def test_preference_lists_empty_ring(self) -> None:
        """
        On an empty ring every key has no replica.
        """
        self.assertEqual(Ring({}, RING).preference_lists([b"a", b"b"], 3), [[], []])


class BalanceTests(SynchronousTestCase):
    """
    Load is spread evenly, and joins move few keys.
    """

    def test_primary_share_table(self) -> None:
        """
        Each node's share is the arc ending at its tokens.
        """
        ring = make_ring({"a": 0, "b": RING // 4})
        self.assertEqual(ring.primary_share(), {"a": 0.75, "b": 0.25})
        self.assertEqual(make_ring({"a": 123}).primary_share(), {"a": 1.0})
        self.assertEqual(Ring({}, RING).primary_share(), {})

    @_FEW
    @given(_NODES, st.integers(1, 8))
    def test_primary_share_sums_to_one(
        self, ring_ids: dict[str, int], vnodes: int
    ) -> None:
        """
        The shares of all nodes add up to the whole ring.
        """
        share = make_ring(ring_ids, vnodes).primary_share()
        self.assertAlmostEqual(sum(share.values()), 1.0)
        self.assertTrue(all(s > 0 for s in share.values()))

    def test_even_ring_balanced(self) -> None:
        """
        With ten evenly spread nodes, each is primary for 0.8 to 1.2 of its
        fair share of 100,000 random keys.
        """
        ring = make_ring({f"n{i}": i * 6553 for i in range(10)})
        rng = random.Random(20240501)
        counts = dict.fromkeys(ring.nodes, 0)
        keys = 100_000
        for _ in range(keys):
            counts[ring.preference_list(rng.randbytes(16), 1)[0]] += 1
        fair = keys / 10
        for node, count in counts.items():
            self.assertTrue(0.8 * fair <= count <= 1.2 * fair, (node, count))
        for node, share in ring.primary_share().items():
            self.assertTrue(abs(share - 0.1) < 0.001, (node, share))

    def test_join_moves_keys_to_new_node_only(self) -> None:
        """
        When an eleventh node joins, every key whose primary changes moves
        to the new node, and about its fair share of keys move.
        """
        ring_ids = {f"n{i}": i * 6553 for i in range(10)}
        before = make_ring(ring_ids)
        after = make_ring({**ring_ids, "new": 3 * 6553 + 3000})
        moved = 0
        for i in range(20_000):
            key = b"key-%d" % i
            old, new = before.preference_list(key, 1), after.preference_list(key, 1)
            if old != new:
                self.assertEqual(new, ["new"])
                moved += 1
        self.assertTrue(0 < moved < 20_000 * 0.1, moved)

    @_FEW
    @given(
        _NODES,
        st.text("xyz", min_size=1, max_size=3),
        st.integers(0, RING - 1),
        st.integers(1, 4),
    )
    def test_join_property(
        self, ring_ids: dict[str, int], joiner: str, ring_id: int, vnodes: int
    ) -> None:
        """
        For any ring and any joining node, keys whose primary changes all
        move to the new node, and each replica set loses at most one node,
        which the new node replaces.
        """
        before = make_ring(ring_ids, vnodes)
        after = make_ring({**ring_ids, joiner: ring_id}, vnodes)
        for i in range(50):
            key = b"k%d" % i
            old, new = before.preference_list(key, 3), after.preference_list(key, 3)
            if old[0] != new[0]:
                self.assertEqual(new[0], joiner)
            self.assertLessEqual(set(new) - set(old), {joiner})
            self.assertLessEqual(len(set(old) - set(new)), 1)

    @_FEW
    @given(_NODES, st.data())
    def test_leave_property(
        self, ring_ids: dict[str, int], data: st.DataObject
    ) -> None:
        """
        When a node leaves, only the keys it was primary for change primary.
        """
        leaver = data.draw(st.sampled_from(sorted(ring_ids)))
        rest = {n: r for n, r in ring_ids.items() if n != leaver}
        before, after = make_ring(ring_ids, 2), make_ring(rest, 2)
        for i in range(50):
            key = b"k%d" % i
            old, new = before.preference_list(key, 1), after.preference_list(key, 1)
            if old != new:
                self.assertEqual(old, [leaver])
