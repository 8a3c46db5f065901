"""
Tests for the parts of L{dhtwisted.bench} that are not timing.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.bench import shares


class SharesTests(SynchronousTestCase):
    """
    Clients (and requests) split between the nodes of a cluster.
    """

    def test_fifty_clients_over_three_nodes(self) -> None:
        """
        C{-c 50} over three nodes is 17, 17 and 16 clients: 50 in all.
        """
        self.assertEqual(shares(50, 3), [17, 17, 16])

    def test_fewer_clients_than_nodes(self) -> None:
        """
        One client over three nodes is one client, on the first node.
        """
        self.assertEqual(shares(1, 3), [1, 0, 0])

    @given(st.integers(0, 10_000), st.integers(1, 64))
    def test_even_and_whole(self, total: int, parts: int) -> None:
        """
        The shares add up to the total and differ by at most one, larger first.
        """
        split = shares(total, parts)
        self.assertEqual((len(split), sum(split)), (parts, total))
        self.assertLessEqual(max(split) - min(split), 1)
        self.assertEqual(split, sorted(split, reverse=True))
