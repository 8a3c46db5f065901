"""
A cluster with a secret: members with it work; a node with another
secret, or none, cannot join, gossip, push or take part in 2PC; a raw
connection that skips the proof is read no further; a live cluster
rotates its secret without losing a request.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted import logs, wire
from dhtwisted.config import Address, default_config
from dhtwisted.node import DHTNode

from .cluster import Cluster
from .helpers import FakeClient
from .procs import NodeProcess, free_block, wait_until
from .test_scripts import client, wait_members

SECRET = "the cluster's secret, long enough"
OTHER = "another secret, also long enough"


def outsider(cluster: Cluster, name: str, port: int, **settings: object) -> DHTNode:
    """
    A node that tries to join C{cluster} through its first node.
    """
    address = Address("127.0.0.1", port)
    config = default_config().replace(
        node_id=name, listen=address, advertise=address, ring_id=12345,
        seeds=(Address("127.0.0.1", 9000),), gossip_interval=0.5, **settings)
    node = DHTNode(config, cluster.clock, connect=cluster.net.connector(name),
                   rng=random.Random(7))
    cluster.net.nodes[str(address)] = node
    node.startService()
    return node


class SecretClusterTests(SynchronousTestCase):
    """
    Three members sharing a secret, in one process.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(3, gossip_interval=0.5, cluster_secret=SECRET)
        self.events: list[dict] = []
        self.addCleanup(logs.configure, "info")
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_members_work(self) -> None:
        self.cluster.run(5)
        self.assertEqual(self.cluster.live_views(), {f"n{i}": ["n0", "n1", "n2"]
                                                     for i in range(3)})
        self.assertEqual(self.cluster.client(1).command(b"set k v"), b"ok\r\n")
        self.assertEqual(self.cluster.client(2).command(b"get k"), b"v\r\n")

    def check_kept_out(self, settings: dict, member_says: str, outsider_says: str) -> None:
        self.cluster.run(5)
        self.assertEqual(self.cluster.client(0).command(b"set before v"), b"ok\r\n")
        # (at debug: the refusals after the first are logged there)
        node = outsider(self.cluster, "x", 9100, log_level="debug", **settings)
        self.cluster.run(20)
        # not a member anywhere, and it knows nobody
        for view in self.cluster.live_views().values():
            if view != ["x"]:
                self.assertEqual(view, ["n0", "n1", "n2"])
        self.assertEqual([m.node_id for m in node.membership.members()], ["x"])
        # no data reached it, and its writes go nowhere
        self.assertEqual(len(node.store), 0)
        reply = self.cluster.client(0).command(b"set after v")
        self.assertEqual(reply, b"ok\r\n")
        self.assertNotIn("x", self.cluster.holders(b"after"))
        out = FakeClient(node)
        self.assertTrue(out.send(b"set k v\n").startswith(b"ERR not part of a cluster"))
        # each side logged the refusal once, though the outsider kept trying
        refusals = [(e["what"], e["why"]) for e in self.events
                    if e.get("what", "").startswith("peer link")
                    and e["log_level"].name == "warn"]
        self.assertEqual(sorted(refusals), [("peer link from", member_says),
                                            ("peer link to", outsider_says)])
        self.assertGreater(len([e for e in self.events if e.get("why") == member_says]), 1)

    def test_wrong_secret_kept_out(self) -> None:
        self.check_kept_out({"cluster_secret": OTHER}, "it does not know the cluster secret",
                            "it closed the link: it does not accept this node's cluster secret")

    def test_no_secret_kept_out(self) -> None:
        self.check_kept_out({}, "it has no cluster secret, this node has one",
                            "it has a cluster secret, this node has none")

    def test_raw_connection_read_no_further(self) -> None:
        """
        Bytes that skip the proof (a preamble without a secret, then a
        Hello, gossip, a push and a prepare) get only the node's preamble
        back; nothing is applied or locked.
        """
        node = self.cluster.nodes[0]
        intruder = FakeClient(node)
        hello = wire.Envelope(request_id=1)
        wire.member_to_pb(node.membership.me.__class__("x", "127.0.0.9:1", (7,), 1),
                          hello.hello.member)
        push = wire.Envelope(request_id=2)
        record = push.push.records.add(key=b"planted", version=b"\x00" * 11 + b"\x01",
                                       value=b"evil")
        del record
        prepare = wire.Envelope(request_id=3)
        prepare.prepare.txid = "x:1:1"
        prepare.prepare.coordinator = "x"
        prepare.prepare.writes.keys.append(b"locked")
        prepare.prepare.writes.values.append(b"v")
        frames = b"".join(_frame(e) for e in (hello, push, prepare))
        got = intruder.send(wire.PREAMBLE + frames)
        self.assertEqual(got[:6], wire.PREAMBLE[:6])
        self.assertEqual(got[6], 1)  # it says it has a secret
        self.assertEqual(len(got), wire.PREAMBLE_SIZE)  # its preamble, then nothing
        self.assertTrue(intruder.closed)
        self.assertEqual(node.store.get(b"planted").version, b"")
        self.assertEqual(node.participant.locked_keys, 0)


