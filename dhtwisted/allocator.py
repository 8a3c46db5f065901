# -*- test-case-name: tests.test_allocator -*-
"""
C{[node] allocator}: which memory allocator holds the node's Python objects.

Every write makes each replica drop one small record and allocate another,
and the record it drops is a random one of millions. Python's own allocator
(pymalloc) then touches the header of that record's 4 KiB pool, and hands
out blocks from lists threaded through freed memory, both far apart in a
big store: cache misses on every write. mimalloc keeps its free lists per
64 KiB page, with the page's bookkeeping together in its segment's header;
on 3 nodes at C{-P 16} it lets the cluster commit about a tenth more writes
(see the README's benchmark section).

The allocator of a CPython process is chosen before it starts
(C{PYTHONMALLOC=malloc} with mimalloc preloaded), so the node, when asked
for mimalloc and not on it, starts itself again in place (C{execve}, which
keeps the process id) before it does anything else. Without the library it
says so and runs on Python's allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Callable, Mapping, Optional

from twisted.logger import Logger

from .config import ALLOCATORS
from .logs import OBSERVER

__all__ = ["ALLOCATORS", "MIMALLOC", "PYTHON", "current_allocator", "use_allocator"]

log = Logger(observer=OBSERVER)

#: C{[node] allocator = mimalloc}: mimalloc if the system has it;
#: C{python}: the allocator the process started with.
MIMALLOC, PYTHON = ALLOCATORS

#: Set in the environment of the process started again: it is not tried twice.
RESTARTED = "DHTWISTED_RESTARTED_FOR_ALLOCATOR"


def mimalloc_version(process: Optional[ctypes.CDLL] = None) -> Optional[str]:
    """
    The version of the mimalloc loaded in this process (C{"2.0.9"}), or
    C{None} if none is.
    """
    process = process if process is not None else ctypes.CDLL(None)
    try:
        version = process.mi_version
    except AttributeError:
        return None
    version.restype = ctypes.c_int
    number = version()  # major * 100 + minor * 10 + patch
    return f"{number // 100}.{number // 10 % 10}.{number % 10}"


def current_allocator(environ: Mapping[str, str] = os.environ,
                      process: Optional[ctypes.CDLL] = None) -> str:
    """
    What allocates this process's Python objects, as C{INFO}'s
    C{mem_allocator} says: C{mimalloc-2.0.9}, C{libc} or C{pymalloc}.
    """
    if environ.get("PYTHONMALLOC", "") not in ("malloc", "malloc_debug") or (
            sys.flags.ignore_environment):
        return "pymalloc"
    version = mimalloc_version(process)
    return f"mimalloc-{version}" if version else "libc"


def use_allocator(
    name: str,
    environ: Mapping[str, str] = os.environ,
    find: Callable[[], Optional[str]] = lambda: ctypes.util.find_library("mimalloc"),
    execve: Callable[[str, list[str], dict[str, str]], None] = os.execve,
    process: Optional[ctypes.CDLL] = None,
) -> None:
    """
    Run this process on the allocator C{name} (one of L{ALLOCATORS}):
    for mimalloc, unless it already runs on it, start it again in place
    with mimalloc preloaded. Called on twistd's main thread before the node
    is built, so that nothing is lost but the work of starting.

    :param find: the mimalloc library's name, or C{None} if there is none.
    :param execve: replaces the process (L{os.execve}).
    """
    if name not in ALLOCATORS:
        raise ValueError(f"unknown allocator {name!r}")
    if name == PYTHON or current_allocator(environ, process).startswith(MIMALLOC):
        return
    if environ.get(RESTARTED):
        log.warn("allocator = mimalloc: started again with it, but it is not loaded "
                 "(LD_PRELOAD={preload!r}); the node runs on {allocator}",
                 preload=environ.get("LD_PRELOAD", ""),
                 allocator=current_allocator(environ, process))
        return
    library = find()
    if library is None:
        log.warn("allocator = mimalloc: no mimalloc library on this system (on Debian "
                 "and Ubuntu: apt install libmimalloc2.0); the node runs on Python's "
                 "allocator")
        return
    env = dict(environ)
    env["PYTHONMALLOC"] = "malloc"
    env["LD_PRELOAD"] = " ".join(filter(None, [library, environ.get("LD_PRELOAD", "")]))
    env[RESTARTED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    execve(sys.executable, list(sys.orig_argv), env)
