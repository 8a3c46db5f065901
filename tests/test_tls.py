"""
Mutual TLS: dht-certs, the [tls] settings, and real nodes that speak TLS
to each other and to clients; a node with another CA's certificate, with
a certificate for another name, or without TLS, is kept out.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.certs import tls_name, write_set
from dhtwisted.config import ConfigError, config_from_string
from dhtwisted.tls import TLSSettings

from .procs import NodeProcess, free_block, run_tool, start_nodes, wait_until


class CertsTests(SynchronousTestCase):
    """
    dht-certs and loading what it wrote.
    """

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="dht-certs-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_console_script(self) -> None:
        out = run_tool("dht-certs", ["--out", self.dir, "0", "1"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(sorted(os.listdir(self.dir)),
                         ["0.key", "0.pem", "1.key", "1.pem", "ca.key", "ca.pem", "client.key",
                          "client.pem"])
        self.assertEqual(os.stat(os.path.join(self.dir, "0.key")).st_mode & 0o777, 0o600)
        settings = TLSSettings(*(os.path.join(self.dir, f) for f in ("ca.pem", "0.pem",
                                                                      "0.key")))
        self.assertIn(tls_name("0"), repr(settings.own.original.to_cryptography().extensions))

    def test_config(self) -> None:
        paths = write_set(self.dir, ["n1"])
        ca = os.path.join(self.dir, "ca.pem")
        cert, key = paths["n1"]
        ini = f"[node]\nnode_id = n1\n[tls]\nca = {ca}\ncert = {cert}\nkey = {key}\n"
        self.assertTrue(config_from_string(ini).tls)
        # TLS is a protection: listening beyond this machine is allowed
        config_from_string(ini.replace("[node]\n", "[node]\nlisten = 0.0.0.0:9000\n"))

        def error(text: str) -> str:
            with self.assertRaises(ConfigError) as caught:
                config_from_string(text, "n.ini")
            return str(caught.exception)

        self.assertIn("set ca, cert and key together",
                      error(f"[tls]\nca = {ca}\ncert = {cert}\n"))
        self.assertIn("cannot read the key file",
                      error(ini.replace(key, os.path.join(self.dir, "missing.key"))))
        self.assertIn("are not a certificate and its key",
                      error(ini.replace(key, paths["client"][1])))
        self.assertIn("is not a PEM certificate", error(ini.replace(ca, key)))
        self.assertIn("a node id is lower case", error(ini.replace("node_id = n1",
                                                                   "node_id = N1")))


class TLSLayerTests(SynchronousTestCase):
    """
    The TLS layer inside a node's port, without sockets.
    """

    def test_garbage_hello_counted_once_and_logged(self) -> None:
        """
        A connection that opens like TLS and then is not: one connection
        counted while open, none after; the failed handshake is logged.
        Inside a TLS connection, TLS bytes are not taken as TLS again.
        """
        from twisted.logger import globalLogPublisher

        from .helpers import FakeClient, make_node

        folder = tempfile.mkdtemp(prefix="dht-certs-")
        self.addCleanup(shutil.rmtree, folder, True)
        cert, key = write_set(folder, ["0"])["0"]
        node = make_node(tls_ca=os.path.join(folder, "ca.pem"), tls_cert=cert, tls_key=key)
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = FakeClient(node)
        client.protocol.dataReceived(b"\x16\x03\x01\x00\x05")  # a record header, no hello
        self.assertEqual(node.factory.connections, 1)
        client.protocol.dataReceived(b"\x00" * 64)
        client.transport.loseConnection()
        self.assertEqual(node.factory.connections, 0)
        refusals = [e for e in events if e.get("what") == "TLS connection from"]
        self.assertEqual(len(refusals), 1, refusals)
        self.assertTrue(refusals[0]["why"].startswith("TLS handshake failed ("))
        self.assertEqual(node.factory.clients, 0)
        # inside TLS, a 0x16 first byte is a (bad) text command, not TLS again
        inner = FakeClient(node)
        inner.protocol.inside_tls = True
        self.assertTrue(inner.send(b"\x16\x03 nested\n").startswith(b"ERR unknown command"))


class TLSClusterTests(SynchronousTestCase):
    """
    Real nodes on 127.0.0.1 with certificates from one throwaway CA.
    """

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="dht-tls-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.paths = write_set(self.dir, ["t0", "t1", "t2", "t3"])
        self.rogue = write_set(os.path.join(self.dir, "rogue"), ["t4"])
        self.ca = os.path.join(self.dir, "ca.pem")
        self.base = free_block(6)

    def tls_ini(self, name: str, ca: str = "") -> str:
        cert, key = (self.paths.get(name) or self.rogue[name])
        return f"[tls]\nca = {ca or self.ca}\ncert = {cert}\nkey = {key}\n"

    def status(self, port: int) -> dict:
        out = run_tool("dht-admin", ["status", f"127.0.0.1:{port}", "--json"])
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def wait_alive(self, port: int, ids: list[str], timeout: float = 40) -> dict:
        deadline = time.monotonic() + timeout
        doc: dict = {}
        while time.monotonic() < deadline:
            doc = self.status(port)
            alive = sorted(m["id"] for m in doc.get("members", []) if m["status"] == "alive")
            if alive == ids:
                return doc
            time.sleep(0.3)
        raise AssertionError(f"did not see {ids} alive: {doc}")

    def tls_client(self, port: int, with_cert: bool) -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=self.ca)
        if with_cert:
            context.load_cert_chain(*self.paths["client"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        return context.wrap_socket(raw, server_hostname="localhost")

    def test_cluster_over_tls(self) -> None:
        """
        Three nodes join over TLS and replicate; clients talk to them over
        TLS, with or without a certificate, or in plain TCP.
        """
        nodes = start_nodes("t", self.base, 3,
                            extra={i: self.tls_ini(f"t{i}") for i in range(3)})
        for node in nodes:
            self.addCleanup(node.stop)
        for i in range(3):  # each must see the others before it coordinates
            self.wait_alive(self.base + i, ["t0", "t1", "t2"])
        with self.tls_client(self.base + 1, with_cert=False) as s:
            s.sendall(b"set k over-tls\r\n")
            self.assertEqual(s.recv(100), b"ok\r\n")
        with self.tls_client(self.base + 2, with_cert=True) as s:
            s.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
            self.assertEqual(s.recv(100), b"$8\r\nover-tls\r\n")
        out = run_tool("dht-client", ["127.0.0.1", str(self.base)], b"get k\n")
        self.assertEqual(out.stdout, b"over-tls\n")
        # dht-admin over TLS, checking the node's certificate
        out = run_tool("dht-admin", ["--cacert", self.ca, "key", "k", f"127.0.0.1:{self.base}"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(b"replicas agree", out.stdout)
        other_ca = os.path.join(self.dir, "rogue", "ca.pem")
        out = run_tool("dht-admin", ["--cacert", other_ca, "status", f"127.0.0.1:{self.base}"])
        self.assertEqual(out.returncode, 1)
        self.assertIn(b"TLS with 127.0.0.1:", out.stderr)

    def test_outsiders_kept_out(self) -> None:
        """
        Kept out of a TLS cluster: a node whose certificate comes from
        another CA, a node using another node's valid certificate (t3
        showing t0's), and a node without TLS. Each is refused with its
        reason in the log; none becomes a member.
        """
        nodes = start_nodes("t", self.base, 2,
                            extra={i: self.tls_ini(f"t{i}") for i in range(2)})
        for node in nodes:
            self.addCleanup(node.stop)
        self.wait_alive(self.base, ["t0", "t1"])
        seed = f"[cluster]\ngossip_interval = 0.5\nseeds = 127.0.0.1:{self.base}\n"

        def outsider(node_id: str, port: int, tls: str) -> NodeProcess:
            node = NodeProcess([], ini=f"[node]\nnode_id = {node_id}\n"
                                       f"listen = 127.0.0.1:{port}\nring_id = {port % 60000}\n"
                                       + seed + tls)
            self.addCleanup(node.stop)
            return node

        cert, key = self.paths["t0"]
        outsiders = [
            outsider("t4", self.base + 3, self.tls_ini("t4", os.path.join(self.dir, "rogue",
                                                                            "ca.pem"))),
            outsider("t3", self.base + 4, f"[tls]\nca = {self.ca}\ncert = {cert}\nkey = {key}\n"),
            outsider("t5", self.base + 5, ""),
        ]
        # each refused, and said so, at least once
        wait_until(lambda: all(text in nodes[0].log() + "".join(o.log() for o in outsiders)
                               for text in ("does not name node t3", "speak TLS to each other",
                                            "TLS handshake failed")),
                   what="every outsider refused")
        doc = self.wait_alive(self.base, ["t0", "t1"])
        self.assertEqual(sorted(m["id"] for m in doc["members"]), ["t0", "t1"])
        log = nodes[0].log() + "".join(o.log() for o in outsiders)
        self.assertIn("its certificate does not name node t3", log)
        self.assertIn("this cluster's nodes speak TLS to each other", log)
        # the rogue CA's node fails the TLS handshake itself, on both sides
        self.assertIn("refused the TLS connection from 127.0.0.1:", nodes[0].log())
        self.assertIn("TLS handshake failed", nodes[0].log())
        self.assertIn("refused the peer link to 127.0.0.1:", outsiders[0].log())
        self.assertIn("TLS handshake failed", outsiders[0].log())
        for o in outsiders:
            out = run_tool("dht-client", ["127.0.0.1", str(o.port)], b"set x y\n")
            self.assertTrue(out.stdout.startswith(b"ERR not part of a cluster"), out.stdout)

    def test_impostor_dialled(self) -> None:
        """
        A member that dials an impostor (a node calling itself t3 but
        showing t1's valid certificate) refuses its Welcome.
        """
        cert, key = self.paths["t1"]
        impostor = NodeProcess([], ini=f"[node]\nnode_id = t3\n"
                                       f"listen = 127.0.0.1:{self.base + 1}\nring_id = 3\n"
                                       f"[tls]\nca = {self.ca}\ncert = {cert}\nkey = {key}\n")
        self.addCleanup(impostor.stop)
        member = start_nodes("t", self.base, 1, extra={0: self.tls_ini("t0")})[0]
        self.addCleanup(member.stop)
        # t0 has no seed: make it dial the impostor, as a joining node would
        member.stop()
        member = NodeProcess([], ini=f"[node]\nnode_id = t2\nlisten = 127.0.0.1:{self.base}\n"
                                     f"ring_id = 2\n[cluster]\ngossip_interval = 0.5\n"
                                     f"seeds = 127.0.0.1:{self.base + 1}\n" + self.tls_ini("t2"))
        self.addCleanup(member.stop)
        wait_until(lambda: "does not name node t3" in member.log(), what="t3 refused")
        self.assertIn("its certificate does not name node t3", member.log())
        doc = self.status(self.base)
        self.assertEqual([m["id"] for m in doc["members"]], ["t2"])
