"""
Tests for dhtwisted.version: the hybrid logical clock and its versions.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.version import NO_VERSION, HybridClock, node_tag, version_millis

from .helpers import FakeTime


class HybridClockTests(SynchronousTestCase):
    """
    L{HybridClock} hands out ever-increasing versions close to the time.
    """

    def setUp(self) -> None:
        self.time = FakeTime(1_700_000_000.0)
        self.clock = HybridClock(self.time, node_tag("node-a"))

    def test_version_shape(self) -> None:
        """
        A version is 12 bytes, above L{NO_VERSION}, ending in the node tag.
        """
        version = self.clock.next()
        self.assertEqual(len(version), 12)
        self.assertGreater(version, NO_VERSION)
        self.assertEqual(version[8:], node_tag("node-a").to_bytes(4, "big"))

    def test_millis(self) -> None:
        """
        L{version_millis} recovers the clock's time in milliseconds.
        """
        self.time.now = 1_700_000_123.5
        self.assertEqual(version_millis(self.clock.next()), 1_700_000_123_500)
        self.time.now = 1_800_000_000.25
        self.assertEqual(version_millis(self.clock.next()), 1_800_000_000_250)

    def test_increases_with_time(self) -> None:
        """
        As time moves on, versions increase and follow it.
        """
        first = self.clock.next()
        self.time.now += 0.005
        second = self.clock.next()
        self.assertGreater(second, first)
        self.assertEqual(version_millis(second) - version_millis(first), 5)

    def test_increases_when_time_stalls(self) -> None:
        """
        With time standing still, each version is still greater than the
        last, and keeps the same milliseconds.
        """
        versions = [self.clock.next() for _ in range(1000)]
        self.assertEqual(versions, sorted(set(versions)))
        self.assertEqual({version_millis(v) for v in versions}, {1_700_000_000_000})

    def test_increases_when_time_goes_back(self) -> None:
        """
        When time goes backwards, versions still increase.
        """
        first = self.clock.next()
        self.time.now -= 3600
        second = self.clock.next()
        third = self.clock.next()
        self.assertLess(first, second)
        self.assertLess(second, third)
        self.time.now += 7200
        fourth = self.clock.next()
        self.assertLess(third, fourth)
        self.assertEqual(version_millis(fourth), 1_700_003_600_000)

    def test_logical_overflow(self) -> None:
        """
        More versions in one millisecond than the logical counter holds
        still increase.
        """
        versions = [self.clock.next() for _ in range(70_000)]
        self.assertEqual(versions, sorted(set(versions)))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.floats(0, 4e9), min_size=1, max_size=30))
    def test_strictly_increasing(self, times: list[float]) -> None:
        """
        Whatever the time function returns, versions strictly increase.
        """
        time = FakeTime(times[0])
        clock = HybridClock(time, 7)
        versions = []
        for now in times:
            time.now = now
            versions.append(clock.next())
        self.assertEqual(versions, sorted(set(versions)))

    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.tuples(st.floats(0, 4e9), st.integers(1, 70_000)), min_size=1,
                    max_size=10))
    def test_next_run(self, runs: list[tuple[float, int]]) -> None:
        """
        next_run(count) hands out what as many calls of next would: each
        version greater than all before, whatever the time does (a run
        past the logical counter's end moves on to the next millisecond).
        """
        time = FakeTime(runs[0][0])
        bulk, single = HybridClock(time, 7), HybridClock(time, 7)
        for now, count in runs:
            time.now = now
            got = bulk.next_run(count)
            self.assertEqual(got, [single.next() for _ in range(count)])
            self.assertEqual(bulk.next(), single.next())

    def test_next_after(self) -> None:
        """
        L{HybridClock.next_after} is greater than the version it is given,
        even one from a node whose clock is ahead, and than earlier ones.
        """
        ahead = HybridClock(FakeTime(self.time.now + 60), node_tag("node-b"))
        theirs = ahead.next()
        mine = self.clock.next_after(theirs)
        self.assertGreater(mine, theirs)
        self.assertGreater(self.clock.next(), mine)
        self.assertGreater(self.clock.next_after(NO_VERSION), mine)

    def test_next_after_equal_stamp(self) -> None:
        """
        A version with the same time and counter but a greater tag is still
        exceeded.
        """
        other = HybridClock(FakeTime(self.time.now), 0xFFFFFFFF)
        theirs = other.next()
        self.assertGreater(self.clock.next_after(theirs), theirs)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(min_size=12, max_size=12).filter(lambda v: v[:8] != b"\xff" * 8))
    def test_next_after_any(self, version: bytes) -> None:
        """
        L{HybridClock.next_after} exceeds any 12-byte version below the
        largest possible stamp.
        """
        self.assertGreater(self.clock.next_after(version), version)

    def test_observe(self) -> None:
        """
        After observing a newer version, the next one is greater than it.
        """
        theirs = HybridClock(FakeTime(self.time.now + 10), 1).next()
        self.clock.observe(theirs)
        self.assertGreater(self.clock.next(), theirs)

    def test_observe_ignores_malformed(self) -> None:
        """
        Observing a version of the wrong length changes nothing.
        """
        self.clock.observe(b"\xff" * 11)
        self.clock.observe(b"\xff" * 13)
        self.assertEqual(version_millis(self.clock.next()), 1_700_000_000_000)


class NodeTagTests(SynchronousTestCase):
    """
    L{node_tag} names a node in its versions.
    """

    def test_stable(self) -> None:
        """
        A node id always gives the same 32-bit tag (CRC-32 of its UTF-8).
        """
        self.assertEqual(node_tag("node-a"), node_tag("node-a"))
        self.assertEqual(node_tag(""), 0)
        self.assertEqual(node_tag("123456789"), 0xCBF43926)
        self.assertTrue(0 <= node_tag("nœud-ü") < 2**32)

    def test_distinct(self) -> None:
        """
        Different node ids give different tags.
        """
        tags = {node_tag(f"node-{i}") for i in range(100)}
        self.assertEqual(len(tags), 100)
