"""
Client authentication: C{requirepass} and C{AUTH}, in the text protocol
and RESP, with failed attempts limited; and a real node with redis-py.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial.unittest import SynchronousTestCase

from .helpers import FakeClient, make_node
from .procs import NodeProcess

PASSWORD = "correct horse battery staple"


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class AuthTests(SynchronousTestCase):
    """
    A node with C{requirepass}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.node = make_node(self.clock, requirepass=PASSWORD)

    def test_nothing_before_auth(self) -> None:
        """
        Every command but AUTH and QUIT gets NOAUTH, and runs not: nothing
        is written, nothing read.
        """
        client = FakeClient(self.node)
        for line in (b"set k v", b"get k", b"info", b"members", b"ping", b"dht status",
                     b"mset a 1 b 2", b"hello 3", b"no-such-command"):
            self.assertEqual(client.send(line + b"\n"),
                             b"ERR NOAUTH Authentication required.\r\n", line)
        self.assertEqual(len(self.node.store), 0)
        self.assertEqual(client.send(b"quit\n"), b"ok\r\n")

    def test_resp(self) -> None:
        """
        In RESP the errors carry Redis's codes; a pipeline with AUTH first
        runs the rest.
        """
        client = FakeClient(self.node)
        self.assertEqual(client.send(resp(b"SET", b"k", b"v") + resp(b"SET", b"k2", b"v")),
                         b"-NOAUTH Authentication required.\r\n" * 2)
        self.assertEqual(client.send(resp(b"AUTH", b"wrong")),
                         b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        self.assertEqual(client.send(resp(b"AUTH", PASSWORD.encode()) +
                                     resp(b"SET", b"k", b"v") + resp(b"SET", b"k2", b"w") +
                                     resp(b"GET", b"k2")),
                         b"+OK\r\n+OK\r\n+OK\r\n$1\r\nw\r\n")

    def test_auth_forms(self) -> None:
        """
        C{AUTH password} and C{AUTH default password} work; another user
        name does not; AUTH again after success still checks.
        """
        client = FakeClient(self.node)
        self.assertEqual(client.send(b'auth nobody "' + PASSWORD.encode() + b'"\n'),
                         b"ERR WRONGPASS invalid username-password pair or user is "
                         b"disabled.\r\n")
        self.assertEqual(client.send(b'auth default "' + PASSWORD.encode() + b'"\n'),
                         b"ok\r\n")
        self.assertEqual(client.send(b"set k v\n"), b"ok\r\n")
        self.assertTrue(client.send(b"auth wrong\n").startswith(b"ERR WRONGPASS"))
        self.assertTrue(client.send(b"auth\n").startswith(b"ERR wrong number of arguments"))
        # each connection authenticates for itself
        self.assertTrue(FakeClient(self.node).send(b"get k\n").startswith(b"ERR NOAUTH"))

    def test_failures_limited(self) -> None:
        """
        Five wrong passwords from a host, then it must wait a second per
        try, even with the right one; other hosts are not slowed.
        """
        client = FakeClient(self.node)
        for _ in range(5):
            self.assertTrue(client.send(b"auth wrong\n").startswith(b"ERR WRONGPASS"))
        right = b'auth "' + PASSWORD.encode() + b'"\n'
        self.assertEqual(client.send(right),
                         b"ERR too many failed AUTH attempts from 192.168.1.1: try again in "
                         b"1.0 s\r\n")
        # a client from another host is not held back
        other = StringTransportWithDisconnection(peerAddress=IPv4Address("TCP", "10.0.0.2", 4))
        proto = self.node.factory.buildProtocol(None)
        other.protocol = proto
        proto.makeConnection(other)
        proto.dataReceived(right)
        self.assertEqual(other.value(), b"ok\r\n")
        self.clock.advance(1.0)
        self.assertEqual(client.send(right), b"ok\r\n")

    def test_no_password_configured(self) -> None:
        client = FakeClient(make_node())
        self.assertIn(b"called without any password configured", client.send(b"auth x\n"))
        self.assertEqual(client.send(b"set k v\n"), b"ok\r\n")


class RedisPyAuthTests(SynchronousTestCase):
    """
    redis-py against a real node with a password.
    """

    def test_redis_py(self) -> None:
        import redis

        node = NodeProcess([], ini=f"[node]\nlisten = 127.0.0.1:0\n[security]\n"
                                   f"requirepass = {PASSWORD}\n")
        self.addCleanup(node.stop)
        with redis.Redis(port=node.port, socket_timeout=10) as r:
            with self.assertRaises(redis.AuthenticationError):
                r.get("k")
        with redis.Redis(port=node.port, password=PASSWORD, socket_timeout=10) as r:
            self.assertTrue(r.set("k", "v"))
            self.assertEqual(r.get("k"), b"v")
        # (a wrong password once, by hand: redis-py tries again on errors)
        import socket

        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
            s.sendall(resp(b"AUTH", b"wrong"))
            self.assertTrue(s.recv(100).startswith(b"-WRONGPASS"))
        self.assertIn("failed AUTH from 127.0.0.1:", node.log())
        # dht-admin needs the password too
        from .procs import run_tool

        out = run_tool("dht-admin", ["status", f"127.0.0.1:{node.port}"])
        self.assertEqual(out.returncode, 1)
        self.assertIn(b"NOAUTH", out.stderr)
        out = run_tool("dht-admin", ["--password", PASSWORD, "status", f"127.0.0.1:{node.port}"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(b"1 members as 0* sees them", out.stdout)


class HelloAuthTests(SynchronousTestCase):
    """
    C{HELLO 3 AUTH user password}, as redis-py sends it.
    """

    def test_hello_auth(self) -> None:
        node = make_node(Clock(), requirepass=PASSWORD)
        client = FakeClient(node)
        bad = client.send(resp(b"HELLO", b"3", b"AUTH", b"default", b"nope"))
        self.assertTrue(bad.startswith(b"-WRONGPASS"), bad)
        good = client.send(resp(b"HELLO", b"3", b"AUTH", b"default", PASSWORD.encode(),
                                b"SETNAME", b"me"))
        self.assertTrue(good.startswith(b"%"), good)
        self.assertEqual(client.send(resp(b"SET", b"k", b"v")), b"+OK\r\n")
        # a node without a password takes any, as Redis does
        other = FakeClient(make_node())
        self.assertTrue(other.send(resp(b"HELLO", b"3", b"AUTH", b"default", b"x"))
                        .startswith(b"%"))
