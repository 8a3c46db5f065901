"""
The operator's view: the status, ring and key documents, the load each
node gossips about itself, and the C{DHT} commands that serve them.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.quoting import unquote_reply
from dhtwisted.membership import ALIVE, DEAD, Member, Membership
from dhtwisted.ring import Ring, key_position
from dhtwisted.status import RateMeter, cluster_status, key_status, ring_status, version_text
from dhtwisted.store import Record
from dhtwisted.version import HybridClock

from .cluster import Cluster

RING = 65536


class RingOwnershipTests(SynchronousTestCase):
    """
    L{Ring.arcs} and L{Ring.ownership}.
    """

    def test_arcs_cover_the_ring_once(self) -> None:
        """
        The arcs run from just past the previous token to the token, wrap
        past the end, and their widths add up to the ring.
        """
        ring = Ring({"a": [0], "b": [16384], "c": [49152]}, RING)
        arcs = ring.arcs(2)
        self.assertEqual(arcs, [(49153, 0, ["a", "b"]), (1, 16384, ["b", "c"]),
                                (16385, 49152, ["c", "a"])])
        self.assertEqual(sum((t - f) % RING + 1 for f, t, _ in arcs), RING)

    def test_ownership_counts_every_copy(self) -> None:
        """
        With N replicas each node owns its own arc and the N - 1 arcs
        before it; the shares add up to N.
        """
        ring = Ring({"a": [0], "b": [16384], "c": [49152]}, RING)
        self.assertEqual(ring.ownership(1), ring.primary_share())
        owns = ring.ownership(2)
        self.assertAlmostEqual(owns["a"], 0.25 + 0.5)  # its arc and c's
        self.assertAlmostEqual(owns["b"], 0.25 + 0.25)
        self.assertAlmostEqual(sum(owns.values()), 2.0)
        self.assertEqual(ring.ownership(3), {"a": 1.0, "b": 1.0, "c": 1.0})
        self.assertEqual(Ring({"a": [7]}, RING).ownership(3), {"a": 1.0})

    def test_ownership_matches_keys(self) -> None:
        """
        The effective ownership is the share of keys whose preference list
        names the node.
        """
        ring = Ring({"a": [100, 30000], "b": [9000], "c": [41000, 60000], "d": [20000]},
                    RING)
        keys = [b"k%d" % i for i in range(20000)]
        owns = ring.ownership(2)
        for node in "abcd":
            held = sum(node in ring.preference_list(k, 2) for k in keys) / len(keys)
            self.assertLess(abs(held - owns[node]), 0.02, node)


def member(node_id: str, token: int, **fields: object) -> Member:
    return Member(node_id, f"127.0.0.1:{9000 + token % 100}", (token,), generation=1,
                  **fields)  # type: ignore[arg-type]


class DocumentTests(SynchronousTestCase):
    """
    The documents, from plain values.
    """

    def test_cluster_status(self) -> None:
        """
        One row per member with its ring share and gossiped load; the
        summary counts statuses and says whether the live members agree.
        """
        a = member("a", 0, keys=10, memory=50_000_000, rate=12.34, view=7)
        b = member("b", 32768, keys=11, view=7)
        c = member("c", 16384, status=DEAD, view=3)
        ring = Ring({"a": [0], "b": [32768]}, RING)
        doc = cluster_status(a, [a, b, c], {"a": 0.0, "b": 0.5, "c": 20.0}, ring, 2)
        rows = {row["id"]: row for row in doc["members"]}
        self.assertEqual(rows["a"]["share"], 0.5)
        self.assertEqual(rows["a"]["owns"], 1.0)
        self.assertEqual((rows["a"]["keys"], rows["a"]["memory"], rows["a"]["rate"]),
                         (10, 50_000_000, 12.3))
        self.assertTrue(rows["a"]["me"])
        self.assertEqual(rows["c"]["share"], 0.0)
        self.assertEqual(rows["c"]["heartbeat_age"], 20.0)
        self.assertEqual(doc["summary"], {"members": 3, "alive": 2, "suspect": 0, "dead": 1,
                                          "left": 0, "replicas": 2, "on_ring": 2,
                                          "agree": True})
        # a live member that sees another ring: no agreement
        b2 = member("b", 32768, view=8)
        doc = cluster_status(a, [a, b2], {}, ring, 2)
        self.assertFalse(doc["summary"]["agree"])
        self.assertEqual([r["agrees"] for r in doc["members"]], [True, False])

    def test_ring_status(self) -> None:
        """
        Each token with its range, share and replicas.
        """
        doc = ring_status(Ring({"a": [0], "b": [49152]}, RING), 2)
        self.assertEqual(doc["tokens"], [
            {"token": 0, "node": "a", "first": 49153, "share": 0.25, "replicas": ["a", "b"]},
            {"token": 49152, "node": "b", "first": 1, "share": 0.75, "replicas": ["b", "a"]},
        ])
        self.assertEqual(doc["ownership"], {"a": 1.0, "b": 1.0})

    def test_key_status(self) -> None:
        """
        The key's position, preference list and what each replica answered:
        a version, a tombstone, nothing, or an error.
        """
        ring = Ring({"a": [0], "b": [20000], "c": [40000]}, RING)
        nodes = ring.preference_list(b"k", 3)
        version = HybridClock(lambda: 1_700_000_000.5, 0xABCD).next()
        held = {nodes[0]: Record(version, b"value"), nodes[1]: Record(version, None),
                nodes[2]: TimeoutError("no answer in 5 s")}
        doc = key_status(b"k", ring, 3, held)
        self.assertEqual(doc["position"], key_position(b"k", RING))
        self.assertEqual(doc["preference_list"], nodes)
        first, second, third = doc["replicas"]
        self.assertEqual(first, {"node": nodes[0], "version": version_text(version),
                                 "tombstone": False, "value_bytes": 5})
        self.assertTrue(second["tombstone"])
        self.assertEqual(third, {"node": nodes[2], "error": "no answer in 5 s"})
        self.assertEqual(version_text(version), "2023-11-14T22:13:20.500Z+0/0000abcd")
        self.assertIsNone(version_text(b""))
        # a time past any calendar (from a bad peer): shown as hex
        self.assertEqual(version_text(b"\xff" * 12), "ff" * 12)

    def test_rate_meter(self) -> None:
        """
        The rate is over the last window of samples.
        """
        meter = RateMeter(window=5.0)
        self.assertEqual(meter.update(0.0, 0), 0.0)
        self.assertEqual(meter.update(1.0, 100), 100.0)
        for t in range(2, 10):
            meter.update(float(t), 100 * t)
        self.assertEqual(meter.update(10.0, 1000), 100.0)
        self.assertEqual(meter.update(11.0, 1000), 80.0)  # (1000 - 600) / 5


class GossipedLoadTests(SynchronousTestCase):
    """
    What a node says of itself travels with its heartbeat.
    """

    def test_load_travels_with_heartbeat(self) -> None:
        """
        A fresher heartbeat brings the member's load; a staler one does not.
        """
        me = Membership(member("a", 0), 0.0, 10.0, 20.0)
        me.merge([member("b", 100, heartbeat=5, keys=3, memory=9, rate=1.5, view=42)], 1.0)
        self.assertEqual(me.get("b").keys, 3)
        me.merge([member("b", 100, heartbeat=4, keys=99)], 2.0)
        self.assertEqual((me.get("b").keys, me.get("b").view), (3, 42))
        me.merge([member("b", 100, heartbeat=6, keys=4, view=43)], 3.0)
        self.assertEqual((me.get("b").keys, me.get("b").view, me.get("b").status),
                         (4, 43, ALIVE))

    def test_ring_digest(self) -> None:
        """
        Equal when the live members and their tokens are equal.
        """
        one = Membership(member("a", 0), 0.0, 10.0, 20.0)
        two = Membership(member("b", 100), 0.0, 10.0, 20.0)
        self.assertNotEqual(one.ring_digest(), two.ring_digest())
        one.merge([member("b", 100, heartbeat=1)], 0.0)
        two.merge([member("a", 0, heartbeat=1)], 0.0)
        self.assertEqual(one.ring_digest(), two.ring_digest())


class CommandTests(SynchronousTestCase):
    """
    C{DHT STATUS}, C{DHT RING}, C{DHT KEY} and C{DHT LEAVE} on a 4-node
    cluster in one process.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(4, gossip_interval=0.5)
        self.cluster.run(10)

    def ask(self, line: bytes, node: int = 0) -> dict:
        client = self.cluster.client(node)
        reply = client.command(line)
        return json.loads(unquote_reply(reply.rstrip(b"\r\n")))  # type: ignore[no-any-return]

    def test_status(self) -> None:
        """
        Every member alive with its address, tokens, a quarter of the ring,
        three quarters of the keys (3 replicas), the keys it holds and a
        fresh heartbeat; all agree on the ring.
        """
        client = self.cluster.client(1)
        for i in range(40):
            self.assertEqual(client.command(b"set key%d v" % i), b"ok\r\n")
        self.cluster.run(3)
        doc = self.ask(b"dht status", node=2)
        self.assertEqual(doc["node"], "n2")
        self.assertEqual(doc["summary"], {"members": 4, "alive": 4, "suspect": 0, "dead": 0,
                                          "left": 0, "replicas": 3, "on_ring": 4,
                                          "agree": True})
        rows = {row["id"]: row for row in doc["members"]}
        self.assertEqual(sorted(rows), ["n0", "n1", "n2", "n3"])
        for i, node in enumerate(self.cluster.nodes):
            row = rows[node.node_id]
            self.assertEqual((row["address"], row["status"], row["tokens"]),
                             (f"127.0.0.1:{9000 + i}", "alive", list(node.tokens)))
            self.assertEqual((row["share"], row["owns"]), (0.25, 0.75))
            self.assertEqual(row["keys"], node.store.live_keys)
            self.assertGreater(row["memory"], 1_000_000)
            self.assertLess(row["heartbeat_age"], 3.0)
        self.assertEqual(sum(r["keys"] for r in doc["members"]), 3 * 40)
        self.assertGreater(rows["n1"]["rate"], 0)

    def test_status_after_crash(self) -> None:
        """
        A crashed node shows as dead, with an old heartbeat, and the others
        agree on the smaller ring.
        """
        self.cluster.net.crash("n3")
        self.cluster.run(30)
        doc = self.ask(b"dht status")
        rows = {row["id"]: row for row in doc["members"]}
        self.assertEqual(rows["n3"]["status"], "dead")
        self.assertGreater(rows["n3"]["heartbeat_age"], 15)
        self.assertEqual(rows["n3"]["owns"], 0.0)
        self.assertEqual(doc["summary"]["dead"], 1)
        self.assertEqual(doc["summary"]["on_ring"], 3)
        self.assertTrue(doc["summary"]["agree"])

    def test_ring(self) -> None:
        """
        One entry per token, in ring order, each naming its 3 replicas.
        """
        doc = self.ask(b"dht ring")
        self.assertEqual([t["token"] for t in doc["tokens"]], [0, 16384, 32768, 49152])
        self.assertEqual(doc["tokens"][1]["replicas"], ["n1", "n2", "n3"])
        self.assertEqual(doc["ownership"], {f"n{i}": 0.75 for i in range(4)})

    def test_key(self) -> None:
        """
        The key's preference list and the same version on each replica; a
        key never written has no version anywhere.
        """
        self.assertEqual(self.cluster.client(0).command(b"set user:42 hello"), b"ok\r\n")
        doc = self.ask(b"dht key user:42", node=3)
        self.assertEqual(doc["key"], "user:42")
        self.assertEqual(doc["preference_list"],
                         self.cluster.nodes[0].replicas_for(b"user:42"))
        versions = {r["version"] for r in doc["replicas"]}
        self.assertEqual(len(versions), 1)
        self.assertIsNotNone(versions.pop())
        self.assertEqual({r["value_bytes"] for r in doc["replicas"]}, {5})
        doc = self.ask(b"dht key never-written")
        self.assertEqual([r["version"] for r in doc["replicas"]], [None] * 3)

    def test_key_replica_down(self) -> None:
        """
        A replica that does not answer shows an error; the others still
        show their versions.
        """
        self.assertEqual(self.cluster.client(0).command(b"set k v"), b"ok\r\n")
        holders = self.cluster.nodes[0].replicas_for(b"k")
        down = next(h for h in holders if h != "n0")
        self.cluster.net.crash(down)
        doc = self.ask(b"dht key k")
        rows = {r["node"]: r for r in doc["replicas"]}
        self.assertIn("error", rows[down])
        self.assertEqual(sum("version" in r for r in rows.values()), 2)

    def test_key_with_a_bad_version_on_a_replica(self) -> None:
        """
        A replica holding a version no calendar can show (pushed by a bad
        peer): the answer still comes, with that version in hex.
        """
        self.assertEqual(self.cluster.client(0).command(b"set k v"), b"ok\r\n")
        other = next(n for n in self.cluster.nodes if n.node_id != "n0"
                     and n.node_id in self.cluster.nodes[0].replicas_for(b"k"))
        other.store.put(b"k", b"\xff" * 12, b"v")
        doc = self.ask(b"dht key k")
        rows = {r["node"]: r for r in doc["replicas"]}
        self.assertEqual(rows[other.node_id]["version"], "ff" * 12)

    def test_bad_subcommands(self) -> None:
        """
        Unknown subcommands and wrong arguments are errors naming what
        exists; an oversize key is refused.
        """
        client = self.cluster.client(0)
        for line in (b"dht", b"dht nope", b"dht status extra", b"dht key"):
            reply = client.command(line)
            self.assertTrue(reply.startswith(b"ERR "), (line, reply))
        self.assertIn(b"DHT STATUS", client.command(b"dht nope"))
        reply = client.command(b"dht key " + b"k" * 5000)
        self.assertIn(b"max_key", reply)

    def test_leave(self) -> None:
        """
        C{DHT LEAVE} answers ok and then stops the process; asked again, it
        does not stop it twice.
        """
        stopped = []
        node = self.cluster.nodes[1]
        node._shutdown = lambda: stopped.append(True)
        client = self.cluster.client(1)
        self.assertEqual(client.command(b"dht leave"), b"ok\r\n")
        self.assertEqual(client.command(b"dht leave"), b"ok\r\n")
        self.cluster.run(1)
        self.assertEqual(stopped, [True])
        # a node given no way to stop its process says so
        self.cluster.nodes[2]._shutdown = None
        reply = self.cluster.client(2).command(b"dht leave")
        self.assertTrue(reply.startswith(b"ERR this node cannot stop itself"), reply)

    def test_gossip_with_a_bad_member_id_is_refused(self) -> None:
        """
        A member whose id or address could carry terminal escapes into
        tables, logs or the page is refused when read from the wire.
        """
        from dhtwisted.wire import member_from_pb, member_to_pb

        pb = member_to_pb(member("a", 0))
        pb.node_id = "evil\x1b[2J"
        with self.assertRaises(ValueError):
            member_from_pb(pb)
        pb = member_to_pb(member("a", 0))
        pb.address = "127.0.0.1:9000\n# Fake"
        with self.assertRaises(ValueError):
            member_from_pb(pb)

    def test_info_sections(self) -> None:
        """
        C{INFO} has Redis's sections plus the cluster's; C{INFO memory}
        only the memory section; the stats count commands, transactions,
        gossip and stabilization.
        """
        client = self.cluster.client(0)
        for i in range(5):
            self.assertEqual(client.command(b"set k%d v" % i), b"ok\r\n")
        self.cluster.run(2)
        info = client.command(b"info").decode()
        headers = [line for line in info.split("\r\n") if line.startswith("# ")]
        self.assertEqual(headers, ["# Server", "# Clients", "# Keyspace", "# Cluster",
                                   "# Memory", "# Stats"])
        fields = dict(line.split(":", 1) for line in info.split("\r\n") if ":" in line)
        self.assertEqual(fields["cmd_set"], "5")
        self.assertEqual(fields["txn_commits"], "5")
        self.assertEqual(fields["txn_in_doubt"], "0")
        self.assertEqual(fields["ring_agreed"], "1")
        self.assertEqual(fields["stabilization_backlog"], "0")
        self.assertGreater(int(fields["gossip_rounds"]), 10)
        self.assertGreater(int(fields["used_memory_rss"]), 1_000_000)
        self.assertRegex(fields["used_memory_rss_human"], r"^\d+\.\d\dM$")
        self.assertGreater(float(fields["instantaneous_ops_per_sec"]), 0)
        memory = client.command(b"info memory").decode()
        self.assertTrue(memory.startswith("# Memory\r\nused_memory_rss:"), memory)
        self.assertNotIn("# Stats", memory)
