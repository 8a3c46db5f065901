"""
Real clusters on 127.0.0.x through the shipped scripts: the reference's
demo, a second group joining from another address, and an MSET that one
replica refuses.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from .procs import free_block, run_tool, start_nodes

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


class ScriptCluster:
    """
    Nodes started by script/start-cluster.sh in a run folder of their own.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.run = tempfile.mkdtemp(prefix="dht-run-")
        case.addCleanup(self.stop)

    def env(self, **extra: str) -> dict[str, str]:
        """
        The scripts' environment.
        """
        env = dict(os.environ, DHT_RUN_DIR=self.run)
        env.update(extra)
        return env

    def start(self, n: int, **extra: str) -> str:
        """
        Run start-cluster.sh N; its output.
        """
        result = subprocess.run([os.path.join(ROOT, "script", "start-cluster.sh"), str(n)],
                                env=self.env(**extra), capture_output=True, timeout=120)
        if result.returncode:
            raise RuntimeError(result.stderr.decode() + self.logs())
        return result.stdout.decode()

    def pid(self, node_id: str) -> int:
        """
        The pid of node C{node_id}.
        """
        with open(os.path.join(self.run, f"{node_id}.pid")) as f:
            return int(f.read())

    def logs(self) -> str:
        """
        Every node's log, for failure messages.
        """
        out = []
        for name in sorted(os.listdir(self.run)):
            if name.endswith(".log"):
                with open(os.path.join(self.run, name), errors="replace") as f:
                    out.append(f"--- {name}\n" + f.read()[-3000:])
        return "\n".join(out)

    def stop(self) -> None:
        """
        Run stop-cluster.sh, then remove the run folder.
        """
        subprocess.run([os.path.join(ROOT, "script", "stop-cluster.sh")],
                       env=self.env(DHT_STOP_WAIT="20"), capture_output=True, timeout=60)
        shutil.rmtree(self.run, ignore_errors=True)


def client(host: str, port: int, text: bytes) -> str:
    """
    Pipe C{text} through dht-client; its output.
    """
    return run_tool("dht-client", [host, str(port)], text).stdout.decode()


def wait_members(host: str, port: int, count: int, timeout: float = 60.0) -> None:
    """
    Wait (bounded) until the node at C{host:port} sees C{count} alive members.
    """
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = client(host, port, b"members\n")
        if seen.count("status=alive") == count:
            return
        time.sleep(0.5)
    raise AssertionError(f"{host}:{port} did not see {count} alive members:\n{seen}")


