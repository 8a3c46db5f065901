# -*- test-case-name: tests.test_tap -*-
"""
The C{dht} twistd plugin's options and service.

C{twistd -n dht --config etc/node.ini [--id ID] [--listen HOST:PORT]
[--advertise HOST:PORT] [--ring-id N] [--join HOST:PORT ...]}
"""

from __future__ import annotations

import gc
import os
from typing import Any, Callable, Optional

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from .allocator import use_allocator
from .config import (
    SCHEDULING,
    ConfigError,
    NodeConfig,
    config_from_file,
    default_config,
    override,
)
from . import logs
from .logs import OBSERVER

__all__ = ["Options", "makeService", "set_scheduling"]

log = Logger(observer=OBSERVER)

_OVERRIDES = (
    ("id", "node_id"),
    ("listen", "listen"),
    ("advertise", "advertise"),
    ("ring-id", "ring_id"),
)


class Options(usage.Options):
    """
    Command-line options of C{twistd dht}; they override the config file.
    """

    synopsis = "[--config FILE] [options]"
    longdesc = (
        "Run a dhtwisted node. Settings come from the ini file given with "
        "--config (see etc/node.ini), or their defaults; the options below "
        "override it."
    )
    optParameters = [
        ["config", "c", None, "The node's ini file (default: built-in defaults)."],
        ["id", None, None, "This node's id ([node] node_id)."],
        ["listen", None, None, "host:port to serve clients and peers on ([node] listen)."],
        ["advertise", None, None, "host:port peers dial to reach this node ([node] advertise)."],
        ["ring-id", None, None, "This node's first ring position ([node] ring_id)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["join"] = []

    def opt_join(self, address: str) -> None:
        """
        host:port of a member to join the cluster through ([cluster] seeds);
        may be given several times.
        """
        self["join"].append(address)

    def postOptions(self) -> None:
        """
        Load the config file, apply the overrides and check the result.

        :raises usage.UsageError: naming the file, section and key, or the
            option, that is wrong.
        """
        try:
            config = config_from_file(self["config"]) if self["config"] else default_config()
            changes = [(f"--{opt}", name, self[opt]) for opt, name in _OVERRIDES
                       if self[opt] is not None]
            if self["join"]:
                changes.append(("--join", "seeds", ",".join(self["join"])))
            self["node_config"] = override(config, changes)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options, reactor: Optional[Any] = None,
                schedule: Optional[Callable[[str], None]] = None,
                allocate: Optional[Callable[[str], None]] = None) -> IService:
    """
    The node's service, from parsed options.

    :param reactor: the reactor to run on; the global one if not given.
    :param schedule: applies C{[node] scheduling} to this process;
        L{set_scheduling} if not given.
    :param allocate: applies C{[node] allocator} to this process (which
        may start it again); if not given, L{use_allocator} when the node
        runs on the global reactor (its own process, as under twistd), and
        nothing when it is given a reactor (a process of someone else's).
    """
    config: NodeConfig = options["node_config"]
    logs.configure(config.log_level)  # (for what the allocator's start logs)
    if allocate is None and reactor is None:
        allocate = use_allocator
    if allocate is not None:
        # first: it may replace the process, which then starts over from here
        allocate(config.allocator)
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    from .node import DHTNode

    tune_gc()
    (schedule or set_scheduling)(config.scheduling)
    node = DHTNode(config, reactor)
    log.info("memory allocator: {allocator}", allocator=node.allocator)
    return node


def set_scheduling(policy: str, setscheduler: Optional[Callable[..., None]] = None) -> None:
    """
    Run the calling thread, and the threads and processes it starts later,
    under C{policy}: C{"batch"}, C{"normal"} or C{"inherit"} (leave it as it
    is), see C{[node] scheduling}. Called on twistd's main thread before any
    other thread starts and before it daemonizes, this is the whole node.
    Where that cannot be done, log why and go on under the policy it has.

    A node is busy with many short turns: each message from a peer or
    client wakes it. Under Linux's normal policy each of those wake-ups
    preempts whatever runs on that core (another node, a client), so that
    processes sharing cores interrupt each other's turns thousands of times
    a second. Under C{SCHED_BATCH} a node that wakes up waits for the
    running process's turn to end, and each turn gets through more work.

    :param setscheduler: L{os.sched_setscheduler}, unless given.
    :raise ValueError: for another C{policy}.
    """
    if policy not in SCHEDULING:
        raise ValueError(f"unknown scheduling policy {policy!r}")
    if policy == "inherit":
        return
    name = "SCHED_BATCH" if policy == "batch" else "SCHED_OTHER"
    if setscheduler is None:
        setscheduler = getattr(os, "sched_setscheduler", None)
    number = getattr(os, name, None)
    if setscheduler is None or number is None:
        if policy == "normal":
            return  # (what it runs under anyway)
        log.warn("scheduling = {policy}: not supported on this system; the node runs "
                 "under its default scheduling policy", policy=policy)
        return
    try:
        setscheduler(0, number, os.sched_param(0))
    except OSError as e:
        log.warn("scheduling = {policy}: the system refused {name} ({why}); the node "
                 "runs under the policy it was started with", policy=policy, name=name,
                 why=e.strerror or str(e))


def tune_gc() -> None:
    """
    Collect cycles less often. A busy node allocates many short-lived
    containers (messages, callbacks) and holds millions of long-lived ones
    (records, transaction outcomes) that are never in cycles; with the
    default thresholds the collector keeps walking them.
    """
    gc.collect()
    gc.freeze()  # what exists at start (modules, classes) is never garbage
    gc.set_threshold(GC_THRESHOLD, 50, 100)


#: Allocations of container objects between two collections of the
#: youngest generation (Python's default is 700).
GC_THRESHOLD = 50_000
