"""
Chaos against a real cluster: 5 twistd processes on 127.0.0.1-127.0.0.5,
clients writing and reading all along, and a nemesis that kills nodes with
SIGKILL and restarts them empty, pauses them with SIGSTOP past the failure
timeout and resumes them, and restarts them with SIGTERM. At most one node
is down or paused at a time (fewer than N replicas of any key), so no
acknowledged write may be lost. Bounded in time and in count.

    python -m tests.chaos --duration 120      # make chaos
    python -m tests.chaos --duration 20       # the suite's short run

It reports the operations, acknowledged writes lost, stale reads after
convergence and node crashes, and exits non-zero if any is found.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import sys
import threading
import time
from typing import Optional

from dhtwisted.quoting import unquote_reply

from .procs import NodeProcess, free_block
from .sim import HistoryChecker, Op, Violation

HOSTS = [f"127.0.0.{i}" for i in range(1, 6)]
SETTINGS = """\
heartbeat_interval = 0.25
gossip_interval = 0.5
fail_after = 3.0
remove_after = 8.0
[timers]
stabilize_interval = 1.0
full_pass_interval = 6.0
rpc_timeout = 1.0
txn_timeout = 3.0
leave_timeout = 5.0
"""


class Line:
    """
    A text-protocol connection with a deadline on every reply.
    """

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def ask(self, line: bytes, count: int = 1) -> list[bytes]:
        self.sock.sendall(line + b"\r\n")
        out = []
        for _ in range(count):
            reply = self.reader.readline()
            if not reply.endswith(b"\n"):
                raise ConnectionError("connection closed")
            out.append(reply.rstrip(b"\r\n"))
        return out

    def close(self) -> None:
        self.sock.close()


class Chaos:
    """
    One chaos run.
    """

    def __init__(self, duration: float, seed: int, clients: int = 3) -> None:
        self.duration = duration
        self.rng = random.Random(seed)
        self.port = free_block(1, tuple(HOSTS))
        self.nodes: dict[str, Optional[NodeProcess]] = {}
        self.history: list[Op] = []
        self.lock = threading.Lock()
        self.stop_clients = threading.Event()
        self.events: list[str] = []
        self.crashes: list[str] = []
        self.keys = [b"c%d" % i for i in range(16)]
        self.clients = clients
        self.ops = 0
        self.started = time.monotonic()

    def log(self, text: str) -> None:
        line = f"{time.monotonic() - self.started:7.2f} {text}"
        self.events.append(line)
        print(line, flush=True)

    def ini(self, i: int) -> str:
        seeds = ",".join(f"{h}:{self.port}" for h in HOSTS if h != HOSTS[i])
        return (f"[node]\nnode_id = c{i}\nlisten = {HOSTS[i]}:{self.port}\n"
                f"ring_id = {i * 65536 // len(HOSTS)}\n[cluster]\nseeds = {seeds}\n"
                + SETTINGS)

    def start(self, i: int) -> None:
        self.nodes[f"c{i}"] = NodeProcess([], ini=self.ini(i))

    def live_view(self, i: int) -> int:
        try:
            conn = Line(HOSTS[i], self.port, timeout=2)
            conn.sock.sendall(b"members\r\n")
            data = b""
            while not data.endswith(b"\r\n\r\n"):
                chunk = conn.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            conn.close()
            return data.count(b"status=alive")
        except OSError:
            return 0

    def wait_converged(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.live_view(i) == len(HOSTS) for i in range(len(HOSTS))):
                return
            time.sleep(0.3)
        raise Violation("the cluster did not converge: "
                        + str([self.live_view(i) for i in range(len(HOSTS))]))

    # -- clients

    def client(self, index: int) -> None:
        rng = random.Random(self.rng.random())
        conns: dict[int, Line] = {}
        while not self.stop_clients.is_set():
            i = rng.randrange(len(HOSTS))
            with self.lock:
                self.ops += 1
                op = Op.random(rng, self.ops, index, f"c{i}", self.keys, time.monotonic())
            with self.lock:
                self.history.append(op)
            try:
                conn = conns.get(i) or Line(HOSTS[i], self.port)
                conns[i] = conn
                lines = conn.ask(op.line(), len(op.keys) if op.kind == "mget" else 1)
            except OSError:
                conns.pop(i, None)
                op.outcome = "unknown" if op.writes else "error"
                time.sleep(0.05)
                continue
            op.settle(lines, time.monotonic())
        for conn in conns.values():
            conn.close()

    # -- nemesis

    def nemesis(self) -> None:
        end = self.started + self.duration
        count = 0
        while time.monotonic() < end and count < 50:
            time.sleep(self.rng.uniform(1.0, 3.0))
            victim = self.rng.randrange(len(HOSTS))
            name = f"c{victim}"
            node = self.nodes[name]
            assert node is not None
            if node.process.poll() is not None:
                self.crashes.append(f"{name} exited on its own ({node.process.returncode})")
                self.log(f"{name} had exited: restarting it")
                self.start(victim)
                continue
            action = self.rng.choice(["kill", "pause", "restart"])
            count += 1
            if action == "kill":
                self.log(f"SIGKILL {name}, then start it empty")
                os.kill(node.process.pid, signal.SIGKILL)
                node.process.wait(10)
                node.stop()
                time.sleep(self.rng.uniform(0.5, 2.0))
                self.start(victim)
            elif action == "pause":
                pause = self.rng.uniform(3.5, 6.0)  # past fail_after
                self.log(f"SIGSTOP {name} for {pause:.1f} s")
                os.kill(node.process.pid, signal.SIGSTOP)
                time.sleep(pause)
                os.kill(node.process.pid, signal.SIGCONT)
                self.log(f"SIGCONT {name}")
            else:
                self.log(f"SIGTERM {name}, then start it again")
                node.stop(signal.SIGTERM, timeout=20)
                self.start(victim)
            # one node down at a time: let the cluster heal before the next
            try:
                self.wait_converged(30)
            except Violation as e:
                self.log(str(e))
            time.sleep(2.0)  # a few stabilization rounds refill the restarted node

    # -- the run

    def run(self) -> int:
        for i in range(len(HOSTS)):
            self.start(i)
        self.wait_converged()
        self.log(f"5 nodes up on {HOSTS[0]}..{HOSTS[-1]}:{self.port}")
        threads = [threading.Thread(target=self.client, args=(c,), daemon=True)
                   for c in range(self.clients)]
        for t in threads:
            t.start()
        try:
            self.nemesis()
        finally:
            self.stop_clients.set()
            for t in threads:
                t.join(30)
        try:
            return self.verdict()
        finally:
            for node in self.nodes.values():
                if node is not None:
                    if node.process.poll() is None:
                        os.kill(node.process.pid, signal.SIGCONT)
                    node.stop(signal.SIGKILL)

    def verdict(self) -> int:
        problems = []
        for name, node in self.nodes.items():
            assert node is not None
            if node.process.poll() is not None:
                problems.append(f"{name} exited on its own ({node.process.returncode})")
            if "Traceback" in node.log() or "Unhandled" in node.log():
                problems.append(f"{name} logged an error:\n{node.log()[-3000:]}")
        problems += self.crashes
        self.wait_converged()
        time.sleep(3.0)  # stabilization rounds after the last change
        finals: dict[bytes, Optional[bytes]] = {}
        stale = []
        for key in self.keys:
            seen = set()
            for i in range(len(HOSTS)):
                reply = Line(HOSTS[i], self.port).ask(b"get " + key)[0]
                seen.add(reply)
            if len(seen) != 1:
                stale.append(f"{key!r}: {sorted(seen)}")
            reply = seen.pop()
            if reply.startswith(b"ERR"):
                problems.append(f"final read of {key!r} failed: {reply!r}")
                continue
            finals[key] = None if reply == b"(nil)" else unquote_reply(reply)
        lost = []
        try:
            HistoryChecker(self.history).check(finals)
        except Violation as e:
            lost.append(str(e))
        outcomes: dict[str, int] = {}
        for op in self.history:
            outcomes[f"{op.kind} {op.outcome}"] = outcomes.get(f"{op.kind} {op.outcome}", 0) + 1
        print(f"operations: {len(self.history)} ("
              + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) + ")")
        print(f"nemesis events: {sum(1 for e in self.events if 'SIG' in e and 'CONT' not in e)}")
        print(f"acknowledged writes lost: {len(lost)}" + (f" ({lost[0]})" if lost else ""))
        print(f"stale reads after convergence: {len(stale)}" + (f" {stale[:3]}" if stale else ""))
        print(f"node crashes and errors: {len(problems)}")
        for p in problems:
            print("  " + p)
        return 1 if lost or stale or problems else 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="chaos run against 5 real nodes")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of chaos")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"chaos seed {seed}, {args.duration:.0f} s", flush=True)
    return Chaos(args.duration, seed).run()


if __name__ == "__main__":
    sys.exit(main())
