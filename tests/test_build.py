"""
The installed package: the modules of the write path are compiled (see
setup.py) wherever a C compiler can build them, so that the nodes, the
benchmark and `make test` run what `make install` built.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
#: The package's source tree.
SOURCE = os.path.join(ROOT, "dhtwisted") + os.sep
#: setup.py's COMPILED, as module names.
COMPILED = ["dhtwisted.version", "dhtwisted.store", "dhtwisted.twopc"]


def installed_file(module: str) -> str:
    """
    The file C{module} is loaded from by this Python outside the source
    tree (as twistd and the console scripts load it).
    """
    with tempfile.TemporaryDirectory() as cwd:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = subprocess.run(
            [sys.executable, "-c", f"import {module}; print({module}.__file__)"],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def is_extension(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def can_compile() -> bool:
    """
    Whether an install here compiles: a C compiler, Python's headers, and
    DHTWISTED_PURE not set to 1.
    """
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    return (os.environ.get("DHTWISTED_PURE") != "1" and os.path.exists(headers)
            and any(shutil.which(cc) for cc in ("cc", "gcc", "clang")))


class InstalledTests(SynchronousTestCase):
    def test_setup_lists_the_compiled_modules(self) -> None:
        """
        The modules checked here are those setup.py compiles.
        """
        with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
            text = f.read()
        listed = [f'"{name.replace(".", "/")}.py"' for name in COMPILED]
        self.assertIn(f"COMPILED = [{', '.join(listed)}]", text)

    def test_write_path_is_compiled(self) -> None:
        """
        Installed where a C compiler could build them, the modules of the
        write path are C extensions (a type error that made mypyc fail
        would leave them plain Python); elsewhere, plain Python.
        """
        expected = can_compile()
        for module in COMPILED:
            path = installed_file(module)
            self.assertFalse(path.startswith(SOURCE), f"{module} loads from {path}")
            self.assertEqual(is_extension(path), expected, f"{module} loads from {path}")

    def test_tests_run_the_installed_package(self) -> None:
        """
        Under `make test` (DHTWISTED_TEST_INSTALLED=1), this process runs
        the installed package, not the source tree; `make trial` runs the
        source.
        """
        for module in COMPILED:
            path = importlib.import_module(module).__file__ or ""
            installed = not path.startswith(SOURCE)
            self.assertEqual(installed, os.environ.get("DHTWISTED_TEST_INSTALLED") == "1",
                             f"{module} loads from {path}")
