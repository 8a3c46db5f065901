"""
Tests for dhtwisted.store: the versioned store keeps the newest record of
each key, whatever order writes arrive in.
"""

from __future__ import annotations

from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.store import MISSING, Record, Store
from dhtwisted.version import NO_VERSION, HybridClock, node_tag

from .helpers import FakeTime


class StoreTests(SynchronousTestCase):
    """
    L{Store.apply} and the views of the store.
    """

    def setUp(self) -> None:
        self.time = FakeTime(1_700_000_000.0)
        self.clock = HybridClock(self.time, node_tag("node-a"))
        self.store = Store()

    def test_missing(self) -> None:
        """
        A key never written has no version and no value.
        """
        self.assertEqual(self.store.get(b"k"), MISSING)
        self.assertEqual(self.store.get(b"k"), Record(NO_VERSION, None))
        self.assertEqual(self.store.version_of(b"k"), NO_VERSION)
        self.assertEqual((len(self.store), self.store.live_keys), (0, 0))

    def test_apply_and_get(self) -> None:
        """
        A written value can be read back with its version.
        """
        v1 = self.clock.next()
        self.assertTrue(self.store.apply(b"k", v1, b"hello"))
        self.assertEqual(self.store.get(b"k"), Record(v1, b"hello"))
        self.assertEqual(self.store.version_of(b"k"), v1)

    def test_put_tells_what_it_replaced(self) -> None:
        """
        put says whether a value (not a tombstone) was replaced, and None,
        changing nothing, for a version not newer than the one held.
        """
        v1, v2, v3 = self.clock.next(), self.clock.next(), self.clock.next()
        self.assertIs(self.store.put(b"k", v1, b"a"), False)
        self.assertIs(self.store.put(b"k", v2, None), True)
        self.assertIs(self.store.put(b"k", v3, b"b"), False)  # over a tombstone
        self.assertIsNone(self.store.put(b"k", v2, b"old"))
        self.assertEqual(self.store.get(b"k"), Record(v3, b"b"))

    def test_survey(self) -> None:
        """
        survey gives the newest version held of some keys and which of
        them have a value.
        """
        v1, v2 = self.clock.next(), self.clock.next()
        self.store.apply(b"b", v2, None)
        self.store.apply(b"a", v1, b"x")
        self.assertEqual(self.store.survey([b"a", b"none", b"b"]), (v2, (True, False, False)))
        self.assertEqual(self.store.survey([b"none"]), (NO_VERSION, (False,)))
        self.assertEqual(self.store.survey([]), (NO_VERSION, ()))

    def test_binary_and_empty_values(self) -> None:
        """
        Empty values and values holding any bytes are kept as they are, and
        an empty value is not a tombstone.
        """
        v1 = self.clock.next()
        self.store.apply(b"empty", v1, b"")
        self.store.apply(b"bin", v1, b"t\x00v\xff")
        self.store.apply(b"t", v1, b"t")
        self.assertEqual(self.store.get(b"empty"), Record(v1, b""))
        self.assertEqual(self.store.get(b"bin"), Record(v1, b"t\x00v\xff"))
        self.assertEqual(self.store.get(b"t"), Record(v1, b"t"))
        self.assertEqual(self.store.live_keys, 3)

    def test_newer_replaces(self) -> None:
        """
        A newer version replaces the value.
        """
        v1, v2 = self.clock.next(), self.clock.next()
        self.store.apply(b"k", v1, b"old")
        self.assertTrue(self.store.apply(b"k", v2, b"new"))
        self.assertEqual(self.store.get(b"k"), Record(v2, b"new"))
        self.assertEqual((len(self.store), self.store.live_keys), (1, 1))

    def test_older_or_same_ignored(self) -> None:
        """
        A write at an older or the same version changes nothing.
        """
        v1, v2 = self.clock.next(), self.clock.next()
        self.store.apply(b"k", v2, b"new")
        self.assertFalse(self.store.apply(b"k", v1, b"old"))
        self.assertFalse(self.store.apply(b"k", v2, b"other"))
        self.assertFalse(self.store.apply(b"k", v1, None))
        self.assertEqual(self.store.get(b"k"), Record(v2, b"new"))
        self.assertEqual(self.store.live_keys, 1)

    def test_bad_version(self) -> None:
        """
        A version that is not 12 bytes is refused.
        """
        self.assertRaises(ValueError, self.store.apply, b"k", b"short", b"v")
        self.assertRaises(ValueError, self.store.apply, b"k", NO_VERSION, b"v")
        self.assertEqual(self.store.get(b"k"), MISSING)

    def test_tombstone(self) -> None:
        """
        A delete leaves a versioned tombstone: no value, but a version that
        older writes cannot beat.
        """
        v1, v2, v3 = self.clock.next(), self.clock.next(), self.clock.next()
        self.store.apply(b"k", v1, b"value")
        self.assertTrue(self.store.apply(b"k", v2, None))
        self.assertEqual(self.store.get(b"k"), Record(v2, None))
        self.assertEqual((len(self.store), self.store.live_keys), (1, 0))
        self.assertFalse(self.store.apply(b"k", v1, b"value"))
        self.assertEqual(self.store.get(b"k"), Record(v2, None))
        self.assertTrue(self.store.apply(b"k", v3, b"again"))
        self.assertEqual(self.store.get(b"k"), Record(v3, b"again"))
        self.assertEqual(self.store.live_keys, 1)

    def test_tombstone_first(self) -> None:
        """
        A delete that arrives before the write it follows still wins.
        """
        v1, v2 = self.clock.next(), self.clock.next()
        self.assertTrue(self.store.apply(b"k", v2, None))
        self.assertFalse(self.store.apply(b"k", v1, b"value"))
        self.assertEqual(self.store.get(b"k"), Record(v2, None))
        self.assertEqual((len(self.store), self.store.live_keys), (1, 0))

    def test_live_keys(self) -> None:
        """
        live_keys counts keys with a value; len counts tombstones too.
        """
        v = [self.clock.next() for _ in range(6)]
        self.store.apply(b"a", v[0], b"1")
        self.store.apply(b"b", v[1], b"2")
        self.store.apply(b"c", v[2], None)
        self.assertEqual((len(self.store), self.store.live_keys), (3, 2))
        self.store.apply(b"a", v[3], None)
        self.store.apply(b"c", v[4], None)
        self.assertEqual((len(self.store), self.store.live_keys), (3, 1))
        self.store.apply(b"c", v[5], b"3")
        self.store.apply(b"b", v[5], b"x")
        self.assertEqual((len(self.store), self.store.live_keys), (3, 2))

    def test_items_and_keys(self) -> None:
        """
        items and keys list every key, tombstones included.
        """
        v1, v2 = self.clock.next(), self.clock.next()
        self.store.apply(b"a", v1, b"1")
        self.store.apply(b"b", v2, None)
        self.assertEqual(
            dict(self.store.items()), {b"a": Record(v1, b"1"), b"b": Record(v2, None)}
        )
        self.assertEqual(sorted(self.store.keys()), [b"a", b"b"])

    def test_drop(self) -> None:
        """
        drop forgets a key only while it is still at the given version.
        """
        v1, v2 = self.clock.next(), self.clock.next()
        self.store.apply(b"k", v1, b"old")
        self.store.apply(b"k", v2, b"new")
        self.assertFalse(self.store.drop(b"k", v1))
        self.assertEqual(self.store.get(b"k"), Record(v2, b"new"))
        self.assertFalse(self.store.drop(b"other", v2))
        self.assertTrue(self.store.drop(b"k", v2))
        self.assertEqual(self.store.get(b"k"), MISSING)
        self.assertEqual((len(self.store), self.store.live_keys), (0, 0))
        self.assertFalse(self.store.drop(b"k", v2))

    def test_drop_tombstone(self) -> None:
        """
        Dropping a tombstone leaves the live count alone.
        """
        v1, v2 = self.clock.next(), self.clock.next()
        self.store.apply(b"live", v1, b"x")
        self.store.apply(b"gone", v2, None)
        self.assertTrue(self.store.drop(b"gone", v2))
        self.assertEqual((len(self.store), self.store.live_keys), (1, 1))

    def test_collect_tombstones(self) -> None:
        """
        Only tombstones older than the TTL are collected; values and recent
        tombstones stay.
        """
        start = self.time.now
        old_value = self.clock.next()
        old_tomb = self.clock.next()
        self.store.apply(b"old-value", old_value, b"v")
        self.store.apply(b"old-tomb", old_tomb, None)
        self.time.now = start + 100
        new_tomb = self.clock.next()
        self.store.apply(b"new-tomb", new_tomb, None)

        self.assertEqual(self.store.collect_tombstones(start + 59, ttl=60), 0)
        self.assertEqual(self.store.collect_tombstones(start + 60, ttl=60), 0)
        self.assertEqual(len(self.store), 3)
        self.assertEqual(self.store.collect_tombstones(start + 61, ttl=60), 1)
        self.assertEqual(self.store.get(b"old-tomb"), MISSING)
        self.assertEqual(self.store.get(b"old-value"), Record(old_value, b"v"))
        self.assertEqual(self.store.get(b"new-tomb"), Record(new_tomb, None))
        self.assertEqual(self.store.collect_tombstones(start + 161, ttl=60), 1)
        self.assertEqual(
            dict(self.store.items()), {b"old-value": Record(old_value, b"v")}
        )
        self.assertEqual(self.store.live_keys, 1)

    def test_collect_tombstones_limit(self) -> None:
        """
        At most C{limit} tombstones are collected per call.
        """
        for i in range(10):
            self.store.apply(b"k%d" % i, self.clock.next(), None)
        later = self.time.now + 3600
        self.assertEqual(self.store.collect_tombstones(later, ttl=60, limit=4), 4)
        self.assertEqual(len(self.store), 6)
        self.assertEqual(self.store.collect_tombstones(later, ttl=60, limit=4), 4)
        self.assertEqual(self.store.collect_tombstones(later, ttl=60, limit=4), 2)
        self.assertEqual(len(self.store), 0)


