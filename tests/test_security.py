"""
Who may talk to a node: protected mode, cluster secrets (inline or from a
file that changes), the AUTH failure limiter.
"""

from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.config import ConfigError, config_from_string
from dhtwisted.security import FailureLimiter, SecretFile, is_loopback, parse_secrets

SECRET = "a cluster secret of some length"


class ProtectedModeTests(SynchronousTestCase):
    """
    A node that would listen beyond this machine with no cluster secret
    refuses to start, and says why and what to do.
    """

    def test_refused(self) -> None:
        for host in ("0.0.0.0", "10.1.2.3", "[::]", "node1.example"):
            with self.assertRaises(ConfigError) as caught:
                config_from_string(f"[node]\nlisten = {host}:9000\n", "n.ini")
            message = str(caught.exception)
            self.assertTrue(message.startswith("n.ini: [security] protected_mode: this node "
                                               "would listen on"), message)
            self.assertIn("Set cluster_secret or cluster_secret_file, or [tls], or "
                          "protected_mode = no", message)

    def test_allowed(self) -> None:
        for ini in ("[node]\nlisten = 127.0.0.1:9000\n",
                    "[node]\nlisten = 127.0.0.5:9000\n",
                    "[node]\nlisten = [::1]:9000\n",
                    "[node]\nlisten = localhost:9000\n",
                    f"[node]\nlisten = 0.0.0.0:9000\n[security]\ncluster_secret = {SECRET}\n",
                    "[node]\nlisten = 0.0.0.0:9000\n[security]\nprotected_mode = no\n"):
            config_from_string(ini)

    def test_loopback(self) -> None:
        self.assertTrue(is_loopback("127.9.9.9"))
        self.assertTrue(is_loopback("::1"))
        self.assertFalse(is_loopback("0.0.0.0"))
        self.assertFalse(is_loopback("::"))
        self.assertFalse(is_loopback("example.org"))


class SecretTests(SynchronousTestCase):
    """
    Cluster secrets in the config, and secret files.
    """

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir, True))

    def write(self, text: str) -> str:
        path = os.path.join(self.dir, "secret")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_inline(self) -> None:
        config = config_from_string(f"[security]\ncluster_secret = {SECRET}\n")
        self.assertEqual(config.cluster_secret, SECRET)
        self.assertNotIn(SECRET, repr(config))
        with self.assertRaises(ConfigError) as caught:
            config_from_string("[security]\ncluster_secret = short\n")
        self.assertIn("at least 16 bytes", str(caught.exception))

    def test_file(self) -> None:
        path = self.write(f"# the cluster's secrets\n{SECRET}\n\nthe previous one, still ok\n")
        config = config_from_string(f"[security]\ncluster_secret_file = {path}\n")
        self.assertEqual(SecretFile(config.cluster_secret_file).read(),
                         [SECRET.encode(), b"the previous one, still ok"])

    def test_bad_files(self) -> None:
        def error(path: str) -> str:
            with self.assertRaises(ConfigError) as caught:
                config_from_string(f"[security]\ncluster_secret_file = {path}\n", "n.ini")
            return str(caught.exception)

        self.assertIn("n.ini: [security] cluster_secret_file: cannot read",
                      error(os.path.join(self.dir, "missing")))
        self.assertIn("no secret in it", error(self.write("# nothing\n\n")))
        self.assertIn("line 2: a secret needs at least 16 bytes",
                      error(self.write(f"{SECRET}\nshort\n")))
        with open(os.path.join(self.dir, "latin"), "wb") as f:
            f.write(b"\xe9" * 20)
        self.assertIn("not UTF-8", error(os.path.join(self.dir, "latin")))
        with self.assertRaises(ConfigError) as caught:
            config_from_string(f"[security]\ncluster_secret = {SECRET}\n"
                               f"cluster_secret_file = {self.write(SECRET)}\n")
        self.assertIn("not both", str(caught.exception))

    def test_reload(self) -> None:
        """
        The secrets again when the content changed (even to the same size),
        else nothing; an error once the file is gone.
        """
        path = self.write(SECRET + "\n")
        secrets = SecretFile(path)
        self.assertEqual(secrets.reload(), [SECRET.encode()])
        self.assertIsNone(secrets.reload())
        self.write("a new secret, long enough\n" + SECRET + "\n")
        self.assertEqual(secrets.reload()[0], b"a new secret, long enough")
        self.write(SECRET + "\na new secret, long enough\n")  # swapped: same size
        self.assertEqual(secrets.reload()[0], SECRET.encode())
        os.remove(path)
        with self.assertRaises(ValueError):
            secrets.reload()

    def test_parse(self) -> None:
        self.assertEqual(parse_secrets(f"  {SECRET}  \r\n"), [SECRET.encode()])


class FailureLimiterTests(SynchronousTestCase):
    """
    Failed AUTH attempts: a burst, then one per second, per host.
    """

    def test_bucket(self) -> None:
        limiter = FailureLimiter(burst=3, rate=1.0)
        for _ in range(3):
            self.assertEqual(limiter.wait("a", 100.0), 0.0)
            limiter.failed("a", 100.0)
        self.assertEqual(limiter.wait("a", 100.0), 1.0)
        self.assertEqual(limiter.wait("b", 100.0), 0.0)  # another host
        self.assertEqual(limiter.wait("a", 100.5), 0.5)
        self.assertEqual(limiter.wait("a", 101.0), 0.0)
        limiter.failed("a", 101.0)
        self.assertEqual(limiter.wait("a", 101.0), 1.0)
        self.assertEqual(limiter.wait("a", 110.0), 0.0)

    def test_bounded(self) -> None:
        limiter = FailureLimiter(burst=1, rate=0.001, hosts=100)
        for i in range(1000):
            limiter.failed(f"h{i}", 0.0)
        self.assertEqual(len(limiter._buckets), 100)
        self.assertGreater(limiter.wait("h999", 0.0), 0)


class ProtectedModeProcessTests(SynchronousTestCase):
    """
    twistd stops at once, saying why, rather than listening openly.
    """

    def test_twistd_refuses(self) -> None:
        from .procs import NodeProcess

        with self.assertRaises(RuntimeError) as caught:
            NodeProcess([], ini="[node]\nlisten = 0.0.0.0:0\n")
        self.assertIn("[security] protected_mode: this node would listen on 0.0.0.0",
                      str(caught.exception))

    def test_warns_without_requirepass(self) -> None:
        """
        Protected by a cluster secret but with no client password, a node
        listening beyond this machine starts and warns that any client may
        read and change every key; with a password it does not warn.
        """
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import globalLogPublisher

        from .helpers import make_node

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        from dhtwisted.config import Address

        for password, warned in (("", 1), ("a password", 0)):
            del events[:]
            node = make_node(MemoryReactorClock(), listen=Address("0.0.0.0", 9000),
                             cluster_secret=SECRET, requirepass=password)
            node.startService()
            self.addCleanup(node.stopService)
            found = [e for e in events if "no requirepass" in e.get("log_format", "")]
            self.assertEqual(len(found), warned, password)