def _frame(envelope: wire.Envelope) -> bytes:
    frame = wire.Frame()
    frame.envelopes.append(envelope)
    data = frame.SerializeToString()
    return len(data).to_bytes(4, "big") + data


class RotationTests(SynchronousTestCase):
    """
    Rotating the secret of a live 3-node cluster of real processes, by
    their secret files, while a client writes.
    """

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="dht-secrets-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def secret_file(self, name: str, *secrets: str) -> str:
        path = os.path.join(self.dir, name)
        with open(path + ".tmp", "w") as f:
            f.write("".join(s + "\n" for s in secrets))
        os.replace(path + ".tmp", path)  # as an operator's tooling would: whole, at once
        return path

    def node(self, i: int, base: int, secret_file: str, seed: int) -> NodeProcess:
        node = NodeProcess([], ini=(
            f"[node]\nnode_id = r{i}\nlisten = 127.0.0.1:{base + i}\n"
            f"ring_id = {i * 13000}\n[cluster]\ngossip_interval = 0.5\nheartbeat_interval = 0.2\n"
            f"fail_after = 3.0\nremove_after = 6.0\nseeds = 127.0.0.1:{seed}\n"
            f"[security]\ncluster_secret_file = {secret_file}\n"))
        self.addCleanup(node.stop)
        return node

    def test_rotate_under_load(self) -> None:
        base = free_block(6)
        files = [self.secret_file(f"n{i}", SECRET) for i in range(3)]
        nodes = [self.node(i, base, files[i], base) for i in range(3)]
        for i in range(3):
            wait_members("127.0.0.1", base + i, 3)

        written: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            import redis

            n = 0
            with redis.Redis(port=base + 1, socket_timeout=20) as r:
                while not stop.is_set():
                    key = f"rot:{n}"
                    try:
                        r.set(key, key)
                        written.append(key)
                    except Exception as e:  # a lost request: the test fails
                        failures.append(f"{key}: {e}")
                    n += 1

        writer = threading.Thread(target=load)
        writer.start()
        try:
            # 1: every node also accepts the new secret; 2: every node proves
            # the new one, still accepting the old; 3: the old one is gone
            steps = ((SECRET, OTHER), (OTHER, SECRET), (OTHER,))
            for number, step in enumerate(steps, 1):
                for i in range(3):
                    self.secret_file(f"n{i}", *step)
                if number == 3:
                    self.secret_file("n3", *step)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not all(
                        n.log().count("cluster secrets read again") == number for n in nodes):
                    time.sleep(0.1)
                if number == 1:
                    # mid-rotation: a node already at step 2 joins nodes at
                    # step 1, over new links both ways
                    mid = self.node(3, base, self.secret_file("n3", *steps[1]), base)
                    wait_members("127.0.0.1", base + 3, 4)
                time.sleep(1.0)  # writes go on between the steps
            # a new node with the new secret only joins; one with the old is kept out
            newcomer = self.node(4, base, self.secret_file("n4", OTHER), base)
            late = self.node(5, base, self.secret_file("n5", SECRET), base)
            wait_members("127.0.0.1", base + 4, 5)
            wait_until(lambda: "refused the peer link" in late.log() + nodes[0].log(),
                       what="the node with the old secret refused")
        finally:
            stop.set()
            writer.join(30)
        self.assertEqual(failures, [])
        self.assertGreater(len(written), 50)
        for node in nodes:
            self.assertEqual(node.log().count("cluster secrets read again"), 3, node.log())
        self.assertEqual(mid.log().count("cluster secrets read again"), 1)
        members = client("127.0.0.1", base, b"members\n")
        self.assertIn("r3 ", members)
        self.assertIn("r4 ", members)
        self.assertNotIn("r5 ", members)
        self.assertIn("refused the peer link", late.log() + nodes[0].log())
        sample = written[:: max(1, len(written) // 200)]
        got = client("127.0.0.1", base + 2, f"mget {' '.join(sample)}\n".encode())
        self.assertEqual(got, "".join(k + "\n" for k in sample))
        del newcomer