_WRITES = st.lists(
    st.tuples(st.integers(0, 2**16), st.one_of(st.none(), st.binary(max_size=8))),
    min_size=1,
    max_size=20,
    unique_by=lambda w: w[0],
)


def _version(n: int) -> bytes:
    return (1_700_000_000_000 << 16 | n).to_bytes(8, "big") + b"\0\0\0\1"


class OrderTests(SynchronousTestCase):
    """
    The store converges on the newest write whatever the arrival order.
    """

    @settings(max_examples=200, deadline=None)
    @given(_WRITES, st.randoms(use_true_random=False))
    def test_any_order(
        self, writes: list[tuple[int, bytes | None]], rnd: Random
    ) -> None:
        """
        Applying any permutation of a set of writes to a key leaves the one
        with the greatest version, and the live count agrees.
        """
        shuffled = list(writes)
        rnd.shuffle(shuffled)
        store = Store()
        for n, value in shuffled:
            store.apply(b"k", _version(n), value)
            store.apply(b"other", _version(n), b"x")
        newest, value = max(writes)
        self.assertEqual(store.get(b"k"), Record(_version(newest), value))
        self.assertEqual(store.live_keys, 1 + (value is not None))
        self.assertEqual(len(store), 2)

    @settings(max_examples=200, deadline=None)
    @given(_WRITES)
    def test_apply_reports_change(self, writes: list[tuple[int, bytes | None]]) -> None:
        """
        apply reports a change exactly when the write is newer than every
        write before it.
        """
        store = Store()
        best = -1
        for n, value in writes:
            self.assertEqual(store.apply(b"k", _version(n), value), n > best)
            best = max(best, n)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]),
                              st.integers(0, 20),
                              st.one_of(st.none(), st.binary(max_size=4))),
                    max_size=12),
           st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"e"]),
                              st.one_of(st.none(), st.binary(max_size=4))),
                    max_size=4, unique_by=lambda w: w[0]),
           st.integers(0, 20))
    def test_put_all_is_apply_each(
        self, before: list[tuple[bytes, int, bytes | None]],
        writes: list[tuple[bytes, bytes | None]], n: int,
    ) -> None:
        """
        put_all of a transaction's writes at one version leaves the store
        as applying each would: older or same versions held stay, the live
        count agrees.
        """
        one, each = Store(), Store()
        for key, m, value in before:
            one.apply(key, _version(m), value)
            each.apply(key, _version(m), value)
        one.put_all(writes, _version(n))
        for key, value in writes:
            each.apply(key, _version(n), value)
        self.assertEqual(sorted(one.items()), sorted(each.items()))
        self.assertEqual(one.live_keys, each.live_keys)
        self.assertRaises(ValueError, one.put_all, writes, b"short")
