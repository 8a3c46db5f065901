"""
The installed package: the modules of the write path are compiled (see
setup.py), so that the nodes and benchmarks run what `make install` built.
"""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
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
        Installed, each module of the write path is a C extension; with
        DHTWISTED_PURE set at install time, plain Python.
        """
        pure = bool(os.environ.get("DHTWISTED_PURE"))
        for module in COMPILED:
            path = installed_file(module)
            self.assertNotIn(ROOT + os.sep + "dhtwisted", path)
            compiled = path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
            self.assertEqual(compiled, not pure, f"{module} loads from {path}")
