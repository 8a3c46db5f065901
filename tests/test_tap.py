"""
Tests for dhtwisted.tap and the C{dht} twistd plugin: options over the
config file, usage errors, and the service listening on a memory reactor.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.application.service import IService, IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.config import Address, default_config
from dhtwisted import tap
from dhtwisted.tap import Options, makeService, set_scheduling

INI = b"""\
[node]
node_id = alpha
listen = 127.0.0.1:9123
ring_id = 100

[cluster]
seeds = 10.0.0.2:7001

[ring]
replicas = 2
"""


class TempIniMixin:
    """
    A temporary ini file per test, removed afterwards.
    """

    def write_ini(self, data: bytes = INI) -> str:
        folder = tempfile.mkdtemp(prefix="dhtwisted-test-")
        self.addCleanup(shutil.rmtree, folder, True)  # type: ignore[attr-defined]
        path = os.path.join(folder, "node.ini")
        with open(path, "wb") as f:
            f.write(data)
        return path


def parse(argv: list[str]) -> Options:
    """
    Options parsed from C{argv}.
    """
    options = Options()
    options.parseOptions(argv)
    return options


class OptionsTests(TempIniMixin, SynchronousTestCase):
    """
    twistd dht's command line.
    """

    def assertUsageError(self, argv: list[str], start: str) -> str:
        """
        Parsing C{argv} fails with one line that starts with C{start}.
        """
        error = self.assertRaises(usage.UsageError, parse, argv)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(start), f"{argv} gave {message!r}")
        return message

    def test_config_file(self) -> None:
        """--config reads the file; keys it leaves out keep their defaults."""
        path = self.write_ini()
        options = parse(["--config", path])
        config = options["node_config"]
        self.assertEqual(options["config"], path)
        self.assertEqual(config.source, path)
        self.assertEqual(config.node_id, "alpha")
        self.assertEqual(config.listen, Address("127.0.0.1", 9123))
        self.assertEqual(config.ring_id, 100)
        self.assertEqual(config.seeds, (Address("10.0.0.2", 7001),))
        self.assertEqual(config.replicas, 2)
        self.assertIsNone(config.advertise)
        self.assertEqual(config.rpc_timeout, default_config().rpc_timeout)

    def test_short_config(self) -> None:
        """-c is --config."""
        path = self.write_ini()
        self.assertEqual(parse(["-c", path])["node_config"].node_id, "alpha")

    def test_no_config(self) -> None:
        """Without --config the node runs on the built-in defaults."""
        self.assertEqual(parse([])["node_config"], default_config())

    def test_overrides(self) -> None:
        """--id, --listen, --ring-id, --advertise and --join win over the file."""
        path = self.write_ini()
        options = parse([
            "--config", path,
            "--id", "beta",
            "--listen", "127.0.0.1:9200",
            "--ring-id", "4242",
            "--advertise", "10.0.0.9:9200",
            "--join", "10.0.0.3:7002",
            "--join", "[::1]:7003",
        ])
        config = options["node_config"]
        self.assertEqual(config.node_id, "beta")
        self.assertEqual(config.listen, Address("127.0.0.1", 9200))
        self.assertEqual(config.ring_id, 4242)
        self.assertEqual(config.advertise, Address("10.0.0.9", 9200))
        self.assertEqual(config.peer_address, Address("10.0.0.9", 9200))
        self.assertEqual(config.seeds, (Address("10.0.0.3", 7002), Address("::1", 7003)))
        self.assertEqual(options["join"], ["10.0.0.3:7002", "[::1]:7003"])
        self.assertEqual(config.replicas, 2)
        self.assertEqual(config.source, path)

    def test_equals_sign_form(self) -> None:
        """Options also take --name=value."""
        config = parse(["--listen=[::1]:9300", "--ring-id=5"])["node_config"]
        self.assertEqual((config.listen, config.ring_id), (Address("::1", 9300), 5))

    def test_bad_override_names_option(self) -> None:
        """A bad value on the command line is reported under its option."""
        path = self.write_ini()
        cases = [
            (["--ring-id", "abc"], "--ring-id: "),
            (["--ring-id", "-1"], "--ring-id: "),
            (["--ring-id", "70000"], "--ring-id: "),
            (["--listen", "nope"], "--listen: "),
            (["--listen", "127.0.0.1:65536"], "--listen: "),
            (["--advertise", "10.0.0.1:0"], "--advertise: "),
            (["--id", "a b"], "--id: "),
            (["--join", "10.0.0.2:7001", "--join", "nohost"], "--join: "),
        ]
        for argv, start in cases:
            self.assertUsageError(["--config", path, *argv], start)

    def test_bad_key_in_file(self) -> None:
        """A bad value in the file is reported with the file, section and key."""
        path = self.write_ini(INI.replace(b"replicas = 2", b"replicas = 0"))
        message = self.assertUsageError(["--config", path], f"{path}: [ring] replicas: ")
        self.assertIn("at least 1", message)

    def test_unknown_key_in_file(self) -> None:
        """An unknown key in the file is reported with the file, section and key."""
        path = self.write_ini(INI + b"[limits]\nmax_keys = 10\n")
        self.assertUsageError(["--config", path], f"{path}: [limits] max_keys: ")

    def test_missing_file(self) -> None:
        """A --config file that does not exist is named."""
        path = os.path.join(os.path.dirname(self.write_ini()), "missing.ini")
        self.assertUsageError(["--config", path], f"{path}: cannot read")

    def test_broken_file(self) -> None:
        """A --config file that is not ini syntax is named."""
        path = self.write_ini(b"listen = 127.0.0.1:9000\n")
        self.assertUsageError(["--config", path], f"{path}: not a valid ini file")


class ServiceTests(TempIniMixin, SynchronousTestCase):
    """
    The service that makeService builds, on a memory reactor.
    """

    def make(self, *argv: str) -> tuple[IService, MemoryReactorClock]:
        """
        A service for C{--config INI argv} and the reactor it runs on.
        """
        reactor = MemoryReactorClock()
        options = parse(["--config", self.write_ini(), *argv])
        self.policies: list[str] = []
        return makeService(options, reactor=reactor, schedule=self.policies.append), reactor

    def test_scheduling(self) -> None:
        """The service's process is put under [node] scheduling, batch by default."""
        self.make()
        self.assertEqual(self.policies, ["batch"])

    def test_scheduling_from_file(self) -> None:
        """scheduling in the config file decides the policy."""
        reactor = MemoryReactorClock()
        policies: list[str] = []
        for policy in ("normal", "inherit"):
            ini = self.write_ini(INI.replace(b"ring_id = 100\n",
                                             b"ring_id = 100\nscheduling = %s\n" % policy.encode()))
            makeService(parse(["--config", ini]), reactor=reactor, schedule=policies.append)
        self.assertEqual(policies, ["normal", "inherit"])

    def test_allocator(self) -> None:
        """
        [node] allocator (mimalloc by default) is applied first, before the
        node is built; a node given a reactor, as here, is not in a process
        of its own, which is left alone unless the caller says how.
        """
        allocators: list[str] = []
        for text in (b"", b"allocator = python\n"):
            ini = self.write_ini(INI.replace(b"ring_id = 100\n", b"ring_id = 100\n" + text))
            makeService(parse(["--config", ini]), reactor=MemoryReactorClock(),
                        schedule=lambda policy: allocators.append("scheduled"),
                        allocate=allocators.append)
        self.assertEqual(allocators, ["mimalloc", "scheduled", "python", "scheduled"])

        def replace_process(name: str) -> None:
            raise AssertionError("use_allocator called for a node given a reactor")

        self.patch(tap, "use_allocator", replace_process)
        self.make()

    def test_listens(self) -> None:
        """Starting the service as twistd does listens once, on the configured address."""
        service, reactor = self.make()
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service.privilegedStartService()
        service.startService()
        self.assertTrue(service.running)
        self.assertEqual(len(reactor.tcpServers), 1)
        port, _, _, interface = reactor.tcpServers[0]
        self.assertEqual((port, interface), (9123, "127.0.0.1"))
        self.assertIn("dht node alpha listening on 127.0.0.1:9123",
                      [formatEvent(e) for e in events])
        self.assertIsNone(self.successResultOf(service.stopService()))
        self.assertFalse(service.running)

    def test_listen_override(self) -> None:
        """--listen decides where the service listens."""
        service, reactor = self.make("--listen", "[::1]:9124")
        service.privilegedStartService()
        service.startService()
        self.assertEqual([(p, i) for p, _, _, i in reactor.tcpServers], [(9124, "::1")])
        self.successResultOf(service.stopService())

    def test_start_without_privileged(self) -> None:
        """startService alone also listens, once."""
        service, reactor = self.make()
        service.startService()
        self.assertEqual([(p, i) for p, _, _, i in reactor.tcpServers], [(9123, "127.0.0.1")])
        self.successResultOf(service.stopService())


