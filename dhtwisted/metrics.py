# -*- test-case-name: tests.test_web -*-
"""
Prometheus metrics of a node.

The hot path only counts into plain lists and dicts (L{Histogram}, the
counters the node keeps anyway); L{NodeCollector} turns them into metric
families when Prometheus scrapes, through prometheus-client's collector
API, so a request costs no lock and no label lookup.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from .status import ring_agreed, status_counts

if TYPE_CHECKING:  # pragma: no cover
    from .node import DHTNode

__all__ = ["BUCKETS", "Histogram", "NodeCollector", "registry_for"]

#: Upper bounds of the latency buckets, in seconds: 100 µs to 10 s.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
           0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """
    Counts of observations per bucket of L{BUCKETS} (and one past the
    last), and their sum.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float, n: int = 1) -> None:
        """
        Count C{n} observations of C{seconds}.
        """
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += n
        self.total += seconds * n

    def cumulative(self) -> list[tuple[str, int]]:
        """
        Prometheus's buckets: C{(upper bound, observations at most that)},
        ending with C{+Inf}.
        """
        out = []
        running = 0
        for bound, count in zip(BUCKETS, self.counts):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class NodeCollector(Collector):
    """
    The node's metrics, read when scraped.
    """

    def __init__(self, node: "DHTNode") -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        commands = node.commands
        calls = CounterMetricFamily("dht_commands", "Client commands run, by command",
                                    labels=["command"])
        for name, count in sorted(commands.calls.items()):
            calls.add_metric([name.decode("ascii", "replace").lower()], count)
        yield calls
        yield CounterMetricFamily("dht_command_errors", "Client commands answered with an "
                                  "error", value=commands.errors)
        latency = HistogramMetricFamily(
            "dht_command_duration_seconds",
            "Time from reading a client command to having its reply, by command (the "
            "replies ready at once count the whole read they came in)",
            labels=["command"])
        for name, histogram in sorted(commands.latency.items()):
            latency.add_metric([name.decode("ascii", "replace").lower()],
                               histogram.cumulative(), histogram.total)
        yield latency

        txns = CounterMetricFamily(
            "dht_transactions", "Two-phase commit attempts this node coordinated, by "
            "outcome (an attempt aborted on a lock conflict and tried again counts as "
            "aborted; unconfirmed: committed, a replica's confirmation missing)",
            labels=["outcome"])
        stats = node.coordinator.stats
        for outcome, key in (("committed", "commits"), ("aborted", "aborts"),
                             ("unconfirmed", "unconfirmed")):
            txns.add_metric([outcome], stats[key])
        yield txns
        yield CounterMetricFamily("dht_transaction_retries", "Aborted attempts tried again "
                                  "after a lock conflict", value=stats["retries"])
        yield CounterMetricFamily("dht_transactions_resolved", "Transactions prepared here "
                                  "that this node decided without their coordinator",
                                  value=node.stats["resolved"])
        yield GaugeMetricFamily("dht_transactions_in_doubt", "Transactions prepared here, "
                                "awaiting their decision", value=node.participant.in_doubt)
        yield GaugeMetricFamily("dht_locked_keys", "Keys locked by prepared transactions",
                                value=node.participant.locked_keys)

        members = GaugeMetricFamily("dht_members", "Cluster members as this node sees them, "
                                    "by status", labels=["status"])
        known = node.membership.members()
        for status, count in status_counts(known).items():
            members.add_metric([status], count)
        yield members
        agreed = ring_agreed(node.membership.me, known)
        yield GaugeMetricFamily("dht_ring_agreed", "1 if every live member gossips the ring "
                                "this node sees", value=int(agreed))

        store = node.store
        yield GaugeMetricFamily("dht_keys", "Live keys held here", value=store.live_keys)
        yield GaugeMetricFamily("dht_records", "Records held here, tombstones included",
                                value=len(store))
        yield GaugeMetricFamily("dht_stabilization_backlog", "Records the running "
                                "stabilization pass has yet to look at", value=node.backlog)
        yield CounterMetricFamily("dht_stabilization_pushed", "Records pushed to other "
                                  "owners", value=node.stats["pushed"])
        yield CounterMetricFamily("dht_stabilization_handed_off", "Records dropped here "
                                  "once their owners had them", value=node.stats["handed_off"])
        yield CounterMetricFamily("dht_gossip_rounds", "Gossip rounds started",
                                  value=node.stats["gossip_rounds"])
        yield GaugeMetricFamily("dht_clients", "Client connections",
                                value=node.factory.clients)
        yield GaugeMetricFamily("dht_peer_links", "Open links to peers",
                                value=len(node.pool.links))


def registry_for(node: "DHTNode") -> CollectorRegistry:
    """
    A registry of C{node}'s metrics and its process's (CPU, memory, open
    files), apart from prometheus-client's global one.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    return registry
