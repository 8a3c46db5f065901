"""
C{dht-bench}: dhtwisted beside Redis, measured with redis-benchmark in one run.

It starts what it measures itself (1-node and 3-node dhtwisted clusters on
127.0.0.1, and a redis-server with persistence off, on free ports), runs the
same workloads against each (every run of a workload measures the three in
turn, so that the figures compared are taken close together), stops
everything it started by pid, and prints
one table: ops/s, p50 and p99 latency and the ratio to Redis for each row.
Results also go to C{results/bench-<time>.json} and a PNG bar chart.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

__all__ = ["main"]


class BenchError(Exception):
    """
    A redis-benchmark run did not finish (it stops at the first error reply).
    """


@dataclass
class Row:
    """
    One measured figure: a workload against a target, median of its runs.
    """

    workload: str
    target: str
    ops: float
    p50: float
    p99: float
    runs: list[float] = field(default_factory=list)
    ratio: Optional[float] = None
    error: str = ""


def _free_ports(count: int) -> list[int]:
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20000, 60000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return list(range(base, base + count))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free ports")


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Processes:
    """
    What the benchmark started, stopped by pid.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.dir = tempfile.mkdtemp(prefix="dht-bench-")

    def start(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=self.dir)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis(procs: Processes) -> tuple[subprocess.Popen, int]:
    """
    A redis-server with persistence off on a free port.
    """
    port = _free_ports(1)[0]
    proc = procs.start([shutil.which("redis-server") or "redis-server", "--port", str(port),
                        "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--protected-mode", "no"], "redis")
    _wait_port(port)
    return proc, port


def start_cluster(procs: Processes, n: int, replicas: int = 3) -> list[tuple[subprocess.Popen,
                                                                            int]]:
    """
    An n-node dhtwisted cluster on free ports, once every node sees every other.
    """
    ports = _free_ports(n)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    nodes = []
    for i, port in enumerate(ports):
        ini = os.path.join(procs.dir, f"n{port}.ini")
        with open(ini, "w") as f:
            f.write(f"[node]\nnode_id = b{i}\nlisten = 127.0.0.1:{port}\n"
                    f"ring_id = {i * 65536 // n}\n[ring]\nreplicas = {min(replicas, n)}\n"
                    f"[cluster]\ngossip_interval = 0.5\n"
                    + (f"seeds = 127.0.0.1:{ports[0]}\n" if i else ""))
        proc = procs.start([twistd, "-n", "--pidfile=", "dht", "--config", ini], f"n{port}")
        nodes.append((proc, port))
    for _, port in nodes:
        _wait_port(port)
    deadline = time.monotonic() + 60
    for _, port in nodes:
        while _members(port) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {n}-node cluster did not form")
            time.sleep(0.2)
    return nodes


