"""
The HTTP endpoint: Prometheus metrics and the status page's data, on real
nodes; the latency histogram on its own.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.metrics import BUCKETS, Histogram

from .procs import NodeProcess, free_block, run_tool, start_nodes

_URL = re.compile(r"status page and /metrics at (http://\S+)")


def web_url(node: NodeProcess, timeout: float = 10.0) -> str:
    """
    The URL the node logged for its HTTP endpoint.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = _URL.search(node.log())
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no status page URL logged:\n{node.log()}")


def fetch(url: str) -> tuple[str, bytes]:
    """
    GET C{url}: its content type and body.
    """
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers["content-type"], response.read()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """
    Every sample of a Prometheus exposition, by name and labels.
    """
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def web_cluster(case: SynchronousTestCase, prefix: str
                ) -> tuple[list[NodeProcess], int, list[str]]:
    """
    Three real nodes with the HTTP endpoint on a free port each, once they
    agree on the ring: the nodes, the first client port, their URLs. The
    case stops them.
    """
    base = free_block(3)
    metrics = "[metrics]\nlisten = tcp:0:interface=127.0.0.1\n"
    nodes = start_nodes(prefix, base, 3, extra={i: metrics for i in range(3)})
    for node in nodes:
        case.addCleanup(node.stop)
    urls = [web_url(node) for node in nodes]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        summary = json.loads(fetch(urls[0] + "status.json")[1])["status"]["summary"]
        if summary["alive"] == 3 and summary["agree"]:
            break
        time.sleep(0.3)
    return nodes, base, urls


class HistogramTests(SynchronousTestCase):
    """
    L{Histogram}: buckets as Prometheus wants them.
    """

    def test_cumulative(self) -> None:
        h = Histogram()
        h.observe(0.00005)
        h.observe(0.0001)  # on a bound: counted in that bucket (le)
        h.observe(0.003, 10)
        h.observe(60.0)
        buckets = dict(h.cumulative())
        self.assertEqual(buckets["0.0001"], 2)
        self.assertEqual(buckets["0.0025"], 2)
        self.assertEqual(buckets["0.005"], 12)
        self.assertEqual(buckets["10.0"], 12)
        self.assertEqual(buckets["+Inf"], 13)
        self.assertEqual(len(buckets), len(BUCKETS) + 1)
        self.assertAlmostEqual(h.total, 0.00015 + 0.03 + 60.0)


class MetricsEndpointTests(SynchronousTestCase):
    """
    C{[metrics] listen} on a 3-node cluster of real processes.
    """

    def setUp(self) -> None:
        self.nodes, self.base, self.urls = web_cluster(self, "web")

    def test_scrape(self) -> None:
        """
        After 20 SETs and 5 GETs through node 0, its scrape counts them,
        has a latency histogram for each with as many observations, counts
        the commits, sees 3 alive members, and has the process's memory.
        """
        text = "".join(f"set k{i} v{i}\n" for i in range(20)) + "get k1\n" * 5
        out = run_tool("dht-client", ["127.0.0.1", str(self.base)], text.encode())
        self.assertEqual(out.stdout.decode().count("ok\n"), 20, out)
        # 16 more SETs pipelined in RESP: they go as runs, timed as such
        import redis

        with redis.Redis(port=self.base, socket_timeout=10) as r:
            pipe = r.pipeline(transaction=False)
            for i in range(16):
                pipe.set(f"run{i}", "v")
            self.assertEqual(pipe.execute(), [True] * 16)
        kind, body = fetch(self.urls[0] + "metrics")
        self.assertTrue(kind.startswith("text/plain; version="), kind)
        got = samples(body.decode())
        self.assertEqual(got[("dht_commands_total", (("command", "set"),))], 36)
        self.assertEqual(got[("dht_commands_total", (("command", "get"),))], 5)
        self.assertEqual(got[("dht_command_duration_seconds_count", (("command", "set"),))], 36)
        self.assertEqual(got[("dht_command_duration_seconds_bucket",
                              (("command", "set"), ("le", "+Inf")))], 36)
        self.assertEqual(got[("dht_command_duration_seconds_count", (("command", "get"),))], 5)
        self.assertGreater(got[("dht_command_duration_seconds_sum", (("command", "set"),))], 0)
        # 20 alone, the 16 pipelined in one or a few transactions
        committed = got[("dht_transactions_total", (("outcome", "committed"),))]
        self.assertTrue(21 <= committed <= 36, committed)
        self.assertIn(("dht_transaction_retries_total", ()), got)
        self.assertEqual(got[("dht_members", (("status", "alive"),))], 3)
        self.assertEqual(got[("dht_members", (("status", "dead"),))], 0)
        self.assertEqual(got[("dht_ring_agreed", ())], 1)
        self.assertEqual(got[("dht_keys", ())], 36)
        self.assertEqual(got[("dht_transactions_in_doubt", ())], 0)
        self.assertIn(("dht_stabilization_backlog", ()), got)
        self.assertGreater(got[("process_resident_memory_bytes", ())], 10_000_000)
        # another node coordinated nothing but holds every key
        other = samples(fetch(self.urls[1] + "metrics")[1].decode())
        self.assertEqual(other[("dht_transactions_total", (("outcome", "committed"),))], 0)
        self.assertEqual(other[("dht_keys", ())], 36)

    def test_status_json_and_page(self) -> None:
        """
        C{/status.json} has the status and ring documents; C{/} is the
        page, self-contained; other paths are 404s; the node logs no line
        per HTTP request.
        """
        kind, body = fetch(self.urls[2] + "status.json")
        self.assertEqual(kind, "application/json")
        doc = json.loads(body)
        self.assertEqual(doc["status"]["node"], "web2")
        self.assertEqual(len(doc["ring"]["tokens"]), 3)
        kind, page = fetch(self.urls[2])
        self.assertEqual(kind, "text/html; charset=utf-8")
        self.assertIn(b"<svg", page)
        self.assertNotRegex(page.decode(), r"(src|href)=\"https?:")
        with self.assertRaises(urllib.error.HTTPError) as caught:
            fetch(self.urls[2] + "nope")
        self.assertEqual(caught.exception.code, 404)
        fetch(self.urls[2] + "metrics")
        self.assertNotIn("GET /metrics", self.nodes[2].log())
        self.assertNotIn("status.json", self.nodes[2].log())


class MetricsPortTests(SynchronousTestCase):
    """
    A metrics port that cannot be had stops the node at start.
    """

    def test_port_in_use(self) -> None:
        base = free_block(2)
        first = start_nodes("mp", base, 1,
                            extra={0: f"[metrics]\nlisten = 127.0.0.1:{base + 1}\n"})[0]
        self.addCleanup(first.stop)
        with self.assertRaises(RuntimeError) as caught:
            start_nodes("mq", base + 2, 1,
                        extra={0: f"[metrics]\nlisten = 127.0.0.1:{base + 1}\n"})
        self.assertIn("Address already in use", str(caught.exception))
