"""
The log: levels, the keys events carry, one line per membership change and
per failed transaction, and twistd's rotation of the scripts' log files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted import logs

from .cluster import Cluster
from .procs import free_block, tool
from .test_scripts import ScriptCluster


class Captured:
    """
    The events published while it is installed.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def matching(self, text: str) -> list[dict]:
        return [e for e in self.events if text in e.get("log_format", "")]


class LevelTests(SynchronousTestCase):
    """
    C{[log] level}.
    """

    def test_level(self) -> None:
        """
        Below the level, dhtwisted's events are dropped; at or above, kept.
        """
        captured = Captured(self)
        self.addCleanup(logs.configure, "info")
        log = Logger(namespace="dhtwisted.test", observer=logs.OBSERVER)
        log.debug("dropped at info")
        log.info("kept at info")
        logs.configure("warn")
        log.info("dropped at warn")
        log.warn("kept at warn")
        logs.configure("debug")
        log.debug("kept at debug")
        formats = [e["log_format"] for e in captured.events if e["log_namespace"] ==
                   "dhtwisted.test"]
        self.assertEqual(formats, ["kept at info", "kept at warn", "kept at debug"])
        self.assertEqual(captured.events[-1]["log_level"], LogLevel.debug)

    def test_node_tag(self) -> None:
        """
        Events get the process's node id, unless they name one, or more than
        one node runs in the process.
        """
        tag = logs._NodeTag()
        captured = Captured(self)
        def event(**fields: str) -> dict:
            return {"log_format": "", "log_time": 0.0, "log_level": LogLevel.info,
                    "log_namespace": "dhtwisted.test", **fields}

        tag.nodes.add("a")
        tag(event())
        tag(event(node="b"))
        tag.nodes.add("c")
        tag(event())
        self.assertEqual([e.get("node") for e in captured.events
                          if e["log_namespace"] == "dhtwisted.test"], ["a", "b", None])

    def test_key_text(self) -> None:
        self.assertEqual(logs.key_text(b"caf\xc3\xa9\xff"), "café\\xff")
        self.assertEqual(len(logs.key_text(b"k" * 1000)), 203)


class EventTests(SynchronousTestCase):
    """
    What a cluster logs, in one process.
    """

    def test_membership_change_one_line_each(self) -> None:
        """
        A crashed member: each other node logs it suspect, then dead, once
        each, naming itself and the peer.
        """
        cluster = Cluster(3, gossip_interval=0.5)
        cluster.run(5)
        captured = Captured(self)
        cluster.net.crash("n2")
        cluster.run(20)
        # (the crashed node is only cut off in the fake network: it logs the
        # others as dead in turn; its lines are left out)
        changes = [(e["node"], e["peer"], e["new"]) for e in captured.matching("member {peer} is")
                   if e["node"] != "n2"]
        self.assertEqual(sorted(changes), [("n0", "n2", "dead"), ("n0", "n2", "suspect"),
                                           ("n1", "n2", "dead"), ("n1", "n2", "suspect")])

    def test_failed_transaction_one_line(self) -> None:
        """
        A write that fails logs one warning with its txid, key and reason;
        one that commits logs nothing.
        """
        cluster = Cluster(3, gossip_interval=0.5)
        cluster.run(5)
        client = cluster.client(0)
        captured = Captured(self)
        self.assertEqual(client.command(b"set fine v"), b"ok\r\n")
        self.assertEqual(captured.events, [])
        cluster.net.crash("n1")
        reply = client.command(b"set user:7 v")
        self.assertTrue(reply.startswith(b"ERR"), reply)
        failed = captured.matching("transaction {txid}")
        self.assertEqual(len(failed), 1, failed)
        event = failed[0]
        self.assertEqual((event["key"], event["keys"], event["node"], event["log_level"]),
                         ("user:7", 1, "n0", LogLevel.warn))
        self.assertTrue(event["txid"])
        self.assertIn(event["why"], reply.decode())

    def test_failed_pipelined_writes_one_line_each(self) -> None:
        """
        Two pipelined SETs go as one transaction; when it fails, each is
        tried alone and fails: one line per transaction that failed, each
        with its own txid, none for the gathered one that was split.
        """
        cluster = Cluster(3, gossip_interval=0.5)
        cluster.run(5)
        client = cluster.client(0)
        cluster.net.crash("n2")
        captured = Captured(self)
        client.protocol.dataReceived(b"set a 1\nset b 2\n")
        deadline = 30.0
        while client.transport.value().count(b"\n") < 2 and deadline > 0:
            cluster.clock.advance(0.01)
            cluster.net.flush()
            deadline -= 0.01
        replies = client.take().split(b"\r\n")
        self.assertTrue(all(r.startswith(b"ERR") for r in replies if r), replies)
        failed = captured.matching("transaction {txid}")
        self.assertEqual(sorted(e["key"] for e in failed), ["a", "b"])
        self.assertEqual(len({e["txid"] for e in failed}), 2)
        self.assertTrue(all(e["txid"] for e in failed))


class RotationTests(SynchronousTestCase):
    """
    twistd rotates the log files the scripts start nodes with.
    """

    def test_sigusr1_rotates(self) -> None:
        """
        After SIGUSR1 the old lines are in C{<id>.log.1} and new ones go to
        C{<id>.log}.
        """
        cluster = ScriptCluster(self)
        base = free_block(1)
        cluster.start(1, DHT_BASE_PORT=str(base))
        log_path = os.path.join(cluster.run, "0.log")
        os.kill(cluster.pid("0"), signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while not os.path.exists(log_path + ".1") and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(log_path + ".1") as f:
            self.assertIn("listening on", f.read())
        # something the node logs at info: a client that speaks HTTP
        with socket.create_connection(("127.0.0.1", base), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            s.recv(100)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open(log_path) as f:
                text = f.read()
            if "spoke HTTP" in text:
                break
            time.sleep(0.1)
        self.assertIn("spoke HTTP", text)
        self.assertNotIn("listening on", text)


class JSONLinesTests(SynchronousTestCase):
    """
    C{twistd --logger dhtwisted.logs.json_lines}: one JSON object per line,
    the event's keys as fields.
    """

    def test_json_lines(self) -> None:
        port = free_block(1)
        folder = tempfile.mkdtemp(prefix="dht-json-")
        self.addCleanup(shutil.rmtree, folder, True)
        out_path = os.path.join(folder, "out")
        with open(out_path, "wb") as out:
            process = subprocess.Popen(
                [tool("twistd"), "-n", "--pidfile=", "--logger", "dhtwisted.logs.json_lines",
                 "dht", "--id", "j0", "--listen", f"127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder)

        def stop() -> None:  # (by its pid, if the test did not)
            if process.poll() is None:
                process.kill()
                process.wait(10)

        self.addCleanup(stop)
        events: list[dict] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                e.get("log_format", "").startswith("dht node {node} listening") for e in events):
            with open(out_path) as f:
                events = [json.loads(line) for line in f if line.strip()]
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(20), -signal.SIGTERM)
        listening = [e for e in events if e.get("log_format", "").startswith("dht node {node}")]
        self.assertEqual(len(listening), 1, events[-5:])
        self.assertEqual(listening[0]["node"], "j0")
        self.assertEqual(listening[0]["address"], f"127.0.0.1:{port}")
        self.assertEqual(listening[0]["log_level"]["name"], "info")
        self.assertEqual(listening[0]["log_namespace"], "dhtwisted.node")
