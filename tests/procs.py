"""
Real node processes for tests: started on 127.0.0.1 with a free port,
waited for with a deadline, stopped by pid.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

BIN = os.path.dirname(sys.executable)
_LISTENING = re.compile(r"dht node (\S+) listening on (\S+):(\d+)")


def tool(name: str) -> str:
    """
    The path of a console script installed beside this Python (the
    project's venv, as `make test` sets it up).
    """
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        raise RuntimeError(f"{path} is missing: run the tests with `make test`")
    return path


class NodeProcess:
    """
    One C{twistd -n dht} process.

    :param args: options after C{dht}.
    :param ini: the config file's text, if any.
    :param command: what to run instead of C{twistd -n dht}.
    """

    def __init__(self, args: list[str], ini: Optional[str] = None, timeout: float = 30.0,
                 command: Optional[list[str]] = None):
        self.dir = tempfile.mkdtemp(prefix="dht-node-")
        self.log_path = os.path.join(self.dir, "node.log")
        command = command or [tool("twistd"), "-n", "--pidfile=", "dht"]
        if ini is not None:
            config = os.path.join(self.dir, "node.ini")
            with open(config, "w") as f:
                f.write(ini)
            command += ["--config", config]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command + args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir,
            stdin=subprocess.DEVNULL,
        )
        self.port = self._wait_listening(timeout)

    def _wait_listening(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _LISTENING.search(self.log())
            if m:
                return int(m.group(3))
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"node did not listen within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """
        What the node has logged so far.
        """
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """
        Stop the process by its pid and wait for it (SIGKILL after
        C{timeout}); remove its folder.
        """
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.process.returncode


def wait_until(ready: Callable[[], object], timeout: float = 20.0,
               what: str = "the condition") -> None:
    """
    Poll C{ready} until it is true; fail after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def run_tool(name: str, args: list[str], stdin: bytes = b"", timeout: float = 30.0
             ) -> subprocess.CompletedProcess:
    """
    Run a console script to completion, with a deadline.
    """
    return subprocess.run([tool(name)] + args, input=stdin, capture_output=True,
                          timeout=timeout)


def free_block(count: int, hosts: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """
    A base port such that C{count} ports from it are free on every one of
    C{hosts}.
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - count)
        sockets = []
        try:
            for host in hosts:
                for port in range(base, base + count):
                    s = socket.socket()
                    sockets.append(s)
                    s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no block of free ports found")


def start_nodes(prefix: str, base: int, count: int, extra: Optional[dict[int, str]] = None,
                settings: str = "gossip_interval = 0.5\n") -> list["NodeProcess"]:
    """
    C{count} nodes C{prefix}0.. on 127.0.0.1 ports C{base}.., ring ids
    spread evenly, joining through the first; C{extra} adds ini text to
    some. The caller stops them.
    """
    nodes = []
    for i in range(count):
        ini = (f"[node]\nnode_id = {prefix}{i}\nlisten = 127.0.0.1:{base + i}\n"
               f"ring_id = {i * 65536 // count}\n[cluster]\n{settings}"
               f"seeds = 127.0.0.1:{base}\n" + (extra or {}).get(i, ""))
        nodes.append(NodeProcess([], ini=ini))
    return nodes