class ScriptTests(SynchronousTestCase):
    """
    The scripts, as the reference's users ran them.
    """

    def test_reference_demo(self) -> None:
        """
        Start 10 nodes; through the third set k1, k2, k3 and hello; kill -9
        it and one more; through the sixth every key still reads back.
        """
        cluster = ScriptCluster(self)
        base = free_block(10)
        out = cluster.start(10, DHT_BASE_PORT=str(base))
        self.assertEqual(out.count("pid"), 10, out)
        for i in range(10):
            wait_members("127.0.0.1", base + i, 10)
        self.check_balance(client("127.0.0.1", base, b"members\n"))
        demo = client("127.0.0.1", base + 2,
                      b"set k1 v1\nset k2 v2\nset k3 v3\nset hello world\nget k1\n")
        self.assertEqual(demo, "ok\nok\nok\nok\nv1\n")
        os.kill(cluster.pid("2"), signal.SIGKILL)
        os.kill(cluster.pid("7"), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            status = subprocess.run([os.path.join(ROOT, "script", "status.sh")],
                                    env=cluster.env(), capture_output=True, timeout=30)
            table = status.stdout.decode()
            if table.count(" dead") == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(table.count(" alive"), 8, table)
        reads = client("127.0.0.1", base + 5, b"get k1\nget k2\nget k3\nget hello\n")
        self.assertEqual(reads, "v1\nv2\nv3\nworld\n", cluster.logs())

    def check_balance(self, members: str) -> None:
        """
        With the ring ids the script gave, 100,000 random keys put between
        0.8 and 1.2 of a fair share of primaries on every node.
        """
        from dhtwisted.ring import Ring

        tokens = {}
        for line in members.splitlines():
            node_id, _, ring_ids = line.split()[:3]
            tokens[node_id] = [int(t) for t in ring_ids.split("=")[1].split(",")]
        ring = Ring(tokens, 65536)
        rng = random.Random(10)
        counts = dict.fromkeys(tokens, 0)
        for _ in range(100_000):
            counts[ring.preference_list(rng.randbytes(16), 1)[0]] += 1
        for node_id, count in counts.items():
            self.assertTrue(0.8 <= count / 10_000 <= 1.2, (node_id, count))

    def test_second_group_joins_from_another_address(self) -> None:
        """
        DHT_JOIN starts a second group on 127.0.0.2 that joins the first
        group on 127.0.0.1; data written on one group is read on the other.
        """
        cluster = ScriptCluster(self)
        base = free_block(3, ("127.0.0.1", "127.0.0.2"))
        cluster.start(3, DHT_BASE_PORT=str(base))
        wait_members("127.0.0.1", base, 3)
        out = cluster.start(2, DHT_HOST="127.0.0.2", DHT_BASE_PORT=str(base),
                            DHT_JOIN=f"127.0.0.1:{base}")
        self.assertIn("127-0-0-2-0: 127.0.0.2:", out)
        wait_members("127.0.0.1", base, 5)
        wait_members("127.0.0.2", base + 1, 5)
        self.assertEqual(client("127.0.0.2", base, b"set across groups\n"), "ok\n")
        self.assertEqual(client("127.0.0.1", base + 2, b"get across\n"), "groups\n")


class AtomicityTests(SynchronousTestCase):
    """
    MSET over real processes when one replica refuses.
    """

    def test_mset_all_or_nothing(self) -> None:
        """
        With one node refusing values over 16 bytes, an MSET of 40-byte
        values over keys spread on 4 nodes is applied nowhere (ERR); one of
        small values is applied everywhere.
        """
        base = free_block(4)
        for node in start_nodes("m", base, 4, {3: "[limits]\nmax_value = 16\n"}):
            self.addCleanup(node.stop)
        for i in range(4):
            wait_members("127.0.0.1", base + i, 4)
        keys = [f"key{i}" for i in range(24)]
        big = " ".join(f"{k} {'x' * 40}" for k in keys)
        reply = client("127.0.0.1", base, f"mset {big}\n".encode())
        self.assertTrue(reply.startswith("ERR write aborted"), reply)
        self.assertIn("max_value", reply)
        for i in range(4):
            got = client("127.0.0.1", base + i, f"mget {' '.join(keys)}\n".encode())
            self.assertEqual(got, "(nil)\n" * len(keys))
        small = " ".join(f"{k} v{k}" for k in keys)
        self.assertEqual(client("127.0.0.1", base + 1, f"mset {small}\n".encode()), "ok\n")
        for i in range(4):
            got = client("127.0.0.1", base + i, f"mget {' '.join(keys)}\n".encode())
            self.assertEqual(got, "".join(f"v{k}\n" for k in keys))


class GracefulStopTests(SynchronousTestCase):
    """
    SIGTERM makes a node hand its keys over before it exits.
    """

    def test_stop_one_by_one_down_to_n(self) -> None:
        """
        Five nodes, 3 replicas, 500 keys: SIGTERM two nodes one after the
        other, each waited for. Each hands its keys over (no leave timeout)
        and shuts down cleanly (twistd then exits by the same signal); every
        key reads back after each stop, and in the end each of the 3 nodes
        left holds all 500.
        """
        base = free_block(5)
        nodes = start_nodes("d", base, 5)
        for node in nodes:
            self.addCleanup(node.stop)
        for i in range(5):
            wait_members("127.0.0.1", base + i, 5)
        keys = [f"user:{i}" for i in range(500)]
        sets = "".join(f"set {k} value-of-{k}\n" for k in keys).encode()
        self.assertEqual(client("127.0.0.1", base, sets), "ok\n" * 500)
        expected = "".join(f"value-of-{k}\n" for k in keys)
        left = [0, 1, 2, 3, 4]
        for leaving in (4, 1):
            nodes[leaving].process.send_signal(signal.SIGTERM)
            self.assertEqual(nodes[leaving].process.wait(60), -signal.SIGTERM)
            self.assertIn("handed all its keys over", nodes[leaving].log())
            self.assertNotIn("left without handing every key over", nodes[leaving].log())
            self.assertIn("Server Shut Down.", nodes[leaving].log())
            left.remove(leaving)
            for i in left:
                got = client("127.0.0.1", base + i, f"mget {' '.join(keys)}\n".encode())
                self.assertEqual(got, expected, f"read through node {i}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counts = [client("127.0.0.1", base + i, b"info keyspace\n") for i in left]
            if all("keys:500\n" in c for c in counts):
                break
            time.sleep(0.5)
        self.assertTrue(all("keys:500\n" in c for c in counts), counts)