def _text_block(port: int, command: bytes) -> bytes:
    """
    A node's reply to a text command whose reply is a block of lines
    (ended by an empty line).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command + b"\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def _members(port: int) -> int:
    return _text_block(port, b"members").count(b"status=alive")


def node_allocator(port: int) -> str:
    """
    The memory allocator a node runs on, as its C{INFO memory} says.
    """
    for line in _text_block(port, b"info memory").decode(errors="replace").splitlines():
        if line.startswith("mem_allocator:"):
            return line.split(":", 1)[1]
    return "unknown"


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fill(ports: list[int], keys: int, size: int = 16, batch: int = 100) -> None:
    """
    Write every key redis-benchmark's C{-r keys} picks from (C{key:}
    and 12 digits) with MSET, so that GET rows read keys that exist.
    """
    value = b"v" * size
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=120) for port in ports]
    try:
        for n, start in enumerate(range(0, keys, batch)):
            count = min(batch, keys - start)
            cmd = b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * count) + b"".join(
                b"$16\r\nkey:%012d\r\n$%d\r\n%s\r\n" % (i, size, value)
                for i in range(start, start + count))
            s = sockets[n % len(sockets)]
            s.sendall(cmd)
            reply = s.recv(1024)
            while not reply.endswith(b"\r\n"):
                reply += s.recv(1024)
            if not reply.startswith(b"+OK"):
                raise BenchError(f"filling the keyspace: {reply.decode(errors='replace')}")
    finally:
        for s in sockets:
            s.close()


#: Keys the workloads pick from (redis-benchmark -r).
KEYSPACE = 100_000


def shares(total: int, parts: int) -> list[int]:
    """
    C{total} split into C{parts} whole shares, as even as they go, the
    larger first: 50 clients over 3 nodes are 17, 17 and 16.
    """
    base, extra = divmod(total, parts)
    return [base + (index < extra) for index in range(parts)]


def redis_benchmark(ports: list[int], test: str, requests: int, clients: int, pipeline: int,
                    size: int, keyspace: int = KEYSPACE) -> tuple[float, float, float]:
    """
    Run redis-benchmark against every port at once, the clients and the
    requests split between them (see L{shares}; with fewer clients than
    ports, some ports get none); return total ops/s, and the p50 and p99
    latency in ms (the worst of the ports).
    """
    runs = []
    for port, count in zip(ports, shares(clients, len(ports))):
        if not count:
            continue
        runs.append(subprocess.Popen(
            ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test,
             "-n", str(max(1, requests * count // clients)), "-c", str(count),
             "-P", str(pipeline),
             "-d", str(size), "-r", str(keyspace), "--csv", "-q"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL))
    ops, p50s, p99s = 0.0, [], []
    for run in runs:
        out, err = run.communicate(timeout=600)
        rows = list(csv.DictReader(io.StringIO(out.decode())))
        if not rows:
            # redis-benchmark stops at the first error reply
            why = err.decode(errors="replace").strip().splitlines()
            raise BenchError(why[-1] if why else f"redis-benchmark printed no result for {test}")
        ops += float(rows[0]["rps"])
        p50s.append(float(rows[0]["p50_latency_ms"]))
        p99s.append(float(rows[0]["p99_latency_ms"]))
    return ops, max(p50s), max(p99s)


WORKLOADS = [
    # name, redis-benchmark test, clients, pipeline, value size
    ("SET -c 50 -P 1", "set", 50, 1, 16),
    ("GET -c 50 -P 1", "get", 50, 1, 16),
    ("SET -c 50 -P 16", "set", 50, 16, 16),
    ("GET -c 50 -P 16", "get", 50, 16, 16),
    ("SET -c 1 -P 1", "set", 1, 1, 16),
    ("GET -c 1 -P 1", "get", 1, 1, 16),
    ("SET 1 KiB -c 50", "set", 50, 1, 1024),
    ("GET 1 KiB -c 50", "get", 50, 1, 1024),
    ("MSET 10 keys -c 50", "mset", 50, 1, 16),
]


class Bench:
    """
    One benchmark run.
    """

    def __init__(self, requests: int, runs: int, quick: bool) -> None:
        self.requests = requests
        self.runs = runs
        self.quick = quick
        self.rows: list[Row] = []
        self.total = 0
        self.done = 0

    def progress(self, what: str) -> None:
        self.done += 1
        sys.stderr.write(f"\r[{self.done}/{self.total}] {what[:60]:<60}")
        sys.stderr.flush()

    def measure(self, targets: list[tuple[str, list[int]]], workload: tuple) -> None:
        """
        A row per target for C{workload}: each run measures every target
        once, in turn, so that a target's figure and Redis's are taken
        close together (the machine's speed drifts over minutes).
        """
        name, test, clients, pipeline, size = workload
        self._rows(name, targets, lambda ports: redis_benchmark(
            ports, test, self.requests * pipeline, clients, pipeline, size))

    def mixed(self, targets: list[tuple[str, list[int]]]) -> None:
        """
        90% GET, 10% SET: 45 GET clients and 5 SET clients at once.
        """
        def both(ports: list[int]) -> tuple[float, float, float]:
            with ThreadPoolExecutor(2) as pool:
                g = pool.submit(redis_benchmark, ports, "get", self.requests * 9 // 10, 45, 1, 16)
                s = pool.submit(redis_benchmark, ports, "set", self.requests // 10, 5, 1, 16)
                gr, sr = g.result(), s.result()
            return gr[0] + sr[0], max(gr[1], sr[1]), max(gr[2], sr[2])

        self._rows("mixed 90/10 GET/SET -c 50", targets, both)

    def _rows(self, name: str, targets: list[tuple[str, list[int]]],
              run: Callable[[list[int]], tuple[float, float, float]]) -> None:
        """
        C{self.runs} rounds of C{run} against each target in turn; a row
        per target, the median of its runs (or the error that stopped it).
        """
        results: dict[str, list[tuple[float, float, float]]] = {t: [] for t, _ in targets}
        errors: dict[str, str] = {}
        for _ in range(self.runs):
            for target, ports in targets:
                self.progress(f"{target}: {name}")
                if target in errors:
                    continue
                try:
                    results[target].append(run(ports))
                except BenchError as e:
                    errors[target] = str(e)
        for target, _ in targets:
            if target in errors:
                self.rows.append(Row(name, target, 0.0, 0.0, 0.0, error=errors[target]))
                continue
            ops = [r[0] for r in results[target]]
            middle = sorted(results[target], key=lambda r: r[0])[len(ops) // 2]
            self.rows.append(Row(name, target, statistics.median(ops), middle[1], middle[2],
                                 ops))

    def run(self) -> dict:
        procs = Processes()
        workloads = WORKLOADS[:2] if self.quick else WORKLOADS
        targets = 3
        self.total = targets * (len(workloads) + 1) * self.runs
        scaling = [] if self.quick else [3, 5, 10]
        self.total += len(scaling) * self.runs
        memory: dict = {}
        allocator = "unknown"
        try:
            # all three at once, each idle while another is measured
            _, redis_port = start_redis(procs)
            one = start_cluster(procs, 1)
            three = start_cluster(procs, 3)
            allocator = node_allocator(three[0][1])
            measured = [("redis", [redis_port]), ("dht 1 node", [one[0][1]]),
                        ("dht 3 nodes", [p for _, p in three])]
            for _, ports in measured:
                fill(ports, KEYSPACE)
            for w in workloads:
                self.measure(measured, w)
            self.mixed(measured)
            for proc, _ in one + three:
                procs.stop(proc)
            for n in scaling:
                nodes = start_cluster(procs, n)
                self.measure([(f"dht {n} nodes (scaling)", [p for _, p in nodes])],
                             WORKLOADS[0])
                for proc, _ in nodes:
                    procs.stop(proc)
            if not self.quick:
                memory = self.memory(procs)
        finally:
            procs.stop_all()
            sys.stderr.write("\n")
        redis = {r.workload: r.ops for r in self.rows if r.target == "redis"}
        for row in self.rows:
            base = redis.get(row.workload)
            if base and not row.error:
                row.ratio = row.ops / base
        return {"rows": [asdict(r) for r in self.rows], "memory": memory,
                "requests": self.requests, "runs": self.runs, "allocator": allocator}

    def memory(self, procs: Processes, keys: int = 1_000_000) -> dict:
        """
        Bytes per stored 16-byte key with a 16-byte value above an empty
        1-node cluster's RSS.
        """
        self.total += 1
        self.progress(f"memory: {keys} keys")
        node = start_cluster(procs, 1)
        proc, port = node[0]
        empty = _rss_kib(proc.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            batch = 1000
            for start in range(0, keys, batch):
                cmd = b"".join(
                    b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$16\r\nvalue:%010d\r\n" % (i, i)
                    for i in range(start, start + batch))
                s.sendall(cmd)
                want = 5 * batch
                got = 0
                while got < want:
                    got += len(s.recv(1 << 20))
        full = _rss_kib(proc.pid)
        procs.stop(proc)
        return {"keys": keys, "empty_rss_kib": empty, "full_rss_kib": full,
                "bytes_per_key": (full - empty) * 1024 / keys}


def render(result: dict) -> str:
    """
    The result as a table for a terminal.
    """
    lines = [f"{'workload':<28} {'target':<24} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'x redis':>8}"]
    for r in result["rows"]:
        if r["error"]:
            lines.append(f"{r['workload']:<28} {r['target']:<24} failed: {r['error'][:60]}")
            continue
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        lines.append(f"{r['workload']:<28} {r['target']:<24} {r['ops']:>10.0f} "
                     f"{r['p50']:>8.3f} {r['p99']:>8.3f} {ratio:>8}")
    mem = result.get("memory")
    if mem:
        lines.append(f"memory: {mem['bytes_per_key']:.0f} bytes per key over an empty node "
                     f"({mem['keys']} keys of 16 bytes with 16-byte values; RSS "
                     f"{mem['empty_rss_kib']} -> {mem['full_rss_kib']} KiB)")
    if result.get("allocator"):
        lines.append(f"dhtwisted nodes' memory allocator: {result['allocator']}")
    return "\n".join(lines)


def chart(result: dict, path: str) -> bool:
    """
    A PNG bar chart of ops/s per workload and target; False if matplotlib
    is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = result["rows"]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    targets = [t for t in dict.fromkeys(r["target"] for r in rows) if "scaling" not in t]
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / max(1, len(targets))
    for j, target in enumerate(targets):
        values = [next((r["ops"] for r in rows if r["workload"] == w and r["target"] == target),
                       0) for w in workloads]
        ax.bar([i + j * width for i in range(len(workloads))], values, width, label=target)
    ax.set_xticks([i + width * (len(targets) - 1) / 2 for i in range(len(workloads))])
    ax.set_xticklabels(workloads, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("ops/s")
    ax.set_title("dhtwisted beside redis-server (median of runs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def main(argv: Optional[list[str]] = None) -> int:
    """
    C{dht-bench [--quick] [--runs N] [--requests N] [--out DIR]}.
    """
    parser = argparse.ArgumentParser(prog="dht-bench", description=__doc__.splitlines()[1])
    parser.add_argument("--requests", type=int, default=100_000,
                        help="requests per run (times the pipeline depth)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run that only proves the benchmark works")
    parser.add_argument("--out", default="results", help="folder for JSON and PNG")
    args = parser.parse_args(argv)
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            print(f"dht-bench: {tool} is not installed (make bench installs it)",
                  file=sys.stderr)
            return 2
    if args.quick:
        args.requests, args.runs = min(args.requests, 2000), 1
    result = Bench(args.requests, args.runs, args.quick).run()
    print(render(result))
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"bench-{stamp}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    png = os.path.join(args.out, f"bench-{stamp}.png")
    drawn = chart(result, png)
    print(f"results: {path}" + (f", {png}" if drawn else " (no chart: matplotlib missing)"))
    return 0