class SchedulingTests(SynchronousTestCase):
    """
    set_scheduling puts this process under a Linux scheduling policy, and
    a system that refuses only costs a warning.
    """

    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.calls: list[tuple[int, int, int]] = []

    def record(self, pid: int, policy: int, param: os.sched_param) -> None:
        self.calls.append((pid, policy, param.sched_priority))

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_level") == LogLevel.warn]

    def test_batch(self) -> None:
        """batch is SCHED_BATCH, for this process, at the only priority it has."""
        set_scheduling("batch", self.record)
        self.assertEqual(self.calls, [(0, os.SCHED_BATCH, 0)])
        self.assertEqual(self.warnings(), [])

    def test_normal(self) -> None:
        """normal is the system's default policy, set even if the parent had another."""
        set_scheduling("normal", self.record)
        self.assertEqual(self.calls, [(0, os.SCHED_OTHER, 0)])
        self.assertEqual(self.warnings(), [])

    def test_inherit(self) -> None:
        """inherit leaves the policy as it was started with."""
        set_scheduling("inherit", self.record)
        self.assertEqual(self.calls, [])
        self.assertEqual(self.warnings(), [])

    def test_unknown(self) -> None:
        """Another policy is a programming error, not a silent normal."""
        self.assertRaises(ValueError, set_scheduling, "fifo", self.record)
        self.assertEqual(self.calls, [])

    def test_no_batch_policy(self) -> None:
        """A system with sched_setscheduler but no SCHED_BATCH (FreeBSD) gets a warning."""
        self.patch(os, "SCHED_BATCH", None)
        set_scheduling("batch", self.record)
        self.assertEqual(self.calls, [])
        self.assertEqual(len(self.warnings()), 1)
        self.assertIn("not supported on this system", self.warnings()[0])

    def test_unsupported(self) -> None:
        """
        A system without the policy (not Linux) gets a warning for batch;
        normal is what it runs under anyway.
        """
        self.patch(os, "sched_setscheduler", None)
        set_scheduling("batch")
        set_scheduling("normal")
        self.assertEqual(self.warnings(), [
            "scheduling = batch: not supported on this system; the node runs under its "
            "default scheduling policy"])

    def test_refused(self) -> None:
        """A system that refuses the policy gets a warning naming it, and the node goes on."""
        def refuse(pid: int, policy: int, param: os.sched_param) -> None:
            raise PermissionError(1, "Operation not permitted")

        set_scheduling("batch", refuse)
        self.assertEqual(self.warnings(), [
            "scheduling = batch: the system refused SCHED_BATCH (Operation not permitted); "
            "the node runs under the policy it was started with"])


class PluginTests(SynchronousTestCase):
    """
    twistd finds the dht plugin.
    """

    def test_discoverable(self) -> None:
        """A plugin with tapname 'dht' is found and builds from dhtwisted.tap."""
        import twisted.plugins

        makers = [p for p in getPlugins(IServiceMaker, twisted.plugins) if p.tapname == "dht"]
        self.assertEqual(len(makers), 1)
        maker = makers[0]
        self.assertTrue(maker.description)
        self.assertIs(maker.options, Options)
        self.assertIs(maker.makeService, makeService)
