"""
Tests for dhtwisted.allocator: C{[node] allocator}, with the process
replaced by a recorder (the real node's start is in test_process).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from dhtwisted.allocator import (
    RESTARTED,
    current_allocator,
    mimalloc_version,
    use_allocator,
)


class _Function:
    """
    A C function of a fake process: C{restype} is set before the call.
    """

    restype: Any = None

    def __init__(self, result: int) -> None:
        self.result = result

    def __call__(self) -> int:
        return self.result


class _Process:
    """
    What C{ctypes.CDLL(None)} finds in a process: C{mi_version} only
    where mimalloc is loaded.
    """

    def __init__(self, mimalloc: Optional[int] = None) -> None:
        if mimalloc is not None:
            self.mi_version = _Function(mimalloc)


ON_MIMALLOC = {"PYTHONMALLOC": "malloc"}
PID = 4321


class VersionTests(SynchronousTestCase):
    """
    Which allocator a process runs on, as INFO's mem_allocator says.
    """

    def test_mimalloc_version(self) -> None:
        """mi_version's number (major * 100 + minor * 10 + patch) as a dotted version."""
        self.assertEqual(mimalloc_version(_Process(209)), "2.0.9")  # type: ignore[arg-type]
        self.assertEqual(mimalloc_version(_Process(212)), "2.1.2")  # type: ignore[arg-type]
        self.assertIsNone(mimalloc_version(_Process()))  # type: ignore[arg-type]

    def test_current_allocator(self) -> None:
        """
        pymalloc unless PYTHONMALLOC says malloc; then mimalloc if it is
        loaded, else C's malloc (whichever is in the process).
        """
        self.assertEqual(current_allocator({}, _Process(209)), "pymalloc")  # type: ignore[arg-type]
        self.assertEqual(current_allocator(ON_MIMALLOC, _Process(209)),  # type: ignore[arg-type]
                         "mimalloc-2.0.9")
        self.assertEqual(current_allocator(ON_MIMALLOC, _Process()), "malloc")  # type: ignore[arg-type]

    def test_this_process(self) -> None:
        """The test runner's own allocator is one of the three."""
        self.assertRegex(current_allocator(), r"^(pymalloc|malloc|mimalloc-\d+\.\d+\.\d+)$")


class UseAllocatorTests(SynchronousTestCase):
    """
    use_allocator starts the process again on mimalloc when it is asked for
    and not in use, at most once, and says why when it cannot.
    """

    def setUp(self) -> None:
        self.execs: list[tuple[str, list[str], dict[str, str]]] = []
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def use(self, name: str, environ: dict[str, str], library: Optional[str] = "libmimalloc.so.2",
            process: Optional[_Process] = None, ignore_environment: bool = False,
            execve: Optional[Callable[..., None]] = None) -> None:
        use_allocator(name, environ, find=lambda: library,
                      execve=execve or (lambda *args: self.execs.append(args)),
                      process=process or _Process(), pid=PID,  # type: ignore[arg-type]
                      ignore_environment=ignore_environment)

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_level").name == "warn"]

    def test_restarts_on_mimalloc(self) -> None:
        """
        Not on mimalloc: the same interpreter and arguments, with mimalloc
        preloaded before what already was, and marked as started again.
        """
        self.use("mimalloc", {"HOME": "/root", "LD_PRELOAD": "libother.so"})
        self.assertEqual(len(self.execs), 1)
        executable, argv, env = self.execs[0]
        self.assertEqual((executable, argv), (sys.executable, list(sys.orig_argv)))
        self.assertEqual(env, {"HOME": "/root", "PYTHONMALLOC": "malloc",
                               "LD_PRELOAD": "libmimalloc.so.2 libother.so", RESTARTED: "4321"})

    def test_marker_of_another_process(self) -> None:
        """
        The marker names the process started again; one copied into the
        environment of another process does not stop it, and it is removed
        from the environment either way.
        """
        environ = {RESTARTED: "1"}
        self.use("mimalloc", environ)
        self.assertEqual(len(self.execs), 1)
        self.assertEqual(environ, {})
        environ = {RESTARTED: str(PID), **ON_MIMALLOC}
        self.use("mimalloc", environ, process=_Process(209))
        self.assertEqual(environ, ON_MIMALLOC)

    def test_already_on_mimalloc(self) -> None:
        """On mimalloc already: nothing to do, nothing said."""
        self.use("mimalloc", ON_MIMALLOC, process=_Process(209))
        self.assertEqual((self.execs, self.warnings()), ([], []))

    def test_python(self) -> None:
        """allocator = python: the process stays as it started, whatever it runs on."""
        self.use("python", {})
        self.use("python", ON_MIMALLOC, process=_Process(209))
        self.assertEqual((self.execs, self.warnings()), ([], []))

    def test_no_library(self) -> None:
        """Without mimalloc on the system: a warning saying how to get it, and no restart."""
        self.use("mimalloc", {}, library=None)
        self.assertEqual(self.execs, [])
        [warning] = self.warnings()
        self.assertIn("no mimalloc library", warning)
        self.assertIn("apt install libmimalloc2.0", warning)

    def test_only_once(self) -> None:
        """
        Started again and still not on mimalloc (the preload failed): a
        warning naming the preload, and no second restart.
        """
        self.use("mimalloc", {RESTARTED: str(PID), "PYTHONMALLOC": "malloc",
                              "LD_PRELOAD": "libmimalloc.so.2"})
        self.assertEqual(self.execs, [])
        [warning] = self.warnings()
        self.assertIn("'libmimalloc.so.2'", warning)
        self.assertIn("runs on malloc", warning)

    def test_ignore_environment(self) -> None:
        """
        Under python -E or -I, PYTHONMALLOC would be ignored after a
        restart: none, and a warning saying so.
        """
        self.use("mimalloc", {}, ignore_environment=True)
        self.assertEqual(self.execs, [])
        [warning] = self.warnings()
        self.assertIn("-E or -I", warning)

    def test_operators_choice(self) -> None:
        """
        An allocator the node was started with on purpose (another
        PYTHONMALLOC, another allocator preloaded) is kept.
        """
        self.use("mimalloc", {"PYTHONMALLOC": "pymalloc_debug"})
        self.use("mimalloc", {"PYTHONMALLOC": "malloc",
                              "LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
        self.assertEqual((self.execs, self.warnings()), ([], []))

    def test_exec_fails(self) -> None:
        """A process that cannot be started again runs on, with a warning."""
        def fail(*args: object) -> None:
            raise PermissionError(13, "Permission denied")

        self.use("mimalloc", {}, execve=fail)
        [warning] = self.warnings()
        self.assertIn("could not start again (Permission denied)", warning)

    def test_unknown(self) -> None:
        """A name that is not an allocator is a bug of the caller's (config checks it)."""
        self.assertRaises(ValueError, self.use, "tcmalloc", {})
        self.assertEqual(self.execs, [])
