"""
Tests for the parts of L{dhtwisted.bench} that are not timing.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.bench import render, shares


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


class RenderTests(SynchronousTestCase):
    """
    The table C{dht-bench} prints.
    """

    def test_rows_ratio_memory_allocator(self) -> None:
        """
        A row per workload and target with its ops/s, latencies and ratio
        to Redis; then the memory per key and the nodes' allocator.
        """
        row = {"workload": "SET -c 50 -P 16", "target": "dht 3 nodes", "ops": 171234.4,
               "p50": 4.5, "p99": 15.87, "ratio": 0.1404, "error": ""}
        text = render({"rows": [row], "allocator": "mimalloc-2.0.9",
                       "memory": {"keys": 1000, "empty_rss_kib": 100, "full_rss_kib": 268,
                                  "bytes_per_key": 172.03}})
        lines = text.splitlines()
        self.assertEqual(lines[1].split(), ["SET", "-c", "50", "-P", "16", "dht", "3", "nodes",
                                            "171234", "4.500", "15.870", "0.14"])
        self.assertTrue(lines[2].startswith("memory: 172 bytes per key"))
        self.assertEqual(lines[3], "dhtwisted nodes' memory allocator: mimalloc-2.0.9")
