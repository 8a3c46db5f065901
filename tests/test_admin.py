"""
C{dht-admin}: its tables from documents, and the tool against real nodes.
"""

from __future__ import annotations

import json
import time

from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.admin import format_key, format_ring, format_status
from dhtwisted.ring import Ring
from dhtwisted.status import cluster_status, key_status, ring_status
from dhtwisted.store import Record

from .procs import free_block, run_tool, start_nodes
from .test_status import member


class FormatTests(SynchronousTestCase):
    """
    The tables fit a terminal and say what the documents say.
    """

    def test_status_table(self) -> None:
        a = member("a", 0, keys=1234, memory=48 * 1024 * 1024, rate=812.25, view=1)
        b = member("b", 32768, keys=1200, memory=3 * 1024**3, view=2)
        ring = Ring({"a": [0], "b": [32768]}, 65536)
        text = format_status(cluster_status(a, [a, b], {"a": 0.0, "b": 1.25}, ring, 2))
        lines = text.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "ADDRESS", "STATUS", "TOKENS", "SHARE",
                                            "OWNS", "KEYS", "MEM", "REQ/S", "AGE"])
        self.assertEqual(lines[1].split(), ["a*", "127.0.0.1:9000", "alive", "0", "50.0%",
                                            "100.0%", "1234", "48.0M", "812", "0.0s"])
        self.assertEqual(lines[2].split()[-4:], ["1200", "3.0G", "0.0", "1.2s"])
        self.assertIn("2 members as a* sees them: 2 alive, 0 suspect, 0 dead, 0 left; "
                      "2 replicas; live members DISAGREE", lines[-1])
        self.assertLessEqual(max(map(len, lines[:3])), 80)

    def test_many_tokens_abbreviated(self) -> None:
        a = member("a", 0, view=1)
        a = a.__class__(**{**a.__dict__, "tokens": tuple(range(0, 64000, 1000))})
        ring = Ring({"a": list(a.tokens)}, 65536)
        text = format_status(cluster_status(a, [a], {}, ring, 1))
        self.assertIn("0,1000 +62", text)
        self.assertIn("all live members agree", text)

    def test_ring_table(self) -> None:
        text = format_ring(ring_status(Ring({"a": [0], "b": [49152]}, 65536), 2))
        self.assertIn("49152  b     1..49152  75.0%  b,a", text)
        self.assertIn("2 tokens on a ring of 65536 positions", text)

    def test_key_table(self) -> None:
        ring = Ring({"a": [0], "b": [20000], "c": [40000]}, 65536)
        nodes = ring.preference_list(b"k", 3)
        v1, v2 = b"\x00" * 11 + b"\x01", b"\x00" * 11 + b"\x02"
        text = format_key(key_status(b"k", ring, 3, {nodes[0]: Record(v1, b"abc"),
                                                     nodes[1]: Record(v2, None),
                                                     nodes[2]: OSError("timeout")}))
        self.assertIn("3 bytes", text)
        self.assertIn("deleted (tombstone)", text)
        self.assertIn("no answer: timeout", text)
        self.assertIn("replicas differ", text)
        # one replica silent, the two others agreeing: not called agreement
        text = format_key(key_status(b"k", ring, 3, {nodes[0]: Record(v1, b"abc"),
                                                     nodes[1]: Record(v1, b"abc"),
                                                     nodes[2]: OSError("timeout")}))
        self.assertIn("2 of 3 replicas answered", text)
        self.assertNotIn("replicas agree", text)


class AdminToolTests(SynchronousTestCase):
    """
    C{dht-admin} against a real 3-node cluster on 127.0.0.1.
    """

    def test_status_ring_key_leave(self) -> None:
        base = free_block(3)
        nodes = start_nodes("adm", base, 3)
        for node in nodes:
            self.addCleanup(node.stop)
        first = f"127.0.0.1:{base}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = run_tool("dht-admin", ["status", first, "--json"])
            doc = json.loads(out.stdout) if out.returncode == 0 else {}
            if doc.get("summary", {}).get("alive") == 3 and doc["summary"]["agree"]:
                break
            time.sleep(0.5)
        self.assertEqual(doc["summary"]["alive"], 3, doc)
        self.assertTrue(doc["summary"]["agree"])
        self.assertEqual(sorted(m["id"] for m in doc["members"]), ["adm0", "adm1", "adm2"])

        out = run_tool("dht-admin", ["status", first])
        self.assertEqual(out.returncode, 0, out.stderr)
        text = out.stdout.decode()
        self.assertEqual(text.count(" alive "), 3, text)
        self.assertIn("3 members as adm0* sees them: 3 alive", text)

        out = run_tool("dht-admin", ["ring", f"127.0.0.1:{base + 1}"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("3 tokens on a ring of 65536 positions", out.stdout.decode())

        run_tool("dht-client", ["127.0.0.1", str(base), "--timeout", "10"],
                 b"set user:1 hello\n")
        out = run_tool("dht-admin", ["key", "user:1", f"127.0.0.1:{base + 2}", "--json"])
        doc = json.loads(out.stdout)
        self.assertEqual(sorted(doc["preference_list"]), ["adm0", "adm1", "adm2"])
        self.assertEqual({r["value_bytes"] for r in doc["replicas"]}, {5})
        self.assertIn("replicas agree",
                      run_tool("dht-admin", ["key", "user:1", first]).stdout.decode())

        out = run_tool("dht-admin", ["leave", f"127.0.0.1:{base + 2}", "--wait", "40"],
                       timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(nodes[2].process.wait(10), 0)
        self.assertIn("handed all its keys over", nodes[2].log())
        out = run_tool("dht-admin", ["status", first, "--json"])
        rows = {m["id"]: m for m in json.loads(out.stdout)["members"]}
        self.assertEqual(rows["adm2"]["status"], "left")

    def test_unreachable_and_bad_address(self) -> None:
        port = free_block(1)
        out = run_tool("dht-admin", ["status", f"127.0.0.1:{port}"])
        self.assertEqual(out.returncode, 1)
        self.assertIn(b"cannot connect to 127.0.0.1:", out.stderr)
        out = run_tool("dht-admin", ["status", "nonsense"])
        self.assertEqual(out.returncode, 2)
        self.assertIn(b"expected host:port", out.stderr)
