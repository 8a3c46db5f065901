"""
Deterministic simulation of a dhtwisted cluster (FoundationDB-style).

The real node code runs, N nodes in one process, on one fake clock and a
simulated network, all driven by one random seed: the same seed replays the
same run, event for event. Faults, each on or off per run: frame drop,
delay, reordering and duplication; partitions that heal; crashes; restarts
with empty memory; pauses (the node's timers and links freeze, then fire
late); clock skew; slow nodes. A workload of clients sends SET, DEL, MSET,
GET and MGET to random nodes and keeps a history; after the faults stop and
the cluster converged, a checker looks for lost acknowledged writes,
partial MSETs, replicas that disagree or sit on the wrong nodes, locks that
outlived their timeout, and unexpected errors.

    python -m tests.sim --seeds 1000          # many seeds
    python -m tests.sim --seed 17 --verbose   # replay one, with logs
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError, TimeoutError
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.logger import globalLogPublisher
from twisted.test import iosim

from dhtwisted import wire
from dhtwisted.config import Address, default_config
from dhtwisted.node import DHTNode
from dhtwisted.peer import PeerFactory, PeerProtocol
from dhtwisted.quoting import unquote_reply
from dhtwisted.resp import encode_array

FAULTS = ("drop", "delay", "reorder", "duplicate", "partition", "crash", "restart",
          "pause", "skew", "slow")
SETTINGS = dict(
    heartbeat_interval=0.5, gossip_interval=1.0, fail_after=5.0, remove_after=10.0,
    stabilize_interval=2.0, full_pass_interval=12.0, rpc_timeout=1.0, txn_timeout=4.0,
    leave_timeout=5.0,
)


class Violation(AssertionError):
    """
    A guarantee did not hold in a run.
    """


# -- time: one clock, each node seeing it skewed, and frozen while paused


class _HeldCall:
    """
    A delayed call of a node's clock: C{cancel}, C{active} as Twisted's.
    """

    def __init__(self, clock: "NodeClock", f: Callable, args: tuple, kw: dict) -> None:
        self.clock = clock
        self.f, self.args, self.kw = f, args, kw
        self.inner: Any = None
        self.cancelled = False
        self.called = False

    def fire(self) -> None:
        if self.cancelled or self.called:
            return
        if self.clock.frozen:
            self.clock.held.append(self)
            return
        self.called = True
        self.f(*self.args, **self.kw)

    def cancel(self) -> None:
        self.cancelled = True
        if self.inner is not None and self.inner.active():
            self.inner.cancel()

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def getTime(self) -> float:
        return self.inner.getTime() + self.clock.skew


class NodeClock:
    """
    A node's reactor: the shared clock, read with a skew; calls are held
    while the node is frozen (paused or crashed) and run late on thaw.
    """

    def __init__(self, base: MemoryReactorClock, skew: float) -> None:
        self.base = base
        self.skew = skew
        self.frozen = False
        self.held: list[_HeldCall] = []

    def seconds(self) -> float:
        return self.base.seconds() + self.skew

    def callLater(self, delay: float, f: Callable, *args: Any, **kw: Any) -> _HeldCall:
        call = _HeldCall(self, f, args, kw)
        call.inner = self.base.callLater(delay, call.fire)
        return call

    def thaw(self) -> None:
        self.frozen = False
        held, self.held = self.held, []
        for call in held:
            call.fire()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


# -- the network: frames with delays, drops, duplicates, reordering


class _Direction:
    def __init__(self, link: "SimLink", src_io: Any, dst_io: Any, src: str, dst: str,
                 preamble: int) -> None:
        self.link, self.src_io, self.dst_io = link, src_io, dst_io
        self.src, self.dst = src, dst
        self.preamble = preamble
        self.partial = b""
        self.queue: list[tuple[float, int, bytes]] = []
        self.last = 0.0

    def _units(self, data: bytes) -> list[bytes]:
        buf = self.partial + data
        units = []
        if self.preamble:
            if len(buf) < self.preamble:
                self.partial = buf
                return []
            units.append(buf[: self.preamble])
            buf = buf[self.preamble:]
            self.preamble = 0
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + size:
                break
            units.append(buf[: 4 + size])
            buf = buf[4 + size:]
        self.partial = buf
        return units

    def collect(self, net: "SimNetwork") -> bool:
        data = self.src_io.getOutBuffer()
        if not data:
            return False
        now = net.clock.seconds()
        for unit in self._units(data):
            copies = 1
            if net.faults["drop"] and net.rng.random() < 0.01:
                net.count("frames dropped")
                continue
            if net.faults["duplicate"] and net.rng.random() < 0.02:
                copies = 2
                net.count("frames duplicated")
            for _ in range(copies):
                delay = net.delay(self.src, self.dst)
                at = now + delay
                if not (net.faults["reorder"] and net.rng.random() < 0.05):
                    at = max(at, self.last)  # the stream keeps its order
                else:
                    net.count("frames reordered")
                self.last = max(self.last, at)
                net.seq += 1
                self.queue.append((at, net.seq, unit))
        self.queue.sort()
        return True

    def deliver(self, now: float) -> bool:
        moved = False
        while self.queue and self.queue[0][0] <= now and not self.link.closed:
            _, _, unit = self.queue.pop(0)
            if self.link.net.blocked(self.src, self.dst):
                continue
            self.dst_io.bufferReceived(unit)
            moved = True
        return moved

    def next_time(self) -> Optional[float]:
        return self.queue[0][0] if self.queue else None


class SimLink:
    """
    One connection between two nodes.
    """

    def __init__(self, net: "SimNetwork", a: str, b: str, client: Any, server: Any) -> None:
        self.net = net
        self.a, self.b = a, b
        self.cio = iosim.makeFakeClient(client)
        self.sio = iosim.makeFakeServer(server)
        server.makeConnection(self.sio)
        client.makeConnection(self.cio)
        self.closed = False
        self.dirs = [_Direction(self, self.cio, self.sio, a, b, preamble=len(wire.PREAMBLE)),
                     _Direction(self, self.sio, self.cio, b, a, preamble=len(wire.PREAMBLE))]

    def step(self, now: float) -> bool:
        if self.closed:
            return False
        moved = False
        for d in self.dirs:
            moved = d.collect(self.net) or moved
        for d in self.dirs:
            moved = d.deliver(now) or moved
        if not self.closed and (self.cio.disconnecting or self.sio.disconnecting):
            if not any(d.queue for d in self.dirs):
                self.reset()
                moved = True
        return moved

    def reset(self) -> None:
        if self.closed:
            return
        self.closed = True
        for io in (self.cio, self.sio):
            if not io.disconnected:
                io.disconnected = True
                io.reportDisconnect()

    def next_time(self) -> Optional[float]:
        times = [t for t in (d.next_time() for d in self.dirs) if t is not None]
        return min(times) if times else None


class SimNetwork:
    """
    Nodes by address, the links between them, and the faults in force.
    """

    def __init__(self, clock: MemoryReactorClock, rng: random.Random,
                 faults: dict[str, bool]) -> None:
        self.clock = clock
        self.rng = rng
        self.faults = faults
        self.nodes: dict[str, DHTNode] = {}
        self.links: list[SimLink] = []
        self.cut: set[frozenset[str]] = set()
        self.down: set[str] = set()
        self.paused: set[str] = set()
        self.slow: set[str] = set()
        self.seq = 0
        self.counts: dict[str, int] = {}

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def delay(self, a: str, b: str) -> float:
        d = 0.0005
        if self.faults["delay"]:
            d += self.rng.expovariate(1 / 0.01)
            if self.rng.random() < 0.01:
                d += self.rng.uniform(0.1, 1.5)
        if a in self.slow or b in self.slow:
            d += self.rng.uniform(0.05, 0.3)
        return d

    def blocked(self, a: str, b: str) -> bool:
        return a in self.down or b in self.down or frozenset((a, b)) in self.cut

    def frozen(self, a: str, b: str) -> bool:
        return a in self.paused or b in self.paused

    def connector(self, source: str) -> Callable[[str, PeerFactory], Deferred[PeerProtocol]]:
        def connect(address: str, factory: PeerFactory) -> Deferred[PeerProtocol]:
            node = self.nodes.get(address)
            if source in self.down or node is None or node.node_id in self.down:
                return fail(ConnectionRefusedError(address))
            if self.blocked(source, node.node_id):
                return fail(TimeoutError(address))
            server = node.factory.buildProtocol(None)
            client = factory.buildProtocol(None)
            self.links.append(SimLink(self, source, node.node_id, client, server))
            return succeed(client)

        return connect

    def reset_links(self, node_ids: set[str], pairs: Optional[set[frozenset[str]]] = None
                    ) -> None:
        """
        Reset the links touching C{node_ids} (or crossing C{pairs}).
        """
        for link in self.links:
            if link.a in node_ids or link.b in node_ids or (
                    pairs and frozenset((link.a, link.b)) in pairs):
                link.reset()

    def step(self) -> bool:
        now = self.clock.seconds()
        moved = False
        for link in list(self.links):
            if self.frozen(link.a, link.b):
                continue
            moved = link.step(now) or moved
        self.links = [link for link in self.links if not link.closed]
        return moved

    def settle(self) -> None:
        for _ in range(100000):
            if not self.step():
                return
        raise Violation("the network never went quiet")

    def next_time(self) -> Optional[float]:
        times = [t for t in (link.next_time() for link in self.links
                             if not self.frozen(link.a, link.b)) if t is not None]
        return min(times) if times else None


# -- workload and history


@dataclass
class Op:
    """
    One client operation and what came of it.
    """

    id: int
    client: int
    node: str
    kind: str
    keys: list[bytes]
    values: list[Optional[bytes]]
    invoked: float
    completed: Optional[float] = None
    outcome: str = "pending"  # ok, fail (nothing applied), unknown, error (reads)
    reply: list[bytes] = field(default_factory=list)

    def line(self) -> bytes:
        if self.kind == "set":
            return b"set %s %s" % (self.keys[0], self.values[0])
        if self.kind == "del":
            return b"del " + b" ".join(self.keys)
        if self.kind == "mset":
            return b"mset " + b" ".join(k + b" " + v for k, v in zip(self.keys, self.values))
        return self.kind.encode() + b" " + b" ".join(self.keys)

    @property
    def writes(self) -> bool:
        return self.kind in ("set", "del", "mset")

    def settle(self, lines: list[bytes], now: float) -> None:
        """
        Record the reply C{lines}, received at C{now}: a write is ok, failed
        (the node said nothing was applied) or of unknown outcome; a read ok
        or an error.
        """
        self.completed = now
        self.reply = lines
        if self.writes:
            if lines[0] == b"ok" or (self.kind == "del" and lines[0].isdigit()):
                self.outcome = "ok"
            elif lines[0].startswith(b"ERR") and b"nothing applied" in lines[0]:
                self.outcome = "fail"
            else:
                self.outcome = "unknown"
        else:
            self.outcome = "error" if any(x.startswith(b"ERR") for x in lines) else "ok"

    @classmethod
    def random(cls, rng: random.Random, op_id: int, client: int, node: str,
               keys: list[bytes], now: float) -> "Op":
        """
        A random operation on C{keys}; written values are unique (they
        carry C{op_id}), so the history tells which write left a value.
        """
        kind = rng.choice(["set", "set", "del", "mset", "get", "get", "mget"])
        tag = b"v%d" % op_id
        values: list[Optional[bytes]]
        if kind == "set":
            chosen, values = [rng.choice(keys)], [tag]
        elif kind == "del":
            chosen, values = [rng.choice(keys)], [None]
        elif kind == "mset":
            chosen = rng.sample(keys, rng.randint(2, 4))
            values = [tag + b"." + k for k in chosen]
        elif kind == "get":
            chosen, values = [rng.choice(keys)], []
        else:
            chosen, values = rng.sample(keys, rng.randint(2, 4)), []
        return cls(op_id, client, node, kind, chosen, values, now)


class Client:
    """
    A client talking to one node at a time through its client protocol:
    one text command, or a RESP pipeline of several (each its own
    operation in the history) sent in one piece.
    """

    def __init__(self, sim: "Simulation", index: int) -> None:
        self.sim = sim
        self.index = index
        self.ops: list[Op] = []
        self.resp = False
        self.transport: Any = None
        self.proto: Any = None
        self.node: Optional[str] = None
        self.next_at = 0.0

    @property
    def op(self) -> Optional[Op]:
        """
        The first operation still waiting for its reply.
        """
        return self.ops[0] if self.ops else None

    def start(self, ops: list[Op], node: DHTNode) -> None:
        self.ops = list(ops)
        self.resp = len(ops) > 1
        self.node = node.node_id
        self.transport = StringTransportWithDisconnection()
        self.proto = node.factory.buildProtocol(None)
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)
        if self.resp:
            self.proto.dataReceived(b"".join(encode_array(op.line().split(b" "))
                                             for op in ops))
        else:
            self.proto.dataReceived(ops[0].line() + b"\n")

    def poll(self, now: float) -> None:
        if not self.ops:
            return
        replies = self._replies()
        if len(replies) >= len(self.ops):
            for op, lines in zip(self.ops, replies):
                op.settle(lines, now)
            self.end()
        elif now - self.ops[0].invoked > self.sim.op_timeout or self.node in self.sim.net.down:
            for op in self.ops:
                op.outcome = "unknown" if op.writes else "error"
                op.completed = None
            self.end()

    def _replies(self) -> list[list[bytes]]:
        """
        The replies that came, each as the lines of a text reply.
        """
        lines = self.transport.value().split(b"\r\n")[:-1]
        if not self.resp:
            op = self.ops[0]
            expected = len(op.keys) if op.kind == "mget" else 1
            return [lines[:expected]] if len(lines) >= expected else []
        replies: list[list[bytes]] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            if line[:1] == b"$" and line != b"$-1":  # a value on the next line
                if i + 1 >= len(lines):
                    break
                replies.append([lines[i + 1]])
                i += 2
                continue
            # +OK, -ERR, (nil), :count; the node's values need no quoting
            replies.append([{b"+OK": b"ok", b"$-1": b"(nil)"}.get(line, line[1:])])
            i += 1
        return replies

    def end(self) -> None:
        if self.proto is not None and self.transport.connected:
            self.transport.loseConnection()
        self.ops = []
        self.next_at = self.sim.clock.seconds() + self.sim.rng.uniform(0.0, 0.3)


# -- the simulation


class Simulation:
    """
    One seeded run.
    """

    def __init__(self, seed: int, nodes: int = 5, clients: int = 4, keys: int = 12,
                 fault_time: float = 20.0, settle_time: float = 30.0,
                 verbose: bool = False) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = {f: self.rng.random() < 0.5 for f in FAULTS}
        self.clock = MemoryReactorClock()
        self.clock.advance(1_000_000 + self.rng.uniform(0, 1000))
        self.net = SimNetwork(self.clock, random.Random(self.rng.random()), self.faults)
        self.n = nodes
        self.keys = [b"k%d" % i for i in range(keys)]
        self.fault_time = fault_time
        self.settle_time = settle_time
        self.verbose = verbose
        self.op_timeout = 10.0
        self.nodes: list[DHTNode] = []
        self.clocks: dict[str, NodeClock] = {}
        self.history: list[Op] = []
        self.trace: list[str] = []
        self.lost: set[str] = set()  # nodes that lost their memory
        self.errors: list[str] = []
        self.woke: dict[str, float] = {}
        self.config = default_config().replace(**SETTINGS)
        for i in range(nodes):
            skew = self.rng.uniform(-2.0, 2.0) if self.faults["skew"] else 0.0
            self.clocks[f"n{i}"] = NodeClock(self.clock, skew)
            self._make_node(i)
        self.clients = [Client(self, c) for c in range(clients)]
        self.ops = 0

    def _make_node(self, i: int) -> DHTNode:
        address = Address("127.0.0.1", 9000 + i)
        config = self.config.replace(
            node_id=f"n{i}", listen=address, advertise=address,
            ring_id=i * self.config.ring_size // self.n,
            seeds=(Address("127.0.0.1", 9000),) if i else (Address("127.0.0.1", 9001),),
        )
        clock = self.clocks[f"n{i}"]
        node = DHTNode(config, clock, connect=self.net.connector(f"n{i}"),
                       rng=random.Random(self.rng.random()))
        self.net.nodes[str(address)] = node
        if i < len(self.nodes):
            self.nodes[i] = node
        else:
            self.nodes.append(node)
        node.startService()
        return node

    def log(self, text: str) -> None:
        entry = f"{self.clock.seconds() - 1_000_000:10.3f} {text}"
        self.trace.append(entry)
        if self.verbose:
            print(entry)

    # -- faults

    def _fault(self) -> None:
        kinds = [k for k in ("partition", "crash", "restart", "pause", "slow")
                 if self.faults[k]]
        if not kinds:
            return
        kind = self.rng.choice(kinds)
        ids = [n.node_id for n in self.nodes]
        up = [i for i in ids if i not in self.net.down and i not in self.net.paused]
        n_replicas = self.config.replicas
        if kind == "partition" and not self.net.cut:
            shape = self.rng.choice(["one", "minority", "ring"])
            if shape == "one":
                a = {self.rng.choice(ids)}
            elif shape == "minority":
                a = set(self.rng.sample(ids, len(ids) // 2))
            else:
                a = set()
            if shape == "ring":
                pairs = {frozenset((ids[i], ids[(i + 2) % len(ids)])) for i in range(len(ids))}
            else:
                pairs = {frozenset((x, y)) for x in a for y in ids if y not in a}
            self.net.cut |= pairs
            self.net.reset_links(set(), pairs)
            self.heal_at = self.clock.seconds() + self.rng.uniform(1, 12)
            self.log(f"partition {shape}: {sorted(tuple(sorted(p)) for p in pairs)}")
        elif kind in ("crash", "restart") and len(self.lost) < n_replicas - 1 and up:
            victim = self.rng.choice(up)
            self._crash(victim)
            if kind == "restart":
                self.restart_at[victim] = self.clock.seconds() + self.rng.uniform(0.5, 8)
        elif kind == "pause" and up:
            victim = self.rng.choice(up)
            self.net.paused.add(victim)
            self.clocks[victim].frozen = True
            self.resume_at[victim] = self.clock.seconds() + self.rng.uniform(0.5, 9)
            self.log(f"pause {victim}")
        elif kind == "slow" and up:
            victim = self.rng.choice(up)
            self.net.slow.add(victim)
            self.log(f"slow {victim}")

    def _crash(self, victim: str) -> None:
        self.log(f"crash {victim}")
        self.lost.add(victim)
        self.net.down.add(victim)
        self.clocks[victim].frozen = True  # a dead process runs no timers
        self.clocks[victim].held.clear()
        self.net.reset_links({victim})

    def _restart(self, victim: str) -> None:
        self.log(f"restart {victim} (empty)")
        self.net.down.discard(victim)
        clock = self.clocks[victim]
        self.clocks[victim] = NodeClock(self.clock, clock.skew)
        self._make_node(int(victim[1:]))

    def _resume(self, victim: str) -> None:
        self.log(f"resume {victim}")
        self.woke[victim] = self.clock.seconds()
        self.net.paused.discard(victim)
        self.clocks[victim].thaw()

    def _heal(self) -> None:
        self.log("heal partition")
        self.net.cut.clear()
        self.heal_at = None

    # -- workload

    def _new_op(self, client: Client) -> None:
        up = [n for n in self.nodes
              if n.node_id not in self.net.down and n.node_id not in self.net.paused]
        if not up:
            return
        node = self.rng.choice(up)
        ops = []
        # a third of the time a pipeline of SETs and GETs, sent in one piece
        # (RESP): the node runs such SETs as one transaction
        size = self.rng.choice([1, 1, 1, 1, 2, 3, 5])
        while len(ops) < size:
            self.ops += 1
            op = Op.random(self.rng, self.ops, client.index, node.node_id, self.keys,
                           self.clock.seconds())
            if size > 1 and op.kind not in ("set", "get"):
                continue
            ops.append(op)
        self.history.extend(ops)
        client.start(ops, node)

    # -- the run

    def run(self) -> None:
        observer = self._observe
        globalLogPublisher.addObserver(observer)
        try:
            self._run()
        finally:
            globalLogPublisher.removeObserver(observer)

    def _observe(self, event: dict) -> None:
        if event.get("log_failure") is not None or event.get("log_level") is not None and \
                event["log_level"].name == "critical":
            failure = event.get("log_failure")
            self.errors.append(f"{event.get('log_format')}: {failure!r}")
        if self.verbose:
            from twisted.logger import formatEvent

            text = formatEvent(event)
            self.log(f"[{event.get('log_namespace', '?')}] {text}")

    def _advance_to(self, until: float) -> None:
        candidates = [until]
        calls = self.clock.getDelayedCalls()
        if calls:
            candidates.append(min(c.getTime() for c in calls))
        t = self.net.next_time()
        if t is not None:
            candidates.append(t)
        target = max(min(candidates), self.clock.seconds())
        self.clock.advance(target - self.clock.seconds())
        self.net.settle()

    def _run(self) -> None:
        start = self.clock.seconds()
        self.heal_at: Optional[float] = None
        self.restart_at: dict[str, float] = {}
        self.resume_at: dict[str, float] = {}
        # let the cluster form
        while self.clock.seconds() < start + 8:
            self._advance_to(start + 8)
        faults_end = self.clock.seconds() + self.fault_time
        next_fault = self.clock.seconds() + self.rng.uniform(1, 4)
        self.log(f"faults: {sorted(k for k, v in self.faults.items() if v)}")
        while self.clock.seconds() < faults_end:
            now = self.clock.seconds()
            if now >= next_fault:
                self._fault()
                next_fault = now + self.rng.uniform(1, 5)
            self._housekeeping(now, ending=False)
            self._workload(now)
            self._check_locks(now)
            self._advance_to(min(next_fault, faults_end, now + 0.05))
        # faults stop: heal, resume, restart; no new operations from here, so
        # the last writes made under faults are the ones the final state
        # must show
        self.log("faults stop")
        self._housekeeping(self.clock.seconds(), ending=True)
        self.net.slow.clear()
        self.net.faults = dict.fromkeys(self.faults, False)
        end = self.clock.seconds() + self.settle_time
        while self.clock.seconds() < end:
            now = self.clock.seconds()
            for client in self.clients:
                client.poll(now)
            self._check_locks(now)
            self._advance_to(min(end, now + 0.1))
        for client in self.clients:
            client.poll(self.clock.seconds() + self.op_timeout * 10)

    def _housekeeping(self, now: float, ending: bool) -> None:
        if self.heal_at is not None and (ending or now >= self.heal_at):
            self._heal()
        for victim, at in list(self.resume_at.items()):
            if ending or now >= at:
                del self.resume_at[victim]
                self._resume(victim)
        for victim, at in list(self.restart_at.items()):
            if ending or now >= at:
                del self.restart_at[victim]
                self._restart(victim)

    def _workload(self, now: float) -> None:
        for client in self.clients:
            client.poll(now)
            if client.op is None and now >= client.next_at:
                self._new_op(client)

    def _check_locks(self, now: float) -> None:
        for node in self.nodes:
            if node.node_id in self.net.down or node.node_id in self.net.paused:
                continue
            if now - self.woke.get(node.node_id, 0.0) < self.config.txn_timeout * 2:
                continue  # it slept through its deadlines: give it time to resolve
            for txid, _, _ in node.participant.overdue(now - self.config.rpc_timeout * 3
                                                       + node.reactor.skew):
                raise Violation(f"transaction {txid} on {node.node_id} outlived txn_timeout")

    # -- the checker

    def check(self) -> None:
        """
        Raise L{Violation} if a guarantee did not hold.
        """
        if self.errors:
            raise Violation("unexpected errors logged:\n" + "\n".join(self.errors[:5]))
        live = [n for n in self.nodes if n.node_id not in self.net.down]
        views = {n.node_id: sorted(m.node_id for m in n.membership.live()) for n in live}
        if len({tuple(v) for v in views.values()}) != 1:
            raise Violation(f"membership did not converge: {views}")
        for node in live:
            if node.participant.locked_keys or node.participant.in_doubt:
                raise Violation(f"{node.node_id} still holds locks after the run")
        finals: dict[bytes, Optional[bytes]] = {}
        for key in self.keys:
            owners = sorted(live[0].replicas_for(key))
            records = {n.node_id: n.store.get(key) for n in live if n.store.get(key).version}
            if records and sorted(records) != owners:
                raise Violation(f"{key!r} is on {sorted(records)}, its owners are {owners}")
            if len({r for r in records.values()}) > 1:
                raise Violation(f"replicas of {key!r} disagree: {records}")
            finals[key] = next(iter(records.values())).value if records else None
        HistoryChecker(self.history, len(self.lost) >= self.config.replicas).check(finals)

    def fingerprint(self) -> str:
        """
        A digest of the run, to show that a seed replays the same run.
        """
        h = hashlib.sha256()
        for op in self.history:
            h.update(repr((op.id, op.node, op.kind, op.keys, op.values, op.invoked,
                           op.completed, op.outcome, op.reply)).encode())
        for node in self.nodes:
            for key in self.keys:
                h.update(repr(node.store.get(key)).encode())
        return h.hexdigest()[:16]


class HistoryChecker:
    """
    Checks a history of operations against the final state of the keys.

    :param history: every operation, with its outcome.
    :param data_loss_possible: N or more nodes lost their memory during the
        run, so acknowledged writes may be gone without a bug.
    """

    def __init__(self, history: list[Op], data_loss_possible: bool = False) -> None:
        self.history = history
        self.data_loss_possible = data_loss_possible

    def check(self, finals: dict[bytes, Optional[bytes]]) -> None:
        """
        Raise L{Violation} if C{finals} (key to final value, C{None} for a
        missing key) or a read contradicts the history.
        """
        writes = [op for op in self.history if op.writes]
        by_value: dict[bytes, Op] = {}
        for op in writes:
            for value in op.values:
                if value is not None:
                    by_value[value] = op
        for key, value in finals.items():
            self._check_key(key, value, writes, by_value)
        for op in writes:
            if op.kind == "mset":
                self._check_mset(op, finals, writes)
        for op in self.history:
            if op.kind in ("get", "mget") and op.outcome == "ok":
                for key, line in zip(op.keys, op.reply):
                    if line == b"(nil)":
                        continue
                    value = unquote_reply(line)
                    writer = by_value.get(value)
                    if writer is None or writer.outcome == "fail":
                        raise Violation(f"read {op.id} of {key!r} saw {value!r}, which no "
                                        "committed write wrote")

    @staticmethod
    def _before(a: Op, b: Op) -> bool:
        """
        Whether C{a} surely happened before C{b} (completed before b began).
        """
        return a.completed is not None and a.completed < b.invoked

    def _final_writers(self, key: bytes, value: Optional[bytes], writes: list[Op],
                       by_value: dict[bytes, Op]) -> list[Op]:
        """
        The writes that may have produced the final state of C{key}: the one
        that wrote its value, or (for a missing key) its deletes.
        """
        if value is not None:
            writer = by_value.get(value)
            return [writer] if writer is not None else []
        return [op for op in writes if op.kind == "del" and key in op.keys
                and op.outcome in ("ok", "unknown")]

    def _check_key(self, key: bytes, value: Optional[bytes], writes: list[Op],
                   by_value: dict[bytes, Op]) -> None:
        finals = self._final_writers(key, value, writes, by_value)
        if value is not None and (not finals or finals[0].outcome == "fail"):
            raise Violation(f"{key!r} holds {value!r}, which no committed write wrote")
        if self.data_loss_possible:
            return
        for op in writes:
            if key not in op.keys or op.outcome != "ok" or op in finals:
                continue
            # an acknowledged write must not be followed by an older final state
            if all(self._before(f, op) for f in finals):
                shown = "missing" if value is None else repr(value)
                raise Violation(f"acknowledged write {op.id} ({op.line()!r}) to {key!r} "
                                f"was lost: the key is {shown} at the end")

    def _check_mset(self, op: Op, finals: dict[bytes, Optional[bytes]],
                    writes: list[Op]) -> None:
        shown = [k for k, v in zip(op.keys, op.values) if finals[k] == v]
        if op.outcome == "fail" and shown:
            raise Violation(f"aborted MSET {op.id} is visible on {shown}")
        if not shown or len(shown) == len(op.keys) or self.data_loss_possible:
            return
        by_value = {v: w for w in writes for v in w.values if v is not None}
        for k in op.keys:
            if k in shown:
                continue
            later = [f for f in self._final_writers(k, finals[k], writes, by_value)
                     if not self._before(f, op)]
            if not later:
                raise Violation(f"MSET {op.id} partly applied: {shown} show it, {k!r} shows "
                                f"{finals[k]!r} from an earlier write")



def run_seed(seed: int, verbose: bool = False, **kw: Any) -> Simulation:
    """
    Run one seed and check it; raise L{Violation} naming the seed.
    """
    sim = Simulation(seed, verbose=verbose, **kw)
    try:
        sim.run()
        sim.check()
    except Violation as e:
        raise Violation(f"seed {seed}: {e}\nreplay: PYTHONHASHSEED=0 {sys.executable} "
                        f"-m tests.sim --seed {seed} --verbose") from None
    return sim


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, help="run only this seed")
    parser.add_argument("--verbose", action="store_true", help="print the run's events")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    started = time.monotonic()
    failed = 0
    kinds: dict[str, int] = {}
    counts: dict[str, int] = {}
    ops = 0
    for seed in seeds:
        try:
            sim = run_seed(seed, verbose=args.verbose)
        except Violation as e:
            failed += 1
            print(f"FAIL {e}", flush=True)
            continue
        ops += len(sim.history)
        for k, on in sim.faults.items():
            kinds[k] = kinds.get(k, 0) + on
        for k, v in sim.net.counts.items():
            counts[k] = counts.get(k, 0) + v
        if args.seed is not None:
            print(f"seed {seed}: ok, {len(sim.history)} operations, "
                  f"fingerprint {sim.fingerprint()}")
    total = len(seeds)
    print(f"{total - failed} passed, {failed} failed: {total} seeds, {ops} operations, "
          f"{time.monotonic() - started:.1f} s; runs per fault kind: "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
          + "; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
