"""
Real processes on 127.0.0.1: twistd with the dht plugin, dht-client through
a pipe, dhserver, redis-cli and redis-py.
"""

from __future__ import annotations

import ctypes.util
import os
import random
import shutil
import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from .procs import NodeProcess, run_tool, tool

_INI = """\
[node]
node_id = proc
listen = 127.0.0.1:0
"""


class NodeProcessTests(SynchronousTestCase):
    """
    One node started as a user would, driven through its clients.
    """

    def setUp(self) -> None:
        self.node = NodeProcess([], ini=_INI)
        self.addCleanup(self.node.stop)

    def client(self, text: bytes) -> subprocess.CompletedProcess:
        """
        Pipe C{text} into dht-client.
        """
        return run_tool("dht-client", ["127.0.0.1", str(self.node.port)], text)

    def test_logs_where_it_listens(self) -> None:
        """
        The node logs one line with its id and its real address.
        """
        self.assertIn(f"dht node proc listening on 127.0.0.1:{self.node.port}", self.node.log())

    def test_scheduling_batch(self) -> None:
        """
        The node runs under SCHED_BATCH, as etc/node.ini's default says:
        every thread of it.
        """
        pid = self.node.process.pid
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        self.assertEqual({os.sched_getscheduler(tid) for tid in threads}, {os.SCHED_BATCH})

    def test_scheduling_normal_and_inherit(self) -> None:
        """
        A node with scheduling = normal runs under the system's default
        policy, whatever it was started under; with inherit, under that.
        """
        twistd = tool("twistd")

        def start(policy: str) -> NodeProcess:
            # twistd started under SCHED_BATCH (exec keeps the pid and the policy)
            under_batch = [sys.executable, "-c",
                           "import os, sys; os.sched_setscheduler(0, os.SCHED_BATCH, "
                           "os.sched_param(0)); os.execv(sys.argv[1], sys.argv[1:])",
                           twistd, "-n", "--pidfile=", "dht"]
            node = NodeProcess([], ini=f"{_INI}scheduling = {policy}\n", command=under_batch)
            self.addCleanup(node.stop)
            return node

        normal = start("normal")
        inherit = start("inherit")
        self.assertEqual(os.sched_getscheduler(normal.process.pid), os.SCHED_OTHER)
        self.assertEqual(os.sched_getscheduler(inherit.process.pid), os.SCHED_BATCH)

    def test_allocator(self) -> None:
        """
        With the default allocator = mimalloc, a node on a system that has
        the library runs on it: it started itself again in place (the same
        process), and its log and INFO say so. On a system without it, it
        says why, and runs on Python's allocator.
        """
        pid = self.node.process.pid
        with open(f"/proc/{pid}/maps") as f:
            loaded = "mimalloc" in f.read()
        info = self.client(b"info memory\n").stdout.decode().splitlines()
        allocator = [line for line in info if line.startswith("mem_allocator:")]
        if ctypes.util.find_library("mimalloc"):
            self.assertTrue(loaded)
            self.assertRegex(allocator[0], r"^mem_allocator:mimalloc-\d+\.\d+\.\d+$")
            self.assertIn("memory allocator: mimalloc-", self.node.log())
        else:
            self.assertFalse(loaded)
            self.assertEqual(allocator, ["mem_allocator:pymalloc"])
            self.assertIn("no mimalloc library on this system", self.node.log())

    def test_allocator_python(self) -> None:
        """
        allocator = python: the node runs on Python's own allocator, with
        nothing preloaded.
        """
        node = NodeProcess([], ini=f"{_INI}allocator = python\n")
        self.addCleanup(node.stop)
        with open(f"/proc/{node.process.pid}/maps") as f:
            self.assertNotIn("mimalloc", f.read())
        result = run_tool("dht-client", ["127.0.0.1", str(node.port)], b"info memory\n")
        self.assertIn("mem_allocator:pymalloc", result.stdout.decode().splitlines())
        self.assertIn("memory allocator: pymalloc", node.log())

    def test_dht_client_pipe(self) -> None:
        """
        dht-client reads a pipe without a prompt and prints what the
        reference's client printed: ok, the value; values decoded for display.
        """
        result = self.client(
            b'set k1 v1\nget k1\nset hello "big world"\nget hello\nget missing\n'
            b"mset a 1 b 2\nmget a nope b\ndel a\nfrob\nexit\nget k1\n"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.decode(),
            "ok\nv1\nok\nbig world\n(nil)\nok\n1\n(nil)\n2\n1\nERR unknown command 'frob'\n",
        )

    def test_dht_client_stays_in_step(self) -> None:
        """
        After commands with block replies (COMMAND, HELLO, MEMBERS),
        dht-client still pairs each later command with its own reply.
        """
        result = self.client(b"command\nhello\nmembers\nset a 1\nget a\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.decode().splitlines()[-2:], ["ok", "1"])

    def test_dht_client_info_and_end_of_input(self) -> None:
        """
        INFO prints its lines; end of input ends the client with status 0.
        """
        result = self.client(b"info\nping\n")
        self.assertEqual(result.returncode, 0)
        lines = result.stdout.decode().splitlines()
        self.assertEqual(lines[0], "# Server")
        self.assertIn("node_id:proc", lines)
        self.assertEqual(lines[-1], "PONG")

    def test_dht_client_connection_lost(self) -> None:
        """
        When the node goes away, dht-client says so and exits non-zero.
        """
        self.node.stop()
        result = self.client(b"get k1\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"cannot connect to 127.0.0.1", result.stderr)

    def test_redis_py(self) -> None:
        """
        redis-py (RESP2 and RESP3) stores and reads binary values and 1 MiB.
        """
        import redis

        for protocol in (2, 3):
            r = redis.Redis(host="127.0.0.1", port=self.node.port, protocol=protocol,
                            socket_timeout=10)
            value = bytes(range(256)) * 4096
            self.assertTrue(r.set(b"bin\x00key", value))
            self.assertEqual(r.get(b"bin\x00key"), value)
            self.assertEqual(r.mget([b"bin\x00key", b"none"]), [value, None])
            with self.assertRaises(redis.ResponseError):
                r.set("big", b"x" * (1024 * 1024 + 1))
            self.assertTrue(r.ping())
            r.close()

    def test_redis_cli(self) -> None:
        """
        redis-cli sets and gets against the node.
        """
        cli = shutil.which("redis-cli")
        if cli is None:
            raise SkipTest("redis-cli is not installed: its check did not run "
                           "(redis-py was checked in test_redis_py)")
        port = str(self.node.port)
        out = subprocess.run([cli, "-h", "127.0.0.1", "-p", port, "set", "a", "b c"],
                             capture_output=True, timeout=30)
        self.assertEqual(out.stdout.strip(), b"OK")
        out = subprocess.run([cli, "-h", "127.0.0.1", "-p", port, "get", "a"],
                             capture_output=True, timeout=30)
        self.assertEqual(out.stdout.strip(), b"b c")

    def test_half_close(self) -> None:
        """
        A client that sends its commands and closes its side (as
        `printf ... | nc -N` does) still reads every reply.
        """
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
            s.sendall(b"set a b\r\nget a\r\nget missing\r\n")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        self.assertEqual(data, b"ok\r\nb\r\n(nil)\r\n")

    def test_garbage_on_a_real_socket(self) -> None:
        """
        64 KiB of random bytes and an HTTP request leave the node serving,
        with its data intact.
        """
        self.assertEqual(self.client(b"set kept yes\n").stdout, b"ok\n")
        for payload in (random.Random(7).randbytes(64 * 1024),
                        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
        self.assertEqual(self.client(b"get kept\n").stdout, b"yes\n")
        self.assertIsNone(self.node.process.poll())


class StartupTests(SynchronousTestCase):
    """
    Starting and refusing to start.
    """

    def test_twistd_finds_plugin(self) -> None:
        """
        `twistd dht --help` in the installed venv describes the plugin.
        """
        result = subprocess.run([tool("twistd"), "dht", "--help"], capture_output=True,
                                timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"--config", result.stdout)
        self.assertIn(b"--join", result.stdout)

    def test_bad_config_stops_with_one_line(self) -> None:
        """
        An unknown key stops the node at start, naming the file, section
        and key on one line, with a non-zero status.
        """
        with self.assertRaises(RuntimeError) as caught:
            NodeProcess([], ini=_INI + "[limits]\nmax_vaule = 10\n", timeout=30)
        lines = [line for line in str(caught.exception).splitlines() if "max_vaule" in line]
        self.assertEqual(len(lines), 1)
        self.assertIn("node.ini: [limits] max_vaule: unknown key", lines[0])
        self.assertIn("node exited with 1", str(caught.exception))

    def test_port_in_use(self) -> None:
        """
        A port already taken stops the node with a clear reason.
        """
        first = NodeProcess([], ini=_INI)
        self.addCleanup(first.stop)
        with self.assertRaises(RuntimeError) as caught:
            NodeProcess(["--listen", f"127.0.0.1:{first.port}"], ini=_INI)
        self.assertIn("Address already in use", str(caught.exception))

    def test_dhserver(self) -> None:
        """
        dhserver <id> <ip> <port> <ring_id> starts a bootstrap node;
        dhserver <id> <ip> <port> <ring_id> <bootstrap_ip> <bootstrap_port>
        starts one that joins it; both serve the same data.
        """
        ports = []
        for _ in range(2):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
            probe.close()
        first = NodeProcess(["0", "127.0.0.1", str(ports[0]), "0"], command=[tool("dhserver")])
        self.addCleanup(first.stop)
        second = NodeProcess(["7", "127.0.0.1", str(ports[1]), "1234", "127.0.0.1",
                              str(ports[0])], command=[tool("dhserver")])
        self.addCleanup(second.stop)
        self.assertEqual((first.port, second.port), tuple(ports))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            members = run_tool("dht-client", ["127.0.0.1", str(ports[0])], b"members\n")
            if members.stdout.count(b"status=alive") == 2:
                break
            time.sleep(0.2)
        self.assertIn(f"7 127.0.0.1:{ports[1]} ring_ids=1234 status=alive".encode(),
                      members.stdout)
        result = run_tool("dht-client", ["127.0.0.1", str(ports[1])], b"set a b\n")
        self.assertEqual(result.stdout, b"ok\n")
        result = run_tool("dht-client", ["127.0.0.1", str(ports[0])], b"get a\n")
        self.assertEqual(result.stdout, b"b\n")

    def test_unreachable_seed_refuses_writes(self) -> None:
        """
        A node whose seeds never answered has not joined a cluster: it
        refuses writes instead of keeping data on its own.
        """
        node = NodeProcess([], ini=_INI + "[cluster]\nseeds = 127.0.0.1:1\n")
        self.addCleanup(node.stop)
        result = run_tool("dht-client", ["127.0.0.1", str(node.port)], b"set a b\n")
        self.assertEqual(result.stdout, b"ERR not part of a cluster yet: no seed answered; "
                                        b"nothing applied\n")
